"""The LoRA math, in one place.

Every layer and wrapper in lorakit computes its low-rank update through this module:

    y = x W^T + b + scaling * dropout(x) A^T B^T          (Hu et al., 2021, eq. 3)

with W: (out_features, in_features) frozen, A: (r, in_features), B: (out_features, r), and
scaling = lora_alpha / r (or lora_alpha / sqrt(r) for rsLoRA).

The hot path is :func:`lora_linear`, a custom autograd function that

* saves only ``x`` (which the surrounding graph keeps alive anyway) and ``x_a = dropout(x) A^T``
  (``r`` columns) for backward: no dropped copy of ``x`` and no dropout mask; the mask is
  regenerated in backward from a seed drawn from torch's default generator in forward, so runs
  stay reproducible under ``torch.manual_seed``. Masks are drawn as int16 uniforms against a
  threshold (cheap enough to draw twice), so the dropout probability is used rounded to a multiple
  of 1/65536 (0.1 -> 0.1000061);
* accumulates the update into the base output in place (``addmm_``) instead of allocating
  output-sized temporaries for the scaling and the sum;
* never computes a gradient for a frozen (``requires_grad=False``) weight or bias.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _flat(t: Tensor) -> Tensor:
    """(..., features) -> (tokens, features) without copying when possible."""
    return t.reshape(-1, t.shape[-1])


_INT16_SPAN = 65536


def quantized_dropout_p(p: float) -> float:
    """The dropout probability actually used: ``p`` rounded to a multiple of 1/65536 (|error| < 8e-6)."""
    return round(p * _INT16_SPAN) / _INT16_SPAN


def _keep_mask(like: Tensor, p: float, seed: int) -> Tensor:
    """A bool mask of ``like``'s shape, True with probability 1 - quantized_dropout_p(p), from ``seed``.

    Drawn as int16 uniforms compared with a threshold: several times cheaper than ``bernoulli_`` on a
    CPU, which matters because backward draws the same mask again instead of keeping it.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed(seed)
    draws = torch.randint(-32768, 32768, like.shape, dtype=torch.int16, device=like.device, generator=generator)
    return draws >= round(p * _INT16_SPAN) - 32768


def _dropout_mask(like: Tensor, p: float, seed: int) -> Tensor:
    """The inverted-dropout multiplier (0 or 1/(1-p')) that :func:`lora_linear` applies, for tests."""
    return _keep_mask(like, p, seed).to(like.dtype) / (1.0 - quantized_dropout_p(p))


class _LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s * (drop(x) A^T) B^T, saving x and keep(x) A^T only.

    With dropout, drop(x) = keep(x) / (1 - p): the 1/(1-p) is folded into the scaling, and the keep
    mask is drawn again in backward from the same seed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, dropout_p, seed):
        x2 = _flat(x)
        if dropout_p > 0.0:
            x_a = torch.where(_keep_mask(x2, dropout_p, seed), x2, 0.0) @ lora_a.t()  # (tokens, r)
            scaling = scaling / (1.0 - quantized_dropout_p(dropout_p))
        else:
            x_a = x2 @ lora_a.t()
        if bias is not None:
            out = torch.addmm(bias, x2, weight.t())
        else:
            out = x2 @ weight.t()
        out.addmm_(x_a, lora_b.t(), alpha=scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, x_a)
        ctx.scaling, ctx.dropout_p, ctx.seed = scaling, dropout_p, seed
        ctx.has_bias = bias is not None
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, lora_a, lora_b, x_a = ctx.saved_tensors
        need_x, need_w, need_b, need_a, need_bb = ctx.needs_input_grad[:5]
        s, p = ctx.scaling, ctx.dropout_p
        g = _flat(grad_out)
        x2 = _flat(x)
        grad_x = grad_w = grad_bias = grad_a = grad_b = None

        if need_bb:
            grad_b = (g.t() @ x_a).mul_(s)  # (out, r)
        if need_a or need_x:
            g_a = (g @ lora_b).mul_(s)  # (tokens, r)
        keep = _keep_mask(x2, p, ctx.seed) if p > 0.0 and (need_a or need_x) else None
        if need_a:
            grad_a = g_a.t() @ (torch.where(keep, x2, 0.0) if keep is not None else x2)  # (r, in)
        if need_x:
            grad_x = g @ weight  # (tokens, in)
            if keep is None:
                grad_x.addmm_(g_a, lora_a)
            else:
                grad_x.add_(torch.where(keep, g_a @ lora_a, 0.0))
            grad_x = grad_x.view(x.shape)
        if need_w:
            grad_w = g.t() @ x2
        if need_b and ctx.has_bias:
            grad_bias = g.sum(0)
        return grad_x, grad_w, grad_bias, grad_a, grad_b, None, None, None


def lora_linear(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    lora_a: Tensor,
    lora_b: Tensor,
    scaling: float,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """LoRA-adapted linear map.

    Args:
        x: (..., in_features)
        weight: (out_features, in_features), usually frozen
        bias: (out_features,) or None
        lora_a: (r, in_features)
        lora_b: (out_features, r)
        scaling: the factor applied to the low-rank update (alpha / r)
        dropout_p: dropout probability on the LoRA branch's input, applied only when ``training``
    Returns:
        (..., out_features)
    """
    p = float(dropout_p) if training else 0.0
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight, lora_a, lora_b = (t.to(dtype) for t in (x, weight, lora_a, lora_b))
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            return lora_linear(x, weight, bias, lora_a, lora_b, scaling, p, training)
    seed = int(torch.randint(0, 2**62, (1,)).item()) if p > 0.0 else 0
    return _LoraLinearFn.apply(x, weight, bias, lora_a, lora_b, float(scaling), p, seed)


def lora_linear_reference(x, weight, bias, lora_a, lora_b, scaling, dropout_mask=None):
    """The plain formula, for tests: x W^T + b + s * ((x * mask) A^T) B^T."""
    x_in = x if dropout_mask is None else x * dropout_mask
    out = torch.nn.functional.linear(x, weight, bias)
    return out + scaling * (x_in @ lora_a.t() @ lora_b.t())


def delta_weight(lora_a: Tensor, lora_b: Tensor, scaling: float) -> Tensor:
    """The dense update s * B A: (out_features, in_features) from A: (r, in), B: (out, r)."""
    return (lora_b @ lora_a) * scaling


def lora_scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """alpha / r (Hu et al., 2021), or alpha / sqrt(r) (rsLoRA, Kalajdzievic 2023)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


def group_block_b(lora_b: Tensor, row_mask: Tensor, groups: int) -> Tensor:
    """Expand a fused-projection B into one dense (out_features, groups * r) matrix.

    ``lora_b``: (groups * out_per_group, r) holds one B block per enabled slice (loralib's
    ``MergedLinear`` layout); ``row_mask``: (out_features,) bool, True on the rows of enabled slices.
    The result is block-diagonal over the enabled slices and zero on disabled rows, so that a
    ``MergedLinear`` is exactly a LoRA of rank ``groups * r`` whose A is loralib's stacked A.
    """
    blocks = torch.block_diag(*lora_b.chunk(groups, dim=0))  # (groups*out_per, groups*r)
    full = lora_b.new_zeros(row_mask.shape[0], blocks.shape[1])
    full[row_mask] = blocks
    return full
