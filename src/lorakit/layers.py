"""loralib-compatible LoRA layers: same class names, arguments, defaults and parameter names.

``import lorakit as lora`` runs code written for ``loralib`` 0.1.2 unchanged, and the two libraries'
state dicts load into each other with ``strict=True``. What differs is what loralib gets wrong:

* the pretrained weight is never modified. Merging (``eval()`` with ``merge_weights=True``) keeps the
  merged weight in a separate, non-persistent buffer, so ``state_dict()`` always holds the pretrained
  weight, repeated eval/train cycles never drift it in fp16/bf16, and ``load_state_dict`` into a
  merged layer refreshes the merged copy. Cost: one extra weight-sized tensor per LoRA layer while
  merged (see BENCHMARKS.md); ``lorakit.merge_and_unload`` folds the update in place for deployment;
* convolutions accept any kernel size (int or tuple), stride, padding, dilation and groups;
* ``MergedLinear`` works with every slice disabled, and its row mask is a buffer that follows
  ``.to(device)``;
* bad arguments raise ``ValueError`` naming the argument and the allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import functional as LF

__all__ = [
    "LoRALayer", "Linear", "Embedding", "MergedLinear", "Conv1d", "Conv2d", "Conv3d", "ConvLoRA",
    "mark_only_lora_as_trainable", "lora_state_dict",
]


def validate_lora_args(r, lora_alpha, lora_dropout, error: type[ValueError] = ValueError) -> None:
    """Raise ``error`` (a ValueError; ``lorakit.lora`` passes its ``AdapterError``) for a rank, alpha or
    dropout outside its allowed values. This module imports only ``functional``, so its own errors are
    plain ValueErrors."""
    if isinstance(r, bool) or not isinstance(r, int) or r < 0:
        raise error(f"r (the LoRA rank) must be an integer >= 0 (0 means no LoRA), got {r!r}")
    if isinstance(lora_alpha, bool) or not isinstance(lora_alpha, (int, float)) or not lora_alpha > 0:
        raise error(f"lora_alpha must be a number > 0, got {lora_alpha!r}")
    if not isinstance(lora_dropout, (int, float)) or not 0.0 <= lora_dropout < 1.0:
        raise error(f"lora_dropout must be a probability in [0, 1), got {lora_dropout!r}")


class MergeableWeight:
    """The merge mechanism shared by every LoRA module (loralib-style layers and ``inject`` wrappers).

    Merging never edits the pretrained weight: the merged weight ``W + delta`` lives in the
    non-persistent buffer ``merged_weight``, so ``state_dict()`` always holds the pretrained weight,
    unmerging is exact in any precision, and loading a state dict or ``.to()`` rebuilds the merged
    copy. A subclass (an ``nn.Module``) calls ``_init_merge_state()`` in ``__init__`` and provides
    ``_pretrained_weight()`` (the frozen parameter as stored) and ``delta_weight()`` (the update in
    the same layout).
    """

    def _init_merge_state(self) -> None:
        self.merged = False
        self.register_buffer("merged_weight", None, persistent=False)
        self.register_load_state_dict_post_hook(MergeableWeight._refresh_merge_after_load)

    def _pretrained_weight(self) -> Tensor:
        raise NotImplementedError

    def delta_weight(self) -> Tensor:
        """The low-rank update, shaped like the pretrained weight as stored."""
        raise NotImplementedError

    @property
    def has_lora(self) -> bool:
        raise NotImplementedError

    def merge(self) -> None:
        """Use W + delta in forward (one matmul); the pretrained W itself is left untouched."""
        if self.has_lora:
            weight = self._pretrained_weight()
            with torch.no_grad():
                self.merged_weight = weight + self.delta_weight().to(weight.dtype)
        else:  # nothing active (any more): the merged layer is the base layer, not a stale W + delta
            self.merged_weight = None
        self.merged = True

    def unmerge(self) -> None:
        self.merged_weight = None
        self.merged = False

    def _effective_weight(self) -> Tensor:
        if self.merged and self.merged_weight is not None:
            return self.merged_weight
        return self._pretrained_weight()

    def _apply(self, fn, *args, **kwargs):
        out = nn.Module._apply(self, fn, *args, **kwargs)
        if self.merged:  # rebuild from the converted pretrained weight, not from a rounded copy
            self.merge()
        return out

    @staticmethod
    def _refresh_merge_after_load(module, incompatible_keys) -> None:
        if module.merged:
            module.merge()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Check every shape of this module before anything is copied, so a bad checkpoint leaves
        # it as it was and the message names the key and both shapes.
        own = dict(self.named_parameters(recurse=False))
        own.update((n, b) for n, b in self.named_buffers(recurse=False) if b is not None)
        for name, tensor in own.items():
            key = prefix + name
            if key in state_dict and tuple(state_dict[key].shape) != tuple(tensor.shape):
                raise ValueError(
                    f"state dict key {key!r} has shape {tuple(state_dict[key].shape)}, but the "
                    f"{type(self).__name__} module expects {tuple(tensor.shape)} "
                    "(check the rank and the layer sizes the checkpoint was made with)"
                )
        nn.Module._load_from_state_dict(self, state_dict, prefix, *args, **kwargs)


class LoRALayer(MergeableWeight):
    """Mixin holding loralib's LoRA hyper-parameters; merges on ``eval()`` and unmerges on ``train()``
    when ``merge_weights`` is True. A subclass also provides ``_pretrained_weight`` and
    ``delta_weight`` (see :class:`MergeableWeight`).
    """

    def __init__(self, r: int, lora_alpha: float, lora_dropout: float, merge_weights: bool):
        validate_lora_args(r, lora_alpha, lora_dropout)
        self.r = r
        self.lora_alpha = lora_alpha
        self.lora_dropout_p = float(lora_dropout)
        # loralib exposes a callable ``lora_dropout``; keep it (an Identity when p == 0).
        self.lora_dropout = nn.Dropout(p=lora_dropout) if lora_dropout > 0 else nn.Identity()
        self.merge_weights = merge_weights
        self._init_merge_state()

    @property
    def has_lora(self) -> bool:
        # ``_parameters``, not ``hasattr``: checked on every forward, where a Module.__getattr__ costs ~0.6 us
        return self.r > 0 and "lora_A" in self._parameters

    def train(self, mode: bool = True):
        nn.Module.train(self, mode)
        if self.merge_weights:
            if mode and self.merged:
                self.unmerge()
            elif not mode and not self.merged:
                self.merge()
        return self


def _add_lora_parameters(layer: LoRALayer, frozen: Tensor, a_shape: tuple, b_shape: tuple) -> None:
    """Create zero ``lora_A``/``lora_B`` of the given shapes, set the scaling and freeze ``frozen``."""
    layer.lora_A = nn.Parameter(frozen.new_zeros(a_shape))
    layer.lora_B = nn.Parameter(frozen.new_zeros(b_shape))
    layer.scaling = layer.lora_alpha / layer.r
    frozen.requires_grad = False


def _transpose_if(flag: bool, w: Tensor) -> Tensor:
    return w.transpose(0, 1) if flag else w


class Linear(LoRALayer, nn.Linear):
    """nn.Linear with a LoRA update: y = x W^T + b + (lora_alpha / r) dropout(x) A^T B^T.

    Shapes: x (..., in_features) -> (..., out_features); ``lora_A`` (r, in_features),
    ``lora_B`` (out_features, r). With ``fan_in_fan_out=True`` the weight is stored
    (in_features, out_features), as in GPT-2's Conv1D.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 0,
        lora_alpha: int = 1,
        lora_dropout: float = 0.0,
        fan_in_fan_out: bool = False,
        merge_weights: bool = True,
        **kwargs,
    ):
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        LoRALayer.__init__(self, r, lora_alpha, lora_dropout, merge_weights)
        self._init_lora(fan_in_fan_out)

    def _init_lora(self, fan_in_fan_out: bool, n_blocks: int = 1, lora_out_features: int | None = None) -> None:
        """What ``Linear`` and ``MergedLinear`` do after ``nn.Linear`` and ``LoRALayer`` are set up: zero
        ``lora_A`` (r * n_blocks, in_features) and ``lora_B`` (lora_out_features, r) when r > 0 and
        n_blocks > 0, initialisation, then the weight stored (in_features, out_features) if
        ``fan_in_fan_out``. ``lora_out_features``: the output rows the update reaches (default: all)."""
        self.fan_in_fan_out = fan_in_fan_out
        if self.r > 0 and n_blocks > 0:
            rows = self.out_features if lora_out_features is None else lora_out_features
            _add_lora_parameters(self, self.weight, (self.r * n_blocks, self.in_features), (rows, self.r))
        self.reset_parameters()
        if fan_in_fan_out:
            self.weight.data = self.weight.data.transpose(0, 1)

    def reset_parameters(self) -> None:
        nn.Linear.reset_parameters(self)
        if hasattr(self, "lora_A"):
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def _pretrained_weight(self) -> Tensor:
        return self.weight

    def _lora_b(self) -> Tensor:
        return self._parameters["lora_B"]

    def delta_weight(self) -> Tensor:
        return _transpose_if(self.fan_in_fan_out, LF.delta_weight(self.lora_A, self._lora_b(), self.scaling))

    def forward(self, x: Tensor) -> Tensor:
        if self.has_lora and not self.merged:
            return LF.lora_linear(  # lora_A from _parameters, as in has_lora
                x, _transpose_if(self.fan_in_fan_out, self.weight), self.bias, self._parameters["lora_A"],
                self._lora_b(), self.scaling, self.lora_dropout_p, self.training,
            )
        return F.linear(x, _transpose_if(self.fan_in_fan_out, self._effective_weight()), self.bias)


class MergedLinear(Linear):
    """A fused projection (e.g. GPT-2's qkv ``c_attn``) with LoRA on chosen slices only.

    ``enable_lora``: one bool per equal slice of the output, e.g. ``[True, False, True]`` adapts q
    and v. Shapes as in loralib: ``lora_A`` (r * n_enabled, in_features), ``lora_B``
    (out_features // len(enable_lora) * n_enabled, r). The update equals a rank ``r * n_enabled``
    LoRA whose B is block-diagonal over the enabled slices (see ``functional.group_block_b``).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int = 0,
        lora_alpha: int = 1,
        lora_dropout: float = 0.0,
        enable_lora: Sequence[bool] = (False,),
        fan_in_fan_out: bool = False,
        merge_weights: bool = True,
        **kwargs,
    ):
        enable_lora = list(enable_lora)
        if not enable_lora or not all(isinstance(e, bool) for e in enable_lora):
            raise ValueError(f"enable_lora must be a non-empty list of bools, got {enable_lora!r}")
        if out_features % len(enable_lora) != 0:
            raise ValueError(
                f"len(enable_lora)={len(enable_lora)} must divide out_features={out_features} "
                "(one flag per equal slice of the output, e.g. [True, False, True] for q, k, v)"
            )
        nn.Linear.__init__(self, in_features, out_features, **kwargs)
        LoRALayer.__init__(self, r, lora_alpha, lora_dropout, merge_weights)
        self.enable_lora = enable_lora
        n_enabled, out_per_slice = sum(enable_lora), out_features // len(enable_lora)
        self._init_lora(fan_in_fan_out, n_blocks=n_enabled, lora_out_features=out_per_slice * n_enabled)
        if self.has_lora:  # on nn.Linear's device= keyword's device
            self.register_buffer("lora_ind", LF.slice_row_mask(enable_lora, out_features, self.weight.device),
                                 persistent=False)

    def _lora_b(self) -> Tensor:
        return LF.group_block_b(self.lora_B, self.lora_ind, sum(self.enable_lora))


class Embedding(LoRALayer, nn.Embedding):
    """nn.Embedding with a LoRA update: E[x] + (lora_alpha / r) A^T[x] B^T.

    Shapes: x (...) int64 -> (..., embedding_dim); ``lora_A`` (r, num_embeddings),
    ``lora_B`` (embedding_dim, r). As in loralib, A starts at zero and B is normal (the update is
    zero at initialisation either way) and there is no dropout.
    """

    def __init__(
        self,
        num_embeddings: int,
        embedding_dim: int,
        r: int = 0,
        lora_alpha: int = 1,
        merge_weights: bool = True,
        **kwargs,
    ):
        nn.Embedding.__init__(self, num_embeddings, embedding_dim, **kwargs)
        LoRALayer.__init__(self, r, lora_alpha, 0.0, merge_weights)
        if r > 0:
            _add_lora_parameters(self, self.weight, (r, num_embeddings), (embedding_dim, r))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.Embedding.reset_parameters(self)
        if hasattr(self, "lora_A"):
            nn.init.zeros_(self.lora_A)
            nn.init.normal_(self.lora_B)

    def _pretrained_weight(self) -> Tensor:
        return self.weight

    def delta_weight(self) -> Tensor:
        return LF.delta_weight(self.lora_A, self.lora_B, self.scaling).transpose(0, 1)

    def _embed(self, x: Tensor, table: Tensor) -> Tensor:
        return F.embedding(
            x, table, self.padding_idx, self.max_norm, self.norm_type, self.scale_grad_by_freq, self.sparse
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.has_lora and not self.merged:
            out = self._embed(x, self.weight)
            after_a = self._embed(x, self.lora_A.transpose(0, 1))  # (..., r)
            return out + (after_a @ self.lora_B.transpose(0, 1)) * self.scaling
        return self._embed(x, self._effective_weight())


class ConvLoRA(LoRALayer, nn.Module):
    """A convolution with a LoRA update of its kernel, keeping loralib's ``conv.*`` keys.

    The kernel (out, in/groups, k1, k2, ...) is updated by ``scaling * (B A).view(kernel shape)``
    with ``lora_A`` (r * k1, in * k2 * ...) and ``lora_B`` (out / groups * k1, r * k1); for a square
    ``Conv2d`` kernel these are exactly loralib's shapes, and any kernel size or tuple, stride,
    padding, dilation and groups work. With dropout, the update is applied to dropout(x) in a second
    convolution (loralib ignores the dropout for convolutions).
    """

    def __init__(
        self,
        conv_module: type[nn.Module],
        in_channels: int,
        out_channels: int,
        kernel_size,
        r: int = 0,
        lora_alpha: int = 1,
        lora_dropout: float = 0.0,
        merge_weights: bool = True,
        **kwargs,
    ):
        nn.Module.__init__(self)
        self.conv = conv_module(in_channels, out_channels, kernel_size, **kwargs)
        LoRALayer.__init__(self, r, lora_alpha, lora_dropout, merge_weights)
        ks = self.conv.kernel_size
        k_first, k_rest = ks[0], math.prod(ks[1:])
        if r > 0:
            _add_lora_parameters(self, self.conv.weight, (r * k_first, in_channels * k_rest),
                                 (out_channels // self.conv.groups * k_first, r * k_first))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        self.conv.reset_parameters()
        if hasattr(self, "lora_A"):
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)

    def _pretrained_weight(self) -> Tensor:
        return self.conv.weight

    def delta_weight(self) -> Tensor:
        return LF.delta_weight(self.lora_A, self.lora_B, self.scaling).view(self.conv.weight.shape)

    def forward(self, x: Tensor) -> Tensor:
        if self.has_lora and not self.merged:
            if self.training and self.lora_dropout_p > 0:
                base = self.conv._conv_forward(x, self.conv.weight, self.conv.bias)
                return base + self.conv._conv_forward(self.lora_dropout(x), self.delta_weight(), None)
            return self.conv._conv_forward(x, self.conv.weight + self.delta_weight(), self.conv.bias)
        return self.conv._conv_forward(x, self._effective_weight(), self.conv.bias)


class Conv1d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv1d, *args, **kwargs)


class Conv2d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv2d, *args, **kwargs)


class Conv3d(ConvLoRA):
    def __init__(self, *args, **kwargs):
        super().__init__(nn.Conv3d, *args, **kwargs)


#: The bias modes of LoRA training: which biases train beside the LoRA weights (the one list lorakit has).
BIAS_MODES = ("none", "all", "lora_only")


def _check_bias_mode(bias: str) -> None:
    if bias not in BIAS_MODES:
        raise ValueError(f"bias must be one of {BIAS_MODES}, got {bias!r}")


def is_lora_param_name(name: str) -> bool:
    """True for LoRA parameter names (``lora_A``, ``lora_B``, ``lora_embedding_A``, ...)."""
    return any(part.startswith("lora_") for part in name.split("."))


def lora_bias_names(model: nn.Module) -> set[str]:
    """Names of the bias parameters of modules that carry LoRA parameters (``bias='lora_only'``).

    A module "carries LoRA" when one of its own or its children's parameter names starts with
    ``lora_``; its bias is the first non-LoRA parameter named ``bias`` directly or one level down
    (``bias``, ``conv.bias``, ``base_layer.bias``).
    """
    names: set[str] = set()
    for prefix, module in model.named_modules():
        local = [n for n, _ in module.named_parameters(recurse=True, remove_duplicate=False)]
        if not any(n.split(".")[0].startswith("lora_") for n in local):
            continue
        for n in local:
            parts = n.split(".")
            if parts[-1] == "bias" and len(parts) <= 2 and not is_lora_param_name(n):
                names.add(f"{prefix}.{n}" if prefix else n)
                break
    return names


def mark_only_lora_as_trainable(model: nn.Module, bias: str = "none") -> None:
    """Make LoRA parameters trainable and freeze every other one, except the chosen biases.

    ``bias``: ``"none"`` (no bias trains), ``"all"`` (every bias parameter trains) or
    ``"lora_only"`` (the biases of LoRA-adapted layers train). Unlike loralib, LoRA parameters
    are set trainable again even if the model was frozen before.
    """
    _check_bias_mode(bias)
    train_bias = set()
    if bias == "all":
        train_bias = {n for n, _ in model.named_parameters() if n.split(".")[-1] == "bias"}
    elif bias == "lora_only":
        train_bias = lora_bias_names(model)
    for name, param in model.named_parameters():
        param.requires_grad = is_lora_param_name(name) or name in train_bias


def lora_state_dict(model: nn.Module, bias: str = "none") -> dict[str, Tensor]:
    """The LoRA parameters (and the chosen biases) of ``model.state_dict()``, always unmerged.

    Buffers are never included, even when their name contains "bias" (GPT-2's attention masks).
    """
    _check_bias_mode(bias)
    state = model.state_dict()
    param_names = {n for n, _ in model.named_parameters(remove_duplicate=False)}
    if bias == "all":
        keep_bias = {n for n in param_names if n.split(".")[-1] == "bias"}
    elif bias == "lora_only":
        keep_bias = lora_bias_names(model)
    else:
        keep_bias = set()
    return {k: v for k, v in state.items() if (is_lora_param_name(k) and k in param_names) or k in keep_bias}
