"""Task plugins: everything the training loop must not know about a task.

A task is an object with this contract (the loop calls nothing else):

``load(split, data_dir) -> list[Example]``
    read one split from disk; malformed input raises ``DataError`` naming the file and line.
``encode(examples, tokenizer, cfg) -> list[dict]``
    tokenize once, before training; ``cfg`` is the resolved ``data`` config section.
``collate(items, max_length=None) -> dict[str, Tensor]``
    pad a list of encoded items into a batch; ``max_length`` cuts every sequence (random sequence-length
    sampling), keeping its final special token.
``loss(model, batch) -> Tensor``
    scalar training loss of the batch (mean over examples).
``predict(model, batch) -> Tensor``
    ``(batch,)`` predictions: class ids, or scores for regression.
``metrics(predictions, references) -> dict[str, float]``
    dev metrics; ``main_metric`` names the one used for early stopping and "best".

plus the attributes ``name``, ``num_labels`` (1 = regression) and ``main_metric``. ``get_task(name, ...)``
returns a fresh task; ``TASKS`` lists the names.
"""

from __future__ import annotations

from typing import Any

from .glue import TASK_SPECS, DataError, GlueTask
from .squad import SQUAD_VERSIONS, SquadTask
from .superglue import SUPERGLUE_SPECS, SuperGlueTask

__all__ = ["DataError", "GlueTask", "SquadTask", "SuperGlueTask", "TASKS", "get_task"]

TASKS: tuple[str, ...] = (*TASK_SPECS, *SQUAD_VERSIONS, *SUPERGLUE_SPECS)

_ALIASES = {"squadv2": "squad_v2", "squad2": "squad_v2", "squad_v1": "squad", "squadv1": "squad", "squad1": "squad",
            "superglue/rte": "superglue_rte", "superglue-rte": "superglue_rte", "sg_rte": "superglue_rte"}


def get_task(name: str, label_smoothing: float = 0.0, **options: Any) -> Any:
    """A task plugin by name (``quickstart``, ``cola``, ``sst2``, ``mrpc``, ``stsb``, ``rte``, ``squad``,
    ``squad_v2``, SuperGLUE ``boolq``, ``cb``, ``copa``, ``superglue_rte``, ``wic``, ``wsc``, ``multirc``,
    ``record``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    key = key.replace("-", "").replace("superglue/", "").replace("glue/", "")
    key = _ALIASES.get(key, key)
    if key in SQUAD_VERSIONS:
        return SquadTask(key, label_smoothing=label_smoothing, **options)
    if key in SUPERGLUE_SPECS:
        return SuperGlueTask(SUPERGLUE_SPECS[key], label_smoothing=label_smoothing, **options)
    if key not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return GlueTask(TASK_SPECS[key], label_smoothing=label_smoothing, **options)
