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
import torch.nn.functional as F
from torch import Tensor


def _flat(t: Tensor) -> Tensor:
    """(..., features) -> (tokens, features) without copying when possible."""
    return t.reshape(-1, t.shape[-1])


_INT16_SPAN = 65536


def quantized_dropout_p(p: float) -> float:
    """The dropout probability actually used: ``p`` rounded to a multiple of 1/65536 (|error| < 8e-6)."""
    return round(p * _INT16_SPAN) / _INT16_SPAN


def _keep_float(like: Tensor, p: float, seed: int) -> Tensor:
    """A 0/1 mask of ``like``'s shape and dtype, 1 with probability 1 - quantized_dropout_p(p), from ``seed``.

    Drawn as int16 uniforms compared with a threshold: several times cheaper than ``bernoulli_`` on a
    CPU, which matters because backward draws the same mask again instead of keeping it. Each 64-bit
    draw of the generator gives four int16 uniforms (``randint(..., dtype=int16)`` spends one draw per
    element), and the comparison is done in float arithmetic, ``clamp(u - t + 1, 0, 1)``, because
    CPU kernels on bool tensors (``where``, bool -> float) are not vectorised.
    """
    generator = torch.Generator(device=like.device)
    generator.manual_seed(seed)
    n = like.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=like.device)
    words.random_(-(2**63), None, generator=generator)  # the full 64-bit range: every int16 uniform
    u = words.view(torch.int16)[:n].view(like.shape).to(torch.float32)  # exact in float32
    keep = u.sub_(round(p * _INT16_SPAN) - 32768 - 1).clamp_(0, 1)  # 1 iff u >= threshold
    return keep if like.dtype == torch.float32 else keep.to(like.dtype)


def _dropout_mask(like: Tensor, p: float, seed: int) -> Tensor:
    """The inverted-dropout multiplier (0 or 1/(1-p')) that :func:`lora_linear` applies, for tests."""
    return _keep_float(like, p, seed) / (1.0 - quantized_dropout_p(p))


class _LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s * (drop(x) A^T) B^T, saving x and keep(x) A^T only.

    With dropout, drop(x) = keep(x) / (1 - p): the 1/(1-p) is folded into the scaling, and the keep
    mask is drawn again in backward from the same seed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, dropout_p, seed):
        x2 = _flat(x)
        if dropout_p > 0.0:
            x_a = F.linear(_keep_float(x2, dropout_p, seed).mul_(x2), lora_a)  # (tokens, r)
            scaling = scaling / (1.0 - quantized_dropout_p(dropout_p))
        else:
            x_a = F.linear(x2, lora_a)  # ~1.5x faster than x2 @ lora_a.t() with MKL
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
            # (x_a^T g)^T: MKL is several times slower on g.t() @ x_a (big operand transposed)
            grad_b = (x_a.t() @ g).mul_(s).t()  # (out, r)
        if need_a or need_x:
            g_a = (lora_b.t() @ g.t()).mul_(s).t()  # (tokens, r); ~1.5-2x faster than g @ lora_b
        keep = _keep_float(x2, p, ctx.seed) if p > 0.0 and (need_a or need_x) else None
        if need_a:
            grad_a = g_a.t() @ (x2 * keep if keep is not None else x2)  # (r, in)
        if need_x:
            grad_x = g @ weight  # (tokens, in)
            if keep is None:
                grad_x.addmm_(g_a, lora_a)
            else:
                grad_x.addcmul_(g_a @ lora_a, keep)
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
