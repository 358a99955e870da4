"""LoRA variants (lorakit.lora.variants): DoRA, rsLoRA, gaussian and PiSSA initialisation, against PEFT."""

from __future__ import annotations

import copy

import peft
import pytest
import torch
from helpers import randomize_lora
from lora_helpers import IDS, logits

import lorakit
from lorakit.lora import LoraLinear
from lorakit.lora.variants import DORA


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_llama"])
def test_dora_matches_peft_and_trains(fixture, request, tmp_path):
    base = request.getfixturevalue(fixture)
    targets = ["c_attn", "c_proj"] if fixture == "tiny_gpt2" else ["q_proj", "v_proj", "down_proj"]
    model = lorakit.inject(copy.deepcopy(base), lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=targets,
                                                                   use_dora=True))
    torch.testing.assert_close(logits(model), logits(base), rtol=1e-4, atol=1e-4)  # starts as the base
    randomize_lora(model)
    with torch.no_grad():
        for _, m in lorakit.lora.lora_modules(model):
            m.lora_magnitude_vector["default"].mul_(1.1)
    lorakit.save_adapter(model, tmp_path)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-4)
    back = lorakit.load_adapter(copy.deepcopy(base), tmp_path)
    torch.testing.assert_close(logits(back), logits(theirs), rtol=1e-4, atol=1e-4)
    # merging folds the DoRA rescaling into the weight
    lorakit.merge(model)
    torch.testing.assert_close(logits(model), logits(theirs), rtol=1e-4, atol=1e-4)
    lorakit.unmerge(model)
    model.train()
    model(input_ids=IDS, labels=IDS).loss.backward()
    magnitude = next(m for _, m in lorakit.lora.lora_modules(model)).lora_magnitude_vector["default"]
    assert magnitude.grad is not None and magnitude.grad.abs().sum() > 0


def test_dora_row_norm_equals_dense_norm():
    from torch import nn

    wrapper = LoraLinear(nn.Linear(40, 24))
    wrapper.add_adapter("d", 4, 8, 0.0, use_dora=True)
    nn.init.normal_(wrapper.lora_B["d"])
    dense = torch.linalg.norm(wrapper.base_layer.weight + wrapper.lora_matrix("d"), dim=1)
    torch.testing.assert_close(DORA.row_norm(wrapper, "d"), dense, rtol=1e-5, atol=1e-5)


def test_dora_row_norm_follows_changes_of_the_base_weight():
    from torch import nn

    wrapper = LoraLinear(nn.Linear(40, 24))
    wrapper.add_adapter("d", 4, 8, 0.0, use_dora=True)
    nn.init.normal_(wrapper.lora_B["d"])
    DORA.row_norm(wrapper, "d")  # ||w_o||^2 is now cached

    def dense():
        return torch.linalg.norm(wrapper.base_layer.weight + wrapper.lora_matrix("d"), dim=1)

    with torch.no_grad():
        wrapper.base_layer.weight.mul_(2)  # in place: a new version of the same storage
    torch.testing.assert_close(DORA.row_norm(wrapper, "d"), dense(), rtol=1e-5, atol=1e-5)
    wrapper.base_layer.weight.data = torch.randn(24, 40)  # another storage
    torch.testing.assert_close(DORA.row_norm(wrapper, "d"), dense(), rtol=1e-5, atol=1e-5)
    wrapper.double()
    assert DORA.row_norm(wrapper, "d").dtype == torch.float64
    torch.testing.assert_close(DORA.row_norm(wrapper, "d"), dense())


def test_rslora_scaling_matches_peft(tiny_llama, tmp_path):
    base = copy.deepcopy(tiny_llama)
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True)
    model = lorakit.inject(tiny_llama, cfg)
    assert model.model.layers[0].self_attn.q_proj.scaling["default"] == 8 / 2
    randomize_lora(model)
    lorakit.save_adapter(model, tmp_path)
    torch.testing.assert_close(logits(peft.PeftModel.from_pretrained(base, str(tmp_path)).eval()), logits(model))


def test_gaussian_init_matches_peft_statistics(tiny_llama):
    cfg = lorakit.LoraConfig(r=8, target_modules=["gate_proj"], init_lora_weights="gaussian")
    gate = lorakit.inject(tiny_llama, cfg).model.layers[0].mlp.gate_proj
    assert abs(gate.lora_A["default"].std().item() - 1 / 8) < 0.02
    assert torch.count_nonzero(gate.lora_B["default"]) == 0


def test_pissa_init_keeps_outputs_and_converts_back_to_plain_lora(tiny_llama, tmp_path):
    base = copy.deepcopy(tiny_llama)
    reference = logits(base)
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights="pissa")
    model = lorakit.inject(tiny_llama, cfg)
    wrapper = model.model.layers[0].self_attn.q_proj
    assert not torch.equal(wrapper.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight)  # residual
    torch.testing.assert_close(logits(model), reference, rtol=1e-4, atol=1e-4)  # W_res + s B A == W
    # top singular direction lives in the adapter
    w = base.model.layers[0].self_attn.q_proj.weight
    top = torch.linalg.svdvals(w)[:4]
    torch.testing.assert_close(torch.linalg.svdvals(wrapper.lora_matrix("default"))[:4], top, rtol=1e-4, atol=1e-4)
    # "train", then share as a plain LoRA that applies to the ORIGINAL base
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.add_(0.05 * torch.randn_like(p))
    trained = logits(model)
    lorakit.save_adapter(model, tmp_path, pissa_to_lora=True)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path)).eval()
    torch.testing.assert_close(logits(theirs), trained, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(logits(lorakit.load_adapter(copy.deepcopy(base), tmp_path)), trained,
                               rtol=1e-4, atol=1e-4)


def test_dora_with_dropout_trains_exactly_like_peft(tiny_gpt2, tmp_path):
    """In training, dropout also reaches DoRA's (m/n - 1) correction of the base term (the DoRA authors'
    code and PEFT): from the same seed, lorakit and PEFT give the same loss and the same gradients."""
    base = tiny_gpt2
    config = lorakit.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.3, target_modules=["c_attn", "c_fc"],
                                use_dora=True)
    model = lorakit.inject(copy.deepcopy(base), config)
    randomize_lora(model)
    with torch.no_grad():
        for _, m in lorakit.lora.lora_modules(model):
            m.lora_magnitude_vector["default"].mul_(1.3)
    lorakit.save_adapter(model, tmp_path)
    theirs = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(tmp_path), is_trainable=True)
    losses = []
    for m in (model.train(), theirs.train()):
        torch.manual_seed(11)
        loss = m(input_ids=IDS, labels=IDS).loss
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    torch.manual_seed(12)
    assert model(input_ids=IDS, labels=IDS).loss.item() != pytest.approx(losses[0].item(), rel=1e-6)
    ours = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    peft_grads = {n.removeprefix("base_model.model.").replace(".default", "").removesuffix(".weight"): p.grad
                  for n, p in theirs.named_parameters() if p.grad is not None}
    ours = {n.replace(".default", ""): g for n, g in ours.items()}
    assert ours.keys() == peft_grads.keys() and any("magnitude" in n for n in ours)
    for name in ours:
        torch.testing.assert_close(ours[name], peft_grads[name], msg=name)


def test_a_copied_model_shares_the_strategy_objects_and_gives_the_same_outputs(tiny_gpt2):
    from lorakit.lora.variants import PISSA

    model = lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=4, target_modules=["c_attn"], use_dora=True,
                                                         init_lora_weights="pissa"))
    randomize_lora(model)
    twin = copy.deepcopy(model)
    wrapper = twin.transformer.h[0].attn.c_attn
    assert wrapper.variants["default"] is DORA and wrapper.inits["default"] is PISSA
    torch.testing.assert_close(logits(twin), logits(model))


def test_a_new_variant_plugs_in_without_touching_forward():
    """A Variant owns its forward and its update: a wrapper with it runs the variant's math, merged or not."""
    from lorakit.lora.variants import Variant

    class Doubled(Variant):  # twice the plain update: W + 2 s B A
        name = "doubled"

        def delta_matrix(self, module, adapter):
            return 2 * module.lora_matrix(adapter)

        def forward(self, module, x, adapter):
            weight = module._as_out_in(module._pretrained_weight())
            return torch.nn.functional.linear(x, weight + self.delta_matrix(module, adapter), module.base_layer.bias)

    torch.manual_seed(0)
    wrapper = LoraLinear(torch.nn.Linear(6, 5))
    wrapper.add_adapter("d", 2, 2, 0.0, init=False)
    wrapper.variants["d"] = Doubled()
    x = torch.randn(3, 6)
    expected = wrapper.base_layer(x) + 2 * x @ wrapper.lora_matrix("d").t()
    torch.testing.assert_close(wrapper(x), expected)
    wrapper.merge()
    torch.testing.assert_close(wrapper(x), expected)
    with pytest.raises(lorakit.AdapterError, match="doubled adapter can only be active alone or first"):
        wrapper.add_adapter("plain", 2, 2, 0.0)
        wrapper.unmerge()
        wrapper.set_active(["plain", "d"])
        wrapper(x)
