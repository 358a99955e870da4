"""Language-model evaluation: strided perplexity, bits per character/byte, masked-LM pseudo-perplexity,
and the text-file layouts of the usual LM corpora.

Units: every log-likelihood here is in **nats** (natural log). ``nll_per_token`` is nats per scored
token, ``ppl = exp(nll_per_token)``; ``bpc`` and ``bpb`` are **bits** per character / per UTF-8 byte of
the scored text (``total_nll / ln 2 / count``); ``word_ppl = exp(total_nll / n_words)``.

Strided evaluation (:func:`sliding_window_nll`)
    Window ``k`` covers tokens ``[k * stride, min(k * stride + context, n))``. It scores, as targets, the
    tokens the previous windows did not score (so each token is scored once), except the window's own
    first token, which has no context inside the window. Hence the first window scores all but its first
    token; with ``stride < context`` every token after the first is scored, each with at least
    ``context - stride`` tokens of context; with ``stride == context`` the windows are non-overlapping
    chunks, each scoring all but its first token; with ``stride == 1`` every token is conditioned on the
    ``context - 1`` tokens before it (all of them near the start). ``stride > context`` is refused (tokens
    would be skipped).

From text to tokens (:func:`tokenize_text`)
    The text is tokenized without the tokenizer's own special tokens; by default the BOS token (GPT-2:
    ``<|endoftext|>``, also used when only an EOS token exists) is put in front, so that *every* token of
    the text is scored and ``bpc`` / ``bpb`` divide by the characters / bytes of the whole text. Without a
    BOS the first token is context only, and its characters are not counted. Characters and bytes are
    attributed to tokens through the tokenizer's offsets (token ``i`` owns the characters after the end of
    token ``i - 1`` up to its own end), so that the counts of any set of scored tokens add up exactly.

Corpora (:func:`read_corpus`, read by :mod:`lorakit.data.corpora` and re-exported here), ``layout``:

``wikitext``
    WikiText-2/103 as released: a folder with ``wiki.{train,valid,test}.tokens`` (tokenised) or
    ``wiki.{...}.raw``, or ``{train,valid,test}.txt`` (e.g. the PyTorch examples copy); text kept as is.
    ``n_words`` follows the official token counts: whitespace-separated words plus one ``<eos>`` per line
    (WikiText-2 valid: 217,646), the denominator of word-level perplexity when the model's tokens are BPE.
``enwik8``
    The first 10^8 bytes of an English Wikipedia XML dump, one file ``enwik8``; the standard split is by
    **byte offsets**: first 90M bytes train, next 5M valid, last 5M test. Bytes that are not valid UTF-8 on
    their own (a character cut by a split boundary) are kept as one character each (``surrogateescape``;
    the tokenizer sees U+FFFD) and still count as one byte each, so ``n_bytes`` is exactly the split size.
    The literature's "enwik8 bpc" is bits per byte: our ``bpb``.
``hutter``
    enwik9, the Hutter Prize file: the first 10^9 bytes of the same dump, one file ``enwik9``; read as
    enwik8, split by byte offsets 900M / 50M / 50M (lorakit's convention, enwik8's proportions).
``text8``
    The first 10^8 characters of cleaned Wikipedia text (one line of lowercase words, ``a-z`` and space),
    one file ``text8``; the standard split is by characters: 90M / 5M / 5M.
``text``
    Any UTF-8 text file (e.g. Tiny Shakespeare ``input.txt``), split by character fraction (default
    90% / 5% / 5%); a folder holding ``{split}.txt`` files uses those instead.

Every layout also accepts ``split="all"`` (the whole file).
"""

from __future__ import annotations

import functools
import inspect
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.data.corpora import (  # noqa: F401  (re-exported: the corpora's public names)
    ENWIK8_SPLIT,
    LAYOUTS,
    SPLITS,
    TEXT8_SPLIT,
    TEXT_SPLIT_FRACTION,
    Corpus,
    CorpusError,
    read_corpus,
    wikitext_word_count,
)

__all__ = [
    "LAYOUTS", "Corpus", "CorpusError", "read_corpus", "TokenizedText", "tokenize_text", "Window", "window_plan",
    "WindowNLL", "sliding_window_nll", "lm_metrics", "PseudoPerplexity", "pseudo_perplexity", "max_positions",
    "char_byte_lengths", "char_word_units", "ENWIK8_SPLIT", "TEXT8_SPLIT", "TEXT_SPLIT_FRACTION",
]

LN2 = math.log(2.0)
# ======================================================================================================
# Per-character statistics and tokenization with exact character/byte attribution
# ======================================================================================================

def _codepoints(text: str) -> np.ndarray:
    """``(len(text),)`` uint32 code points (lone surrogates kept)."""
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype="<u4")


def char_byte_lengths(text: str) -> np.ndarray:
    """``(len(text),)`` int64: UTF-8 bytes of each character; an escaped byte (U+DC80..U+DCFF) counts 1."""
    cp = _codepoints(text).astype(np.int64)
    out = np.where(cp < 0x80, 1, np.where(cp < 0x800, 2, np.where(cp < 0x10000, 3, 4)))
    out[(cp >= 0xDC80) & (cp <= 0xDCFF)] = 1
    return out.astype(np.int64)


@functools.lru_cache(maxsize=1)
def _whitespace_codepoints() -> np.ndarray:
    return np.array([c for c in range(0x110000) if chr(c).isspace()], dtype=np.uint32)


def char_word_units(text: str) -> np.ndarray:
    """``(len(text),)`` int64 summing to :func:`wikitext_word_count`: 1 at the first character of each
    whitespace-separated word, +1 at each newline (and at the last character if it is not one)."""
    if not text:
        return np.zeros(0, dtype=np.int64)
    cp = _codepoints(text)
    ws = np.isin(cp, _whitespace_codepoints())
    starts = ~ws
    starts[1:] &= ws[:-1]
    units = starts.astype(np.int64) + (cp == 0x0A)
    if cp[-1] != 0x0A:
        units[-1] += 1
    return units


@dataclass
class TokenizedText:
    """Token ids of a text with the characters/bytes/words each token accounts for.

    ``ids``: ``(n,)`` int64. ``n_chars``, ``n_bytes``: ``(n,)`` int64 or None (not asked for);
    ``n_words``: ``(n,)`` int64 (WikiText word units) or None. A prepended BOS owns nothing.
    """

    ids: Tensor
    n_chars: Tensor | None = None
    n_bytes: Tensor | None = None
    n_words: Tensor | None = None
    bos: bool = False

    def __len__(self) -> int:
        return int(self.ids.numel())


_ESCAPED = re.compile("[\udc80-\udcff]")
_CUT_LINE = re.compile(r"\n(?=\S)")  # cut after the newline
_CUT_WORD = re.compile(r"(?<=\S) (?=\S)")  # cut before the single space


def _pieces(text: str, chunk_chars: int) -> list[tuple[int, str]]:
    """``(start, piece)``s of ``text``, each at most about ``2 * chunk_chars`` long, cut after a newline that
    is followed by a non-space, else before a single space between two non-spaces (both are pre-token
    boundaries of byte-level BPE), else anywhere."""
    out, start = [], 0
    while len(text) - start > 2 * chunk_chars:
        lo, hi = start + chunk_chars, start + 2 * chunk_chars
        m = _CUT_LINE.search(text, lo, hi)
        cut = m.end() if m else None
        if cut is None:
            m = _CUT_WORD.search(text, lo, hi)
            cut = m.start() if m else hi
        out.append((start, text[start:cut]))
        start = cut
    out.append((start, text[start:]))
    return out


def tokenize_text(tokenizer: Any, text: str, *, add_bos: bool = True, counts: bool = True,
                  word_units: bool = False, chunk_chars: int = 1_000_000) -> TokenizedText:
    """Tokenize ``text`` (no special tokens of the tokenizer's own) and, with ``counts``, attribute its
    characters and UTF-8 bytes (and WikiText word units with ``word_units``) to the tokens.

    ``add_bos`` prepends ``tokenizer.bos_token_id`` (else its ``eos_token_id``; none: nothing). Long texts
    are tokenized in pieces of ``chunk_chars`` to ``2 * chunk_chars`` characters, cut after a newline
    followed by a non-space, else before a single space between words: for byte-level BPE tokenizers
    (GPT-2) both are pre-token boundaries, so the ids are those of one call; sentencepiece tokenizers may
    differ at the cuts. Counts need a fast tokenizer (offsets).
    """
    safe = _ESCAPED.sub("\ufffd", text)  # same length: offsets still index ``text``
    ids: list[int] = []
    ends: list[int] = []
    for start, piece in _pieces(safe, max(1, int(chunk_chars))):
        enc = tokenizer(piece, add_special_tokens=False, return_offsets_mapping=counts, verbose=False)
        ids.extend(enc["input_ids"])
        if counts:
            ends.extend(start + int(e) for _, e in enc["offset_mapping"])
    bos_id = None
    if add_bos:
        bos_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    prefix = [] if bos_id is None else [int(bos_id)]
    out = TokenizedText(torch.tensor(prefix + ids, dtype=torch.long), bos=bool(prefix))
    if not counts:
        return out
    if ids and not ends:
        raise ValueError("character/byte counts need token offsets: use a fast tokenizer (use_fast=True)")
    bounds = np.maximum.accumulate(np.asarray(ends, dtype=np.int64)) if ends else np.zeros(0, np.int64)
    if len(bounds):
        bounds[-1] = len(text)  # trailing characters no token covers belong to the last token
    bounds = np.clip(bounds, 0, len(text))
    edges = np.concatenate([[0], bounds])

    def per_token(per_char: np.ndarray) -> Tensor:
        cum = np.concatenate([[0], np.cumsum(per_char, dtype=np.int64)])
        vals = cum[edges[1:]] - cum[edges[:-1]]
        return torch.tensor(np.concatenate([np.zeros(len(prefix), np.int64), vals]), dtype=torch.long)

    out.n_chars = torch.tensor(np.concatenate([np.zeros(len(prefix), np.int64), np.diff(edges)]),
                               dtype=torch.long)
    out.n_bytes = per_token(char_byte_lengths(text))
    if word_units:
        out.n_words = per_token(char_word_units(text))
    return out


# ======================================================================================================
# Strided causal-LM negative log-likelihood
# ======================================================================================================

class Window(NamedTuple):
    """Tokens ``[begin, end)`` go through the model; targets ``[score_from, end)`` are scored."""

    begin: int
    end: int
    score_from: int


def window_plan(n: int, context: int, stride: int) -> list[Window]:
    """The windows of strided evaluation over ``n`` tokens (see the module docstring)."""
    if context < 2:
        raise ValueError(f"context must be >= 2 tokens, got {context}")
    if not 1 <= stride <= context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride} (a larger stride skips tokens)")
    windows: list[Window] = []
    scored_to = 0
    begin = 0
    while True:
        end = min(begin + context, n)
        start = max(scored_to, begin + 1)
        if end > start:
            windows.append(Window(begin, end, start))
        scored_to = max(scored_to, end)
        if end >= n:
            return windows
        begin += stride


def max_positions(model: nn.Module) -> int | None:
    """The longest input the model's position embeddings allow (None if it does not say)."""
    cfg = getattr(model, "config", None)
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_seq_len"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            if key == "max_position_embeddings" and "roberta" in str(getattr(cfg, "model_type", "")):
                return value - int(getattr(cfg, "pad_token_id", 1) or 1) - 1  # positions start after padding
            return value
    return None


def _accepts_logits_to_keep(model: nn.Module) -> bool:
    try:
        return "logits_to_keep" in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _logits(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None,
            keep: int | None = None) -> Tensor:
    """``(batch, seq, vocab)`` logits; with ``keep``, only those of the last ``keep`` positions (computed
    only for them when the model takes ``logits_to_keep``, as Hugging Face causal LMs do)."""
    kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    if keep is not None and _accepts_logits_to_keep(model):
        kwargs["logits_to_keep"] = keep
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
    return logits if keep is None else logits[:, -keep:]


class WindowNLL(NamedTuple):
    """Result of :func:`sliding_window_nll`: ``total_nll`` (nats, float64 sum), ``n_tokens`` scored, and
    ``token_nll`` ``(n,)`` float64 per-token NLL in nats (NaN where a token was not scored)."""

    total_nll: float
    n_tokens: int
    token_nll: Tensor


def _progress_bar(progress: bool | Callable | None, total: int, desc: str):
    if callable(progress):
        return progress(total=total)
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="tok", unit_scale=True, dynamic_ncols=True, disable=not progress)


@torch.no_grad()
def sliding_window_nll(model: nn.Module, token_ids: Tensor | Sequence[int], *, context: int, stride: int,
                       batch_size: int = 8, device: str | torch.device | None = None,
                       progress: bool | Callable | None = False) -> WindowNLL:
    """Strided evaluation of a causal LM on ``token_ids`` ``(n,)`` (see the module docstring).

    ``model(input_ids=(batch, seq))`` must return logits ``(batch, seq, vocab)`` (or an object with
    ``.logits``). Windows of equal length are batched ``batch_size`` at a time, without padding; the
    log-softmax is taken in float32, sums in float64. ``progress`` shows a tqdm bar over scored tokens (or
    is a factory ``f(total=...)`` of such a bar). Raises ``ValueError`` for fewer than 2 tokens, a bad
    stride, or a context longer than the model's position embeddings.
    """
    ids = torch.as_tensor(token_ids, dtype=torch.long).reshape(-1)
    n = int(ids.numel())
    if n < 2:
        raise ValueError(f"need at least 2 tokens to score one, got {n}")
    limit = max_positions(model)
    if limit is not None and context > limit:
        raise ValueError(f"context {context} exceeds the model's {limit} positions")
    if device is None:
        device = next(iter(model.parameters())).device
    plan = window_plan(n, context, stride)
    token_nll = torch.full((n,), float("nan"), dtype=torch.float64)
    groups: dict[int, list[Window]] = {}
    for w in plan:
        groups.setdefault(w.end - w.begin, []).append(w)
    bar = _progress_bar(progress, sum(w.end - w.score_from for w in plan), "nll")
    try:
        for length, windows in groups.items():
            for i in range(0, len(windows), batch_size):
                chunk = windows[i:i + batch_size]
                batch = torch.stack([ids[w.begin:w.end] for w in chunk]).to(device)  # (b, length)
                first = min(w.score_from - w.begin for w in chunk)  # earliest local target
                keep = length - first + 1  # logits of positions first - 1 .. length - 1
                logits = _logits(model, batch, keep=keep).float()  # (b, keep, vocab)
                targets = torch.full((len(chunk), keep), -100, dtype=torch.long, device=batch.device)
                targets[:, :-1] = batch[:, first:]  # position p predicts token p + 1; the last predicts nothing
                for r, w in enumerate(chunk):
                    targets[r, : w.score_from - w.begin - first] = -100
                nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=-100,
                                      reduction="none").view(len(chunk), keep)[:, :-1]
                nll = nll.double().cpu()
                for r, w in enumerate(chunk):
                    token_nll[w.score_from:w.end] = nll[r, w.score_from - w.begin - first:]
                bar.update(sum(w.end - w.score_from for w in chunk))
    finally:
        bar.close()
    scored = ~torch.isnan(token_nll)
    return WindowNLL(float(token_nll[scored].sum()), int(scored.sum()), token_nll)


# ======================================================================================================
# Metrics
# ======================================================================================================

def lm_metrics(total_nll_nats: float, n_tokens: int, n_chars: int | None = None, n_bytes: int | None = None,
               n_words: int | None = None) -> dict[str, float]:
    """Corpus metrics from a summed NLL (nats) and the counts of what was scored.

    ``nll_per_token`` (nats/token), ``ppl`` (= exp(nll_per_token)), and when the counts are given:
    ``bpc`` (bits per character = total / ln 2 / n_chars), ``bpb`` (bits per UTF-8 byte), ``word_ppl``
    (exp(total / n_words)). A count of 0 gives NaN; a count of None leaves its metric out.
    """
    total = float(total_nll_nats)

    def ratio(count: int | None) -> float:
        return total / count if count else float("nan")

    def exp(x: float) -> float:
        return math.exp(x) if x < 709.0 else float("inf")  # past float64's range

    out = {"nll_per_token": ratio(n_tokens)}
    out["ppl"] = exp(out["nll_per_token"])
    if n_chars is not None:
        out["bpc"] = ratio(n_chars) / LN2
    if n_bytes is not None:
        out["bpb"] = ratio(n_bytes) / LN2
    if n_words is not None:
        out["word_ppl"] = exp(ratio(n_words))
    return out


# ======================================================================================================
# Masked-LM pseudo-perplexity
# ======================================================================================================

class PseudoPerplexity(NamedTuple):
    """``pppl = exp(-pll / n_tokens)``; ``pll``: pseudo-log-likelihood, nats (<= 0); ``token_logprob``:
    ``(n,)`` float64 log P(token | all other tokens of its window)."""

    pppl: float
    pll: float
    n_tokens: int
    token_logprob: Tensor


def mlm_windows(n: int, width: int, stride: int) -> list[tuple[int, int, int, int]]:
    """``(begin, end, score_from, score_to)`` per window of ``width`` content tokens, ``stride`` apart;
    each token is scored once, in the window where it sits ``(width - stride) // 2`` tokens or more from
    both window edges (except at the ends of the text)."""
    if not 1 <= stride <= width:
        raise ValueError(f"stride must be in [1, {width}] (the content tokens per window), got {stride}")
    margin = (width - stride) // 2
    out, begin = [], 0
    while True:
        end = min(begin + width, n)
        start = 0 if begin == 0 else begin + margin
        last = end >= n
        stop = n if last else begin + stride + margin
        out.append((begin, end, start, stop))
        if last:
            return out
        begin += stride


def special_template(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer puts before and after one sequence (BERT: [CLS] / [SEP])."""
    probe = tokenizer("a", add_special_tokens=True, return_special_tokens_mask=True)
    ids, special = list(probe["input_ids"]), list(probe["special_tokens_mask"])
    content = [i for i, s in enumerate(special) if not s]
    if not content:
        raise ValueError("could not locate the content among the tokenizer's special tokens")
    return ids[: content[0]], ids[content[-1] + 1:]


@torch.no_grad()
def pseudo_perplexity(mlm_model: nn.Module, tokenizer: Any, text_or_ids: str | Sequence[int] | Tensor, *,
                      max_length: int = 512, stride: int | None = None, batch_size: int = 32,
                      device: str | torch.device | None = None,
                      progress: bool | Callable | None = False) -> PseudoPerplexity:
    """Masked-LM pseudo-perplexity (Salazar et al., 2020): each token is replaced by the mask token in
    turn, and scored by the model given all the others.

    ``text_or_ids``: a text (tokenized without special tokens) or content ids ``(n,)``. The content is cut
    into windows of ``max_length`` tokens *including* the model's special tokens ([CLS] ... [SEP]), advanced
    by ``stride`` content tokens (default: non-overlapping); see :func:`mlm_windows`. One forward pass per
    token, ``batch_size`` masked copies at a time. Special tokens are never scored.
    """
    if isinstance(text_or_ids, str):
        ids = tokenize_text(tokenizer, text_or_ids, add_bos=False, counts=False).ids
    else:
        ids = torch.as_tensor(text_or_ids, dtype=torch.long).reshape(-1)
    n = int(ids.numel())
    if n < 1:
        raise ValueError("nothing to score: the text has no tokens")
    if tokenizer.mask_token_id is None:
        raise ValueError("the tokenizer has no mask token: pseudo-perplexity needs a masked LM")
    limit = max_positions(mlm_model)
    if limit is not None and max_length > limit:
        raise ValueError(f"max_length {max_length} exceeds the model's {limit} positions")
    width = max_length - len(sum(special_template(tokenizer), []))
    if width < 1:
        raise ValueError(f"max_length {max_length} leaves no room for content between the special tokens")
    if device is None:
        device = next(iter(mlm_model.parameters())).device
    prefix, suffix = special_template(tokenizer)
    logprob = torch.full((n,), float("nan"), dtype=torch.float64)
    bar = _progress_bar(progress, n, "pppl")
    try:
        for begin, end, start, stop in mlm_windows(n, width, stride or width):
            full_t = torch.tensor(prefix + ids[begin:end].tolist() + suffix, dtype=torch.long)
            todo = list(range(start - begin, stop - begin))  # content offsets to score
            for i in range(0, len(todo), batch_size):
                part = todo[i:i + batch_size]
                rows = full_t.repeat(len(part), 1)  # (b, len(full))
                where = torch.tensor([len(prefix) + k for k in part])
                rows[torch.arange(len(part)), where] = tokenizer.mask_token_id
                rows = rows.to(device)
                logits = _logits(mlm_model, rows, torch.ones_like(rows))  # (b, seq, vocab)
                picked = logits[torch.arange(len(part), device=device), where.to(device)].float()  # (b, vocab)
                lp = picked.log_softmax(-1).gather(1, ids[[begin + k for k in part]].to(device)[:, None])
                logprob[[begin + k for k in part]] = lp[:, 0].double().cpu()
                bar.update(len(part))
    finally:
        bar.close()
    pll = float(logprob.sum())
    return PseudoPerplexity(math.exp(-pll / n), pll, n, logprob)
