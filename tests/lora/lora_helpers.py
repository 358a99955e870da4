"""Helpers shared by the model-surgery tests: two adapters on a tiny GPT-2, the same adapters in PEFT."""

from __future__ import annotations

import copy

import peft
import torch
from helpers import randomize_lora

import lorakit

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
