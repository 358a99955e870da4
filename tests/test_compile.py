"""lorakit under torch.compile: the custom LoRA function traces, trains, and hot-swaps without recompiling.

The ``aot_eager`` backend runs TorchDynamo's capture and AOTAutograd's forward/backward split (where a
custom ``autograd.Function`` or a Python-side state change would break) without generating C++ code,
so the test stays fast on a CPU.
"""

from __future__ import annotations

import pytest
import torch
from helpers import randomize_lora

import lorakit

torch_dynamo = pytest.importorskip("torch._dynamo")


def _model(seed: int, lora_dropout: float = 0.0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64,
                                       resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, lora_dropout=lora_dropout,
                                             target_modules=["c_attn", "c_fc"]))
    randomize_lora(model, seed)
    return model


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch_dynamo.reset()
    yield
    torch_dynamo.reset()


def test_compiled_training_step_gives_the_eager_loss_and_lora_gradients(lora_dropout=0.2):
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    eager, compiled_src = _model(1, lora_dropout).train(), _model(1, lora_dropout).train()
    compiled = torch.compile(compiled_src, backend="aot_eager")

    torch.manual_seed(3)  # the same dropout seeds in both (aot_eager runs the eager random ops)
    loss_e = eager(ids, labels=ids).loss
    loss_e.backward()
    torch.manual_seed(3)
    loss_c = compiled(ids, labels=ids).loss
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e)
    grads_e = {n: p.grad for n, p in eager.named_parameters() if p.grad is not None}
    grads_c = {n: p.grad for n, p in compiled_src.named_parameters() if p.grad is not None}
    assert grads_e.keys() == grads_c.keys() and all(".lora_" in n for n in grads_e)
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], msg=name)


def test_hotswap_into_a_compiled_model_needs_no_recompilation(tmp_path):
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    first, second = _model(1).eval(), _model(2).eval()
    lorakit.save_adapter(second, tmp_path / "second")
    with torch.no_grad():
        expected_first, expected_second = first(ids).logits, second(ids).logits
    assert not torch.allclose(expected_first, expected_second)

    compiled = torch.compile(first, backend="aot_eager")
    with torch.no_grad():
        torch.testing.assert_close(compiled(ids).logits, expected_first)
        lorakit.hotswap_adapter(first, tmp_path / "second")
        with torch_dynamo.config.patch(error_on_recompile=True):
            torch.testing.assert_close(compiled(ids).logits, expected_second)


def test_lora_dropout_adds_no_graph_break():
    """The dropout seed is a tensor (no ``.item()``), so TorchDynamo captures LoRA with dropout whole."""
    ids = torch.randint(0, 100, (2, 16), generator=torch.Generator().manual_seed(0))
    breaks = {}
    for p in (0.0, 0.2):
        torch_dynamo.reset()
        breaks[p] = torch_dynamo.explain(_model(1, p).train())(ids, labels=ids).graph_break_count
    assert breaks[0.2] == breaks[0.0]
