"""Datasets without training: readers of the official files (``nlg``: E2E, WebNLG, DART) and padding-free
packing of causal-LM training batches (``packing``).

Every reader raises :class:`DataError` naming the file (and line) and what to do when its input is unusable.
The task plugins of ``lorakit.train.tasks`` read their splits through these modules.
"""

from __future__ import annotations

from .errors import DataError

__all__ = ["DataError"]
