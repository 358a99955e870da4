"""The causal-LM tasks' losses go through lorakit.causal_lm_loss and equal the logits path they replace."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_lora, tiny_e2e_raw_config

import lorakit
from lorakit.train.tasks.lm import get_lm_task
from lorakit.train.tasks.nlg import NLGTask


def _batch():
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(1, 100, (3, 10), generator=gen)
    mask = torch.ones_like(ids)
    mask[2, -3:] = 0
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt
    labels[2, -3:] = -100  # padding
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@pytest.mark.parametrize("task", [NLGTask("e2e", label_smoothing=0.1), get_lm_task("wikitext", label_smoothing=0.1)],
                         ids=["e2e", "wikitext"])
def test_task_loss_through_fused_path_equals_the_logits_path(task, tiny_gpt2, monkeypatch):
    lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    randomize_lora(tiny_gpt2)
    params = [p for p in tiny_gpt2.parameters() if p.requires_grad]
    batch = _batch()
    calls = []
    real = lorakit.losses.linear_cross_entropy
    monkeypatch.setattr(lorakit.losses, "linear_cross_entropy", lambda *a, **k: calls.append(1) or real(*a, **k))
    fused = task.loss(tiny_gpt2, batch)
    fused_grads = torch.autograd.grad(fused, params)
    assert calls, "the task did not use the fused loss"
    task.fused_loss = False
    plain = task.loss(tiny_gpt2, batch)
    plain_grads = torch.autograd.grad(plain, params)
    assert len(calls) == 1
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-6)
    for f, p in zip(fused_grads, plain_grads, strict=True):
        torch.testing.assert_close(f, p, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# training.fused_loss / training.loss_chunk_size: from the config through the loop
# ----------------------------------------------------------------------------------------------------------

ALL_LINEAR = {"target_modules": "all-linear"}


def _losses(workdir) -> list[float]:
    import json

    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [rec["loss"] for rec in map(json.loads, lines) if "loss" in rec]


def test_fused_loss_key_reaches_the_loop_and_true_equals_false(tmp_path, kit, monkeypatch):
    from lorakit.train.config import validate

    calls = []
    real = lorakit.losses.linear_cross_entropy

    def spy(*args, **kwargs):
        calls.append(kwargs.get("chunk_size"))
        return real(*args, **kwargs)

    monkeypatch.setattr(lorakit.losses, "linear_cross_entropy", spy)
    kit.run(validate(tiny_e2e_raw_config(method=ALL_LINEAR, training={"fused_loss": False})), tmp_path / "logits")
    assert calls == [], "training.fused_loss false still used the fused loss"
    fused = tiny_e2e_raw_config(method=ALL_LINEAR, training={"fused_loss": True, "loss_chunk_size": 7})
    kit.run(validate(fused), tmp_path / "fused")
    assert calls and set(calls) == {7}, "training.fused_loss true / loss_chunk_size did not reach the loss"

    plain, fused = _losses(tmp_path / "logits"), _losses(tmp_path / "fused")
    assert len(plain) == 2 and plain[0] > 1.0
    assert fused == pytest.approx(plain, rel=1e-5)
    a, b = kit.tensors(tmp_path / "logits"), kit.tensors(tmp_path / "fused")
    assert a.keys() == b.keys() and a
    for key in a:
        # Adam's first step moves each weight by about lr whatever the gradient's size: float32 rounding in
        # near-zero gradients shows as ~1e-6 here, on weights of ~2e-2
        torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=2e-5, msg=key)


def test_fused_loss_true_on_a_model_it_cannot_run_stops_before_training(tmp_path, kit):
    from lorakit.train.config import validate
    from lorakit.train.errors import TrainingError

    neo = {"model_type": "gpt_neo", "vocab_size": 50257, "max_position_embeddings": 128, "hidden_size": 32,
           "num_layers": 2, "num_heads": 2, "attention_types": [[["global"], 2]], "bos_token_id": 50256,
           "eos_token_id": 50256}
    with pytest.raises(TrainingError) as err:
        kit.run(validate(tiny_e2e_raw_config(model={"architecture": neo}, method=ALL_LINEAR,
                                                training={"fused_loss": True})), tmp_path / "run")
    msg = str(err.value)
    assert "training.fused_loss" in msg and "GPTNeoForCausalLM" in msg and "'gpt_neo'" in msg and "false" in msg
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.parametrize(("training", "task", "key", "says"), [
    ({"fused_loss": "yes"}, "e2e", "fused_loss", "must be true, false or one of ['auto']"),
    ({"fused_loss": 1}, "e2e", "fused_loss", "must be true, false"),
    ({"fused_loss": None}, "e2e", "fused_loss", "must not be null"),
    ({"loss_chunk_size": 0}, "e2e", "loss_chunk_size", ">= 1"),
    ({"loss_chunk_size": "64"}, "e2e", "loss_chunk_size", "must be an integer"),
    ({"fused_loss": False, "loss_chunk_size": 64}, "e2e", "loss_chunk_size", "set one of them only"),
    ({"fused_loss": True}, "quickstart", "fused_loss", "task 'quickstart' is not one"),
    ({"loss_chunk_size": 64}, "rte", "loss_chunk_size", "task 'rte' is not one"),
    ({"fused_loss": True}, "e2e+distill", "fused_loss", "method 'distill'"),
])
def test_bad_fused_loss_settings_are_refused_with_the_key(training, task, key, says):
    from lorakit.train.config import ConfigError, validate

    task, _, method = task.partition("+")
    raw = {"model": {"name_or_path": "x"}, "task": {"name": task}, "training": training}
    if method:
        raw["method"] = {"name": method, "teacher": "gpt2"}
    with pytest.raises(ConfigError) as err:
        validate(raw)
    assert f"$.training.{key}:" in str(err.value) and says in str(err.value), str(err.value)


def test_fused_loss_defaults_to_auto_and_reaches_only_causal_lm_tasks():
    from lorakit.train.config import validate
    from lorakit.train.tasks import task_from_config

    cfg = validate({"model": {"name_or_path": "x"}, "task": {"name": "e2e"}})
    assert cfg.training.fused_loss == "auto" and cfg.training.loss_chunk_size is None
    cfg = validate({"model": {"name_or_path": "x"}, "task": {"name": "sft"},
                    "training": {"fused_loss": True, "loss_chunk_size": 256}})
    task = task_from_config(cfg)
    assert task.fused_loss is True and task.loss_chunk_size == 256
    assert not hasattr(task_from_config(validate({"model": {"name_or_path": "x"}, "task": {"name": "rte"}})),
                       "fused_loss")
