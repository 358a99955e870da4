"""Model surgery: adapt any PyTorch or Hugging Face model from a :class:`LoraConfig`.

``inject(model, config)`` wraps every matched module in place with a LoRA wrapper that keeps the
original module (``<name>.base_layer``) and its pretrained weights untouched. Which wrapper a module
gets is decided by one table, :data:`WRAPPERS` (module type -> wrapper class); the math is in
:mod:`lorakit.functional` and the merge mechanism in :class:`lorakit.layers.MergeableWeight`.

Inside a wrapper every update is the matrix product ``scaling * B A`` with A: (r, fan_in) and
B: (fan_out, r), where for
* ``nn.Linear``: fan_in = in_features, fan_out = out_features;
* Hugging Face ``Conv1D`` (weight stored (in, out)): the same, with ``fan_in_fan_out``;
* ``nn.Embedding``: fan_in = num_embeddings, fan_out = embedding_dim (the update is (B A)^T);
* ``nn.ConvNd``: fan_in = in_channels / groups * prod(kernel_size), fan_out = out_channels
  (the update is (B A) reshaped to the kernel's shape).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as LF
from . import quant
from .layers import MergeableWeight, is_lora_param_name, validate_lora_args

try:  # Hugging Face's GPT-2 style linear layer; optional
    from transformers.pytorch_utils import Conv1D as HFConv1D
except Exception:  # pragma: no cover - transformers not installed
    HFConv1D = None

DEFAULT_ADAPTER = "default"
BIAS_MODES = ("none", "all", "lora_only")


# ============================================================================ config
@dataclasses.dataclass
class LoraConfig:
    """What to adapt and how. Field names and meanings follow PEFT's ``LoraConfig``.

    target_modules: a list of names, each matching a module's full dotted name or its suffix after
        a dot (``"query"`` matches ``encoder.layer.0.attention.self.query``); or a string, a regex
        that must match the full name; or ``"all-linear"``: every ``nn.Linear`` and ``Conv1D``
        except the model's output head.
    exclude_modules: the same forms; matched modules are skipped.
    layers_to_transform / layers_pattern: only adapt modules inside these layer indices
        (``layers_pattern`` names the module list, e.g. ``"h"`` or ``"layer"``).
    rank_pattern / alpha_pattern: ``{regex: value}`` overriding ``r`` / ``lora_alpha`` for modules
        whose name ends with a match.
    use_rslora: scaling lora_alpha / sqrt(r) instead of lora_alpha / r (Kalajdzievski 2023).
    use_dora: weight-decomposed LoRA (Liu et al. 2024) with a trainable magnitude per output row.
    init_lora_weights: True (A Kaiming-uniform, B zero), "gaussian", "pissa" (principal singular
        vectors; the base weight becomes the residual), or False (random B, for tests).
    enable_lora: ``{regex: [bool, ...]}`` adapts only the chosen equal slices of a fused projection's
        output, e.g. ``{"c_attn": [True, False, True]}`` for GPT-2's q and v (the paper's setup).
        A lorakit extension; saved to PEFT files as an equivalent dense LoRA of rank
        ``r * n_enabled``.
    modules_to_save: modules trained fully and saved with the adapter (e.g. a classifier head).
    """

    r: int = 8
    lora_alpha: float = 8
    lora_dropout: float = 0.0
    target_modules: list[str] | str | None = None
    exclude_modules: list[str] | str | None = None
    layers_to_transform: list[int] | int | None = None
    layers_pattern: list[str] | str | None = None
    rank_pattern: dict[str, int] = dataclasses.field(default_factory=dict)
    alpha_pattern: dict[str, float] = dataclasses.field(default_factory=dict)
    enable_lora: dict[str, list[bool]] = dataclasses.field(default_factory=dict)
    bias: str = "none"
    modules_to_save: list[str] | None = None
    fan_in_fan_out: bool = False
    use_rslora: bool = False
    use_dora: bool = False
    init_lora_weights: bool | str = True
    base_model_name_or_path: str | None = None
    task_type: str | None = None

    def __post_init__(self) -> None:
        validate_lora_args(self.r, self.lora_alpha, self.lora_dropout)
        if self.r == 0:
            raise ValueError("LoraConfig.r must be >= 1 (r=0 would add nothing)")
        if self.bias not in BIAS_MODES:
            raise ValueError(f"LoraConfig.bias must be one of {BIAS_MODES}, got {self.bias!r}")
        if self.init_lora_weights not in (True, False, "gaussian", "pissa"):
            raise ValueError(
                "LoraConfig.init_lora_weights must be True, False, 'gaussian' or 'pissa', "
                f"got {self.init_lora_weights!r}"
            )
        if not self.target_modules:
            raise ValueError("LoraConfig.target_modules is empty: name the modules to adapt, e.g. ['q', 'v']")
        for pattern, rank in self.rank_pattern.items():
            if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
                raise ValueError(f"LoraConfig.rank_pattern[{pattern!r}] must be an integer >= 1, got {rank!r}")
        for pattern, flags in self.enable_lora.items():
            if not flags or not all(isinstance(f, bool) for f in flags) or not any(flags):
                raise ValueError(
                    f"LoraConfig.enable_lora[{pattern!r}] must be a list of bools with at least one True, "
                    f"got {flags!r}"
                )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown LoraConfig field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LoraConfig:
        return cls.from_dict(json.loads(text))

    # -- per-module settings ------------------------------------------------------------------
    def rank_for(self, name: str) -> int:
        return _pattern_value(self.rank_pattern, name, self.r)

    def alpha_for(self, name: str) -> float:
        return _pattern_value(self.alpha_pattern, name, self.lora_alpha)

    def slices_for(self, name: str) -> list[bool] | None:
        return _pattern_value(self.enable_lora, name, None)


def _pattern_value(patterns: dict[str, Any], name: str, default: Any) -> Any:
    """The value of the first pattern matching the end of ``name`` (PEFT's rank_pattern rule)."""
    for pattern, value in patterns.items():
        if re.match(rf"(.*\.)?(?:{pattern})$", name):
            return value
    return default


# ============================================================================ matching
def _name_matches(name: str, targets: list[str] | str) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def _in_layers(name: str, config: LoraConfig) -> bool:
    if config.layers_to_transform is None:
        return True
    wanted = config.layers_to_transform
    wanted = [wanted] if isinstance(wanted, int) else list(wanted)
    patterns = config.layers_pattern
    patterns = [patterns] if isinstance(patterns, str) else (patterns or [r"[^.]*"])
    for pattern in patterns:
        m = re.match(rf"(?:.*\.)?{pattern}\.(\d+)\.", name)
        if m:
            return int(m.group(1)) in wanted
    return False


def _output_head_names(model: nn.Module) -> set[str]:
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return {n for n, m in model.named_modules() if head is not None and m is head}


def find_targets(model: nn.Module, config: LoraConfig) -> list[str]:
    """The names of the modules ``config`` selects, in model order. Raises if none match.

    The error lists the model's module names closest to each target, so typos are easy to fix.
    """
    skip = set(config.modules_to_save or [])
    all_linear = config.target_modules == "all-linear"
    linear_types = (*quant.linear_types(), quant.Linear4bit)
    heads = _output_head_names(model) if all_linear else set()
    names = []
    for name, module in model.named_modules():
        if not name or _inside_lora_module(model, name):
            continue
        kind = module.base_layer if isinstance(module, LoraModule) else module
        if any(name == s or name.endswith("." + s) or name.startswith(s + ".") for s in skip):
            continue
        if all_linear:
            if not isinstance(kind, linear_types) or name in heads:
                continue
        elif not _name_matches(name, config.target_modules):
            continue
        if config.exclude_modules and _name_matches(name, config.exclude_modules):
            continue
        if not _in_layers(name, config):
            continue
        names.append(name)
    if not names:
        raise ValueError(_no_match_message(model, config))
    return names


def _inside_lora_module(model: nn.Module, name: str) -> bool:
    parts = name.split(".")
    return any(isinstance(model.get_submodule(".".join(parts[:i])), LoraModule) for i in range(1, len(parts)))


def _no_match_message(model: nn.Module, config: LoraConfig) -> str:
    names = [n for n, _ in model.named_modules() if n]
    targets = config.target_modules
    lines = [f"target_modules={targets!r} matched no module of {type(model).__name__}"]
    if config.layers_to_transform is not None:
        lines[0] += f" within layers_to_transform={config.layers_to_transform!r}"
    for target in [targets] if isinstance(targets, str) else targets:
        leaves = sorted({n.split(".")[-1] for n in names})
        close = difflib.get_close_matches(str(target).split(".")[-1], leaves, n=5, cutoff=0.4)
        close += [n for n in difflib.get_close_matches(str(target), names, n=3, cutoff=0.4) if n not in close]
        lines.append(f"  closest module names to {target!r}: {close or 'none'}")
    lines.append(f"  the model's module names include: {names[:12]}{' ...' if len(names) > 12 else ''}")
    return "\n".join(lines)


# ============================================================================ wrappers
class LoraModule(MergeableWeight, nn.Module):
    """A module wrapped with one or more named LoRA adapters.

    ``base_layer`` is the original module (its parameters untouched and frozen). Each adapter
    ``name`` has ``lora_A[name]``: (r, fan_in) and ``lora_B[name]``: (fan_out, r) (for a sliced
    fused projection, B holds one (fan_out / n_slices, r) block per enabled slice), a scaling and a
    dropout probability. Active adapters add their updates; merged ones are folded into the
    ``merged_weight`` buffer (see :class:`MergeableWeight`).
    """

    def __init__(self, base_layer: nn.Module):
        nn.Module.__init__(self)
        self.base_layer = base_layer
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_magnitude_vector = nn.ParameterDict()  # DoRA: (fan_out,) per DoRA adapter
        self.scaling: dict[str, float] = {}
        self.dropout_p: dict[str, float] = {}
        self.rank: dict[str, int] = {}
        self.slices: dict[str, list[bool] | None] = {}
        # {(adapter, device): (fan_out,) bool row mask of a sliced adapter}, derived from ``slices`` on first use
        # per device: not a buffer, so it needs no moving and is right after meta init, to_empty or assign loads
        self._slice_masks: dict[tuple[str, torch.device], Tensor] = {}
        self.active_adapters: list[str] = []
        self.row_plan: RowPlan | None = None  # set by adapter_batch()
        self._adapter_bank: AdapterBank | None = None  # mixed-batch stacks, reused across adapter_batch entries
        self._dora_weight_sq: tuple[tuple, Tensor] | None = None  # (key, ||w_o||^2), see _weight_row_sq_norms
        self._init_merge_state()

    # -- what each wrapper kind provides -------------------------------------------------------
    fan_in: int
    fan_out: int

    def _pretrained_weight(self) -> Tensor:
        return self._modules["base_layer"].weight  # _modules: see _adapter_tensors

    def _matrix_to_weight(self, delta: Tensor) -> Tensor:
        """(fan_out, fan_in) update -> the stored weight's layout."""
        raise NotImplementedError

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    # -- adapters ------------------------------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        return bool(self.active_adapters)

    def add_adapter(self, name: str, r: int, lora_alpha: float, dropout: float, use_rslora: bool = False,
                    init: bool | str = True, slices: list[bool] | None = None, use_dora: bool = False,
                    activate: bool = True) -> None:
        """Create adapter ``name``: A (r * n_slices, fan_in), B (fan_out[/slices], r), optional DoRA magnitude.

        ``init``: True (A Kaiming-uniform, B zero: the update starts at zero), ``"gaussian"`` (A normal
        with std 1/r), ``"pissa"`` (A, B from the top-r singular triplets of W; W is replaced by the
        residual W - scaling * B A, see Meng et al. 2024) or False (B random too; for tests).
        """
        validate_lora_args(r, lora_alpha, dropout)
        if use_dora and (slices or not isinstance(self, LoraLinear)):
            raise ValueError(
                f"use_dora is supported on whole linear layers (nn.Linear, Conv1D); not on "
                f"{type(self.base_layer).__name__}{' with enable_lora slices' if slices else ''}"
            )
        if init == "pissa" and (slices or not isinstance(self, LoraLinear)):
            raise ValueError("init_lora_weights='pissa' is supported on whole linear layers (nn.Linear, Conv1D)")
        weight = self._pretrained_weight()
        n_enabled = sum(slices) if slices else 1
        if slices and self.fan_out % len(slices):
            raise ValueError(
                f"enable_lora has {len(slices)} slices, which does not divide this module's "
                f"{self.fan_out} outputs"
            )
        out_rows = self.fan_out // len(slices) * n_enabled if slices else self.fan_out
        lora_a = weight.new_zeros((r * n_enabled, self.fan_in))
        lora_b = weight.new_zeros((out_rows, r))
        scaling = LF.lora_scaling(lora_alpha, r, use_rslora)
        if isinstance(self.base_layer, nn.Embedding):  # PEFT's embedding init: A zero, B normal
            nn.init.normal_(lora_b)
        elif init == "gaussian":
            nn.init.normal_(lora_a, std=1 / r)
        elif init == "pissa":
            lora_a, lora_b = self._pissa_factors(r, scaling)
            self.register_buffer(f"pissa_init_A_{name}", lora_a.clone(), persistent=False)
            self.register_buffer(f"pissa_init_B_{name}", lora_b.clone(), persistent=False)
        else:
            nn.init.kaiming_uniform_(lora_a, a=math.sqrt(5))
            if init is False:
                nn.init.kaiming_uniform_(lora_b, a=math.sqrt(5))
        self.lora_A[name] = nn.Parameter(lora_a)
        self.lora_B[name] = nn.Parameter(lora_b)
        self.rank[name] = r
        self.scaling[name] = scaling
        self.dropout_p[name] = float(dropout)
        self.slices[name] = list(slices) if slices else None
        self._forget_slice_masks(name)
        if use_dora:
            with torch.no_grad():
                norm = self.dora_row_norm(name)
            self.lora_magnitude_vector[name] = nn.Parameter(norm)
        self._adapter_bank = None
        if activate:
            self.active_adapters.append(name)
        if self.merged:
            self.merge()

    def _pissa_factors(self, r: int, scaling: float) -> tuple[Tensor, Tensor]:
        """Top-r SVD factors of W (out, in) with s * B A = W_r; W becomes the residual W - W_r."""
        weight = self._pretrained_weight()
        w = self._as_out_in(weight).detach().float()
        u, sv, vh = torch.linalg.svd(w, full_matrices=False)
        root = (sv[:r] / scaling).sqrt()
        lora_b = (u[:, :r] * root).to(weight.dtype)  # (out, r)
        lora_a = (root[:, None] * vh[:r]).to(weight.dtype)  # (r, in)
        with torch.no_grad():
            residual = w - scaling * (lora_b.float() @ lora_a.float())
            weight.copy_(self._matrix_to_weight(residual).to(weight.dtype))
        return lora_a, lora_b

    def delete_adapter(self, name: str) -> None:
        for table in (self.lora_A, self.lora_B, self.lora_magnitude_vector):
            if name in table:
                del table[name]
        for table in (self.scaling, self.dropout_p, self.rank, self.slices):
            table.pop(name, None)
        self._forget_slice_masks(name)
        for buffer in (f"pissa_init_A_{name}", f"pissa_init_B_{name}"):
            self._buffers.pop(buffer, None)
        self._adapter_bank = None
        if name in self.active_adapters:
            self.active_adapters.remove(name)
        if self.merged:
            self.merge()

    def _adapter_tensors(self, name: str) -> tuple[Tensor, Tensor]:
        """(A, dense B) of adapter ``name``, read from the ``ParameterDict``s' own ``_parameters`` (as
        :func:`_bank_key` does): on the forward hot path, ``lora_A[name]`` (``Module.__getattr__``, then
        ``ParameterDict.__getitem__`` and a second ``getattr``) costs about as much as a small tensor op."""
        modules = self._modules
        return modules["lora_A"]._parameters[name], self._dense_b(modules["lora_B"]._parameters[name], name)

    def _dense_b(self, b: Tensor, name: str) -> Tensor:
        slices = self.slices[name]
        if slices is None:
            return b
        return LF.group_block_b(b, self._slice_mask(name, b.device), sum(slices))

    def _slice_mask(self, name: str, device: torch.device) -> Tensor:
        """(fan_out,) bool: the output rows that sliced adapter ``name`` updates, on ``device``."""
        mask = self._slice_masks.get((name, device))
        if mask is None:
            mask = self._slice_masks[(name, device)] = LF.slice_row_mask(self.slices[name], self.fan_out, device)
        return mask

    def _forget_slice_masks(self, name: str) -> None:
        for key in [k for k in self._slice_masks if k[0] == name]:
            del self._slice_masks[key]

    def dense_b(self, name: str) -> Tensor:
        """B as one (fan_out, rank) matrix: block-diagonal over enabled slices for a sliced adapter."""
        return self._dense_b(self.lora_B[name], name)

    def lora_matrix(self, name: str) -> Tensor:
        """scaling * B A for adapter ``name``: (fan_out, fan_in)."""
        return LF.delta_weight(self.lora_A[name], self.dense_b(name), self.scaling[name])

    def delta_matrix(self, name: str) -> Tensor:
        """What adapter ``name`` adds to W, as (fan_out, fan_in); for DoRA, m/||W + sBA|| (W + sBA) - W."""
        if name not in self.lora_magnitude_vector:
            return self.lora_matrix(name)
        w = self._as_out_in(self._pretrained_weight())
        scale = (self.lora_magnitude_vector[name] / self.dora_row_norm(name)).unsqueeze(1)
        return (scale - 1) * w + scale * self.lora_matrix(name)

    def dora_row_norm(self, name: str) -> Tensor:
        """||W + s B A|| per output row, (fan_out,), without forming the (fan_out, fan_in) update.

        ||w_o + s b_o A||^2 = ||w_o||^2 + 2 s b_o . (A w_o) + s^2 b_o (A A^T) b_o^T, so the cost is
        one (fan_out, fan_in) x (fan_in, r) product and (r, r) terms.
        """
        w = self._as_out_in(self._pretrained_weight())
        a, b, s = self.lora_A[name], self.dense_b(name), self.scaling[name]
        w_a = w @ a.t()  # (out, r)
        squared = self._weight_row_sq_norms() + 2 * s * (b * w_a).sum(1) + s * s * ((b @ (a @ a.t())) * b).sum(1)
        return squared.clamp_min(0).sqrt()

    def _weight_row_sq_norms(self) -> Tensor:
        """||w_o||^2 per output row of the pretrained weight: (fan_out,).

        Kept while the weight is unchanged (same storage, dtype and version counter), so that a DoRA
        training step does not read the frozen weight a second time; recomputed when the weight itself
        needs a gradient through it.
        """
        weight = self._pretrained_weight()
        w = self._as_out_in(weight)
        if weight.requires_grad and torch.is_grad_enabled():
            return torch.linalg.vector_norm(w, dim=1) ** 2
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, weight.shape)
        cached = self._dora_weight_sq
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                cached = key, torch.linalg.vector_norm(w, dim=1) ** 2
            self._dora_weight_sq = cached
        return cached[1]

    def _as_out_in(self, weight: Tensor) -> Tensor:
        return weight

    def refresh_trainable(self) -> None:
        """LoRA parameters of active adapters train; those of inactive adapters are frozen."""
        for table in (self.lora_A, self.lora_B, self.lora_magnitude_vector):
            for name, param in table.items():
                param.requires_grad = name in self.active_adapters

    def set_active(self, names: list[str]) -> None:
        self.active_adapters = [n for n in names if n in self.lora_A]
        if self.merged:
            self.merge()

    def delta_weight(self) -> Tensor:
        total = sum(self.delta_matrix(n) for n in self.active_adapters)
        return self._matrix_to_weight(total)

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.row_plan is not None:
            return self._forward_mixed(x)
        if self.merged or not self.active_adapters:
            return self._forward_with_weight(x, self._effective_weight())
        return self._forward_unmerged(x)

    def _forward_mixed(self, x: Tensor) -> Tensor:
        raise ValueError(f"mixed-adapter batches support linear layers only, not {type(self.base_layer).__name__}")

    def _forward_unmerged(self, x: Tensor) -> Tensor:
        weight = self._pretrained_weight() + self.delta_weight()
        return self._forward_with_weight(x, weight)

    def merged_base_layer(self) -> tuple[nn.Module, dict[str, float] | None]:
        """The base layer with the active updates written into its weight (in place here), and the error that
        writing added beyond float rounding (None here; see :meth:`lorakit.qlora.LoraLinear4bit.merged_base_layer`)."""
        base = self.base_layer
        if self.active_adapters:
            with torch.no_grad():
                base.weight.add_(self.delta_weight().to(base.weight.dtype))
        return base, None

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.rank[n]}, scaling={self.scaling[n]:g}" for n in self.lora_A)


class LoraLinear(LoraModule):
    """LoRA around ``nn.Linear`` (weight (out, in)) or Hugging Face ``Conv1D`` (weight (in, out)).

    x: (..., in_features) -> (..., out_features). The first active adapter runs through the fused
    custom autograd function; further active adapters add their updates.
    """

    def __init__(self, base_layer: nn.Module, fan_in_fan_out: bool = False):
        super().__init__(base_layer)
        self.fan_in_fan_out = fan_in_fan_out
        in_dim, out_dim = base_layer.weight.shape[::-1] if not fan_in_fan_out else base_layer.weight.shape
        self.fan_in, self.fan_out = in_dim, out_dim

    def _matrix_to_weight(self, delta: Tensor) -> Tensor:
        return delta.t() if self.fan_in_fan_out else delta

    def _as_out_in(self, weight: Tensor) -> Tensor:
        return weight.t() if self.fan_in_fan_out else weight

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, self._as_out_in(weight), self.base_layer.bias)

    def _forward_unmerged(self, x: Tensor) -> Tensor:
        first, *rest = self.active_adapters
        dora = self._modules["lora_magnitude_vector"]._parameters
        if first in dora:
            out = self._forward_dora(x, first)
        else:
            out = LF.lora_linear(
                x, self._as_out_in(self._pretrained_weight()), self._modules["base_layer"].bias,
                *self._adapter_tensors(first), self.scaling[first], self.dropout_p[first], self.training,
            )
        for name in rest:
            if name in dora:
                raise ValueError("a DoRA adapter can only be active alone or first among the active adapters")
            x_in = F.dropout(x, self.dropout_p[name], self.training)
            lora_a, lora_b = self._adapter_tensors(name)
            out = out + (x_in @ lora_a.t() @ lora_b.t()) * self.scaling[name]
        return out

    def _forward_dora(self, x: Tensor, name: str) -> Tensor:
        """DoRA (Liu et al. 2024), x: (..., in) -> (..., out), with the row norm n = ||W + sBA|| a constant:

            y = x W^T + b + (m/n - 1) * (d W^T) + (m/n) * s (d A^T B^T),   d = dropout(x)

        which is m/n (x W^T + s x A^T B^T) + b without dropout. Dropout reaches the (m/n - 1) correction
        of the base term too, as in the DoRA authors' implementation and PEFT (and with the same
        ``F.dropout`` draw, so that PEFT and lorakit train identically from the same seed); that case
        costs a second product with W, for (x - d) W^T.
        """
        weight = self._as_out_in(self._pretrained_weight())
        with torch.no_grad():
            norm = self.dora_row_norm(name)
        scale = self._modules["lora_magnitude_vector"]._parameters[name] / norm  # (out,)
        p = self.dropout_p[name] if self.training else 0.0
        dropped = F.dropout(x, p, True) if p > 0.0 else x
        out = LF.lora_linear(dropped, weight, None, *self._adapter_tensors(name), self.scaling[name])
        bias = self._modules["base_layer"].bias
        if p > 0.0:
            return torch.addcmul(F.linear(x - dropped, weight, bias), out, scale)
        return torch.addcmul(bias, out, scale) if bias is not None else out * scale  # one pass over out

    def _forward_mixed(self, x: Tensor) -> Tensor:
        """x: (rows, ..., in) -> (rows, ..., out); row i uses the adapter of plan row ``i // (rows / n)``.

        One gathered batched matmul per layer, added in place into the fresh base output. With ``n`` plan
        rows and ``rows = k * n`` batch rows (``k`` > 1: beams laid out with ``repeat_interleave``), the
        ``k`` consecutive rows of a plan row share its adapter and are one (k * tokens, in) block of the bmm.
        """
        plan = self.row_plan
        base = self._forward_with_weight(x, self._pretrained_weight())
        n, rows = plan.rows, x.shape[0]
        if rows % n:
            raise ValueError(f"adapter_batch was given {n} row names but the batch has {rows} rows")
        a, bt = plan.stacks()  # (n, R, in), scaling * B^T: (n, R, out)
        shaped = rows == n and x.dim() == 3  # x is (n, tokens, in) already: no reshape and view (a dispatch each)
        x_a = torch.bmm(x if shaped else x.reshape(n, -1, x.shape[-1]), a.transpose(1, 2))  # (n, k * tokens, R)
        dtype = base.dtype
        if x_a.dtype != dtype or bt.dtype != dtype:  # autocast: the base output is in the autocast dtype
            x_a, bt = x_a.to(dtype), bt.to(dtype)
        # F.linear's output is fresh and contiguous: accumulate into it instead of allocating another
        (base if shaped else base.view(n, -1, base.shape[-1])).baddbmm_(x_a, bt)
        return base


class LoraEmbedding(LoraModule):
    """LoRA around ``nn.Embedding``: x (...) int64 -> (..., embedding_dim)."""

    def __init__(self, base_layer: nn.Embedding):
        super().__init__(base_layer)
        self.fan_in, self.fan_out = base_layer.num_embeddings, base_layer.embedding_dim

    def _matrix_to_weight(self, delta: Tensor) -> Tensor:
        return delta.t()

    def _embed(self, x: Tensor, table: Tensor) -> Tensor:
        b = self.base_layer
        return F.embedding(x, table, b.padding_idx, b.max_norm, b.norm_type, b.scale_grad_by_freq, b.sparse)

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return self._embed(x, weight)

    def _forward_unmerged(self, x: Tensor) -> Tensor:
        out = self._embed(x, self._pretrained_weight())
        for name in self.active_adapters:
            after_a = self._embed(x, self.lora_A[name].t())  # (..., r)
            out = out + (after_a @ self.dense_b(name).t()) * self.scaling[name]
        return out


class LoraConv(LoraModule):
    """LoRA around ``nn.Conv1d/2d/3d``: the kernel gets ``scaling * (B A).view(kernel shape)``."""

    def __init__(self, base_layer: nn.Module):
        super().__init__(base_layer)
        w = base_layer.weight
        self.fan_in, self.fan_out = math.prod(w.shape[1:]), w.shape[0]

    def _matrix_to_weight(self, delta: Tensor) -> Tensor:
        return delta.view(self.base_layer.weight.shape)

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return self.base_layer._conv_forward(x, weight, self.base_layer.bias)

    def _forward_unmerged(self, x: Tensor) -> Tensor:
        if self.training and any(self.dropout_p[n] > 0 for n in self.active_adapters):
            out = self._forward_with_weight(x, self._pretrained_weight())
            for name in self.active_adapters:
                x_in = F.dropout(x, self.dropout_p[name], True)
                delta = self._matrix_to_weight(self.delta_matrix(name))
                out = out + self.base_layer._conv_forward(x_in, delta, None)
            return out
        return super()._forward_unmerged(x)


def _wrap_hf_conv1d(module: nn.Module, config: LoraConfig) -> LoraModule:
    return LoraLinear(module, fan_in_fan_out=True)


def _wrap_linear(module: nn.Module, config: LoraConfig) -> LoraModule:
    return LoraLinear(module, fan_in_fan_out=config.fan_in_fan_out)


#: The one dispatch table: module type -> function building its LoRA wrapper.
WRAPPERS: dict[type, Any] = {
    nn.Linear: _wrap_linear,
    nn.Embedding: lambda m, c: LoraEmbedding(m),
    nn.Conv1d: lambda m, c: LoraConv(m),
    nn.Conv2d: lambda m, c: LoraConv(m),
    nn.Conv3d: lambda m, c: LoraConv(m),
}
if HFConv1D is not None:
    WRAPPERS[HFConv1D] = _wrap_hf_conv1d


def _wrapper_factory(module: nn.Module):
    for cls in type(module).__mro__:
        if cls in WRAPPERS:
            return WRAPPERS[cls]
    return None


# ============================================================================ inject & co
def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoraModule]]:
    for name, module in model.named_modules():
        if isinstance(module, LoraModule):
            yield name, module


def adapter_names(model: nn.Module) -> list[str]:
    names: list[str] = []
    for _, module in lora_modules(model):
        names += [n for n in module.lora_A if n not in names]
    return names


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def _check_adapter_name(name: str) -> None:
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", name) or name == "__base__":
        raise ValueError(
            f"adapter_name must be a non-empty identifier (letters, digits, '_' or '-'), not '__base__'; "
            f"got {name!r}"
        )


def inject(model: nn.Module, config: LoraConfig, adapter_name: str = DEFAULT_ADAPTER) -> nn.Module:
    """Add a LoRA adapter to every module ``config`` selects, in place, and return ``model``.

    Matched modules are wrapped (``name`` -> ``name.base_layer`` + ``name.lora_A[adapter_name]``...)
    or, if already wrapped, get one more adapter. Everything but the LoRA parameters,
    ``config.modules_to_save`` and the biases chosen by ``config.bias`` is frozen.
    All checks run before the model is touched: on error, nothing has changed.
    """
    _check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise ValueError(
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
        factory = _wrapper_factory(module)
        if factory is None:
            supported = ", ".join(sorted(t.__name__ for t in WRAPPERS))
            raise TypeError(
                f"module {name!r} of type {type(module).__name__} matched target_modules, but lorakit "
                f"cannot adapt that type (supported: {supported}); narrow target_modules or exclude it"
            )
        plan.append((name, module, factory))
    for pattern in config.modules_to_save or []:
        if not any(n == pattern or n.endswith("." + pattern) for n, _ in model.named_modules()):
            raise ValueError(f"modules_to_save entry {pattern!r} matches no module of {type(model).__name__}")

    wrappers = []
    for name, module, factory in plan:  # build all wrappers first; the model is swapped in after
        wrapper = module if factory is None else factory(module, config)
        if config.slices_for(name) and not isinstance(wrapper, LoraLinear):
            raise ValueError(f"enable_lora applies to linear layers only; {name!r} is {type(module).__name__}")
        wrappers.append((name, wrapper, factory is not None))
    activate = not active_adapters(model)  # as in PEFT: a further adapter is added inactive
    added = []
    try:
        for name, wrapper, _ in wrappers:
            wrapper.add_adapter(
                adapter_name, config.rank_for(name), config.alpha_for(name), config.lora_dropout,
                config.use_rslora, config.init_lora_weights, config.slices_for(name), config.use_dora,
                activate=activate,
            )
            added.append(wrapper)
    except Exception:
        for wrapper in added:
            wrapper.delete_adapter(adapter_name)
        raise
    for name, wrapper, is_new in wrappers:
        if is_new:
            _set_module(model, name, wrapper)
    _set_trainable(model, config)
    model._lorakit_configs = {**getattr(model, "_lorakit_configs", {}), adapter_name: config}
    return model


def in_modules(param_name: str, module_names: list[str] | None) -> bool:
    """True if parameter ``param_name`` belongs to one of ``module_names`` (full names or suffixes)."""
    module_path = param_name.rsplit(".", 1)[0] if "." in param_name else ""
    return any(f".{m}." in f".{module_path}." or module_path.endswith("." + m) or module_path == m
               for m in module_names or [])


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
        raise KeyError(f"no adapter named {adapter_name!r} on this model (adapters: {sorted(configs)})")
    return configs[adapter_name]


def _check_known(model: nn.Module, names: list[str], allow_base: bool = False) -> None:
    known = adapter_names(model)
    unknown = [n for n in names if n not in known and not (allow_base and n == "__base__")]
    if unknown:
        raise ValueError(f"unknown adapter name(s) {unknown}; this model has {known}"
                         + (" (and '__base__' for no adapter)" if allow_base else ""))


def active_adapters(model: nn.Module) -> list[str]:
    """The adapters in use, in order (their updates add up)."""
    names: list[str] = []
    for _, module in lora_modules(model):
        names += [n for n in module.active_adapters if n not in names]
    return names


def set_adapter(model: nn.Module, names: str | list[str]) -> None:
    """Use adapter ``names`` (one name or a list whose updates add up); only their LoRA weights train."""
    names = [names] if isinstance(names, str) else list(names)
    _check_known(model, names)
    for _, module in lora_modules(model):
        module.set_active(names)
        module.refresh_trainable()


def delete_adapter(model: nn.Module, name: str) -> None:
    """Remove adapter ``name`` everywhere (modules left without adapters become plain again)."""
    _check_known(model, [name])
    remove_adapter(model, name)


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


def add_weighted_adapter(model: nn.Module, adapters: list[str], weights: list[float], adapter_name: str,
                         combination_type: str = "linear", svd_rank: int | None = None) -> None:
    """Create ``adapter_name`` from a weighted combination of existing adapters (PEFT's semantics).

    ``"linear"``: A = sum sign(w_i s_i) sqrt|w_i s_i| A_i, B = sum sqrt|w_i s_i| B_i (equal ranks);
    ``"cat"``: A = [w_i s_i A_i] stacked, B = [B_i] side by side (rank = sum of ranks; exact sum of
    weighted updates); ``"svd"``: the top ``svd_rank`` (default: largest rank) singular triplets of
    sum w_i s_i B_i A_i. The new adapter has scaling 1, is inactive and frozen (use ``set_adapter``).
    """
    if combination_type not in ("linear", "cat", "svd"):
        raise ValueError(f"combination_type must be 'linear', 'cat' or 'svd', got {combination_type!r}")
    if len(weights) != len(adapters):
        raise ValueError(f"got {len(weights)} weights for {len(adapters)} adapters; give one weight per adapter")
    if not adapters:
        raise ValueError("adapters is empty: name at least one adapter to combine")
    _check_known(model, adapters)
    _check_adapter_name(adapter_name)
    if adapter_name in adapter_names(model):
        raise ValueError(f"adapter name {adapter_name!r} is already used on this model")
    if len(adapters) == 1:
        combination_type = "linear"
    if combination_type == "linear":
        paths = [_adapter_paths(model, a) for a in adapters]
        if any(p != paths[0] for p in paths):
            differ = sorted(set.union(*paths) - set.intersection(*paths))
            raise ValueError(f"'linear' combination needs adapters on the same modules; these modules differ: "
                             f"{differ[:8]}{' ...' if len(differ) > 8 else ''} (use 'cat' or 'svd')")
    for path, module in lora_modules(model):
        present = [(a, w) for a, w in zip(adapters, weights, strict=True) if a in module.lora_A]
        if not present:
            continue
        if any(a in module.lora_magnitude_vector for a, _ in present):
            raise ValueError(f"{path}: DoRA adapters cannot be combined")
        ranks = {a: module.lora_A[a].shape[0] for a, _ in present}
        if combination_type == "linear" and len(set(ranks.values())) > 1:
            raise ValueError(f"{path}: 'linear' combination needs equal ranks, got {ranks}")
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


@contextmanager
def adapter_batch(model: nn.Module, names_per_row: list[str]):
    """Within the block, batch row i runs with adapter ``names_per_row[i]`` (``"__base__"``: none).

    Inference only. Each linear LoRA module serves the batch with one gathered batched matmul, so the
    cost does not grow with the number of distinct adapters. The module's adapters are stacked (ranks
    padded with zeros) into an :class:`AdapterBank` that is kept between entries and rebuilt only when
    an adapter is added, deleted or changed (see :class:`AdapterBank` for what counts as a change);
    entering the block then only checks each module's bank and takes its :class:`RowPlan` for these rows
    (kept in the bank too, see :func:`_row_plan`). Works around ``model(...)`` and ``model.generate(...)``:
    a batch of ``k * len(names_per_row)`` rows (beams laid out with ``repeat_interleave``, prompt i owning
    rows ``i * k .. (i + 1) * k - 1``) gives prompt i's adapter to all of its rows.
    """
    names_per_row = tuple(names_per_row)
    if model.training:
        raise ValueError("adapter_batch is for inference: call model.eval() first (mixed batches do not train)")
    if not names_per_row:
        raise ValueError("names_per_row is empty: give one adapter name (or '__base__') per batch row")
    slots = tuple(dict.fromkeys(names_per_row))
    modules = []  # (path, module, the rows' adapters it holds): one walk serves the name check and the setup
    held: set[str] = set()
    for path, module in lora_modules(model):
        lora_a = module.lora_A
        used = [n for n in slots if n in lora_a]
        held.update(used)
        modules.append((path, module, used))
    if any(n not in held and n != "__base__" for n in slots):
        _check_known(model, names_per_row, allow_base=True)  # raises, naming the unknown adapters
    saved = []
    index_cache: dict = {}  # modules holding the same adapters share one row index
    try:
        for path, module, used in modules:
            if used and not isinstance(module, LoraLinear):
                raise ValueError(f"{path}: mixed-adapter batches support linear layers; this adapts a "
                                 f"{type(module.base_layer).__name__}")
            dora = module.lora_magnitude_vector
            if dora and any(n in dora for n in used):
                raise ValueError(f"{path}: mixed-adapter batches do not support DoRA adapters")
            saved.append((module, module.merged, module.active_adapters))
            if module.merged:
                module.unmerge()
            if used:
                module.row_plan = _row_plan(module, names_per_row, index_cache)
            else:  # none of the rows' adapters is here: every row runs the base layer, whatever is active
                module.active_adapters = []
        yield model
    finally:
        for module, merged, active in saved:  # assigned only where changed: nn.Module.__setattr__ is slow
            if module.row_plan is not None:
                module.row_plan = None
            if module.active_adapters is not active:
                module.active_adapters = active
            if merged:
                module.merge()


@dataclasses.dataclass(frozen=True)
class AdapterBank:
    """Every plain (non-DoRA) adapter of one linear LoRA module, stacked for mixed-adapter batches.

    ``names[i]`` occupies slot i of ``a``: (slots + 1, R, in), its A (rows past its rank zero), and of
    ``bt``: (slots + 1, R, out), its scaling * B^T (dense B for sliced adapters; rows past its rank zero);
    the last slot is all zeros (``"__base__"`` and adapters this module does not hold). R is the largest
    rank; ``ranks[i]`` is the rank of ``names[i]``.

    ``key`` records what the stacks were built from: per adapter its name, scaling and the ``data_ptr`` and
    version counter (``Tensor._version``) of A and B, plus dtype and device. Any in-place change of a LoRA
    weight (``copy_`` under ``torch.no_grad()``, an optimizer step, ``load_state_dict``, ``hotswap_adapter``),
    a new tensor (``.to()``, ``p.data = t``, a new parameter in ``lora_A`` / ``lora_B``), a changed scaling,
    or adding / deleting an adapter (which drops the bank) makes the next :func:`adapter_batch` rebuild it.
    Writes through ``p.data`` (e.g. ``p.data.copy_(t)``) do not advance the version counter and are not
    seen: call :func:`clear_adapter_banks` after them.

    ``plans`` keeps the :class:`RowPlan` of each recent ``names_per_row`` (at most :data:`PLAN_CACHE_SIZE`)
    whose stacks are views of this bank or gathered on every call, so that entering :func:`adapter_batch`
    again with the same rows reuses it; a rebuilt bank starts with none.
    """

    key: tuple
    names: tuple[str, ...]
    ranks: tuple[int, ...]
    a: Tensor
    bt: Tensor
    plans: dict[tuple[str, ...], RowPlan] = dataclasses.field(default_factory=dict, compare=False, repr=False)


@dataclasses.dataclass
class RowPlan:
    """Which bank slot each of the ``rows`` named batch rows uses, and the gathered stacks for them.

    ``index``: (rows,) slot per row; ``rank``: the largest rank among the rows' adapters (the stacks are
    cut to it). :meth:`stacks` returns (A: (rows, rank, in), scaling * B^T: (rows, rank, out)): views of the
    bank when the rows use consecutive slots, else gathered once when small (at most
    :data:`PLAN_GATHER_BYTES`), otherwise on every call.
    """

    bank: AdapterBank
    index: Tensor
    rank: int
    gathered: tuple[Tensor, Tensor] | None = None

    @property
    def rows(self) -> int:
        return self.index.numel()

    def gather(self) -> tuple[Tensor, Tensor]:
        with torch.inference_mode(False), torch.no_grad():
            return (self.bank.a[:, : self.rank].index_select(0, self.index),
                    self.bank.bt[:, : self.rank].index_select(0, self.index))

    def stacks(self) -> tuple[Tensor, Tensor]:
        return self.gathered if self.gathered is not None else self.gather()


PLAN_GATHER_BYTES = 1 << 20  # a module's row plan keeps its gathered stacks when they take at most this
PLAN_CACHE_SIZE = 16  # row plans an adapter bank keeps for later entries (the oldest is dropped first)


def _bank_key(module: LoraLinear, names: tuple[str, ...]) -> tuple:
    """What an :class:`AdapterBank` of ``names`` depends on (see its docstring).

    Reads the ``ParameterDict``s' own ``_parameters`` (where they keep their entries): run for every module
    at every :func:`adapter_batch` entry, ``lora_A[name]`` (a ``Module.__getattr__`` each) would dominate.
    """
    lora_a, lora_b, scaling = module.lora_A._parameters, module.lora_B._parameters, module.scaling
    parts = []
    for name in names:
        a, b = lora_a[name], lora_b[name]
        parts.append((name, scaling[name], a.data_ptr(), a._version, b.data_ptr(), b._version))
    weight = lora_a[names[0]]
    return tuple(parts), weight.dtype, weight.device


def _adapter_bank(module: LoraLinear) -> AdapterBank:
    """The module's :class:`AdapterBank`, restacked only when its key changed.

    When only weights or scalings changed (same adapters, ranks, dtype and device: e.g. after a hot-swap),
    the changed adapters' slots are rewritten in the old bank's tensors instead of stacking anew.
    """
    dora = module.lora_magnitude_vector
    names = tuple(n for n in module.lora_A if n not in dora) if dora else tuple(module.lora_A)
    key = _bank_key(module, names)
    old = module._adapter_bank
    if old is not None and old.key == key:
        return old
    ranks = tuple(module.lora_A[n].shape[0] for n in names)
    rank = max(ranks)
    weight = module.lora_A[names[0]]
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, usable outside inference mode
        if old is not None and (old.names, old.ranks, old.a.dtype, old.a.device) == (names, ranks, weight.dtype,
                                                                                     weight.device):
            a, bt = old.a, old.bt
            stale = [part != old_part for part, old_part in zip(key[0], old.key[0], strict=True)]
        else:
            a = weight.new_empty(len(names) + 1, rank, module.fan_in)
            bt = weight.new_empty(len(names) + 1, rank, module.fan_out)
            a[-1].zero_()
            bt[-1].zero_()
            stale = [True] * len(names)
        for i, (name, r) in enumerate(zip(names, ranks, strict=True)):
            if not stale[i]:
                continue
            a[i, :r].copy_(module.lora_A[name])
            torch.mul(module.dense_b(name).t(), module.scaling[name], out=bt[i, :r])
            if r < rank:
                a[i, r:].zero_()
                bt[i, r:].zero_()
    bank = AdapterBank(key, names, ranks, a, bt)
    module._adapter_bank = bank
    return bank


def clear_adapter_banks(model: nn.Module) -> None:
    """Drop every module's cached mixed-batch stacks (needed only after writes through ``param.data``)."""
    for _, module in lora_modules(model):
        module._adapter_bank = None


def _row_plan(module: LoraLinear, names_per_row: tuple[str, ...],
              index_cache: dict[tuple[tuple[str, ...], torch.device], tuple[Tensor, list[int], int | None]]
              ) -> RowPlan:
    """The module's :class:`RowPlan` for ``names_per_row`` (its bank built or reused).

    A plan the bank kept from an earlier entry with the same rows is returned as is. Otherwise
    ``index_cache`` maps a bank's adapter names and device to the row index, the slots in use and the first slot when
    the rows use consecutive slots, so that modules holding the same adapters share them within one
    :func:`adapter_batch` entry; the new plan is kept in the bank unless it holds its own gathered copy
    of the stacks (which would stay allocated).
    """
    bank = _adapter_bank(module)
    plan = bank.plans.get(names_per_row)
    if plan is not None:
        return plan
    with torch.inference_mode(False), torch.no_grad():  # ordinary tensors, reusable outside inference mode
        key = (bank.names, bank.a.device)  # a model split across GPUs needs the index on each module's device
        cached = index_cache.get(key)
        if cached is None:
            slot = {name: i for i, name in enumerate(bank.names)}
            per_row = [slot.get(n, len(bank.names)) for n in names_per_row]
            consecutive = per_row == list(range(per_row[0], per_row[0] + len(per_row)))
            cached = (torch.tensor(per_row, device=bank.a.device), sorted(set(per_row) - {len(bank.names)}),
                      per_row[0] if consecutive else None)
            index_cache[key] = cached
        index, used, first = cached
        plan = RowPlan(bank, index, max(bank.ranks[i] for i in used))
        if first is not None:  # rows use consecutive slots (e.g. every adapter once, in bank order): views
            rows = slice(first, first + plan.rows)
            plan.gathered = (bank.a[rows, : plan.rank], bank.bt[rows, : plan.rank])
        elif plan.rows * plan.rank * (module.fan_in + module.fan_out) * bank.a.element_size() <= PLAN_GATHER_BYTES:
            plan.gathered = plan.gather()
    if first is not None or plan.gathered is None:  # holds no copy of its own: keep it for later entries
        if len(bank.plans) >= PLAN_CACHE_SIZE:
            del bank.plans[next(iter(bank.plans))]
        bank.plans[names_per_row] = plan
    return plan


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
        _set_module(model, name, base)
    if hasattr(model, "_lorakit_configs"):
        del model._lorakit_configs
    if rounding:
        warnings.warn(quant.QuantizedMergeWarning(rounding), stacklevel=2)
    return model


def unload(model: nn.Module) -> nn.Module:
    """Put the original base layers back, discarding every adapter."""
    for name, module in list(lora_modules(model)):
        _set_module(model, name, module.base_layer)
    if hasattr(model, "_lorakit_configs"):
        del model._lorakit_configs
    return model


def remove_adapter(model: nn.Module, adapter_name: str) -> None:
    """Remove one adapter everywhere; wrappers left with no adapter become their base layer again."""
    for name, module in list(lora_modules(model)):
        if adapter_name in module.lora_A:
            module.delete_adapter(adapter_name)
            if not len(module.lora_A):
                _set_module(model, name, module.base_layer)
    getattr(model, "_lorakit_configs", {}).pop(adapter_name, None)


@contextmanager
def restore_on_error(model: nn.Module, adapter_name: str):
    """Undo ``inject(..., adapter_name)`` (and the trainable flags) if the block raises."""
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        yield
    except BaseException:
        if adapter_name in adapter_names(model):
            remove_adapter(model, adapter_name)
        for n, p in model.named_parameters():
            if n in flags:
                p.requires_grad = flags[n]
        raise


def trainable_parameters(model: nn.Module) -> dict[str, Any]:
    """Parameter counts: ``total``, ``trainable``, ``percent`` and, per LoRA module, its ranks.

    ``lora`` counts LoRA parameters only; ``other_trainable`` the rest (heads, biases).
    """
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if is_lora_param_name(n))
    ranks = {name: dict(module.rank) for name, module in lora_modules(model)}
    return {
        "total": total,
        "trainable": trainable,
        "percent": 100.0 * trainable / max(total, 1),
        "lora": lora,
        "other_trainable": trainable - sum(
            p.numel() for n, p in model.named_parameters() if p.requires_grad and is_lora_param_name(n)
        ),
        "ranks": ranks,
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
