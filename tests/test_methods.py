"""The LoRA paper's baselines (lorakit.methods): exact parameter counts against the paper's closed forms
on GPT-2 Medium and RoBERTa-base (built on the meta device), wrapper semantics, bad inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lorakit.methods import (
    MethodConfig,
    MethodError,
    PrefixAttention,
    apply_method,
    count_parameters,
    drop_reparameterization,
    method_modules,
)

GPT2_MEDIUM = {"model_type": "gpt2", "n_layer": 24, "n_embd": 1024, "n_head": 16, "vocab_size": 50257,
               "n_positions": 1024}
ROBERTA_BASE = {"model_type": "roberta", "num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
                "intermediate_size": 3072, "vocab_size": 50265, "max_position_embeddings": 514,
                "type_vocab_size": 1, "pad_token_id": 1}


def _meta_classifier(arch: dict) -> nn.Module:
    """The experiment system's SequenceClassifier (encoder + 2-label head) with no storage (meta device)."""
    from transformers import AutoConfig, AutoModel

    from lorakit.train.build import SequenceClassifier

    arch = dict(arch)
    config = AutoConfig.for_model(arch.pop("model_type"), **arch)
    with torch.device("meta"):
        kwargs = {} if config.model_type == "gpt2" else {"add_pooling_layer": False}
        encoder = AutoModel.from_config(config, **kwargs)
        return SequenceClassifier(encoder, config.hidden_size, 2, "mean", 0.0)


def _paper_count(model: nn.Module, name: str, **options) -> int:
    """lorakit's count of trainable parameters excluding the head (after dropping PreLayer's MLP)."""
    if name == "lora":
        from lorakit import LoraConfig, inject

        inject(model, LoraConfig(modules_to_save=["classifier"], **options))
    else:
        apply_method(model, MethodConfig(name, **options))
    return count_parameters(model)["after_training"]


@pytest.fixture(scope="module")
def counts() -> dict:
    d, L = 1024, 24
    gpt2 = {
        ("lora", "r=4 q,v"): (dict(r=4, target_modules=["c_attn"], enable_lora={"c_attn": [True, False, True]}),
                              24 * 2 * 2 * 1024 * 4),
        ("bitfit", ""): ({}, L * 11 * d + d),  # per block: ln_1, c_attn (3d), c_proj, ln_2, c_fc (4d), c_proj; ln_f
        ("ft_top2", ""): ({}, 2 * (12 * d * d + 13 * d)),
        ("adapter_houlsby", "m=16"): (dict(adapter_size=16), 2 * L * (2 * d * 16 + d + 16)),
        ("adapter_pfeiffer", "m=16"): (dict(adapter_size=16), L * (2 * d * 16 + d + 16)),
        ("prefix_layer", "l=10"): (dict(prefix_length=10), L * 2 * 10 * d),
        ("prefix_embed", "lp=10 li=10"): (dict(prefix_length=10, infix_length=10), (10 + 10) * d),
    }
    d, L = 768, 12
    roberta = {
        ("lora", "r=8 q,v"): (dict(r=8, target_modules=["query", "value"]), 294_912),
        ("lora_bitfit", "r=8 q,v"): (dict(r=8, target_modules=["query", "value"], bias="all"),
                                     294_912 + L * 11 * d + d),
        ("bitfit", ""): ({}, L * 11 * d + d),  # q, k, v, o (4d), LN, FFN (4d + d), LN; embedding LN
        ("ft_top2", ""): ({}, 2 * (12 * d * d + 13 * d)),
        ("adapter_houlsby", "m=64"): (dict(adapter_size=64), 2 * L * (2 * d * 64 + d + 64)),
        ("adapter_pfeiffer", "m=64"): (dict(adapter_size=64), L * (2 * d * 64 + d + 64)),
        ("prefix_layer", "l=16"): (dict(prefix_length=16), L * 2 * 16 * d),
        ("prefix_embed", "lp=16"): (dict(prefix_length=16), 16 * d),
    }
    return {"gpt2-medium": (GPT2_MEDIUM, gpt2), "roberta-base": (ROBERTA_BASE, roberta)}


@pytest.mark.parametrize("arch", ["gpt2-medium", "roberta-base"])
def test_parameter_counts_match_the_papers_closed_forms(counts, arch):
    config, table = counts[arch]
    for (name, _), (options, expected) in table.items():
        model = _meta_classifier(config)
        method = "lora" if name == "lora_bitfit" else name
        assert _paper_count(model, method, **options) == expected, (arch, name, options)


def test_inserted_counts_only_what_the_method_added(counts):
    """``inserted``: LoRA factors, adapters and prefixes; nothing for methods that train existing weights."""
    config, table = counts["roberta-base"]
    for (name, _), (options, expected) in table.items():
        model = _meta_classifier(config)
        base_total = sum(p.numel() for p in model.parameters())
        method = "lora" if name == "lora_bitfit" else name
        _paper_count(model, method, **options)
        info = count_parameters(model)
        added = sum(p.numel() for p in model.parameters()) - base_total
        if name in ("bitfit", "ft_top2"):
            assert info["inserted"] == 0, name
        elif name == "lora_bitfit":
            assert info["inserted"] == 294_912
        elif name != "prefix_layer":  # PreLayer's reparameterisation MLP is inserted too, while it trains
            assert info["inserted"] == expected, name
        if name != "lora" and name != "lora_bitfit":  # LoRA's modules_to_save keeps a copy of the head
            assert info["inserted"] == added, name


def test_gpt2_medium_ft_top2_is_the_papers_25_19m():
    model = _meta_classifier(GPT2_MEDIUM)
    apply_method(model, MethodConfig("ft_top2"))
    info = count_parameters(model)
    assert info["trainable_excluding_head"] == 25_192_448 and info["head"] == 1024 * 2 + 2


def test_prefix_layer_counts_the_mlp_while_training_and_not_after():
    model = _meta_classifier(ROBERTA_BASE)
    apply_method(model, MethodConfig("prefix_layer", prefix_length=8, prefix_hidden=32))
    per_layer = 8 * 768 + (768 * 32 + 32) + (32 * 2 * 768 + 2 * 768)
    info = count_parameters(model)
    assert info["trainable_excluding_head"] == 12 * per_layer
    assert info["after_training"] == 12 * 2 * 8 * 768


# ---------------------------------------------------------------------------------------------- semantics
def _bert_classifier(seed: int = 0) -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg).eval()


def _gpt2_lm(seed: int = 0) -> nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def _randomize(model: nn.Module) -> None:
    """Give the inserted parameters random values so that they change the outputs."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, module in method_modules(model):
            for name, p in module.named_parameters():
                if not name.startswith("base_layer."):
                    p.copy_(torch.randn(p.shape, generator=g) * 0.5)


@pytest.mark.parametrize("name", ["adapter_houlsby", "adapter_pfeiffer"])
def test_adapters_start_as_the_identity(name):
    ids = torch.randint(0, 100, (2, 7))
    for model in (_bert_classifier(), _gpt2_lm()):
        before = model(input_ids=ids).logits
        apply_method(model, MethodConfig(name, adapter_size=4))
        torch.testing.assert_close(model(input_ids=ids).logits, before)


@pytest.mark.parametrize("name", ["prefix_layer", "prefix_embed"])
def test_prefixes_ignore_padding(name):
    """A row's output is the same alone or padded in a batch: the mask covers prefixes and infixes."""
    model = _bert_classifier()
    apply_method(model, MethodConfig(name, prefix_length=3, infix_length=2, prefix_hidden=8))
    _randomize(model)
    ids = torch.randint(0, 100, (2, 9))
    mask = torch.ones_like(ids)
    mask[0, 5:] = 0
    batched = model(input_ids=ids, attention_mask=mask).logits
    alone = model(input_ids=ids[:1, :5], attention_mask=mask[:1, :5]).logits
    torch.testing.assert_close(batched[:1], alone, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(batched, _bert_classifier()(input_ids=ids, attention_mask=mask).logits)


@pytest.mark.parametrize("name", ["prefix_layer", "prefix_embed"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_prefixes_keep_gpt2_causal(name, attn):
    model = _gpt2_lm()
    model.config._attn_implementation = attn
    apply_method(model, MethodConfig(name, prefix_length=3, infix_length=0, prefix_hidden=8, head=("lm_head",)))
    _randomize(model)
    ids = torch.randint(0, 100, (2, 8))
    full = model(input_ids=ids).logits
    cut = model(input_ids=ids[:, :5]).logits
    torch.testing.assert_close(full[:, :5], cut, rtol=1e-4, atol=1e-5)  # no position sees later tokens


@pytest.mark.parametrize("name", ["prefix_layer", "prefix_embed"])
def test_prefixes_decode_the_same_with_and_without_a_kv_cache(name):
    from lorakit.train.generate import GenerationConfig, generate

    model = _gpt2_lm()
    apply_method(model, MethodConfig(name, prefix_length=3, infix_length=0, prefix_hidden=8, head=("lm_head",)))
    _randomize(model)
    model.eval()
    ids = torch.randint(1, 100, (2, 6))
    mask = torch.ones_like(ids)
    mask[1, :2] = 0  # a left-padded row
    outs = [generate(model, ids, mask, GenerationConfig(strategy="beam", num_beams=3, max_new_tokens=6,
                                                        no_repeat_ngram_size=0, use_cache=cache), eos_token_id=0)
            for cache in (True, False)]
    assert outs[0] == outs[1] and all(len(o) > 0 for o in outs[0])
    alone = generate(model, ids[1:, 2:], mask[1:, 2:], GenerationConfig(strategy="beam", num_beams=3,
                     max_new_tokens=6, no_repeat_ngram_size=0), eos_token_id=0)
    assert outs[0][1] == alone[0]


def test_prefix_layer_equals_explicit_attention_over_prefix_keys():
    """With one layer, one head and the identity everywhere else, PreLayer is attention over [P; X]."""
    model = _bert_classifier()
    apply_method(model, MethodConfig("prefix_layer", prefix_length=2, prefix_hidden=None))
    _randomize(model)
    wrapper = model.bert.encoder.layer[0].attention.self
    assert isinstance(wrapper, PrefixAttention)
    x = torch.randn(1, 4, 32)
    out = wrapper(x, attention_mask=None)[0]
    base = wrapper.base_layer
    h, hd = 2, 16
    q = base.query(x).view(1, 4, h, hd).transpose(1, 2)
    def heads(t: torch.Tensor) -> torch.Tensor:  # (1, n, 32) -> (1, heads, n, hd)
        return t.view(1, -1, h, hd).transpose(1, 2)

    k = torch.cat([heads(wrapper.prefix[0][None]), heads(base.key(x))], 2)
    v = torch.cat([heads(wrapper.prefix[1][None]), heads(base.value(x))], 2)
    att = torch.softmax(q @ k.transpose(-1, -2) / hd**0.5, -1) @ v
    torch.testing.assert_close(out, att.transpose(1, 2).reshape(1, 4, 32), rtol=1e-4, atol=1e-5)


def test_dropping_the_prefix_mlp_keeps_the_outputs():
    for model in (_bert_classifier(), _gpt2_lm()):
        apply_method(model, MethodConfig("prefix_layer", prefix_length=4, prefix_hidden=16, head=("classifier",)))
        _randomize(model)
        ids = torch.randint(0, 100, (2, 6))
        before = model(input_ids=ids).logits
        trainable_before = count_parameters(model)["after_training"]
        assert drop_reparameterization(model) == 2
        assert not any("prefix_mlp" in n or "prefix_input" in n for n, _ in model.named_parameters())
        torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=1e-5, atol=1e-6)
        assert count_parameters(model)["trainable_excluding_head"] == trainable_before == 2 * 2 * 4 * 32


def test_lora_with_bias_all_is_lora_plus_bitfit():
    from lorakit import LoraConfig, inject

    model = _bert_classifier()
    inject(model, LoraConfig(r=2, target_modules=["query", "value"], bias="all", modules_to_save=["classifier"]))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    biases = {n for n, _ in model.named_parameters() if n.endswith(".bias")}
    assert biases <= trainable
    assert all(n in biases or "lora_" in n or n.startswith("classifier.") for n in trainable)


# ---------------------------------------------------------------------------------------------- bad input
def test_method_that_does_not_apply_names_what_it_needs_and_what_was_found():
    from transformers import DebertaV2Config, DebertaV2Model

    deberta = nn.ModuleDict({"encoder": DebertaV2Model(DebertaV2Config(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=64, relative_attention=True, pos_att_type=["p2c", "c2p"]))})
    with pytest.raises(MethodError, match=r"prefix_layer.*self attention.*BertSelfAttention.*"
                                          r"DisentangledSelfAttention.*prefix_embed"):
        apply_method(deberta, MethodConfig("prefix_layer"))
    apply_method(deberta, MethodConfig("adapter_houlsby", adapter_size=4))  # adapters do apply to DeBERTa
    assert len(list(method_modules(deberta))) == 4
    mlp = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(MethodError, match=r"adapter_pfeiffer.*ffn output.*BertOutput.*GPT2MLP"):
        apply_method(mlp, MethodConfig("adapter_pfeiffer"))
    with pytest.raises(MethodError, match="ft_top2 needs a list of at least 2"):
        apply_method(mlp, MethodConfig("ft_top2"))


def test_out_of_range_sizes_are_refused_before_the_model_changes():
    model = _bert_classifier()
    before = [n for n, _ in model.named_modules()]
    with pytest.raises(MethodError, match="adapter_size=33 is out of range.*width 32"):
        apply_method(model, MethodConfig("adapter_houlsby", adapter_size=33))
    assert [n for n, _ in model.named_modules()] == before
    for kwargs, message in [(dict(name="adapter_houlsby", adapter_size=0), "bottleneck.*>= 1"),
                            (dict(name="prefix_layer", prefix_length=0), "prefix_length must be >= 1"),
                            (dict(name="prefix_embed", prefix_length=0, infix_length=0), "both are 0"),
                            (dict(name="prefix_embed", prefix_length=-1), "integer >= 0"),
                            (dict(name="prefix_layer", prefix_hidden=0), "prefix_hidden"),
                            (dict(name="adapters"), "unknown method")]:
        with pytest.raises(MethodError, match=message):
            MethodConfig(**kwargs)


def test_conflicting_methods_are_refused():
    from lorakit import LoraConfig, inject

    model = _bert_classifier()
    apply_method(model, MethodConfig("adapter_pfeiffer", adapter_size=4))
    with pytest.raises(MethodError, match="cannot be combined.*adapter"):
        apply_method(model, MethodConfig("prefix_layer"))
    lora = _bert_classifier()
    inject(lora, LoraConfig(r=2, target_modules=["query"]))
    with pytest.raises(MethodError, match="prefix_embed cannot be combined.*LoRA \\+ BitFit is method 'lora'"):
        apply_method(lora, MethodConfig("prefix_embed"))


def test_the_site_table_s_old_name_is_a_deprecated_alias():
    from lorakit import methods

    with pytest.warns(DeprecationWarning, match="SITE_WRAPPERS"):
        table = methods.WRAPPERS
    assert table is methods.SITE_WRAPPERS and "ffn_output" in table


def test_method_errors_are_lorakit_errors_and_value_errors():
    import lorakit

    with pytest.raises(lorakit.MethodError, match="unknown method") as caught:
        lorakit.MethodConfig(name="lora_plus")
    assert isinstance(caught.value, lorakit.LorakitError) and isinstance(caught.value, ValueError)


def test_import_lorakit_builds_the_site_table_only_on_first_use():
    """``import lorakit`` must not import transformers' modeling files (seconds, and every quantization backend
    transformers knows, torchao's warnings included); the table is the same once used."""
    import subprocess
    import sys

    code = (
        "import sys, lorakit\n"
        "heavy = [m for m in ('transformers.modeling_utils', 'transformers.models.bert.modeling_bert', 'torchao')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from lorakit import methods\n"
        "from lorakit.methods import SITE_WRAPPERS\n"
        "from transformers.models.bert.modeling_bert import BertOutput\n"
        "from transformers.models.gpt2.modeling_gpt2 import GPT2Attention\n"
        "assert SITE_WRAPPERS is methods.SITE_WRAPPERS is methods.site_wrappers()\n"
        "assert BertOutput in SITE_WRAPPERS['ffn_output'] and GPT2Attention in SITE_WRAPPERS['self_attention']\n"
        "assert 'SITE_WRAPPERS' in methods.__all__\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
