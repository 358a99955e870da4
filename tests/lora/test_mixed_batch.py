"""Mixed-adapter batches (lorakit.lora.mixed_batch), checked against per-row runs and PEFT."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import randomize_lora
from lora_helpers import IDS, logits, to_peft, two_adapters

import lorakit
from lorakit.lora import LoraLinear


def test_mixed_batch_equals_per_row_runs_with_base_rows_and_different_ranks(tiny_gpt2):
    model = two_adapters(tiny_gpt2, r2=2, targets2=("c_attn", "c_proj"))
    rows = ["one", "__base__", "two"]
    with lorakit.adapter_batch(model, rows):
        mixed = logits(model)
    for i, name in enumerate(rows):
        if name == "__base__":
            with lorakit.disable_adapters(model):
                expected = logits(model, IDS[i:i + 1])
        else:
            lorakit.set_adapter(model, name)
            expected = logits(model, IDS[i:i + 1])
        torch.testing.assert_close(mixed[i:i + 1], expected, rtol=1e-5, atol=1e-5)


def test_mixed_batch_matches_peft_and_uses_no_python_loop_over_adapters(tiny_gpt2, tmp_path):
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2)
    theirs = to_peft(base, model, ["one", "two"], tmp_path)
    rows = ["two", "one", "__base__"]
    with lorakit.adapter_batch(model, rows):
        c_attn = model.transformer.h[0].attn.c_attn
        plan = c_attn.row_plan  # one stacked A and scaling * B^T per row: no loop over adapters in forward
        a_rows, bt_rows = plan.stacks()
        assert a_rows.shape == (3, 4, 32) and bt_rows.shape == (3, 4, 96)
        assert plan.bank.names == ("one", "two") and plan.index.tolist() == [1, 0, 2]  # slot 2: zeros
        assert torch.count_nonzero(a_rows[2]) == 0 and torch.count_nonzero(bt_rows[2]) == 0
        ours = logits(model)
    with torch.no_grad():
        expected = theirs(input_ids=IDS, adapter_names=rows).logits
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)
    assert c_attn.row_plan is None


def test_mixed_batch_works_with_generate_and_beams(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    prompt = IDS[:2, :3]
    with lorakit.adapter_batch(model, ["one", "two"]):
        both = model.generate(prompt, max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)
    for i, name in enumerate(["one", "two"]):
        lorakit.set_adapter(model, name)
        alone = model.generate(prompt[i:i + 1], max_new_tokens=4, num_beams=2, do_sample=False, pad_token_id=0)
        assert torch.equal(both[i:i + 1], alone)


def per_row_logits(model, rows, ids=IDS):
    """Each row run alone with its adapter (or none), concatenated: what a mixed batch must equal."""
    active = lorakit.active_adapters(model)
    out = []
    for i, name in enumerate(rows):
        if name == "__base__":
            with lorakit.disable_adapters(model):
                out.append(logits(model, ids[i:i + 1]))
        else:
            lorakit.set_adapter(model, name)
            out.append(logits(model, ids[i:i + 1]))
    lorakit.set_adapter(model, active)
    return torch.cat(out)


def mixed_logits(model, rows, ids=IDS):
    with lorakit.adapter_batch(model, rows):
        return logits(model, ids)


def test_mixed_batch_ignores_active_adapters_of_modules_without_the_rows_adapters(tiny_gpt2):
    model = two_adapters(tiny_gpt2)  # "one" (active) on c_attn and c_fc; "two" on c_attn only
    rows = ["two", "__base__", "two"]  # c_fc holds neither: it must run as the base layer for every row
    expected = per_row_logits(model, rows)
    torch.testing.assert_close(mixed_logits(model, rows), expected, rtol=1e-5, atol=1e-5)
    lorakit.merge(model)  # and when "one" is merged into c_fc
    torch.testing.assert_close(mixed_logits(model, rows), expected, rtol=1e-4, atol=1e-4)
    c_fc = model.transformer.h[0].mlp.c_fc
    assert c_fc.active_adapters == ["one"] and c_fc.merged  # restored on leaving


def test_mixed_batch_rows_repeated_per_name_follow_their_name(tiny_gpt2):
    model = two_adapters(tiny_gpt2, r2=2)
    names = ["two", "__base__", "one"]
    ids = torch.randint(0, 100, (6, 5), generator=torch.Generator().manual_seed(3))  # rows 2i, 2i+1: names[i]
    expected = per_row_logits(model, [n for n in names for _ in range(2)], ids)
    torch.testing.assert_close(mixed_logits(model, names, ids), expected, rtol=1e-5, atol=1e-5)


def test_mixed_batch_on_a_bare_linear_with_two_dim_input():
    from torch import nn

    wrapper = LoraLinear(nn.Linear(6, 5)).eval()
    wrapper.add_adapter("p", 2, 4, 0.0, init=False)
    wrapper.add_adapter("q", 3, 3, 0.0, init=False)
    x = torch.randn(4, 6)
    with torch.no_grad(), lorakit.adapter_batch(wrapper, ["q", "p"]):  # rows 0-1 use q, rows 2-3 use p
        out = wrapper(x)
    base = wrapper.base_layer(x)
    torch.testing.assert_close(out[:2], base[:2] + x[:2] @ wrapper.lora_matrix("q").t())
    torch.testing.assert_close(out[2:], base[2:] + x[2:] @ wrapper.lora_matrix("p").t())


def test_mixed_batch_reuses_the_stacked_adapters_across_entries(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    c_attn = model.transformer.h[0].attn.c_attn
    with lorakit.adapter_batch(model, ["one", "two", "one"]):
        bank = c_attn.row_plan.bank
    rows = ["__base__", "two", "two"]  # another set of rows: the same bank, only the row index is new
    with lorakit.adapter_batch(model, rows):
        assert c_attn.row_plan.bank is bank
        mixed = logits(model)
    torch.testing.assert_close(mixed, per_row_logits(model, rows), rtol=1e-5, atol=1e-5)
    with lorakit.adapter_batch(model, rows):  # switching adapters per row changed no weight
        assert c_attn.row_plan.bank is bank


def test_mixed_batch_reuses_the_row_plan_of_the_same_rows_until_an_adapter_changes(tiny_gpt2, monkeypatch):
    model = two_adapters(tiny_gpt2)
    c_attn = model.transformer.h[0].attn.c_attn
    rows = ["one", "two", "__base__"]  # bank slots 0, 1, 2: the plan's stacks are views of the bank
    with lorakit.adapter_batch(model, rows):
        plan = c_attn.row_plan
        before = logits(model)
    with lorakit.adapter_batch(model, rows):
        assert c_attn.row_plan is plan
    with torch.no_grad():
        c_attn.lora_B["two"].mul_(-2)
    with lorakit.adapter_batch(model, rows):
        assert c_attn.row_plan is not plan
        after = logits(model)
    assert not torch.allclose(after, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, per_row_logits(model, rows), rtol=1e-5, atol=1e-5)
    gathered = ("two", "one", "__base__")  # slots 1, 0, 2: a plan holding its own gathered copy is not kept
    with lorakit.adapter_batch(model, gathered):
        pass
    assert gathered not in c_attn._adapter_bank.plans
    monkeypatch.setattr(lorakit.lora.mixed_batch, "PLAN_CACHE_SIZE", 2)  # the oldest plans are dropped first
    for rows in (["one"], ["two"], ["one", "two"]):
        with lorakit.adapter_batch(model, rows):
            pass
    assert list(c_attn._adapter_bank.plans) == [("two",), ("one", "two")]


def test_stacks_built_in_inference_mode_serve_later_forwards_with_grad_mode_on(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    rows = ["one", "two", "__base__"]
    with torch.inference_mode(), lorakit.adapter_batch(model, rows):
        first = model(input_ids=IDS).logits
    with lorakit.adapter_batch(model, rows):
        second = model(input_ids=IDS).logits
    torch.testing.assert_close(second.detach(), first.clone())


CHANGES = ["in-place", "optimizer step", "hotswap", "to float64", "p.data = t", "delete and add",
           "p.data write + clear_adapter_banks"]


@pytest.mark.parametrize("change", CHANGES)
def test_mixed_batch_follows_every_change_of_the_adapters(tiny_gpt2, tmp_path, change):
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2)
    rows = ["two", "one", "__base__"]
    before = mixed_logits(model, rows)
    c_attn = model.transformer.h[0].attn.c_attn
    bank = c_attn._adapter_bank
    assert bank is not None
    if change == "in-place":
        with torch.no_grad():
            c_attn.lora_B["one"].mul_(-2)
    elif change == "optimizer step":
        lorakit.set_adapter(model, "two")
        model.train()
        model(input_ids=IDS, labels=IDS).loss.backward()
        torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
        model.eval()
        lorakit.set_adapter(model, "one")
    elif change == "hotswap":  # new weights and a new alpha (scaling) in slot "one"
        other = lorakit.inject(copy.deepcopy(base), lorakit.LoraConfig(r=4, lora_alpha=32,
                                                                        target_modules=["c_attn", "c_fc"]), "one")
        randomize_lora(other, seed=5)
        lorakit.save_adapter(other, tmp_path / "new", "one")
        lorakit.hotswap_adapter(model, tmp_path / "new", "one")
        assert c_attn.scaling["one"] == 8
    elif change == "to float64":
        model.double()
    elif change == "p.data = t":
        c_attn.lora_A["one"].data = torch.randn_like(c_attn.lora_A["one"])
    elif change == "delete and add":
        lorakit.delete_adapter(model, "two")
        lorakit.inject(model, lorakit.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"]), "two")
        randomize_lora(model, seed=9)
    else:  # writes through .data do not advance the version counter: clear the banks by hand
        c_attn.lora_A["one"].data.copy_(torch.randn_like(c_attn.lora_A["one"]))
        lorakit.lora.clear_adapter_banks(model)
    after = mixed_logits(model, rows)
    assert c_attn._adapter_bank is not bank
    same_shapes = change not in ("to float64", "delete and add")  # then the old stacks are rewritten in place
    assert (c_attn._adapter_bank.a is bank.a) == (same_shapes and change != "p.data write + clear_adapter_banks")
    if change == "to float64":
        assert c_attn._adapter_bank.a.dtype == torch.float64
    else:
        assert not torch.allclose(after, before, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(after, per_row_logits(model, rows), rtol=1e-5, atol=1e-5)


def test_mixed_batch_bad_input(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    with pytest.raises(ValueError, match=r"unknown adapter name\(s\) \['nope'\]"):
        with lorakit.adapter_batch(model, ["one", "nope"]):
            pass
    model.train()
    with pytest.raises(ValueError, match="for inference"):
        with lorakit.adapter_batch(model, ["one"]):
            pass
    model.eval()
    with pytest.raises(ValueError, match="2 row names but the batch has 3 rows"):
        with lorakit.adapter_batch(model, ["one", "two"]):
            logits(model)


def test_row_index_is_made_on_each_modules_device(tiny_gpt2, device):
    """Modules holding the same adapters share one row index per device: a model split across devices
    (here one block on the meta device; with ``--device cuda``, on the GPU) gets the index where each
    module's adapters are."""
    model = two_adapters(tiny_gpt2).eval()
    other = torch.device("meta") if device.type == "cpu" else device
    model.transformer.h[1].to(other)
    rows = ["two", "one", "one"]  # not consecutive slots: the plan gathers with its index
    with lorakit.adapter_batch(model, rows):
        for block, expected in ((model.transformer.h[0], "cpu"), (model.transformer.h[1], other.type)):
            assert block.attn.c_attn.row_plan.index.device.type == expected
