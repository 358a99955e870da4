"""The baselines of the LoRA paper's tables, by the same model surgery as LoRA.

Methods (``apply_method(model, MethodConfig(name=...))``):

* ``full`` / ``head_only``: every weight trains / only the task head trains.
* ``ft_top2``: the last two transformer blocks and the head train (FT^Top2, Li & Liang 2021).
* ``bitfit``: only the bias vectors train, plus the head (Zaken et al. 2021).
* ``adapter_houlsby``: two bottleneck adapters per block, after the attention output projection and
  after the feed-forward output projection (Houlsby et al. 2019).
* ``adapter_pfeiffer``: one adapter per block, after the feed-forward (Pfeiffer et al. 2021).
* ``prefix_embed``: PreEmbed; ``prefix_length`` trainable token embeddings before the input and
  ``infix_length`` after its last real token (Li & Liang 2021; the LoRA paper's l_p, l_i).
* ``prefix_layer``: PreLayer; ``prefix_length`` trainable key/value activations at every layer's
  self-attention, produced during training by a reparameterisation MLP that
  :func:`drop_reparameterization` folds away afterwards.

Inserted modules are wrappers that keep the original module as ``<name>.base_layer`` (as LoRA's do).
Which wrapper a module gets is decided by one table, :data:`SITE_WRAPPERS`: ``{site: {module type:
factory}}``, looked up along the module's MRO; a factory returns ``(child name, wrapper)`` with
``""`` meaning the module itself. No model code is edited. The table names transformers' model classes, so it
is built on first use (``site_wrappers()``, or reading ``lorakit.methods.SITE_WRAPPERS``), not when lorakit is
imported: importing those modeling files takes seconds and pulls in every quantization backend transformers
knows.

Parameter counts with ``d`` = hidden size, ``L`` = blocks, ``m`` = adapter bottleneck, ``l`` = prefix
length (the LoRA paper's Section 5.1 arithmetic; the task head excluded):

* one adapter: ``2 d m + d + m``; Houlsby: ``2 L (2 d m + d + m)``; Pfeiffer: ``L (2 d m + d + m)``;
* PreLayer after dropping the MLP: ``L * 2 * l * d``; PreEmbed: ``(l_p + l_i) * d``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

from . import quant
from .errors import LorakitError
from .hf_compat import cache_argument, cache_in, pop_cache
from .layers import is_lora_param_name
from .lora.config import in_modules
from .lora.manage import lora_modules, set_module

__all__ = [
    "SITE_WRAPPERS",  # noqa: F822 - a module attribute built on first use (__getattr__ below)
    "METHODS", "MethodConfig", "MethodError", "apply_method", "site_wrappers", "BottleneckAdapter",
    "PrefixAttention", "PrefixEmbedding", "drop_reparameterization", "count_parameters",
    "method_modules", "HEAD_MODULES",
]

# The task head of the experiment system's classifiers (and BERT's pooler): trained with every method, outside
# "the encoder" in parameter counts, never pruned or distilled away.
HEAD_MODULES = ("classifier", "pooler")

METHODS = ("full", "head_only", "ft_top2", "bitfit", "adapter_houlsby", "adapter_pfeiffer", "prefix_embed",
           "prefix_layer", "lora", "prune", "distill")


class MethodError(LorakitError, ValueError):
    """A method that cannot be applied to this model, or out-of-range / conflicting options."""


@dataclasses.dataclass
class MethodConfig:
    """What trains. ``head``: module names (or dotted prefixes) of the task head, trained by every method
    but ``full`` trains it anyway; ``adapter_size``: the bottleneck m; ``prefix_length`` / ``infix_length``:
    l_p / l_i (``prefix_layer`` uses ``prefix_length`` only); ``prefix_hidden``: the hidden size of
    PreLayer's reparameterisation MLP (None: train the prefix activations directly)."""

    name: str
    adapter_size: int = 64
    prefix_length: int = 10
    infix_length: int = 0
    prefix_hidden: int | None = 512
    head: tuple[str, ...] = ("classifier",)

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise MethodError(f"unknown method {self.name!r}; choose one of {list(METHODS)}")
        for key in ("adapter_size", "prefix_length", "infix_length"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise MethodError(f"{key} must be an integer >= 0, got {value!r}")
        if self.name.startswith("adapter_") and self.adapter_size < 1:
            raise MethodError(f"{self.name}: adapter_size (the bottleneck) must be >= 1, got {self.adapter_size}")
        if self.name == "prefix_layer" and self.prefix_length < 1:
            raise MethodError(f"prefix_layer: prefix_length must be >= 1, got {self.prefix_length}")
        if self.name == "prefix_embed" and self.prefix_length + self.infix_length < 1:
            raise MethodError("prefix_embed: prefix_length + infix_length must be >= 1 (both are 0)")
        if self.prefix_hidden is not None and (isinstance(self.prefix_hidden, bool) or self.prefix_hidden < 1):
            raise MethodError(f"prefix_hidden must be an integer >= 1 or None, got {self.prefix_hidden!r}")


# ============================================================================ wrappers
def _out_features(layer: nn.Module) -> int:
    """Output width of nn.Linear or Hugging Face Conv1D (weight (in, out), attribute ``nf``)."""
    if isinstance(getattr(layer, "nf", None), int):
        return layer.nf
    if isinstance(getattr(layer, "out_features", None), int):
        return layer.out_features
    raise MethodError(f"cannot tell the output width of {type(layer).__name__} (expected nn.Linear or Conv1D)")


class BottleneckAdapter(nn.Module):
    """``y = h + up(gelu(down(h)))`` with ``h = base_layer(x)``: (..., d) -> (..., d).

    down: (m, d) + (m,), up: (d, m) + (d,); ``up`` starts at zero, so the adapted model starts equal to
    the base model (Houlsby et al.'s near-identity initialisation). ``2 d m + d + m`` parameters.
    """

    def __init__(self, base_layer: nn.Module, bottleneck: int):
        super().__init__()
        d = _out_features(base_layer)
        if not 1 <= bottleneck <= d:
            raise MethodError(f"adapter_size={bottleneck} is out of range for a module of width {d}: "
                              f"choose 1 <= adapter_size <= {d} (a bottleneck, smaller than the hidden size)")
        weight = next(base_layer.parameters())
        self.base_layer = base_layer
        self.adapter_down = nn.Linear(d, bottleneck, device=weight.device, dtype=weight.dtype)
        self.adapter_up = nn.Linear(bottleneck, d, device=weight.device, dtype=weight.dtype)
        if weight.device.type != "meta":
            nn.init.normal_(self.adapter_down.weight, std=0.02)
            nn.init.zeros_(self.adapter_down.bias)
            nn.init.zeros_(self.adapter_up.weight)
            nn.init.zeros_(self.adapter_up.bias)

    def forward(self, *args: Any, **kwargs: Any) -> Tensor:
        h = self.base_layer(*args, **kwargs)
        return h + self.adapter_up(nn.functional.gelu(self.adapter_down(h)))


class _PrefixCache:
    """Stands in for ``past_key_values`` in one attention call: ``update`` prepends the prefix keys/values
    (b, heads, l, head_dim) to the layer's own, after passing those to the real cache if there is one."""

    def __init__(self, key_value: Tensor, inner: Any):
        self.key_value, self.inner = key_value, inner  # (2, l, d)

    def update(self, key: Tensor, value: Tensor, layer_idx: int | None = None, *args: Any, **kwargs: Any):
        if self.inner is not None:
            key, value = self.inner.update(key, value, layer_idx, *args, **kwargs)
        b, heads, _, head_dim = key.shape
        kv = self.key_value.to(key.dtype).view(2, -1, heads, head_dim).transpose(1, 2)  # (2, heads, l, hd)
        pk, pv = (t.unsqueeze(0).expand(b, -1, -1, -1) for t in kv)
        return torch.cat([pk, key], 2), torch.cat([pv, value], 2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.inner.get_seq_length(layer_idx) if self.inner is not None else 0


class PrefixAttention(nn.Module):
    """PreLayer around a self-attention module that reads keys/values through ``past_key_values.update``
    (BERT, RoBERTa, GPT-2 attention in transformers 5): ``l`` trainable key and value positions per layer
    are prepended, and the attention mask gets ``l`` always-visible columns.

    Trainable state: ``prefix``: (2, l, d) (keys, values), or during training with reparameterisation
    ``prefix_input``: (l, d) and ``prefix_mlp``: d -> hidden -> 2 d (tanh), which
    :meth:`drop_reparameterization` replaces by the ``prefix`` it computes (same outputs).
    """

    def __init__(self, base_layer: nn.Module, length: int, hidden: int | None, width: int):
        super().__init__()
        weight = next(base_layer.parameters())
        kw = {"device": weight.device, "dtype": weight.dtype}
        self.base_layer = base_layer
        self.length, self.width = length, width
        if hidden is None:
            self.prefix = nn.Parameter(torch.empty(2, length, width, **kw))
            self.prefix_input = None
            self.prefix_mlp = None
        else:
            self.prefix = None
            self.prefix_input = nn.Parameter(torch.empty(length, width, **kw))
            self.prefix_mlp = nn.Sequential(nn.Linear(width, hidden, **kw), nn.Tanh(),
                                            nn.Linear(hidden, 2 * width, **kw))
        if weight.device.type != "meta":
            for p in (self.prefix, self.prefix_input):
                if p is not None:
                    nn.init.normal_(p, std=0.02)

    def key_value(self) -> Tensor:
        """The prefix keys and values: (2, l, d)."""
        if self.prefix_mlp is None:
            return self.prefix
        return self.prefix_mlp(self.prefix_input).view(self.length, 2, self.width).transpose(0, 1)

    @torch.no_grad()
    def drop_reparameterization(self) -> None:
        """Replace ``prefix_input`` + ``prefix_mlp`` by the (2, l, d) activations they produce."""
        if self.prefix_mlp is None:
            return
        requires_grad = self.prefix_input.requires_grad
        kv = self.key_value().detach().clone()
        self.prefix_input = None
        self.prefix_mlp = None
        self.prefix = nn.Parameter(kv, requires_grad=requires_grad)

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise MethodError("prefix_layer: the wrapped attention must receive attention_mask and its KV cache "
                              "as keyword arguments (as BERT and GPT-2 blocks pass them)")
        # the block's own cache (either name, see hf_compat) goes inside ours, which the attention must receive
        cache = _PrefixCache(self.key_value(), pop_cache(kwargs))
        kwargs["attention_mask"] = self._extend_mask(kwargs.get("attention_mask"), hidden_states, cache)
        kwargs[cache_argument(self.base_layer)] = cache
        return self.base_layer(hidden_states, **kwargs)

    def _extend_mask(self, mask: Tensor | None, hidden_states: Tensor, cache: _PrefixCache) -> Tensor | None:
        """(b, 1, q, k) mask -> (b, 1, q, l + k) with the prefix columns visible; bool or additive float."""
        l = self.length
        if mask is None:
            if not getattr(self.base_layer, "is_causal", False):
                return None  # no mask: every position sees every position, the prefix included
            layer_idx = getattr(self.base_layer, "layer_idx", 0) or 0
            q = hidden_states.shape[1]
            past = cache.get_seq_length(layer_idx)
            rows = torch.arange(q, device=hidden_states.device)[:, None] + past
            allowed = torch.arange(past + q, device=hidden_states.device)[None, :] <= rows  # (q, past + q)
            allowed = torch.cat([allowed.new_ones(q, l), allowed], 1)[None, None]
            if getattr(getattr(self.base_layer, "config", None), "_attn_implementation", "sdpa") == "eager":
                zero = torch.zeros((), dtype=hidden_states.dtype, device=hidden_states.device)
                return torch.where(allowed, zero, torch.finfo(hidden_states.dtype).min)
            return allowed
        if not isinstance(mask, Tensor) or mask.dim() != 4:
            raise MethodError(f"prefix_layer: cannot extend an attention mask of type {type(mask).__name__} "
                              f"(expected a 4-D tensor: use attn_implementation 'sdpa' or 'eager')")
        fill = torch.ones((), dtype=torch.bool) if mask.dtype == torch.bool else torch.zeros((), dtype=mask.dtype)
        visible = fill.to(mask.device).expand(*mask.shape[:-1], l)
        return torch.cat([visible, mask], -1)

    def extra_repr(self) -> str:
        return f"prefix_length={self.length}, reparameterised={self.prefix_mlp is not None}"


class PrefixEmbedding(nn.Module):
    """PreEmbed around a Hugging Face base model (``BertModel``, ``GPT2Model`` ...): the input becomes
    ``[P_1..P_lp, x_1..x_n, I_1..I_li]`` with the infix placed right after each row's last real token,
    and the special tokens' embeddings ``prefix_tokens``: (l_p, d) and ``infix_tokens``: (l_i, d) train.

    input_ids, attention_mask, token_type_ids: (b, n) -> the base model runs on (b, l_p + n + l_i) and
    ``last_hidden_state`` (and ``hidden_states``) are cut back to the n original positions, so heads
    and pooling see the shapes they expect. The pooler (BERT's ``pooler_output``) reads position 0,
    which is then the first prefix token.
    """

    def __init__(self, base_layer: nn.Module, prefix_length: int, infix_length: int):
        super().__init__()
        embeddings = base_layer.get_input_embeddings()
        weight = embeddings.weight
        d = weight.shape[1]
        kw = {"device": weight.device, "dtype": weight.dtype}
        self.base_layer = base_layer
        self.prefix_length, self.infix_length = prefix_length, infix_length
        self.prefix_tokens = nn.Parameter(torch.empty(prefix_length, d, **kw))
        self.infix_tokens = nn.Parameter(torch.empty(infix_length, d, **kw))
        if weight.device.type != "meta":  # start from the embeddings of random vocabulary tokens
            g = torch.Generator().manual_seed(0)
            rows = torch.randint(0, weight.shape[0], (prefix_length + infix_length,), generator=g)
            with torch.no_grad():
                picked = weight.detach()[rows.to(weight.device)].clone()
                self.prefix_tokens.copy_(picked[:prefix_length])
                self.infix_tokens.copy_(picked[prefix_length:])

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("base_layer"), name)

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, inputs_embeds: Tensor | None = None, **kwargs: Any) -> Any:
        """Insert the special tokens, run the base model, cut its outputs back to the input positions.

        Incremental decoding (a non-empty KV cache, e.g. beam search with a KV cache): the
        cache already holds the prefix and infix, so the new tokens only get their positions shifted and
        ``attention_mask`` (b, cached original tokens + new) the special columns added back: the prefix
        in front and the infix after the prompt (``prompt_length``, remembered from the first pass)."""
        lp, li = self.prefix_length, self.infix_length
        cache = cache_in(kwargs)
        if cache is not None and _cache_length(cache) > 0:
            return self._incremental(input_ids, attention_mask, inputs_embeds, **kwargs)
        if inputs_embeds is None:
            inputs_embeds = self.base_layer.get_input_embeddings()(input_ids)
        b, n, d = inputs_embeds.shape
        device = inputs_embeds.device
        self.prompt_length = n
        if attention_mask is None:
            attention_mask = torch.ones(b, n, dtype=torch.long, device=device)
        real = attention_mask.bool()
        positions = torch.arange(n, device=device).expand(b, n)
        last = torch.where(real, positions, -1).amax(1, keepdim=True)  # (b, 1) last real token
        token_at = lp + positions + li * (positions > last)  # (b, n) where original token j goes
        infix_at = lp + last + 1 + torch.arange(li, device=device)  # (b, li)
        total = lp + n + li
        embeds = inputs_embeds.new_zeros(b, total, d)
        embeds[:, :lp] = self.prefix_tokens
        embeds = embeds.scatter(1, token_at.unsqueeze(-1).expand(b, n, d), inputs_embeds)
        embeds = embeds.scatter(1, infix_at.unsqueeze(-1).expand(b, li, d),
                                self.infix_tokens.to(embeds.dtype).expand(b, li, d))
        mask = attention_mask.new_ones(b, total).scatter(1, token_at, attention_mask)
        if token_type_ids is not None:
            last_type = token_type_ids.gather(1, last.clamp(min=0))
            types = token_type_ids.new_zeros(b, total).scatter(1, token_at, token_type_ids)
            token_type_ids = types.scatter(1, infix_at, last_type.expand(b, li))
        if kwargs.get("position_ids") is not None:  # the caller counts positions over real tokens: so do we
            kwargs["position_ids"] = (mask.cumsum(1) - 1).clamp(min=0)
        out = self.base_layer(inputs_embeds=embeds, attention_mask=mask, token_type_ids=token_type_ids, **kwargs)
        index = token_at.unsqueeze(-1)
        out["last_hidden_state"] = out.last_hidden_state.gather(1, index.expand(b, n, out.last_hidden_state.shape[-1]))
        if getattr(out, "hidden_states", None) is not None:
            out["hidden_states"] = tuple(h.gather(1, index.expand(b, n, h.shape[-1])) for h in out.hidden_states)
        return out

    def _incremental(self, input_ids: Tensor | None, attention_mask: Tensor | None, inputs_embeds: Tensor | None,
                     **kwargs: Any) -> Any:
        lp, li = self.prefix_length, self.infix_length
        n = getattr(self, "prompt_length", None)
        if n is None:
            raise MethodError("prefix_embed: incremental decoding needs a first pass without a KV cache")
        if attention_mask is not None:  # (b, n + generated) -> (b, lp + n + li + generated)
            ones = attention_mask.new_ones
            b = attention_mask.shape[0]
            attention_mask = torch.cat([ones(b, lp), attention_mask[:, :n], ones(b, li), attention_mask[:, n:]], 1)
        if kwargs.get("position_ids") is not None:
            kwargs["position_ids"] = kwargs["position_ids"] + lp + li
        return self.base_layer(input_ids=input_ids, inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                               **kwargs)


def _cache_length(cache: Any) -> int:
    """Tokens held by a key/value cache (a transformers ``Cache`` or the legacy tuple of tuples)."""
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:
        return int(cache[0][0].shape[-2])
    except (IndexError, TypeError, AttributeError):
        return 0


# ============================================================================ the table
def _child(name: str, make: Callable[[nn.Module, MethodConfig], nn.Module]):
    def factory(module: nn.Module, cfg: MethodConfig) -> tuple[str, nn.Module]:
        return name, make(getattr(module, name), cfg)
    return factory


def _self(make: Callable[[nn.Module, MethodConfig], nn.Module]):
    return lambda module, cfg: ("", make(module, cfg))


def _adapter(layer: nn.Module, cfg: MethodConfig) -> nn.Module:
    return BottleneckAdapter(layer, cfg.adapter_size)


def _prefix_attention(module: nn.Module, cfg: MethodConfig) -> nn.Module:
    width = getattr(module, "all_head_size", None) or getattr(module, "embed_dim", None)
    return PrefixAttention(module, cfg.prefix_length, cfg.prefix_hidden, int(width))


def _prefix_embedding(module: nn.Module, cfg: MethodConfig) -> nn.Module:
    return PrefixEmbedding(module, cfg.prefix_length, cfg.infix_length)


def _build_table() -> dict[str, dict[type, Callable]]:
    """``{site: {module type: factory}}`` for the architectures transformers provides here."""
    table: dict[str, dict[type, Callable]] = {"attention_output": {}, "ffn_output": {}, "self_attention": {},
                                              "base_model": {}}
    import importlib

    families = {  # module path: (attention-output, ffn-output, self-attention, base model, output child)
        "bert": ("BertSelfOutput", "BertOutput", "BertSelfAttention", "BertModel", "dense"),
        "roberta": ("RobertaSelfOutput", "RobertaOutput", "RobertaSelfAttention", "RobertaModel", "dense"),
        "deberta": ("DebertaSelfOutput", "DebertaOutput", None, "DebertaModel", "dense"),
        "deberta_v2": ("DebertaV2SelfOutput", "DebertaV2Output", None, "DebertaV2Model", "dense"),
    }
    for family, (attn_out, ffn_out, self_attn, base, child) in families.items():
        try:
            mod = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        except Exception:  # pragma: no cover - transformers missing or without this family
            continue
        table["attention_output"][getattr(mod, attn_out)] = _child(child, _adapter)
        table["ffn_output"][getattr(mod, ffn_out)] = _child(child, _adapter)
        if self_attn:
            table["self_attention"][getattr(mod, self_attn)] = _self(_prefix_attention)
        table["base_model"][getattr(mod, base)] = _self(_prefix_embedding)
    try:
        from transformers.models.gpt2 import modeling_gpt2 as g
    except Exception:  # pragma: no cover
        return table
    table["attention_output"][g.GPT2Attention] = _child("c_proj", _adapter)
    table["ffn_output"][g.GPT2MLP] = _child("c_proj", _adapter)
    table["self_attention"][g.GPT2Attention] = _self(_prefix_attention)
    table["base_model"][g.GPT2Model] = _self(_prefix_embedding)
    return table


@functools.cache
def site_wrappers() -> dict[str, dict[type, Callable]]:
    """The one dispatch table, ``SITE_WRAPPERS``: ``{site: {module type: factory(module, cfg) -> (child name,
    wrapper)}}``, built on the first call (it imports transformers' modeling files) and the same dict after, so
    an entry added to it stays."""
    return _build_table()


def __getattr__(name: str) -> Any:
    if name == "SITE_WRAPPERS":  # module attribute built on first use (PEP 562): see site_wrappers
        return site_wrappers()
    if name == "WRAPPERS":  # the old name, which clashed with LoRA's lorakit.lora.WRAPPERS
        import warnings

        warnings.warn("lorakit.methods.WRAPPERS is deprecated and will be removed in the next release; use "
                      "lorakit.methods.SITE_WRAPPERS", DeprecationWarning, stacklevel=2)
        return site_wrappers()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

#: Which sites each inserting method wraps.
METHOD_SITES: dict[str, tuple[str, ...]] = {
    "adapter_houlsby": ("attention_output", "ffn_output"),
    "adapter_pfeiffer": ("ffn_output",),
    "prefix_layer": ("self_attention",),
    "prefix_embed": ("base_model",),
}
METHOD_MODULES = (BottleneckAdapter, PrefixAttention, PrefixEmbedding)


def _factory(site: str, module: nn.Module) -> Callable | None:
    for cls in type(module).__mro__:
        if cls in site_wrappers()[site]:
            return site_wrappers()[site][cls]
    return None


def method_modules(model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    """The inserted wrappers (adapters, prefixes) of ``model``, by name."""
    for name, module in model.named_modules():
        if isinstance(module, METHOD_MODULES):
            yield name, module


def _blocks(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The transformer blocks: the longest ``nn.ModuleList`` whose entries all share one type."""
    best = None
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) and len({type(m) for m in module}) == 1:
            if best is None or len(module) > len(best[1]):
                best = (name, module)
    return best


def apply_method(model: nn.Module, cfg: MethodConfig) -> nn.Module:
    """Apply a non-LoRA method in place: insert its wrappers, then set ``requires_grad`` so that exactly
    the method's parameters and the task head (``cfg.head``) train. Returns ``model``.

    Raises :class:`MethodError` before touching the model when the method does not apply (naming the
    module type it needs and what was found) or conflicts with what the model already has.
    """
    if cfg.name == "lora":
        raise MethodError("method 'lora' is applied with lorakit.inject(model, LoraConfig(...))")
    existing = [n for n, _ in method_modules(model)] + [n for n, _ in lora_modules(model)]
    if existing:
        raise MethodError(f"{cfg.name} cannot be combined with the adapters/prefixes/LoRA this model already "
                          f"has ({existing[:3]}{' ...' if len(existing) > 3 else ''}); start from the base model "
                          "(LoRA + BitFit is method 'lora' with bias 'all')")
    plan: list[tuple[str, Callable]] = []
    for site in METHOD_SITES.get(cfg.name, ()):
        found = [(name, f) for name, m in model.named_modules() if (f := _factory(site, m)) is not None]
        if site == "base_model":
            found = found[:1]  # the outermost base model
        if not found:
            needs = sorted({t.__name__ for t in site_wrappers()[site]})
            seen = sorted({type(m).__name__ for _, m in model.named_modules()
                           if "Attention" in type(m).__name__ or type(m).__name__.endswith(("Output", "MLP", "Model"))})
            raise MethodError(f"method {cfg.name!r} does not apply to {type(model).__name__}: it needs a "
                              f"{site.replace('_', ' ')} module of type {needs}; found {seen or 'none of them'}"
                              + (" (DeBERTa's disentangled attention takes no key/value prefix: use "
                                 "prefix_embed)" if any("Disentangled" in s for s in seen) else ""))
        plan += found
    blocks = _blocks(model)
    if cfg.name == "ft_top2" and (blocks is None or len(blocks[1]) < 2):
        raise MethodError(f"ft_top2 needs a list of at least 2 transformer blocks (an nn.ModuleList); found "
                          f"{'none' if blocks is None else f'{len(blocks[1])} in {blocks[0]!r}'}")
    if any(not name for name, _ in plan if cfg.name == "prefix_embed"):
        raise MethodError("prefix_embed wraps the base model inside a model with a head; pass the model that "
                          f"contains the {type(model).__name__} (e.g. a *ForSequenceClassification or LM model)")
    wrapped = [(name, *factory(model.get_submodule(name), cfg)) for name, factory in plan]  # may raise
    for name, child, wrapper in wrapped:
        set_module(model, f"{name}.{child}" if child and name else (child or name), wrapper)
    _set_trainable(model, cfg, blocks)
    return model


def _set_trainable(model: nn.Module, cfg: MethodConfig, blocks: tuple[str, nn.ModuleList] | None) -> None:
    method_params = {f"{n}.{p}" if n else p for n, m in method_modules(model)
                     for p, _ in m.named_parameters() if not p.startswith("base_layer.")}
    top = ()
    if cfg.name == "ft_top2" and blocks is not None:
        top = tuple(f"{blocks[0]}.{i}." for i in (len(blocks[1]) - 2, len(blocks[1]) - 1))
    for name, p in model.named_parameters():
        if cfg.name == "full":
            p.requires_grad = True
        elif cfg.name == "bitfit":
            p.requires_grad = name.endswith(".bias") or in_modules(name, cfg.head)
        elif cfg.name == "ft_top2":
            p.requires_grad = name.startswith(top) or in_modules(name, cfg.head)
        else:
            p.requires_grad = name in method_params or in_modules(name, cfg.head)


def drop_reparameterization(model: nn.Module) -> int:
    """Fold every PreLayer MLP into its prefix activations (outputs unchanged); returns how many."""
    n = 0
    for _, module in method_modules(model):
        if isinstance(module, PrefixAttention) and module.prefix_mlp is not None:
            module.drop_reparameterization()
            n += 1
    return n


def count_parameters(model: nn.Module, head: tuple[str, ...] = ("classifier",)) -> dict[str, Any]:
    """Exact counts: ``total``, ``trainable`` (what the optimizer updates), ``percent``, ``head`` (trainable
    head parameters), ``trainable_excluding_head`` (the LoRA paper's |Theta|), ``after_training``:
    trainable parameters excluding the head once PreLayer's reparameterisation MLP is dropped, and
    ``inserted``: parameters the method added to the pretrained model (LoRA factors, adapters, prefixes).
    A 4-bit base layer counts its weights, not its packed bytes (:func:`lorakit.quant.logical_numels`);
    ``stored_bytes``: the memory of all parameters and buffers as stored (:func:`lorakit.quant.stored_bytes`)."""
    numel = quant.logical_numels(model)
    named = dict(model.named_parameters())
    total = sum(numel.values())
    inserted = sum(p.numel() for n, p in named.items() if is_lora_param_name(n))
    for _, module in method_modules(model):
        inserted += sum(p.numel() for n, p in module.named_parameters() if not n.startswith("base_layer."))
    trainable = sum(numel[n] for n, p in named.items() if p.requires_grad)
    head_n = sum(numel[n] for n, p in named.items() if p.requires_grad and in_modules(n, head))
    dropped = 0
    for _, module in method_modules(model):
        if isinstance(module, PrefixAttention) and module.prefix_mlp is not None and module.prefix_input.requires_grad:
            reparam = module.prefix_input.numel() + sum(p.numel() for p in module.prefix_mlp.parameters())
            dropped += reparam - 2 * module.length * module.width
    return {"total": total, "trainable": trainable, "percent": 100.0 * trainable / max(total, 1), "head": head_n,
            "trainable_excluding_head": trainable - head_n, "after_training": trainable - head_n - dropped,
            "inserted": inserted, "stored_bytes": quant.stored_bytes(model)}
