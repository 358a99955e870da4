"""Many adapters on one model (lorakit.lora.manage): switch, delete, disable, combine; checked against PEFT."""

from __future__ import annotations

import copy

import pytest
import torch
from lora_helpers import logits, to_peft, two_adapters

import lorakit


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
    assert lorakit.lora.adapter_names(model) == ["one"]
    assert all("two" not in m.lora_A for _, m in lorakit.lora.lora_modules(model))
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
    assert lorakit.lora.adapter_names(model) == ["one", "two"]


def test_remove_adapter_is_a_deprecated_alias_of_delete_adapter(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    with pytest.warns(DeprecationWarning, match="delete_adapter"):
        lorakit.remove_adapter(model, "two")
    assert lorakit.lora.adapter_names(model) == ["one"]


def test_adapter_errors_are_lorakit_errors_with_their_builtin_bases(tiny_gpt2):
    model = two_adapters(tiny_gpt2)
    before = logits(model)
    with pytest.raises(lorakit.AdapterError, match="unknown adapter name") as caught:
        lorakit.delete_adapter(model, "three")
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, lorakit.LorakitError)
    with pytest.raises(lorakit.UnknownAdapterError) as missing:
        lorakit.get_config(model, "three")
    assert isinstance(missing.value, KeyError) and isinstance(missing.value, lorakit.LorakitError)
    with pytest.raises(lorakit.UnsupportedModuleError, match="cannot adapt") as unsupported:
        lorakit.inject(model, lorakit.LoraConfig(target_modules=["ln_f"]), "three")
    assert isinstance(unsupported.value, TypeError) and isinstance(unsupported.value, lorakit.LorakitError)
    assert lorakit.lora.adapter_names(model) == ["one", "two"]
    torch.testing.assert_close(logits(model), before)


def test_set_module_replaces_a_nested_and_a_top_level_module(tiny_gpt2):
    new = torch.nn.Identity()
    lorakit.lora.set_module(tiny_gpt2, "transformer.h.0.mlp", new)
    assert tiny_gpt2.transformer.h[0].mlp is new
    head = torch.nn.Linear(1, 1)
    lorakit.lora.set_module(tiny_gpt2, "lm_head", head)
    assert tiny_gpt2.lm_head is head
