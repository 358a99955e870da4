"""The root of lorakit's errors.

Every error lorakit raises for a bad input or an unusable state subclasses :class:`LorakitError`, and
keeps the built-in base it had before (``ValueError``, ``RuntimeError`` ...), so that both
``except lorakit.LorakitError`` and an existing ``except ValueError`` catch it. Each message names the
thing that is wrong and how to fix it. The error classes themselves live beside the code that raises
them (``ConfigError`` in ``train/config.py`` ...); this module imports no other lorakit module.
"""

from __future__ import annotations

__all__ = ["LorakitError"]


class LorakitError(Exception):
    """A lorakit error: the message says what went wrong and what to do about it."""
