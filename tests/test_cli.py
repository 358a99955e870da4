"""The ``lorakit`` dispatcher: every registered subcommand resolves, errors are clear."""

from __future__ import annotations

import importlib
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
