"""The task contract: everything the training loop must not know about a task.

A task is a :class:`Task`. The loop calls the six methods of the contract and reads the attributes below;
it knows nothing else about a task:

``load(split, data_dir) -> list[Example]``
    read one split from disk; malformed input raises :class:`DataError` naming the file and line.
``encode(examples, tokenizer, cfg, training=False) -> list[dict]``
    tokenize once, before training; ``cfg`` is the resolved ``data`` config section; ``training`` says
    whether the items feed the loss (e.g. NLG: one item per reference) or evaluation (one per input).
``collate(items, max_length=None) -> dict[str, Tensor]``
    pad a list of encoded items into a batch (with :func:`pad` and :func:`cut_keep_last`); ``max_length``
    cuts every sequence (random sequence-length sampling), keeping its final special token.
``loss(model, batch) -> Tensor``
    scalar training loss of the batch (mean over examples).
``loss_sum(model, batch) -> Tensor`` and ``loss_count(batch) -> int`` (optional)
    a token-level loss summed over the batch, and its number of terms (label tokens); the loop then divides
    the sums of all micro-batches and processes by the count of the whole global batch
    (:mod:`lorakit.train.batches`, whose ``TokenLoss`` gives them to every causal-LM task). Without them a
    task's ``loss`` counts once per example.
``predict(model, batch) -> Tensor | list``
    ``(batch,)`` predictions: class ids, or scores for regression; or one task-defined object per row
    (span predictions, generated texts, per-window log-likelihoods).
``metrics(predictions, references) -> dict[str, float]``
    dev metrics (references are the items' ``label`` values); ``main_metric`` names the one used for
    early stopping and "best".

A new task registers a factory under its name with :func:`register_task`; the config schema
(``task.name``) and :func:`get_task` read the registry. docs/tasks.md walks through an example.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.data import DataError

__all__ = ["DataError", "Task", "TaskEntry", "TASK_REGISTRY", "register_task", "task_names", "pad",
           "cut_keep_last"]


class Task(ABC):
    """A task plugin: the contract (the abstract methods) and the defaults of everything optional.

    Attributes: ``name``; ``num_labels`` (classes of the classifier head; 1 = regression; 0 = no head: a
    language model); ``main_metric`` (a name ``metrics`` reports); ``label_smoothing``; ``model_kind``
    (``"classifier"``: an encoder with a head, ``"causal_lm"``: a language model such as GPT-2);
    ``metric_names`` (what ``metrics`` reports; ``None``: the keys of a call on dummy input);
    ``lower_is_better`` (reported metrics that improve as they fall, e.g. TER or perplexity).
    """

    name: str
    num_labels: int = 0
    main_metric: str
    label_smoothing: float = 0.0
    model_kind: str = "classifier"
    metric_names: Sequence[str] | None = None
    lower_is_better: Sequence[str] = ()

    @abstractmethod
    def load(self, split: str, data_dir: str | Path) -> list[Any]:
        """The examples of ``split`` read from ``data_dir``."""

    @abstractmethod
    def encode(self, examples: Sequence[Any], tokenizer: Any, cfg: Any, training: bool = False) -> list[dict]:
        """One item (token ids and the reference under ``label``) per example, or per reference in training."""

    @abstractmethod
    def collate(self, items: Sequence[dict], max_length: int | None = None) -> dict[str, Tensor]:
        """A batch of ``(batch, seq)`` tensors from ``items``."""

    @abstractmethod
    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        """The scalar training loss of ``batch``."""

    @abstractmethod
    def predict(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor | list:
        """``(batch,)`` predictions, or one task-defined object per row."""

    @abstractmethod
    def metrics(self, predictions: Sequence[Any], references: Sequence[Any]) -> dict[str, float]:
        """The dev metrics of ``predictions`` against the items' ``label`` values."""

    def start_step(self, step: int, first_row: int = 0) -> None:
        """Called by the training loop before the collates of optimizer step ``step`` (0-based), so that random
        choices made in ``collate`` (masked-LM masks) are a function of (seed, step, row of the global batch) and
        a resumed run repeats them exactly. ``first_row``: the global-batch row of this process's first item
        (``rank * per-process rows`` under DDP/FSDP), so that processes draw different choices for their
        different rows. Default: nothing."""
        return None

    def check_model(self, model: nn.Module) -> None:
        """Raise ``DataError`` before training when the encoded data cannot run on ``model`` (e.g. sequences
        beyond its positions). Default: every model fits."""
        return None

    def reported_metrics(self) -> list[str]:
        """What ``metrics`` reports: ``metric_names``, else the keys of a call on dummy input."""
        if self.metric_names is not None:
            return list(self.metric_names)
        return list(self.metrics([0, 1], [0, 1]))

    def is_lower_better(self, metric: str) -> bool:
        """Whether a smaller ``metric`` is better: one of ``lower_is_better``, or any loss (``loss``, ``nll``
        or a name starting ``loss_`` / ``nll_``)."""
        return metric in self.lower_is_better or metric.split("_")[0] in ("loss", "nll")


# ------------------------------------------------------------------------------------------------------
# The one padding helper every collate uses
# ------------------------------------------------------------------------------------------------------

def pad(rows: Sequence[Sequence[Any] | Tensor], value: int, *, left: bool = False) -> Tensor:
    """Stack ``rows`` of different lengths into one int64 tensor ``(len(rows), longest, *item_shape)``.

    Each row's items fill the start of its line (the end with ``left=True``, as generation wants prompts);
    the rest holds ``value``. An item may itself be a pair (``item_shape = (2,)``: SQuAD's offsets).
    The attention mask of token rows is ``pad([[1] * len(r) for r in rows], 0)``.
    """
    tensors = [torch.as_tensor(r, dtype=torch.long) for r in rows]
    item_shape = next((t.shape[1:] for t in tensors if t.numel()), ())
    width = max(len(t) for t in tensors)
    out = torch.full((len(tensors), width, *item_shape), value, dtype=torch.long)
    for i, t in enumerate(tensors):
        if len(t):
            line = out[i, width - len(t):] if left else out[i, :len(t)]
            line.copy_(t)
    return out


def cut_keep_last(seq: Sequence[Any], max_length: int | None) -> Sequence[Any]:
    """``seq`` cut to ``max_length`` items keeping its last one (the final [SEP] of an encoder's input)."""
    if max_length is None or len(seq) <= max_length:
        return seq
    return [*seq[: max_length - 1], *seq[-1:]]


# ------------------------------------------------------------------------------------------------------
# The registry
# ------------------------------------------------------------------------------------------------------

def _no_options(cfg: Any) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class TaskEntry:
    """A registered task: ``factory(label_smoothing=..., **options)`` returns a fresh task;
    ``config_options(cfg)`` reads the options from a resolved experiment config (other sections than
    ``task``, e.g. NLG's ``generation``)."""

    factory: Callable[..., Task]
    config_options: Callable[[Any], dict[str, Any]] = _no_options


TASK_REGISTRY: dict[str, TaskEntry] = {}
"""task name -> its entry, in registration order (the order the config reference lists them)."""


def register_task(name: str, factory: Callable[..., Task],
                  config_options: Callable[[Any], dict[str, Any]] | None = None) -> None:
    """Make task ``name`` available to ``get_task``, ``task.name`` in configs, and the command line."""
    if name in TASK_REGISTRY:
        raise ValueError(f"task {name!r} is registered twice; pick another name")
    TASK_REGISTRY[name] = TaskEntry(factory, config_options or _no_options)


def task_names() -> tuple[str, ...]:
    """The registered task names."""
    return tuple(TASK_REGISTRY)
