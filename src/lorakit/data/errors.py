"""``DataError``: unusable input data (raised by the dataset readers here and by the task plugins)."""

from __future__ import annotations

from lorakit.errors import LorakitError

__all__ = ["DataError"]


class DataError(LorakitError, ValueError):
    """Unusable input data; the message names the file (and line) and what to do."""
