"""Adapter files: PEFT's layout both ways, and import of loralib / LoRA-paper checkpoints.

A PEFT adapter directory holds ``adapter_config.json`` (``peft_type: "LORA"`` and LoraConfig's
fields) and ``adapter_model.safetensors`` with keys ``base_model.model.<module path>.lora_A.weight``
/ ``.lora_B.weight`` (embeddings: ``.lora_embedding_A`` / ``.lora_embedding_B``; convolutions: A as
(r, in, *kernel) and B as (out, r, 1, ...)), ``modules_to_save`` under their original keys and
trained biases of adapted layers as ``<path>.base_layer.bias``.

Nothing here unpickles by default: safetensors is read directly, and ``.bin``/``.pt`` files go
through ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .errors import LorakitError
from .fileio import atomic_write
from .functional import lora_scaling
from .layers import is_lora_param_name
from .lora import (
    DEFAULT_ADAPTER,
    LoraConfig,
    LoraConv,
    LoraEmbedding,
    LoraModule,
    extra_trainable_names,
    get_config,
    inject,
    lora_modules,
    restore_on_error,
)


class AdapterFileError(LorakitError, ValueError):
    """An adapter file or checkpoint that cannot be read into this model, or an adapter that PEFT's format
    cannot hold; nothing was changed."""


class AdapterFileNotFoundError(LorakitError, FileNotFoundError):
    """An adapter directory without its config or weights file."""


CONFIG_NAME = "adapter_config.json"
WEIGHTS_NAME = "adapter_model.safetensors"
PICKLE_WEIGHTS_NAME = "adapter_model.bin"
PREFIX = "base_model.model."

# PEFT config fields lorakit reads.
_PEFT_FIELDS = {
    "r", "lora_alpha", "lora_dropout", "target_modules", "exclude_modules", "layers_to_transform",
    "layers_pattern", "rank_pattern", "alpha_pattern", "bias", "modules_to_save", "fan_in_fan_out",
    "use_rslora", "use_dora", "base_model_name_or_path", "task_type",
}
# Fields that describe the file or the training run, not the adapter's function.
_PEFT_IGNORED = {
    "peft_type", "peft_version", "inference_mode", "auto_mapping", "revision", "init_lora_weights",
    "megatron_core", "qalora_group_size", "ensure_weight_tying", "lorakit",
}


# ============================================================================ writing
def pissa_initial_factors(module: LoraModule, adapter: str) -> tuple[Tensor, Tensor] | None:
    """(A0, B0) a PiSSA adapter started from, or None for other adapters."""
    a0 = getattr(module, f"pissa_init_A_{adapter}", None)
    return None if a0 is None else (a0, getattr(module, f"pissa_init_B_{adapter}"))


def _module_tensors(module: LoraModule, adapter: str, pissa_to_lora: bool = False) -> dict[str, Tensor]:
    """One adapter's tensors in PEFT's per-module layout (keys relative to the module).

    ``pissa_to_lora``: a PiSSA adapter (A, B) that started from (A0, B0) on the residual weight is
    written as the plain rank-2r LoRA [A; A0], [B, -B0] that applies to the original weight.
    """
    a, b = module.lora_A[adapter], module.dense_b(adapter)
    initial = pissa_initial_factors(module, adapter) if pissa_to_lora else None
    if initial is not None:
        a, b = torch.cat([a, initial[0]], 0), torch.cat([b, -initial[1]], 1)
    if isinstance(module, LoraEmbedding):
        return {"lora_embedding_A": a, "lora_embedding_B": b}
    if isinstance(module, LoraConv):
        conv = module.base_layer
        if conv.groups != 1:
            raise AdapterFileError(
                f"PEFT's file format has no LoRA for grouped convolutions (groups={conv.groups}); "
                "save this model with lorakit.lora_state_dict instead"
            )
        kernel = tuple(conv.weight.shape[2:])
        return {
            "lora_A.weight": a.reshape(a.shape[0], conv.in_channels, *kernel),
            "lora_B.weight": b.reshape(b.shape[0], b.shape[1], *([1] * len(kernel))),
        }
    tensors = {"lora_A.weight": a, "lora_B.weight": b}
    if adapter in module.lora_magnitude_vector:
        tensors["lora_magnitude_vector"] = module.lora_magnitude_vector[adapter]
    return tensors


def adapter_state_dict(model: nn.Module, adapter_name: str = DEFAULT_ADAPTER,
                       pissa_to_lora: bool = False) -> tuple[dict[str, Tensor], dict]:
    """The adapter's tensors under PEFT's keys, and the PEFT config dict that describes them.

    ``pissa_to_lora``: write a PiSSA adapter as the equivalent plain LoRA for the original base
    weights (rank doubled), so it can be shared without the residual model.
    """
    config = get_config(model, adapter_name)
    tensors: dict[str, Tensor] = {}
    rank_pattern = dict(config.rank_pattern)
    alpha_pattern = dict(config.alpha_pattern)
    for path, module in lora_modules(model):
        if adapter_name not in module.lora_A:
            continue
        for key, value in _module_tensors(module, adapter_name, pissa_to_lora).items():
            tensors[f"{PREFIX}{path}.{key}"] = value
        slices = module.slices[adapter_name]
        doubled = pissa_to_lora and pissa_initial_factors(module, adapter_name) is not None
        if slices or doubled:  # saved as a dense LoRA of rank r * n_enabled (sliced) or 2r (PiSSA -> LoRA)
            r = module.rank[adapter_name]
            dense_rank = r * sum(slices) if slices else 2 * r
            alpha = config.alpha_for(path)
            factor = (dense_rank / r) ** 0.5 if config.use_rslora else dense_rank / r
            key = re.escape(path)
            rank_pattern[key] = dense_rank
            alpha_pattern[key] = alpha * factor
    state = dict(model.named_parameters())
    for name in extra_trainable_names(model, config):
        tensors[PREFIX + name] = state[name]
    peft_config = {k: v for k, v in config.to_dict().items() if k in _PEFT_FIELDS}
    peft_config.update(
        peft_type="LORA", rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, use_dora=config.use_dora,
        init_lora_weights=config.init_lora_weights if not pissa_to_lora else True, inference_mode=True,
        fan_in_fan_out=any(getattr(m, "fan_in_fan_out", False) for _, m in lora_modules(model)),
    )
    if isinstance(peft_config["target_modules"], list):
        peft_config["target_modules"] = sorted(set(peft_config["target_modules"]))
    return tensors, peft_config


def save_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str = DEFAULT_ADAPTER,
                 pissa_to_lora: bool = False) -> Path:
    """Write ``adapter_config.json`` and ``adapter_model.safetensors`` in PEFT's layout.

    ``peft.PeftModel.from_pretrained(base, directory)`` loads the result with the same outputs.
    Both files are written atomically. ``pissa_to_lora=True`` writes a PiSSA adapter as a plain LoRA
    for the original (not residual) base model.
    """
    tensors, peft_config = adapter_state_dict(model, adapter_name, pissa_to_lora)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, p, metadata={"format": "pt"}))
    text = json.dumps(peft_config, indent=2, sort_keys=True)
    atomic_write(directory / CONFIG_NAME, text)
    return directory


# ============================================================================ reading
def read_peft_config(directory: str | os.PathLike) -> LoraConfig:
    """Parse a PEFT (or lorakit) ``adapter_config.json`` into a LoraConfig.

    Raises ValueError for another ``peft_type`` and for any option lorakit does not support
    (named; never silently dropped).
    """
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise AdapterFileNotFoundError(f"{path} not found: an adapter directory needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise AdapterFileError(f"{path} is not valid JSON: {err}") from err
    if data.get("peft_type", "LORA") != "LORA":
        raise AdapterFileError(f"{path}: peft_type {data.get('peft_type')!r} is not supported; "
                               "lorakit reads LORA adapters")
    unsupported = [
        k for k, v in data.items()
        if k not in _PEFT_FIELDS and k not in _PEFT_IGNORED and v not in (None, False, {}, [], "")
    ]
    if data.get("init_lora_weights") not in (None, True, False, "gaussian", "pissa"):
        unsupported.append("init_lora_weights")
    if unsupported:
        raise AdapterFileError(
            f"{path}: option(s) lorakit does not support: "
            + ", ".join(f"{k}={data[k]!r}" for k in sorted(unsupported))
        )
    fields = {k: v for k, v in data.items() if k in _PEFT_FIELDS and v is not None}
    fields.setdefault("rank_pattern", {})
    fields.setdefault("alpha_pattern", {})
    return LoraConfig(**fields)


def _read_tensors(directory: Path) -> dict[str, Tensor]:
    safetensors_path, bin_path = directory / WEIGHTS_NAME, directory / PICKLE_WEIGHTS_NAME
    if safetensors_path.is_file():
        try:
            return load_file(str(safetensors_path))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterFileError(f"{safetensors_path} is corrupt or truncated ({err}); "
                                   "re-download or re-save it") from err
    if bin_path.is_file():
        return load_checkpoint(bin_path)
    raise AdapterFileNotFoundError(f"no {WEIGHTS_NAME} (or {PICKLE_WEIGHTS_NAME}) in {directory}")


def load_checkpoint(path: str | os.PathLike) -> dict[str, Tensor]:
    """Read a ``.safetensors`` file, or a ``.bin``/``.pt`` file with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise AdapterFileError(f"{path} is corrupt or truncated ({err})") from err
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AdapterFileError(
            f"{path} could not be read as a weights-only PyTorch checkpoint ({type(err).__name__}: {err}). "
            "lorakit never unpickles arbitrary objects; convert the file to safetensors if you trust it"
        ) from err


def _expected_file_tensors(model: nn.Module, adapter_name: str, config: LoraConfig) -> dict[str, tuple]:
    """PEFT key -> (target tensor, how to reshape the file's tensor into it)."""
    expected: dict[str, tuple] = {}
    for path, module in lora_modules(model):
        if adapter_name not in module.lora_A:
            continue
        targets = [module.lora_A[adapter_name], module.lora_B[adapter_name]]
        if adapter_name in module.lora_magnitude_vector:
            targets.append(module.lora_magnitude_vector[adapter_name])
        for (key, reference), target in zip(_module_tensors(module, adapter_name).items(), targets, strict=True):
            expected[f"{PREFIX}{path}.{key}"] = (target, tuple(reference.shape))
    state = dict(model.named_parameters())
    for name in extra_trainable_names(model, config):
        expected[PREFIX + name] = (state[name], tuple(state[name].shape))
    return expected


def _copy_adapter_tensors(model: nn.Module, adapter_name: str, config: LoraConfig, tensors: dict[str, Tensor],
                          source: Path) -> None:
    """Check that ``tensors`` (PEFT keys) fit adapter ``adapter_name`` exactly, then copy them in."""
    expected = _expected_file_tensors(model, adapter_name, config)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise AdapterFileError(
            f"{source} does not fit the model adapted with its config: "
            f"missing keys {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected keys {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    for key, (_, file_shape) in expected.items():
        if tuple(tensors[key].shape) != file_shape:
            raise AdapterFileError(
                f"{key}: the file holds shape {tuple(tensors[key].shape)}, the model expects {file_shape} "
                "(was the adapter trained on a different base model or rank?)"
            )
    with torch.no_grad():
        for key, (target, _) in expected.items():
            target.copy_(tensors[key].reshape(target.shape).to(target.dtype))
    for _, module in lora_modules(model):
        if module.merged:
            module.merge()


def load_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Add the adapter stored in ``directory`` (written by PEFT or by lorakit) to ``model``.

    Validates the config, the file and every shape before the weights are copied; on any error
    the model is left exactly as it was. As in PEFT, a further adapter is added inactive: switch to
    it with ``lorakit.set_adapter``.
    """
    directory = Path(directory)
    config = read_peft_config(directory)
    config.init_lora_weights = True  # the weights come from the file; never re-initialise the base
    tensors = _read_tensors(directory)
    with restore_on_error(model, adapter_name):
        inject(model, config, adapter_name)
        _copy_adapter_tensors(model, adapter_name, config, tensors, directory / WEIGHTS_NAME)
    return model


def hotswap_adapter(model: nn.Module, directory: str | os.PathLike, adapter_name: str = DEFAULT_ADAPTER) -> None:
    """Load another adapter's weights into the existing slot ``adapter_name``, without rebuilding modules.

    The new adapter must adapt the same modules with the same ranks (its alpha may differ: the scaling
    is updated). Meant for serving loops and compiled models: no module or parameter object changes.
    On error nothing is changed.
    """
    directory = Path(directory)
    new_config = read_peft_config(directory)
    tensors = _read_tensors(directory)
    old_config = get_config(model, adapter_name)
    slot_config = dataclasses.replace(old_config, modules_to_save=new_config.modules_to_save, bias=new_config.bias)
    modules = [(p, m) for p, m in lora_modules(model) if adapter_name in m.lora_A]
    for path, module in modules:
        if new_config.rank_for(path) != module.rank[adapter_name]:
            raise AdapterFileError(f"{path}: hot-swap needs the same rank; the slot has r={module.rank[adapter_name]}, "
                             f"the new adapter r={new_config.rank_for(path)}")
    expected = _expected_file_tensors(model, adapter_name, slot_config)
    before = {key: target.detach().clone() for key, (target, _) in expected.items()}
    try:
        _copy_adapter_tensors(model, adapter_name, slot_config, tensors, directory / WEIGHTS_NAME)
    except Exception:
        with torch.no_grad():
            for key, (target, _) in expected.items():
                target.copy_(before[key])
        raise
    for path, module in modules:
        module.scaling[adapter_name] = lora_scaling(new_config.alpha_for(path), module.rank[adapter_name],
                                                    new_config.use_rslora)
        if module.merged:
            module.merge()
    model._lorakit_configs[adapter_name] = dataclasses.replace(
        slot_config, lora_alpha=new_config.lora_alpha, alpha_pattern=new_config.alpha_pattern,
        use_rslora=new_config.use_rslora,
    )


# ============================================================================ loralib import
class CheckpointConversionError(AdapterFileError):
    """A loralib / LoRA-paper checkpoint that does not fit the model; the message names the cause and the fix."""


# How refusals name the options that fix them: keyword arguments here, flags in ``lorakit convert``.
LIBRARY_HINTS = {
    "enable_lora": "enable_lora=[{bools}]",
    "num_labels": "a model built with num_labels={n}",
    "seq_cls": "a sequence-classification model (AutoModelForSequenceClassification)",
    "model": "the model the checkpoint was trained on",
}
CLI_HINTS = {
    "enable_lora": "--enable-lora {flags}",
    "num_labels": "--num-labels {n}",
    "seq_cls": "--task seq-cls",
    "model": "the --model the checkpoint was trained on",
}
# The LoRA paper's GPT2LMModel calls its output layer (tied to transformer.wte) lm_head.decoder.
_PAPER_KEY_RENAMES = {"lm_head.decoder.weight": "lm_head.weight"}
# Base weights count as equal below this absolute difference (a dtype round trip stays well under it).
BASE_WEIGHT_TOLERANCE = 1e-6


def _unwrap_state_dict(obj: Any) -> dict[str, Tensor]:
    for key in ("model_state_dict", "state_dict", "model"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointConversionError(
            "the checkpoint is not a state dict of tensors (nor one under 'model_state_dict'/'state_dict')"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}  # DDP's prefix


def _hidden_size(model: nn.Module) -> int | None:
    return getattr(getattr(model, "config", None), "hidden_size", None)


def _read_lora_pairs(state: dict[str, Tensor], model: nn.Module, enable_lora: list[bool] | None,
                     hints: dict[str, str]) -> tuple[dict[str, int], dict[str, list[bool]]]:
    """Rank of each adapted module path and the slice flags of fused ones; refuses what does not fit."""
    pairs = sorted({k[: -len(".lora_A")] for k in state if k.endswith(".lora_A")})
    if not pairs:
        raise CheckpointConversionError(
            "the checkpoint has no '<module>.lora_A' keys: is it a loralib-style LoRA checkpoint?")
    module_names = dict(model.named_modules())
    ranks, slices = {}, {}
    for path in pairs:
        if path not in module_names:
            close = difflib.get_close_matches(path, list(module_names), n=3)
            raise CheckpointConversionError(
                f"checkpoint module {path!r} does not exist in {type(model).__name__}; closest: {close}")
        a, b = state[f"{path}.lora_A"], state.get(f"{path}.lora_B")
        if b is None:
            raise CheckpointConversionError(f"checkpoint has {path}.lora_A but no {path}.lora_B")
        weight = module_names[path].weight
        conv1d = type(module_names[path]).__name__ == "Conv1D"  # GPT-2's (in, out) layout
        fan_in, fan_out = (weight.shape[0], weight.shape[1]) if conv1d else (weight.shape[1], weight.shape[0])
        r = b.shape[1]
        n_enabled = a.shape[0] // r
        per_slice = b.shape[0] // max(n_enabled, 1)
        if a.shape[1] != fan_in or fan_out % per_slice:
            raise CheckpointConversionError(
                f"the hidden sizes differ: checkpoint {path}.lora_A has shape {tuple(a.shape)} and lora_B "
                f"{tuple(b.shape)} (input size {a.shape[1]}), but {type(model).__name__}'s {path} has weight "
                f"shape {tuple(weight.shape)} (input size {fan_in}, hidden size {_hidden_size(model)}); "
                f"convert with {hints['model']}"
            )
        n_slices = fan_out // per_slice
        if n_slices > 1:  # a fused projection (GPT-2's c_attn: q, k, v), some of its slices adapted
            flags = enable_lora or ([True, False, True] if (n_slices, n_enabled) == (3, 2) else None)
            if flags is None or len(flags) != n_slices or sum(flags) != n_enabled:
                example = [i < n_enabled for i in range(n_slices)]
                option = hints["enable_lora"].format(flags=",".join(str(int(f)) for f in example),
                                                     bools=", ".join(map(str, example)))
                raise CheckpointConversionError(
                    f"{path}: the checkpoint adapts {n_enabled} of the {n_slices} slices of this fused layer "
                    f"(lora_B {tuple(b.shape)}, layer output size {fan_out}); say which with {option} "
                    f"({n_slices} flags, {n_enabled} of them on)"
                )
            slices[re.escape(path)] = list(flags)
        ranks[path] = r
    return ranks, slices


def _sort_other_keys(state: dict[str, Tensor], model: nn.Module, lora_tops: set[str]
                     ) -> tuple[dict[str, str], list[str], list[str]]:
    """Split the non-LoRA keys: base weights (file key -> model key), modules_to_save, ignored keys.

    Under a top-level module with LoRA, a key the model has is a base weight and any other (e.g. the
    paper's causal-mask buffers ``attn.bias``) is ignored. Under a top-level module without LoRA, a
    weight tied to a base weight (the paper's ``lm_head.decoder``) is a base weight; the rest (e.g. a
    ``classifier``) is trained and goes to ``modules_to_save``.
    """
    model_state = model.state_dict(keep_vars=True)
    base_tensor_ids = {id(t) for k, t in model_state.items() if k.split(".")[0] in lora_tops}
    base, to_save, ignored = {}, set(), []
    for key in state:
        if is_lora_param_name(key):
            continue
        model_key = _PAPER_KEY_RENAMES.get(key, key)
        top = key.split(".")[0]
        if top in lora_tops:
            if model_key in model_state:
                base[key] = model_key
            else:
                ignored.append(key)
        elif model_key in model_state and id(model_state[model_key]) in base_tensor_ids:
            base[key] = model_key
        else:
            to_save.add(top)
    return base, sorted(to_save), sorted(ignored)


def _compare_base_weights(state: dict[str, Tensor], model: nn.Module, base: dict[str, str], hints: dict[str, str],
                          compare_values: bool) -> dict[str, Any]:
    """Check the shapes of a full checkpoint's base weights and (optionally) their values against the model."""
    model_state = model.state_dict()
    worst_key, worst = None, 0.0
    for key, model_key in base.items():
        theirs, ours = state[key], model_state[model_key]
        if theirs.shape != ours.shape:
            raise CheckpointConversionError(
                f"the checkpoint's base weight {key} has shape {tuple(theirs.shape)}, {type(model).__name__}'s "
                f"{model_key} has shape {tuple(ours.shape)} (hidden size {_hidden_size(model)}): the checkpoint "
                f"was trained on another model; convert with {hints['model']}"
            )
        if compare_values and theirs.numel():
            diff = (theirs.detach().float() - ours.detach().float()).abs().max().item()
            if diff > worst or worst_key is None:
                worst_key, worst = key, diff
    if worst > BASE_WEIGHT_TOLERANCE:
        warnings.warn(
            f"the checkpoint's base weights differ from the model's: largest difference {worst:.3g} in {worst_key} "
            f"({len(base)} base tensors compared). The adapter keeps only the LoRA weights (and modules_to_save); "
            "it reproduces the checkpoint only on the base model it was trained on",
            stacklevel=3,
        )
    return {"base_keys": len(base), "compared": compare_values and bool(base), "max_abs_diff": worst,
            "max_diff_key": worst_key}


def _head_hint(state: dict[str, Tensor], top: str, hints: dict[str, str]) -> str:
    """``--num-labels N`` for a head named ``top``, N read from its smallest 2-D weight."""
    outs = [v.shape[0] for k, v in state.items() if k.split(".")[0] == top and v.ndim == 2]
    return hints["num_labels"].format(n=min(outs)) if outs else hints["num_labels"].format(n="N")


def _check_heads_fit(state: dict[str, Tensor], model: nn.Module, modules_to_save: list[str],
                     hints: dict[str, str]) -> None:
    """Refuse modules_to_save the model lacks (no classifier: not a seq-cls model) or of another shape."""
    children = dict(model.named_children())
    params = model.state_dict()
    for top in modules_to_save:
        if top not in children:
            raise CheckpointConversionError(
                f"the checkpoint holds a {top!r} head ({', '.join(k for k in state if k.split('.')[0] == top)}) "
                f"that {type(model).__name__} does not have; for a classification checkpoint convert with "
                f"{hints['seq_cls']} and {_head_hint(state, top, hints)}"
            )
        for key, value in state.items():
            if key.split(".")[0] != top:
                continue
            if key not in params:
                raise CheckpointConversionError(f"checkpoint key {key!r} does not exist in {type(model).__name__}")
            if params[key].shape != value.shape:
                raise CheckpointConversionError(
                    f"checkpoint key {key!r} has shape {tuple(value.shape)}, {type(model).__name__}'s has shape "
                    f"{tuple(params[key].shape)}; if the head has another number of labels, convert with "
                    f"{_head_hint(state, top, hints)}"
                )


def convert_loralib_checkpoint(
    checkpoint: str | os.PathLike | dict[str, Tensor],
    model: nn.Module,
    lora_alpha: float,
    output_dir: str | os.PathLike,
    enable_lora: list[bool] | None = None,
    base_model_name_or_path: str | None = None,
    lora_dropout: float = 0.0,
    compare_base_weights: bool = True,
    hints: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Turn a loralib-style state dict into a PEFT-format adapter directory for ``model``.

    ``checkpoint``: a ``.bin``/``.pt``/``.safetensors`` path or a state dict with ``<path>.lora_A`` /
    ``<path>.lora_B`` keys, e.g. the LoRA paper's GPT-2 checkpoints (``transformer.h.N.attn.c_attn``
    as a MergedLinear over q, k, v: A (2r, hidden), B (2 hidden, r)) or RoBERTa ones
    (``...attention.self.query``/``value``, with or without a ``classifier``). It may be the full
    state dict the paper's ``gpt2_ft.py`` writes at the end of training (``{'model_state_dict': ...}``,
    with or without DDP's ``module.`` prefix, ``lm_head.decoder.weight`` tied to ``transformer.wte``):
    its base weights must have the model's shapes; with ``compare_base_weights`` their values are
    compared with the model's too, and a difference above :data:`BASE_WEIGHT_TOLERANCE` warns, naming
    the largest. Only LoRA weights and ``modules_to_save`` (non-LoRA keys under top-level modules
    without LoRA that are not tied to base weights, e.g. ``classifier.*``) go into the adapter.
    ``model``: the Hugging Face model the adapter is for (``from_config`` is enough when
    ``compare_base_weights`` is off). ``lora_alpha`` is not stored in loralib checkpoints and must be
    given. ``enable_lora``: which slices a fused projection adapts, inferred as q and v
    ([True, False, True]) for a 3-way fused layer with two adapted slices. ``hints``: how refusals name
    the fixing options (:data:`LIBRARY_HINTS` by default, :data:`CLI_HINTS` for the command line).
    Returns a summary: modules, ranks, enable_lora, modules_to_save, ignored keys, base-weight check.
    """
    hints = hints or LIBRARY_HINTS
    state = load_checkpoint(checkpoint) if not isinstance(checkpoint, dict) else checkpoint
    state = _unwrap_state_dict(state)
    ranks, slices_pattern = _read_lora_pairs(state, model, enable_lora, hints)
    base, modules_to_save, ignored = _sort_other_keys(state, model, {p.split(".")[0] for p in ranks})
    _check_heads_fit(state, model, modules_to_save, hints)
    base_check = _compare_base_weights(state, model, base, hints, compare_base_weights)
    common_r = max(set(ranks.values()), key=list(ranks.values()).count)
    config = LoraConfig(
        r=common_r, lora_alpha=lora_alpha, lora_dropout=lora_dropout,
        target_modules="|".join(re.escape(t) for t in ranks),
        rank_pattern={re.escape(p): r for p, r in ranks.items() if r != common_r}, enable_lora=slices_pattern,
        modules_to_save=modules_to_save or None, base_model_name_or_path=base_model_name_or_path,
    )
    model = copy.deepcopy(model)  # the caller's model stays as it was
    inject(model, config)
    with torch.no_grad():
        for path, module in lora_modules(model):
            for part in ("A", "B"):
                target, source = getattr(module, f"lora_{part}")[DEFAULT_ADAPTER], state[f"{path}.lora_{part}"]
                if target.shape != source.shape:
                    raise CheckpointConversionError(
                        f"checkpoint key {path}.lora_{part} has shape {tuple(source.shape)}, the adapted "
                        f"{type(model).__name__} expects {tuple(target.shape)}"
                    )
                target.copy_(source)
        params = dict(model.named_parameters())
        for key, value in state.items():
            if key.split(".")[0] in modules_to_save:
                params[key].copy_(value)
    save_adapter(model, output_dir)
    return {"modules": list(ranks), "ranks": ranks, "enable_lora": slices_pattern,
            "modules_to_save": modules_to_save, "ignored_keys": ignored, "base_weights": base_check}
