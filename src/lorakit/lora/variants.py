"""LoRA variants as small strategy objects that the wrappers call (a new variant never touches ``forward``).

Two kinds, each in one table:

* an :class:`Init` decides how A and B start (``LoraConfig.init_lora_weights``). :data:`INITS` maps
  ``True`` (A Kaiming-uniform, B zero: the update starts at zero), ``False`` (B random too; for tests),
  ``"gaussian"`` (A normal with std 1/r) and ``"pissa"`` (principal singular vectors, Meng et al. 2024)
  to one each.
* a :class:`Variant` changes how an adapter enters its layer: it owns its extra parameters, its update
  ``delta_matrix`` and its ``forward``. :data:`VARIANTS` holds DoRA (Liu et al. 2024, ``use_dora``);
  a new variant is a subclass, one entry there and the boolean ``LoraConfig`` field that selects it.
  A wrapper keeps ``variants[adapter]`` only for adapters that have one, so plain LoRA pays one dict
  lookup in ``forward``.

rsLoRA (Kalajdzievski 2023) is a scaling rule, ``lora_alpha / sqrt(r)`` instead of ``lora_alpha / r``:
:func:`lorakit.functional.lora_scaling`, the one definition that the wrappers, the loralib layers and the
PEFT reader share.

A wrapper (``lorakit.lora.wrappers.LoraModule``) gives the strategies what they need: ``fan_in``,
``fan_out``, ``is_linear``, ``_pretrained_weight()`` (the frozen base weight as stored), ``_as_out_in``,
``_matrix_to_weight``, ``lora_matrix``, ``dense_b``, ``_adapter_tensors`` and the per-adapter tables.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import functional as LF

if TYPE_CHECKING:
    from .wrappers import LoraModule


class Strategy:
    """A strategy keeps no per-model state (that lives on the wrapper), so copies of a model share the one
    module-level instance (``is`` comparisons hold; pickles refer to it by ``_global_name``)."""

    name = ""
    _global_name = ""
    #: supported on whole linear layers (nn.Linear, Conv1D) only: not embeddings, convolutions or slices
    linear_only = False

    def __copy__(self) -> Strategy:
        return self

    def __deepcopy__(self, memo: dict) -> Strategy:
        return self

    def __reduce__(self) -> str:
        return self._global_name

    def supports(self, module: LoraModule, slices: list[bool] | None) -> bool:
        return not self.linear_only or (module.is_linear and not slices)

    def forget(self, module: LoraModule, adapter: str) -> None:
        """Drop what this strategy stored on ``module`` for ``adapter`` (called when it is deleted)."""


# ============================================================================ initialisations
def _kaiming_uniform(t: Tensor, r: int) -> None:
    nn.init.kaiming_uniform_(t, a=math.sqrt(5))


def _normal_over_rank(t: Tensor, r: int) -> None:
    nn.init.normal_(t, std=1 / r)


class Init(Strategy):
    """How an adapter's factors start. ``factors`` fills (or replaces) the zero tensors A: (rank, fan_in)
    and B: (fan_out', r) (rank = r * enabled slices) and returns them; the plain ones fill A, then B,
    in place with ``fill_a(A, r)`` / ``fill_b(B, r)`` (None: left zero)."""

    def __init__(self, name: str, global_name: str, fill_a=None, fill_b=None):
        self.name, self._global_name, self.fill_a, self.fill_b = name, global_name, fill_a, fill_b

    def factors(self, module: LoraModule, adapter: str, lora_a: Tensor, lora_b: Tensor, r: int,
                scaling: float) -> tuple[Tensor, Tensor]:
        for fill, tensor in ((self.fill_a, lora_a), (self.fill_b, lora_b)):
            if fill is not None:
                fill(tensor, r)
        return lora_a, lora_b


class PissaInit(Init):
    """PiSSA: A, B from the top-r singular triplets of W, with scaling * B A = W_r; the base weight
    becomes the residual W - W_r, so the layer's output is unchanged. The starting factors are kept as
    the non-persistent buffers ``pissa_init_A_<adapter>`` / ``pissa_init_B_<adapter>``, from which
    ``lorakit.io`` can write the adapter as a plain LoRA for the original weight."""

    linear_only = True

    def factors(self, module, adapter, lora_a, lora_b, r, scaling):
        weight = module._pretrained_weight()
        w = module._as_out_in(weight).detach().float()
        u, sv, vh = torch.linalg.svd(w, full_matrices=False)
        root = (sv[:r] / scaling).sqrt()
        lora_b = (u[:, :r] * root).to(weight.dtype)  # (out, r)
        lora_a = (root[:, None] * vh[:r]).to(weight.dtype)  # (r, in)
        with torch.no_grad():
            residual = w - scaling * (lora_b.float() @ lora_a.float())
            weight.copy_(module._matrix_to_weight(residual).to(weight.dtype))
        module.register_buffer(f"pissa_init_A_{adapter}", lora_a.clone(), persistent=False)
        module.register_buffer(f"pissa_init_B_{adapter}", lora_b.clone(), persistent=False)
        return lora_a, lora_b

    def forget(self, module, adapter):
        for buffer in (f"pissa_init_A_{adapter}", f"pissa_init_B_{adapter}"):
            module._buffers.pop(buffer, None)


KAIMING = Init("kaiming", "KAIMING", _kaiming_uniform)  # B zero: the layer starts equal to the base layer
RANDOM = Init("random", "RANDOM", _kaiming_uniform, _kaiming_uniform)  # a non-zero update from the start
GAUSSIAN = Init("gaussian", "GAUSSIAN", _normal_over_rank)  # A normal with std 1/r, B zero
PISSA = PissaInit("pissa", "PISSA")

#: ``LoraConfig.init_lora_weights`` -> its initialisation.
INITS: dict[bool | str, Init] = {True: KAIMING, False: RANDOM, "gaussian": GAUSSIAN, "pissa": PISSA}


# ============================================================================ variants
class Variant(Strategy):
    """How an adapter enters its layer when it is not plain ``W + scaling * B A``; ``flag``: the boolean
    ``LoraConfig`` field that selects it.

    ``add`` creates the variant's parameters once A and B exist; ``delta_matrix`` is what the adapter
    adds to W, as (fan_out, fan_in); ``forward`` maps x to the layer's output with this adapter (as the
    first active one), x: (..., fan_in) -> (..., fan_out). An adapter with a variant is active alone or
    first, and is not stacked into mixed-adapter batches or weighted combinations.
    """

    flag = ""

    def add(self, module: LoraModule, adapter: str) -> None:
        pass

    def delta_matrix(self, module: LoraModule, adapter: str) -> Tensor:
        raise NotImplementedError

    def forward(self, module: LoraModule, x: Tensor, adapter: str) -> Tensor:
        raise NotImplementedError


class Dora(Variant):
    """DoRA (Liu et al. 2024): W' = m / ||W + s B A|| (W + s B A), a trainable magnitude per output row,
    ``lora_magnitude_vector[adapter]``: (fan_out,), starting at the row norms (the layer starts unchanged)."""

    name = "DoRA"
    flag = "use_dora"
    linear_only = True
    _global_name = "DORA"

    def add(self, module, adapter):
        with torch.no_grad():
            norm = self.row_norm(module, adapter)
        module.lora_magnitude_vector[adapter] = nn.Parameter(norm)

    def delta_matrix(self, module, adapter):
        """m/||W + sBA|| (W + sBA) - W: (fan_out, fan_in)."""
        w = module._as_out_in(module._pretrained_weight())
        scale = (module.lora_magnitude_vector[adapter] / self.row_norm(module, adapter)).unsqueeze(1)
        return (scale - 1) * w + scale * module.lora_matrix(adapter)

    def row_norm(self, module: LoraModule, adapter: str) -> Tensor:
        """||W + s B A|| per output row, (fan_out,), without forming the (fan_out, fan_in) update.

        ||w_o + s b_o A||^2 = ||w_o||^2 + 2 s b_o . (A w_o) + s^2 b_o (A A^T) b_o^T, so the cost is
        one (fan_out, fan_in) x (fan_in, r) product and (r, r) terms.
        """
        w = module._as_out_in(module._pretrained_weight())
        a, b, s = module.lora_A[adapter], module.dense_b(adapter), module.scaling[adapter]
        w_a = w @ a.t()  # (out, r)
        squared = self._weight_row_sq_norms(module) + 2 * s * (b * w_a).sum(1) + s * s * ((b @ (a @ a.t())) * b).sum(1)
        return squared.clamp_min(0).sqrt()

    @staticmethod
    def _weight_row_sq_norms(module: LoraModule) -> Tensor:
        """||w_o||^2 per output row of the pretrained weight: (fan_out,).

        Kept in ``module.variant_cache`` while the weight is unchanged (same storage, dtype and version
        counter), so that a DoRA training step does not read the frozen weight a second time; recomputed
        when the weight itself needs a gradient through it.
        """
        weight = module._pretrained_weight()
        w = module._as_out_in(weight)
        if weight.requires_grad and torch.is_grad_enabled():
            return torch.linalg.vector_norm(w, dim=1) ** 2
        key = (weight.data_ptr(), weight._version, weight.dtype, weight.device, weight.shape)
        cached = module.variant_cache.get("dora_weight_sq")
        if cached is None or cached[0] != key:
            with torch.inference_mode(False), torch.no_grad():
                cached = key, torch.linalg.vector_norm(w, dim=1) ** 2
            module.variant_cache["dora_weight_sq"] = cached
        return cached[1]

    def forward(self, module, x, adapter):
        """x: (..., in) -> (..., out), with the row norm n = ||W + sBA|| a constant:

            y = x W^T + b + (m/n - 1) * (d W^T) + (m/n) * s (d A^T B^T),   d = dropout(x)

        which is m/n (x W^T + s x A^T B^T) + b without dropout. Dropout reaches the (m/n - 1) correction
        of the base term too, as in the DoRA authors' implementation and PEFT (and with the same
        ``F.dropout`` draw, so that PEFT and lorakit train identically from the same seed); that case
        costs a second product with W, for (x - d) W^T.
        """
        weight = module._as_out_in(module._pretrained_weight())
        with torch.no_grad():
            norm = self.row_norm(module, adapter)
        scale = module._modules["lora_magnitude_vector"]._parameters[adapter] / norm  # (out,)
        p = module.dropout_p[adapter] if module.training else 0.0
        dropped = F.dropout(x, p, True) if p > 0.0 else x
        out = LF.lora_linear(dropped, weight, None, *module._adapter_tensors(adapter), module.scaling[adapter])
        bias = module._modules["base_layer"].bias
        if p > 0.0:
            return torch.addcmul(F.linear(x - dropped, weight, bias), out, scale)
        return torch.addcmul(bias, out, scale) if bias is not None else out * scale  # one pass over out


DORA = Dora()

#: The variants, by the boolean ``LoraConfig`` field that selects them.
VARIANTS: dict[str, Variant] = {variant.flag: variant for variant in (DORA,)}
