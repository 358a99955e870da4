"""lorakit.quant: NF4 frozen linear layers against their dequantized weights, for both backends."""

from __future__ import annotations

import copy
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lorakit
from lorakit import quant
from lorakit.errors import LorakitError

BACKENDS = list(quant.BACKENDS)


def _snapshot(model: nn.Module) -> tuple[list[tuple[str, str]], dict[str, torch.Tensor]]:
    return ([(n, type(m).__name__) for n, m in model.named_modules()],
            {k: v.clone() for k, v in model.state_dict().items()})


def _assert_unchanged(model: nn.Module, before) -> None:
    modules, state = _snapshot(model)
    assert modules == before[0]
    assert state.keys() == before[1].keys()
    assert all(torch.equal(state[k], before[1][k]) for k in state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_dequantized_weight_equals_the_backends_own_dequantization(backend):
    torch.manual_seed(0)
    linear = nn.Linear(256, 128)  # 32,768 weights: whole blocks for both libraries, no padding
    layer = quant.Linear4bit.from_dense(linear, backend)
    if backend == "bitsandbytes":
        import bitsandbytes.functional as bnbf

        packed, state = bnbf.quantize_4bit(linear.weight.detach(), blocksize=64, compress_statistics=True,
                                           quant_type="nf4")
        expected = bnbf.dequantize_4bit(packed, state)
    else:
        from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

        expected = to_nf4(linear.weight.detach(), 64, 256).get_original_weight()
    assert torch.equal(layer.dequantized_weight(torch.float32), expected)
    error = (expected - linear.weight).abs()
    assert 0 < error.max() <= 0.2 * linear.weight.abs().max()  # half the widest NF4 gap (0.14) + 8-bit absmax


def test_torchao_pads_a_layer_that_is_not_whole_blocks_and_drops_the_padding():
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=False)  # 7,680 weights: padded to 16,384
    layer = quant.Linear4bit.from_dense(linear, "torchao")
    padded = F.pad(linear.weight.detach().reshape(-1), (0, 16384 - 7680)).view(-1, 64)
    expected = to_nf4(padded, 64, 256).get_original_weight().reshape(-1)[:7680].view(80, 96)
    assert torch.equal(layer.dequantized_weight(), expected)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("bias", [True, False])
def test_forward_and_input_gradient_equal_a_dense_layer_with_the_dequantized_weight(backend, bias):
    torch.manual_seed(0)
    linear = nn.Linear(96, 80, bias=bias)
    layer = quant.Linear4bit.from_dense(linear, backend)
    dense = quant.dequantize(nn.Sequential(copy.deepcopy(layer)))[0]
    assert isinstance(dense, nn.Linear)
    x = torch.randn(3, 5, 96, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    grad_out = torch.randn(3, 5, 80)
    out = layer(x)
    out.backward(grad_out)
    ref = F.linear(x_ref, layer.dequantized_weight(), linear.bias)
    ref.backward(grad_out)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(x.grad, x_ref.grad)
    torch.testing.assert_close(dense(x_ref), ref)
    assert not any(p.requires_grad for p in layer.parameters())  # frozen: no weight (or bias) gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_trainable_bias_gets_its_gradient(backend):
    torch.manual_seed(0)
    layer = quant.Linear4bit.from_dense(nn.Linear(64, 48), backend)
    layer.bias.requires_grad_(True)
    x = torch.randn(4, 64)
    grad_out = torch.randn(4, 48)
    layer(x).backward(grad_out)
    torch.testing.assert_close(layer.bias.grad, grad_out.sum(0))


def test_the_graph_keeps_no_dequantized_weight_between_forward_and_backward():
    torch.manual_seed(0)
    layer = quant.Linear4bit.from_dense(nn.Linear(128, 96), "bitsandbytes")
    x = torch.randn(2, 7, 128, requires_grad=True)
    saved: list[torch.Size] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        out = layer(x)
    assert torch.Size((96, 128)) not in saved and torch.Size((128, 96)) not in saved
    out.sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_compute_dtype_is_used_inside_and_the_output_keeps_the_input_dtype(backend):
    torch.manual_seed(0)
    layer = quant.Linear4bit.from_dense(nn.Linear(64, 64), backend, compute_dtype=torch.bfloat16)
    assert layer.bias.dtype == torch.bfloat16
    x = torch.randn(4, 64)
    out = layer(x)
    assert out.dtype == torch.float32
    ref = F.linear(x.bfloat16(), layer.dequantized_weight(torch.bfloat16), layer.bias).float()
    assert torch.equal(out, ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_frozen_weights_take_at_most_0_3x_their_bf16_size(backend):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 512))
    quant.quantize(model, backend=backend)
    stored, dense = quant.quantized_bytes(model)
    tensors = [*model.buffers(), *(p for n, p in model.named_parameters() if not n.endswith("bias"))]
    assert stored == sum(t.numel() * t.element_size() for t in tensors)  # every stored byte is counted
    assert dense == (1024 * 1024 + 1024 * 512) * 2
    assert stored <= 0.3 * dense


def test_model_to_bfloat16_leaves_the_quantized_state_exact():
    torch.manual_seed(0)
    model = quant.quantize(nn.Sequential(nn.Linear(64, 64)), backend="bitsandbytes")
    before = model[0].dequantized_weight(torch.float32)
    model.to(torch.bfloat16)
    assert torch.equal(model[0].dequantized_weight(torch.float32), before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_quantize_gpt2_conv1d_and_llama_skip_the_head_and_match_the_dequantized_model(tiny_gpt2, tiny_llama,
                                                                                       backend):
    ids = torch.randint(0, 100, (2, 9))
    for model, skipped in ((tiny_gpt2, "transformer.h.1.mlp.c_proj"), (tiny_llama, "model.layers.0.mlp")):
        reference = model(ids).logits
        quant.quantize(model, skip=[skipped], backend=backend)
        kinds = {n: type(m).__name__ for n, m in model.named_modules()}
        assert kinds["lm_head"] == "Linear"
        assert all(kind != "Linear4bit" for n, kind in kinds.items() if n.startswith(skipped))
        assert sum(kind == "Linear4bit" for kind in kinds.values()) >= 6
        out = model(ids).logits
        dense = quant.dequantize(copy.deepcopy(model))
        assert not any(isinstance(m, quant.Linear4bit) for m in dense.modules())
        assert {type(m).__name__ for n, m in dense.named_modules() if n.endswith(("c_attn", "q_proj"))} == {
            "Conv1D" if model is tiny_gpt2 else "Linear"}  # the dense layers the model was built with
        torch.testing.assert_close(out, dense(ids).logits)
        assert 0 < (out - reference).abs().max() < 0.2 * reference.abs().max()  # 4-bit error, not garbage


def test_quantized_state_dict_loads_into_a_freshly_quantized_model(tiny_llama):
    from transformers import LlamaForCausalLM

    quant.quantize(tiny_llama)
    torch.manual_seed(1)
    other = quant.quantize(LlamaForCausalLM(tiny_llama.config).eval())
    ids = torch.randint(0, 100, (2, 9))
    assert not torch.equal(other(ids).logits, tiny_llama(ids).logits)
    other.load_state_dict(tiny_llama.state_dict())
    assert torch.equal(other(ids).logits, tiny_llama(ids).logits)


def test_default_backend_is_bitsandbytes_on_cpu_when_installed():
    assert quant.default_backend("cpu") == "bitsandbytes"
    assert quant.default_backend("mps") == "torchao"


# ---------------------------------------------------------------------------------------------- bad input
def test_unknown_quantization_name_and_backend_change_nothing(tiny_llama):
    before = _snapshot(tiny_llama)
    with pytest.raises(quant.QuantizationError, match=r"unknown quantization 'int3'.*\['nf4'\]"):
        quant.quantize(tiny_llama, "int3")
    with pytest.raises(ValueError, match=r"unknown quantization backend 'bnb'.*'bitsandbytes'"):
        quant.quantize(tiny_llama, backend="bnb")
    with pytest.raises(LorakitError, match="compute_dtype must be a floating"):
        quant.quantize(tiny_llama, compute_dtype=torch.int8)
    _assert_unchanged(tiny_llama, before)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_missing_backend_names_the_package_to_install_and_changes_nothing(tiny_llama, monkeypatch, backend):
    module = quant.BACKENDS[backend].module
    for name in [m for m in sys.modules if m == backend or m.startswith(backend + ".")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, backend, None)  # what Python does for a package that cannot be imported
    before = _snapshot(tiny_llama)
    with pytest.raises(quant.MissingBackendError, match=rf"pip install {backend}") as info:
        quant.quantize(tiny_llama, backend=backend)
    assert isinstance(info.value, ImportError) and isinstance(info.value, LorakitError)
    assert module.startswith(backend)
    _assert_unchanged(tiny_llama, before)
    other = "torchao" if backend == "bitsandbytes" else "bitsandbytes"
    assert quant.default_backend("cpu") == other  # "auto" falls back to the installed one


def test_quantizing_a_module_that_is_not_linear_is_refused(tiny_llama):
    with pytest.raises(quant.QuantizationError, match=r"cannot quantize a Embedding.*linear layers"):
        quant.Linear4bit.from_dense(tiny_llama.model.embed_tokens)
    with pytest.raises(quant.QuantizationError, match="no linear layer to quantize"):
        quant.quantize(nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4)))
    with pytest.raises(quant.QuantizationError, match="use Linear4bit.from_dense"):
        quant.quantize(nn.Linear(4, 4))
    before = _snapshot(tiny_llama)
    with pytest.raises(quant.QuantizationError, match="no linear layer"):
        quant.quantize(tiny_llama, skip=["model"])
    _assert_unchanged(tiny_llama, before)


def test_quantizing_after_inject_is_refused_and_changes_nothing(tiny_llama):
    lorakit.inject(tiny_llama, lorakit.LoraConfig(r=2, target_modules=["q_proj"]))
    before = _snapshot(tiny_llama)
    with pytest.raises(quant.QuantizationError, match="quantize the base model first, then inject"):
        quant.quantize(tiny_llama)
    _assert_unchanged(tiny_llama, before)
