"""bench/common.py's publishing helpers: one ``--update-md`` option and one section writer for every script."""

import importlib

import pytest

from bench import common

SCRIPTS = ("bench.layers", "bench.train_step", "bench.adapters")


def test_publish_section_prints_and_creates_the_file_with_the_intro(tmp_path, capsys):
    path = tmp_path / "BENCHMARKS.md"
    printed = []
    assert common.publish_section("Title A", "body a\n", path, printed.append) == 0
    assert printed == ["## Title A\n\nbody a\n"]
    assert path.read_text() == common.BENCHMARKS_INTRO + "## Title A\n\nbody a\n"
    assert f"updated {path}" in capsys.readouterr().err


def test_publish_section_replaces_its_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## One\n\nold one\n\n## Two\n\nold two\n")
    common.publish_section("One", "new one\n", path, lambda _: None)
    assert path.read_text() == "# Benchmarks\n\n## One\n\nnew one\n\n## Two\n\nold two\n"


def test_publish_section_without_a_path_writes_nothing(tmp_path, capsys):
    assert common.publish_section("T", "b", None, lambda _: None) == 0
    assert list(tmp_path.iterdir()) == [] and capsys.readouterr().err == ""


def test_command_line_quotes_the_arguments():
    assert common.command_line("bench.layers", ["--dims", "256", "--update-md", "a b.md"]) == (
        "python -m bench.layers --dims 256 --update-md 'a b.md'"
    )
    assert common.command_line("bench.x", []) == "python -m bench.x"


@pytest.mark.parametrize("module", SCRIPTS)
def test_every_script_takes_update_md_with_and_without_a_path(module):
    parse_args = importlib.import_module(module).parse_args
    assert parse_args([]).update_md is None
    assert parse_args(["--update-md"]).update_md == "BENCHMARKS.md"
    assert parse_args(["--update-md", "other.md"]).update_md == "other.md"
