"""Evaluation metrics: GLUE/SuperGLUE classification, SQuAD QA, and NLG (E2E, WebNLG, DART).

Importing is cheap: the Java-backed (pycocoevalcap) and sacrebleu parts load when an NLG metric runs.
"""

from __future__ import annotations

from .classification import (
    accuracy,
    f1_binary,
    glue_metrics,
    macro_f1,
    matthews_corrcoef,
    multirc_metrics,
    pearson,
    record_metrics,
    spearman,
    superglue_metrics,
)
from .nlg import (
    JavaNotFoundError,
    MeteorSession,
    coco_scores,
    e2e_metrics,
    group_references,
    meteor_score,
    mteval_bleu_nist,
    mteval_tokenize,
    sacrebleu_scores,
    webnlg_metrics,
)
from .qa import exact_match_score, f1_score, normalize_answer, squad_v1_scores, squad_v2_scores

__all__ = [
    "JavaNotFoundError",
    "MeteorSession",
    "accuracy",
    "coco_scores",
    "e2e_metrics",
    "exact_match_score",
    "f1_binary",
    "f1_score",
    "glue_metrics",
    "group_references",
    "macro_f1",
    "matthews_corrcoef",
    "meteor_score",
    "mteval_bleu_nist",
    "mteval_tokenize",
    "multirc_metrics",
    "normalize_answer",
    "pearson",
    "record_metrics",
    "sacrebleu_scores",
    "spearman",
    "squad_v1_scores",
    "squad_v2_scores",
    "superglue_metrics",
    "webnlg_metrics",
]
