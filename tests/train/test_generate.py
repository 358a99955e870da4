"""lorakit.train.generate on tiny random GPT-2 models: exhaustive search, cache, padding, HF references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import transformers

import lorakit
from lorakit.train.generate import GenerationConfig, _Runner, generate

EOS = 3


def tiny_gpt2(vocab: int = 40, seed: int = 0, spread: float = 0.3, n_embd: int = 32, double: bool = True,
              tied: bool = True) -> transformers.GPT2LMHeadModel:
    """A random 2-layer GPT-2; ``spread`` (init std) > 0.02 gives peaked, varied next-token distributions."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=vocab, n_positions=64, n_embd=n_embd, n_layer=2, n_head=2, initializer_range=spread,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=EOS, pad_token_id=EOS,
        tie_word_embeddings=tied,
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    return model.double() if double else model


def eos_likely_model() -> transformers.GPT2LMHeadModel:
    """Vocabulary 12, EOS likely in some contexts: prompts finish early and early stopping kicks in."""
    model = tiny_gpt2(vocab=12, seed=3, spread=0.15, tied=False)
    with torch.no_grad():
        model.lm_head.weight[EOS] *= 2.0
    return model


def left_pad(prompts: list[list[int]], pad: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, mask


def run(model, prompts, stop_sequences=(), eos=EOS, generator=None, pad=0, **settings) -> list[list[int]]:
    ids, mask = left_pad(prompts, pad)
    return generate(model, ids, mask, GenerationConfig(**settings), eos_token_id=eos,
                    stop_sequences=stop_sequences, generator=generator)


def hf_continuation(model, prompt: list[int], **kwargs) -> list[int]:
    ids = torch.tensor([prompt])
    out = model.generate(ids, attention_mask=torch.ones_like(ids), eos_token_id=EOS, pad_token_id=EOS,
                         do_sample=False, **kwargs)[0, len(prompt):].tolist()
    return out[: out.index(EOS)] if EOS in out else out


PROMPTS = [[5, 9, 11, 2], [7, 1], [12, 30, 4, 4, 8, 21, 6]]


# 1 ---------------------------------------------------------------------------------------------------------
# 0.05 and -0.2 sit near switches of this model's optimum, so they tell length conventions apart
# (length counts the EOS token; length + 1 or length without EOS give other answers there)
@pytest.mark.parametrize("length_penalty", [0.0, 0.05, 0.8, 2.0, -0.2, -0.7])
def test_beam_search_with_enough_beams_equals_exhaustive_search(length_penalty):
    vocab, max_new, prompt = 6, 3, [1, 4, 2, 0]
    model = tiny_gpt2(vocab=vocab, seed=12, spread=0.2)
    words = [t for t in range(vocab) if t != EOS]
    # every hypothesis: k words then EOS (k < max_new), or max_new words (unfinished at the limit)
    hyps = [list(w) + [EOS] for k in range(max_new) for w in itertools.product(words, repeat=k)]
    hyps += [list(w) for w in itertools.product(words, repeat=max_new)]

    def score(seq: list[int]) -> float:
        with torch.no_grad():
            logp = model(torch.tensor([prompt + seq])).logits[0].log_softmax(-1)
        total = sum(float(logp[len(prompt) - 1 + i, tok]) for i, tok in enumerate(seq))
        return total / len(seq) ** length_penalty

    best = max(hyps, key=score)
    expected = best[:-1] if best[-1:] == [EOS] else best
    beams = (len(words) ** (max_new - 1)) * vocab  # every candidate of the last step ranks in the top `beams`
    got = run(model, [prompt], num_beams=beams, max_new_tokens=max_new, length_penalty=length_penalty,
              no_repeat_ngram_size=0)
    assert got == [expected]


def test_exhaustive_test_model_makes_beam_search_matter():
    """Guards test 1: on its model the optimum is off the greedy path and depends on the length penalty."""
    model = tiny_gpt2(vocab=6, seed=12, spread=0.2)
    settings = dict(max_new_tokens=3, no_repeat_ngram_size=0)
    greedy = run(model, [[1, 4, 2, 0]], strategy="greedy", **settings)[0]
    best = {lp: run(model, [[1, 4, 2, 0]], num_beams=150, length_penalty=lp, **settings)[0] for lp in (0.0, 0.8, -0.7)}
    assert greedy not in best.values()
    assert len({tuple(seq) for seq in best.values()}) == 3


def test_early_stopping_never_changes_the_result(monkeypatch):
    """Stopping a prompt once no running beam can beat its finished ones gives what running on would."""
    import lorakit.train.generate as gen

    model = eos_likely_model()
    calls = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    prompts = [[1, 2], [5, 6, 7, 8], [9], [4, 4, 10], [11, 0, 2], [7, 7]]

    def decode(length_penalty):
        calls.clear()
        out = run(model, prompts, num_beams=3, max_new_tokens=24, length_penalty=length_penalty,
                  no_repeat_ngram_size=0)
        return out, len(calls)

    for length_penalty in (0.0, 0.8, 2.0, -0.7):
        early, steps = decode(length_penalty)
        with monkeypatch.context() as patch:
            patch.setattr(gen, "_bound", lambda *_: math.inf)  # never stop before max_new_tokens
            full, full_steps = decode(length_penalty)
        assert early == full
        assert full_steps == 24
        if length_penalty < 2.0:  # (with 2.0 long hypotheses keep a chance to the end: it must not stop early)
            assert steps < 24


# 2 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
def test_kv_cache_path_equals_recomputing(strategy):
    model = tiny_gpt2()
    settings = dict(strategy=strategy, num_beams=5, max_new_tokens=12, no_repeat_ngram_size=2, min_new_tokens=2,
                    repetition_penalty=1.3, top_k=20, top_p=0.9, temperature=0.8)
    cached = run(model, PROMPTS, generator=torch.Generator().manual_seed(5), use_cache=True, **settings)
    recomputed = run(model, PROMPTS, generator=torch.Generator().manual_seed(5), use_cache=False, **settings)
    assert cached == recomputed
    assert sum(map(len, cached)) > 6


def test_legacy_tuple_cache_is_reordered_and_repeated():
    layer = torch.arange(3.0).view(3, 1, 1, 1)
    runner = _Runner(tiny_gpt2(), use_cache=True)
    runner.past = ((layer, layer + 10),)
    runner.repeat_interleave(2)
    runner.reorder(torch.tensor([5, 0, 0, 1, 2, 3]))
    keys, values = runner.past[0]
    assert keys.flatten().tolist() == [2.0, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert values.flatten().tolist() == [12.0, 10.0, 10.0, 10.0, 11.0, 11.0]


# 3 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy", ["greedy", "beam"])
def test_left_padded_batch_equals_each_prompt_alone(strategy):
    model = tiny_gpt2()
    settings = dict(strategy=strategy, num_beams=4, max_new_tokens=10, no_repeat_ngram_size=3)
    batched = run(model, PROMPTS, **settings)
    alone = [run(model, [p], **settings)[0] for p in PROMPTS]
    assert batched == alone
    assert len({tuple(r) for r in batched}) == len(PROMPTS)


# 4 ---------------------------------------------------------------------------------------------------------
def test_greedy_equals_one_beam_and_transformers_greedy():
    model = tiny_gpt2(seed=1)
    for prompt in PROMPTS:
        greedy = run(model, [prompt], strategy="greedy", max_new_tokens=15, no_repeat_ngram_size=2)[0]
        assert run(model, [prompt], strategy="beam", num_beams=1, length_penalty=3.0, max_new_tokens=15,
                   no_repeat_ngram_size=2) == [greedy]
        assert greedy == hf_continuation(model, prompt, num_beams=1, max_new_tokens=15, no_repeat_ngram_size=2)
        penalised = run(model, [prompt], strategy="greedy", max_new_tokens=15, no_repeat_ngram_size=0,
                        repetition_penalty=1.8)[0]
        assert penalised == hf_continuation(model, prompt, num_beams=1, max_new_tokens=15, repetition_penalty=1.8)
        assert penalised != run(model, [prompt], strategy="greedy", max_new_tokens=15, no_repeat_ngram_size=0)[0]


@pytest.mark.parametrize("eos_likely", [False, True])
@pytest.mark.parametrize("length_penalty", [0.8, 0.0])
def test_beam_search_equals_transformers_beam_search(length_penalty, eos_likely):
    """Same conventions as HF with early_stopping="never" (documented in the module), including which
    finishing candidates are kept (only those ranked among the top num_beams)."""
    model = eos_likely_model() if eos_likely else tiny_gpt2(seed=2)
    prompts = [[p % 12 for p in prompt] for prompt in PROMPTS] if eos_likely else PROMPTS
    for prompt in prompts:
        mine = run(model, [prompt], num_beams=6, max_new_tokens=14, length_penalty=length_penalty,
                   no_repeat_ngram_size=3)[0]
        theirs = hf_continuation(model, prompt, num_beams=6, max_new_tokens=14, length_penalty=length_penalty,
                                 no_repeat_ngram_size=3, early_stopping="never")
        assert mine == theirs


# 5 ---------------------------------------------------------------------------------------------------------
def forced_model(preference: list[float]) -> transformers.GPT2LMHeadModel:
    """A model whose next-token logits are always ``preference`` (whatever the input)."""
    model = tiny_gpt2(vocab=len(preference), tied=False)
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)  # constant hidden state of ones
        model.lm_head.weight.zero_()
        model.lm_head.weight[:, 0] = torch.tensor(preference, dtype=model.lm_head.weight.dtype)
    return model


def ngrams(seq: list[int], n: int) -> list[tuple[int, ...]]:
    return [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]


@pytest.mark.parametrize("strategy", ["greedy", "beam", "sample"])
@pytest.mark.parametrize("n", [2, 3, 4])
def test_no_repeat_ngram_blocks_repeats_on_a_model_that_wants_to_repeat(strategy, n):
    model = forced_model([0.0, 1.0, 2.0, -50.0, 3.0, 4.0, 20.0, 5.0])  # token 6 always, EOS (3) never
    prompt = [6, 6, 2, 5] if n > 2 else [1, 2]
    settings = dict(strategy=strategy, num_beams=3, max_new_tokens=20, top_k=3)
    gen = torch.Generator().manual_seed(0)
    assert run(model, [prompt], no_repeat_ngram_size=0, generator=gen, **settings) == [[6] * 20]
    out = run(model, [prompt], no_repeat_ngram_size=n, generator=gen, **settings)[0]
    full = prompt + out
    assert len(out) == 20
    assert len(set(ngrams(full, n))) == len(ngrams(full, n))


def test_no_repeat_ngram_ignores_left_padding():
    model = forced_model([0.0, 1.0, 2.0, -50.0, 3.0, 4.0, 20.0, 5.0])
    # padding with the favourite token 6: were "6 6" of the padding counted, 6 would be banned at once
    settings = dict(strategy="greedy", max_new_tokens=8, no_repeat_ngram_size=2)
    alone = run(model, [[6]], **settings)[0]
    assert alone[0] == 6
    assert run(model, [[6, 6, 2, 5, 6], [6]], pad=6, **settings)[1] == alone


# 6 ---------------------------------------------------------------------------------------------------------
def first_stop(seq: list[int], stops: list[list[int]], min_new: int = 0) -> list[int]:
    """Reference: the kept prefix when ``seq`` is cut at its first stop-sequence suffix."""
    for end in range(1, len(seq) + 1):
        for stop in stops:
            if end - len(stop) >= min_new and seq[end - len(stop):end] == stop:
                return seq[: end - len(stop)]
    return seq


def test_stop_sequences_and_eos_end_generation_and_are_stripped():
    model = tiny_gpt2(seed=9)
    prompt = [5, 9, 11, 2]
    settings = dict(strategy="greedy", max_new_tokens=20, no_repeat_ngram_size=0)
    free = run(model, [prompt], eos=39, **settings)[0]  # 39: never produced here
    assert len(free) == 20
    stop = free[6:8]
    assert run(model, [prompt], eos=39, stop_sequences=[stop], **settings)[0] == first_stop(free, [stop])
    assert len(first_stop(free, [stop])) <= 6
    # a stop sequence of one token and an EOS id cut at the same place, the stripped token excluded
    eos = free[4]
    cut = free[: free.index(eos)]
    assert run(model, [prompt], eos=eos, **settings)[0] == cut
    assert run(model, [prompt], eos=39, stop_sequences=[[eos]], **settings)[0] == cut
    # min_new_tokens: stop sequences only count after that many kept tokens
    want = first_stop(free, [[eos], stop], min_new=len(cut) + 1)
    got = run(model, [prompt], eos=39, stop_sequences=[[eos], stop], min_new_tokens=len(cut) + 1, **settings)[0]
    assert got == want and len(got) >= len(cut) + 1


def test_min_new_tokens_bans_eos_before():
    model = forced_model([0.0, 1.0, 2.0, 30.0, 3.0, 4.0, 20.0, 5.0])  # EOS (3) always the favourite
    for strategy in ["greedy", "beam", "sample"]:
        assert run(model, [[1, 2]], strategy=strategy, num_beams=3, max_new_tokens=9) == [[]]
        out = run(model, [[1, 2]], strategy=strategy, num_beams=3, max_new_tokens=9, min_new_tokens=4,
                  no_repeat_ngram_size=0, top_k=1)
        assert out == [[6, 6, 6, 6]]


def test_beam_stop_sequences():
    model = tiny_gpt2(seed=9)
    settings = dict(num_beams=4, max_new_tokens=16, no_repeat_ngram_size=0)
    plain = run(model, PROMPTS, eos=39, **settings)
    token = plain[0][3]
    # a one-token stop sequence behaves as an extra EOS id
    assert run(model, PROMPTS, eos=39, stop_sequences=[[token]], **settings) == run(model, PROMPTS, eos=[39, token],
                                                                                     **settings)
    stops = [row[2:4] for row in plain if len(row) >= 4]
    stopped = run(model, PROMPTS, eos=39, stop_sequences=stops, **settings)
    assert stopped != plain
    for row in stopped:  # a hypothesis ends at its first stop sequence, which is stripped
        assert first_stop(row, stops) == row


# 7 ---------------------------------------------------------------------------------------------------------
def test_sampling_is_reproducible_and_top_k_1_is_greedy():
    model = tiny_gpt2(seed=6)
    settings = dict(strategy="sample", max_new_tokens=12, no_repeat_ngram_size=0)

    def sample(seed, **extra):
        return run(model, PROMPTS, generator=torch.Generator().manual_seed(seed), **{**settings, **extra})

    assert sample(11) == sample(11)
    assert sample(11) != sample(12)
    greedy = run(model, PROMPTS, strategy="greedy", max_new_tokens=12, no_repeat_ngram_size=0)
    assert sample(13) != greedy
    assert sample(13, top_k=1) == greedy
    assert sample(14, top_p=1e-6) == greedy
    assert sample(15, temperature=1e-4) == greedy


# 8 ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("settings", "words"), [
    (dict(strategy="topk"), ["generation.strategy", "'beam'"]),
    (dict(num_beams=0), ["generation.num_beams", ">= 1"]),
    (dict(max_new_tokens=0), ["generation.max_new_tokens", ">= 1"]),
    (dict(min_new_tokens=9, max_new_tokens=4), ["generation.min_new_tokens", "max_new_tokens"]),
    (dict(top_p=0.0), ["generation.top_p"]),
    (dict(temperature=0.0), ["generation.temperature"]),
    (dict(no_repeat_ngram_size=-1), ["generation.no_repeat_ngram_size"]),
    (dict(length_penalty=math.inf), ["generation.length_penalty"]),
    (dict(repetition_penalty=0.0), ["generation.repetition_penalty"]),
])
def test_bad_settings_raise_naming_the_setting(settings, words):
    with pytest.raises(ValueError) as err:
        GenerationConfig(**settings)
    assert all(w in str(err.value) for w in words), str(err.value)
    config = GenerationConfig()
    for key, value in settings.items():  # settings changed after construction are caught by generate()
        setattr(config, key, value)
    with pytest.raises(ValueError, match="generation."):
        generate(tiny_gpt2(), torch.tensor([[1, 2]]), None, config, eos_token_id=EOS)


def test_bad_inputs_raise_clear_errors():
    model = tiny_gpt2()
    ok = GenerationConfig(max_new_tokens=4)
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])

    def error(ids=ids, mask=None, config=ok, **kwargs) -> str:
        kwargs.setdefault("eos_token_id", EOS)
        with pytest.raises(ValueError) as err:
            generate(model, ids, mask, config, **kwargs)
        return str(err.value)

    long = torch.ones(1, 40, dtype=torch.long)
    msg = error(long, config=GenerationConfig(max_new_tokens=30))
    assert all(w in msg for w in ["40", "30", "70", "64", "n_positions", "data.max_length",
                                  "generation.max_new_tokens"]), msg
    run(model, [[1] * 34], max_new_tokens=30, strategy="greedy")  # exactly the context: fine
    assert "eos_token_id 40" in error(eos_token_id=40) and "vocabulary of 40" in error(eos_token_id=40)
    assert "eos_token_id" in error(eos_token_id=[])
    assert "stop_sequences[0]" in error(stop_sequences=[[41]])
    assert "stop_sequences[1]" in error(stop_sequences=[[1], []])
    assert "empty batch" in error(torch.zeros(0, 3, dtype=torch.long))
    assert "row 1" in error(mask=torch.tensor([[1, 1, 1], [0, 0, 0]])) and "all padding" in error(
        mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))
    assert "left" in error(mask=torch.tensor([[1, 1, 0], [1, 1, 1]]))
    assert "shape" in error(mask=torch.ones(2, 4))
    assert "integer" in error(torch.ones(2, 3))
    assert "pad_token_id" in error(pad_token_id=99)
    assert "input_ids" in error(torch.tensor([[1, 99]]))


# 9 ---------------------------------------------------------------------------------------------------------
def test_lora_adapter_batch_rows_follow_their_adapters():
    model = tiny_gpt2(seed=7, double=False)
    lorakit.inject(model, lorakit.LoraConfig(r=4, target_modules=["c_attn"]))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.5)
    model.eval()
    prompts = [PROMPTS[0], PROMPTS[2]]
    settings = dict(num_beams=4, max_new_tokens=10)
    with_adapter = run(model, [prompts[0]], **settings)[0]
    with lorakit.disable_adapters(model):
        base = run(model, [prompts[1]], **settings)[0]
        base_other = run(model, [prompts[0]], **settings)[0]
    assert base_other != with_adapter  # the adapter changes this prompt's output
    with lorakit.adapter_batch(model, ["default", "__base__"]):
        assert run(model, prompts, **settings) == [with_adapter, base]
