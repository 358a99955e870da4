"""Magnitude pruning of an encoder's linear weights, one-shot or gradual, as a fine-tuning baseline.

``MagnitudePruner(model, sparsity=0.5, schedule="gradual", end_step=T)`` keeps, in every pruned weight
matrix W: (out, in), the ``round((1 - s) * W.numel())`` largest |W| entries and sets the rest to zero, where
``s`` is the sparsity of the moment:

* ``one_shot``: ``s = sparsity`` from the start (the pretrained weights are pruned before training);
* ``gradual``: the cubic schedule of Zhu & Gupta (2017), ``s(t) = sparsity * (1 - (1 - min(1, t / T))^3)``
  after optimizer step ``t`` (0 at the start, ``sparsity`` from step ``T`` on).

The remaining weights then fine-tune: :meth:`MagnitudePruner.attach` masks the pruned entries' gradients
(so gradient clipping sees the pruned model) and, after every optimizer step, zeroes them again (Adam's
moments from before an entry was pruned would otherwise move it) and advances the schedule.

No mask is stored: the pruned entries are exactly the zeros of the weights, and since the sparsity never
decreases, ranking by |W| puts them first again. A run resumed from a checkpoint (which holds the weights)
therefore rebuilds the same masks (:meth:`MagnitudePruner.resume`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .errors import LorakitError
from .lora.config import in_modules
from .methods import HEAD_MODULES

__all__ = ["PruningError", "MagnitudePruner", "SCHEDULES", "prunable_linears", "nonzero_parameters"]

SCHEDULES = ("one_shot", "gradual")


class PruningError(LorakitError, ValueError):
    """A sparsity outside [0, 1), an unknown schedule, or a model with nothing to prune."""


def prunable_linears(model: nn.Module, head: tuple[str, ...] = HEAD_MODULES) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules outside the task head (the encoder's attention and feed-forward matrices)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not in_modules(n, head)]


def nonzero_parameters(model: nn.Module) -> int:
    """The parameters a sparse format would store: every non-zero entry of every parameter."""
    return sum(int(torch.count_nonzero(p.detach())) for p in model.parameters())


class MagnitudePruner:
    """Prunes the weights of ``prunable_linears(model, head)`` by magnitude (see the module docstring).

    ``end_step``: T of the gradual schedule (optimizer steps; ignored by ``one_shot``). Construction prunes
    to ``sparsity_at(0)`` (one-shot: the target; gradual: nothing yet).
    """

    def __init__(self, model: nn.Module, sparsity: float, schedule: str = "one_shot", end_step: int = 1,
                 head: tuple[str, ...] = HEAD_MODULES):
        if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.0 <= sparsity < 1.0:
            raise PruningError(f"prune: sparsity must be a fraction in [0, 1) (0.5 prunes half of each weight "
                               f"matrix), got {sparsity!r}")
        if schedule not in SCHEDULES:
            raise PruningError(f"prune: unknown schedule {schedule!r}; choose one of {list(SCHEDULES)}")
        if isinstance(end_step, bool) or not isinstance(end_step, int) or end_step < 1:
            raise PruningError(f"prune: end_step (the step at which gradual pruning reaches its target) must be an "
                               f"integer >= 1, got {end_step!r}")
        self.layers = prunable_linears(model, head)
        if not self.layers:
            raise PruningError(f"prune: {type(model).__name__} has no nn.Linear outside the head {list(head)} to "
                               "prune")
        self.sparsity, self.schedule, self.end_step = float(sparsity), schedule, end_step
        self.masks: list[Tensor] = [torch.ones_like(m.weight, dtype=torch.bool) for _, m in self.layers]
        self.step = 0
        self._hooks: list = []
        self.prune_to(self.sparsity_at(0))

    def sparsity_at(self, step: int) -> float:
        """The target sparsity after optimizer step ``step`` (0: before training)."""
        if self.schedule == "one_shot":
            return self.sparsity
        progress = min(1.0, step / self.end_step)
        return self.sparsity * (1.0 - (1.0 - progress) ** 3)

    @torch.no_grad()
    def prune_to(self, sparsity: float) -> None:
        """Zero the pruned entries, then keep the largest ``1 - sparsity`` of each weight by |W|."""
        for (_, layer), mask in zip(self.layers, self.masks, strict=True):
            weight = layer.weight
            weight.mul_(mask)
            keep = round((1.0 - sparsity) * weight.numel())
            new = torch.zeros(weight.numel(), dtype=torch.bool, device=weight.device)
            new[torch.topk(weight.abs().flatten(), keep, sorted=False).indices] = True
            mask.copy_(new.view_as(mask))  # in place: the gradient hooks hold this tensor
            weight.mul_(mask)

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Mask gradients of the pruned entries, and after each ``optimizer.step()`` re-zero and advance."""
        for (_, layer), mask in zip(self.layers, self.masks, strict=True):
            self._hooks.append(layer.weight.register_hook(lambda grad, mask=mask: grad * mask))
        self._hooks.append(optimizer.register_step_post_hook(lambda *_: self.after_step()))

    def after_step(self) -> None:
        self.step += 1
        self.prune_to(self.sparsity_at(self.step))

    @torch.no_grad()
    def resume(self, step: int) -> None:
        """After loading a checkpoint's weights written after optimizer step ``step``: masks = non-zeros."""
        self.step = step
        for (_, layer), mask in zip(self.layers, self.masks, strict=True):
            mask.copy_(layer.weight != 0)

    def detach(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def stats(self) -> dict[str, int | float]:
        """``pruned_weights``: entries in the pruned matrices; ``pruned_zeros``: how many are zero now."""
        total = sum(m.numel() for m in self.masks)
        zeros = sum(int((layer.weight == 0).sum()) for _, layer in self.layers)
        return {"pruned_weights": total, "pruned_zeros": zeros, "sparsity": zeros / max(total, 1)}
