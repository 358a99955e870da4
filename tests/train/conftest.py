"""Fixtures for the experiment-system tests: tiny random BERT configs with the real MiniLM tokenizer,
the repository's quickstart data, small slices of the shared GLUE data."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import merge_sections, minilm_folder, shared_data

REPO = Path(__file__).resolve().parents[2]
QUICKSTART_DATA = REPO / "data" / "quickstart"


SHARED_DATA = shared_data()
GLUE_DATA = Path(os.environ.get("LORAKIT_GLUE_DATA", SHARED_DATA / "glue"))
MINILM = minilm_folder()

TINY_BERT = {
    "model_type": "bert", "vocab_size": 30522, "hidden_size": 32, "num_hidden_layers": 2,
    "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
}


def tiny_raw_config(data_dir: Path | str = QUICKSTART_DATA, **sections: Any) -> dict:
    """A config for a run of a few seconds; ``sections`` are merged into the defaults section by section
    (:func:`helpers.merge_sections`)."""
    raw: dict[str, Any] = {
        "model": {"architecture": dict(TINY_BERT), "tokenizer": str(MINILM), "classifier_dropout": 0.0},
        "method": {"name": "lora", "r": 4, "lora_alpha": 8, "target_modules": ["query", "value"]},
        "task": {"name": "quickstart"},
        "data": {"dir": str(data_dir), "max_length": 32, "max_train_examples": 64, "max_eval_examples": 32},
        "optimizer": {"lr": 5e-3},
        "schedule": {"warmup_steps": 2},
        "training": {"batch_size": 8, "max_steps": 8, "checkpoint_every": 4, "keep_last": 3, "seed": 1},
        "evaluation": {"every": 4, "average_last": 2, "batch_size": 32},
        "logging": {"every": 2, "progress_bar": False, "tensorboard": False, "plots": False},
    }
    return merge_sections(raw, sections)


def tiny_config(data_dir: Path | str = QUICKSTART_DATA, **sections: Any):
    from lorakit.train.config import validate

    return validate(tiny_raw_config(data_dir, **sections))


def write_config(path: Path, raw: dict) -> Path:
    path.write_text(json.dumps(raw, indent=1))
    return path


def run_quiet(cfg, workdir: Path, **kwargs: Any) -> dict:
    from lorakit.train.loop import train

    return train(cfg, workdir, echo=lambda _msg: None, **kwargs)


def trainable_tensors(workdir: Path) -> dict:
    """The model tensors of a run's latest checkpoint."""
    from lorakit.train import checkpoint as ckpt

    latest = ckpt.latest_checkpoint(Path(workdir) / "checkpoints")
    assert latest is not None, f"no checkpoint in {workdir}"
    return ckpt.load_model_state(latest.path)


@pytest.fixture
def glue_data() -> Path:
    assert (GLUE_DATA / "RTE" / "train.tsv").is_file(), \
        f"GLUE data not found under {GLUE_DATA}: these tests read the shared data (set LORAKIT_GLUE_DATA)"
    return GLUE_DATA


@contextlib.contextmanager
def crash_after_checkpoints(monkeypatch, n: int):
    """Inside the block, the ``n``-th checkpoint a run writes is followed by a KeyboardInterrupt (a crash)."""
    from lorakit.train import run_dir

    calls = {"n": 0}
    real_save = run_dir.save_state

    def crash_after_nth(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_dir, "save_state", crash_after_nth)
    try:
        yield
    finally:
        monkeypatch.setattr(run_dir, "save_state", real_save)


@pytest.fixture(scope="session")
def kit():
    """The helpers above, for tests (``kit.tiny_config(...)``, ``kit.run(cfg, workdir)`` ...)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        tiny_config=tiny_config, tiny_raw_config=tiny_raw_config, write_config=write_config, run=run_quiet,
        tensors=trainable_tensors, REPO=REPO, QUICKSTART_DATA=QUICKSTART_DATA, MINILM=MINILM,
        TINY_BERT=TINY_BERT, crash_after_checkpoints=crash_after_checkpoints,
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run several times faster on one thread than on two competing ones (and bitwise the
    same in every test process)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
