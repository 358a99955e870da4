"""The LoRA math, in one place.

Every layer and wrapper in lorakit computes its low-rank update through this module:

    y = x W^T + b + scaling * dropout(x) A^T B^T          (Hu et al., 2021, eq. 3)

with W: (out_features, in_features) frozen, A: (r, in_features), B: (out_features, r), and
scaling = lora_alpha / r (or lora_alpha / sqrt(r) for rsLoRA).

The hot path is :func:`lora_linear`, a custom autograd function that

* saves only ``x`` (which the surrounding graph keeps alive anyway) and ``x_a = dropout(x) A^T``
  (kept transposed, ``(r, tokens)``) for backward: no dropped copy of ``x`` and no dropout mask; the mask is
  regenerated in backward from a seed drawn from torch's default generator in forward, so runs
  stay reproducible under ``torch.manual_seed``. The mask is a counter-based hash of the element
  index keyed by that seed (cheap enough to compute twice; what ``torch.compile`` traces and fuses),
  cut into 16-bit uniforms, so the dropout probability is used rounded to a multiple of 1/65536
  (0.1 -> 0.1000061). Eager code on a GPU draws the mask from torch's Philox generator seeded the same
  way instead (one launch instead of about fifteen), so eager-GPU masks differ from CPU and compiled ones;
* accumulates the update into the base output in place (``addmm_``) instead of allocating
  output-sized temporaries for the scaling and the sum;
* never computes a gradient for a frozen (``requires_grad=False``) weight or bias.
"""

from __future__ import annotations

import functools
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


# lowbias32 (C. Wellons' hash prospector): a 32-bit integer hash with near-ideal avalanche. The
# multipliers are written as signed int32 values because the arithmetic is done in torch.int32,
# which wraps modulo 2**32; right shifts are arithmetic on int32, so they are masked to be logical.
_HASH_M1 = 0x7FEB352D
_HASH_M2 = 0x846CA68B - (1 << 32)
_COUNTERS_PER_CHUNK = 1 << 30  # int32 counters per key; larger masks use one derived key per chunk


def _hash32_(words: Tensor) -> Tensor:
    """lowbias32 applied in place to an int32 tensor (every bit of the output depends on every input bit)."""
    words.bitwise_xor_(words.bitwise_right_shift(16).bitwise_and_(0xFFFF))
    words.mul_(_HASH_M1)
    words.bitwise_xor_(words.bitwise_right_shift(15).bitwise_and_(0x1FFFF))
    words.mul_(_HASH_M2)
    words.bitwise_xor_(words.bitwise_right_shift(16).bitwise_and_(0xFFFF))
    return words


def _random_int16(n: int, seed: int | Tensor, device: torch.device) -> Tensor:
    """(n,) int16 uniforms, a pure function of ``seed`` (0 <= seed < 2**62; an int or a 0-dim int64
    tensor) and the element index.

    Word ``i`` of chunk ``c`` is ``lowbias32((i XOR k1(c)) * M1 + k2)``, where the two 31/32-bit keys
    come from the seed; each 32-bit word gives two int16 uniforms. The keyed multiply-add before
    the hash maps the counters of two different seeds onto unrelated inputs, so masks drawn with
    different seeds are independent, not shifted copies of one another. About twice as fast on a
    CPU as drawing the same bits from torch's Mersenne Twister (eager GPU code draws from Philox
    instead: :func:`_keep_float`). The key arithmetic stays in tensors, so that ``torch.compile``
    traces it without a graph break.
    """
    n_words = (n + 1) // 2
    words = torch.empty(n_words, dtype=torch.int32, device=device)
    seed = torch.as_tensor(seed, dtype=torch.int64)
    key_lo = (seed.bitwise_and(0xFFFFFFFF) - (1 << 31)).to(torch.int32)
    key_hi = seed.bitwise_right_shift(32).bitwise_and(0x7FFFFFFF).to(torch.int32)
    for chunk, start in enumerate(range(0, n_words, _COUNTERS_PER_CHUNK)):
        part = words[start:start + _COUNTERS_PER_CHUNK]
        torch.arange(part.numel(), dtype=torch.int32, device=device, out=part)
        chunk_key = key_lo ^ ((chunk * 0x9E3779B9) & 0x7FFFFFFF)
        part.bitwise_xor_(chunk_key).mul_(_HASH_M1).add_(key_hi)
        _hash32_(part)
    return words.view(torch.int16)[:n]


def use_philox_mask(like: Tensor) -> bool:
    """Whether the dropout mask for ``like`` is drawn from Philox (:func:`_keep_float`): eager code on a GPU,
    outside CUDA-graph capture. The forward decides once and its backward follows that decision, so the two
    always draw the same mask (compiled autograd can trace a backward whose forward ran eagerly)."""
    return (like.device.type == "cuda" and not torch.compiler.is_compiling()
            and not torch.cuda.is_current_stream_capturing())


def _philox_keep(like: Tensor, q: float, seed: int | Tensor) -> Tensor:
    """0/1 of ``like``'s shape and dtype, 1 with probability ``q``: one ``bernoulli_`` seeded with ``seed``."""
    generator = torch.Generator(like.device)
    generator.manual_seed(int(seed))
    return torch.empty_like(like).bernoulli_(q, generator=generator)


@functools.cache
def _outside_graph(fn):
    """``fn`` behind ``torch.compiler.disable`` (a generator cannot be traced), wrapped on first use: importing
    the compiler stack costs about a second, which ``import lorakit`` should not pay."""
    return torch.compiler.disable(fn)


def _keep_float(like: Tensor, p: float, seed: int | Tensor, philox: bool | None = None) -> Tensor:
    """A 0/1 mask of ``like``'s shape and dtype, 1 with probability 1 - quantized_dropout_p(p), from ``seed``.

    The int16 uniforms of :func:`_random_int16` are compared with a threshold in float arithmetic,
    ``clamp(u - t + 1, 0, 1)``, because CPU kernels on bool tensors (``where``, bool -> float) are not
    vectorised; ``torch.compile`` fuses that chain into one kernel. In eager mode on a GPU the chain would
    be about fifteen kernel launches, so there (``philox``, default :func:`use_philox_mask`) the mask is
    one ``bernoulli_`` from torch's counter-based Philox generator seeded with ``seed`` instead: as
    reproducible from the seed, but not the same bits as on the CPU or under ``torch.compile``.
    """
    if use_philox_mask(like) if philox is None else philox:
        return _outside_graph(_philox_keep)(like, 1.0 - quantized_dropout_p(p), seed)
    u = _random_int16(like.numel(), seed, like.device).view(like.shape).to(torch.float32)  # exact in float32
    keep = u.sub_(round(p * _INT16_SPAN) - 32768 - 1).clamp_(0, 1)  # 1 iff u >= threshold
    return keep if like.dtype == torch.float32 else keep.to(like.dtype)


def _dropout_mask(like: Tensor, p: float, seed: int | Tensor) -> Tensor:
    """The inverted-dropout multiplier (0 or 1/(1-p')) that :func:`lora_linear` applies, for tests."""
    return _keep_float(like, p, seed) / (1.0 - quantized_dropout_p(p))


def _base_plus_update(x2: Tensor, weight: Tensor, bias: Tensor | None, x_a_t: Tensor, lora_b: Tensor,
                      scaling: float) -> Tensor:
    """(tokens, out) = x2 W^T + b + scaling * x_a B^T, the update accumulated in place (no output-sized
    temporaries). x2 (tokens, in); x_a_t (r, tokens)."""
    out = torch.addmm(bias, x2, weight.t()) if bias is not None else x2 @ weight.t()
    return out.addmm_(x_a_t.t(), lora_b.t(), alpha=scaling)


class _LoraLinearFn(torch.autograd.Function):
    """y = x W^T + b + s * (drop(x) A^T) B^T, saving x and keep(x) A^T only.

    With dropout, drop(x) = keep(x) / (1 - p): the 1/(1-p) is folded into the scaling, and the keep
    mask is drawn again in backward from the same seed.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, lora_a, lora_b, scaling, dropout_p, seed):
        x2 = _flat(x)
        ctx.philox = dropout_p > 0.0 and use_philox_mask(x2)  # backward draws its mask the same way
        if dropout_p > 0.0:
            x_a_t = lora_a @ _keep_float(x2, dropout_p, seed, ctx.philox).mul_(x2).t()  # (r, tokens)
            scaling = scaling / (1.0 - quantized_dropout_p(dropout_p))
        else:
            # kept as (r, tokens): the products below then read a contiguous x_a^T (about 1% of the
            # layer's forward + backward faster with MKL than x_a (tokens, r) and its transpose)
            x_a_t = lora_a @ x2.t()
        out = _base_plus_update(x2, weight, bias, x_a_t, lora_b, scaling)
        ctx.save_for_backward(x, weight, lora_a, lora_b, x_a_t)
        ctx.scaling, ctx.dropout_p, ctx.seed = scaling, dropout_p, seed
        ctx.has_bias = bias is not None
        return out.view(*x.shape[:-1], out.shape[-1])

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, lora_a, lora_b, x_a_t = ctx.saved_tensors
        need_x, need_w, need_b, need_a, need_bb = ctx.needs_input_grad[:5]
        s, p = ctx.scaling, ctx.dropout_p
        g = _flat(grad_out)
        x2 = _flat(x)
        grad_x = grad_w = grad_bias = grad_a = grad_b = None

        # s * (m1 @ m2) as one addmm with beta=0 (its input is then ignored, NaN included): a GEMM with
        # alpha = s instead of a GEMM and a separate scaling kernel, which counts on a GPU, where these
        # small products are bound by kernel launches. Under torch.compile the input is a real zero (folded
        # away by inductor), because a max-autotune addmm template computes input * beta.
        unused = g.new_zeros(()) if torch.compiler.is_compiling() else g.new_empty(())
        if need_bb:
            # (x_a^T g)^T: MKL is several times slower on g.t() @ x_a (big operand transposed)
            grad_b = torch.addmm(unused, x_a_t, g, beta=0, alpha=s).t()  # (out, r)
        if need_a or need_x:
            g_a_t = torch.addmm(unused, lora_b.t(), g.t(), beta=0, alpha=s)  # (r, tokens); faster than g @ B
        keep = _keep_float(x2, p, ctx.seed, ctx.philox) if p > 0.0 and (need_a or need_x) else None
        if need_a:
            grad_a = g_a_t @ (x2 * keep if keep is not None else x2)  # (r, in)
        if need_x:
            grad_x = g @ weight  # (tokens, in)
            if keep is None:
                grad_x.addmm_(g_a_t.t(), lora_a)
            else:
                grad_x.addcmul_(g_a_t.t() @ lora_a, keep)
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
    # one cheap check first: ``x.device.type`` and the per-device query cost about 0.4 us on every call
    if torch._C._is_any_autocast_enabled() and torch.is_autocast_enabled(device_type := x.device.type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight, lora_a, lora_b = (t.to(dtype) for t in (x, weight, lora_a, lora_b))
        bias = bias.to(dtype) if bias is not None else None
        with torch.autocast(device_type, enabled=False):
            return lora_linear(x, weight, bias, lora_a, lora_b, scaling, p, training)
    if p == 0.0 and not torch.is_grad_enabled():  # inference: the same ops without the autograd Function
        x2 = _flat(x)
        out = _base_plus_update(x2, weight, bias, lora_a @ x2.t(), lora_b, float(scaling))
        return out.view(*x.shape[:-1], out.shape[-1])
    # a 0-dim tensor, not a Python int: no .item(), so torch.compile traces dropout without a graph break
    seed = torch.randint(0, 2**62, ()) if p > 0.0 else 0
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


def slice_row_mask(enabled: list[bool], out_features: int, device: torch.device | str | None = None) -> Tensor:
    """(out_features,) bool, True on the rows of the enabled equal slices of a fused projection (loralib's
    ``enable_lora``, e.g. [True, False, True] for q, k, v): the ``row_mask`` of :func:`group_block_b`."""
    rows = torch.tensor(enabled, dtype=torch.bool).repeat_interleave(out_features // len(enabled))
    return rows if device is None else rows.to(device)


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
