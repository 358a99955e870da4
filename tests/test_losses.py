"""lorakit.linear_cross_entropy against F.cross_entropy on the full logits; causal_lm_loss against model(...).loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import randomize_lora

import lorakit
from lorakit.losses import LossInputError, default_chunk_size

VOCAB, WIDTH = 50, 16


def _inputs(seed: int = 0, batch: int = 2, seq: int = 7):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(batch, seq, WIDTH, generator=gen, requires_grad=True)
    weight = torch.randn(VOCAB, WIDTH, generator=gen, requires_grad=True)
    bias = torch.randn(VOCAB, generator=gen, requires_grad=True)
    labels = torch.randint(0, VOCAB, (batch, seq), generator=gen)
    labels[0, 3] = -100
    labels[1, :2] = -100
    return hidden, weight, bias, labels


def _reference(hidden, weight, bias, labels, shift, **kwargs):
    logits = hidden @ weight.T + (0 if bias is None else bias)
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
    out = F.cross_entropy(logits.reshape(-1, VOCAB), labels.reshape(-1), **kwargs)
    return out.reshape(labels.shape) if kwargs.get("reduction") == "none" else out


def _grads(out, tensors, seed=1):
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, tensors, upstream)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("shift", [True, False])
def test_linear_cross_entropy_equals_cross_entropy_on_full_logits(reduction, label_smoothing, with_bias, shift):
    hidden, weight, bias, labels = _inputs()
    bias = bias if with_bias else None
    tensors = [hidden, weight] + ([bias] if with_bias else [])
    want = _reference(hidden, weight, bias, labels, shift, label_smoothing=label_smoothing, reduction=reduction)
    got = lorakit.linear_cross_entropy(hidden, weight, labels, bias=bias, label_smoothing=label_smoothing,
                                       shift=shift, reduction=reduction, chunk_size=3)
    assert got.shape == want.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(got, tensors), _grads(want, tensors), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_frozen_weight_gets_no_gradient_and_hidden_gradient_is_unchanged():
    hidden, weight, _, labels = _inputs()
    frozen = weight.detach()
    got = lorakit.linear_cross_entropy(hidden, frozen, labels, chunk_size=4)
    (grad,) = torch.autograd.grad(got, [hidden])
    (want,) = torch.autograd.grad(_reference(hidden, frozen, None, labels, True), [hidden])
    torch.testing.assert_close(grad, want, rtol=1e-5, atol=1e-6)
    assert frozen.grad is None


@pytest.mark.parametrize("logit_scale, softcap", [(0.5, None), (1.0, 3.0), (2.0, 3.0)])
def test_logit_scale_and_softcap_match_transformed_logits(logit_scale, softcap):
    hidden, weight, _, labels = _inputs(seed=2)
    logits = (hidden @ weight.T) * logit_scale
    if softcap is not None:
        logits = torch.tanh(logits / softcap) * softcap
    want = F.cross_entropy(logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1), label_smoothing=0.1)
    got = lorakit.linear_cross_entropy(hidden, weight, labels, label_smoothing=0.1, logit_scale=logit_scale,
                                       softcap=softcap, chunk_size=5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(_grads(got, [hidden, weight]), _grads(want, [hidden, weight]), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_sum_over_micro_batches_divided_by_total_count_is_the_global_mean():
    hidden, weight, _, labels = _inputs(seed=3, batch=4)
    labels[2, 1:6] = -100  # micro-batches with different numbers of label tokens
    whole = lorakit.linear_cross_entropy(hidden, weight, labels)
    sums = [lorakit.linear_cross_entropy(hidden[i:i + 2], weight, labels[i:i + 2], reduction="sum") for i in (0, 2)]
    counts = [lorakit.count_label_tokens(labels[i:i + 2]) for i in (0, 2)]
    assert int(sum(counts)) == int((labels[:, 1:] != -100).sum())
    torch.testing.assert_close(sum(sums) / sum(counts), whole)
    mean_of_means = (sums[0] / counts[0] + sums[1] / counts[1]) / 2
    assert not torch.allclose(mean_of_means, whole)  # the naive average weights the short micro-batch more


def test_ignored_positions_never_reach_the_head():
    hidden, weight, _, labels = _inputs(seed=4)
    poisoned = hidden.detach().clone()
    poisoned[0, 2] = float("nan")  # position 2 predicts labels[0, 3] = -100: it must not be computed
    poisoned.requires_grad_(True)
    loss = lorakit.linear_cross_entropy(poisoned, weight, labels)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(poisoned.grad).all() and torch.isfinite(weight.grad).all()
    assert poisoned.grad[0, 2].abs().sum() == 0


def test_all_labels_ignored_gives_zero_sum_nan_mean_and_zero_gradients():
    hidden, weight, _, labels = _inputs()
    labels = torch.full_like(labels, -100)
    total = lorakit.linear_cross_entropy(hidden, weight, labels, reduction="sum")
    (grad,) = torch.autograd.grad(total, [hidden])
    assert float(total.detach()) == 0.0 and grad.abs().sum() == 0
    assert torch.isnan(lorakit.linear_cross_entropy(hidden, weight, labels))
    assert torch.isnan(F.cross_entropy(torch.zeros(3, VOCAB), torch.full((3,), -100)))  # the same convention


def test_bf16_autocast_runs_the_matmul_in_bf16_and_matches_autocast_reference():
    hidden, weight, _, labels = _inputs(seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = F.cross_entropy(F.linear(hidden, weight)[:, :-1].float().reshape(-1, VOCAB),
                               labels[:, 1:].reshape(-1))
        got = lorakit.linear_cross_entropy(hidden, weight, labels, chunk_size=4)
    exact = _reference(hidden, weight, None, labels, True)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-3)
    assert not torch.equal(got, exact)  # bf16 rounding shows: the matmul did run in bf16
    grads = _grads(got, [hidden, weight])
    for g, w, t in zip(grads, _grads(want, [hidden, weight]), (hidden, weight), strict=True):
        assert g.dtype == t.dtype
        torch.testing.assert_close(g, w, rtol=2e-2, atol=2e-3)


def test_compiled_function_calling_it_gives_the_same_loss_and_gradients():
    hidden, weight, bias, labels = _inputs(seed=6)

    def step(h, w, b, y):
        return lorakit.linear_cross_entropy(torch.tanh(h) * 2, w, y, bias=b, label_smoothing=0.1, chunk_size=4)

    compiled = torch.compile(step)
    want = step(hidden, weight, bias, labels)
    got = compiled(hidden, weight, bias, labels)
    torch.testing.assert_close(got, want)
    for g, w in zip(_grads(got, [hidden, weight, bias]), _grads(want, [hidden, weight, bias]), strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change, named", [
    ({"chunk_size": 0}, "chunk_size"),
    ({"chunk_size": -3}, "chunk_size"),
    ({"labels": torch.zeros(2, 6, dtype=torch.long)}, "labels"),
    ({"labels": torch.full((2, 7), VOCAB)}, "vocabulary"),
    ({"labels": torch.full((2, 7), -5)}, "vocabulary"),
    ({"labels": torch.zeros(2, 7)}, "dtype"),
    ({"weight": torch.zeros(VOCAB, WIDTH + 1)}, "hidden"),
    ({"reduction": "avg"}, "reduction"),
])
def test_bad_input_gets_a_clear_error(change, named):
    hidden, weight, _, labels = _inputs()
    kwargs = {"hidden": hidden, "weight": weight, "labels": labels, **change}
    with pytest.raises(LossInputError, match=named) as info:
        lorakit.linear_cross_entropy(**kwargs)
    assert isinstance(info.value, lorakit.errors.LorakitError) and isinstance(info.value, ValueError)


def test_default_chunk_size_follows_the_vocabulary():
    assert default_chunk_size(128_256) == 523 and default_chunk_size(50_257) == 1335
    assert default_chunk_size(10) == 4096 and default_chunk_size(10**9) == 32


# ------------------------------------------------------------------------------------------------------
# causal_lm_loss on tiny random models of each supported family
# ------------------------------------------------------------------------------------------------------

SMALL = {"vocab_size": 100, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0,
         "bos_token_id": 0, "eos_token_id": 0}


def _family_model(family: str) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    if family == "gpt2":
        config = tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, resid_pdrop=0.0,
                               embd_pdrop=0.0, attn_pdrop=0.0)
        return tf.GPT2LMHeadModel(config).eval()
    configs = {
        "llama": (tf.LlamaConfig, tf.LlamaForCausalLM, {}),
        "llama-tied": (tf.LlamaConfig, tf.LlamaForCausalLM, {"tie_word_embeddings": True}),
        "qwen2": (tf.Qwen2Config, tf.Qwen2ForCausalLM, {}),
        "mistral": (tf.MistralConfig, tf.MistralForCausalLM, {}),
        "gemma": (tf.GemmaConfig, tf.GemmaForCausalLM, {"head_dim": 8}),
        "gemma2": (tf.Gemma2Config, tf.Gemma2ForCausalLM, {"head_dim": 8, "final_logit_softcapping": 0.5}),
        "gemma3": (tf.Gemma3TextConfig, tf.Gemma3ForCausalLM, {"head_dim": 8, "final_logit_softcapping": 0.5}),
        "cohere": (tf.CohereConfig, tf.CohereForCausalLM, {"logit_scale": 0.25}),
    }
    config_class, model_class, extra = configs[family]
    return model_class(config_class(**SMALL, **extra)).eval()


def _batch():
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(1, 100, (2, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, -2:] = 0  # right padding
    labels = ids.clone()
    labels[0, :3] = -100  # a prompt without loss
    labels[1, -2:] = -100
    return ids, mask, labels


def _assert_same_loss_and_grads(model, params, ids, mask, labels, **kwargs):
    want = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    want_grads = torch.autograd.grad(want, params)
    got = lorakit.causal_lm_loss(model, ids, labels, attention_mask=mask, **kwargs)
    got_grads = torch.autograd.grad(got, params)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "llama", "llama-tied", "qwen2", "mistral", "gemma", "gemma2", "gemma3",
                                    "cohere"])
def test_causal_lm_loss_equals_model_loss_for_lorakit_injected_models(family):
    model = _family_model(family)
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    randomize_lora(model)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    assert params
    _assert_same_loss_and_grads(model, params, *_batch(), chunk_size=5)


def test_causal_lm_loss_defaults_labels_to_input_ids_like_hf(tiny_llama):
    ids, mask, _ = _batch()
    want = tiny_llama(input_ids=ids, labels=ids).loss
    torch.testing.assert_close(lorakit.causal_lm_loss(tiny_llama, ids), want, rtol=1e-5, atol=1e-6)


def test_softcapping_changes_the_loss_so_the_model_transform_is_applied():
    model = _family_model("gemma2")
    ids, mask, labels = _batch()
    model.config.final_logit_softcapping = 0.02  # below the random model's logits: capping matters
    capped = lorakit.causal_lm_loss(model, ids, labels, attention_mask=mask)
    torch.testing.assert_close(capped, model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    model.config.final_logit_softcapping = None
    uncapped = lorakit.causal_lm_loss(model, ids, labels, attention_mask=mask)
    torch.testing.assert_close(uncapped, model(input_ids=ids, attention_mask=mask, labels=labels).loss)
    assert abs(float(capped.detach()) - float(uncapped.detach())) > 1e-3


def _peft_model(modules_to_save=None, target_modules=("q_proj", "v_proj")):
    import peft

    model = _family_model("llama")
    config = peft.LoraConfig(r=4, lora_alpha=8, target_modules=list(target_modules), modules_to_save=modules_to_save)
    model = peft.get_peft_model(model, config)
    randomize_lora(model)
    return model


@pytest.mark.parametrize("head", ["frozen", "lora", "modules_to_save"])
def test_causal_lm_loss_equals_model_loss_for_peft_models(head):
    targets = ("q_proj", "v_proj", "lm_head") if head == "lora" else ("q_proj", "v_proj")
    model = _peft_model(["lm_head"] if head == "modules_to_save" else None, targets)
    params = [p for p in model.parameters() if p.requires_grad]
    assert len(params) >= 8
    _assert_same_loss_and_grads(model, params, *_batch())


def test_lorakit_lora_head_uses_its_effective_weight():
    model = _family_model("llama")
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "lm_head"]))
    randomize_lora(model)
    head_params = [p for n, p in model.named_parameters() if "lm_head" in n and p.requires_grad]
    assert head_params
    _assert_same_loss_and_grads(model, head_params, *_batch())


def test_head_with_active_dropout_is_refused():
    import peft

    model = peft.get_peft_model(_family_model("llama"),
                                peft.LoraConfig(r=4, target_modules=["lm_head"], lora_dropout=0.1)).train()
    ids, _, _ = _batch()
    with pytest.raises(LossInputError, match="dropout"):
        lorakit.causal_lm_loss(model, ids)


def test_unsupported_model_is_refused_naming_its_class(tiny_bert):
    ids, _, _ = _batch()
    with pytest.raises(LossInputError, match="BertForSequenceClassification.*supported"):
        lorakit.causal_lm_loss(tiny_bert, ids)


def test_label_outside_the_model_vocabulary_is_refused(tiny_gpt2):
    ids, _, _ = _batch()
    labels = ids.clone()
    labels[0, 4] = 100  # vocabulary is 100
    with pytest.raises(LossInputError, match="100"):
        lorakit.causal_lm_loss(tiny_gpt2, ids, labels)


@pytest.fixture
def one_process_group(tmp_path):
    """A gloo process group of one process, so that a model can be wrapped in DistributedDataParallel."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


@pytest.mark.parametrize("family", ["gpt2", "llama-tied", "gemma2"])
def test_causal_lm_loss_runs_through_ddp_without_the_full_logits(family, one_process_group):
    model = _family_model(family)
    lorakit.inject(model, lorakit.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    randomize_lora(model)
    params = [p for n, p in model.named_parameters() if "lora_" in n]
    ids, mask, labels = _batch()
    want = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    want_grads = torch.autograd.grad(want, params)
    for p in model.parameters():
        p.requires_grad_(any(p is q for q in params))
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    head_outputs = []
    hook = model.get_output_embeddings().register_forward_hook(lambda m, i, out: head_outputs.append(out.shape))
    got = lorakit.causal_lm_loss(ddp, ids, labels, attention_mask=mask, chunk_size=5)
    hook.remove()
    got.backward()  # through DDP's reducer: the gradients land in .grad, all-reduced over the one process
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for p, w in zip(params, want_grads, strict=True):
        torch.testing.assert_close(p.grad, w, rtol=1e-4, atol=1e-5)
    assert head_outputs == [torch.Size([2, 1, 100])]  # DDP's forward ran, with the logits of one position only


def test_causal_lm_loss_refuses_data_parallel_naming_the_fix(tiny_llama):
    with pytest.raises(LossInputError, match="DistributedDataParallel"):
        lorakit.causal_lm_loss(torch.nn.DataParallel(tiny_llama), *_batch()[:1])
