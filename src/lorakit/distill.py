"""Knowledge distillation as a fine-tuning baseline: a smaller student learns the task from its labels and
from a finished run (the teacher).

* :func:`distillation_loss`: ``(1 - alpha) * task_loss + alpha * T^2 * KL(softmax(t / T) || softmax(s / T))``
  for classes (Hinton et al. 2015; ``T^2`` keeps the soft term's gradients at the scale of the hard one), and
  ``(1 - alpha) * task_loss + alpha * MSE(s, t)`` for a regression head (one output: no temperature).
* :func:`keep_first_layers`: the student as the first ``k`` transformer blocks of a model.
* :class:`DistillingTask`: a task whose training loss is the distillation loss; evaluation is the task's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LorakitError

__all__ = ["DistillError", "distillation_loss", "keep_first_layers", "check_label_space", "DistillingTask"]


class DistillError(LorakitError, ValueError):
    """A teacher that does not fit the task, or distillation options out of range."""


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, task_loss: Tensor, temperature: float,
                      alpha: float) -> Tensor:
    """student_logits, teacher_logits: (batch, classes), or (batch, 1) for regression; task_loss: scalar.
    The KL term is averaged over the batch (``batchmean``). Returns a scalar."""
    s, t = student_logits.float(), teacher_logits.float().detach()
    if s.shape != t.shape:
        raise DistillError(f"student logits {tuple(s.shape)} and teacher logits {tuple(t.shape)} differ")
    if s.shape[-1] == 1:
        soft = F.mse_loss(s, t)
    else:
        soft = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                        reduction="batchmean") * temperature ** 2
    return (1.0 - alpha) * task_loss + alpha * soft


def check_label_space(teacher_labels: int, task_labels: int, teacher: str, task: str) -> None:
    """Refuse a teacher whose head has another number of outputs than the task's (1 = regression)."""
    if teacher_labels != task_labels:
        kind = {1: "1 output (regression)"}
        raise DistillError(
            f"distill: the teacher {teacher} predicts {kind.get(teacher_labels, f'{teacher_labels} classes')} but "
            f"task {task!r} has {kind.get(task_labels, f'{task_labels} classes')}; use a teacher trained on "
            f"{task!r} (method.teacher: its workdir)")


def _block_list(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, blocks): the longest ModuleList of the model (BERT ``encoder.layer``, GPT-2 ``h``)."""
    found = [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
             if isinstance(child, nn.ModuleList)]
    if not found:
        raise DistillError(f"distill: {type(model).__name__} has no list of transformer blocks to shorten")
    return max(found, key=lambda item: len(item[2]))


def keep_first_layers(model: nn.Module, layers: int) -> nn.Module:
    """Keep the first ``layers`` transformer blocks (in place; the config's layer count follows)."""
    parent, name, blocks = _block_list(model)
    if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= len(blocks):
        raise DistillError(f"distill: student_layers must be an integer in [1, {len(blocks)}] (the teacher "
                           f"architecture's blocks), got {layers!r}")
    setattr(parent, name, nn.ModuleList(list(blocks)[:layers]))
    for module in model.modules():
        config = getattr(module, "config", None)
        for key in ("num_hidden_layers", "n_layer"):
            if config is not None and isinstance(getattr(config, key, None), int):
                setattr(config, key, layers)
    return model


class DistillingTask:
    """``task`` with the training loss replaced by :func:`distillation_loss` against ``teacher`` (frozen, in
    eval mode). Everything else (collate, predict, metrics ...) is the task's. The task must expose
    ``_logits(model, batch)`` -> (batch, num_labels) and ``loss_from_logits``, as the GLUE tasks do."""

    def __init__(self, task: Any, teacher: nn.Module, temperature: float, alpha: float):
        if not all(callable(getattr(task, f, None)) for f in ("_logits", "loss_from_logits")):
            raise DistillError(f"distill: task {task.name!r} has no classifier logits to distill; use a GLUE task")
        if not temperature > 0 or not 0.0 <= alpha <= 1.0:
            raise DistillError(f"distill: temperature must be > 0 and alpha in [0, 1], got {temperature}, {alpha}")
        self._task, self.teacher = task, teacher.eval().requires_grad_(False)
        self.temperature, self.alpha = temperature, alpha

    def __getattr__(self, name: str) -> Any:
        return getattr(self._task, name)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        with torch.no_grad():
            teacher_logits = self._task._logits(self.teacher, batch)
        student_logits = self._task._logits(model, batch)
        hard = self._task.loss_from_logits(student_logits, batch)
        return distillation_loss(student_logits, teacher_logits, hard, self.temperature, self.alpha)
