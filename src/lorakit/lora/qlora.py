"""QLoRA's wrapper: LoRA around a 4-bit base (:class:`lorakit.quant.Linear4bit`), registered in ``WRAPPERS``.

A module of its own beside ``wrappers.py``, so that the 4-bit storage stays one import away from the plain
wrappers; ``lorakit.lora`` imports it, so ``inject`` knows the 4-bit layer whenever lorakit is imported.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import quant
from .variants import Variant
from .wrappers import WRAPPERS, AdapterError, HFConv1D, LoraLinear, LoraModule

__all__ = ["LoraLinear4bit"]


class LoraLinear4bit(LoraLinear):
    """LoRA around a 4-bit base (:class:`lorakit.quant.Linear4bit`, weight (out, in)): x (..., in) -> (..., out).

    Plain and sliced (``enable_lora``) adapters; DoRA and PiSSA need the dense weight and are refused.

    The base output comes from the layer's own weight-free autograd path (the weight dequantized in forward and
    again in backward, never kept), and each active adapter adds ``scaling * dropout(x) A^T B^T`` computed in
    the adapter's dtype (the base's compute dtype). ``merge`` keeps a dense merged copy for inference;
    ``merge_and_unload`` re-quantizes and reports the rounding (:class:`lorakit.quant.QuantizedMergeWarning`),
    unless ``lorakit.quant.dequantize(model)`` made the base dense first (then the merge is exact).
    """

    def __init__(self, base_layer: quant.Linear4bit):
        LoraModule.__init__(self, base_layer)
        self.fan_in, self.fan_out = base_layer.in_features, base_layer.out_features

    @property
    def fan_in_fan_out(self) -> bool:
        """True once ``lorakit.quant.dequantize(model)`` gave the base back as a Conv1D (weight (in, out))."""
        return HFConv1D is not None and isinstance(self._modules["base_layer"], HFConv1D)

    def _pretrained_weight(self) -> Tensor:
        """A fresh dequantized copy (out, in) in the compute dtype, for adapter init and merging; the weight itself
        once ``lorakit.quant.dequantize(model)`` has made the base dense again."""
        base = self._modules["base_layer"]
        return base.dequantized_weight() if isinstance(base, quant.Linear4bit) else base.weight

    def add_adapter(self, name: str, r: int, lora_alpha: float, dropout: float, use_rslora: bool = False,
                    init: bool | str = True, slices: list[bool] | None = None, use_dora: bool = False,
                    activate: bool = True, variant: Variant | None = None) -> None:
        unsupported = [what for what, on in (("use_dora", use_dora or variant is not None),
                                             ("init_lora_weights='pissa'", init == "pissa")) if on]
        if unsupported:
            raise AdapterError(f"{' and '.join(unsupported)} is not supported on a 4-bit (quantized) base layer; "
                             "use plain LoRA on it, or a dense (not quantized) base")
        super().add_adapter(name, r, lora_alpha, dropout, use_rslora, init, slices, use_dora, activate, variant)

    def _forward_with_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        out = F.linear(x.to(weight.dtype), self._as_out_in(weight), self._modules["base_layer"].bias)
        return out.to(x.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if self.row_plan is not None or (self.merged and self.merged_weight is not None):
            return super().forward(x)
        out = self._modules["base_layer"](x)
        for name in self.active_adapters:
            lora_a, lora_b = self._adapter_tensors(name)
            x_in = F.dropout(x, self.dropout_p[name], self.training).to(lora_a.dtype)
            out = out + ((x_in @ lora_a.t()) @ lora_b.t() * self.scaling[name]).to(out.dtype)
        return out

    def merged_base_layer(self) -> tuple[nn.Module, dict[str, float] | None]:
        """A new 4-bit layer holding the merged weight re-quantized, and its rounding error against the exact
        merge (see :func:`lorakit.quant.merge_rounding_error`)."""
        base = self._modules["base_layer"]
        if not self.active_adapters or not isinstance(base, quant.Linear4bit):  # dequantized: an exact merge
            return super().merged_base_layer()
        with torch.no_grad():
            update = self.delta_weight().float()
            exact = base.dequantized_weight(torch.float32) + update
            merged = base.with_weight(exact)
        return merged, quant.merge_rounding_error(merged, exact, update)


WRAPPERS[quant.Linear4bit] = lambda module, config: LoraLinear4bit(module)
