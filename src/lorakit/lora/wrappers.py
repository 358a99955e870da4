"""The LoRA wrappers: a module wrapped with named adapters, and :data:`WRAPPERS`, the table that picks one.

A wrapper keeps the original module as ``<name>.base_layer`` with its pretrained weights untouched.
Inside a wrapper every update is the matrix product ``scaling * B A`` with A: (r, fan_in) and
B: (fan_out, r), where for
* ``nn.Linear``: fan_in = in_features, fan_out = out_features;
* Hugging Face ``Conv1D`` (weight stored (in, out)): the same, with ``fan_in_fan_out``;
* ``nn.Embedding``: fan_in = num_embeddings, fan_out = embedding_dim (the update is (B A)^T);
* ``nn.ConvNd``: fan_in = in_channels / groups * prod(kernel_size), fan_out = out_channels
  (the update is (B A) reshaped to the kernel's shape).

The math is in :mod:`lorakit.functional`, the merge mechanism in :class:`lorakit.layers.MergeableWeight`,
and what makes an adapter other than plain LoRA (its initialisation, DoRA) in :mod:`lorakit.lora.variants`.
A wrapper reads its frozen base weight only through ``_pretrained_weight()`` and runs the base layer only
through ``_forward_with_weight``: a base layer with another weight storage (e.g. a quantized one) plugs in
by overriding those two.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as LF
from ..errors import LorakitError
from ..layers import MergeableWeight, validate_lora_args
from .variants import DORA, INITS, Init, Variant

if TYPE_CHECKING:
    from .config import LoraConfig
    from .mixed_batch import AdapterBank, RowPlan

try:  # Hugging Face's GPT-2 style linear layer; optional
    from transformers.pytorch_utils import Conv1D as HFConv1D
except Exception:  # pragma: no cover - transformers not installed
    HFConv1D = None

class AdapterError(LorakitError, ValueError):
    """A LoRA request that cannot be done (bad settings, an unknown or taken adapter name, a layer that
    does not support it); raised before anything changes."""


class UnknownAdapterError(LorakitError, KeyError):
    """No adapter of that name on the model."""


class UnsupportedModuleError(LorakitError, TypeError):
    """``target_modules`` matched a module type that has no entry in :data:`WRAPPERS`."""


#: The module types ``target_modules="all-linear"`` selects.
LINEAR_TYPES: tuple[type, ...] = tuple(t for t in (nn.Linear, HFConv1D) if t is not None)


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
        self.inits: dict[str, Init] = {}  # how each adapter started (see lorakit.lora.variants)
        self.variants: dict[str, Variant] = {}  # only adapters that are not plain LoRA (DoRA)
        self.variant_cache: dict[str, object] = {}  # what variants keep between calls (DoRA's ||w_o||^2)
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
        self._init_merge_state()

    # -- what each wrapper kind provides -------------------------------------------------------
    fan_in: int
    fan_out: int
    is_linear = False  # a whole linear layer: DoRA, PiSSA and mixed-adapter batches need one

    def _pretrained_weight(self) -> Tensor:
        """The frozen base weight as stored: the one place a wrapper reads it (a quantized base overrides it)."""
        return self._modules["base_layer"].weight  # _modules: see _adapter_tensors

    def _matrix_to_weight(self, delta: Tensor) -> Tensor:
        """(fan_out, fan_in) update -> the stored weight's layout."""
        raise NotImplementedError

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        """The base layer's forward with ``weight`` (stored layout) in place of its own weight."""
        raise NotImplementedError

    # -- adapters ------------------------------------------------------------------------------
    @property
    def has_lora(self) -> bool:
        return bool(self.active_adapters)

    def add_adapter(self, name: str, r: int, lora_alpha: float, dropout: float, use_rslora: bool = False,
                    init: bool | str = True, slices: list[bool] | None = None, use_dora: bool = False,
                    activate: bool = True, variant: Variant | None = None) -> None:
        """Create adapter ``name``: A (r * n_slices, fan_in), B (fan_out[/slices], r), and what its variant adds.

        ``init``: True (A Kaiming-uniform, B zero: the update starts at zero), ``"gaussian"`` (A normal
        with std 1/r), ``"pissa"`` (A, B from the top-r singular triplets of W; W is replaced by the
        residual W - scaling * B A, see Meng et al. 2024) or False (B random too; for tests).
        ``variant``: a :class:`~lorakit.lora.variants.Variant` (``use_dora=True`` is DoRA's); None: plain LoRA.
        """
        validate_lora_args(r, lora_alpha, dropout, AdapterError)
        if variant is None and use_dora:
            variant = DORA
        if variant is not None and not variant.supports(self, slices):
            raise AdapterError(
                f"{variant.flag} is supported on whole linear layers (nn.Linear, Conv1D); not on "
                f"{type(self.base_layer).__name__}{' with enable_lora slices' if slices else ''}"
            )
        strategy = INITS.get(init)
        if strategy is None:
            raise AdapterError(f"init must be one of {list(INITS)}, got {init!r}")
        if not strategy.supports(self, slices):
            raise AdapterError(f"init_lora_weights={init!r} is supported on whole linear layers (nn.Linear, Conv1D)")
        weight = self._pretrained_weight()
        n_enabled = sum(slices) if slices else 1
        if slices and self.fan_out % len(slices):
            raise AdapterError(
                f"enable_lora has {len(slices)} slices, which does not divide this module's "
                f"{self.fan_out} outputs"
            )
        out_rows = self.fan_out // len(slices) * n_enabled if slices else self.fan_out
        lora_a = weight.new_zeros((r * n_enabled, self.fan_in))
        lora_b = weight.new_zeros((out_rows, r))
        scaling = LF.lora_scaling(lora_alpha, r, use_rslora)
        lora_a, lora_b = self._initial_factors(strategy, name, lora_a, lora_b, r, scaling)
        self.inits[name] = strategy
        self.lora_A[name] = nn.Parameter(lora_a)
        self.lora_B[name] = nn.Parameter(lora_b)
        self.rank[name] = r
        self.scaling[name] = scaling
        self.dropout_p[name] = float(dropout)
        self.slices[name] = list(slices) if slices else None
        self._forget_slice_masks(name)
        if variant is not None:
            variant.add(self, name)
            self.variants[name] = variant
        self._adapter_bank = None
        if activate:
            self.active_adapters.append(name)
        if self.merged:
            self.merge()

    def _initial_factors(self, init: Init, name: str, lora_a: Tensor, lora_b: Tensor, r: int,
                         scaling: float) -> tuple[Tensor, Tensor]:
        """A: (rank, fan_in), B: (fan_out', r) as ``init`` starts them (zeros in, filled tensors out)."""
        return init.factors(self, name, lora_a, lora_b, r, scaling)

    def delete_adapter(self, name: str) -> None:
        for table in (self.lora_A, self.lora_B, self.lora_magnitude_vector):
            if name in table:
                del table[name]
        for table in (self.scaling, self.dropout_p, self.rank, self.slices):
            table.pop(name, None)
        self._forget_slice_masks(name)
        for strategy in (self.inits.pop(name, None), self.variants.pop(name, None)):
            if strategy is not None:
                strategy.forget(self, name)
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
        """What adapter ``name`` adds to W, as (fan_out, fan_in): scaling * B A, or its variant's update."""
        variant = self.variants.get(name)
        return self.lora_matrix(name) if variant is None else variant.delta_matrix(self, name)

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
        raise AdapterError(f"mixed-adapter batches support linear layers only, not {type(self.base_layer).__name__}")

    def _forward_unmerged(self, x: Tensor) -> Tensor:
        weight = self._pretrained_weight() + self.delta_weight()
        return self._forward_with_weight(x, weight)

    def extra_repr(self) -> str:
        return ", ".join(f"{n}: r={self.rank[n]}, scaling={self.scaling[n]:g}" for n in self.lora_A)


class LoraLinear(LoraModule):
    """LoRA around ``nn.Linear`` (weight (out, in)) or Hugging Face ``Conv1D`` (weight (in, out)).

    x: (..., in_features) -> (..., out_features). The first active adapter runs through the fused
    custom autograd function; further active adapters add their updates.
    """

    is_linear = True

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
        variants = self.variants  # a plain dict: one lookup for plain LoRA, the variant's forward otherwise
        if first in variants:
            out = variants[first].forward(self, x, first)
        else:
            out = LF.lora_linear(
                x, self._as_out_in(self._pretrained_weight()), self._modules["base_layer"].bias,
                *self._adapter_tensors(first), self.scaling[first], self.dropout_p[first], self.training,
            )
        for name in rest:
            if name in variants:
                raise AdapterError(f"a {variants[name].name} adapter can only be active alone or first among the "
                                 "active adapters")
            x_in = F.dropout(x, self.dropout_p[name], self.training)
            lora_a, lora_b = self._adapter_tensors(name)
            out = out + (x_in @ lora_a.t() @ lora_b.t()) * self.scaling[name]
        return out

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
            raise AdapterError(f"adapter_batch was given {n} row names but the batch has {rows} rows")
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

    def _initial_factors(self, init, name, lora_a, lora_b, r, scaling):
        nn.init.normal_(lora_b)  # PEFT's embedding init, whatever ``init`` says: A zero, B normal
        return lora_a, lora_b

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


WrapperFactory = Callable[[nn.Module, "LoraConfig"], LoraModule]

#: The one dispatch table: module type -> function building its LoRA wrapper from (module, config).
#: A new module type for ``inject`` is a ``LoraModule`` subclass plus one entry here.
WRAPPERS: dict[type, WrapperFactory] = {
    nn.Linear: _wrap_linear,
    nn.Embedding: lambda m, c: LoraEmbedding(m),
    nn.Conv1d: lambda m, c: LoraConv(m),
    nn.Conv2d: lambda m, c: LoraConv(m),
    nn.Conv3d: lambda m, c: LoraConv(m),
}
if HFConv1D is not None:
    WRAPPERS[HFConv1D] = _wrap_hf_conv1d


def wrapper_factory(module: nn.Module) -> WrapperFactory | None:
    """The :data:`WRAPPERS` entry of ``module``'s type or its nearest base class; None if it has none."""
    for cls in type(module).__mro__:
        if cls in WRAPPERS:
            return WRAPPERS[cls]
    return None
