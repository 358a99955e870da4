"""4-bit NF4 frozen weights (QLoRA, Dettmers et al. 2023), behind one backend interface.

``quantize(model)`` replaces each frozen linear layer (``nn.Linear``, Hugging Face ``Conv1D``) except the output
head and the modules named in ``skip`` by a :class:`Linear4bit`: its weight is stored as 4-bit NormalFloat codes
in blocks of 64 weights, each block with an absmax scale, and those scales are themselves quantized to 8 bits in
blocks of 256 (double quantization): about 0.52 bytes per weight, 0.26x the bf16 size. LoRA then trains on top
(``inject`` wraps a :class:`Linear4bit` like any linear layer) in the compute dtype.

A :class:`Linear4bit` never keeps a dequantized weight: its forward dequantizes, multiplies and drops the
dense weight, and its backward dequantizes again for the input gradient (there is no weight gradient), so
between forward and backward only the 4-bit codes are held.

Backends (:data:`BACKENDS`), each quantizing and dequantizing with the library's own functions:

* ``"bitsandbytes"`` (pip ``bitsandbytes``): CUDA kernels, and native CPU kernels (tested with 0.50).
* ``"torchao"`` (pip ``torchao``): ``NF4Tensor``, pure PyTorch, so it runs on any device PyTorch runs on.

``backend="auto"`` takes bitsandbytes on CPU and CUDA when it is installed (on this project's CPU it
dequantizes about 10x faster than torchao: BENCHMARKS.md, ``bench/quant.py``) and torchao otherwise. The
quantized state lives in plain tensors: the uint8/int8 codes as frozen parameters (so FSDP's ``fully_shard``
shards them across processes like the dense parameters, and gathers them for forward and backward), and the
few float32 statistics as buffers holding their int32 bits (so that ``model.to(dtype)`` cannot round them).
``state_dict`` round-trips all of them.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .errors import LorakitError

try:  # Hugging Face's GPT-2 style linear layer (weight (in, out)); optional
    from transformers.pytorch_utils import Conv1D as HFConv1D
except Exception:  # pragma: no cover - transformers not installed
    HFConv1D = None

__all__ = [
    "QuantizationError", "MissingBackendError", "QUANTIZATIONS", "BACKENDS", "default_backend", "Linear4bit",
    "quantize", "dequantize", "quantized_bytes", "linear_types", "QuantizedMergeWarning", "merge_rounding_error",
    "logical_numels", "stored_bytes",
]

#: The quantization names ``quantize`` (and ``model.quantization``) accept.
QUANTIZATIONS = ("nf4",)
BLOCK_SIZE = 64  # weights per absmax block (QLoRA's choice)
SCALE_BLOCK_SIZE = 256  # absmax values per block of the second (double) quantization
CODE_PARTS = ("packed", "absmax")  # the per-weight and per-block codes: all but a few bytes of a 4-bit layer


class QuantizationError(LorakitError, ValueError):
    """A quantization request that cannot be carried out (unknown name, wrong module, wrong model state)."""


class MissingBackendError(LorakitError, ImportError):
    """The requested quantization backend is not installed; the message names the pip package."""


def _float_bits(t: Tensor) -> Tensor:
    """float32 -> its int32 bits (0-copy): a buffer ``model.to(torch.bfloat16)`` leaves exact."""
    return t.detach().to(torch.float32).contiguous().view(torch.int32)


def _bits_float(t: Tensor) -> Tensor:
    return t.view(torch.float32)


# ============================================================================ backends
class NF4Backend:
    """One NF4 implementation: ``quantize`` a weight into named plain tensors, ``dequantize`` them back.

    ``quantize(weight)``: weight (out, in), any float dtype -> {name: tensor} (codes and statistics; float
    statistics as int32 bits, see :func:`_float_bits`). ``dequantize(state, shape, dtype)`` -> (out, in) in
    ``dtype``, computed by the library's own dequantization.
    """

    name: str
    package: str  # the pip package that provides it
    module: str  # the import that must succeed

    def require(self) -> None:
        """Raise :class:`MissingBackendError` naming the pip package if the library cannot be imported."""
        try:
            importlib.import_module(self.module)
        except ImportError as exc:
            raise MissingBackendError(
                f"quantization backend {self.name!r} needs the {self.package!r} package, which is not installed "
                f"({exc}); install it with `pip install {self.package}`"
                + (f" or choose another backend ({', '.join(n for n in BACKENDS if n != self.name)})"
                   if len(BACKENDS) > 1 else "")
            ) from exc

    def quantize(self, weight: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def dequantize(self, state: dict[str, Tensor], shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
        raise NotImplementedError


class BitsAndBytesNF4(NF4Backend):
    """bitsandbytes' ``quantize_4bit(..., quant_type="nf4", compress_statistics=True)`` layout: ``packed``
    (numel / 2, 1) uint8, ``absmax`` (n_blocks,) uint8, ``absmax_offset`` () and ``absmax_scale``
    (ceil(n_blocks / 256),) as float32 bits. The two code books are the library's constants."""

    name, package, module = "bitsandbytes", "bitsandbytes", "bitsandbytes.functional"

    def quantize(self, weight: Tensor) -> dict[str, Tensor]:
        import bitsandbytes.functional as bnbf

        packed, qs = bnbf.quantize_4bit(weight.detach().contiguous(), blocksize=BLOCK_SIZE, compress_statistics=True,
                                        quant_type="nf4")
        return {"packed": packed, "absmax": qs.absmax, "absmax_offset": _float_bits(qs.offset),
                "absmax_scale": _float_bits(qs.state2.absmax)}

    def quant_state(self, state: dict[str, Tensor], shape: tuple[int, int], dtype: torch.dtype):
        """The ``bitsandbytes.functional.QuantState`` that ``state`` stands for."""
        import bitsandbytes.functional as bnbf

        nf4_code, absmax_code = _bnb_codes(state["packed"].device)
        scales = bnbf.QuantState(absmax=_bits_float(state["absmax_scale"]), code=absmax_code,
                                 blocksize=SCALE_BLOCK_SIZE, dtype=torch.float32)
        return bnbf.QuantState(absmax=state["absmax"], shape=torch.Size(shape), code=nf4_code, blocksize=BLOCK_SIZE,
                               quant_type="nf4", dtype=dtype, offset=_bits_float(state["absmax_offset"]),
                               state2=scales)

    def dequantize(self, state: dict[str, Tensor], shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
        import bitsandbytes.functional as bnbf

        return bnbf.dequantize_4bit(state["packed"], self.quant_state(state, shape, dtype))


@functools.cache
def _bnb_codes(device: torch.device) -> tuple[Tensor, Tensor]:
    """bitsandbytes' NF4 code book (16,) and its signed dynamic 8-bit map (256,) for the absmax, on ``device``."""
    import bitsandbytes.functional as bnbf

    _, qs = bnbf.quantize_4bit(torch.ones(BLOCK_SIZE), blocksize=BLOCK_SIZE, compress_statistics=True,
                               quant_type="nf4")
    return qs.code.to(device), qs.state2.code.to(device)


class TorchaoNF4(NF4Backend):
    """torchao's ``NF4Tensor`` (``to_nf4(weight, 64, 256)``) layout, kept as plain tensors: ``packed``
    (padded_numel / 2,) uint8, ``absmax`` (n_blocks,) int8, ``absmax_scale`` (n_blocks / 256,) and
    ``absmax_mean`` () as float32 bits. torchao needs whole blocks of 64 x 256 weights, so the flattened weight
    is zero-padded to a multiple of 16,384 (the padding is dropped after dequantization)."""

    name, package, module = "torchao", "torchao", "torchao.quantization.quantize_.workflows.nf4.nf4_tensor"
    _WHOLE = BLOCK_SIZE * SCALE_BLOCK_SIZE

    def quantize(self, weight: Tensor) -> dict[str, Tensor]:
        from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

        flat = weight.detach().to(torch.float32).reshape(-1)
        flat = F.pad(flat, (0, -flat.numel() % self._WHOLE))
        nf4 = to_nf4(flat.view(-1, BLOCK_SIZE), BLOCK_SIZE, SCALE_BLOCK_SIZE)
        return {"packed": nf4.quantized_data, "absmax": nf4.quantized_scalers,
                "absmax_scale": _float_bits(nf4.quantization_factor), "absmax_mean": _float_bits(nf4.scaler_mean)}

    def nf4_tensor(self, state: dict[str, Tensor]):
        """The torchao ``NF4Tensor`` (float32, shape (padded_numel / 64, 64)) that ``state`` stands for."""
        from torchao.quantization.quantize_.workflows.nf4 import nf4_tensor as ao

        packed = state["packed"]
        rows = packed.numel() * 2 // BLOCK_SIZE
        meta = ao.SubclassTensorArgs(torch.Size((rows, BLOCK_SIZE)), (BLOCK_SIZE, 1), 0, torch.float32,
                                     packed.device, False)
        return ao.NF4Tensor(meta, BLOCK_SIZE, rows, SCALE_BLOCK_SIZE, state["absmax"],
                            _bits_float(state["absmax_scale"]), _bits_float(state["absmax_mean"]), packed,
                            _torchao_code(packed.device))

    def dequantize(self, state: dict[str, Tensor], shape: tuple[int, int], dtype: torch.dtype) -> Tensor:
        dense = self.nf4_tensor(state).get_original_weight()  # (padded_numel / 64, 64) float32
        return dense.reshape(-1)[:math.prod(shape)].view(shape).to(dtype)


@functools.cache
def _torchao_code(device: torch.device) -> Tensor:
    """torchao's NF4 code book (16,) float32, as ``to_nf4`` builds it."""
    from torchao.quantization.quantize_.workflows.nf4.nf4_tensor import to_nf4

    return to_nf4(torch.zeros(TorchaoNF4._WHOLE)).nf4.to(device)


#: The backends by name; ``backend="auto"`` picks one per device (:func:`default_backend`).
BACKENDS: dict[str, NF4Backend] = {"bitsandbytes": BitsAndBytesNF4(), "torchao": TorchaoNF4()}


def _installed(backend: NF4Backend) -> bool:
    try:
        backend.require()
    except MissingBackendError:
        return False
    return True


def default_backend(device: torch.device | str) -> str:
    """The backend ``"auto"`` means for weights on ``device``: bitsandbytes on CPU and CUDA when installed (the
    faster dequantization: BENCHMARKS.md), torchao everywhere else or without bitsandbytes."""
    device_type = torch.device(device).type
    if device_type in ("cpu", "cuda") and _installed(BACKENDS["bitsandbytes"]):
        return "bitsandbytes"
    if _installed(BACKENDS["torchao"]):
        return "torchao"
    raise MissingBackendError(
        "quantization needs an NF4 backend and none is installed: `pip install bitsandbytes` (CPU and CUDA) "
        "or `pip install torchao` (pure PyTorch, any device)"
    )


def _resolve_backend(backend: str, device: torch.device | str) -> NF4Backend:
    if backend == "auto":
        return BACKENDS[default_backend(device)]
    if backend not in BACKENDS:
        raise QuantizationError(f"unknown quantization backend {backend!r}; choose one of {['auto', *BACKENDS]}")
    BACKENDS[backend].require()
    return BACKENDS[backend]


# ============================================================================ the frozen 4-bit layer
class _Linear4bitFn(torch.autograd.Function):
    """y = x W^T + b with W dequantized in forward and again in backward: nothing weight-sized is saved."""

    @staticmethod
    def forward(ctx, x: Tensor, bias: Tensor | None, layer: Linear4bit) -> Tensor:
        ctx.layer = layer
        ctx.has_bias = bias is not None
        return F.linear(x, layer.dequantized_weight(x.dtype), bias)

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        need_x, need_bias = ctx.needs_input_grad[:2]
        grad_x = grad_out @ ctx.layer.dequantized_weight(grad_out.dtype) if need_x else None
        grad_bias = grad_out.reshape(-1, grad_out.shape[-1]).sum(0) if need_bias and ctx.has_bias else None
        return grad_x, grad_bias, None


class Linear4bit(nn.Module):
    """A frozen linear layer with an NF4 weight: x (..., in_features) -> (..., out_features).

    The input is cast to ``compute_dtype``, multiplied with the weight dequantized in that dtype, and the
    output cast back to the input's dtype. The bias (out_features,), if any, is an ordinary parameter in
    ``compute_dtype`` (frozen unless made trainable). The quantized state is in tensors named ``weight_<part>``
    (see the backend classes): the codes (``weight_packed``, ``weight_absmax``: uint8/int8) are frozen parameters,
    which FSDP shards and gathers like any other, the few float statistics are buffers.
    :meth:`dequantized_weight` gives (out_features, in_features).
    ``from_conv1d``: quantized from a Hugging Face ``Conv1D``, which :meth:`to_dense` gives back.
    """

    def __init__(self, in_features: int, out_features: int, state: dict[str, Tensor], backend: str,
                 compute_dtype: torch.dtype, bias: Tensor | None = None, from_conv1d: bool = False):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.backend, self.compute_dtype, self.from_conv1d = backend, compute_dtype, from_conv1d
        self._parts = tuple(state)
        for part, tensor in state.items():
            if part in CODE_PARTS:  # frozen parameters, so that FSDP shards them (it leaves buffers whole)
                self.register_parameter(f"weight_{part}", nn.Parameter(tensor, requires_grad=False))
            else:
                self.register_buffer(f"weight_{part}", tensor)
        self.bias = None if bias is None else nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False)

    @classmethod
    def from_dense(cls, module: nn.Module, backend: str = "auto", compute_dtype: torch.dtype | None = None
                   ) -> Linear4bit:
        """Quantize ``module`` (``nn.Linear``, or a Hugging Face ``Conv1D`` whose (in, out) weight is transposed);
        ``compute_dtype`` defaults to the weight's dtype. ``module`` itself is left unchanged."""
        if not isinstance(module, linear_types()):
            names = ", ".join(t.__name__ for t in linear_types())
            raise QuantizationError(
                f"cannot quantize a {type(module).__name__}: 4-bit quantization applies to linear layers ({names}); "
                "leave this module out (quantize(model, skip=[...]))"
            )
        weight = module.weight if isinstance(module, nn.Linear) else module.weight.t()  # (out, in)
        if not weight.is_floating_point():
            raise QuantizationError(f"cannot quantize a {weight.dtype} weight; it must be floating point")
        chosen = _resolve_backend(backend, weight.device)
        out_features, in_features = weight.shape
        return cls(in_features, out_features, chosen.quantize(weight), chosen.name, compute_dtype or weight.dtype,
                   module.bias, from_conv1d=not isinstance(module, nn.Linear))

    def with_weight(self, weight: Tensor) -> Linear4bit:
        """A new layer like this one (backend, compute dtype, the same bias parameter) holding ``weight``
        (out_features, in_features) quantized; this layer is left unchanged."""
        if tuple(weight.shape) != (self.out_features, self.in_features):
            raise QuantizationError(f"weight of shape {tuple(weight.shape)} for a 4-bit layer of "
                                    f"{(self.out_features, self.in_features)}")
        layer = Linear4bit(self.in_features, self.out_features, BACKENDS[self.backend].quantize(weight),
                           self.backend, self.compute_dtype, from_conv1d=self.from_conv1d)
        layer.bias = self.bias
        return layer

    def to_dense(self, dtype: torch.dtype | None = None) -> nn.Module:
        """The dense layer this one stands for, holding the dequantized weight in ``dtype`` (default
        ``compute_dtype``): an ``nn.Linear``, or a ``Conv1D`` (weight (in, out)) if quantized from one. Its
        parameters are frozen except a bias that trains here."""
        weight = self.dequantized_weight(dtype)
        if self.from_conv1d:  # Conv1D(nf=out, nx=in), always with a bias
            dense, weight = HFConv1D(self.out_features, self.in_features), weight.t()
        else:
            dense = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
        dense.to(weight.device, weight.dtype)
        with torch.no_grad():
            dense.weight.copy_(weight)
            if self.bias is not None:
                dense.bias.copy_(self.bias)
        dense.requires_grad_(False)
        if self.bias is not None:
            dense.bias.requires_grad = self.bias.requires_grad
        return dense

    def quant_state(self) -> dict[str, Tensor]:
        """The stored tensors by part name (``packed``, ``absmax`` ...), as the backend produced them."""
        return {part: getattr(self, f"weight_{part}") for part in self._parts}

    def dequantized_weight(self, dtype: torch.dtype | None = None) -> Tensor:
        """The weight as the layer computes with it: (out_features, in_features) in ``dtype`` (default
        ``compute_dtype``), a fresh tensor (never requires grad)."""
        with torch.no_grad():
            return BACKENDS[self.backend].dequantize(self.quant_state(), (self.out_features, self.in_features),
                                                     dtype or self.compute_dtype)

    def forward(self, x: Tensor) -> Tensor:
        compute = x.to(self.compute_dtype)
        bias = self.bias
        if torch.is_grad_enabled() and (x.requires_grad or (bias is not None and bias.requires_grad)):
            out = _Linear4bitFn.apply(compute, bias, self)
        else:
            out = F.linear(compute, self.dequantized_weight(), bias)
        return out.to(x.dtype)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"backend={self.backend}, compute_dtype={self.compute_dtype}")


class QuantizedMergeWarning(LorakitError, UserWarning):
    """``merge_and_unload`` re-quantized merged weights to NF4. ``errors``: {layer name: {"max_abs_error",
    "mean_abs_error", "mean_abs_update"}}: the re-quantized merged weight against the exact merge (dequantized
    base + LoRA update, float32), and the mean size of the update itself for scale."""

    def __init__(self, errors: dict[str, dict[str, float]]):
        self.errors = errors
        worst = max(errors, key=lambda name: errors[name]["max_abs_error"])
        mean_error = sum(e["mean_abs_error"] for e in errors.values()) / len(errors)
        mean_update = sum(e["mean_abs_update"] for e in errors.values()) / len(errors)
        super().__init__(
            f"merge_and_unload re-quantized {len(errors)} merged 4-bit layer(s) to NF4, which rounds the merged "
            f"weights: against the exact merge (dequantized base + LoRA update) the error is up to "
            f"{errors[worst]['max_abs_error']:.3g} (in {worst!r}), {mean_error:.3g} on average, while the LoRA "
            f"updates average {mean_update:.3g} in absolute value. For an exact merge, call "
            "lorakit.quant.dequantize(model) before merge_and_unload (the merged layers are then dense)."
        )


def merge_rounding_error(merged: Linear4bit, exact: Tensor, update: Tensor) -> dict[str, float]:
    """The :class:`QuantizedMergeWarning` entry of one layer: ``merged`` (re-quantized) against ``exact``
    (out, in) float32, and ``update`` (out, in) the LoRA update that was merged."""
    error = (merged.dequantized_weight(torch.float32) - exact).abs()
    return {"max_abs_error": error.max().item(), "mean_abs_error": error.mean().item(),
            "mean_abs_update": update.abs().mean().item()}


@functools.cache
def linear_types() -> tuple[type, ...]:
    """The module types :func:`quantize` replaces: ``nn.Linear`` and Hugging Face ``Conv1D``."""
    return tuple(t for t in (nn.Linear, HFConv1D) if t is not None)


# ============================================================================ whole models
def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(name == p or name.endswith("." + p) or name.startswith(p + ".") for p in patterns)


def _output_head_names(model: nn.Module) -> set[str]:
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    return {n for n, m in model.named_modules() if head is not None and m is head}


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)


def quantize(model: nn.Module, quantization: str = "nf4", *, compute_dtype: torch.dtype | None = None,
             skip: Iterable[str] | None = None, backend: str = "auto") -> nn.Module:
    """Replace the frozen linear layers of ``model`` by :class:`Linear4bit`, in place, and return ``model``.

    Every ``nn.Linear`` / Hugging Face ``Conv1D`` is quantized except the output head (``get_output_embeddings``)
    and the modules named in ``skip`` (full names or dotted suffixes, e.g. the LoRA config's
    ``modules_to_save``). ``compute_dtype`` (default: each weight's own dtype) is what the layers compute in.
    Call it before ``inject``. Everything is checked and quantized before the model is touched: on error the
    model is unchanged.
    """
    if quantization not in QUANTIZATIONS:
        raise QuantizationError(f"unknown quantization {quantization!r}; lorakit supports {list(QUANTIZATIONS)}")
    if compute_dtype is not None and not (isinstance(compute_dtype, torch.dtype) and compute_dtype.is_floating_point):
        raise QuantizationError(f"compute_dtype must be a floating torch.dtype such as torch.bfloat16, "
                                f"not {compute_dtype!r}")
    if isinstance(model, linear_types()):
        raise QuantizationError("quantize() takes a model; to quantize one linear layer use Linear4bit.from_dense")
    if any(hasattr(m, "lora_A") for m in model.modules()):
        raise QuantizationError("this model already has LoRA adapters: quantize the base model first, then inject")
    skip = list(skip or [])
    heads = _output_head_names(model)
    names = [n for n, m in model.named_modules()
             if isinstance(m, linear_types()) and n not in heads and not _matches(n, skip)]
    if not names:
        raise QuantizationError(
            f"{type(model).__name__} has no linear layer to quantize (nn.Linear or Conv1D, other than the output "
            f"head{' and skip=' + repr(skip) if skip else ''})"
        )
    first = model.get_submodule(names[0]).weight
    chosen = _resolve_backend(backend, first.device).name  # one backend for the whole model
    quantized = [(name, Linear4bit.from_dense(model.get_submodule(name), chosen, compute_dtype)) for name in names]
    for name, layer in quantized:  # swap only once every layer has been quantized
        _set_module(model, name, layer)
    return model


def dequantize(model: nn.Module, dtype: torch.dtype | None = None) -> nn.Module:
    """Replace every :class:`Linear4bit` of ``model`` by the dense layer it stands for (:meth:`Linear4bit.to_dense`:
    ``nn.Linear`` or ``Conv1D``, the dequantized weight in ``dtype``, default the layer's compute dtype), in place;
    return ``model``. On a LoRA-adapted model a merge afterwards is exact."""
    for name, module in list(model.named_modules()):
        if isinstance(module, Linear4bit) and name:
            _set_module(model, name, module.to_dense(dtype))
    return model


def quantized_bytes(model: nn.Module) -> tuple[int, int]:
    """(bytes stored by the 4-bit layers' quantized weights, bytes of the same weights in bf16). The codes count
    as parameters in ``model.parameters()``: a uint8 of ``weight_packed`` holds two weights."""
    stored = dense = 0
    for module in model.modules():
        if isinstance(module, Linear4bit):
            stored += sum(t.numel() * t.element_size() for t in module.quant_state().values())
            dense += module.in_features * module.out_features * 2
    return stored, dense


def logical_numels(model: nn.Module) -> dict[str, int]:
    """The number of weights each parameter of ``model`` stands for, by name (as ``model.named_parameters()``
    names it): its ``numel()``, except a :class:`Linear4bit`'s codes. Its ``weight_packed`` (uint8, two 4-bit
    codes per byte, padded to whole blocks by torchao) stands for the layer's ``in_features * out_features``
    weights, and ``weight_absmax`` (the per-block scales) for none, so that a quantized model counts as many
    parameters as the dense model it was quantized from. Their memory is :func:`stored_bytes`."""
    logical: dict[int, int] = {}
    for module in model.modules():
        if isinstance(module, Linear4bit):
            for part in CODE_PARTS:
                if part in module._parts:
                    weights = module.in_features * module.out_features if part == "packed" else 0
                    logical[id(getattr(module, f"weight_{part}"))] = weights
    return {name: logical.get(id(p), p.numel()) for name, p in model.named_parameters()}


def stored_bytes(model: nn.Module) -> int:
    """The bytes ``model``'s parameters and buffers occupy as stored (each shared tensor once): 4-bit codes at
    their packed size, with the quantization statistics."""
    tensors = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())
