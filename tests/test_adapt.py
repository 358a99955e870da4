"""inject / merge / PEFT files / loralib import, on tiny random HF models and the real MiniLM."""

from __future__ import annotations

import copy
import json

import peft
import pytest
import torch
from helpers import minilm_folder, randomize_lora
from safetensors.torch import load_file
from torch import nn

import lorakit
from lorakit.lora import LoraConv, LoraEmbedding, LoraLinear, LoraModule

IDS = torch.tensor([[1, 5, 7, 9, 2, 3], [4, 4, 8, 1, 0, 6]])


def logits(model, ids=IDS):
    with torch.no_grad():
        return model(input_ids=ids).logits


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, {
        n: p.requires_grad for n, p in model.named_parameters()
    }


def assert_unchanged(model, snap):
    state, flags = snap
    assert list(model.state_dict()) == list(state)
    for k, v in state.items():
        assert torch.equal(model.state_dict()[k], v), k
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags


# ----------------------------------------------------------------------------- matching
def test_suffix_names_regex_and_exclusion(tiny_bert):
    cfg = lorakit.LoraConfig(r=4, target_modules=["query", "value"])
    names = lorakit.find_targets(tiny_bert, cfg)
    assert names == [f"bert.encoder.layer.{i}.attention.self.{m}" for i in (0, 1) for m in ("query", "value")]
    cfg = lorakit.LoraConfig(r=4, target_modules=r".*layer\.1\.attention\.self\.(query|key)")
    assert lorakit.find_targets(tiny_bert, cfg) == [
        "bert.encoder.layer.1.attention.self.query", "bert.encoder.layer.1.attention.self.key"]
    cfg = lorakit.LoraConfig(r=4, target_modules=["query", "value"], exclude_modules=["layer.0.attention.self.value"])
    assert "bert.encoder.layer.0.attention.self.value" not in lorakit.find_targets(tiny_bert, cfg)


def test_all_linear_skips_the_output_head(tiny_gpt2, tiny_llama):
    names = lorakit.find_targets(tiny_llama, lorakit.LoraConfig(target_modules="all-linear"))
    assert "lm_head" not in names and len(names) == 2 * 7
    gpt2_names = lorakit.find_targets(tiny_gpt2, lorakit.LoraConfig(target_modules="all-linear"))
    assert len(gpt2_names) == 2 * 4 and "lm_head" not in gpt2_names  # Conv1D: c_attn c_proj c_fc mlp.c_proj


def test_layers_to_transform_and_rank_alpha_patterns(tiny_llama):
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], layers_to_transform=[1],
                             layers_pattern="layers", rank_pattern={"v_proj": 2}, alpha_pattern={r"q_proj": 32})
    lorakit.inject(tiny_llama, cfg)
    info = lorakit.trainable_parameters(tiny_llama)
    assert info["ranks"] == {"model.layers.1.self_attn.q_proj": {"default": 4},
                             "model.layers.1.self_attn.v_proj": {"default": 2}}
    q = tiny_llama.get_submodule("model.layers.1.self_attn.q_proj")
    v = tiny_llama.get_submodule("model.layers.1.self_attn.v_proj")
    assert q.scaling["default"] == 32 / 4 and v.scaling["default"] == 8 / 2


# ----------------------------------------------------------------------------- inject, freezing, merge
def test_inject_wraps_keeps_pretrained_weights_and_freezes(tiny_bert):
    before = {k: v.clone() for k, v in tiny_bert.state_dict().items()}
    cfg = lorakit.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"], bias="lora_only")
    out = lorakit.inject(tiny_bert, cfg)
    assert out is tiny_bert
    q = tiny_bert.bert.encoder.layer[0].attention.self.query
    assert isinstance(q, LoraLinear) and isinstance(q.base_layer, nn.Linear)
    for k, v in before.items():
        key = k.replace(".query.", ".query.base_layer.").replace(".value.", ".value.base_layer.")
        assert torch.equal(tiny_bert.state_dict()[key], v), k
    trainable = {n for n, p in tiny_bert.named_parameters() if p.requires_grad}
    expected = {f"bert.encoder.layer.{i}.attention.self.{m}.{p}" for i in (0, 1) for m in ("query", "value")
                for p in ("lora_A.default", "lora_B.default", "base_layer.bias")}
    expected |= {"classifier.weight", "classifier.bias"}
    assert trainable == expected
    # B starts at zero: the adapted model equals the base model
    torch.testing.assert_close(tiny_bert(input_ids=IDS).logits, _base_logits(before, tiny_bert))


def _base_logits(state, adapted):
    from transformers import BertForSequenceClassification

    base = BertForSequenceClassification(adapted.config).eval()
    base.load_state_dict(state)
    return logits(base)


@pytest.mark.parametrize("fixture", ["tiny_gpt2", "tiny_bert", "tiny_llama"])
def test_merge_unmerge_and_merge_and_unload_give_equal_outputs(fixture, request):
    model = request.getfixturevalue(fixture)
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    randomize_lora(model)
    reference = logits(model)
    lorakit.merge(model)
    torch.testing.assert_close(logits(model), reference, rtol=1e-4, atol=1e-4)
    lorakit.unmerge(model)
    torch.testing.assert_close(logits(model), reference)
    plain = lorakit.merge_and_unload(model)
    assert not any(isinstance(m, LoraModule) for m in plain.modules())
    assert not any("lora_" in k or "base_layer" in k for k in plain.state_dict())
    torch.testing.assert_close(logits(plain), reference, rtol=1e-4, atol=1e-4)


def test_training_updates_only_lora_and_matches_loralib_math(tiny_gpt2):
    lorakit.inject(tiny_gpt2, lorakit.LoraConfig(r=2, target_modules=["c_attn"], lora_dropout=0.1))
    tiny_gpt2.train()
    frozen = {n: p.clone() for n, p in tiny_gpt2.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in tiny_gpt2.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = tiny_gpt2(input_ids=IDS, labels=IDS).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in tiny_gpt2.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]) and p.grad is None, n
    assert tiny_gpt2.transformer.h[0].attn.c_attn.lora_B["default"].abs().sum() > 0


def test_sliced_fused_qv_matches_loralib_merged_linear(tiny_gpt2):
    import loralib

    cfg = lorakit.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], enable_lora={"c_attn": [True, False, True]})
    lorakit.inject(tiny_gpt2, cfg)
    randomize_lora(tiny_gpt2)
    wrapper = tiny_gpt2.transformer.h[0].attn.c_attn
    assert wrapper.lora_A["default"].shape == (4, 32) and wrapper.lora_B["default"].shape == (64, 2)
    ref = loralib.MergedLinear(32, 96, r=2, lora_alpha=4, enable_lora=[True, False, True], fan_in_fan_out=True)
    ref.load_state_dict({"weight": wrapper.base_layer.weight, "bias": wrapper.base_layer.bias,
                         "lora_A": wrapper.lora_A["default"], "lora_B": wrapper.lora_B["default"]})
    x = torch.randn(2, 5, 32)
    torch.testing.assert_close(wrapper(x), ref(x))
    k_slice = wrapper.delta_weight()[:, 32:64]
    assert torch.count_nonzero(k_slice) == 0  # k is not adapted


@pytest.mark.parametrize("on_meta", [False, True])
def test_sliced_adapter_is_created_on_the_models_device(tiny_gpt2, device, on_meta):
    """Every LoRA tensor, the slice mask buffer included, is made where the base weight lives (the meta
    device shows it on a CPU-only machine; ``pytest --device cuda`` runs the forward on a GPU)."""
    cfg = lorakit.LoraConfig(r=2, lora_alpha=4, target_modules=["c_attn"], enable_lora={"c_attn": [True, False, True]})
    reference = lorakit.inject(copy.deepcopy(tiny_gpt2), cfg)
    randomize_lora(reference)
    model = lorakit.inject(tiny_gpt2.to("meta" if on_meta else device), cfg)
    target = "meta" if on_meta else device.type
    assert {t.device.type for t in [*model.parameters(), *model.buffers()]} == {target}
    if not on_meta:
        model.load_state_dict(reference.state_dict())
        ids = torch.randint(0, 100, (2, 7))
        with torch.no_grad():
            torch.testing.assert_close(model(ids.to(device)).logits.cpu(), reference(ids).logits,
                                       rtol=1e-4, atol=1e-4)


def test_sliced_adapter_injected_on_meta_works_after_an_assign_load_and_to_empty():
    """Large-model workflow: build and inject on the meta device, then load real weights. The slice
    mask is derived from ``enable_lora`` where it is used, so it is right whatever the loading did."""
    cfg = lorakit.LoraConfig(r=2, lora_alpha=4, target_modules=["0"], enable_lora={"0": [True, False, True]})
    reference = lorakit.inject(nn.Sequential(nn.Linear(8, 12)), cfg)
    randomize_lora(reference)
    x = torch.randn(3, 8)
    for load in ("assign", "to_empty"):
        with torch.device("meta"):
            model = lorakit.inject(nn.Sequential(nn.Linear(8, 12)), cfg)
        if load == "assign":
            model.load_state_dict(reference.state_dict(), assign=True)
        else:
            model.to_empty(device="cpu").load_state_dict(reference.state_dict())
        torch.testing.assert_close(model(x), reference(x))
        assert torch.count_nonzero(model[0].delta_weight()[4:8]) == 0  # the middle slice is not adapted


def test_trainable_parameters_summary(tiny_bert, capsys):
    cfg = lorakit.LoraConfig(r=4, target_modules=["query", "value"], modules_to_save=["classifier"])
    lorakit.inject(tiny_bert, cfg)
    info = lorakit.trainable_parameters(tiny_bert)
    assert info["lora"] == 2 * 2 * (4 * 32 + 32 * 4)
    assert info["other_trainable"] == 32 * 3 + 3
    assert info["trainable"] == info["lora"] + info["other_trainable"]
    text = lorakit.print_trainable_parameters(tiny_bert)
    assert f"{info['trainable']:,}" in text and "query: default r=4" in text


# ----------------------------------------------------------------------------- PEFT files both ways
def _peft_model(base, directory):
    return peft.PeftModel.from_pretrained(base, str(directory)).eval()


@pytest.mark.parametrize(
    "fixture, cfg",
    [
        ("tiny_gpt2", dict(r=4, lora_alpha=16, target_modules=["c_attn", "c_fc"])),
        ("tiny_bert", dict(r=4, lora_alpha=8, target_modules=["query", "value"], modules_to_save=["classifier"],
                           bias="lora_only")),
        ("tiny_llama", dict(r=4, lora_alpha=8, target_modules="all-linear", rank_pattern={"v_proj": 2},
                            alpha_pattern={"q_proj": 3.0}, use_rslora=True)),
    ],
)
def test_lorakit_files_load_in_peft_and_peft_files_load_in_lorakit(fixture, cfg, request, tmp_path):
    base = request.getfixturevalue(fixture)
    pristine = copy.deepcopy(base)
    model = lorakit.inject(copy.deepcopy(base), lorakit.LoraConfig(**cfg))
    randomize_lora(model)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad and "lora_" not in n:
                p.add_(0.1)  # trained head / biases must travel too
    ours = logits(model)
    lorakit.save_adapter(model, tmp_path / "ours")
    config = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == 4
    keys = load_file(str(tmp_path / "ours" / "adapter_model.safetensors"))
    assert all(k.startswith("base_model.model.") for k in keys)
    torch.testing.assert_close(logits(_peft_model(copy.deepcopy(pristine), tmp_path / "ours")), ours)

    # and back: PEFT writes, lorakit reads
    peft_model = _peft_model(copy.deepcopy(pristine), tmp_path / "ours")
    peft_model.save_pretrained(str(tmp_path / "theirs"))
    loaded = lorakit.load_adapter(copy.deepcopy(pristine), tmp_path / "theirs")
    torch.testing.assert_close(logits(loaded), ours)


def test_peft_trained_adapter_with_embedding_and_conv_loads_with_equal_outputs(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(20, 8)
            self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
            self.lin = nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, ids, image):
            return self.head(self.lin(self.emb(ids).mean(1) + self.conv(image).mean((2, 3))))

    torch.manual_seed(0)
    base = Net()
    ids, image = torch.randint(0, 20, (2, 5)), torch.randn(2, 3, 9, 9)
    pcfg = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["emb", "conv", "lin"], modules_to_save=["head"],
                           init_lora_weights=False)
    theirs = peft.get_peft_model(copy.deepcopy(base), pcfg).eval()
    with torch.no_grad():
        theirs.base_model.model.head.modules_to_save["default"].weight.add_(0.5)
    expected = theirs(ids, image)
    theirs.save_pretrained(str(tmp_path))
    ours = lorakit.load_adapter(copy.deepcopy(base), tmp_path)
    assert isinstance(ours.emb, LoraEmbedding) and isinstance(ours.conv, LoraConv)
    torch.testing.assert_close(ours(ids, image), expected)
    lorakit.save_adapter(ours, tmp_path / "again")
    torch.testing.assert_close(_peft_model(copy.deepcopy(base), tmp_path / "again")(ids, image), expected)


def test_sliced_qv_adapter_loads_in_peft_with_equal_outputs(tiny_gpt2, tmp_path):
    pristine = copy.deepcopy(tiny_gpt2)
    cfg = lorakit.LoraConfig(r=2, lora_alpha=8, target_modules=["c_attn"], enable_lora={"c_attn": [True, False, True]})
    model = lorakit.inject(tiny_gpt2, cfg)
    randomize_lora(model)
    lorakit.save_adapter(model, tmp_path)
    torch.testing.assert_close(logits(_peft_model(pristine, tmp_path)), logits(model))


def test_real_minilm_adapter_round_trips_through_peft(tmp_path):
    from transformers import AutoModel

    folder = minilm_folder()
    model = AutoModel.from_pretrained(folder).eval()
    lorakit.inject(model, lorakit.LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"]))
    randomize_lora(model)
    ids = torch.tensor([[101, 7592, 2088, 102]])
    ours = model(input_ids=ids).last_hidden_state
    lorakit.save_adapter(model, tmp_path)
    theirs = _peft_model(AutoModel.from_pretrained(folder), tmp_path)
    torch.testing.assert_close(theirs(input_ids=ids).last_hidden_state, ours, rtol=1e-4, atol=1e-4)
    assert lorakit.trainable_parameters(model)["lora"] == 6 * 2 * 2 * 8 * 384


# ----------------------------------------------------------------------------- loralib / paper checkpoints
def test_convert_paper_gpt2_c_attn_checkpoint_to_peft(tiny_gpt2, tmp_path):
    g = torch.Generator().manual_seed(0)
    state = {}
    for i in range(2):  # the LoRA repository's GPT-2 layout: c_attn as MergedLinear over q, k, v
        state[f"transformer.h.{i}.attn.c_attn.lora_A"] = torch.randn(2 * 4, 32, generator=g)
        state[f"transformer.h.{i}.attn.c_attn.lora_B"] = torch.randn(2 * 32, 4, generator=g)
    torch.save({"model_state_dict": state}, tmp_path / "gpt2_lora.pt")
    pristine = copy.deepcopy(tiny_gpt2)
    summary = lorakit.convert_loralib_checkpoint(tmp_path / "gpt2_lora.pt", tiny_gpt2, lora_alpha=32,
                                                 output_dir=tmp_path / "adapter")
    assert summary["ranks"] == {"transformer.h.0.attn.c_attn": 4, "transformer.h.1.attn.c_attn": 4}
    assert not any(isinstance(m, LoraModule) for m in tiny_gpt2.modules())  # caller's model untouched
    # reference: loralib semantics, built with lorakit's sliced config
    ref = lorakit.inject(copy.deepcopy(pristine), lorakit.LoraConfig(
        r=4, lora_alpha=32, target_modules=["c_attn"], enable_lora={"c_attn": [True, False, True]}))
    ref.load_state_dict({k.replace("lora_A", "lora_A.default").replace("lora_B", "lora_B.default"): v
                         for k, v in state.items()}, strict=False)
    torch.testing.assert_close(logits(_peft_model(copy.deepcopy(pristine), tmp_path / "adapter")), logits(ref))
    torch.testing.assert_close(logits(lorakit.load_adapter(pristine, tmp_path / "adapter")), logits(ref))


def test_convert_roberta_query_value_checkpoint_with_classifier(tmp_path):
    import loralib
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=70, num_labels=2,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    base = RobertaForSequenceClassification(cfg).eval()
    trained = copy.deepcopy(base)
    for layer in trained.roberta.encoder.layer:  # what the paper's modified RoBERTa does
        for name in ("query", "value"):
            old = getattr(layer.attention.self, name)
            new = loralib.Linear(32, 32, r=4, lora_alpha=8)
            new.load_state_dict(old.state_dict(), strict=False)
            nn.init.normal_(new.lora_B)
            setattr(layer.attention.self, name, new)
    with torch.no_grad():
        trained.classifier.dense.weight.add_(0.3)
    state = loralib.lora_state_dict(trained)
    state.update({k: v for k, v in trained.state_dict().items() if k.startswith("classifier.")})
    torch.save(state, tmp_path / "roberta.bin")
    lorakit.convert_loralib_checkpoint(tmp_path / "roberta.bin", base, lora_alpha=8, output_dir=tmp_path / "a")
    converted = _peft_model(copy.deepcopy(base), tmp_path / "a")
    ids = IDS + 2
    torch.testing.assert_close(converted(input_ids=ids).logits, trained.eval()(input_ids=ids).logits)


def test_convert_cli(tiny_gpt2, tmp_path):
    from lorakit.convert import main

    tiny_gpt2.config.save_pretrained(tmp_path / "gpt2cfg")
    state = {"transformer.h.0.attn.c_attn.lora_A": torch.randn(8, 32),
             "transformer.h.0.attn.c_attn.lora_B": torch.randn(64, 4)}
    torch.save(state, tmp_path / "ck.pt")
    code = main([str(tmp_path / "ck.pt"), "--model", str(tmp_path / "gpt2cfg"), "--lora-alpha", "32",
                 "--output", str(tmp_path / "out")])
    assert code == 0
    assert set(load_file(str(tmp_path / "out" / "adapter_model.safetensors"))) == {
        "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight",
        "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight"}


# ----------------------------------------------------------------------------- bad input
def test_no_match_lists_closest_names_and_changes_nothing(tiny_bert):
    snap = snapshot(tiny_bert)
    with pytest.raises(ValueError) as err:
        lorakit.inject(tiny_bert, lorakit.LoraConfig(target_modules=["querry"]))
    assert "matched no module" in str(err.value) and "'query'" in str(err.value)
    assert_unchanged(tiny_bert, snap)


def test_unsupported_module_type_is_named(tiny_bert):
    snap = snapshot(tiny_bert)
    with pytest.raises(TypeError, match=r"LayerNorm.*cannot adapt"):
        lorakit.inject(tiny_bert, lorakit.LoraConfig(target_modules=["query", "LayerNorm"]))
    assert_unchanged(tiny_bert, snap)


def test_adapter_name_already_used(tiny_bert):
    cfg = lorakit.LoraConfig(target_modules=["query"])
    lorakit.inject(tiny_bert, cfg)
    snap = snapshot(tiny_bert)
    with pytest.raises(ValueError, match="already used"):
        lorakit.inject(tiny_bert, cfg)
    assert_unchanged(tiny_bert, snap)


def test_loading_adapter_with_wrong_shapes_names_key_and_leaves_model(tiny_bert, tmp_path):
    from transformers import BertConfig, BertForSequenceClassification

    other = BertForSequenceClassification(BertConfig(
        vocab_size=100, hidden_size=48, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, num_labels=3))
    lorakit.inject(other, lorakit.LoraConfig(r=4, target_modules=["query"]))
    lorakit.save_adapter(other, tmp_path)
    snap = snapshot(tiny_bert)
    with pytest.raises(ValueError) as err:
        lorakit.load_adapter(tiny_bert, tmp_path)
    msg = str(err.value)
    assert "lora_A.weight" in msg and "(4, 48)" in msg and "(4, 32)" in msg
    assert_unchanged(tiny_bert, snap)


@pytest.mark.parametrize("change, words", [
    ({"peft_type": "IA3"}, ["peft_type", "IA3"]),
    ({"lora_bias": True}, ["lora_bias=True"]),
    ({"layer_replication": [[0, 1]]}, ["layer_replication"]),
])
def test_unsupported_peft_options_are_named(tiny_bert, tmp_path, change, words):
    lorakit.inject(copy.deepcopy(tiny_bert), lorakit.LoraConfig(target_modules=["query"]))
    model = lorakit.inject(copy.deepcopy(tiny_bert), lorakit.LoraConfig(target_modules=["query"]))
    lorakit.save_adapter(model, tmp_path)
    path = tmp_path / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    snap = snapshot(tiny_bert)
    with pytest.raises(ValueError) as err:
        lorakit.load_adapter(tiny_bert, tmp_path)
    assert all(w in str(err.value) for w in words), str(err.value)
    assert_unchanged(tiny_bert, snap)


def test_truncated_safetensors_is_reported_and_changes_nothing(tiny_bert, tmp_path):
    model = lorakit.inject(copy.deepcopy(tiny_bert), lorakit.LoraConfig(target_modules=["query"]))
    lorakit.save_adapter(model, tmp_path)
    weights = tmp_path / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    snap = snapshot(tiny_bert)
    with pytest.raises(ValueError, match="corrupt or truncated"):
        lorakit.load_adapter(tiny_bert, tmp_path)
    assert_unchanged(tiny_bert, snap)


def test_pickled_objects_are_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match="never unpickles"):
        lorakit.load_checkpoint(tmp_path / "evil.pt")


def test_config_json_round_trip_and_validation():
    cfg = lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q"], rank_pattern={"v": 2},
                             enable_lora={"c_attn": [True, False, True]})
    assert lorakit.LoraConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="unknown LoraConfig field"):
        lorakit.LoraConfig.from_dict({"r": 4, "target_modules": ["q"], "rank": 3})
    with pytest.raises(ValueError, match="bias must be one of"):
        lorakit.LoraConfig(target_modules=["q"], bias="yes")
    with pytest.raises(ValueError, match="target_modules is empty"):
        lorakit.LoraConfig()
