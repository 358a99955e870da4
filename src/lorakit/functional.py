"""The LoRA math, in one place.

Every layer and wrapper in lorakit computes its low-rank update through this module:

    y = x W^T + b + scaling * dropout(x) A^T B^T          (Hu et al., 2021, eq. 3)

with W: (out_features, in_features) frozen, A: (r, in_features), B: (out_features, r), and
scaling = lora_alpha / r (or lora_alpha / sqrt(r) for rsLoRA).

The hot path is :func:`lora_linear`, a custom autograd function that

* saves only ``x`` (which the surrounding graph keeps alive anyway) and ``x_a = dropout(x) A^T``
  (``r`` columns) for backward: no dropped copy of ``x`` and no dropout mask; the mask is
  regenerated in backward from a seed drawn from torch's default generator in forward, so runs
  stay reproducible under ``torch.manual_seed``;
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


def _dropout_mask(like: Tensor, p: float, seed: int) -> Tensor:
    """The inverted-dropout multiplier (0 or 1/(1-p)) for ``like``, reproducible from ``seed``.

    Returns a tensor of ``like``'s shape, dtype and device.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed(seed)
    mask = torch.empty_like(like).bernoulli_(1.0 - p, generator=generator)
    return mask.mul_(1.0 / (1.0 - p))


class _LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s * (drop(x) A^T) B^T, saving x and drop(x) A^T only."""

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, dropout_p, seed):
        x2 = _flat(x)
        if dropout_p > 0.0:
            x_dropped = x2 * _dropout_mask(x2, dropout_p, seed)
            x_a = x_dropped @ lora_a.t()  # (tokens, r)
            del x_dropped
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
        mask = _dropout_mask(x2, p, ctx.seed) if p > 0.0 and (need_a or need_x) else None
        if need_a:
            x_dropped = x2 * mask if mask is not None else x2
            grad_a = g_a.t() @ x_dropped  # (r, in)
            del x_dropped
        if need_x:
            grad_x = g @ weight  # (tokens, in)
            if mask is None:
                grad_x.addmm_(g_a, lora_a)
            else:
                grad_x.add_((g_a @ lora_a).mul_(mask))
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
