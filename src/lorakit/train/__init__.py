"""The experiment system: ``python main.py --config CONFIG --data DATA_DIR --workdir WORK_DIR``.

- ``config``: the JSON schema and its validation (every problem with its JSON path, at once);
- ``loop``: the training run, top to bottom (build, train, evaluate, checkpoint, report);
- ``checkpoint``: atomic checkpoints, keep-last-K, resume, averaging;
- ``distributed``: torchrun / DDP / FSDP glue;
- ``tasks``: task plugins (GLUE, quickstart); ``metrics``: scores;
- ``commands``: the ``train`` / ``eval`` / ``inspect`` command lines.

See docs/experiments.md.
"""

from .config import ConfigError, load_config, validate

__all__ = ["ConfigError", "load_config", "validate", "train"]


def train(*args, **kwargs):
    """``lorakit.train.loop.train`` (imported on first use: it pulls in transformers)."""
    from .loop import train as _train

    return _train(*args, **kwargs)
