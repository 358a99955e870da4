"""Task plugins: everything the training loop must not know about a task.

A task is an object with this contract (the loop calls nothing else):

``load(split, data_dir) -> list[Example]``
    read one split from disk; malformed input raises ``DataError`` naming the file and line.
``encode(examples, tokenizer, cfg, training=False) -> list[dict]``
    tokenize once, before training; ``cfg`` is the resolved ``data`` config section; ``training`` says
    whether the items feed the loss (e.g. NLG: one item per reference) or evaluation (one per input).
``collate(items, max_length=None) -> dict[str, Tensor]``
    pad a list of encoded items into a batch; ``max_length`` cuts every sequence (random sequence-length
    sampling), keeping its final special token.
``loss(model, batch) -> Tensor``
    scalar training loss of the batch (mean over examples).
``loss_sum(model, batch) -> Tensor`` and ``loss_count(batch) -> int`` (optional)
    a token-level loss summed over the batch, and its number of terms (label tokens); the loop then divides
    the sums of all micro-batches and processes by the count of the whole global batch
    (:mod:`lorakit.train.batches`). Without them a task's ``loss`` counts once per example.
``predict(model, batch) -> Tensor | list``
    ``(batch,)`` predictions: class ids, or scores for regression; or one task-defined object per row
    (span predictions, generated texts, per-window log-likelihoods).
``metrics(predictions, references) -> dict[str, float]``
    dev metrics (references are the items' ``label`` values); ``main_metric`` names the one used for
    early stopping and "best".

plus the attributes ``name``, ``num_labels`` (1 = regression, 0 = none: language models), ``main_metric``
and optionally ``model_kind`` (``"classifier"``, the default: an encoder with a head; ``"causal_lm"``: a
language model such as GPT-2), ``metric_names`` (what ``metrics`` reports, when it cannot be called on
dummy input), ``lower_is_better`` (the names of reported metrics that improve as they fall, e.g. TER or
perplexity; default: none, every metric is maximised) and ``check_model(model)`` (raise ``DataError`` before
training when the encoded data cannot run on the model, e.g. sequences beyond its positions).
``get_task(name, ...)`` returns a fresh task; ``task_from_config(cfg)`` one set up from a resolved experiment
config; ``is_lower_better(task, metric)`` reads a task's ``lower_is_better``; ``TASKS`` lists the names.
"""

from __future__ import annotations

from typing import Any

from .glue import TASK_SPECS, DataError, GlueTask
from .nlg import NLG_TASKS, NLGTask
from .nq import NQTask
from .squad import SQUAD_VERSIONS, SquadTask
from .superglue import SUPERGLUE_SPECS, SuperGlueTask

__all__ = ["DataError", "GlueTask", "NLGTask", "NQTask", "SquadTask", "SuperGlueTask", "TASKS", "get_task",
           "is_lower_better", "task_from_config"]

LM_TASKS = ("wikitext", "enwik8", "text8", "text")
TASKS: tuple[str, ...] = (*TASK_SPECS, *SQUAD_VERSIONS, "nq", *SUPERGLUE_SPECS, *NLG_TASKS, *LM_TASKS, "sft")

_ALIASES = {"squadv2": "squad_v2", "squad2": "squad_v2", "squad_v1": "squad", "squadv1": "squad", "squad1": "squad",
            "superglue/rte": "superglue_rte", "superglue-rte": "superglue_rte", "sg_rte": "superglue_rte",
            "mnlimm": "mnli_mm", "mnli_mismatched": "mnli_mm", "mnli_matched": "mnli", "mnlim": "mnli",
            "natural_questions": "nq"}


def get_task(name: str, label_smoothing: float = 0.0, **options: Any) -> Any:
    """A task plugin by name (``quickstart``, ``cola``, ``sst2``, ``mrpc``, ``stsb``, ``rte``, ``qqp``, ``mnli``,
    ``mnli_mm``, ``qnli``, ``squad``, ``squad_v2``, ``nq`` (option ``keep_html``), SuperGLUE ``boolq``, ``cb``,
    ``copa``, ``superglue_rte``, ``wic``, ``wsc``, ``multirc``, ``record``; NLG ``e2e``, ``webnlg``, ``dart`` (option
    ``generation``); language modelling ``wikitext``, ``enwik8``, ``text8``, ``text`` (option ``stride``); supervised
    fine-tuning on JSONL prompts/completions or chats ``sft``)."""
    key = _ALIASES.get(name.lower(), name.lower())
    key = key.replace("-", "").replace("superglue/", "").replace("glue/", "")
    key = _ALIASES.get(key, key)
    if key in NLG_TASKS:
        return NLGTask(key, label_smoothing=label_smoothing, **options)
    if key in LM_TASKS:
        from .lm import get_lm_task

        return get_lm_task(key, label_smoothing=label_smoothing, **options)
    if key == "sft":
        from .sft import SFTTask

        return SFTTask(label_smoothing=label_smoothing, **options)
    if key in SQUAD_VERSIONS:
        return SquadTask(key, label_smoothing=label_smoothing, **options)
    if key == "nq":
        return NQTask(key, label_smoothing=label_smoothing, **options)
    if key in SUPERGLUE_SPECS:
        return SuperGlueTask(SUPERGLUE_SPECS[key], label_smoothing=label_smoothing, **options)
    if key not in TASK_SPECS:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return GlueTask(TASK_SPECS[key], label_smoothing=label_smoothing, **options)


def task_from_config(cfg: Any) -> Any:
    """The task of a resolved experiment config, with the options its family reads from other sections."""
    name = cfg.task.name
    options: dict[str, Any] = {}
    if name in NLG_TASKS:
        options["generation"] = cfg.generation
    elif name in LM_TASKS:
        options["stride"] = cfg.data.stride
    elif name == "nq":
        options["keep_html"] = cfg.data.keep_html
    return get_task(name, label_smoothing=cfg.training.label_smoothing, **options)


_LOSSES = ("loss", "nll")  # a metric named like a loss (``loss``, ``nll_per_token`` ...) is minimised in any task


def is_lower_better(task: Any, metric: str) -> bool:
    """Whether a smaller value of ``metric`` (a name ``task.metrics`` reports) is the better one: the task's
    ``lower_is_better`` names, and any loss (``loss``, ``nll`` or a name starting ``loss_`` / ``nll_``)."""
    return metric in getattr(task, "lower_is_better", ()) or metric.split("_")[0] in _LOSSES
