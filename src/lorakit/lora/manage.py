"""Adapter management: :func:`inject` adapters into a model, switch, delete, disable, merge, unload and
combine them.

``inject(model, config)`` wraps every module ``config`` selects (:func:`lorakit.lora.config.find_targets`)
in place with the wrapper :data:`lorakit.lora.wrappers.WRAPPERS` names for its type, keeping the original
module as ``<name>.base_layer``. Every function here checks its input before it changes anything, and the
ones that change adapters run in one transaction (:mod:`lorakit.lora.transaction`): on any error the model
is as it was.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .. import quant
from ..layers import is_lora_param_name
from .config import DEFAULT_ADAPTER, LoraConfig, find_targets, in_modules
from .transaction import adapter_transaction, transactional
from .wrappers import (
    WRAPPERS,
    AdapterError,
    LoraLinear,
    LoraModule,
    UnknownAdapterError,
    UnsupportedModuleError,
    wrapper_factory,
)


# ============================================================================ inject & co
def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoraModule]]:
    """(name, wrapper) for every LoRA wrapper of ``model``, in model order."""
    for name, module in model.named_modules():
        if isinstance(module, LoraModule):
            yield name, module


def adapter_names(model: nn.Module) -> list[str]:
    """Every adapter name on ``model``, in the order they were added."""
    names: list[str] = []
    for _, module in lora_modules(model):
        names += [n for n in module.lora_A if n not in names]
    return names


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of ``model``'s submodule ``name`` (a dotted path, e.g. ``h.0.attn.c_attn``)."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _check_adapter_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) or name == "__base__":
        raise AdapterError(
            f"adapter_name must be a non-empty identifier (letters, digits, '_' or '-'), not '__base__'; "
            f"got {name!r}"
        )


@transactional
def inject(model: nn.Module, config: LoraConfig, adapter_name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Add a LoRA adapter to every module ``config`` selects, in place, and return ``model``.

    Matched modules are wrapped (``name`` -> ``name.base_layer`` + ``name.lora_A[adapter_name]``...)
    or, if already wrapped, get one more adapter. Everything but the LoRA parameters,
    ``config.modules_to_save`` and the biases chosen by ``config.bias`` is frozen.
    All checks run before the model is touched: on error, nothing has changed.
    """
    _check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise AdapterError(
            f"adapter name {adapter_name!r} is already used on this model (adapters: {adapter_names(model)}); "
            "pick another name or delete the existing adapter first"
        )
    targets = find_targets(model, config)
    plan = []
    for name in targets:
        module = model.get_submodule(name)
        if isinstance(module, LoraModule):
            plan.append((name, module, None))
            continue
        factory = wrapper_factory(module)
        if factory is None:
            supported = ", ".join(sorted(t.__name__ for t in WRAPPERS))
            raise UnsupportedModuleError(
                f"module {name!r} of type {type(module).__name__} matched target_modules, but lorakit "
                f"cannot adapt that type (supported: {supported}); narrow target_modules or exclude it"
            )
        plan.append((name, module, factory))
    for pattern in config.modules_to_save or []:
        if not any(n == pattern or n.endswith("." + pattern) for n, _ in model.named_modules()):
            raise AdapterError(f"modules_to_save entry {pattern!r} matches no module of {type(model).__name__}")

    wrappers = []
    for name, module, factory in plan:  # build all wrappers first; the model is swapped in after
        wrapper = module if factory is None else factory(module, config)
        if config.slices_for(name) and not isinstance(wrapper, LoraLinear):
            raise AdapterError(f"enable_lora applies to linear layers only; {name!r} is {type(module).__name__}")
        wrappers.append((name, wrapper, factory is not None))
    activate = not active_adapters(model)  # as in PEFT: a further adapter is added inactive
    variant = config.variant()
    added = []
    try:
        for name, wrapper, _ in wrappers:
            wrapper.add_adapter(
                adapter_name, config.rank_for(name), config.alpha_for(name), config.lora_dropout,
                config.use_rslora, config.init_lora_weights, config.slices_for(name), activate=activate,
                variant=variant,
            )
            added.append(wrapper)
    except Exception:
        for wrapper in added:
            wrapper.delete_adapter(adapter_name)
        raise
    for name, wrapper, is_new in wrappers:
        if is_new:
            set_module(model, name, wrapper)
    _set_trainable(model, config)
    model._lorakit_configs = {**getattr(model, "_lorakit_configs", {}), adapter_name: config}
    return model


def extra_trainable_names(model: nn.Module, config: LoraConfig) -> list[str]:
    """Non-LoRA parameters that train and travel with the adapter: modules_to_save and chosen biases."""
    lora_biases = {f"{n}.base_layer.bias" for n, _ in lora_modules(model)}
    names = []
    for name, _ in model.named_parameters():
        if is_lora_param_name(name):
            continue
        is_bias = name.split(".")[-1] == "bias"
        if (in_modules(name, config.modules_to_save) or (config.bias == "all" and is_bias)
                or (config.bias == "lora_only" and name in lora_biases)):
            names.append(name)
    return names


def _set_trainable(model: nn.Module, config: LoraConfig) -> None:
    extra = set(extra_trainable_names(model, config))
    for name, param in model.named_parameters():
        param.requires_grad = name in extra
    for _, module in lora_modules(model):
        module.refresh_trainable()


def get_config(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER) -> LoraConfig:
    configs = getattr(model, "_lorakit_configs", {})
    if adapter_name not in configs:
        raise UnknownAdapterError(f"no adapter named {adapter_name!r} on this model (adapters: {sorted(configs)})")
    return configs[adapter_name]


def check_adapters_known(model: nn.Module, names: list[str], allow_base: bool = False) -> None:
    """Raise if an adapter in ``names`` is not on ``model`` (``allow_base``: ``"__base__"``, no adapter, is)."""
    known = adapter_names(model)
    unknown = [n for n in names if n not in known and not (allow_base and n == "__base__")]
    if unknown:
        raise AdapterError(f"unknown adapter name(s) {unknown}; this model has {known}"
                         + (" (and '__base__' for no adapter)" if allow_base else ""))


def active_adapters(model: nn.Module) -> list[str]:
    """The adapters in use, in order (their updates add up)."""
    names: list[str] = []
    for _, module in lora_modules(model):
        names += [n for n in module.active_adapters if n not in names]
    return names


@transactional
def set_adapter(model: nn.Module, names: str | list[str]) -> None:
    """Use adapter ``names`` (one name or a list whose updates add up); only their LoRA weights train."""
    names = [names] if isinstance(names, str) else list(names)
    check_adapters_known(model, names)
    for _, module in lora_modules(model):
        module.set_active(names)
        module.refresh_trainable()


@transactional
def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name`` everywhere; wrappers left with no adapter become their base layer again."""
    check_adapters_known(model, [name])
    _drop_adapter(model, name)


@transactional
def remove_adapter(model: nn.Module, adapter_name: str) -> None:
    """Deprecated alias of :func:`delete_adapter` (which also checks the name); removed in the next release."""
    warnings.warn("lorakit.remove_adapter is deprecated and will be removed in the next release; use "
                  "lorakit.delete_adapter", DeprecationWarning, stacklevel=2)
    _drop_adapter(model, adapter_name)


@contextmanager
def disable_adapters(model: nn.Module):
    """Within the block the model behaves as the base model (merged modules are unmerged, then restored)."""
    saved = [(m, list(m.active_adapters), m.merged) for _, m in lora_modules(model)]
    try:
        for module, _, _ in saved:
            module.unmerge()
            module.active_adapters = []
        yield model
    finally:
        for module, active, merged in saved:
            module.active_adapters = active
            if merged:
                module.merge()


def _adapter_paths(model: nn.Module, name: str) -> set[str]:
    return {path for path, m in lora_modules(model) if name in m.lora_A}


@transactional
def add_weighted_adapter(model: nn.Module, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "linear", svd_rank: int | None = None) -> None:
    """Create ``adapter_name`` from a weighted combination of existing adapters (PEFT's semantics).

    ``"linear"``: A = sum sign(w_i s_i) sqrt|w_i s_i| A_i, B = sum sqrt|w_i s_i| B_i (equal ranks);
    ``"cat"``: A = [w_i s_i A_i] stacked, B = [B_i] side by side (rank = sum of ranks; exact sum of
    weighted updates); ``"svd"``: the top ``svd_rank`` (default: largest rank) singular triplets of
    sum w_i s_i B_i A_i. The new adapter has scaling 1, is inactive and frozen (use ``set_adapter``).
    """
    if combination_type not in ("linear", "cat", "svd"):
        raise AdapterError(f"combination_type must be 'linear', 'cat' or 'svd', got {combination_type!r}")
    if len(weights) != len(adapters):
        raise AdapterError(f"got {len(weights)} weights for {len(adapters)} adapters; give one weight per adapter")
    if not adapters:
        raise AdapterError("adapters is empty: name at least one adapter to combine")
    check_adapters_known(model, adapters)
    _check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise AdapterError(f"adapter name {adapter_name!r} is already used on this model")
    if len(adapters) == 1:
        combination_type = "linear"
    if combination_type == "linear":
        paths = [_adapter_paths(model, a) for a in adapters]
        if any(p != paths[0] for p in paths):
            differ = sorted(set.union(*paths) - set.intersection(*paths))
            raise AdapterError(f"'linear' combination needs adapters on the same modules; these modules differ: "
                             f"{differ[:8]}{' ...' if len(differ) > 8 else ''} (use 'cat' or 'svd')")
    for path, module in lora_modules(model):
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in module.lora_A]
        if not present:
            continue
        with_variant = [module.variants[a] for a, _ in present if a in module.variants]
        if with_variant:
            raise AdapterError(f"{path}: {with_variant[0].name} adapters cannot be combined")
        ranks = {a: module.lora_A[a].shape[0] for a, _ in present}
        if combination_type == "linear" and len(set(ranks.values())) > 1:
            raise AdapterError(f"{path}: 'linear' combination needs equal ranks, got {ranks}")
        with torch.no_grad():
            if combination_type == "linear":
                new_a = sum(math.copysign(math.sqrt(abs(w * module.scaling[a])), w * module.scaling[a])
                            * module.lora_A[a] for a, w in present)
                new_b = sum(math.sqrt(abs(w * module.scaling[a])) * module.dense_b(a) for a, w in present)
            elif combination_type == "cat":
                new_a = torch.cat([w * module.scaling[a] * module.lora_A[a] for a, w in present], 0)
                new_b = torch.cat([module.dense_b(a) for a, _ in present], 1)
            else:
                rank = svd_rank or max(module.lora_A[a].shape[0] for a in adapters if a in module.lora_A)
                delta = sum(w * module.lora_matrix(a) for a, w in present)
                u, sv, vh = torch.linalg.svd(delta.float(), full_matrices=True)
                new_b, new_a = (u[:, :rank] * sv[:rank]).to(delta.dtype), vh[:rank].to(delta.dtype)
        rank = new_a.shape[0]
        module.add_adapter(adapter_name, rank, rank, 0.0, activate=False)
        with torch.no_grad():
            module.lora_A[adapter_name].copy_(new_a)
            module.lora_B[adapter_name].copy_(new_b)
        module.refresh_trainable()
    base = get_config(model, adapters[0]) if adapters[0] in getattr(model, "_lorakit_configs", {}) else None
    targets = sorted(set.union(*[_adapter_paths(model, a) for a in adapters]))
    new_config = LoraConfig(r=max(module.rank.get(adapter_name, 1) for _, module in lora_modules(model)),
                            lora_alpha=1, target_modules=[re.escape(t) for t in targets])
    new_config = dataclasses.replace(
        new_config, target_modules="|".join(re.escape(t) for t in targets),
        rank_pattern={re.escape(p): m.rank[adapter_name] for p, m in lora_modules(model) if adapter_name in m.rank},
        alpha_pattern={re.escape(p): m.rank[adapter_name] for p, m in lora_modules(model) if adapter_name in m.rank},
        modules_to_save=base.modules_to_save if base else None,
        base_model_name_or_path=base.base_model_name_or_path if base else None,
    )
    model._lorakit_configs = {**getattr(model, "_lorakit_configs", {}), adapter_name: new_config}



def merge(model: nn.Module) -> nn.Module:
    """Fold the active adapters into a merged copy of each adapted weight (exact unmerge later)."""
    for _, module in lora_modules(model):
        module.merge()
    return model


def unmerge(model: nn.Module) -> nn.Module:
    for _, module in lora_modules(model):
        module.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Write base + active updates into each base layer's weight and put the base layers back.

    Returns ``model`` with no LoRA modules left; its outputs equal the adapted model's (within
    float rounding) at the cost of no extra memory. A 4-bit base gets its merged weight re-quantized, which
    rounds it: a :class:`lorakit.quant.QuantizedMergeWarning` reports that error (dequantize first for an
    exact, dense merge).
    """
    rounding = {}
    for name, module in list(lora_modules(model)):
        base, error = module.merged_base_layer()
        if error is not None:
            rounding[name] = error
        set_module(model, name, base)
    if hasattr(model, "_lorakit_configs"):
        del model._lorakit_configs
    if rounding:
        warnings.warn(quant.QuantizedMergeWarning(rounding), stacklevel=2)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put the original base layers back, discarding every adapter."""
    for name, module in list(lora_modules(model)):
        set_module(model, name, module.base_layer)
    if hasattr(model, "_lorakit_configs"):
        del model._lorakit_configs
    return model


def _drop_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove adapter ``adapter_name`` wherever it is (none: nothing happens)."""
    for name, module in list(lora_modules(model)):
        if adapter_name in module.lora_A:
            module.delete_adapter(adapter_name)
            if not len(module.lora_A):
                set_module(model, name, module.base_layer)
    getattr(model, "_lorakit_configs", {}).pop(adapter_name, None)


def restore_on_error(model: nn.Module, adapter_name: str | None = None):
    """Kept for callers of the old name: :func:`lorakit.lora.transaction.adapter_transaction` (restores the
    whole model on an error, whatever the block did; ``adapter_name`` is not needed)."""
    return adapter_transaction(model)


def trainable_parameters(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: ``total``, ``trainable``, ``percent`` and, per LoRA module, its ranks.

    ``lora`` counts LoRA parameters only; ``other_trainable`` the rest (heads, biases). A 4-bit base layer
    counts its weights, not its packed bytes (:func:`lorakit.quant.logical_numels`); ``stored_bytes`` is the
    memory of all parameters and buffers as stored.
    """
    numel = quant.logical_numels(model)
    named = dict(model.named_parameters())
    trainable = sum(numel[n] for n, p in named.items() if p.requires_grad)
    lora = sum(numel[n] for n in named if is_lora_param_name(n))
    ranks = {name: dict(module.rank) for name, module in lora_modules(model)}
    return {
        "total": sum(numel.values()),
        "trainable": trainable,
        "percent": 100.0 * trainable / max(sum(numel.values()), 1),
        "lora": lora,
        "other_trainable": trainable - sum(numel[n] for n, p in named.items()
                                           if p.requires_grad and is_lora_param_name(n)),
        "ranks": ranks,
        "stored_bytes": quant.stored_bytes(model),
    }


def print_trainable_parameters(model: nn.Module) -> str:
    """A printable summary of :func:`trainable_parameters`; also printed."""
    info = trainable_parameters(model)
    lines = [
        f"trainable params: {info['trainable']:,} || all params: {info['total']:,} || "
        f"trainable%: {info['percent']:.4f} (LoRA {info['lora']:,}, other {info['other_trainable']:,})"
    ]
    for name, ranks in info["ranks"].items():
        lines.append(f"  {name}: " + ", ".join(f"{a} r={r}" for a, r in ranks.items()))
    text = "\n".join(lines)
    print(text)
    return text
