"""The config keys of packing and offloaded checkpointing: bad combinations are refused with their JSON path."""

from __future__ import annotations

import pytest

from lorakit.train.config import ConfigError, validate


def _raw(**sections):
    raw = {"model": {"name_or_path": "x"}, "task": {"name": "e2e"}}
    raw.update(sections)
    return raw


def test_packing_needs_a_causal_lm_task_no_random_length_and_no_prefix_method():
    assert validate(_raw(data={"packing": True})).data.packing is True
    with pytest.raises(ConfigError, match=r"\$.data.packing: packs causal-LM training examples.*task 'mrpc'"):
        validate(_raw(task={"name": "mrpc"}, data={"packing": True}))
    with pytest.raises(ConfigError, match=r"\$.data.packing: .*data.random_length"):
        validate(_raw(data={"packing": True, "random_length": [8, 16]}))
    with pytest.raises(ConfigError, match=r"\$.data.packing: method 'prefix_layer' runs through the model's KV cache"):
        validate(_raw(method={"name": "prefix_layer"}, data={"packing": True}))


@pytest.mark.parametrize("value", [True, False, "offload"])
def test_gradient_checkpointing_takes_a_boolean_or_offload(value):
    assert validate(_raw(training={"gradient_checkpointing": value})).training.gradient_checkpointing == value


@pytest.mark.parametrize("value", ["yes", 1, "Offload", None])
def test_gradient_checkpointing_refuses_anything_else(value):
    with pytest.raises(ConfigError, match=r"\$.training.gradient_checkpointing: must (be true, false or one of "
                                          r"\['offload'\]|not be null)"):
        validate(_raw(training={"gradient_checkpointing": value}))
