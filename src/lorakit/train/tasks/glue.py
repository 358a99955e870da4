"""GLUE tasks (CoLA, SST-2, MRPC, QQP, STS-B, MNLI, QNLI, RTE) and the built-in ``quickstart`` task, from TSV files.

The data folder holds ``train.tsv`` and ``dev.tsv`` in the official GLUE layout (as produced by the
GLUE download script); the folder may be the task's own (``.../glue/RTE``) or its parent
(``.../glue``, then the task's subfolder is used). MNLI has two dev files: split ``dev`` reads
``dev_matched.tsv`` for task ``mnli`` and ``dev_mismatched.tsv`` for ``mnli_mm`` (both read ``MNLI/``; the
splits ``dev_matched`` and ``dev_mismatched`` can also be named directly). ``quickstart`` reads the same kind
of file (``sentence<TAB>label``, with a header) from ``data/quickstart``.

The model the loop builds maps ``input_ids``, ``attention_mask``, ``token_type_ids`` (each
``(batch, seq)``) to ``logits`` ``(batch, num_labels)``; ``num_labels == 1`` means regression (STS-B).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.metrics import classification as cm

from .base import DataError, Task, cut_keep_last, pad, register_task

__all__ = ["DataError", "Example", "TaskSpec", "TASK_SPECS", "GlueTask"]


@dataclass(frozen=True)
class Example:
    """One example: ``text_a`` (and ``text_b`` for pairs), ``label`` (class id, or float score)."""

    text_a: str
    text_b: str | None
    label: int | float
    source: str = ""  # "file:line", for messages


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's fields are in its TSV file. Columns are header names, or indices without header."""

    name: str
    folder: str  # subfolder name under a GLUE root
    text_columns: tuple[str | int, ...]
    label_column: str | int
    labels: tuple[str, ...] | None  # None: regression
    header: bool
    main_metric: str
    score_range: tuple[float, float] = (0.0, 5.0)  # regression only
    dev_file: str = "dev"  # the file stem split "dev" reads (MNLI: dev_matched / dev_mismatched)


TASK_SPECS: dict[str, TaskSpec] = {
    "quickstart": TaskSpec("quickstart", "quickstart", ("sentence",), "label",
                           ("weather", "food", "sport", "technology"), True, "acc"),
    "cola": TaskSpec("cola", "CoLA", (3,), 1, ("0", "1"), False, "mcc"),
    "sst2": TaskSpec("sst2", "SST-2", ("sentence",), "label", ("0", "1"), True, "acc"),
    "mrpc": TaskSpec("mrpc", "MRPC", ("#1 String", "#2 String"), "Quality", ("0", "1"), True, "acc"),
    "stsb": TaskSpec("stsb", "STS-B", ("sentence1", "sentence2"), "score", None, True, "pearson"),
    "rte": TaskSpec("rte", "RTE", ("sentence1", "sentence2"), "label",
                    ("entailment", "not_entailment"), True, "acc"),
    "qqp": TaskSpec("qqp", "QQP", ("question1", "question2"), "is_duplicate", ("0", "1"), True, "acc"),
    "mnli": TaskSpec("mnli", "MNLI", ("sentence1", "sentence2"), "gold_label",
                     ("contradiction", "entailment", "neutral"), True, "acc", dev_file="dev_matched"),
    "mnli_mm": TaskSpec("mnli_mm", "MNLI", ("sentence1", "sentence2"), "gold_label",
                        ("contradiction", "entailment", "neutral"), True, "acc", dev_file="dev_mismatched"),
    "qnli": TaskSpec("qnli", "QNLI", ("question", "sentence"), "label",
                     ("entailment", "not_entailment"), True, "acc"),
}


class GlueTask(Task):
    """A sentence(-pair) classification or regression task read from GLUE-style TSV files."""

    def __init__(self, spec: TaskSpec, label_smoothing: float = 0.0):
        self.spec = spec
        self.name = spec.name
        self.num_labels = 1 if spec.labels is None else len(spec.labels)
        self.main_metric = spec.main_metric
        self.label_smoothing = float(label_smoothing)
        self.pad_id = 0

    # -- load --------------------------------------------------------------------------------------
    def split_path(self, split: str, data_dir: str | Path) -> Path:
        """The TSV file of ``split``; accepts the task folder or a GLUE root holding it. Split ``dev`` reads
        ``spec.dev_file`` (MNLI: ``dev_matched.tsv`` / ``dev_mismatched.tsv``)."""
        data_dir = Path(data_dir)
        stem = self.spec.dev_file if split == "dev" else split
        if not data_dir.is_dir():
            raise DataError(f"data folder not found: {data_dir} (pass --data DIR holding {stem}.tsv)")
        for folder in (data_dir, data_dir / self.spec.folder):
            if (folder / f"{stem}.tsv").is_file():
                return folder / f"{stem}.tsv"
        raise DataError(
            f"no {stem}.tsv for task {self.name!r} in {data_dir} (nor in {data_dir / self.spec.folder}); "
            f"expected the GLUE layout: DIR/train.tsv and DIR/{self.spec.dev_file}.tsv"
        )

    def load(self, split: str, data_dir: str | Path) -> list[Example]:
        """Read ``split`` (``train``/``dev``) from ``data_dir``; raise ``DataError`` with file:line."""
        path = self.split_path(split, data_dir)
        spec = self.spec
        with open(path, encoding="utf-8-sig", newline="") as fh:  # -sig: MRPC starts with a BOM
            lines = fh.read().split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        start = 0
        if spec.header:
            if not lines:
                raise DataError(f"{path}: empty file (expected a header line and examples)")
            header = lines[0].rstrip("\r").split("\t")
            missing = [c for c in (*spec.text_columns, spec.label_column) if c not in header]
            if missing:
                raise DataError(f"{path}:1: header {header} lacks the column(s) {missing} of task {self.name}")
            cols = [header.index(c) for c in spec.text_columns]
            label_col = header.index(spec.label_column)
            start = 1
        else:
            cols = [int(c) for c in spec.text_columns]
            label_col = int(spec.label_column)
        need = max(*cols, label_col) + 1
        label_ids = {name: i for i, name in enumerate(spec.labels)} if spec.labels else None
        examples: list[Example] = []
        for lineno, line in enumerate(lines[start:], start=start + 1):
            line = line.rstrip("\r")
            if not line.strip():
                continue
            fields = line.split("\t")
            where = f"{path}:{lineno}"
            if len(fields) < need:
                raise DataError(f"{where}: expected at least {need} tab-separated columns, found "
                                f"{len(fields)} (is the file really {self.name} in the GLUE TSV layout?)")
            raw_label = fields[label_col].strip()
            if label_ids is not None:
                if raw_label not in label_ids:
                    raise DataError(f"{where}: label {raw_label!r} is not one of {list(spec.labels)}")
                label: int | float = label_ids[raw_label]
            else:
                try:
                    label = float(raw_label)
                except ValueError:
                    raise DataError(f"{where}: score {raw_label!r} is not a number") from None
                lo, hi = spec.score_range
                if not (math.isfinite(label) and lo <= label <= hi):
                    raise DataError(f"{where}: score {label} is outside [{lo}, {hi}]")
            texts = [fields[c] for c in cols]
            examples.append(Example(texts[0], texts[1] if len(texts) > 1 else None, label, where))
        if not examples:
            raise DataError(f"{path}: no examples (the file is empty apart from its header)")
        return examples

    # -- encode / collate --------------------------------------------------------------------------
    def encode(self, examples: Sequence[Example], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """Tokenize to ``{"input_ids": list[int], "token_type_ids": list[int], "label": ...}`` items.

        ``cfg.max_length`` truncates (pairs: the longer text first).
        """
        if not examples:
            raise DataError(f"task {self.name}: nothing to encode (empty dataset)")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        a = [e.text_a for e in examples]
        b = [e.text_b for e in examples] if examples[0].text_b is not None else None
        enc = tokenizer(a, b, truncation=True, max_length=int(cfg.max_length), return_token_type_ids=True)
        return [
            {"input_ids": enc["input_ids"][i], "token_type_ids": enc["token_type_ids"][i], "label": e.label}
            for i, e in enumerate(examples)
        ]

    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """Pad to the longest item: ``input_ids``, ``attention_mask``, ``token_type_ids`` ``(batch, seq)``
        and ``labels`` ``(batch,)`` (int64 classes, or float32 scores)."""

        ids = [cut_keep_last(it["input_ids"], max_length) for it in items]  # keep the final [SEP]
        types = [cut_keep_last(it["token_type_ids"], max_length) for it in items]
        input_ids, token_type_ids = pad(ids, self.pad_id), pad(types, 0)
        attention_mask = pad([[1] * len(s) for s in ids], 0)
        dtype = torch.float32 if self.spec.labels is None else torch.long
        labels = torch.tensor([it["label"] for it in items], dtype=dtype)
        return {"input_ids": input_ids, "attention_mask": attention_mask,
                "token_type_ids": token_type_ids, "labels": labels}

    # -- loss / predict ------------------------------------------------------------------------------
    @staticmethod
    def _logits(model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """Cross-entropy (with label smoothing) for classes, mean squared error for scores."""
        logits = self._logits(model, batch).float()  # (batch, num_labels)
        if self.num_labels == 1:
            return F.mse_loss(logits.squeeze(-1), batch["labels"].float())
        return F.cross_entropy(logits, batch["labels"], label_smoothing=self.label_smoothing)

    @torch.no_grad()
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """``(batch,)``: argmax class ids, or predicted scores."""
        logits = self._logits(model, batch).float()
        return logits.squeeze(-1) if self.num_labels == 1 else logits.argmax(-1)

    # -- metrics -----------------------------------------------------------------------------------
    def metrics(self, predictions: Sequence[float], references: Sequence[float]) -> dict[str, float]:
        """GLUE's metrics for the task: ``acc`` (+ ``f1`` for MRPC and QQP), ``mcc`` for CoLA, ``pearson`` and
        ``spearmanr`` for STS-B. The main metric is ``self.main_metric``."""
        if self.name == "quickstart":
            return {"acc": float(cm.accuracy(list(predictions), list(references)))}
        return {k: float(v) for k, v in cm.glue_metrics(self.name, list(predictions), list(references)).items()}



for _spec in TASK_SPECS.values():
    register_task(_spec.name, functools.partial(GlueTask, _spec))
