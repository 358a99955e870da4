"""LoRA on a 4-bit (NF4) base: equal to LoRA on the dequantized base, PEFT-format round trip, merge reporting."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

import lorakit
from lorakit import quant
from lorakit.lora.qlora import LoraLinear4bit

BACKENDS = list(quant.BACKENDS)


def _quantized_and_dense(model: nn.Module, backend: str, config: lorakit.LoraConfig) -> tuple[nn.Module, nn.Module]:
    """``model`` quantized + LoRA, and a copy with the same dequantized weights (fp32) + the same LoRA weights."""
    quant.quantize(model, backend=backend, compute_dtype=torch.float32)
    dense = quant.dequantize(copy.deepcopy(model))
    torch.manual_seed(3)
    lorakit.inject(model, config)
    lorakit.inject(dense, config)
    missing, unexpected = dense.load_state_dict(
        {k: v for k, v in model.state_dict().items() if "lora_" in k or k.endswith("bias")}, strict=False)
    assert not unexpected
    return model, dense


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("fixture, sliced", [("tiny_llama", False), ("tiny_gpt2", False), ("tiny_gpt2", True)])
def test_lora_on_a_4bit_base_equals_lora_on_its_dequantized_weights(fixture, sliced, backend, request):
    model = request.getfixturevalue(fixture)
    config = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False,
                                bias="lora_only", enable_lora={"c_attn": [True, False, True]} if sliced else {})
    model, dense = _quantized_and_dense(model, backend, config)
    wrappers = [m for m in model.modules() if isinstance(m, LoraLinear4bit)]
    assert len(wrappers) >= 6 and all(isinstance(w.base_layer, quant.Linear4bit) for w in wrappers)
    model.train()
    dense.train()
    ids = torch.randint(0, 100, (2, 11))
    out, ref = model(ids, labels=ids), dense(ids, labels=ids)
    torch.testing.assert_close(out.logits, ref.logits)
    out.loss.backward()
    ref.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    ref_grads = {n: p.grad for n, p in dense.named_parameters() if p.requires_grad}
    assert grads.keys() == ref_grads.keys()
    assert any(".lora_A." in n for n in grads) and any(n.endswith("base_layer.bias") for n in grads) == (
        fixture == "tiny_gpt2")
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name)


def test_a_lora_training_step_on_a_4bit_base_keeps_no_dense_weight():
    torch.manual_seed(0)
    model = quant.quantize(nn.Sequential(nn.Linear(128, 96), nn.ReLU(), nn.Linear(96, 8)), skip=["2"])
    lorakit.inject(model, lorakit.LoraConfig(r=4, target_modules=["0"], lora_dropout=0.1)).train()
    x = torch.randn(5, 128, requires_grad=True)
    saved: list[torch.Size] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.shape) or t, lambda t: t):
        loss = model(x).square().sum()
    assert torch.Size((96, 128)) not in saved and torch.Size((128, 96)) not in saved
    loss.backward()
    assert model[0].lora_A["default"].grad is not None and x.grad is not None


@pytest.mark.parametrize("backend", BACKENDS)
def test_adapter_trained_on_a_4bit_base_saves_in_peft_format_and_loads_with_equal_outputs(tiny_llama, backend,
                                                                                           tmp_path):
    pristine = copy.deepcopy(tiny_llama)
    config = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                init_lora_weights=False)
    model, dense = _quantized_and_dense(tiny_llama, backend, config)
    lorakit.save_adapter(model, tmp_path / "q")
    lorakit.save_adapter(dense, tmp_path / "dense")
    saved, saved_dense = (load_file(tmp_path / d / "adapter_model.safetensors") for d in ("q", "dense"))
    assert saved.keys() == saved_dense.keys()  # the same PEFT keys as an adapter of the unquantized model
    assert all(torch.equal(saved[k], saved_dense[k]) for k in saved)
    assert any(k.startswith("base_model.model.model.layers.0.self_attn.q_proj.lora_A") for k in saved)

    fresh = quant.quantize(pristine, backend=backend, compute_dtype=torch.float32)
    lorakit.load_adapter(fresh, tmp_path / "q")
    ids = torch.randint(0, 100, (2, 9))
    assert torch.equal(fresh(ids).logits, model.eval()(ids).logits)


@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_and_unload_on_a_4bit_base_reports_its_rounding_error(tiny_llama, backend):
    config = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "o_proj"], init_lora_weights=False)
    model, dense = _quantized_and_dense(tiny_llama, backend, config)
    name = "model.layers.1.self_attn.o_proj"
    wrapper = model.get_submodule(name)
    update = wrapper.delta_weight().detach().float()
    exact = wrapper.base_layer.dequantized_weight(torch.float32) + update
    ids = torch.randint(0, 100, (2, 9))
    adapted = model(ids).logits

    with pytest.warns(quant.QuantizedMergeWarning, match=r"re-quantized 4 merged 4-bit layer\(s\).*dequantize\(model"
                      ) as record:
        lorakit.merge_and_unload(model)
    errors = record[0].message.errors
    assert set(errors) == {f"model.layers.{i}.self_attn.{p}" for i in (0, 1) for p in ("q_proj", "o_proj")}
    merged = model.get_submodule(name)
    assert isinstance(merged, quant.Linear4bit)
    expected = quant.Linear4bit.from_dense(_linear_with(exact), backend).dequantized_weight(torch.float32)
    assert torch.equal(merged.dequantized_weight(torch.float32), expected)
    difference = (expected - exact).abs()
    assert errors[name]["max_abs_error"] == pytest.approx(difference.max().item())
    assert errors[name]["mean_abs_error"] == pytest.approx(difference.mean().item())
    assert errors[name]["mean_abs_update"] == pytest.approx(update.abs().mean().item())
    assert 0 < errors[name]["max_abs_error"]
    assert not torch.equal(model(ids).logits, adapted)  # the rounding is real, and reported

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exact, dense merge warns about nothing
        lorakit.merge_and_unload(dense)
    torch.testing.assert_close(dense(ids).logits, adapted)


@pytest.mark.parametrize("fixture, targets", [("tiny_llama", ["q_proj", "down_proj"]), ("tiny_gpt2", ["c_attn"])])
def test_dequantizing_an_adapted_4bit_model_gives_an_exact_dense_merge(fixture, targets, request):
    config = lorakit.LoraConfig(r=4, target_modules=targets, init_lora_weights=False)
    model, _ = _quantized_and_dense(request.getfixturevalue(fixture), "bitsandbytes", config)
    ids = torch.randint(0, 100, (2, 9))
    adapted = model(ids).logits
    quant.dequantize(model)  # the wrappers now hold dense bases (nn.Linear, GPT-2's Conv1D) with the dequantized
    kinds = {type(m.base_layer).__name__ for m in model.modules() if isinstance(m, LoraLinear4bit)}
    assert kinds == {"Conv1D" if fixture == "tiny_gpt2" else "Linear"}
    torch.testing.assert_close(model(ids).logits, adapted)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        lorakit.merge_and_unload(model)
    assert not any(isinstance(m, quant.Linear4bit) for m in model.modules())
    torch.testing.assert_close(model(ids).logits, adapted)


def _linear_with(weight: torch.Tensor) -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    with torch.no_grad():
        layer.weight.copy_(weight)
    return layer


def test_merge_and_unmerge_on_a_4bit_base_keep_outputs(tiny_llama):
    config = lorakit.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    model, _ = _quantized_and_dense(tiny_llama, "bitsandbytes", config)
    ids = torch.randint(0, 100, (2, 9))
    before = model(ids).logits
    lorakit.merge(model)
    torch.testing.assert_close(model(ids).logits, before)
    lorakit.unmerge(model)
    assert torch.equal(model(ids).logits, before)


@pytest.mark.parametrize("option", [{"use_dora": True}, {"init_lora_weights": "pissa"}])
def test_dora_and_pissa_on_a_4bit_base_are_refused_and_change_nothing(tiny_llama, option):
    quant.quantize(tiny_llama)
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    kinds = [type(m) for m in tiny_llama.modules()]
    with pytest.raises(ValueError, match="not supported on a 4-bit"):
        lorakit.inject(tiny_llama, lorakit.LoraConfig(r=2, target_modules=["q_proj"], **option))
    assert [type(m) for m in tiny_llama.modules()] == kinds
    assert all(torch.equal(v, before[k]) for k, v in tiny_llama.state_dict().items())


@pytest.mark.parametrize("backend", BACKENDS)
def test_parameter_counts_of_a_4bit_base_are_those_of_the_dense_model(tiny_llama, backend):
    from lorakit.train.build import parameter_counts

    config = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear")
    dense = copy.deepcopy(tiny_llama)
    lorakit.inject(dense, config)
    quantized = quant.quantize(tiny_llama, backend=backend)
    lorakit.inject(quantized, config)
    layers = [m for m in quantized.modules() if isinstance(m, quant.Linear4bit)]
    assert layers
    # what numel() sees is the packed bytes (+ block scales; torchao pads to whole blocks): not the weights
    assert sum(p.numel() for p in quantized.parameters()) != sum(p.numel() for p in dense.parameters())
    numels = quant.logical_numels(quantized)
    assert all(numels[n] == 0 for n in numels if n.endswith("weight_absmax"))

    for count in (lorakit.count_parameters, lorakit.trainable_parameters, parameter_counts):
        got, want = count(quantized), count(dense)
        assert got.pop("stored_bytes") == quant.stored_bytes(quantized) and want.pop("stored_bytes")
        assert got == want, count.__name__
    assert lorakit.count_parameters(quantized)["total"] == sum(p.numel() for p in dense.parameters())

    # memory: the dense fp32 weights of the quantized layers are replaced by their stored 4-bit state (at this
    # tiny size torchao's padding to whole blocks of 16,384 weights makes it the larger)
    dense_weights = sum(m.in_features * m.out_features * 4 for m in layers)
    stored, _bf16 = quant.quantized_bytes(quantized)
    assert quant.stored_bytes(quantized) == quant.stored_bytes(dense) - dense_weights + stored
    text = lorakit.print_trainable_parameters(quantized)
    assert f"all params: {sum(p.numel() for p in dense.parameters()):,}" in text
