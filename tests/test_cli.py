"""The ``lorakit`` dispatcher: every registered subcommand resolves, errors are clear."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

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


def _fails_unexpectedly(argv: list[str]) -> int:
    """A subcommand with a bug: a KeyError escapes while it reads a (named) file."""
    from lorakit.errors import processing

    with processing("reading /some/file.json"):
        return {}["missing-key"]


def test_errors_print_one_line_and_debug_shows_the_traceback(capsys, tmp_path):
    """A LorakitError: one line, exit 2 for a config (1 for a run); an unexpected exception: one line naming the
    step and the --debug hint, exit 1; with --debug (anywhere in the arguments) the exception propagates."""
    bad = tmp_path / "c.json"
    bad.write_bytes("{\"name\": \"caf\u00e9\"}".encode("latin-1"))
    assert cli.main(["train", "--config", str(bad), "--workdir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "not UTF-8" in err and str(bad) in err and "Traceback" not in err
    cli.register("fails-unexpectedly", f"{__name__}:_fails_unexpectedly", "test only")
    try:
        assert cli.main(["fails-unexpectedly"]) == 1
        err = capsys.readouterr().err
        assert "unexpected KeyError while reading /some/file.json" in err and "--debug" in err
        assert "Traceback" not in err
        with pytest.raises(KeyError):
            cli.main(["fails-unexpectedly", "--debug"])
    finally:
        del cli.COMMANDS["fails-unexpectedly"]


def test_dependency_start_up_noise_is_dropped_and_other_warnings_pass(caplog):
    import logging

    cli._drop_dependency_noise()
    cli._drop_dependency_noise()  # every dispatch calls it; the filter is added once
    torchao, pytree = logging.getLogger("torchao"), logging.getLogger("torch.utils._pytree")
    with caplog.at_level(logging.WARNING):
        torchao.warning("Failed to load /x/torchao/_C_mxfp8.so: Could not load this library")
        pytree.warning("<enum 'KernelPreference'> is an Enum subclass and is now natively supported")
        torchao.warning("a torchao warning about the user's model")
        pytree.warning("another pytree warning")
    assert [r.getMessage() for r in caplog.records] == ["a torchao warning about the user's model",
                                                        "another pytree warning"]
    assert len(torchao.filters) == 1 and len(pytree.filters) == 1


def test_main_py_in_a_fresh_process_shows_no_dependency_noise():
    """inspect builds the real MiniLM model: transformers imports torchao (installed here), whose import logs
    the warnings the dispatcher drops; ``--debug`` keeps them."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    runs = {flag: subprocess.run([sys.executable, str(ROOT / "main.py"), "inspect", "configs/quickstart.json", *flag],
                                 capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
            for flag in ((), ("--debug",))}
    quiet, debug = runs[()], runs[("--debug",)]
    assert quiet.returncode == 0 and debug.returncode == 0 and "attention.self.query: r=8" in quiet.stdout
    assert "Enum subclass" not in quiet.stderr and "Failed to load" not in quiet.stderr
    assert "Enum subclass" in debug.stderr and "Failed to load" in debug.stderr  # only the filter removes them
