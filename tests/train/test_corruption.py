"""Corrupt every file a run reads, then run the command that reads it: each damage gives a clean one-line
error (exit 1 for data/run, 2 for config; no traceback) or the documented fallback (a damaged checkpoint is
skipped with a warning for the previous good one), and nothing in the workdir changes unless the command
then runs normally. Damage kinds: truncated, same-size garbage, header bytes flipped, latin-1 (text files),
a file from a run of another config (LoRA rank 8 instead of 4)."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from helpers import flip_header, garbage_file, latin1_file, truncate_file

from lorakit.cli import main as cli
from lorakit.train import checkpoint as ckpt

RANK8 = {"name": "lora", "r": 8, "lora_alpha": 16, "target_modules": ["query", "value"]}


def _tree_hash(root: Path) -> dict[str, str]:
    """Every file under ``root`` (relative path -> sha256): what "nothing changed" compares."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


DAMAGE = {"truncated": truncate_file, "garbage": garbage_file, "flipped_header": flip_header}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, kit):
    """A finished rank-4 run (checkpoints at steps 4 and 8) and a finished rank-8 run of the same task."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("corruption")
    kit.run(kit.tiny_config(), root / "run")
    kit.run(kit.tiny_config(method=RANK8), root / "rank8")
    kit.write_config(root / "config.json", kit.tiny_raw_config())
    kit.write_config(root / "rank8.json", kit.tiny_raw_config(method=RANK8))
    torch.set_num_threads(threads)
    return root


@pytest.fixture
def run(runs, tmp_path):
    """A fresh copy of the finished rank-4 run."""
    shutil.copytree(runs / "run", tmp_path / "run")
    return tmp_path / "run"


def _train(config: Path, workdir: Path, *extra: str) -> int:
    return cli(["train", "--config", str(config), "--workdir", str(workdir), *extra])


def _one_line_error(err: str) -> None:
    assert "Traceback" not in err and "weights_only=False" not in err and "Error(s) in loading" not in err, err


# -- config files ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", [*DAMAGE, "latin1", "not_an_object"])
def test_a_damaged_config_file_is_a_config_error_and_writes_nothing(runs, tmp_path, capsys, damage):
    config = tmp_path / "c.json"
    shutil.copy(runs / "config.json", config)
    if damage == "not_an_object":
        config.write_text("[1, 2, 3]\n")
    else:
        (DAMAGE.get(damage) or latin1_file)(config)
    assert _train(config, tmp_path / "new") == 2
    err = capsys.readouterr().err
    _one_line_error(err)
    assert str(config) in err and not (tmp_path / "new").exists()


@pytest.mark.parametrize("damage", [*DAMAGE, "latin1"])
def test_a_damaged_stored_config_is_refused_by_train_and_eval_and_changes_nothing(runs, run, capsys, damage):
    (DAMAGE.get(damage) or latin1_file)(run / "config.json")
    before = _tree_hash(run)
    assert _train(runs / "config.json", run) == 1
    assert "config.json" in capsys.readouterr().err
    assert cli(["eval", str(run)]) == 2
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "config.json" in err and _tree_hash(run) == before


# -- data files -----------------------------------------------------------------------------------------

def test_a_non_utf8_row_in_a_data_file_names_the_file_and_line(kit, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(kit.QUICKSTART_DATA, data)
    lines = (data / "train.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].replace("a", "\u00e9", 1)
    (data / "train.tsv").write_bytes("".join(lines[:5]).encode() + lines[5].encode("latin-1") +
                                     "".join(lines[6:]).encode())
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config(data))
    assert _train(config, tmp_path / "new") == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert f"{data / 'train.tsv'}:6: not UTF-8" in err and not (tmp_path / "new").exists()


# -- checkpoints ------------------------------------------------------------------------------------------

def _swap_from_other_config(run: Path, runs: Path, name: str) -> None:
    """Put the rank-8 run's file in the latest checkpoint, with meta.json's size updated (so the checkpoint
    looks complete and only its content tells)."""
    target = run / "checkpoints" / "step-0000008"
    shutil.copy(runs / "rank8" / "checkpoints" / "step-0000008" / name, target / name)
    meta = json.loads((target / ckpt.META_FILE).read_text())
    meta["files"][name] = (target / name).stat().st_size
    (target / ckpt.META_FILE).write_text(json.dumps(meta))


def _damage_checkpoint_file(run: Path, runs: Path, name: str, damage: str, steps=("step-0000008",)) -> None:
    for step in steps:
        if damage == "other_config":
            _swap_from_other_config(run, runs, name)
        else:
            DAMAGE[damage](run / "checkpoints" / step / name)


@pytest.mark.parametrize("damage", [*DAMAGE, "other_config"])
def test_eval_skips_a_damaged_model_file_for_the_previous_checkpoint(runs, run, capsys, damage):
    _damage_checkpoint_file(run, runs, ckpt.MODEL_FILE, damage)
    before = _tree_hash(run)
    assert cli(["eval", str(run)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["checkpoints"] == [4]
    if damage != "truncated":  # a truncated file fails the size check and is not listed at all
        assert "warning: skipping checkpoint step-0000008" in err
    if damage == "other_config":
        assert "another config" in err
    assert _tree_hash(run) == before


@pytest.mark.parametrize("damage", ["garbage", "other_config"])
def test_eval_says_when_no_checkpoint_is_usable(runs, run, capsys, damage):
    if damage == "other_config":
        shutil.rmtree(run / "checkpoints")
        shutil.copytree(runs / "rank8" / "checkpoints", run / "checkpoints")
    else:
        _damage_checkpoint_file(run, runs, ckpt.MODEL_FILE, damage, steps=("step-0000004", "step-0000008"))
    before = _tree_hash(run)
    assert cli(["eval", str(run)]) == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "no usable checkpoint" in err and _tree_hash(run) == before


@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.STATE_FILE])
@pytest.mark.parametrize("damage", ["garbage", "flipped_header", "other_config"])
def test_resume_skips_a_damaged_checkpoint_for_the_previous_one(runs, run, capsys, name, damage):
    _damage_checkpoint_file(run, runs, name, damage)
    (run / "results.json").unlink()  # an interrupted run: resume continues it
    assert _train(runs / "config.json", run, "--resume") == 0
    out = capsys.readouterr().out
    assert "warning: skipping checkpoint step-0000008" in out and "resuming from" in out and "step-0000004" in out
    assert ckpt.load_model_state(run / "checkpoints" / "step-0000008")  # rewritten by the resumed run


@pytest.mark.parametrize("name", [ckpt.MODEL_FILE, ckpt.STATE_FILE])
def test_resume_with_no_usable_checkpoint_fails_and_changes_nothing(runs, run, capsys, name):
    _damage_checkpoint_file(run, runs, name, "garbage", steps=("step-0000004", "step-0000008"))
    before = _tree_hash(run)
    assert _train(runs / "config.json", run, "--resume") == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "no usable checkpoint" in err and _tree_hash(run) == before


def test_resume_with_another_rank_fails_clearly_before_rewriting_config_json(runs, run, capsys):
    before = _tree_hash(run)
    assert _train(runs / "rank8.json", run, "--resume") == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "another config" in err and ("(4, 32)" in err or "(32, 4)" in err)
    assert _tree_hash(run) == before  # config.json included: the original command still resumes
    assert _train(runs / "config.json", run) == 0


# -- leftovers of a killed writer ---------------------------------------------------------------------------

def test_resume_removes_only_the_temp_files_of_killed_writers_and_says_so(runs, run, capsys):
    leftovers = [run / ".metrics.jsonl.abcd1234.tmp", run / "checkpoints" / ".meta.json.x1y2z3w4.tmp",
                 run / "adapter" / ".adapter_model.safetensors.q9w8e7r6.tmp"]
    kept = [run / "adapter" / "notes.tmp", run / ".hidden", run / "adapter" / ".x.tmp"]
    for path in leftovers + kept:
        path.write_bytes(b"partial")
    (run / "checkpoints" / ".tmp-step-0000012-999").mkdir()
    assert _train(runs / "config.json", run) == 0
    out = capsys.readouterr().out
    assert "removed 4 leftover(s)" in out
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)
    assert not (run / "checkpoints" / ".tmp-step-0000012-999").exists()


# -- unusable workdirs ------------------------------------------------------------------------------------

def test_a_workdir_that_is_a_file_or_not_writable_is_a_clear_error(runs, tmp_path, capsys):
    from lorakit.train.errors import WorkdirError
    from lorakit.train.run_dir import check_workdir_usable

    (tmp_path / "file").write_text("x")
    assert _train(runs / "config.json", tmp_path / "file") == 1
    err = capsys.readouterr().err
    _one_line_error(err)
    assert "is an existing file" in err and (tmp_path / "file").read_text() == "x"
    assert _train(runs / "config.json", tmp_path / "file" / "run") == 1
    assert "cannot be created" in capsys.readouterr().err
    # /proc refuses new files to every user, root included: the write probe's failure path
    with pytest.raises(WorkdirError, match="cannot write into /proc"):
        check_workdir_usable(Path("/proc/lorakit-run"))
