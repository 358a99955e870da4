"""Language-model evaluation (strided NLL, bpc/bpb, pseudo-perplexity, corpus layouts), the LM task plugin
and ``lorakit lm-eval``: real GPT-2 tokenizer, tiny random GPT-2 / BERT built from configs, real slices of
the shared WikiText-2 and Tiny Shakespeare files (a missing file fails, never skips)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from helpers import gpt2_tokenizer, minilm_tokenizer, need, shared_data

from lorakit.metrics.lm import (
    CorpusError,
    char_word_units,
    lm_metrics,
    mlm_windows,
    pseudo_perplexity,
    read_corpus,
    sliding_window_nll,
    tokenize_text,
    window_plan,
)
from lorakit.train.tasks import DataError
from lorakit.train.tasks.lm import get_lm_task

DATA = shared_data()
WIKITEXT = DATA / "wikitext-2"
SHAKESPEARE = DATA / "tinyshakespeare" / "input.txt"
LN2 = math.log(2.0)


@pytest.fixture(scope="module")
def tok():
    return gpt2_tokenizer()


def _tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)  # initializer_range 0.2: outputs depend clearly on context and position
    cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=128, initializer_range=0.2,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


@pytest.fixture(scope="module")
def lm():
    return _tiny_gpt2()


@pytest.fixture(scope="module")
def wiki_text() -> str:
    return (need(WIKITEXT / "valid.txt")).read_text(encoding="utf-8")[:1500]


def _token_nll(model, ids: torch.Tensor, t: int, begin: int) -> float:
    """NLL (nats) of token ``t`` given tokens ``[begin, t)``, one unbatched forward pass."""
    with torch.no_grad():
        logits = model(ids[None, begin:t + 1]).logits[0, -2].double()
    return float(-logits.log_softmax(-1)[ids[t]])


# ------------------------------------------------------------------------------------------------------
# strided NLL
# ------------------------------------------------------------------------------------------------------

def test_stride_equal_to_context_is_non_overlapping_chunks(lm, tok, wiki_text):
    ids = tokenize_text(tok, wiki_text[:600], add_bos=False, counts=False).ids
    c = 32
    res = sliding_window_nll(lm, ids, context=c, stride=c, batch_size=3)
    direct, n = [], 0
    with torch.no_grad():
        for chunk in ids.split(c):
            if len(chunk) < 2:
                continue
            lp = lm(chunk[None]).logits[0, :-1].double().log_softmax(-1)
            direct.append(-lp.gather(1, chunk[1:, None]).sum())
            n += len(chunk) - 1
    assert res.n_tokens == n
    assert res.total_nll == pytest.approx(float(sum(direct)), rel=1e-6)
    assert torch.isnan(res.token_nll[::c]).all()  # each chunk's first token is context only


def test_stride_one_is_fully_conditioned_scoring(lm, tok, wiki_text):
    ids = tokenize_text(tok, wiki_text[:250], add_bos=True, counts=False).ids[:60]
    c = 16
    res = sliding_window_nll(lm, ids, context=c, stride=1, batch_size=7)
    direct = torch.tensor([_token_nll(lm, ids, t, max(0, t - c + 1)) for t in range(1, len(ids))],
                          dtype=torch.float64)
    assert res.n_tokens == len(ids) - 1
    torch.testing.assert_close(res.token_nll[1:], direct, rtol=1e-5, atol=1e-5)
    assert res.total_nll == pytest.approx(float(direct.sum()), rel=1e-6)


def test_in_between_stride_equals_direct_per_token_loop(lm, tok, wiki_text):
    ids = tokenize_text(tok, wiki_text[:400], add_bos=True, counts=False).ids[:90]
    n, c, s = len(ids), 24, 10
    res = sliding_window_nll(lm, ids, context=c, stride=s, batch_size=4)
    direct = []
    for t in range(1, n):
        k = max(0, math.ceil((t + 1 - c) / s))  # the first window (begin k*s, length c) whose end passes t
        begin = k * s
        assert t - begin >= min(t, c - s)  # at least context - stride tokens of context
        direct.append(_token_nll(lm, ids, t, begin))
    torch.testing.assert_close(res.token_nll[1:], torch.tensor(direct, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    # a different stride conditions differently: the comparison above can tell them apart
    other = sliding_window_nll(lm, ids, context=c, stride=c, batch_size=4)
    assert abs(other.total_nll - res.total_nll) > 1e-3


@pytest.mark.parametrize("n,c,s", [(1, 4, 2), (2, 4, 4), (10, 4, 1), (37, 8, 3), (37, 8, 8), (64, 16, 16),
                                   (65, 16, 16), (100, 7, 5)])
def test_window_plan_scores_each_token_once(n, c, s):
    plan = window_plan(n, c, s)
    hits = [0] * n
    for w in plan:
        assert 0 <= w.begin < w.score_from <= w.end <= n and w.end - w.begin <= c
        for t in range(w.score_from, w.end):
            hits[t] += 1
    chunk_starts = set(range(0, n, c)) if s == c else {0}
    assert hits == [0 if t in chunk_starts else 1 for t in range(n)]


def test_bad_strided_arguments(lm):
    ids = torch.arange(20)
    with pytest.raises(ValueError, match="stride"):
        sliding_window_nll(lm, ids, context=8, stride=9)
    with pytest.raises(ValueError, match="positions"):
        sliding_window_nll(lm, ids, context=256, stride=8)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        sliding_window_nll(lm, ids[:1], context=8, stride=8)


# ------------------------------------------------------------------------------------------------------
# metrics arithmetic and corpus layouts
# ------------------------------------------------------------------------------------------------------

def test_lm_metrics_hand_worked():
    m = lm_metrics(20 * LN2, 10, n_chars=40, n_bytes=50, n_words=5)  # 20 bits over 10 tokens
    assert m["nll_per_token"] == pytest.approx(2 * LN2)
    assert m["ppl"] == pytest.approx(4.0)  # 2 bits/token
    assert m["bpc"] == pytest.approx(0.5)  # 20 bits / 40 chars
    assert m["bpb"] == pytest.approx(0.4)  # 20 bits / 50 bytes
    assert m["word_ppl"] == pytest.approx(16.0)  # 4 bits/word
    m = lm_metrics(3.0, 2)
    assert set(m) == {"nll_per_token", "ppl"}
    assert math.isnan(lm_metrics(1.0, 1, n_chars=0)["bpc"])


def test_wikitext_word_count_matches_official_counts():
    valid = read_corpus(need(WIKITEXT), "wikitext", "valid")
    assert valid.n_words == 217646
    assert int(char_word_units(valid.text).sum()) == 217646
    assert read_corpus(WIKITEXT / "test.txt", "wikitext", "test").n_words == 245569


def test_token_attribution_adds_up_on_the_real_file(tok):
    text = read_corpus(need(WIKITEXT), "wikitext", "dev").text[:200_000]
    whole = tokenize_text(tok, text, word_units=True)
    pieces = tokenize_text(tok, text, word_units=True, chunk_chars=20_000)  # cut at line starts
    assert torch.equal(whole.ids, pieces.ids) and torch.equal(whole.n_bytes, pieces.n_bytes)
    words = ("anarchism originated as a  term of abuse first used against early working class " * 300)
    assert torch.equal(tokenize_text(tok, words, counts=False).ids,
                       tokenize_text(tok, words, counts=False, chunk_chars=500).ids)  # one line: cut between words
    assert whole.ids[0] == tok.eos_token_id and whole.n_chars[0] == 0  # the BOS owns nothing
    assert int(whole.n_chars.sum()) == len(text)
    assert int(whole.n_bytes.sum()) == len(text.encode("utf-8"))
    assert int(whole.n_words.sum()) == len(text.split()) + text.count("\n") + (not text.endswith("\n"))


def _synthetic_enwik8(path: Path) -> bytes:
    unit = "<page>Ünïcödé ✓ 日本語 text 😀\n".encode()  # 1-, 2-, 3- and 4-byte characters
    raw = (unit * 40)[:1000]
    path.write_bytes(raw)
    return raw


def test_enwik8_splits_by_bytes_and_bpb_counts_raw_bytes(tmp_path, lm, tok):
    raw = _synthetic_enwik8(tmp_path / "enwik8")
    sizes = (900, 50, 50)
    parts = {s: read_corpus(tmp_path, "enwik8", s, split_sizes=sizes) for s in ("train", "valid", "test")}
    assert [parts[s].n_bytes for s in ("train", "valid", "test")] == [900, 50, 50]
    assert parts["test"].text.encode("utf-8", "surrogateescape") == raw[950:1000]
    assert b"".join(parts[s].text.encode("utf-8", "surrogateescape") for s in parts) == raw
    assert any(0xDC80 <= ord(ch) <= 0xDCFF for s in parts for ch in parts[s].text)  # a cut character
    # bpb through the task equals the strided NLL over the split's raw bytes
    task = get_lm_task("enwik8", split_sizes=sizes, stride=8)
    items = task.encode(task.load("valid", tmp_path), tok, SimpleNamespace(max_length=16))
    preds = task.predict(lm, task.collate(items))
    m = task.metrics(preds, [it["label"] for it in items])
    ref = sliding_window_nll(lm, tokenize_text(tok, parts["valid"].text, counts=False).ids, context=16, stride=8)
    assert m["bpb"] == pytest.approx(ref.total_nll / LN2 / 50, rel=1e-5)
    assert task.main_metric == "bpb"
    with pytest.raises(CorpusError, match="fewer than"):
        read_corpus(tmp_path, "enwik8", "test")  # the standard 90M/5M/5M split needs the full file


def test_text8_and_text_layouts(tmp_path):
    words = ("anarchism originated as a term of abuse first used against early working class " * 20)[:1000]
    (tmp_path / "text8").write_text(words)
    test = read_corpus(tmp_path / "text8", "text8", "test", split_sizes=(900, 50, 50))
    assert test.text == words[950:] and test.n_chars == test.n_bytes == 50
    full = need(SHAKESPEARE).read_text(encoding="utf-8")
    parts = [read_corpus(SHAKESPEARE, "text", s, split_fraction=(0.8, 0.1)).text for s in ("train", "valid", "test")]
    assert "".join(parts) == full and len(parts[0]) == round(0.8 * len(full))
    assert read_corpus(SHAKESPEARE.parent, "text", "all").n_chars == 1115394
    with pytest.raises(CorpusError, match="not found"):
        read_corpus(tmp_path / "nope.txt", "text", "test")
    with pytest.raises(CorpusError, match="no wiki.valid.tokens"):
        read_corpus(tmp_path, "wikitext", "valid")


# ------------------------------------------------------------------------------------------------------
# pseudo-perplexity
# ------------------------------------------------------------------------------------------------------

def _tiny_mlm():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64, initializer_range=0.2,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForMaskedLM(cfg).eval()


def test_pseudo_perplexity_batched_equals_unbatched_loop(wiki_text):
    model, btok = _tiny_mlm(), minilm_tokenizer()
    text = wiki_text[:220]
    ids = btok(text, add_special_tokens=False)["input_ids"]
    width = 14  # max_length 16 minus [CLS] and [SEP]
    direct = []
    with torch.no_grad():
        for a in range(0, len(ids), width):
            window = [btok.cls_token_id, *ids[a:a + width], btok.sep_token_id]
            for j in range(1, len(window) - 1):
                masked = torch.tensor(window)
                masked[j] = btok.mask_token_id
                lp = model(masked[None]).logits[0, j].double().log_softmax(-1)
                direct.append(float(lp[window[j]]))
    res = pseudo_perplexity(model, btok, text, max_length=16, batch_size=5)
    assert res.n_tokens == len(ids) > 2 * width
    torch.testing.assert_close(res.token_logprob, torch.tensor(direct, dtype=torch.float64), rtol=1e-5, atol=1e-5)
    assert res.pppl == pytest.approx(math.exp(-sum(direct) / len(ids)), rel=1e-6)
    strided = pseudo_perplexity(model, btok, ids, max_length=16, stride=6, batch_size=64)
    assert strided.n_tokens == len(ids) and not torch.isnan(strided.token_logprob).any()
    assert abs(strided.pll - res.pll) > 1e-3  # more context on both sides changes the scores


@pytest.mark.parametrize("n,w,s", [(5, 8, 8), (40, 8, 3), (41, 10, 10), (100, 14, 6)])
def test_mlm_windows_score_each_token_once(n, w, s):
    hits = [0] * n
    for begin, end, start, stop in mlm_windows(n, w, s):
        assert begin <= start <= stop <= end and end - begin <= w
        for t in range(start, stop):
            hits[t] += 1
    assert hits == [1] * n


# ------------------------------------------------------------------------------------------------------
# the task plugin
# ------------------------------------------------------------------------------------------------------

def test_task_itemwise_predict_and_metrics_equal_corpus_level(lm, tok):
    task = get_lm_task("wikitext", stride=12)
    segments = task.load("dev", need(WIKITEXT))[:12]
    text = "".join(s.text for s in segments)
    items = task.encode(segments, tok, SimpleNamespace(max_length=32))
    preds = []
    for i in range(0, len(items), 5):
        preds += task.predict(lm, task.collate(items[i:i + 5]))
    m = task.metrics(preds, [it["label"] for it in items])
    ids = tokenize_text(tok, text, counts=False).ids
    ref = sliding_window_nll(lm, ids, context=32, stride=12, batch_size=8)
    assert sum(p[1] for p in preds) == ref.n_tokens == len(ids) - 1  # BOS in front: every text token scored
    expected = lm_metrics(ref.total_nll, ref.n_tokens, len(text), len(text.encode()), read_corpus_words(text))
    for key in ("nll_per_token", "ppl", "bpc", "bpb", "word_ppl"):
        assert m[key] == pytest.approx(expected[key], rel=1e-5), key
    assert task.main_metric in task.metrics([0, 1], [0, 1])  # the loop's metric-name check
    assert task.model_kind == "causal_lm" and task.num_labels == 0
    assert task.lower_is_better == task.metric_names  # all of them: the loop keeps the smallest


def read_corpus_words(text: str) -> int:
    return len(text.split()) + text.count("\n") + (not text.endswith("\n"))


def test_task_training_blocks_and_loss(lm, tok):
    task = get_lm_task("text", label_smoothing=0.0)
    segments = task.load("train", need(SHAKESPEARE))[:60]
    items = task.encode(segments, tok, SimpleNamespace(max_length=24), training=True)
    text = "".join(s.text for s in segments)
    ids = tokenize_text(tok, text, add_bos=False, counts=False).ids
    assert torch.equal(torch.cat([it["input_ids"] for it in items]), ids[: sum(len(it["input_ids"]) for it in items)])
    assert all(len(it["input_ids"]) == 24 for it in items[:-1])
    batch = task.collate(items[:4])
    with torch.no_grad():
        hf = lm(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        assert float(task.loss(lm, batch)) == pytest.approx(float(hf), rel=1e-5)
        cut = task.collate(items[:4], max_length=10)
        assert cut["input_ids"].shape == (4, 10)
        smooth = get_lm_task("text", label_smoothing=0.1)
        smooth.pad_id = task.pad_id
        assert abs(float(smooth.loss(lm, batch)) - float(hf)) > 1e-3
    with pytest.raises(DataError, match="not found"):
        task.load("train", Path("/nonexistent/corpus"))


# ------------------------------------------------------------------------------------------------------
# lorakit lm-eval
# ------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tok):
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    _tiny_gpt2().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_lm_eval_command_end_to_end(model_dir, tmp_path, lm, tok, capsys):
    from lorakit.cli import main as cli

    out = tmp_path / "metrics.json"
    argv = ["lm-eval", "--model", str(model_dir), "--text", str(need(WIKITEXT)), "--layout", "wikitext",
            "--split", "valid", "--max-chars", "2000", "--context", "64", "--stride", "32", "--batch-size", "4",
            "--no-progress", "--out", str(out)]
    assert cli(argv) == 0
    record = json.loads(out.read_text())
    assert "ppl (token)" in capsys.readouterr().out
    text = read_corpus(WIKITEXT, "wikitext", "valid").text[:2000]
    ids = tokenize_text(tok, text, counts=False).ids
    ref = sliding_window_nll(lm, ids, context=64, stride=32)
    assert record["n_tokens"] == len(ids) - 1 and record["n_chars"] == 2000
    assert record["n_bytes"] == len(text.encode()) and record["n_words"] == read_corpus_words(text)
    assert record["ppl"] == pytest.approx(math.exp(ref.total_nll / ref.n_tokens), rel=1e-5)
    assert record["bpc"] == pytest.approx(ref.total_nll / LN2 / 2000, rel=1e-5)
    assert record["tokens_per_s"] > 0


def test_lm_eval_with_adapter_and_mlm(model_dir, tmp_path, tok):
    import lorakit
    from lorakit.lm_eval import main

    model = _tiny_gpt2()
    lorakit.inject(model, lorakit.LoraConfig(r=2, target_modules=["c_attn"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.normal_(0, 0.5)
    lorakit.save_adapter(model, tmp_path / "adapter")
    text = need(SHAKESPEARE).read_text(encoding="utf-8")[:500]
    (tmp_path / "input.txt").write_text(text)
    common = ["--text", str(tmp_path / "input.txt"), "--split", "all", "--context", "32", "--no-progress"]
    assert main(["--model", str(model_dir), "--adapter", str(tmp_path / "adapter"), *common,
                 "--out", str(tmp_path / "a.json")]) == 0
    assert main(["--model", str(model_dir), *common, "--out", str(tmp_path / "b.json")]) == 0
    with_adapter, base = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    ref = sliding_window_nll(model.eval(), tokenize_text(tok, text, counts=False).ids, context=32, stride=16)
    assert with_adapter["bpc"] == pytest.approx(ref.total_nll / LN2 / len(text), rel=1e-5)
    assert abs(with_adapter["bpc"] - base["bpc"]) > 1e-3
    # masked LM: pseudo-perplexity
    mlm_dir = tmp_path / "tiny-bert"
    _tiny_mlm().save_pretrained(mlm_dir)
    btok = minilm_tokenizer()
    btok.save_pretrained(mlm_dir)
    assert main(["--model", str(mlm_dir), "--mlm", *common[:-3], "--context", "16", "--batch-size", "16",
                 "--no-progress", "--out", str(tmp_path / "m.json")]) == 0
    record = json.loads((tmp_path / "m.json").read_text())
    direct = pseudo_perplexity(_tiny_mlm(), btok, text, max_length=16)
    assert record["ppl"] == pytest.approx(direct.pppl, rel=1e-5) and record["n_chars"] == len(text)


def test_lm_eval_bad_inputs(model_dir, tmp_path, capsys):
    from lorakit.lm_eval import main

    base = ["--model", str(model_dir), "--no-progress"]
    assert main([*base, "--text", str(tmp_path / "missing.txt"), "--split", "all"]) == 2
    assert "not found" in capsys.readouterr().err
    (tmp_path / "t.txt").write_text("Some text to score, long enough for a few tokens.\n")
    assert main([*base, "--text", str(tmp_path / "t.txt"), "--context", "16", "--stride", "32"]) == 2
    assert "larger than --context" in capsys.readouterr().err
    assert main([*base, "--text", str(tmp_path / "t.txt"), "--split", "all", "--context", "256"]) == 2
    assert "exceeds the 128 positions" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main([*base, "--text", str(tmp_path / "empty.txt"), "--split", "all"]) == 2
    assert "empty" in capsys.readouterr().err
    assert main([*base, "--text", str(tmp_path / "t.txt"), "--split", "all", "--out", str(tmp_path / "no/x.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
