"""Causal language-model fine-tuning tasks on plain-text corpora: ``wikitext``, ``wikitext103``, ``enwik8``,
``hutter`` (enwik9), ``text8``, ``text``.

The corpus layouts (files, standard splits, what is counted) are those of :mod:`lorakit.metrics.lm`.
The data folder (``data.dir``) holds the corpus; ``split`` is ``train``, ``valid`` (alias ``dev``, the
loop's default eval split) or ``test``.

Items (``encode``):

* training (``training=True``): the tokenized split cut into consecutive blocks of ``cfg.max_length``
  tokens (a last shorter block is kept if it has 2 tokens or more); every token after a block's first is a
  target.
* evaluation: the windows of strided evaluation (:func:`~lorakit.metrics.lm.window_plan`) over the
  split with a BOS token in front (``add_bos``), ``context = cfg.max_length`` and ``stride`` (constructor
  option, else ``cfg.stride`` if the config has one, else ``max_length // 2``). Each item knows the number of
  tokens, characters, UTF-8 bytes (and WikiText words) its scored targets account for, so ``predict`` on
  every item followed by ``metrics`` gives exactly the corpus-level numbers of
  :func:`~lorakit.metrics.lm.sliding_window_nll` on the same text.

The model (``model_kind = "causal_lm"``) maps ``input_ids``, ``attention_mask`` ``(batch, seq)`` to
``.logits`` ``(batch, seq, vocab)``. All metrics are lower-is-better (``lower_is_better`` lists them all).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.data.corpora import CorpusError, read_corpus
from lorakit.metrics.lm import lm_metrics, tokenize_text, window_plan

from ..batches import TokenLoss
from .base import DataError, pad, register_task

__all__ = ["LM_TASKS", "LMTask", "LMTaskSpec", "Segment", "get_lm_task"]


@dataclass(frozen=True)
class LMTaskSpec:
    name: str
    layout: str
    main_metric: str
    words: bool = False  # report word_ppl (WikiText's word counts)


LM_TASKS: dict[str, LMTaskSpec] = {
    "wikitext": LMTaskSpec("wikitext", "wikitext", "ppl", words=True),
    "wikitext103": LMTaskSpec("wikitext103", "wikitext", "ppl", words=True),
    "enwik8": LMTaskSpec("enwik8", "enwik8", "bpb"),
    "hutter": LMTaskSpec("hutter", "hutter", "bpb"),
    "text8": LMTaskSpec("text8", "text8", "bpc"),
    "text": LMTaskSpec("text", "text", "bpc"),
}


@dataclass(frozen=True)
class Segment:
    """A consecutive piece of a split (a line, or 10,000 characters of a one-line corpus); ``load`` returns
    them in order, so ``data.max_*_examples`` keeps a prefix of the split."""

    text: str
    source: str = ""


_PIECE = 10_000


class LMTask(TokenLoss):
    """Causal-LM fine-tuning and strided evaluation on one corpus layout."""

    model_kind = "causal_lm"
    num_labels = 0

    def __init__(self, spec: LMTaskSpec, label_smoothing: float = 0.0, stride: int | None = None,
                 add_bos: bool = True, split_sizes: Sequence[int] | None = None,
                 split_fraction: Sequence[float] | None = None):
        self.spec = spec
        self.name = spec.name
        self.main_metric = spec.main_metric
        self.label_smoothing = float(label_smoothing)
        if stride is not None and int(stride) < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = None if stride is None else int(stride)
        self.add_bos = bool(add_bos)
        self.split_sizes = split_sizes
        self.split_fraction = split_fraction
        self.pad_id = 0

    @property
    def metric_names(self) -> list[str]:
        """What ``metrics`` reports."""
        return ["nll_per_token", "ppl", "bpc", "bpb"] + (["word_ppl"] if self.spec.words else [])

    @property
    def lower_is_better(self) -> list[str]:
        """Every metric: a mean NLL, perplexities and bits per character / byte all fall as the model improves."""
        return self.metric_names

    # -- load --------------------------------------------------------------------------------------
    def load(self, split: str, data_dir: str | Path) -> list[Segment]:
        """The split as consecutive segments (lines; 10,000-character pieces for a line longer than that)."""
        try:
            corpus = read_corpus(data_dir, self.spec.layout, split, split_sizes=self.split_sizes,
                                 split_fraction=self.split_fraction)
        except CorpusError as exc:
            raise DataError(str(exc)) from None
        if not corpus.text.strip():
            raise DataError(f"{corpus.source}: the {split} split is empty")
        segments = []
        for i, line in enumerate(corpus.text.splitlines(keepends=True), start=1):
            for k in range(0, len(line), _PIECE):
                segments.append(Segment(line[k:k + _PIECE], f"{corpus.source}:{i}"))
        return segments

    # -- encode / collate --------------------------------------------------------------------------
    def encode(self, examples: Sequence[Segment], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Training blocks (``training=True``) or evaluation windows; see the module docstring.

        Training item: ``{"input_ids": (len,) int64 tensor, "label": None}``. Evaluation item:
        ``{"input_ids": list[int], "score_from": int, "label": (n_tokens, n_chars, n_bytes, n_words)}`` where
        ``score_from`` is the first scored position inside the window and the label counts what the
        scored targets cover (``n_words`` is 0 unless the task reports word perplexity).
        """
        text = "".join(seg.text for seg in examples)
        if not text:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self.pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if t is not None), 0)
        length = int(getattr(cfg, "max_length", 512))
        if length < 2:
            raise DataError(f"task {self.name}: max_length must be >= 2 tokens, got {length}")
        if training:
            ids = tokenize_text(tokenizer, text, add_bos=False, counts=False).ids
            blocks = [ids[i:i + length].clone() for i in range(0, len(ids), length)]
            items = [{"input_ids": b, "label": None} for b in blocks if len(b) >= 2]
            if not items:
                raise DataError(f"task {self.name}: the text has fewer than 2 tokens")
            return items
        tok = tokenize_text(tokenizer, text, add_bos=self.add_bos, counts=True, word_units=self.spec.words)
        if len(tok) < 2:
            raise DataError(f"task {self.name}: the text has fewer than 2 tokens")
        stride = self.stride or getattr(cfg, "stride", None) or max(1, length // 2)
        stride = min(int(stride), length)
        ids = tok.ids.tolist()
        cum = {k: torch.cat([torch.zeros(1, dtype=torch.long), v.cumsum(0)])
               for k, v in (("c", tok.n_chars), ("b", tok.n_bytes), ("w", tok.n_words)) if v is not None}

        def span(key: str, a: int, b: int) -> int:
            return int(cum[key][b] - cum[key][a]) if key in cum else 0

        return [
            {"input_ids": ids[w.begin:w.end], "score_from": w.score_from - w.begin,
             "label": (w.end - w.score_from, span("c", w.score_from, w.end), span("b", w.score_from, w.end),
                       span("w", w.score_from, w.end))}
            for w in window_plan(len(ids), length, stride)
        ]

    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Right-pad to the longest item: ``input_ids``, ``attention_mask``, ``labels`` ``(batch, seq)`` int64
        (``labels`` = the token ids, -100 where not scored: padding and, in evaluation windows, the context
        before ``score_from``). Evaluation batches also carry ``n_tokens``, ``n_chars``, ``n_bytes``,
        ``n_words`` ``(batch,)``. ``max_length`` cuts training blocks (random sequence length); evaluation
        windows are never cut."""
        seqs = []
        for it in items:
            ids = torch.as_tensor(it["input_ids"], dtype=torch.long)
            if max_length is not None and "score_from" not in it:
                ids = ids[:max_length]
            seqs.append(ids)
        input_ids, attention_mask = pad(seqs, self.pad_id), pad([[1] * len(s) for s in seqs], 0)
        # labels: the token ids where scored; -100 before score_from (the first token predicts nothing), padding
        firsts = [min(int(it.get("score_from", 1)), len(s)) for s, it in zip(seqs, items, strict=True)]
        labels = pad([torch.cat([torch.full((f,), -100, dtype=torch.long), s[f:]])
                      for s, f in zip(seqs, firsts, strict=True)], -100)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        if all("score_from" in it for it in items):
            counts = torch.tensor([list(it["label"]) for it in items], dtype=torch.long)  # (batch, 4)
            for k, key in enumerate(("n_tokens", "n_chars", "n_bytes", "n_words")):
                batch[key] = counts[:, k]
        return batch

    # -- loss / predict ------------------------------------------------------------------------------
    @staticmethod
    def _logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.logits if hasattr(out, "logits") else out  # (batch, seq, vocab)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> list[tuple[float, int, int, int, int]]:
        """Per item ``(nll_sum_nats, n_tokens, n_chars, n_bytes, n_words)`` of its scored targets (no label
        smoothing; float32 log-softmax, float64 sum)."""
        logits = self._logits(model, batch)
        labels = batch["labels"]
        out = []
        for i in range(labels.shape[0]):  # one row at a time: the float32 copy of the logits stays small
            nll = F.cross_entropy(logits[i, :-1].float(), labels[i, 1:], ignore_index=-100, reduction="sum")
            n_tok = int((labels[i, 1:] != -100).sum())
            counts = [int(batch[k][i]) if k in batch else 0 for k in ("n_chars", "n_bytes", "n_words")]
            out.append((float(nll.double()), n_tok, *counts))
        return out

    # -- metrics -----------------------------------------------------------------------------------
    def metrics(self, predictions: Sequence[Any], references: Sequence[Any] | None = None) -> dict[str, float]:
        """Corpus metrics (:func:`~lorakit.metrics.lm.lm_metrics`) of the summed item predictions.

        A prediction is a ``predict`` tuple, or a bare NLL sum whose counts are then read from the
        reference (a label tuple ``(n_tokens, n_chars, n_bytes, n_words)``, or a token count). Keys:
        ``nll_per_token``, ``ppl``, ``bpc``, ``bpb`` (and ``word_ppl`` for wikitext); NaN when a count is 0.
        """
        refs = list(references) if references is not None else [None] * len(predictions)
        total, counts = 0.0, [0, 0, 0, 0]
        for p, r in zip(predictions, refs, strict=True):
            if isinstance(p, (tuple, list)):
                total += float(p[0])
                row = list(p[1:5])
            else:
                total += float(p)
                row = list(r) if isinstance(r, (tuple, list)) else [1 if r is None else int(r), 0, 0, 0]
            for k in range(4):
                counts[k] += int(row[k]) if k < len(row) else 0
        n_tok, n_chars, n_bytes, n_words = counts
        return lm_metrics(total, n_tok, n_chars, n_bytes, n_words if self.spec.words else None)


def get_lm_task(name: str, label_smoothing: float = 0.0, **options: Any) -> LMTask:
    """An LM task by name: ``wikitext``, ``wikitext103``, ``enwik8``, ``hutter``, ``text8``, ``text``. Options:
    ``stride`` (evaluation windows, tokens), ``add_bos``, ``split_sizes`` (enwik8 bytes / text8 characters),
    ``split_fraction`` (text)."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"wikitext2": "wikitext", "enwik9": "hutter", "tinyshakespeare": "text",
           "shakespeare": "text"}.get(key, key)
    if key not in LM_TASKS:
        raise ValueError(f"unknown LM task {name!r}; known: {', '.join(LM_TASKS)}")
    return LMTask(LM_TASKS[key], label_smoothing=label_smoothing, **options)


for _name in LM_TASKS:
    register_task(_name, functools.partial(get_lm_task, _name), config_options=lambda cfg: {"stride": cfg.data.stride})
