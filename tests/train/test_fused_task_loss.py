"""The causal-LM tasks' losses go through lorakit.causal_lm_loss and equal the logits path they replace."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_lora

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
