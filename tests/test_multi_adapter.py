"""Many adapters on one model, checked against PEFT's outputs on tiny random HF models."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from helpers import randomize_lora

import lorakit
from lorakit.lora.manage import LoraLinear

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6], [3, 2, 1, 9, 9, 9]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def two_adapters(model, r2=4, targets2=("c_attn",)):
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]), "one")
    lorakit.inject(model, lorakit.LoraConfig(r=r2, lora_alpha=16, target_modules=list(targets2)), "two")
    randomize_lora(model)
    return model


def to_peft(base, model, names, tmp_path):
    """A PEFT model holding the same adapters, loaded from lorakit's files."""
    first, *rest = names
    lorakit.save_adapter(model, tmp_path / first, first)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path / first), adapter_name=first)
    for name in rest:
        lorakit.save_adapter(model, tmp_path / name, name)
        theirs.load_adapter(str(tmp_path / name), adapter_name=name)
    return theirs.eval()


def test_second_adapter_is_added_inactive_and_set_adapter_switches(tiny_gpt2):
    model = two_adapters(tiny_gpt2, targets2=("c_attn", "c_fc"))
    assert lorakit.active_adapters(model) == ["one"]
    c_attn = model.transformer.h[0].attn.c_attn
    assert c_attn.lora_A["one"].requires_grad and not c_attn.lora_A["two"].requires_grad
    out_one = logits(model)
    lorakit.set_adapter(model, "two")
    assert not c_attn.lora_A["one"].requires_grad and c_attn.lora_A["two"].requires_grad
    assert not torch.allclose(logits(model), out_one)
    lorakit.set_adapter(model, ["one", "two"])
    assert lorakit.active_adapters(model) == ["one", "two"]


def test_switching_a_merged_model_to_an_adapter_a_module_lacks_gives_that_module_its_base(tiny_gpt2, tmp_path):
    """"one" adapts c_attn and c_fc, "two" only c_attn: after merge and set_adapter("two"), c_fc must
    run as its base layer (not keep the merged "one"), as in PEFT."""
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2)
    theirs = to_peft(base, model, ["one", "two"], tmp_path)
    lorakit.merge(model)
    lorakit.set_adapter(model, "two")
    theirs.set_adapter("two")
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-5)
    lorakit.unmerge(model)
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-5)


def test_several_active_adapters_sum_like_peft(tiny_gpt2, tmp_path):
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2)
    lorakit.set_adapter(model, ["one", "two"])
    theirs = to_peft(base, model, ["one", "two"], tmp_path)
    theirs.base_model.set_adapter(["one", "two"])
    torch.testing.assert_close(logits(model), logits(theirs))


def test_disable_adapters_gives_the_base_model_and_restores(tiny_gpt2):
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2)
    adapted = logits(model)
    lorakit.merge(model)
    with lorakit.disable_adapters(model):
        torch.testing.assert_close(logits(model), logits(base))
    torch.testing.assert_close(logits(model), adapted, rtol=1e-4, atol=1e-4)


def test_delete_adapter(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    lorakit.delete_adapter(model, "two")
    assert lorakit.lora.manage.adapter_names(model) == ["one"]
    assert all("two" not in m.lora_A for _, m in lorakit.lora.manage.lora_modules(model))
    with pytest.raises(ValueError, match="unknown adapter name"):
        lorakit.delete_adapter(model, "two")


@pytest.mark.parametrize("combination", ["linear", "cat", "svd"])
def test_add_weighted_adapter_matches_peft(tiny_gpt2, tmp_path, combination):
    base = copy.deepcopy(tiny_gpt2)
    model = two_adapters(tiny_gpt2, targets2=("c_attn", "c_fc"))
    theirs = to_peft(base, model, ["one", "two"], tmp_path)
    lorakit.add_weighted_adapter(model, ["one", "two"], [0.7, -0.4], "mix", combination)
    theirs.add_weighted_adapter(["one", "two"], [0.7, -0.4], "mix", combination_type=combination)
    lorakit.set_adapter(model, "mix")
    theirs.set_adapter("mix")
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-4)
    if combination == "cat":  # 'cat' is the exact weighted sum of the updates
        wrapper = model.transformer.h[0].attn.c_attn
        expected = 0.7 * wrapper.lora_matrix("one") - 0.4 * wrapper.lora_matrix("two")
        torch.testing.assert_close(wrapper.lora_matrix("mix"), expected, rtol=1e-5, atol=1e-5)


def test_add_weighted_adapter_bad_input(tiny_gpt2):
    model = two_adapters(tiny_gpt2)  # "two" adapts c_attn only
    with pytest.raises(ValueError, match=r"modules differ: \['transformer.h.0.mlp.c_fc'"):
        lorakit.add_weighted_adapter(model, ["one", "two"], [1.0, 1.0], "mix", "linear")
    with pytest.raises(ValueError, match="got 1 weights for 2 adapters"):
        lorakit.add_weighted_adapter(model, ["one", "two"], [1.0], "mix", "cat")
    with pytest.raises(ValueError, match=r"unknown adapter name\(s\) \['three'\]"):
        lorakit.add_weighted_adapter(model, ["one", "three"], [1.0, 1.0], "mix", "cat")
    assert lorakit.lora.manage.adapter_names(model) == ["one", "two"]


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_dora_matches_peft_and_trains(fixture, request, tmp_path):
    base = request.getfixturevalue(fixture)
    targets = ["c_attn", "c_proj"] if fixture == "tiny_gpt2" else ["q_proj", "v_proj", "down_proj"]
    model = lorakit.inject(copy.deepcopy(base), lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                   use_dora=True))
    torch.testing.assert_close(logits(model), logits(base), rtol=1e-4, atol=1e-4)  # starts as the base
    randomize_lora(model)
    with torch.no_grad():
        for _, m in lorakit.lora.manage.lora_modules(model):
            m.lora_magnitude_vector["default"].mul_(1.1)
    lorakit.save_adapter(model, tmp_path)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-4)
    back = lorakit.load_adapter(copy.deepcopy(base), tmp_path)
    torch.testing.assert_close(logits(back), logits(theirs), rtol=1e-4, atol=1e-4)
    # merging folds the DoRA rescaling into the weight
    lorakit.merge(model)
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-4)
    lorakit.unmerge(model)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    magnitude = next(m for _, m in lorakit.lora.manage.lora_modules(model)).lora_magnitude_vector["default"]
    assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0


def test_dora_row_norm_equals_dense_norm():
    from torch import nn

    wrapper = LoraLinear(nn.Linear(40, 24))
    wrapper.add_adapter("d", 4, 8, 0.0, use_dora=True)
    nn.init.normal_(wrapper.lora_B["d"])
    dense = torch.linalg.norm(wrapper.base_layer.weight + wrapper.lora_matrix("d"), dim=1)
    torch.testing.assert_close(wrapper.dora_row_norm("d"), dense, rtol=1e-5, atol=1e-5)


def test_dora_row_norm_follows_changes_of_the_base_weight():
    from torch import nn

    wrapper = LoraLinear(nn.Linear(40, 24))
    wrapper.add_adapter("d", 4, 8, 0.0, use_dora=True)
    nn.init.normal_(wrapper.lora_B["d"])
    wrapper.dora_row_norm("d")  # ||w_o||^2 is now cached

    def dense():
        return torch.linalg.norm(wrapper.base_layer.weight + wrapper.lora_matrix("d"), dim=1)

    with torch.no_grad():
        wrapper.base_layer.weight.mul_(2)  # in place: a new version of the same storage
    torch.testing.assert_close(wrapper.dora_row_norm("d"), dense(), rtol=1e-5, atol=1e-5)
    wrapper.base_layer.weight.data = torch.randn(24, 40)  # another storage
    torch.testing.assert_close(wrapper.dora_row_norm("d"), dense(), rtol=1e-5, atol=1e-5)
    wrapper.double()
    assert wrapper.dora_row_norm("d").dtype == torch.float64
    torch.testing.assert_close(wrapper.dora_row_norm("d"), dense())


def test_rslora_scaling_matches_peft(tiny_llama, tmp_path):
    base = copy.deepcopy(tiny_llama)
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True)
    model = lorakit.inject(tiny_llama, cfg)
    assert model.model.layers[0].self_attn.q_proj.scaling["default"] == 8 / 2
    randomize_lora(model)
    lorakit.save_adapter(model, tmp_path)
    torch.testing.assert_close(logits(peft.PeftModel.from_pretrained(base, str(tmp_path)).eval()), logits(model))


def test_gaussian_init_matches_peft_statistics(tiny_llama):
    cfg = lorakit.LoraConfig(r=8, target_modules=["gate_proj"], init_lora_weights="gaussian")
    gate = lorakit.inject(tiny_llama, cfg).model.layers[0].mlp.gate_proj
    assert abs(gate.lora_A["default"].std().item() - 1 / 8) < 0.02
    assert torch.count_nonzero(gate.lora_B["default"]) == 0


def test_pissa_init_keeps_outputs_and_converts_back_to_plain_lora(tiny_llama, tmp_path):
    base = copy.deepcopy(tiny_llama)
    reference = logits(base)
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")
    model = lorakit.inject(tiny_llama, cfg)
    wrapper = model.model.layers[0].self_attn.q_proj
    assert not torch.equal(wrapper.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight)  # residual
    torch.testing.assert_close(logits(model), reference, rtol=1e-4, atol=1e-4)  # W_res + s B A == W
    # top singular direction lives in the adapter
    w = base.model.layers[0].self_attn.q_proj.weight
    top = torch.linalg.svdvals(w)[:4]
    torch.testing.assert_close(torch.linalg.svdvals(wrapper.lora_matrix("default"))[:4], top, rtol=1e-4, atol=1e-4)
    # "train", then share as a plain LoRA that applies to the ORIGINAL base
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))
    trained = logits(model)
    lorakit.save_adapter(model, tmp_path, pissa_to_lora=True)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    torch.testing.assert_close(logits(theirs), trained, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits(lorakit.load_adapter(copy.deepcopy(base), tmp_path)), trained,
                               rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- mixed-adapter batches
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
    monkeypatch.setattr(lorakit.lora.manage, "PLAN_CACHE_SIZE", 2)  # the oldest plans are dropped first
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
        lorakit.lora.manage.clear_adapter_banks(model)
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


# ----------------------------------------------------------------------------- hot-swap
def test_hotswap_replaces_weights_in_place(tiny_gpt2, tmp_path):
    other = lorakit.inject(copy.deepcopy(tiny_gpt2), lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    model = lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"]))
    randomize_lora(other, seed=5)
    lorakit.save_adapter(other, tmp_path / "other")
    param = model.transformer.h[0].attn.c_attn.lora_A["default"]
    lorakit.hotswap_adapter(model, tmp_path / "other")
    assert model.transformer.h[0].attn.c_attn.lora_A["default"] is param  # same object, new values
    torch.testing.assert_close(logits(model), logits(other))


def test_hotswap_with_other_rank_is_refused_and_changes_nothing(tiny_gpt2, tmp_path):
    other = lorakit.inject(copy.deepcopy(tiny_gpt2), lorakit.LoraConfig(r=2, target_modules=["c_attn"]))
    model = lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=4, target_modules=["c_attn"]))
    randomize_lora(model)
    lorakit.save_adapter(other, tmp_path)
    before = logits(model)
    with pytest.raises(ValueError, match="same rank"):
        lorakit.hotswap_adapter(model, tmp_path)
    torch.testing.assert_close(logits(model), before)


def test_dora_with_dropout_trains_exactly_like_peft(tiny_gpt2, tmp_path):
    """In training, dropout also reaches DoRA's (m/n - 1) correction of the base term (the DoRA authors'
    code and PEFT): from the same seed, lorakit and PEFT give the same loss and the same gradients."""
    base = tiny_gpt2
    config = lorakit.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["c_attn", "c_fc"],
                                use_dora=True)
    model = lorakit.inject(copy.deepcopy(base), config)
    randomize_lora(model)
    with torch.no_grad():
        for _, m in lorakit.lora.manage.lora_modules(model):
            m.lora_magnitude_vector["default"].mul_(1.3)
    lorakit.save_adapter(model, tmp_path)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path), is_trainable=True)
    losses = []
    for m in (model.train(), theirs.train()):
        torch.manual_seed(11)
        loss = m(input_ids=IDS, labels=IDS).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    torch.manual_seed(12)
    assert model(input_ids=IDS, labels=IDS).loss.item() != pytest.approx(losses[0].item(), rel=1e-6)
    ours = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    peft_grads = {n.removeprefix("base_model.model.").replace(".default", "").removesuffix(".weight"): p.grad
                  for n, p in theirs.named_parameters() if p.grad is not None}
    ours = {n.replace(".default", ""): g for n, g in ours.items()}
    assert ours.keys() == peft_grads.keys() and any("magnitude" in n for n in ours)
    for name in ours:
        torch.testing.assert_close(ours[name], peft_grads[name], msg=name)


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
