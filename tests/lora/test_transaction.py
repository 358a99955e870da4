"""Every adapter-management call that fails leaves the model exactly as it was: module structure, every
tensor, trainable flags, active adapters and adapter configs. Damaged adapter files (truncated, same-size
garbage, flipped header bytes, latin-1 config, files of another rank) fail with a ``LorakitError``."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from helpers import flip_header, garbage_file, latin1_file, randomize_lora, truncate_file

import lorakit
from lorakit.errors import LorakitError
from lorakit.lora import active_adapters, adapter_names
from lorakit.lora.transaction import adapter_transaction

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])


def state_of(model) -> dict:
    """Everything a failed call must not change."""
    return {
        "structure": [(n, type(m).__name__) for n, m in model.named_modules()],
        "tensors": {n: t.detach().clone() for n, t in model.state_dict().items()},
        "flags": {n: p.requires_grad for n, p in model.named_parameters()},
        "adapters": adapter_names(model),
        "active": active_adapters(model),
        "configs": copy.deepcopy(getattr(model, "_lorakit_configs", None)),
    }


def assert_unchanged(model, before: dict) -> None:
    after = state_of(model)
    assert after["structure"] == before["structure"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for name, tensor in before["tensors"].items():
        assert torch.equal(after["tensors"][name], tensor), name
    assert (after["flags"], after["adapters"], after["active"], after["configs"]) == \
        (before["flags"], before["adapters"], before["active"], before["configs"])


@pytest.fixture
def adapted(tiny_gpt2, tmp_path):
    """A GPT-2 with a trained-looking adapter "one" (r=4) and saved adapters: same layout (r=4), r=2."""
    model = lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn", "c_fc"]), "one")
    randomize_lora(model)
    for name, r in (("r4", 4), ("r2", 2)):
        source = lorakit.unload(copy.deepcopy(model))
        lorakit.inject(source, lorakit.LoraConfig(r=r, lora_alpha=8, target_modules=["c_attn", "c_fc"]))
        randomize_lora(source, seed=r)
        lorakit.save_adapter(source, tmp_path / name)
    return model, tmp_path


def test_load_adapter_under_an_existing_name_keeps_that_adapter(adapted):
    model, files = adapted
    before = state_of(model)
    with torch.no_grad():
        out = model(input_ids=IDS).logits
    with pytest.raises(LorakitError, match="already used"):
        lorakit.load_adapter(model, files / "r4", "one")
    assert_unchanged(model, before)
    with torch.no_grad():
        assert torch.equal(model(input_ids=IDS).logits, out)


def _latin1(p: Path) -> None:
    latin1_file(p, "\"")


def _other_rank(p: Path) -> None:
    other = p.parent.parent / "r2" / p.name
    p.write_bytes(other.read_bytes())


@pytest.mark.parametrize("file", ["adapter_model.safetensors", "adapter_config.json"])
@pytest.mark.parametrize("damage", [truncate_file, garbage_file, flip_header, _latin1, _other_rank])
@pytest.mark.parametrize("call", ["load_adapter", "hotswap_adapter"])
def test_a_damaged_adapter_file_is_a_lorakit_error_and_changes_nothing(adapted, file, damage, call):
    model, files = adapted
    if damage is _latin1 and file.endswith(".safetensors"):
        damage = flip_header  # a binary file: latin-1 does not apply; its header damage is the nearest case
    damage(files / "r4" / file)
    before = state_of(model)
    with pytest.raises(LorakitError):
        if call == "load_adapter":
            lorakit.load_adapter(model, files / "r4", "two")
        else:
            lorakit.hotswap_adapter(model, files / "r4", "one")
    assert_unchanged(model, before)


def test_failing_set_delete_and_combination_change_nothing(adapted, tmp_path):
    model, files = adapted
    lorakit.load_adapter(model, files / "r2", "two")
    before = state_of(model)
    with pytest.raises(LorakitError):
        lorakit.set_adapter(model, ["one", "nope"])
    with pytest.raises(LorakitError):
        lorakit.delete_adapter(model, "nope")
    with pytest.raises(LorakitError, match="equal ranks"):  # fails at the first module, after none was changed
        lorakit.add_weighted_adapter(model, ["one", "two"], [0.5, 0.5], "mix")
    with pytest.raises(LorakitError):
        lorakit.inject(model, lorakit.LoraConfig(r=2, target_modules=["c_attn"], modules_to_save=["nowhere"]), "x")
    assert_unchanged(model, before)


def test_a_failure_midway_is_undone_by_the_transaction(adapted):
    """A call interrupted after it changed modules, tensors, flags, active adapters and configs (here the block
    does them itself, then raises): all of it is put back."""
    model, files = adapted
    before = state_of(model)
    with pytest.raises(KeyboardInterrupt), adapter_transaction(model):
        lorakit.load_adapter(model, files / "r2", "two")
        lorakit.set_adapter(model, "two")
        with torch.no_grad():
            next(p for n, p in model.named_parameters() if "lora_A" in n).add_(1.0)
        lorakit.delete_adapter(model, "one")
        lorakit.unload(model)
        raise KeyboardInterrupt
    assert_unchanged(model, before)
    json.dumps(before["adapters"])  # plain names
