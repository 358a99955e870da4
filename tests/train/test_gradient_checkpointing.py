"""training.gradient_checkpointing: same gradients as without it (dropout included), fewer saved bytes."""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_lora
from torch import nn

import lorakit
from lorakit.train.build import enable_gradient_checkpointing
from lorakit.train.errors import TrainingError


def _gpt2_with_lora(dropout: float = 0.1):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=3, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    model = GPT2LMHeadModel(cfg)
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout,
                                             target_modules=["c_attn", "c_fc"]))
    randomize_lora(model)  # a non-zero update, so that LoRA's dropout shows in the loss
    return model.train()


def _loss_grads_and_saved_bytes(model, ids):
    saved_bytes = []

    def pack(t):
        saved_bytes.append(t.untyped_storage().nbytes())
        return t

    torch.manual_seed(123)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(ids, labels=ids).loss
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return loss.item(), grads, sum(saved_bytes)


def test_checkpointed_gradients_equal_plain_ones_with_dropout_everywhere():
    ids = torch.randint(0, 100, (4, 48), generator=torch.Generator().manual_seed(1))
    model = _gpt2_with_lora()
    loss, grads, saved = _loss_grads_and_saved_bytes(model, ids)
    assert enable_gradient_checkpointing(model) == [""]
    loss_ckpt, grads_ckpt, saved_ckpt = _loss_grads_and_saved_bytes(model, ids)

    assert loss_ckpt == pytest.approx(loss, rel=1e-6)
    assert grads.keys() == grads_ckpt.keys() and any("lora_A" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads_ckpt[name], grads[name], msg=name)
    assert saved_ckpt < 0.5 * saved  # only each block's input is kept for the backward pass

    # the masks really are random: another seed gives another loss
    torch.manual_seed(7)
    assert model(ids, labels=ids).loss.item() != pytest.approx(loss, rel=1e-6)


def test_offload_checkpoints_every_block_through_the_host_hooks_and_equals_plain_checkpointing_on_the_cpu():
    from lorakit.train.offload import offloaded_checkpoint

    ids = torch.randint(0, 100, (4, 48), generator=torch.Generator().manual_seed(1))
    model = _gpt2_with_lora()
    enable_gradient_checkpointing(model)
    loss, grads, _ = _loss_grads_and_saved_bytes(model, ids)
    offloaded = _gpt2_with_lora()
    assert enable_gradient_checkpointing(offloaded, offload=True) == [""]
    blocks = [m for m in offloaded.modules() if getattr(m, "gradient_checkpointing", False)]
    assert len(blocks) == 4  # GPT2Model and its 3 blocks
    assert all(b._gradient_checkpointing_func.func is offloaded_checkpoint for b in blocks)
    loss_off, grads_off, _ = _loss_grads_and_saved_bytes(offloaded, ids)
    assert loss_off == loss  # on the CPU nothing moves: plain checkpointing, bit for bit
    assert grads_off.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_off[name], grads[name], rtol=0, atol=0, msg=name)


def test_the_host_hooks_keep_cpu_tensors_as_they_are():
    from lorakit.train.offload import offload_to_host

    x = torch.randn(3, 4, requires_grad=True)
    with offload_to_host():
        y = (x * x).sum()
    y.backward()
    torch.testing.assert_close(x.grad, 2 * x.detach())


@pytest.mark.parametrize("mode", [True, "offload"])
def test_training_runs_with_and_without_it_end_with_the_same_weights(tmp_path, kit, mode):
    common = dict(
        model={"architecture": dict(kit.TINY_BERT, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)},
        method={"name": "lora", "r": 4, "lora_alpha": 8, "lora_dropout": 0.1, "target_modules": ["query", "value"]},
        training={"max_steps": 3, "checkpoint_every": 3, "batch_size": 8},
        evaluation={"every": 3, "average_last": 1, "baseline": False},
    )
    kit.run(kit.tiny_config(**common), tmp_path / "plain")
    ckpt = dict(common, training=dict(common["training"], gradient_checkpointing=mode))
    kit.run(kit.tiny_config(**ckpt), tmp_path / "checkpointed")
    plain, checkpointed = kit.tensors(tmp_path / "plain"), kit.tensors(tmp_path / "checkpointed")
    assert plain.keys() == checkpointed.keys() and plain
    for key in plain:
        torch.testing.assert_close(checkpointed[key], plain[key], rtol=1e-4, atol=1e-6)


def test_a_classifier_switches_on_its_encoder_only():
    from transformers import BertConfig, BertModel

    from lorakit.train.build import SequenceClassifier

    encoder = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=32))
    model = SequenceClassifier(encoder, 16, 2, "mean", 0.0)
    assert enable_gradient_checkpointing(model) == ["encoder"]
    on = getattr(encoder, "is_activation_checkpointing", None)  # transformers 5.x; older: is_gradient_checkpointing
    assert on if on is not None else encoder.is_gradient_checkpointing


def test_a_model_without_a_transformer_is_refused_by_name():
    with pytest.raises(TrainingError, match=r"training\.gradient_checkpointing.*Sequential.*false"):
        enable_gradient_checkpointing(nn.Sequential(nn.Linear(4, 4)))
