"""Checkpoints: atomic writes, keep-last-K, averaging, full disk, SIGKILL + resume continuing exactly."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lorakit.train import checkpoint as ckpt


def _save(root: Path, step: int, value: float, keep_last: int | None = None) -> Path:
    tensors = {"a.lora_A": torch.full((2, 3), value), "head.weight": torch.full((4,), value)}
    training = {"optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
                "rng": [{"torch": torch.get_rng_state(), "cuda": []}]}
    return ckpt.save_checkpoint(root, step, tensors, training, {"loop": {"step": step}}, keep_last=keep_last)


def test_checkpoint_round_trip_with_safe_loaders(tmp_path):
    path = _save(tmp_path, 10, 1.5)
    assert path.name == "step-0000010"
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "model.safetensors", "training_state.pt"]
    assert torch.equal(ckpt.load_model_state(path)["a.lora_A"], torch.full((2, 3), 1.5))
    state = ckpt.load_training_state(path)  # torch.load(weights_only=True)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.1
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [10]


def test_keep_last_k_removes_the_oldest(tmp_path):
    for step in (1, 2, 3, 4, 5):
        _save(tmp_path, step, float(step), keep_last=2)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [4, 5]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004", "step-0000005"]


def test_incomplete_and_temp_directories_never_block_resume(tmp_path):
    _save(tmp_path, 4, 1.0)
    _save(tmp_path, 8, 2.0)
    # what a kill can leave: a temp dir mid-write, a step dir whose file is torn, a foreign folder
    (tmp_path / ".tmp-step-0000012-999").mkdir()
    (tmp_path / ".tmp-step-0000012-999" / "model.safetensors").write_bytes(b"partial")
    with open(tmp_path / "step-0000008" / "model.safetensors", "r+b") as fh:
        fh.truncate(10)
    (tmp_path / "step-notanumber").mkdir()
    assert ckpt.latest_checkpoint(tmp_path).step == 4
    ckpt.remove_stale(tmp_path)
    assert not (tmp_path / ".tmp-step-0000012-999").exists()


def test_full_disk_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    _save(tmp_path, 4, 1.0)
    real = ckpt._write_file

    def disk_full(path, data):
        real(path, data[: len(data) // 2])  # part of the bytes made it, then the disk filled up
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "_write_file", disk_full)
    with pytest.raises(ckpt.CheckpointError) as info:
        _save(tmp_path, 8, 2.0)
    msg = str(info.value)
    assert "No space left on device" in msg and "step-0000004 is intact" in msg and "--resume" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000004"]  # temp dir removed
    assert ckpt.latest_checkpoint(tmp_path).step == 4
    assert torch.equal(ckpt.load_model_state(tmp_path / "step-0000004")["head.weight"], torch.ones(4))


def test_average_checkpoints_is_the_elementwise_mean(tmp_path):
    paths = [_save(tmp_path, s, float(s)) for s in (1, 2, 6)]
    avg = ckpt.average_checkpoints(paths)
    assert torch.allclose(avg["a.lora_A"], torch.full((2, 3), 3.0))
    bad = ckpt.save_checkpoint(tmp_path / "other", 1, {"x": torch.zeros(1)}, {}, {})
    with pytest.raises(ckpt.CheckpointError, match="other tensors"):
        ckpt.average_checkpoints([paths[0], bad])


def test_averaged_evaluation_uses_the_last_k_checkpoints(tmp_path, kit):
    cfg = kit.tiny_config(training={"max_steps": 6, "checkpoint_every": 2, "keep_last": 3},
                          evaluation={"average_last": 3, "every": 6})
    results = kit.run(cfg, tmp_path / "run")
    assert results["averaged"]["checkpoints"] == [2, 4, 6]
    from lorakit.train.finished_run import evaluate_workdir

    by_hand = evaluate_workdir(cfg, tmp_path / "run", average=3)
    assert by_hand["metrics"] == results["averaged"]["metrics"]
    single = evaluate_workdir(cfg, tmp_path / "run", checkpoint="6")
    assert single["metrics"] == results["final"]


def test_interrupted_run_resumes_to_identical_parameters(tmp_path, kit, monkeypatch):
    """In-process: stop after a checkpoint (an exception mid-run), resume, compare with one straight run."""
    arch = dict(kit.TINY_BERT, hidden_dropout_prob=0.1)  # dropout: the RNG state must be restored too
    sections = dict(model={"architecture": arch, "tokenizer": str(kit.MINILM), "classifier_dropout": 0.1},
                    data={"random_length": [8, 24]}, method={"lora_dropout": 0.1},
                    training={"max_steps": 10, "checkpoint_every": 3, "keep_last": 5},
                    evaluation={"every": 5, "average_last": 1})
    straight = kit.run(kit.tiny_config(**sections), tmp_path / "straight")

    from lorakit.train import run_dir

    calls = {"n": 0}
    real_save = run_dir.save_state

    def crash_after_second_checkpoint(*args, **kwargs):
        real_save(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run_dir, "save_state", crash_after_second_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        kit.run(kit.tiny_config(**sections), tmp_path / "resumed")
    monkeypatch.setattr(run_dir, "save_state", real_save)
    assert ckpt.latest_checkpoint(tmp_path / "resumed" / "checkpoints").step == 6
    resumed = kit.run(kit.tiny_config(**sections), tmp_path / "resumed")  # same config: automatic resume
    a, b = kit.tensors(tmp_path / "straight"), kit.tensors(tmp_path / "resumed")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed["final"] == straight["final"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [json.loads(line)["step"] for line in
                     (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_then_resume_gives_the_same_parameters(tmp_path, kit):
    """A real process killed with SIGKILL right after a checkpoint appears, then resumed."""
    sections = dict(training={"max_steps": 150, "checkpoint_every": 5, "keep_last": 2},
                    evaluation={"every": 1000, "average_last": 1, "baseline": False},
                    data={"max_eval_examples": 8})
    config = kit.write_config(tmp_path / "c.json", kit.tiny_raw_config(**sections))
    workdir = tmp_path / "killed"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(kit.REPO / "main.py"), "--config", str(config), "--workdir",
                             str(workdir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 900  # generous: on a loaded 2-core machine 120 s were once too few
        found = []
        while time.time() < deadline and proc.poll() is None:
            found = ckpt.list_checkpoints(workdir / "checkpoints")
            if found and found[-1].step >= 10:
                break
            time.sleep(0.02)
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        assert found and found[-1].step >= 10, "no checkpoint at step >= 10 appeared before the deadline"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (workdir / "results.json").exists()
    killed_at = ckpt.latest_checkpoint(workdir / "checkpoints").step
    assert 10 <= killed_at < 150

    from lorakit.train.config import load_config

    cfg = load_config(config)
    kit.run(cfg, workdir)  # the workdir holds the same run: resumes automatically
    kit.run(cfg, tmp_path / "straight")
    a, b = kit.tensors(tmp_path / "straight"), kit.tensors(workdir)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_full_disk_during_training_stops_and_the_rerun_resumes(tmp_path, kit, monkeypatch):
    real = ckpt._write_file
    def fills_up(path, data):
        if "step-0000008" in str(path):  # the first checkpoint fits, the second does not
            real(path, data[:100])
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(ckpt, "_write_file", fills_up)
    cfg = kit.tiny_config(training={"max_steps": 8, "checkpoint_every": 4})
    with pytest.raises(ckpt.CheckpointError, match="step-0000004 is intact"):
        kit.run(cfg, tmp_path / "run")
    monkeypatch.setattr(ckpt, "_write_file", real)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path / "run" / "checkpoints")] == [4]
    results = kit.run(cfg, tmp_path / "run")  # disk freed: the same command resumes at step 4
    assert results["steps"] == 8
    straight = kit.run(cfg, tmp_path / "straight")
    assert results["final"] == straight["final"]
