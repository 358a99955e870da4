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


def test_git_revision_names_every_modified_file_in_full(tmp_path):
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "src").mkdir()
    for name in ("a.py", "b.py"):
        (tmp_path / "src" / name).write_text("x = 1\n")
    git("init", "-q")
    git("add", "src")
    git("commit", "-q", "-m", "init")
    head = common.git_revision(("src",), cwd=tmp_path)
    assert head and " " not in head
    for name in ("a.py", "b.py"):
        (tmp_path / "src" / name).write_text("x = 2\n")
    assert common.git_revision(("src",), cwd=tmp_path) == f"{head} (modified: src/a.py, src/b.py)"
