"""The root of lorakit's errors, and what the command line does with an exception.

Every error lorakit raises for a bad input or an unusable state subclasses :class:`LorakitError`, and
keeps the built-in base it had before (``ValueError``, ``RuntimeError`` ...), so that both
``except lorakit.LorakitError`` and an existing ``except ValueError`` catch it. Each message names the
thing that is wrong and how to fix it. The error classes themselves live beside the code that raises
them (``ConfigError`` in ``train/config.py`` ...); this module imports no other lorakit module.

Exit status of the command line (``lorakit.cli.main``): 0 success, 1 a data or run error (the default
``exit_code``), 2 a bad command line or config (``ConfigError``), 130 interrupted.

``processing(what)`` names the step or file being worked on: an *unexpected* exception (not a
``LorakitError``) that escapes it carries that name, and the command line reports it as one line
("... while reading checkpoint X") with a hint to rerun with ``--debug`` for the traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["LorakitError", "processing", "step_of"]

_STEP_ATTR = "_lorakit_step"


class LorakitError(Exception):
    """A lorakit error: the message says what went wrong and what to do about it."""

    exit_code = 1  # the command line's exit status for it: 1 data/run errors, 2 usage/config errors


@contextmanager
def processing(what: str) -> Iterator[None]:
    """Name the step running inside (``"reading data file train.jsonl"``): an unexpected exception escaping
    it is tagged with the innermost such name, for the command line's one-line report."""
    try:
        yield
    except Exception as err:
        if not isinstance(err, LorakitError) and not hasattr(err, _STEP_ATTR):
            try:
                setattr(err, _STEP_ATTR, what)
            except AttributeError:  # an exception type without __dict__
                pass
        raise


def step_of(err: BaseException) -> str | None:
    """The step an unexpected exception escaped from (see ``processing``), or None."""
    return getattr(err, _STEP_ATTR, None)
