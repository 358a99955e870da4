"""SQuAD v1.1 and v2.0: extractive question answering with a span head.

Data: the official JSON files (``{"version", "data": [{"title", "paragraphs": [{"context", "qas": [{"id",
"question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``), found as
``DIR/{split}-v1.1.json`` (task ``squad``) or ``DIR/{split}-v2.0.json`` (task ``squad_v2``), or
``DIR/{split}.json``; ``DIR`` may also be the parent of a ``squad/`` folder.

Windows: a context longer than the window is cut into overlapping windows of ``data.max_length`` tokens
(``[CLS] question [SEP] context-piece [SEP]``), consecutive windows sharing ``data.doc_stride`` context
tokens (the windows of the Hugging Face tokenizer's ``stride`` overflow, cut by :func:`_windows`).
Questions longer than ``data.max_query_length`` tokens are cut to it (as in BERT's ``run_squad.py``);
``null`` keeps them whole, and a question that then leaves no room for context is refused.

Head: the loop's model with ``token_level=True`` gives ``(batch, seq, 2)`` logits from its ``classifier``
(a ``Linear(hidden, 2)``: start and end scores per token, like BERT's ``qa_outputs``). Training: the mean
of the start and end cross-entropies; a window that does not hold the whole answer, and an unanswerable
question (v2), point both at the first token ([CLS]).

Prediction: per window the best span with ``start <= end``, at most ``data.max_answer_length`` tokens, both
ends inside the context, scored ``start_logit + end_logit``; per question the best-scoring window wins.
v2.0 answers ``""`` (no answer) when the question's lowest [CLS] score (``start[0] + end[0]`` over its
windows) beats the best span (null-score threshold 0). Scored with ``lorakit.metrics.qa`` (the
official v1.1 / v2.0 rules, in percent); the main metric is ``f1``.
"""

from __future__ import annotations

import functools
import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DataError, Task, pad, register_task

__all__ = ["QAExample", "SpanPrediction", "SquadTask", "SQUAD_VERSIONS"]

# task name -> (version, file suffix)
SQUAD_VERSIONS: dict[str, tuple[str, str]] = {"squad": ("1.1", "v1.1"), "squad_v2": ("2.0", "v2.0")}

_LAYOUT = ('{"version": ..., "data": [{"title": ..., "paragraphs": [{"context": ..., "qas": [{"id": ..., '
           '"question": ..., "answers": [{"text": ..., "answer_start": ...}], "is_impossible": ...}]}]}]}')


def _windows(ids: list[int], types: list[int], offsets: list, sequence_ids: list, max_length: int,
             stride: int) -> list[tuple[list[int], list[int], list[tuple[int, int]]]]:
    """Cut one encoded (question, context) pair into windows of at most ``max_length`` tokens.

    Every window keeps the pair's tokens around the context (special tokens and the question: ``[CLS] q
    [SEP]`` and ``[SEP]`` for BERT) and holds the next piece of context; consecutive pieces share ``stride``
    tokens, the last piece ends with the context (the windows of Hugging Face's ``stride`` overflow).
    Returns ``(input_ids, token_type_ids, offsets)`` per window, offsets ``(-1, -1)`` outside the context.
    """
    context = [t for t, s in enumerate(sequence_ids) if s == 1]
    first, stop = (context[0], context[-1] + 1) if context else (len(ids), len(ids))
    room = max_length - (len(ids) - (stop - first))  # context tokens per window
    if context and room <= stride:
        raise ValueError(f"max_length={max_length} leaves {room} context tokens per window, not more than "
                         f"stride={stride}: the windows would not advance")
    outside = (-1, -1)
    windows, start = [], first
    while True:
        end = min(start + room, stop)
        window = slice(start, end)
        windows.append((ids[:first] + ids[window] + ids[stop:], types[:first] + types[window] + types[stop:],
                        [outside] * first + [tuple(o) for o in offsets[window]] + [outside] * (len(ids) - stop)))
        if end >= stop:
            return windows
        start = end - stride


@dataclass(frozen=True)
class QAExample:
    """One question about one context; ``answer_starts`` are character offsets into ``context``."""

    qid: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]
    is_impossible: bool
    source: str = ""  # "file: data[a].paragraphs[p].qas[q]", for messages


@dataclass(frozen=True)
class SpanPrediction:
    """The best span of one window: its score and character offsets in the context, and the window's
    no-answer ([CLS]) score. ``score`` is ``-inf`` when the window holds no valid span."""

    score: float
    start_char: int
    end_char: int
    null_score: float


class SquadTask(Task):
    """SQuAD v1.1 (``squad``) or v2.0 (``squad_v2``) with a token-level start/end head."""

    num_labels = 2  # the classifier maps each token to (start score, end score)
    main_metric = "f1"

    def __init__(self, name: str = "squad", label_smoothing: float = 0.0):
        if name not in SQUAD_VERSIONS:
            raise ValueError(f"unknown SQuAD task {name!r}; use one of {list(SQUAD_VERSIONS)}")
        self.name = name
        self.version, self.suffix = SQUAD_VERSIONS[name]
        self.label_smoothing = float(label_smoothing)
        self.pad_id = 0
        self.max_answer_length = 30
        # qid -> (context, gold answers, is_impossible): what the metrics need to turn spans into text
        self._questions: dict[str, tuple[str, tuple[str, ...], bool]] = {}

    # -- load --------------------------------------------------------------------------------------
    def split_path(self, split: str, data_dir: str | Path) -> Path:
        """The JSON file of ``split``: ``{split}-v1.1.json`` / ``{split}-v2.0.json`` or ``{split}.json``."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"data folder not found: {data_dir} (pass --data DIR holding {split}-{self.suffix}.json)")
        names = (f"{split}-{self.suffix}.json", f"{split}.json")
        for folder in (data_dir, data_dir / "squad"):
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        other = "v2.0" if self.suffix == "v1.1" else "v1.1"
        hint = ""
        if any((f / f"{split}-{other}.json").is_file() for f in (data_dir, data_dir / "squad")):
            hint = f" (found {split}-{other}.json: that is the other SQuAD version; use task " \
                   f"{'squad_v2' if other == 'v2.0' else 'squad'})"
        raise DataError(
            f"no {names[0]} (nor {names[1]}) for task {self.name!r} in {data_dir} (nor in {data_dir / 'squad'})"
            f"{hint}; expected the official SQuAD {self.version} layout: DIR/train-{self.suffix}.json and "
            f"DIR/dev-{self.suffix}.json"
        )

    def load(self, split: str, data_dir: str | Path) -> list[QAExample]:
        """Read and check one split: layout, version, and every answer's character offset."""
        path = self.split_path(split, data_dir)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise DataError(f"{path}: not JSON ({err}); task {self.name!r} expects the official SQuAD "
                            f"{self.version} JSON layout {_LAYOUT}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
            raise DataError(f"{path}: no top-level \"data\" list; task {self.name!r} expects the official SQuAD "
                            f"{self.version} JSON layout {_LAYOUT}")
        examples: list[QAExample] = []
        seen: set[str] = set()
        for a, article in enumerate(raw["data"]):
            for p, paragraph in enumerate(_list(article, "paragraphs", path, f"data[{a}]", self)):
                where_p = f"data[{a}].paragraphs[{p}]"
                context = paragraph.get("context") if isinstance(paragraph, dict) else None
                if not isinstance(context, str):
                    raise DataError(f"{path}: {where_p} has no string \"context\" (expected {_LAYOUT})")
                for q, qa in enumerate(_list(paragraph, "qas", path, where_p, self)):
                    examples.append(self._read_question(qa, context, path, f"{where_p}.qas[{q}]", seen))
        if not examples:
            raise DataError(f"{path}: no questions")
        return examples

    def _read_question(self, qa: Any, context: str, path: Path, where: str, seen: set[str]) -> QAExample:
        source = f"{path}: {where}"
        if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not isinstance(qa.get("question"), str):
            raise DataError(f"{source}: a question needs a string \"id\" and \"question\" (expected {_LAYOUT})")
        qid = qa["id"]
        if qid in seen:
            raise DataError(f"{source}: question id {qid!r} appears twice")
        seen.add(qid)
        impossible = bool(qa.get("is_impossible", False))
        if impossible and self.version == "1.1":
            raise DataError(f"{source}: question {qid!r} is marked is_impossible, which SQuAD v1.1 does not have; "
                            "this looks like a SQuAD v2.0 file: use task squad_v2")
        answers = qa.get("answers", [])
        if not isinstance(answers, list):
            raise DataError(f"{source}: \"answers\" must be a list")
        if not answers and not impossible:
            raise DataError(f"{source}: question {qid!r} has no answer and is not marked is_impossible")
        texts, starts = [], []
        for k, ans in enumerate(answers if not impossible else []):
            text = ans.get("text") if isinstance(ans, dict) else None
            start = ans.get("answer_start") if isinstance(ans, dict) else None
            if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
                raise DataError(f"{source}.answers[{k}]: needs a string \"text\" and an integer \"answer_start\"")
            found = context[start:start + len(text)] if 0 <= start else ""
            if found != text:
                near = context.find(text)
                where_else = f"; the text occurs at offset {near}" if near >= 0 else "; the text is not in the context"
                raise DataError(
                    f"{source}.answers[{k}] (question {qid!r}): answer_start {start} does not match the context: "
                    f"context[{start}:{start + len(text)}] is {found!r}, the answer text is {text!r}{where_else}. "
                    "Fix the offset (character index into \"context\") or drop the answer")
            texts.append(text)
            starts.append(start)
        return QAExample(qid, qa["question"], context, tuple(texts), tuple(starts), impossible, source)

    # -- encode / collate --------------------------------------------------------------------------
    def encode(self, examples: Sequence[QAExample], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Cut each (question, context) into windows; one item per window.

        Item: ``input_ids``, ``token_type_ids`` (lists), ``offsets`` (per token ``(start, end)`` character
        offsets into the context, ``(-1, -1)`` outside it), ``start``/``end`` (token targets, 0 = [CLS]) and
        ``label`` (the question id, what ``metrics`` receives as references).
        """
        if not examples:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        max_length = int(_opt(cfg, "max_length", 384))
        stride = int(_opt(cfg, "doc_stride", 128))
        max_query = _opt(cfg, "max_query_length", 64)
        self.max_answer_length = int(_opt(cfg, "max_answer_length", 30))
        questions = self._cut_questions([e.question.lstrip() for e in examples], tokenizer, max_query)
        special = tokenizer.num_special_tokens_to_add(pair=True)
        q_lens = [len(ids) for ids in tokenizer(questions, add_special_tokens=False)["input_ids"]]
        for e, n in zip(examples, q_lens, strict=True):
            room = max_length - n - special
            if room <= stride:
                raise DataError(
                    f"{e.source}: the question ({n} tokens) leaves {max(room, 0)} context tokens per window with "
                    f"data.max_length={max_length}, not more than data.doc_stride={stride}; raise data.max_length, "
                    f"lower data.doc_stride or set data.max_query_length (questions are cut to it)")
        # Each pair is encoded whole, then cut into windows here: the tokenizer's own overflow windows
        # (return_overflowing_tokens with stride) are not reliable across versions (transformers 5.17's BERT
        # tokenizer returns only the first two windows of a long context).
        enc = tokenizer(questions, [e.context for e in examples], return_offsets_mapping=True,
                        return_token_type_ids=True, verbose=False)
        items = []
        for i, e in enumerate(examples):
            for ids, types, offsets in _windows(enc["input_ids"][i], enc["token_type_ids"][i],
                                                enc["offset_mapping"][i], enc.sequence_ids(i), max_length, stride):
                start, end = self._targets(e, offsets)
                items.append({"input_ids": ids, "token_type_ids": types, "offsets": offsets,
                              "start": start, "end": end, "label": e.qid})
        for e in examples:
            self._questions[e.qid] = (e.context, e.answers, e.is_impossible)
        return items

    @staticmethod
    def _cut_questions(questions: list[str], tokenizer: Any, max_query: int | None) -> list[str]:
        """Cut questions longer than ``max_query`` tokens at the character end of their last kept token."""
        if max_query is None:
            return questions
        enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        out, cut = [], 0
        for q, offsets in zip(questions, enc["offset_mapping"], strict=True):
            if len(offsets) > max_query:
                q = q[:offsets[max_query - 1][1]]
                cut += 1
            out.append(q)
        if cut:
            warnings.warn(f"{cut} question(s) longer than data.max_query_length={max_query} tokens were cut to it",
                          stacklevel=3)
        return out

    @staticmethod
    def _targets(e: QAExample, offsets: list[tuple[int, int]]) -> tuple[int, int]:
        """Token indices of the first answer in this window, or (0, 0) when it is not wholly inside."""
        if e.is_impossible or not e.answers:
            return 0, 0
        a_start = e.answer_starts[0]
        a_end = a_start + len(e.answers[0])
        context = [t for t, o in enumerate(offsets) if o[0] >= 0]
        if not context or offsets[context[0]][0] > a_start or offsets[context[-1]][1] < a_end:
            return 0, 0
        start = next(t for t in context if offsets[t][1] > a_start)
        end = next(t for t in reversed(context) if offsets[t][0] < a_end)
        return (start, end) if start <= end else (0, 0)

    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Pad a batch: ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(batch, seq)``, ``offsets``
        ``(batch, seq, 2)`` (-1 outside the context), ``start_positions`` and ``end_positions`` ``(batch,)``.

        ``max_length`` (random sequence length) cuts each window, keeping its final special token; a target
        cut away becomes [CLS].
        """
        rows = []
        for it in items:
            ids, types, offs = it["input_ids"], it["token_type_ids"], it["offsets"]
            start, end = it["start"], it["end"]
            if max_length is not None and len(ids) > max_length:
                ids = ids[:max_length - 1] + ids[-1:]
                types = types[:max_length - 1] + types[-1:]
                offs = offs[:max_length - 1] + [(-1, -1)]
                if end >= max_length - 1:
                    start, end = 0, 0
            rows.append((ids, types, offs, start, end))
        input_ids, token_type_ids = pad([r[0] for r in rows], self.pad_id), pad([r[1] for r in rows], 0)
        attention_mask = pad([[1] * len(r[0]) for r in rows], 0)
        offsets = pad([r[2] for r in rows], -1)  # (batch, seq, 2)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                "offsets": offsets, "start_positions": torch.tensor([r[3] for r in rows]),
                "end_positions": torch.tensor([r[4] for r in rows])}

    # -- loss / predict ------------------------------------------------------------------------------
    @staticmethod
    def _logits(model: nn.Module, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Start and end logits ``(batch, seq)``, padding masked to a large negative number."""
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], token_level=True)
        logits = logits.float().masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, -1e4)  # (batch, seq, 2)
        return logits[..., 0], logits[..., 1]

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Mean of the start and end cross-entropies over the window's tokens."""
        start, end = self._logits(model, batch)
        ls = self.label_smoothing
        return 0.5 * (F.cross_entropy(start, batch["start_positions"], label_smoothing=ls)
                      + F.cross_entropy(end, batch["end_positions"], label_smoothing=ls))

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> list[SpanPrediction]:
        """One ``SpanPrediction`` per window (see the module docstring for the rules)."""
        start, end = self._logits(model, batch)
        start, end, offsets = start.cpu(), end.cpu(), batch["offsets"].cpu()
        seq = start.shape[1]
        valid = offsets[..., 0] >= 0  # (batch, seq): context tokens
        band = torch.ones(seq, seq, dtype=torch.bool).triu() & ~torch.ones(seq, seq, dtype=torch.bool).triu(
            self.max_answer_length)  # start <= end < start + max_answer_length
        scores = start.unsqueeze(2) + end.unsqueeze(1)  # (batch, start, end)
        allowed = band & valid.unsqueeze(2) & valid.unsqueeze(1)
        scores = scores.masked_fill(~allowed, -math.inf)
        best = scores.flatten(1).argmax(1)
        out = []
        for i in range(scores.shape[0]):
            s, e = divmod(int(best[i]), seq)
            score = float(scores[i, s, e])
            out.append(SpanPrediction(score, int(offsets[i, s, 0]), int(offsets[i, e, 1]),
                                      float(start[i, 0] + end[i, 0])))
        return out

    # -- metrics -----------------------------------------------------------------------------------
    def best_spans(self, predictions: Sequence[SpanPrediction],
                   question_ids: Sequence[str]) -> dict[str, SpanPrediction | None]:
        """Question id -> the best window's span, or ``None`` for no answer (no valid span; for v2.0 also when
        the question's lowest [CLS] score beats its best span)."""
        best: dict[str, SpanPrediction] = {}
        null: dict[str, float] = {}
        for p, qid in zip(predictions, question_ids, strict=True):
            if qid not in best or p.score > best[qid].score:
                best[qid] = p
            null[qid] = min(null.get(qid, math.inf), p.null_score)
        return {qid: None if not math.isfinite(p.score) or (self.version == "2.0" and null[qid] > p.score) else p
                for qid, p in best.items()}

    def answers(self, predictions: Sequence[SpanPrediction], question_ids: Sequence[str]) -> dict[str, str]:
        """Question id -> answer text: the best window's span; for v2.0 ``""`` when no-answer scores higher."""
        return {qid: "" if p is None else self._questions[qid][0][p.start_char:p.end_char]
                for qid, p in self.best_spans(predictions, question_ids).items()}

    def metrics(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        """Official SQuAD scores in percent: v1.1 ``exact_match``, ``f1``; v2.0 ``exact``, ``f1`` and the
        ``HasAns_*``/``NoAns_*`` breakdown. ``references`` are the windows' question ids (item ``label``).

        The loop first probes the metric names with placeholder numbers; those get NaN values.
        """
        from lorakit.metrics.qa import squad_v1_scores, squad_v2_scores

        if not predictions or not all(isinstance(p, SpanPrediction) for p in predictions):
            names = ("exact_match", "f1") if self.version == "1.1" else ("exact", "f1")
            return {k: float("nan") for k in names}
        unknown = sorted({q for q in references if q not in self._questions})
        if unknown:
            raise DataError(f"task {self.name}: predictions for questions never encoded: {unknown[:3]}")
        texts = self.answers(predictions, references)
        qas = [{"id": qid, "answers": [{"text": t} for t in self._questions[qid][1]],
                "is_impossible": self._questions[qid][2]} for qid in dict.fromkeys(references)]
        dataset = [{"paragraphs": [{"qas": qas}]}]
        scores = squad_v1_scores(dataset, texts) if self.version == "1.1" else squad_v2_scores(dataset, texts)
        return {k: float(v) for k, v in scores.items()}


def _opt(cfg: Any, key: str, default: Any) -> Any:
    """``cfg.key`` for a resolved config section or a plain dict/namespace, ``default`` when absent."""
    if isinstance(cfg, dict):
        return cfg.get(key, default)
    return getattr(cfg, key, default)


def _list(obj: Any, key: str, path: Path, where: str, task: SquadTask) -> list:
    value = obj.get(key) if isinstance(obj, dict) else None
    if not isinstance(value, list):
        raise DataError(f"{path}: {where} has no \"{key}\" list; task {task.name!r} expects the official SQuAD "
                        f"{task.version} JSON layout {_LAYOUT}")
    return value


for _name in SQUAD_VERSIONS:
    register_task(_name, functools.partial(SquadTask, _name))
