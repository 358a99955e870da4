"""Classification and regression metrics for GLUE and SuperGLUE, in pure numpy/Python.

All scores are fractions in [0, 1] (correlations in [-1, 1]); multiply by 100 for the percentages that
papers and leaderboards print. Labels may be ints, bools, floats or strings: they are compared after
:func:`canonical_label` (``1``, ``1.0``, ``True`` and ``" 1 "`` are the same label ``"1"``).

Degenerate inputs follow the reference implementations the GLUE numbers come from:

* Matthews correlation is 0.0 when it is undefined (constant predictions or references), as scikit-learn.
* Binary and macro F1 use 0.0 for a class whose precision or recall is undefined, as scikit-learn's
  default ``zero_division`` (without its warning).
* Pearson and Spearman correlations are ``nan`` when either input is constant, as ``scipy.stats``
  (which the GLUE scripts call) returns: a correlation is undefined there, and reporting 0.0 would hide
  a broken model. :func:`glue_metrics` keeps that ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import numpy as np

__all__ = [
    "GLUE_TASKS",
    "SUPERGLUE_TASKS",
    "accuracy",
    "canonical_label",
    "f1_binary",
    "glue_metrics",
    "macro_f1",
    "matthews_corrcoef",
    "multirc_metrics",
    "pearson",
    "record_metrics",
    "spearman",
    "superglue_metrics",
]

# task -> the metrics the GLUE leaderboard reports for it, in its order.
GLUE_TASKS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("acc",),
    "mrpc": ("acc", "f1"),
    "stsb": ("pearson", "spearmanr"),
    "qqp": ("acc", "f1"),
    "mnli": ("acc",),
    "qnli": ("acc",),
    "rte": ("acc",),
    "wnli": ("acc",),
}

# SuperGLUE tasks scored from one label per example (MultiRC and ReCoRD have their own functions).
SUPERGLUE_TASKS: dict[str, tuple[str, ...]] = {
    "boolq": ("acc",),
    "cb": ("acc", "f1"),
    "copa": ("acc",),
    "rte": ("acc",),
    "wic": ("acc",),
    "wsc": ("acc",),
}


def canonical_label(label: object) -> str:
    """Return the comparison key of one label: a stripped string, integral numbers without ``.0``.

    ``True``/``False`` become ``"1"``/``"0"`` (GLUE's binary labels), so a boolean classifier's output
    can be compared with the ``0``/``1`` labels of the TSV files.
    """
    if isinstance(label, (bool, np.bool_)):
        return "1" if label else "0"
    if isinstance(label, (int, np.integer)):
        return str(int(label))
    if isinstance(label, (float, np.floating)):
        value = float(label)
        if value.is_integer():
            return str(int(value))
        return repr(value)
    if isinstance(label, str):
        return label.strip()
    raise TypeError(f"a label must be a str, int, float or bool, got {type(label).__name__}: {label!r}")


def _pair(predictions: Sequence[object], references: Sequence[object]) -> tuple[list[str], list[str]]:
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references; they must be paired one to one"
        )
    if len(predictions) == 0:
        raise ValueError("no predictions to score (both sequences are empty)")
    return [canonical_label(p) for p in predictions], [canonical_label(r) for r in references]


def accuracy(predictions: Sequence[object], references: Sequence[object]) -> float:
    """Fraction of positions where the prediction equals the reference label (in [0, 1])."""
    preds, refs = _pair(predictions, references)
    return sum(p == r for p, r in zip(preds, refs, strict=True)) / len(refs)


def _f1_from_counts(tp: int, fp: int, fn: int) -> float:
    denominator = 2 * tp + fp + fn
    return 0.0 if tp == 0 or denominator == 0 else 2 * tp / denominator


def f1_binary(predictions: Sequence[object], references: Sequence[object], positive: object = 1) -> float:
    """F1 of the ``positive`` class (GLUE MRPC/QQP use label 1), in [0, 1].

    F1 = 2·TP / (2·TP + FP + FN); it is 0.0 when there is no true positive (including when the positive
    class never occurs in either sequence).
    """
    preds, refs = _pair(predictions, references)
    pos = canonical_label(positive)
    tp = sum(p == pos and r == pos for p, r in zip(preds, refs, strict=True))
    fp = sum(p == pos and r != pos for p, r in zip(preds, refs, strict=True))
    fn = sum(p != pos and r == pos for p, r in zip(preds, refs, strict=True))
    return _f1_from_counts(tp, fp, fn)


def macro_f1(
    predictions: Sequence[object], references: Sequence[object], labels: Sequence[object] | None = None
) -> float:
    """Unweighted mean of the per-class F1 scores (SuperGLUE CB), in [0, 1].

    ``labels`` are the classes to average over; by default every label that occurs in the references or
    the predictions (scikit-learn's default). A class absent from both gets F1 0.0 when listed explicitly.
    """
    preds, refs = _pair(predictions, references)
    classes = sorted(set(refs) | set(preds)) if labels is None else [canonical_label(c) for c in labels]
    if not classes:
        raise ValueError("macro_f1: `labels` is empty; give at least one class")
    scores = []
    for c in classes:
        tp = sum(p == c and r == c for p, r in zip(preds, refs, strict=True))
        fp = sum(p == c and r != c for p, r in zip(preds, refs, strict=True))
        fn = sum(p != c and r == c for p, r in zip(preds, refs, strict=True))
        scores.append(_f1_from_counts(tp, fp, fn))
    return sum(scores) / len(scores)


def matthews_corrcoef(predictions: Sequence[object], references: Sequence[object]) -> float:
    """Matthews correlation coefficient (GLUE CoLA), in [-1, 1]; the multi-class form for more labels.

    Computed from the confusion matrix C as (c·s − Σ_k p_k·t_k) / sqrt((s² − Σ p_k²)(s² − Σ t_k²)), with
    c the correct count, s the total, p_k/t_k the predicted/true counts of class k (Gorodkin's R_K, which
    is the usual MCC for two classes). Returns 0.0 when the denominator is 0, e.g. for constant
    predictions, as scikit-learn does.
    """
    preds, refs = _pair(predictions, references)
    classes = sorted(set(refs) | set(preds))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)
    for p, r in zip(preds, refs, strict=True):
        confusion[index[r], index[p]] += 1
    t = confusion.sum(axis=1)
    p = confusion.sum(axis=0)
    c = float(np.trace(confusion))
    s = float(confusion.sum())
    cov_pred = s * s - float(np.dot(p, p))
    cov_true = s * s - float(np.dot(t, t))
    if cov_pred == 0.0 or cov_true == 0.0:
        return 0.0
    return (c * s - float(np.dot(p, t))) / math.sqrt(cov_pred * cov_true)


def _as_floats(values: Sequence[object], name: str) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in values], dtype=np.float64)  # type: ignore[arg-type]
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numbers: {exc}") from None
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} contain NaN or infinite values")
    return array


def _check_numeric(x: Sequence[object], y: Sequence[object]) -> tuple[np.ndarray, np.ndarray]:
    if len(x) != len(y):
        raise ValueError(f"{len(x)} predictions but {len(y)} references; they must be paired one to one")
    if len(x) < 2:
        raise ValueError(f"a correlation needs at least 2 pairs, got {len(x)}")
    return _as_floats(x, "predictions"), _as_floats(y, "references")


def _pearson_arrays(a: np.ndarray, b: np.ndarray) -> float:
    da = a - a.mean()
    db = b - b.mean()
    norm = math.sqrt(float(np.dot(da, da))) * math.sqrt(float(np.dot(db, db)))
    if norm == 0.0:
        return math.nan
    return max(-1.0, min(1.0, float(np.dot(da, db)) / norm))


def pearson(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Pearson correlation (GLUE STS-B), in [-1, 1]; ``nan`` if either input is constant (scipy)."""
    a, b = _check_numeric(predictions, references)
    return _pearson_arrays(a, b)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    sorted_values = values[order]
    start = 0
    n = len(values)
    while start < n:
        end = start
        while end + 1 < n and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(predictions: Sequence[float], references: Sequence[float]) -> float:
    """Spearman rank correlation (GLUE STS-B), in [-1, 1]: Pearson of the average ranks (ties share
    their mean rank); ``nan`` if either input is constant (scipy)."""
    a, b = _check_numeric(predictions, references)
    return _pearson_arrays(_average_ranks(a), _average_ranks(b))


def glue_metrics(task: str, predictions: Sequence[object], references: Sequence[object]) -> dict[str, float]:
    """The metric set the GLUE benchmark reports for ``task`` (see :data:`GLUE_TASKS`).

    ``task`` is one of cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli (case-insensitive; "sst-2",
    "sts-b", "mnli-m"/"mnli-mm" are accepted). Returns e.g. ``{"acc": 0.86, "f1": 0.90}`` for MRPC with
    fractions in [0, 1]; STS-B predictions and references are similarity scores (floats, 0-5).
    """
    key = _task_key(task)
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; known: {', '.join(GLUE_TASKS)}")
    out: dict[str, float] = {}
    for name in GLUE_TASKS[key]:
        if name == "acc":
            out[name] = accuracy(predictions, references)
        elif name == "f1":
            out[name] = f1_binary(predictions, references, positive=1)
        elif name == "mcc":
            out[name] = matthews_corrcoef(predictions, references)
        elif name == "pearson":
            out[name] = pearson(predictions, references)  # type: ignore[arg-type]
        elif name == "spearmanr":
            out[name] = spearman(predictions, references)  # type: ignore[arg-type]
    return out


def superglue_metrics(
    task: str, predictions: Sequence[object], references: Sequence[object]
) -> dict[str, float]:
    """The SuperGLUE metric set for a single-label task (boolq, cb, copa, rte, wic, wsc), as fractions.

    CB reports accuracy and macro-F1 over its three classes; the others accuracy. For MultiRC and
    ReCoRD use :func:`multirc_metrics` and :func:`record_metrics`.
    """
    key = _task_key(task)
    if key not in SUPERGLUE_TASKS:
        raise ValueError(
            f"unknown SuperGLUE task {task!r}; known: {', '.join(SUPERGLUE_TASKS)} "
            "(MultiRC: multirc_metrics, ReCoRD: record_metrics)"
        )
    out = {"acc": accuracy(predictions, references)}
    if key == "cb":
        out["f1"] = macro_f1(predictions, references)
    return out


def multirc_metrics(
    question_ids: Sequence[Hashable], predictions: Sequence[object], references: Sequence[object]
) -> dict[str, float]:
    """SuperGLUE MultiRC: ``f1a`` and ``em``, fractions in [0, 1].

    Inputs are one entry per answer option: the id of the question it belongs to (e.g. a
    ``(paragraph, question)`` pair), the predicted 0/1 label and the gold 0/1 label. ``f1a`` is binary F1
    (class 1) over all answer options; ``em`` is the fraction of questions whose options are all right.
    """
    preds, refs = _pair(predictions, references)
    if len(question_ids) != len(refs):
        raise ValueError(f"{len(question_ids)} question ids but {len(refs)} answer options")
    all_right: dict[Hashable, bool] = {}
    for qid, p, r in zip(question_ids, preds, refs, strict=True):
        all_right[qid] = all_right.get(qid, True) and p == r
    return {
        "f1a": f1_binary(preds, refs, positive=1),
        "em": sum(all_right.values()) / len(all_right),
    }


def record_metrics(predictions: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """SuperGLUE ReCoRD: ``em`` and ``f1`` as fractions, each the max over a query's gold entities.

    Answers are compared after SQuAD normalisation (see :mod:`lorakit.metrics.qa`); ``f1`` is the
    token-overlap F1. One predicted string and a non-empty list of gold strings per query.
    """
    from .qa import exact_match_score, f1_score

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} queries with gold answers")
    if not references:
        raise ValueError("no predictions to score (both sequences are empty)")
    em = f1 = 0.0
    for i, (pred, golds) in enumerate(zip(predictions, references, strict=True)):
        if isinstance(golds, str) or not golds:
            raise ValueError(f"query {i}: references must be a non-empty list of gold answers, got {golds!r}")
        em += max(exact_match_score(pred, g) for g in golds)
        f1 += max(f1_score(pred, g) for g in golds)
    return {"em": em / len(references), "f1": f1 / len(references)}


def _task_key(task: str) -> str:
    key = task.strip().lower().replace("-", "").replace("_", "")
    if key in ("mnlim", "mnlimm", "mnlimatched", "mnlimismatched"):
        return "mnli"
    return key
