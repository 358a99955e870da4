"""Task plugins: everything the training loop must not know about a task.

The contract, its defaults, the shared padding helper and the registry are in :mod:`.base` (see its
docstring, and docs/tasks.md for adding a task). Each family module registers its task names when it is
imported below; the order of the imports is the order of the names in the config reference.

``get_task(name, ...)`` returns a fresh task; ``task_from_config(cfg)`` one set up from a resolved experiment
config; ``TASKS`` lists the names.
"""

from __future__ import annotations

from typing import Any

from .base import TASK_REGISTRY, DataError, Task, register_task, task_names

# Importing a family registers its names: this order is the order of the config reference.
# isort: off
from .glue import GlueTask
from .squad import SquadTask
from .nq import NQTask
from .superglue import SuperGlueTask
from .nlg import NLGTask
from .lm import LMTask
from .mlm import MLMTask
from .sft import SFTTask
# isort: on

__all__ = ["DataError", "GlueTask", "LMTask", "MLMTask", "NLGTask", "NQTask", "SFTTask", "SquadTask", "SuperGlueTask",
           "Task",
           "TASKS", "get_task", "register_task", "task_from_config"]

TASKS: tuple[str, ...] = task_names()

_ALIASES = {"squadv2": "squad_v2", "squad2": "squad_v2", "squad_v1": "squad", "squadv1": "squad", "squad1": "squad",
            "superglue/rte": "superglue_rte", "superglue-rte": "superglue_rte", "sg_rte": "superglue_rte",
            "mnlimm": "mnli_mm", "mnli_mismatched": "mnli_mm", "mnli_matched": "mnli", "mnlim": "mnli",
            "natural_questions": "nq"}


def _canonical(name: str) -> str:
    key = _ALIASES.get(name.lower(), name.lower())
    key = key.replace("-", "").replace("superglue/", "").replace("glue/", "")
    return _ALIASES.get(key, key)


def get_task(name: str, label_smoothing: float = 0.0, **options: Any) -> Task:
    """A task plugin by name (``quickstart``, ``cola``, ``sst2``, ``mrpc``, ``stsb``, ``rte``, ``qqp``, ``mnli``,
    ``mnli_mm``, ``qnli``, ``squad``, ``squad_v2``, ``nq`` (option ``keep_html``), SuperGLUE ``boolq``, ``cb``,
    ``copa``, ``superglue_rte``, ``wic``, ``wsc``, ``multirc``, ``record``; NLG ``e2e``, ``webnlg``, ``dart`` (option
    ``generation``); language modelling ``wikitext``, ``wikitext103``, ``enwik8``, ``hutter``, ``text8``, ``text``
    (option ``stride``); masked-LM ``mlm_<corpus>`` for each of those (option ``seed``, ``mask_prob``); supervised
    fine-tuning on JSONL prompts/completions or chats ``sft``)."""
    entry = TASK_REGISTRY.get(_canonical(name))
    if entry is None:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
    return entry.factory(label_smoothing=label_smoothing, **options)


def task_from_config(cfg: Any) -> Task:
    """The task of a resolved experiment config, with the options its family reads from other sections."""
    entry = TASK_REGISTRY[cfg.task.name]
    task = entry.factory(label_smoothing=cfg.training.label_smoothing, **entry.config_options(cfg))
    if task.model_kind == "causal_lm":  # the token loss of lorakit.train.batches.TokenLoss
        task.fused_loss = cfg.training.get("fused_loss", "auto")
        task.loss_chunk_size = cfg.training.get("loss_chunk_size")
    return task
