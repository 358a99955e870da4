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
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lorakit.data.packing import IGNORE_INDEX, forward_inputs, pack_batch

__all__ = ["training_batch", "loss_count", "loss_sum", "token_loss_sum", "token_loss_mean", "label_token_count",
           "step_scale", "pad_right", "TokenLoss"]


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


def pad_right(input_ids: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int) -> dict[str, Tensor]:
    """Token-id lists -> a right-padded causal-LM batch: ``input_ids``, ``attention_mask``, ``labels``
    ``(batch, longest)`` int64 (labels -100 on the padding)."""
    width = max(len(s) for s in input_ids)
    ids = torch.full((len(input_ids), width), pad_id, dtype=torch.long)
    label_t = torch.full((len(input_ids), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(input_ids), width), dtype=torch.long)
    for i, (s, lab) in enumerate(zip(input_ids, labels, strict=True)):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        label_t[i, :len(lab)] = torch.as_tensor(lab, dtype=torch.long)
        mask[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": mask, "labels": label_t}


def label_token_count(batch: dict[str, Tensor]) -> int:
    """The targets of a causal-LM batch: label tokens after the first position of each row (position ``t``
    predicts label ``t + 1``). ``batch["labels"]``: ``(batch, seq)`` with -100 where nothing is scored."""
    return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


def token_loss_sum(model: nn.Module, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
    """Summed next-token cross-entropy (nats, with ``label_smoothing``) of a padded or packed causal-LM batch
    over its :func:`label_token_count` targets. The model maps ``input_ids`` ``(batch, seq)`` (with
    ``attention_mask`` or packed ``position_ids``) to ``.logits`` ``(batch, seq, vocab)``."""
    out = model(**forward_inputs(batch))
    logits = out.logits if hasattr(out, "logits") else out
    shifted = logits[:, :-1].float()  # (batch, seq - 1, vocab): position t predicts token t + 1
    targets = batch["labels"][:, 1:]  # (batch, seq - 1)
    return F.cross_entropy(shifted.reshape(-1, shifted.shape[-1]), targets.reshape(-1), ignore_index=IGNORE_INDEX,
                           label_smoothing=label_smoothing, reduction="sum")


def token_loss_mean(model: nn.Module, batch: dict[str, Tensor], label_smoothing: float = 0.0) -> Tensor:
    """:func:`token_loss_sum` divided by the number of targets (0 for a batch without any)."""
    return token_loss_sum(model, batch, label_smoothing) / max(1, label_token_count(batch))


class TokenLoss:
    """The loss methods of a causal-LM task (a mixin; the task sets ``label_smoothing``): next-token
    cross-entropy on the label tokens of a padded or packed batch, as a sum (:meth:`loss_sum`) with its count
    (:meth:`loss_count`) for the loop, and as a mean (:meth:`loss`)."""

    label_smoothing: float = 0.0

    def loss_sum(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return token_loss_sum(model, batch, self.label_smoothing)

    @staticmethod
    def loss_count(batch: dict[str, Tensor]) -> int:
        return label_token_count(batch)

    def loss(self, model: nn.Module, batch: dict[str, Tensor]) -> Tensor:
        return token_loss_mean(model, batch, self.label_smoothing)


def step_scale(total_terms: float, world_size: int) -> float:
    """The factor of each micro-batch's loss sum in the backward pass: DDP and FSDP average the gradients
    over the processes, so ``world_size / total_terms`` makes the update that of ``sum / total_terms``."""
    return world_size / max(total_terms, 1.0)

