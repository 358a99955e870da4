"""One transaction for every adapter-management call: on any failure the model is restored as it was.

``with adapter_transaction(model): ...`` snapshots, before the block runs:

- the structure and the modules' own state: every attribute of every module, dicts, lists and sets copied one
  level deep. That covers each module's children, parameters and buffers (``_modules`` / ``_parameters`` /
  ``_buffers``: a wrapper swapped in by ``set_module``, an adapter entry added to a ``ParameterDict``) and the
  wrappers' active adapters, ranks, scalings, variants and merged flag;
- the tensors that adapter management writes in place: every LoRA parameter and every parameter that trains
  (modules_to_save, biases), cloned; frozen base weights are never written by these calls and are kept by
  reference;
- every parameter's ``requires_grad`` flag and the adapter configs (``model._lorakit_configs``).

If the block raises (anything, KeyboardInterrupt included), all of it is put back and the exception goes on.
Cost: one pass over the modules and a copy of the adapter and trainable tensors (small next to the model).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import is_lora_param_name

__all__ = ["adapter_transaction", "transactional"]

_MISSING = object()
_MAPPINGS = ("_modules", "_parameters", "_buffers")  # restored as the structure


@dataclass
class _Snapshot:
    modules: list[tuple[nn.Module, dict[str, Any]]]  # each module and its attributes, copied one level deep
    tensors: list[tuple[Tensor, Tensor]]  # (live tensor, its saved copy)
    flags: list[tuple[Tensor, bool]]
    configs: Any


def _copied(value: Any) -> Any:
    return type(value)(value) if isinstance(value, (dict, list, set)) else value


def _snapshot(model: nn.Module) -> _Snapshot:
    modules = [(m, {k: _copied(v) for k, v in vars(m).items()}) for _, m in model.named_modules()]
    params = list(model.named_parameters())
    tensors = [(p, p.detach().clone()) for n, p in params if p.requires_grad or is_lora_param_name(n)]
    flags = [(p, p.requires_grad) for _, p in params]
    configs = getattr(model, "_lorakit_configs", _MISSING)
    return _Snapshot(modules, tensors, flags, _copied(configs))


def _restore(model: nn.Module, snap: _Snapshot) -> None:
    for module, saved in snap.modules:
        attributes = vars(module)
        for key in [k for k in attributes if k not in saved]:
            del attributes[key]  # state the interrupted call added
        for key, value in saved.items():
            if key in _MAPPINGS:  # the structure: children, parameters, buffers (keep the mapping objects)
                attributes[key].clear()
                attributes[key].update(value)
            else:
                attributes[key] = value
    with torch.no_grad():
        for live, saved_tensor in snap.tensors:
            if live.shape == saved_tensor.shape:
                live.copy_(saved_tensor)
            else:  # resized in place: give it back its old storage
                live.set_(saved_tensor)
    for param, flag in snap.flags:
        param.requires_grad_(flag)
    if snap.configs is _MISSING:
        vars(model).pop("_lorakit_configs", None)
    else:
        model._lorakit_configs = snap.configs


@contextmanager
def adapter_transaction(model: nn.Module) -> Iterator[nn.Module]:
    """Run the block on ``model``; if it raises, restore the model's structure, adapter tensors, trainable
    flags, active adapters and adapter configs as they were before it, then re-raise."""
    snap = _snapshot(model)
    try:
        yield model
    except BaseException:
        _restore(model, snap)
        raise


def transactional(function: Callable) -> Callable:
    """Make ``function(model, ...)`` run inside ``adapter_transaction(model)``: on failure, nothing changed."""

    @functools.wraps(function)
    def run(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with adapter_transaction(model):
            return function(model, *args, **kwargs)

    return run
