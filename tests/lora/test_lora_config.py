"""What to adapt (lorakit.lora.config): the one "belongs to module X" rule and the config's errors."""

from __future__ import annotations

import pytest
import torch

import lorakit
from lorakit.lora import in_modules


@pytest.mark.parametrize("name, modules, expected", [
    ("classifier", ["classifier"], True),
    ("classifier.weight", ["classifier"], True),
    ("encoder.classifier.dense.bias", ["classifier"], True),
    ("model.encoder.pooler.dense.weight", ["encoder.pooler"], True),
    ("my_classifier.weight", ["classifier"], False),
    ("classifier_head.weight", ["classifier"], False),
    ("encoder.pooler.dense.weight", ["decoder.pooler"], False),
    ("classifier.weight", [], False),
    ("classifier.weight", None, False),
])
def test_in_modules_matches_whole_dotted_parts_anywhere(name, modules, expected):
    assert in_modules(name, modules) is expected


def test_a_module_inside_modules_to_save_is_trained_whole_not_adapted(tiny_bert):
    """modules_to_save wins over target_modules for modules nested anywhere inside it, as for its parameters."""
    config = lorakit.LoraConfig(target_modules=["query", "value", "dense"], modules_to_save=["attention"])
    targets = lorakit.find_targets(tiny_bert, config)
    assert targets and not any(".attention." in f".{t}." for t in targets)
    lorakit.inject(tiny_bert, config)
    trains = {n for n, p in tiny_bert.named_parameters() if p.requires_grad}
    assert any(".attention.self.query.weight" in n for n in trains)  # trained whole, with the attention block
    assert not any("lora_" in n and ".attention." in n for n in trains)


@pytest.mark.parametrize("kwargs, words", [
    ({"r": -1}, r"r \(the LoRA rank\)"),
    ({"lora_dropout": 1.5}, "lora_dropout"),
    ({"bias": "yes"}, "bias must be one of"),
    ({"init_lora_weights": "svd"}, "init_lora_weights"),
    ({"rank_pattern": {"q": 0}}, "rank_pattern"),
])
def test_bad_config_values_raise_a_lorakit_error_that_is_a_value_error(kwargs, words):
    with pytest.raises(lorakit.AdapterError, match=words) as caught:
        lorakit.LoraConfig(target_modules=["q"], **kwargs)
    assert isinstance(caught.value, lorakit.LorakitError) and isinstance(caught.value, ValueError)


def test_loralib_layers_keep_plain_value_errors():
    """layers.py imports only functional, so its own errors stay ValueError (not LorakitError)."""
    with pytest.raises(ValueError, match="lora_alpha") as caught:
        lorakit.Linear(4, 4, r=2, lora_alpha=0)
    assert not isinstance(caught.value, lorakit.LorakitError)
    assert torch.is_tensor(lorakit.Linear(4, 4, r=2).lora_A)
