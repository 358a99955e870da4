"""Cross-entropy of a linear head without materialising its logits, and a causal LM's loss through it.

A language model's loss is ``cross_entropy(hidden @ weight.T, labels)``. With a vocabulary of 128k
tokens and a few thousand tokens per batch, the ``(tokens, vocab)`` logits, their float32 copy and their
gradient are most of a LoRA training step's memory. :func:`linear_cross_entropy` computes the same loss
over chunks of tokens: each chunk's logits exist only while the chunk is processed.

How the gradient is computed: inside the forward's chunk loop, right after a chunk's loss, the gradient
of the chunk's logits (``softmax - one_hot``, a closed form) is multiplied into the hidden-state gradient
(and into the weight gradient when the head is trainable); only those ``(tokens, hidden)`` and
``(vocab, hidden)`` gradients are kept, and backward scales them by the incoming scalar gradient. So no
logits are recomputed in backward: the head costs two matmuls per chunk, as many as an unfused frozen
head. (Recomputing the chunk in backward instead costs a third matmul; ``bench/linear_ce.py`` measured
both, see BENCHMARKS.md.) ``reduction="none"`` needs a gradient per row that is only known in backward,
so it recomputes.

The sum/count contract (normalising across micro-batches and processes): for any labels,
``linear_cross_entropy(..., reduction="sum") / count_label_tokens(labels)`` equals
``reduction="mean"``. A training loop that accumulates gradients over micro-batches (or processes)
sums each micro-batch's ``reduction="sum"`` loss and divides by the number of label tokens of the whole
global batch (the sum of :func:`count_label_tokens` over micro-batches and processes); that is the
gradient of the one-big-batch mean.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from .errors import LorakitError

__all__ = [
    "LossInputError", "linear_cross_entropy", "count_label_tokens", "default_chunk_size", "causal_lm_loss",
    "fused_loss_unsupported_reason", "SUPPORTED_MODEL_TYPES",
]

#: The chunk size's default aims at this many logits per chunk (64M: 256 MiB in float32), see default_chunk_size.
CHUNK_LOGITS = 2**26
REDUCTIONS = ("mean", "sum", "none")


class LossInputError(LorakitError, ValueError):
    """A bad argument to a lorakit loss (shapes, ranges, settings, an unsupported model)."""


def default_chunk_size(vocab_size: int) -> int:
    """Rows (tokens) per chunk when ``chunk_size=None``: ``CHUNK_LOGITS // vocab_size``, clamped to [32, 4096].

    At a 128k vocabulary that is 523 rows (256 MiB of float32 logits per chunk); at GPT-2's 50k, 1335 rows.
    Smaller chunks save memory but cost time, as the head's matmuls run less efficiently on few rows: on a
    2-core CPU at 128k, 130-row chunks took 1.4x as long as 512-row chunks, 32-row chunks 1.9x, while
    1024-row chunks gained nothing (bench/linear_ce.py, BENCHMARKS.md).
    """
    return max(32, min(4096, CHUNK_LOGITS // max(1, vocab_size)))


def count_label_tokens(labels: Tensor, *, ignore_index: int = -100, shift: bool = True) -> Tensor:
    """The number of positions that contribute to the loss: labels ``!= ignore_index``, after the shift.

    labels: ``(..., seq)`` integer tensor, as given to :func:`linear_cross_entropy`. Returns a 0-dim int64
    tensor on ``labels.device``. ``linear_cross_entropy(reduction="sum") / count_label_tokens(labels)``
    is the ``reduction="mean"`` loss.
    """
    used = labels[..., 1:] if shift else labels
    return (used != ignore_index).sum()


@dataclass(frozen=True)
class _HeadMath:
    """What a chunk needs besides its tensors: ``logits = softcap(scale * (h @ W.T + b))``."""

    label_smoothing: float
    logit_scale: float
    softcap: float | None
    chunk_size: int
    compute_dtype: torch.dtype


def _chunk_loss_and_logit_grad(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                               math: _HeadMath, row_grad: Tensor | None, want_grad: bool, buffer: Tensor
                               ) -> tuple[Tensor, Tensor | None]:
    """One chunk: per-row losses ``(n,)`` float32, and the gradient of ``sum(row_grad * loss)`` with
    respect to the pre-scale logits ``h @ W.T + b``, ``(n, vocab)`` in the compute dtype (None unless
    ``want_grad``). hidden: ``(n, hidden)``, weight ``(vocab, hidden)`` and bias ``(vocab,)`` already in
    the compute dtype; targets ``(n,)``; row_grad ``(n,)`` float32, or None for ones. buffer: ``(n, vocab)``
    float32 scratch that the logits, log-probabilities and gradient overwrite in turn (the returned float32
    gradient is a view of it).
    """
    # Every step below writes into the one reused buffer: a fresh (n, vocab) tensor per chunk and per step
    # costs a page-faulted allocation each time, 8-13% of the head's time on a 2-core CPU (BENCHMARKS.md).
    if buffer.dtype == hidden.dtype:
        logits = torch.mm(hidden, weight.T, out=buffer) if bias is None else torch.addmm(bias, hidden, weight.T,
                                                                                            out=buffer)
    else:  # the softmax always runs in float32, as HF's loss does
        logits = buffer.copy_(hidden @ weight.T if bias is None else torch.addmm(bias, hidden, weight.T))
    if math.logit_scale != 1.0:
        logits.mul_(math.logit_scale)
    capped = None
    if math.softcap is not None:
        capped = logits.div_(math.softcap).tanh_().clone()
        logits.mul_(math.softcap)
    # log-softmax in place: its row-wise kernel reads each row's values before it writes them
    log_probs = torch.ops.aten._log_softmax.out(logits, 1, False, out=logits)  # (n, vocab)
    loss = -log_probs.gather(1, targets[:, None]).squeeze(1)
    eps = math.label_smoothing
    if eps:  # smoothing term: -mean_j log p_j
        loss = (1.0 - eps) * loss - eps * log_probs.mean(dim=-1)
    if not want_grad:
        return loss, None
    # d loss / d logits = softmax - (1 - eps) one_hot - eps / vocab, built in place
    grad = log_probs.exp_()
    if eps:
        grad.sub_(eps / grad.shape[1])
    grad[torch.arange(grad.shape[0], device=grad.device), targets] -= 1.0 - eps
    if row_grad is not None:
        grad.mul_(row_grad[:, None])
    if capped is not None:  # d(c tanh(z / c)) / dz = 1 - tanh^2
        grad.mul_(capped.square_().neg_().add_(1.0))
    if math.logit_scale != 1.0:
        grad.mul_(math.logit_scale)
    return loss, grad.to(math.compute_dtype)


def _head_grads(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, math: _HeadMath,
                row_grad: Tensor | None, need: tuple[bool, bool, bool]
                ) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loop over chunks of rows: the per-row losses ``(n,)`` and the gradients of ``sum(row_grad * loss)``
    for hidden ``(n, hidden)``, weight ``(vocab, hidden)`` and bias ``(vocab,)`` (None where not in ``need``)."""
    cd = math.compute_dtype
    w = weight.to(cd)
    b = bias.to(cd) if bias is not None else None
    n = hidden.shape[0]
    losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
    want_grad = any(need)
    grad_hidden = torch.empty_like(hidden) if need[0] else None
    # weight/bias gradients accumulate in float32 over chunks (bf16 sums of many chunks would lose precision)
    grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need[1] else None
    grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if need[2] else None
    buffer = torch.empty(min(n, math.chunk_size), weight.shape[0], dtype=torch.float32, device=hidden.device)
    for start in range(0, n, math.chunk_size):
        rows = slice(start, min(n, start + math.chunk_size))
        h = hidden[rows].to(cd)
        chunk_rows_grad = row_grad[rows] if row_grad is not None else None
        losses[rows], grad = _chunk_loss_and_logit_grad(h, w, b, targets[rows], math, chunk_rows_grad, want_grad,
                                                        buffer[:h.shape[0]])
        if grad_hidden is not None:
            grad_hidden[rows] = grad @ w
        if grad_weight is not None:
            grad_weight += grad.T @ h
        if grad_bias is not None:
            grad_bias += grad.float().sum(0)
    return losses, grad_hidden, grad_weight, grad_bias


def _scaled(grad: Tensor | None, dtype: torch.dtype | None, scale: Tensor | None) -> Tensor | None:
    """``grad * scale`` in ``dtype`` (the input's), or None when there is no gradient."""
    if grad is None or dtype is None:
        return None
    return (grad if scale is None else grad * scale).to(dtype)


class _SumInForward(torch.autograd.Function):
    """Sum of the rows' losses; the gradients are computed in forward and scaled in backward."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                math: _HeadMath) -> Tensor:
        need = tuple(ctx.needs_input_grad[:3])
        with torch.autocast(hidden.device.type, enabled=False):
            losses, gh, gw, gb = _head_grads(hidden, weight, bias, targets, math, None, need)
        ctx.save_for_backward(gh, gw, gb)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return losses.sum()

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        grads = (_scaled(g, dtype, grad_out) for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True))
        return *grads, None, None


class _RowsRecomputed(torch.autograd.Function):
    """The rows' losses ``(n,)``; backward recomputes each chunk's logits with the rows' incoming gradient."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor,
                math: _HeadMath) -> Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            losses, *_ = _head_grads(hidden, weight, bias, targets, math, None, (False, False, False))
        ctx.save_for_backward(hidden, weight, bias, targets)
        ctx.math = math
        return losses

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor):
        hidden, weight, bias = ctx.saved_tensors[:3]
        targets = ctx.saved_tensors[3]
        need = tuple(ctx.needs_input_grad[:3])
        with torch.autocast(hidden.device.type, enabled=False):
            _, gh, gw, gb = _head_grads(hidden, weight, bias, targets, ctx.math, grad_out.float(), need)
        dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        return *(_scaled(g, dtype, None) for g, dtype in zip((gh, gw, gb), dtypes, strict=True)), None, None


def _compute_dtype(hidden: Tensor, weight: Tensor) -> torch.dtype:
    """The matmul dtype: autocast's when it is on for the device (as ``F.linear`` would), else the inputs'."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def _check_inputs(hidden: Tensor, weight: Tensor, labels: Tensor, bias: Tensor | None, label_smoothing: float,
                  reduction: str, chunk_size: int | None) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size <= 0):
        raise LossInputError(f"chunk_size={chunk_size!r}: it must be a positive number of tokens per chunk, "
                             "or None for the default (default_chunk_size(vocab_size))")
    if reduction not in REDUCTIONS:
        raise LossInputError(f"reduction={reduction!r}: use one of {', '.join(REDUCTIONS)}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise LossInputError(f"label_smoothing={label_smoothing!r}: it must lie in [0, 1]")
    if weight.dim() != 2:
        raise LossInputError(f"weight has shape {tuple(weight.shape)}: pass the head's (vocab, hidden) matrix")
    if hidden.dim() < 2 or hidden.shape[-1] != weight.shape[1]:
        raise LossInputError(f"hidden has shape {tuple(hidden.shape)} but weight {tuple(weight.shape)}: hidden's "
                             f"last dimension must be the head's input width {weight.shape[1]} (..., hidden)")
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise LossInputError(f"bias has shape {tuple(bias.shape)}: it must be (vocab,) = ({weight.shape[0]},)")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise LossInputError(f"labels have dtype {labels.dtype}: pass integer token ids (torch.long)")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise LossInputError(f"labels have shape {tuple(labels.shape)} but hidden {tuple(hidden.shape)}: labels "
                             f"must have hidden's leading shape {tuple(hidden.shape[:-1])} (one label per position)")


def linear_cross_entropy(hidden: Tensor, weight: Tensor, labels: Tensor, *, bias: Tensor | None = None,
                         ignore_index: int = -100, label_smoothing: float = 0.0, shift: bool = True,
                         reduction: str = "mean", chunk_size: int | None = None, logit_scale: float = 1.0,
                         softcap: float | None = None) -> Tensor:
    """``F.cross_entropy(logits, labels)`` for ``logits = hidden @ weight.T + bias``, without the full logits.

    hidden: ``(..., seq, hidden)`` (any leading shape, e.g. ``(batch, seq, hidden)``); weight: ``(vocab,
    hidden)``; bias: ``(vocab,)`` or None; labels: ``(..., seq)`` integer ids in ``[0, vocab)`` or
    ``ignore_index``.

    * ``shift=True`` (Hugging Face causal LMs): position ``t`` predicts ``labels[..., t + 1]``; the last
      position predicts nothing. So ``labels`` may simply be the input ids. ``shift=False``: position
      ``t`` predicts ``labels[..., t]``.
    * Positions whose label is ``ignore_index`` are dropped before the head: they cost nothing.
    * ``reduction``: ``"mean"`` over the used labels (NaN when there are none, as ``F.cross_entropy``);
      ``"sum"``; ``"none"``: a float32 tensor shaped like the used labels, ``(..., seq - 1)`` with
      ``shift`` (else ``(..., seq)``), 0 at ignored positions. Mean = sum / :func:`count_label_tokens`.
    * ``label_smoothing`` as in ``F.cross_entropy`` (eps spread uniformly over the vocabulary).
    * ``logit_scale`` and ``softcap``: the logits are ``softcap * tanh(scale * z / softcap)`` (Gemma 2/3's
      final soft-capping, Cohere's logit scale); defaults leave ``z`` as it is.
    * ``chunk_size``: tokens per chunk; None means :func:`default_chunk_size` of the vocabulary (523 rows at
      128k, 1335 at 50k: 256 MiB of float32 logits per chunk, the only vocabulary-sized buffer).
    * Under autocast the matmuls run in the autocast dtype (as ``F.linear`` would); the softmax and the
      loss always run in float32. The result is a float32 tensor.

    Memory: one reused float32 ``(chunk_size, vocab)`` buffer for the logits and their gradient (plus a
    chunk in the compute dtype under autocast, and one for soft-capping), the ``(tokens, hidden)``
    gradient of the hidden states, and a ``(vocab, hidden)`` float32 gradient only if ``weight`` requires
    grad. Raises :class:`LossInputError` (a ``ValueError``) for mismatched shapes, labels outside
    ``[0, vocab)``, ``chunk_size <= 0`` or an unknown reduction.
    """
    _check_inputs(hidden, weight, labels, bias, label_smoothing, reduction, chunk_size)
    labels = labels.to(hidden.device)
    if shift:
        hidden, labels = hidden[..., :-1, :], labels[..., 1:]
    used_shape = labels.shape
    flat_labels = labels.reshape(-1)
    kept = (flat_labels != ignore_index).nonzero().squeeze(1)  # (n,): the positions that have a label
    targets = flat_labels.index_select(0, kept)
    vocab = weight.shape[0]
    if targets.numel() and bool((targets < 0).any() | (targets >= vocab).any()):
        bad = targets[(targets < 0) | (targets >= vocab)][0].item()
        raise LossInputError(f"labels contain {bad}, outside the head's vocabulary [0, {vocab}): labels must be "
                             f"token ids below weight.shape[0] = {vocab}, or ignore_index={ignore_index} for "
                             "positions without a loss (check the tokenizer matches the model)")
    rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, kept)  # (n, hidden)
    math = _HeadMath(float(label_smoothing), float(logit_scale), None if softcap is None else float(softcap),
                     chunk_size or default_chunk_size(vocab), _compute_dtype(hidden, weight))
    if reduction == "none":
        losses = _RowsRecomputed.apply(rows, weight, bias, targets, math)
        out = losses.new_zeros(flat_labels.shape[0]).index_put((kept,), losses)
        return out.reshape(used_shape)
    total = _SumInForward.apply(rows, weight, bias, targets, math)
    return total if reduction == "sum" else total / targets.shape[0]


# --------------------------------------------------------------------------------------------------------
# a Hugging Face causal LM's loss
# --------------------------------------------------------------------------------------------------------

def _no_logit_transform(config: Any) -> dict[str, Any]:
    return {}


def _final_softcap(config: Any) -> dict[str, Any]:
    return {"softcap": getattr(config, "final_logit_softcapping", None)}


def _cohere_logit_scale(config: Any) -> dict[str, Any]:
    return {"logit_scale": float(config.logit_scale)}


#: ``config.model_type`` -> what its ``*ForCausalLM.forward`` does to the head's output before the loss
#: (read from transformers' modeling files): nothing, Gemma 2/3's final soft-capping, Cohere's scale.
SUPPORTED_MODEL_TYPES = {
    "gpt2": _no_logit_transform,
    "llama": _no_logit_transform,
    "mistral": _no_logit_transform,
    "qwen2": _no_logit_transform,
    "gemma": _no_logit_transform,  # the embedding scaling happens inside the backbone
    "gemma2": _final_softcap,
    "gemma3_text": _final_softcap,
    "cohere": _cohere_logit_scale,
}


def _hf_model(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside a PEFT wrapper (``PeftModel.get_base_model``), else ``model`` itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) and hasattr(model, "peft_config") else model


def _ddp_inner(model: nn.Module) -> nn.Module | None:
    """The model inside a ``DistributedDataParallel`` wrapper, else None."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else None


def fused_loss_unsupported_reason(model: nn.Module) -> str | None:
    """Why :func:`causal_lm_loss` cannot run ``model`` (a sentence), or None when it can."""
    if isinstance(model, nn.DataParallel):
        return "DataParallel wraps the model: use DistributedDataParallel (one process per device), or no wrapper"
    inner = _ddp_inner(model)
    if inner is not None:
        reason = fused_loss_unsupported_reason(inner)
        if reason is None and "logits_to_keep" not in inspect.signature(_hf_model(inner).forward).parameters:
            reason = (f"{type(_hf_model(inner)).__name__}.forward takes no logits_to_keep argument, which the loss "
                      "needs to run the forward through DistributedDataParallel without the full logits")
        return reason
    try:  # FSDP2 gathers the root's sharded parameters (embedding, head) in the root's forward only
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch builds without distributed
        FSDPModule = ()  # noqa: N806
    if isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.modules()):
        return "the model is sharded with FSDP: its root forward gathers the parameters the head needs"
    hf = _hf_model(model)
    model_type = getattr(getattr(hf, "config", None), "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES or not callable(getattr(hf, "get_output_embeddings", None)):
        return (f"{type(hf).__name__} (model_type {model_type!r}) is not a supported causal LM: supported are "
                f"Hugging Face *ForCausalLM models of type {', '.join(sorted(SUPPORTED_MODEL_TYPES))}, plain, "
                "lorakit-injected or PEFT-wrapped")
    return None


def _dropout_active(module: nn.Module) -> bool:
    return module.training and any(isinstance(m, nn.Dropout) and m.p > 0 for m in module.modules())


def _head_weight_and_bias(head: nn.Module, width: int, device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The head's effective ``(vocab, hidden)`` weight and ``(vocab,)`` bias, differentiable.

    A plain ``nn.Linear`` gives its parameters. A wrapped head (a LoRA or DoRA adapter, PEFT's
    ``modules_to_save``) is affine too; it is evaluated on ``[0; I]`` (the zero vector and the identity),
    which gives its bias and weight through the wrapper's own forward, whatever it adds.
    """
    if type(head) is nn.Linear:
        return head.weight, head.bias
    if _dropout_active(head):
        raise LossInputError(f"the output head ({type(head).__name__}) applies dropout in training mode, so its "
                             "output is not a fixed linear map of the hidden states; set the head adapter's "
                             "dropout to 0 (e.g. lora_dropout=0) or compute the loss from model(...).logits")
    dtype = next(head.parameters()).dtype
    probe = torch.cat([torch.zeros(1, width, dtype=dtype, device=device),
                       torch.eye(width, dtype=dtype, device=device)])  # (1 + hidden, hidden)
    with torch.autocast(device.type, enabled=False):
        out = head(probe)  # (1 + hidden, vocab)
    has_bias = any(name.split(".")[-1] == "bias" for name, _ in head.named_parameters())
    bias = out[0] if has_bias else None
    weight_t = out[1:] - out[0] if has_bias else out[1:]  # (hidden, vocab)
    return weight_t.T, bias


def causal_lm_loss(model: nn.Module, input_ids: Tensor, labels: Tensor | None = None,
                   attention_mask: Tensor | None = None, position_ids: Tensor | None = None, *,
                   ignore_index: int = -100, label_smoothing: float = 0.0, reduction: str = "mean",
                   chunk_size: int | None = None) -> Tensor:
    """``model(input_ids, labels=labels, ...).loss`` of a Hugging Face causal LM, without its logits.

    Runs the model's backbone, then :func:`linear_cross_entropy` with the model's head and its own
    logit transform (Gemma 2/3 soft-capping, Cohere's scale). input_ids, labels, attention_mask,
    position_ids: ``(batch, seq)``; labels default to ``input_ids`` and are shifted as Hugging Face
    shifts them (``ignore_index`` marks positions without a loss). ``model``: a plain, lorakit-injected or
    PEFT-wrapped model of a type in :data:`SUPPORTED_MODEL_TYPES`, or such a model inside
    ``DistributedDataParallel`` (its forward then runs, for the gradient all-reduce, with ``logits_to_keep=1``:
    one position's logits instead of all) (tied or untied head; a LoRA,
    DoRA or ``modules_to_save`` head without active dropout). ``reduction="sum"`` with
    :func:`count_label_tokens` gives the pieces for normalising over a global batch. Raises
    :class:`LossInputError` naming the model's class for anything else.
    """
    reason = fused_loss_unsupported_reason(model)
    if reason is not None:
        raise LossInputError(f"causal_lm_loss: {reason}")
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids,
              "use_cache": False}
    if _ddp_inner(model) is not None:
        # DDP's forward must run (it prepares the gradient all-reduce): through it, ask the model for the logits
        # of one position only and for the hidden states, whose last entry is the backbone's (normed) output
        hf = _hf_model(_ddp_inner(model))
        hidden = model(**inputs, logits_to_keep=1, output_hidden_states=True).hidden_states[-1]
    else:
        hf = _hf_model(model)
        hidden = getattr(hf, hf.base_model_prefix)(**inputs).last_hidden_state  # (batch, seq, hidden)
    weight, bias = _head_weight_and_bias(hf.get_output_embeddings(), hidden.shape[-1], hidden.device)
    return linear_cross_entropy(hidden, weight, input_ids if labels is None else labels, bias=bias,
                                ignore_index=ignore_index, label_smoothing=label_smoothing, reduction=reduction,
                                chunk_size=chunk_size, **SUPPORTED_MODEL_TYPES[hf.config.model_type](hf.config))
