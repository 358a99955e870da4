"""The experiment system: ``python main.py --config CONFIG --data DATA_DIR --workdir WORK_DIR``.

- ``config``: the JSON schema and its validation (every problem with its JSON path, at once);
- ``build``: model, method, optimizer and schedule from a config;
- ``loop``: the training run as a recipe, ``setup_run -> fit -> finish``, read top to bottom;
- ``run_dir``: the workdir (start or resume, save/restore, logs, exported adapter);
- ``checkpoint``: atomic checkpoints, keep-last-K, resume, averaging;
- ``distributed``: torchrun / DDP / FSDP glue;
- ``finished_run``: evaluate / generate / export a finished workdir;
- ``report``: tables over many runs, a run's curves;
- ``tasks``: task plugins (``tasks.base``: the contract and the registry);
- ``commands``: the ``train`` / ``eval`` / ``inspect`` / ``generate`` / ``export`` command lines.

See docs/experiments.md.
"""

from .config import ConfigError, load_config, validate

__all__ = ["ConfigError", "load_config", "validate", "train"]


def train(*args, **kwargs):
    """``lorakit.train.loop.train`` (imported on first use: it pulls in transformers)."""
    from .loop import train as _train

    return _train(*args, **kwargs)
