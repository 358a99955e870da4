"""Evaluation metrics: GLUE/SuperGLUE classification, SQuAD QA, and NLG (E2E, WebNLG, DART).

The package re-exports the public names of ``classification``, ``nlg`` and ``qa`` (each module's ``__all__``
is the one list of them); language-model metrics stay in ``lorakit.metrics.lm``.
Importing is cheap: the Java-backed (pycocoevalcap) and sacrebleu parts load when an NLG metric runs.
"""

from __future__ import annotations

from . import classification, nlg, qa
from .classification import *  # noqa: F403
from .nlg import *  # noqa: F403
from .qa import *  # noqa: F403

__all__ = [*classification.__all__, *nlg.__all__, *qa.__all__]
