"""The one place for differences between the transformers versions lorakit supports.

The key/value cache argument. transformers 5.25 renamed it from ``past_key_values`` to ``cache``, in the
models' and the attention modules' ``forward`` and in their outputs. The old name still works until
5.40, with a warning, but a module that receives both names keeps ``cache`` and drops the other.
Before 5.25 only ``past_key_values`` exists. Code that hands a cache to a Hugging Face module asks
:func:`cache_argument` for the name that module's ``forward`` declares. Code that receives a cache
reads either name with :func:`cache_in`. Nothing else in lorakit spells these names.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import MutableMapping
from typing import Any

from torch import nn

__all__ = ["CACHE_NAMES", "cache_argument", "cache_in", "pop_cache", "output_cache"]

#: The cache argument's name in transformers >= 5.25, then before 5.25.
CACHE_NAMES = ("cache", "past_key_values")


@functools.cache
def _cache_argument_of(cls: type) -> str:
    try:
        params = inspect.signature(cls.forward).parameters
    except (TypeError, ValueError):
        return CACHE_NAMES[1]
    return CACHE_NAMES[0] if CACHE_NAMES[0] in params else CACHE_NAMES[1]


def cache_argument(module: nn.Module) -> str:
    """The keyword under which ``module.forward`` takes the KV cache: ``"cache"`` where its signature
    declares it (transformers >= 5.25), else ``"past_key_values"``. Looked up once per class."""
    return _cache_argument_of(type(module))


def cache_in(kwargs: MutableMapping[str, Any]) -> Any:
    """The KV cache in a ``forward``'s keyword arguments, under either name; None when there is none."""
    for name in CACHE_NAMES:
        if kwargs.get(name) is not None:
            return kwargs[name]
    return None


def pop_cache(kwargs: MutableMapping[str, Any]) -> Any:
    """Remove the KV cache from keyword arguments (both names) and return it; None when there is none."""
    found = cache_in(kwargs)
    for name in CACHE_NAMES:
        kwargs.pop(name, None)
    return found


def output_cache(output: Any) -> Any:
    """The KV cache a model returned (``output.cache`` from 5.25, ``output.past_key_values`` before)."""
    for name in CACHE_NAMES:
        value = getattr(output, name, None)
        if value is not None:
            return value
    return None
