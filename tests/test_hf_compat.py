"""The KV-cache argument across transformers versions (``lorakit.hf_compat``).

transformers 5.25 renamed the cache argument of models and attention modules from ``past_key_values`` to
``cache``; an attention module that receives both keeps ``cache``. PreLayer (``prefix_layer``) hands its
prefix keys/values to the wrapped attention as that module's cache, so it must use the name the module
declares. These tests pin that mechanism for both spellings, whatever transformers is installed, and on
the installed GPT-2.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from lorakit.hf_compat import cache_argument, cache_in, output_cache, pop_cache
from lorakit.methods import PrefixAttention


class _Attention(nn.Module):
    """An attention module as a transformers block calls it; records the cache it was handed."""

    is_causal = False

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.received: dict = {}

    def _attend(self, hidden_states, cache, attention_mask):
        k = v = hidden_states.view(*hidden_states.shape[:2], 2, 4).transpose(1, 2)  # (b, heads, n, hd)
        k, v = cache.update(k, v, 0)
        self.received = {"keys": k.shape[2], "mask": None if attention_mask is None else attention_mask.shape[-1]}
        return self.proj(hidden_states)


class _AttentionBefore525(_Attention):
    def forward(self, hidden_states, past_key_values=None, attention_mask=None):
        return self._attend(hidden_states, past_key_values, attention_mask)


class _AttentionFrom525(_Attention):
    def forward(self, hidden_states, cache=None, attention_mask=None):
        return self._attend(hidden_states, cache, attention_mask)


@pytest.mark.parametrize("attention, name", [(_AttentionBefore525, "past_key_values"), (_AttentionFrom525, "cache")])
def test_cache_argument_is_the_name_the_forward_declares(attention, name):
    assert cache_argument(attention()) == name


@pytest.mark.parametrize("attention", [_AttentionBefore525, _AttentionFrom525])
@pytest.mark.parametrize("caller_name", ["past_key_values", "cache", None])
def test_prefix_layer_reaches_attention_of_either_api(attention, caller_name):
    """The prefix keys reach the attention under its own name, whichever name the block used."""
    base = attention()
    layer = PrefixAttention(base, length=3, hidden=None, width=8)
    hidden = torch.randn(2, 5, 8)
    mask = torch.zeros(2, 1, 5, 5)
    kwargs = {"attention_mask": mask}
    if caller_name is not None:
        kwargs[caller_name] = None  # a block without a cache still passes the keyword
    layer(hidden, **kwargs)
    assert base.received == {"keys": 3 + 5, "mask": 3 + 5}


def test_pop_cache_removes_both_names_and_output_cache_reads_either():
    kwargs = {"cache": "new", "past_key_values": None, "x": 1}
    assert cache_in(kwargs) == "new"
    assert pop_cache(kwargs) == "new" and kwargs == {"x": 1}
    assert pop_cache({"past_key_values": "old"}) == "old"

    class Out:
        past_key_values = "old"

    assert output_cache(Out()) == "old"


def test_installed_gpt2_takes_the_prefix_through_its_own_cache_argument():
    """On the installed transformers: the name matches GPT2Attention's signature, and a cached forward
    passes no second, ignored cache (the 5.25 breakage: 'Both past_key_values and cache are set')."""
    import inspect

    from transformers import GPT2Config, GPT2LMHeadModel

    from lorakit.methods import MethodConfig, apply_method

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50, n_positions=32,
                                       bos_token_id=0, eos_token_id=0)).eval()
    attention = model.transformer.h[0].attn
    assert cache_argument(attention) in inspect.signature(type(attention).forward).parameters
    apply_method(model, MethodConfig("prefix_layer", prefix_length=2, prefix_hidden=None, head=("lm_head",)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = model(input_ids=torch.tensor([[1, 2, 3]]), use_cache=True)
    assert output_cache(out).get_seq_length() == 3  # the model's cache holds its own tokens, not the prefix
