"""SuperGLUE: BoolQ, CB, COPA, RTE, WiC, WSC, MultiRC and ReCoRD from the official JSONL files.

Layout: ``DIR/train.jsonl`` and ``DIR/val.jsonl`` (split ``dev`` reads ``val.jsonl``; ``dev.jsonl`` is
accepted too), one JSON object per line, as in the SuperGLUE release; ``DIR`` may also be the SuperGLUE root
holding ``BoolQ/``, ``CB/``, ``COPA/``, ``RTE/``, ``WiC/``, ``WSC/``, ``MultiRC/``, ``ReCoRD/``.

Every task becomes sentence-pair inputs for the loop's encoder + linear head:

* classification (BoolQ ``question``/``passage``; CB and RTE ``premise``/``hypothesis``; WiC ``word:
  sentence1``/``sentence2``; WSC ``text``/``Does "span2" refer to "span1"?``): one pair, ``num_labels``
  classes.
* multiple choice (COPA): one pair per choice (``premise`` + "What was the cause?" / "What happened as a
  result?", ``choice``); the head gives one score per pair (``num_labels`` 1) and the softmax runs over
  the choices of an example.
* MultiRC: one binary pair per answer option (``question || answer``, ``passage``); scored per question
  with ``f1a`` (binary F1 over all options) and ``em`` (all options of a question right).
* ReCoRD: one binary pair per candidate entity (the query with ``@placeholder`` replaced by the entity,
  ``passage``); per query the highest-scoring candidate is the answer, scored with SQuAD-normalised
  ``em``/``f1`` against the gold entities.

``data.max_train_examples``/``max_eval_examples`` count these pairs (MultiRC answer options, ReCoRD
candidates), not passages. Metrics come from ``lorakit.metrics.classification`` (fractions).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .base import DataError, Task, cut_keep_last, pad, register_task

__all__ = ["SGExample", "SuperGlueSpec", "SUPERGLUE_SPECS", "SuperGlueTask", "CandidateScore"]


@dataclass(frozen=True)
class SGExample:
    """One unit the model sees: ``pairs`` (one ``(text_a, text_b)`` per choice; one pair for
    classification), ``target`` (class id or index of the right choice) and ``reference`` (what the
    metrics receive: the target, or ``(question key, target)`` for MultiRC, ``(query id, candidate,
    gold answers)`` for ReCoRD)."""

    pairs: tuple[tuple[str, str | None], ...]
    target: int
    reference: Any
    source: str = ""


@dataclass(frozen=True)
class CandidateScore:
    """A ReCoRD candidate's score (logit of "is the answer" minus logit of "is not")."""

    score: float


Reader = Callable[[dict, str], list[SGExample]]


@dataclass(frozen=True)
class SuperGlueSpec:
    name: str
    folder: str
    keys: tuple[str, ...]  # the keys every line must have (besides the label)
    reader: Reader
    num_labels: int  # 1: one score per choice (multiple choice)
    main_metric: str
    kind: str = "classify"  # classify | choice | multirc | record


def _label(row: dict, where: str, values: dict[Any, int]) -> int:
    if "label" not in row:
        raise DataError(f"{where}: no \"label\" (test files carry none: train on train.jsonl, evaluate on "
                        "val.jsonl)")
    raw = row["label"]
    key = raw if not isinstance(raw, bool) else bool(raw)
    for value, idx in values.items():
        if key == value and type(key) is type(value):
            return idx
    raise DataError(f"{where}: label {raw!r} is not one of {list(values)}")


_BOOL = {False: 0, True: 1}


def _classify(text_a: Callable[[dict], str], text_b: Callable[[dict], str | None],
              labels: dict[Any, int]) -> Reader:
    def read(row: dict, where: str) -> list[SGExample]:
        target = _label(row, where, labels)
        return [SGExample(((text_a(row), text_b(row)),), target, target, where)]
    return read


def _read_copa(row: dict, where: str) -> list[SGExample]:
    target = _label(row, where, {0: 0, 1: 1})
    if row["question"] not in ("cause", "effect"):
        raise DataError(f"{where}: COPA question {row['question']!r} is neither 'cause' nor 'effect'")
    ask = "What was the cause?" if row["question"] == "cause" else "What happened as a result?"
    first = f"{row['premise']} {ask}"
    return [SGExample(((first, row["choice1"]), (first, row["choice2"])), target, target, where)]


def _read_wsc(row: dict, where: str) -> list[SGExample]:
    target = _label(row, where, _BOOL)
    span = row["target"]
    if not isinstance(span, dict) or not {"span1_text", "span2_text"} <= set(span):
        raise DataError(f"{where}: \"target\" must hold span1_text and span2_text")
    return [SGExample(((row["text"], f'Does "{span["span2_text"]}" refer to "{span["span1_text"]}"?'),),
                      target, target, where)]


def _read_multirc(row: dict, where: str) -> list[SGExample]:
    passage = row["passage"]
    if not isinstance(passage, dict) or not isinstance(passage.get("text"), str) or \
            not isinstance(passage.get("questions"), list):
        raise DataError(f"{where}: \"passage\" must hold \"text\" and a \"questions\" list")
    out = []
    for q_i, q in enumerate(passage["questions"]):
        q_where = f"{where} questions[{q_i}]"
        if not isinstance(q, dict) or not isinstance(q.get("question"), str) or not isinstance(q.get("answers"), list):
            raise DataError(f"{q_where}: needs \"question\" and an \"answers\" list")
        key = f"{row.get('idx', where)}/{q.get('idx', q_i)}"
        for a_i, ans in enumerate(q["answers"]):
            a_where = f"{q_where}.answers[{a_i}]"
            if not isinstance(ans, dict) or not isinstance(ans.get("text"), str):
                raise DataError(f"{a_where}: needs \"text\"")
            target = _label(ans, a_where, {0: 0, 1: 1})
            out.append(SGExample(((f"{q['question']} || {ans['text']}", passage["text"]),), target,
                                 (key, target), a_where))
    return out


def _read_record(row: dict, where: str) -> list[SGExample]:
    passage = row["passage"]
    if not isinstance(passage, dict) or not isinstance(passage.get("text"), str) or \
            not isinstance(passage.get("entities"), list):
        raise DataError(f"{where}: \"passage\" must hold \"text\" and an \"entities\" list of {{start, end}}")
    text = passage["text"]
    candidates = []
    for e_i, ent in enumerate(passage["entities"]):
        try:
            start, end = int(ent["start"]), int(ent["end"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{where}: passage.entities[{e_i}] needs integer \"start\" and \"end\"") from None
        if not 0 <= start <= end < len(text):
            raise DataError(f"{where}: passage.entities[{e_i}] [{start}, {end}] lies outside the passage "
                            f"({len(text)} characters; ReCoRD's end offset is inclusive)")
        candidates.append(text[start:end + 1])
    candidates = list(dict.fromkeys(candidates))
    shown = text.replace("@highlight\n", "- ")
    out = []
    for q_i, qa in enumerate(row.get("qas", [])):
        q_where = f"{where} qas[{q_i}]"
        query = qa.get("query") if isinstance(qa, dict) else None
        if not isinstance(query, str) or "@placeholder" not in query:
            raise DataError(f"{q_where}: needs a \"query\" containing @placeholder")
        if "answers" not in qa:
            raise DataError(f"{q_where}: no \"answers\" (test files carry none: evaluate on val.jsonl)")
        golds = tuple(dict.fromkeys(a["text"] for a in qa["answers"] if isinstance(a, dict) and "text" in a))
        if not golds:
            raise DataError(f"{q_where}: \"answers\" holds no {{text}}")
        qid = str(qa.get("idx", f"{where}/{q_i}"))
        for cand in candidates:
            target = int(cand in golds)
            out.append(SGExample(((query.replace("@placeholder", cand), shown),), target, (qid, cand, golds),
                                 q_where))
    return out


SUPERGLUE_SPECS: dict[str, SuperGlueSpec] = {
    "boolq": SuperGlueSpec("boolq", "BoolQ", ("question", "passage"),
                           _classify(lambda r: r["question"], lambda r: r["passage"], _BOOL), 2, "acc"),
    "cb": SuperGlueSpec("cb", "CB", ("premise", "hypothesis"),
                        _classify(lambda r: r["premise"], lambda r: r["hypothesis"],
                                  {"entailment": 0, "contradiction": 1, "neutral": 2}), 3, "f1"),
    "copa": SuperGlueSpec("copa", "COPA", ("premise", "choice1", "choice2", "question"), _read_copa, 1, "acc",
                          "choice"),
    "superglue_rte": SuperGlueSpec("superglue_rte", "RTE", ("premise", "hypothesis"),
                                   _classify(lambda r: r["premise"], lambda r: r["hypothesis"],
                                             {"entailment": 0, "not_entailment": 1}), 2, "acc"),
    "wic": SuperGlueSpec("wic", "WiC", ("word", "sentence1", "sentence2"),
                         _classify(lambda r: f"{r['word']}: {r['sentence1']}", lambda r: r["sentence2"], _BOOL),
                         2, "acc"),
    "wsc": SuperGlueSpec("wsc", "WSC", ("text", "target"), _read_wsc, 2, "acc"),
    "multirc": SuperGlueSpec("multirc", "MultiRC", ("passage",), _read_multirc, 2, "f1a", "multirc"),
    "record": SuperGlueSpec("record", "ReCoRD", ("passage", "qas"), _read_record, 2, "f1", "record"),
}


class SuperGlueTask(Task):
    """One SuperGLUE task (see the module docstring); the plugin contract of ``lorakit.train.tasks``."""

    def __init__(self, spec: SuperGlueSpec, label_smoothing: float = 0.0):
        self.spec = spec
        self.name = spec.name
        self.num_labels = spec.num_labels
        self.main_metric = spec.main_metric
        self.label_smoothing = float(label_smoothing)
        self.pad_id = 0

    # -- load --------------------------------------------------------------------------------------
    def split_path(self, split: str, data_dir: str | Path) -> Path:
        """``val.jsonl`` for ``dev``; the task folder or a SuperGLUE root holding it."""
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            raise DataError(f"data folder not found: {data_dir}")
        names = ["val.jsonl", "dev.jsonl"] if split in ("dev", "val") else [f"{split}.jsonl"]
        for folder in (data_dir, data_dir / self.spec.folder):
            for name in names:
                if (folder / name).is_file():
                    return folder / name
        raise DataError(
            f"no {names[0]} for task {self.name!r} in {data_dir} (nor in {data_dir / self.spec.folder}); expected "
            f"the official SuperGLUE JSONL layout: DIR/train.jsonl and DIR/val.jsonl (or the SuperGLUE root "
            f"with {self.spec.folder}/), one JSON object per line with the keys {list(self.spec.keys)} and "
            "\"label\"")

    def load(self, split: str, data_dir: str | Path) -> list[SGExample]:
        """Read one split; a malformed line raises ``DataError`` with file:line and the expected keys."""
        path = self.split_path(split, data_dir)
        out: list[SGExample] = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                except ValueError:
                    raise DataError(f"{where}: not a JSON object; task {self.name!r} expects the official "
                                    f"SuperGLUE JSONL layout (one object per line with the keys "
                                    f"{list(self.spec.keys)} and \"label\")") from None
                if not isinstance(row, dict):
                    raise DataError(f"{where}: a JSON {type(row).__name__}, not an object")
                missing = [k for k in self.spec.keys if k not in row]
                if missing:
                    raise DataError(f"{where}: lacks {missing}; task {self.name!r} expects lines with the keys "
                                    f"{list(self.spec.keys)} (is this the {self.spec.folder} file?)")
                out.extend(self.spec.reader(row, where))
        if not out:
            raise DataError(f"{path}: no examples")
        return out

    # -- encode / collate --------------------------------------------------------------------------
    def encode(self, examples: Sequence[SGExample], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Tokenize every pair: items ``{"choices": [(input_ids, token_type_ids), ...], "target", "label"}``."""
        if not examples:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        max_length = int(cfg["max_length"] if isinstance(cfg, dict) else cfg.max_length)
        flat = [pair for e in examples for pair in e.pairs]
        enc = tokenizer([a for a, _ in flat], [b for _, b in flat], truncation=True, max_length=max_length,
                        return_token_type_ids=True)
        items, k = [], 0
        for e in examples:
            choices = [(enc["input_ids"][k + j], enc["token_type_ids"][k + j]) for j in range(len(e.pairs))]
            k += len(e.pairs)
            items.append({"choices": choices, "target": e.target, "label": e.reference})
        return items

    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """``input_ids``, ``attention_mask``, ``token_type_ids`` ``(batch * choices, seq)`` and ``labels``
        ``(batch,)``; ``max_length`` cuts each sequence, keeping its final special token."""

        ids = [cut_keep_last(ids, max_length) for it in items for ids, _ in it["choices"]]
        types = [cut_keep_last(types, max_length) for it in items for _, types in it["choices"]]
        input_ids, token_type_ids = pad(ids, self.pad_id), pad(types, 0)
        attention_mask = pad([[1] * len(s) for s in ids], 0)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids,
                "labels": torch.tensor([it["target"] for it in items], dtype=torch.long)}

    # -- loss / predict ------------------------------------------------------------------------------
    def _logits(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``(batch, num_labels)`` for classification, ``(batch, choices)`` for multiple choice."""
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).float()
        if self.spec.kind == "choice":
            return logits.view(batch["labels"].shape[0], -1)  # one score per (example, choice)
        return logits

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Cross-entropy over the classes, or over an example's choices."""
        return F.cross_entropy(self._logits(model, batch), batch["labels"], label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor | list[CandidateScore]:
        """Class ids / choice indices ``(batch,)``; ReCoRD: one ``CandidateScore`` per candidate."""
        logits = self._logits(model, batch)
        if self.spec.kind == "record":
            return [CandidateScore(float(s)) for s in (logits[:, 1] - logits[:, 0]).cpu()]
        return logits.argmax(-1)

    # -- metrics -----------------------------------------------------------------------------------
    def metrics(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        """BoolQ/COPA/RTE/WiC/WSC ``acc``; CB ``acc`` and macro ``f1``; MultiRC ``f1a`` and ``em``; ReCoRD
        ``em`` and ``f1`` (all fractions). The loop first probes the names with placeholder numbers."""
        from lorakit.metrics import classification as cm

        kind = self.spec.kind
        if kind == "multirc":
            if references and not isinstance(references[0], (tuple, list)):  # the loop's probe
                references = [(i, r) for i, r in enumerate(references)]
            return cm.multirc_metrics([r[0] for r in references], [int(p) for p in predictions],
                                      [r[1] for r in references])
        if kind == "record":
            if not predictions or not all(isinstance(p, CandidateScore) for p in predictions):
                return {"em": float("nan"), "f1": float("nan")}
            best: dict[str, tuple[float, str]] = {}
            golds: dict[str, tuple[str, ...]] = {}
            for p, (qid, cand, gold) in zip(predictions, references, strict=True):
                if qid not in best or p.score > best[qid][0]:
                    best[qid] = (p.score, cand)
                golds[qid] = tuple(gold)
            return cm.record_metrics([best[q][1] for q in best], [list(golds[q]) for q in best])
        task = "rte" if self.name == "superglue_rte" else self.name
        return {k: float(v) for k, v in cm.superglue_metrics(task, [int(p) for p in predictions],
                                                             list(references)).items()}


for _spec in SUPERGLUE_SPECS.values():
    register_task(_spec.name, functools.partial(SuperGlueTask, _spec))
