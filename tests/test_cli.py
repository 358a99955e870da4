"""The ``lorakit`` dispatcher: every registered subcommand resolves, errors are clear."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

from lorakit import cli

ROOT = Path(__file__).resolve().parents[1]


def test_every_registered_subcommand_resolves_to_a_function():
    assert {"convert", "score", "train", "eval", "inspect"} <= set(cli.COMMANDS)
    for name, (target, help_text) in cli.COMMANDS.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function or "main")), name
        assert help_text


def test_inspect_through_the_dispatcher_prints_counts(capsys):
    assert cli.main(["inspect", str(ROOT / "configs" / "quickstart.json")]) == 0
    out = capsys.readouterr().out
    assert "trainable" in out and "attention.self.query: r=8" in out


def test_unknown_subcommand_lists_the_known_ones(capsys):
    assert cli.main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown subcommand 'trian'" in err and "train" in err and "score" in err


def test_main_py_runs_the_same_dispatcher_with_train_as_the_default(capsys, tmp_path):
    """``python main.py ARGS`` is ``lorakit train ARGS`` unless ARGS starts with a subcommand name."""
    missing = tmp_path / "missing.json"
    assert cli.main(["--config", str(missing), "--workdir", str(tmp_path / "run")], default="train") == 2
    assert str(missing) in capsys.readouterr().err
    assert cli.main(["inspect", str(ROOT / "configs" / "quickstart.json")], default="train") == 0
    assert "attention.self.query: r=8" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_python_dash_m_lorakit_lists_the_subcommands():
    done = subprocess.run([sys.executable, "-m", "lorakit", "--help"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert done.returncode == 0
    assert "usage: lorakit SUBCOMMAND" in done.stdout and "lm-eval" in done.stdout and "train" in done.stdout
