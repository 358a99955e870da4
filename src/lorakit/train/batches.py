"""Training micro-batches and the loss normalisation of one optimizer step.

One optimizer step sees a global batch, split over ``N`` processes and ``A`` accumulation steps into
micro-batches. The update must not depend on that split. For a token-level loss (every causal-LM task: the
mean cross-entropy over the label tokens) the mean of the micro-batches' means would weight the tokens of a
short micro-batch more than those of a long one. So each micro-batch contributes its loss *sum*, and the
step divides by the number of loss terms of the whole global batch, counted over all micro-batches and
summed over all processes before the first backward pass:

    loss_step = sum over micro-batches m, processes p of loss_sum(m, p) / total_terms

Tasks with a token-level loss provide ``loss_sum(model, batch) -> Tensor`` and ``loss_count(batch) -> int``
(:func:`token_loss_sum` and :func:`label_token_count` are theirs for causal LMs). Any other task's
``loss(model, batch)`` is a mean over the batch's examples; it counts as ``loss * rows`` with ``rows``
terms, which is the old per-micro-batch mean when the micro-batches are equal in size.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.data.packing import IGNORE_INDEX, forward_inputs, pack_batch
from lorakit.losses import causal_lm_loss, count_label_tokens, fused_loss_unsupported_reason

from .errors import TrainingError
from .tasks.base import Task

__all__ = ["training_batch", "loss_count", "loss_sum", "token_loss_sum", "token_loss_mean", "label_token_count",
           "step_scale", "TokenLoss", "FusedSetting", "uses_fused_loss", "check_fused_loss"]

FusedSetting = bool | Literal["auto"]
"""``training.fused_loss``: "auto" (fused where :func:`lorakit.causal_lm_loss` can run), True (required) or False."""


def training_batch(task: Any, items: Sequence[dict], max_length: int | None, data_cfg: Any) -> tuple[dict, int]:
    """The collated micro-batch of ``items`` and its number of real (non-pad) tokens.

    With ``data.packing`` the task's right-padded batch is packed into rows of ``data.max_length`` tokens
    (:func:`lorakit.data.packing.pack_batch`; ``data.truncate`` cuts an example longer than a row).
    ``max_length``: the random sequence length of this step (never set together with packing).
    """
    batch = task.collate(items, max_length=max_length)
    real_tokens = int(batch["attention_mask"].sum()) if "attention_mask" in batch else 0
    if getattr(data_cfg, "packing", False):
        batch = pack_batch(batch, int(data_cfg.max_length), truncate=bool(getattr(data_cfg, "truncate", False)))
    return batch, real_tokens


def loss_count(task: Any, batch: dict[str, Tensor]) -> int:
    """The number of loss terms of ``batch``: its label tokens for a token-level loss, else its rows."""
    if hasattr(task, "loss_count"):
        return int(task.loss_count(batch))
    return int(next(iter(batch.values())).shape[0])


def loss_sum(task: Any, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
    """The batch's loss summed over its :func:`loss_count` terms (a scalar tensor)."""
    if hasattr(task, "loss_sum"):
        return task.loss_sum(model, batch)
    return task.loss(model, batch) * loss_count(task, batch)


def label_token_count(batch: dict[str, Tensor]) -> int:
    """The targets of a causal-LM batch: label tokens after the first position of each row (position ``t``
    predicts label ``t + 1``). ``batch["labels"]``: ``(batch, seq)`` with -100 where nothing is scored."""
    return int(count_label_tokens(batch["labels"], ignore_index=IGNORE_INDEX))


def uses_fused_loss(model: nn.Module, fused: FusedSetting) -> bool:
    """Whether the token loss of ``model`` goes through :func:`lorakit.losses.causal_lm_loss` under the setting
    ``fused`` (``training.fused_loss``). Raises :class:`TrainingError` naming the model's class and the reason
    when ``fused`` is True and the fused loss cannot run ``model``."""
    if fused is False:
        return False
    reason = fused_loss_unsupported_reason(model)
    if reason is not None and fused is True:
        raise TrainingError(f"training.fused_loss is true, but lorakit.causal_lm_loss cannot run "
                            f"{_model_class(model)}: {reason}. Set training.fused_loss to \"auto\" (fused where "
                            "it can run) or false (the model's own logits)")
    return reason is None


def _model_class(model: nn.Module) -> str:
    inner = getattr(model, "module", None)  # DDP / DataParallel keep the model in .module
    name = type(model).__name__
    return f"{name} of {type(inner).__name__}" if isinstance(inner, nn.Module) else name


def check_fused_loss(task: Any, model: nn.Module) -> None:
    """Before training: :func:`uses_fused_loss` for a task with a ``fused_loss`` setting (the causal-LM tasks),
    so that ``training.fused_loss: true`` on a model it cannot run stops before the first step."""
    setting = getattr(task, "fused_loss", None)
    if setting is not None:
        uses_fused_loss(model, setting)


def token_loss_sum(model: nn.Module, batch: dict[str, Tensor], label_smoothing: float = 0.0,
                   fused: FusedSetting = "auto", chunk_size: int | None = None) -> Tensor:
    """Summed next-token cross-entropy (nats, with ``label_smoothing``) of a padded or packed causal-LM batch
    over its :func:`label_token_count` targets. ``batch``: ``input_ids``, ``labels`` ``(batch, seq)`` with
    ``attention_mask`` (padded) or ``position_ids`` (packed). Where :func:`uses_fused_loss` (``fused``: "auto",
    True or False), the sum comes from the hidden states through :func:`lorakit.losses.causal_lm_loss` (chunks
    of ``chunk_size`` tokens, None: its default) without the full logits; else from ``model(...).logits``
    ``(batch, seq, vocab)``. Both give the same value."""
    if uses_fused_loss(model, fused):
        return causal_lm_loss(model, batch["input_ids"], batch["labels"], attention_mask=batch.get("attention_mask"),
                              position_ids=batch.get("position_ids"), ignore_index=IGNORE_INDEX,
                              label_smoothing=label_smoothing, reduction="sum", chunk_size=chunk_size)
    out = model(**forward_inputs(batch))
    logits = out.logits if hasattr(out, "logits") else out
    shifted = logits[:, :-1].float()  # (batch, seq - 1, vocab): position t predicts token t + 1
    targets = batch["labels"][:, 1:]  # (batch, seq - 1)
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing, reduction="sum")


def token_loss_mean(model: nn.Module, batch: dict[str, Tensor], label_smoothing: float = 0.0,
                    fused: FusedSetting = "auto", chunk_size: int | None = None) -> Tensor:
    """:func:`token_loss_sum` divided by the number of targets (0 for a batch without any)."""
    return token_loss_sum(model, batch, label_smoothing, fused, chunk_size) / max(1, label_token_count(batch))


class TokenLoss(Task):
    """The loss methods of a causal-LM task (e2e/webnlg/dart, language modelling, sft): next-token
    cross-entropy on the label tokens of a padded or packed batch, as a sum (:meth:`loss_sum`) with its count
    (:meth:`loss_count`) for the loop, and as a mean (:meth:`loss`). ``fused_loss`` (``training.fused_loss``):
    through :func:`lorakit.losses.causal_lm_loss` (no full logits) where the model allows it ("auto"), always
    (True) or never (False); ``loss_chunk_size`` (``training.loss_chunk_size``): its tokens per chunk."""

    model_kind = "causal_lm"
    fused_loss: FusedSetting = "auto"
    loss_chunk_size: int | None = None

    def loss_sum(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return token_loss_sum(model, batch, self.label_smoothing, self.fused_loss, self.loss_chunk_size)

    @staticmethod
    def loss_count(batch: dict[str, Tensor]) -> int:
        return label_token_count(batch)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return token_loss_mean(model, batch, self.label_smoothing, self.fused_loss, self.loss_chunk_size)


def step_scale(total_terms: float, world_size: int) -> float:
    """The factor of each micro-batch's loss sum in the backward pass: DDP and FSDP average the gradients
    over the processes, so ``world_size / total_terms`` makes the update that of ``sum / total_terms``."""
    return world_size / max(total_terms, 1.0)

