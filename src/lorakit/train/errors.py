"""The experiment system's errors: each message says what went wrong and what to do."""

from __future__ import annotations

from lorakit.errors import LorakitError
from lorakit.pretrained import ModelLoadError  # re-exported: a run whose model cannot be loaded raises it

__all__ = ["TrainingError", "ModelLoadError", "WorkdirError", "NonFiniteLossError"]


class TrainingError(LorakitError, RuntimeError):
    """A run cannot start or continue; the message says why and what to do."""


class WorkdirError(TrainingError):
    pass


class NonFiniteLossError(TrainingError):
    pass
