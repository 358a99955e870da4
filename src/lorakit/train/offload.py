"""Activation checkpointing with offload: the saved block inputs wait for the backward pass in pinned CPU memory.

With plain (non-reentrant) checkpointing a transformer keeps one tensor per block for the backward pass: the
block's input ``(batch, seq, hidden)``; everything inside the block is recomputed. On a GPU these inputs are
``layers x batch x seq x hidden`` elements of device memory, the largest part of what remains at long sequences.
:func:`offloaded_checkpoint` runs :func:`torch.utils.checkpoint.checkpoint` under saved-tensor hooks that copy
each saved accelerator tensor into pinned host memory with a non-blocking copy (the host does not wait for it;
it is ordered on the compute stream, so no later kernel can overwrite the source first) and copy it back, again
non-blocking, when the backward pass recomputes the block. Tensors already on the CPU are kept as they are, so
on the CPU this is exactly plain checkpointing.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["offload_to_host", "offloaded_checkpoint", "use_offloaded_checkpoints"]


def _pack(tensor: Tensor) -> Tensor | tuple[torch.device, Tensor]:
    if tensor.device.type == "cpu":
        return tensor
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)  # pinned destination: the copy runs asynchronously to the host
    return tensor.device, host


def _unpack(packed: Tensor | tuple[torch.device, Tensor]) -> Tensor:
    if isinstance(packed, Tensor):
        return packed
    device, host = packed
    return host.to(device, non_blocking=True)


def offload_to_host() -> torch.autograd.graph.saved_tensors_hooks:
    """Saved-tensor hooks that keep every tensor saved for backward on an accelerator in pinned CPU memory."""
    return torch.autograd.graph.saved_tensors_hooks(_pack, _unpack)


def offloaded_checkpoint(function: Any, *args: Any, **kwargs: Any) -> Any:
    """:func:`torch.utils.checkpoint.checkpoint` whose saved inputs live in pinned CPU memory (accelerator
    tensors only). ``kwargs`` go to ``checkpoint`` (e.g. ``use_reentrant=False``)."""
    with offload_to_host():
        return checkpoint(function, *args, **kwargs)


def use_offloaded_checkpoints(model: nn.Module, **checkpoint_kwargs: Any) -> int:
    """Make every module of a Hugging Face model with checkpointing switched on checkpoint through
    :func:`offloaded_checkpoint` (transformers calls ``module._gradient_checkpointing_func``). Returns the
    number of modules changed."""
    func = partial(offloaded_checkpoint, **checkpoint_kwargs)
    changed = 0
    for module in model.modules():
        if hasattr(module, "_gradient_checkpointing_func"):
            module._gradient_checkpointing_func = func
            changed += 1
    return changed
