"""Natural Questions (short answers) as span extraction, on the SQuAD task's machinery.

Data: the simplified JSONL release, one example per line (``{"example_id", "question_text", "document_text":
whitespace-separated tokens, "document_url", "long_answer_candidates", "annotations": [{"yes_no_answer",
"long_answer", "short_answers": [{"start_token", "end_token"}]}]}``; token spans are ``[start, end)`` indices
into ``document_text.split(" ")``). Lines in the original format (``document_tokens`` instead of
``document_text``, e.g. ``nq-dev-00.jsonl.gz``) are simplified on the way as the NQ repository's
``simplify_nq_example`` does (a token's spaces become ``_``; its ``html_token`` flag marks markup). Files, gzipped
or not, are found as ``DIR/{split}.jsonl``, ``DIR/simplified-nq-{split}.jsonl``, ``DIR/nq-{split}-all.jsonl`` or the
shards ``DIR/nq-{split}-NN.jsonl`` (each also ``.jsonl.gz``); ``DIR`` may also be the parent of ``nq/`` or of
``{split}/``.

Conversion: the context is the document's tokens joined by single spaces, without the HTML markup tokens
(``<P>``, ``</Table>`` ...; kept with ``data.keep_html``); each kept token's character offset is known, so a
short answer span becomes a SQuAD answer (text and ``answer_start``) and a predicted character span maps back to
document tokens. Training targets the first short answer span of the first annotation that has one; an
example without a short answer span (including yes/no answers, which a span head cannot give) is a no-answer
example, as in SQuAD v2.0. Windows, the span head, the loss and the post-processing (best span of at most
``data.max_answer_length`` tokens, no answer when the [CLS] score wins) are :class:`SquadTask`'s.

Metric: :func:`lorakit.metrics.qa.nq_short_answer_scores`, the official short-answer evaluation (a
prediction is correct when its token span equals one annotator's span set; gold non-null when at least 2 of
the 5 dev annotators gave a short answer, or the single annotation of a train-format file does): ``f1``
(main), ``precision``, ``recall``, as fractions.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from array import array
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import DataError, register_task
from .squad import QAExample, SpanPrediction, SquadTask

__all__ = ["NQExample", "NQTask", "nq_context"]

_LAYOUT = ('{"example_id": ..., "question_text": ..., "document_text": "tok tok ...", "document_url": ..., '
           '"long_answer_candidates": [...], "annotations": [{"yes_no_answer": "NONE", "long_answer": {...}, '
           '"short_answers": [{"start_token": ..., "end_token": ...}]}]}')
_HTML = re.compile(r"</?[A-Za-z][A-Za-z0-9]*>")  # <P>, </Table>, <H1>, <Br> ... as they appear in document_text


@dataclass(frozen=True)
class NQExample(QAExample):
    """A SQuAD example built from an NQ example, plus what the NQ metric needs: every annotator's short
    answer (``NQAnnotation``) and the document index of each context token (``kept``)."""

    annotations: tuple = ()
    kept: Any = None  # array("i") of document token indices, one per context token


def nq_context(tokens: Sequence[str], is_html: Sequence[bool], keep_html: bool = False) -> tuple[str, array]:
    """The context (the kept tokens joined by single spaces) and the document index of each kept token. Empty
    tokens, and HTML tokens unless ``keep_html``, are dropped."""
    kept = array("i", (i for i, (t, h) in enumerate(zip(tokens, is_html, strict=True)) if t and (keep_html or not h)))
    return " ".join(tokens[i] for i in kept), kept


def _token_starts(context: str) -> list[int]:
    """Character offset of each context token (the context is tokens joined by single spaces)."""
    starts, pos = [], 0
    for token in context.split(" "):
        starts.append(pos)
        pos += len(token) + 1
    return starts


class NQTask(SquadTask):
    """Natural Questions short answers (task ``nq``) with SQuAD v2.0's windows, span head and no-answer rule."""

    main_metric = "f1"

    def __init__(self, name: str = "nq", label_smoothing: float = 0.0, keep_html: bool = False):
        super().__init__("squad_v2", label_smoothing=label_smoothing)  # v2.0: questions may have no answer
        self.name = name
        self.keep_html = bool(keep_html)
        self._gold: dict[str, tuple[tuple, Any]] = {}  # qid -> (annotations, kept document token indices)

    # -- load --------------------------------------------------------------------------------------
    def split_paths(self, split: str, data_dir: str | Path) -> list[Path]:
        """The JSONL file(s) of ``split``: one file, or every ``nq-{split}-NN`` shard in order."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"data folder not found: {data_dir} (pass --data DIR holding {split}.jsonl or "
                            f"simplified-nq-{split}.jsonl.gz)")
        for folder in (data_dir, data_dir / "nq", data_dir / split):
            for stem in (split, f"simplified-nq-{split}", f"nq-{split}-all"):
                for ext in (".jsonl", ".jsonl.gz"):
                    if (folder / f"{stem}{ext}").is_file():
                        return [folder / f"{stem}{ext}"]
            shards = sorted(p for p in folder.glob(f"nq-{split}-[0-9]*.jsonl*")
                            if p.is_file() and p.name.endswith((".jsonl", ".jsonl.gz")))
            if shards:
                return shards
        raise DataError(
            f"no {split}.jsonl (nor simplified-nq-{split}.jsonl, nq-{split}-all.jsonl, nq-{split}-NN.jsonl, each also "
            f".gz) for task {self.name!r} in {data_dir} (nor in {data_dir / 'nq'}, {data_dir / split}); expected the "
            f"Natural Questions JSONL release, one example per line: {_LAYOUT}")

    def load(self, split: str, data_dir: str | Path) -> list[NQExample]:
        """Read and convert one split; malformed lines and spans outside the document raise ``DataError``."""
        examples: list[NQExample] = []
        seen: set[str] = set()
        paths = self.split_paths(split, data_dir)
        for path in paths:
            for where, record in _read_jsonl(path, self.name):
                examples.append(self._convert(record, where, seen))
        if not examples:
            raise DataError(f"{', '.join(map(str, paths))}: no examples")
        return examples

    def _convert(self, record: Any, where: str, seen: set[str]) -> NQExample:
        if not isinstance(record, dict):
            raise DataError(f"{where}: a line must be one JSON object (expected {_LAYOUT})")
        qid, question = record.get("example_id"), record.get("question_text")
        if not isinstance(qid, (int, str)) or isinstance(qid, bool) or not isinstance(question, str):
            raise DataError(f"{where}: an example needs an \"example_id\" and a string \"question_text\" "
                            f"(expected {_LAYOUT})")
        qid = str(qid)
        if qid in seen:
            raise DataError(f"{where}: example id {qid} appears twice")
        seen.add(qid)
        tokens, is_html = _document(record, where, qid)
        annotations = _annotations(record, where, qid, len(tokens))
        context, kept = nq_context(tokens, is_html, self.keep_html)
        position = {index: k for k, index in enumerate(kept)}
        starts = _token_starts(context)
        texts, offsets = [], []
        for annotation in annotations:
            for start, end in annotation.short_answers[:1]:
                inside = [position[i] for i in range(start, end) if i in position]
                if not inside:
                    continue  # a span of markup tokens only: nothing to point at
                first, last = inside[0], inside[-1]
                begin, finish = starts[first], starts[last] + len(tokens[kept[last]])
                texts.append(context[begin:finish])
                offsets.append(begin)
        return NQExample(qid, question, context, tuple(texts), tuple(offsets), not texts, where,
                         annotations=tuple(annotations), kept=kept)

    # -- encode ------------------------------------------------------------------------------------
    def encode(self, examples: Sequence[NQExample], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """SQuAD windows (see :meth:`SquadTask.encode`); also remembers each example's gold annotations."""
        items = super().encode(examples, tokenizer, cfg, training=training)
        for e in examples:
            self._gold[e.qid] = (e.annotations, e.kept)
        return items

    # -- metrics -----------------------------------------------------------------------------------
    def token_span(self, qid: str, prediction: SpanPrediction) -> tuple[int, int]:
        """The document token span ``[start, end)`` of a predicted character span of question ``qid``'s context."""
        context = self._questions[qid][0]
        kept = self._gold[qid][1]
        starts = _token_starts(context)
        first = bisect_right(starts, prediction.start_char) - 1
        last = bisect_right(starts, max(prediction.end_char - 1, prediction.start_char)) - 1
        return int(kept[first]), int(kept[last]) + 1

    def metrics(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        """NQ short-answer ``f1``, ``precision``, ``recall`` (fractions) and counts; ``references`` are the windows'
        example ids. Placeholder predictions (the loop's probe of the metric names) give NaN values."""
        from lorakit.metrics.qa import nq_short_answer_scores

        if not predictions or not all(isinstance(p, SpanPrediction) for p in predictions):
            return {k: float("nan") for k in ("f1", "precision", "recall")}
        unknown = sorted({q for q in references if q not in self._gold})
        if unknown:
            raise DataError(f"task {self.name}: predictions for examples never encoded: {unknown[:3]}")
        spans = self.best_spans(predictions, references)
        predicted = {qid: None if p is None else self.token_span(qid, p) for qid, p in spans.items()}
        gold = {qid: self._gold[qid][0] for qid in predicted}
        return {k: float(v) for k, v in nq_short_answer_scores(gold, predicted).items()}


# ------------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------------

def _read_jsonl(path: Path, task: str) -> Iterator[tuple[str, Any]]:
    """``("file:line", parsed object)`` per non-blank line of a JSONL file (gzipped when it ends in ``.gz``)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except ValueError as err:
                    raise DataError(f"{path}:{lineno}: not JSON ({err}); task {task!r} expects one example per line "
                                    f"in the Natural Questions JSONL layout {_LAYOUT}") from None
                yield f"{path}:{lineno}", record
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read it ({err}); expected UTF-8 JSONL, gzipped for .gz names") from None


def _document(record: dict, where: str, qid: str) -> tuple[list[str], list[bool]]:
    """The document's tokens and which are HTML markup: simplified ``document_text`` or original
    ``document_tokens`` (``[{"token", "html_token", ...}]``)."""
    text = record.get("document_text")
    if isinstance(text, str):
        tokens = text.split(" ")
        return tokens, [bool(_HTML.fullmatch(t)) for t in tokens]
    raw = record.get("document_tokens")
    if isinstance(raw, list) and all(isinstance(t, dict) and isinstance(t.get("token"), str) for t in raw):
        return [t["token"].replace(" ", "_") for t in raw], [bool(t.get("html_token", False)) for t in raw]
    raise DataError(f"{where}: example {qid} has no string \"document_text\" (simplified layout) nor a "
                    f"\"document_tokens\" list (original layout); expected {_LAYOUT}")


def _annotations(record: dict, where: str, qid: str, n_tokens: int) -> list:
    """The example's annotations as ``NQAnnotation``s, every span checked against the document."""
    from lorakit.metrics.qa import NQAnnotation

    raw = record.get("annotations")
    if not isinstance(raw, list) or not raw:
        what = "no \"annotations\"" if "annotations" not in record else "an empty or malformed \"annotations\" list"
        raise DataError(f"{where}: example {qid} has {what}; only the train and dev files have answers (expected "
                        f"{_LAYOUT})")
    out = []
    for a, annotation in enumerate(raw):
        spans = annotation.get("short_answers", []) if isinstance(annotation, dict) else None
        yes_no = annotation.get("yes_no_answer", "NONE") if isinstance(annotation, dict) else None
        if not isinstance(spans, list) or not isinstance(yes_no, str) or yes_no.upper() not in ("NONE", "YES", "NO"):
            raise DataError(f"{where}: example {qid}: annotations[{a}] needs a \"short_answers\" list and a "
                            f"\"yes_no_answer\" of NONE, YES or NO (expected {_LAYOUT})")
        pairs = []
        for k, span in enumerate(spans):
            start = span.get("start_token") if isinstance(span, dict) else None
            end = span.get("end_token") if isinstance(span, dict) else None
            if not all(isinstance(x, int) and not isinstance(x, bool) for x in (start, end)):
                raise DataError(f"{where}: example {qid}: annotations[{a}].short_answers[{k}] needs integer "
                                "\"start_token\" and \"end_token\"")
            if not 0 <= start < end <= n_tokens:
                raise DataError(f"{where}: example {qid}: annotations[{a}].short_answers[{k}] covers tokens "
                                f"[{start}, {end}), outside the document's {n_tokens} tokens (a span is [start, end) "
                                "with 0 <= start < end <= the number of tokens of document_text)")
            pairs.append((start, end))
        out.append(NQAnnotation(tuple(pairs), yes_no.upper()))
    return out


register_task("nq", functools.partial(NQTask, "nq"), config_options=lambda cfg: {"keep_html": cfg.data.keep_html})
