"""Adapter files (lorakit.io): hot-swapping an adapter's weights in place."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import randomize_lora

import lorakit

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6], [3, 2, 1, 9, 9, 9]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


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


def test_file_errors_are_lorakit_errors_with_their_builtin_bases(tiny_gpt2, tmp_path):
    with pytest.raises(lorakit.AdapterFileNotFoundError, match="adapter_config.json") as missing:
        lorakit.load_adapter(tiny_gpt2, tmp_path)
    assert isinstance(missing.value, FileNotFoundError) and isinstance(missing.value, lorakit.LorakitError)
    (tmp_path / "adapter_config.json").write_text("{not json")
    with pytest.raises(lorakit.AdapterFileError, match="not valid JSON") as bad:
        lorakit.load_adapter(tiny_gpt2, tmp_path)
    assert isinstance(bad.value, ValueError) and isinstance(bad.value, lorakit.LorakitError)
    assert not lorakit.lora.adapter_names(tiny_gpt2)
