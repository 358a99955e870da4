"""A run's folder: what it holds, starting or resuming in it, saving and restoring its state, its logs, and the
exported adapter.

A workdir holds ``config.json`` (the resolved config), ``metrics.jsonl`` (one JSON object per log line),
``checkpoints/step-NNNNNNN`` (see ``checkpoint``), ``results.json``, ``adapter/`` and optionally
``tensorboard/``, ``plots/`` and ``generate/``. Every file is written atomically (``lorakit.fileio``).
"""

from __future__ import annotations

import importlib
import json
import math
import platform
import random
import shutil
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.fileio import atomic_write, json_safe

from . import checkpoint as ckpt
from . import distributed as D
from .build import build_configured_model, seed_everything
from .config import Section, config_diff
from .errors import WorkdirError

__all__ = ["RUN_OUTPUTS", "LoopState", "prepare_workdir", "save_state", "restore_state", "export_adapter",
           "RunLogger", "file_size", "versions"]

# What a run writes into its workdir (``--force`` removes exactly these, nothing else).
RUN_OUTPUTS = ("config.json", "metrics.jsonl", "results.json", "checkpoints", "tensorboard", "plots", "adapter",
               "generate")


@dataclass
class LoopState:
    """What the loop itself must remember across a restart (saved in each checkpoint's meta.json)."""

    step: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    bad_evals: int = 0
    stopped_early: bool = False
    baseline: dict = field(default_factory=dict)
    last_eval: dict = field(default_factory=dict)


def _comparable(cfg: dict) -> dict:
    """The parts of a config that define a run (logging and the name do not)."""
    return {k: v for k, v in cfg.items() if k not in ("logging", "name")}


def prepare_workdir(workdir: Path, cfg: Section, *, resume: bool, force: bool) -> ckpt.CheckpointInfo | None:
    """Decide fresh start / resume; on a clash raise before anything is written. Then write config.json."""
    stored = workdir / "config.json"
    start_from = None
    if force:
        for name in RUN_OUTPUTS:
            target = workdir / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    elif stored.is_file():
        try:
            old = json.loads(stored.read_text(encoding="utf-8"))
        except ValueError:
            raise WorkdirError(f"{stored} is not valid JSON; use --force to start over in {workdir}") from None
        diff = config_diff(_comparable(old), _comparable(cfg))
        if diff and not resume:
            shown = "\n  ".join(diff[:20]) + ("\n  ..." if len(diff) > 20 else "")
            raise WorkdirError(
                f"{workdir} holds a run with a different config:\n  {shown}\n"
                "Use --resume to continue it with the new config, --force to start over (deletes its "
                "checkpoints and results), or another --workdir."
            )
        ckpt.remove_stale(workdir / "checkpoints")
        start_from = ckpt.latest_checkpoint(workdir / "checkpoints")
    elif resume:
        raise WorkdirError(f"--resume: {workdir} holds no run (no config.json); drop --resume to start one")
    workdir.mkdir(parents=True, exist_ok=True)
    atomic_write(stored, json.dumps(cfg, indent=2) + "\n")
    if start_from is None:  # a fresh start: drop logs of an earlier attempt that never checkpointed
        for name in ("metrics.jsonl", "results.json"):
            (workdir / name).unlink(missing_ok=True)
    return start_from


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def save_state(workdir: Path, model, optimizer, scheduler, scaler, state: LoopState, cfg: Section,
          dinfo: D.DistInfo, trainable: list[str]) -> None:
    """Gather full trainable tensors + optimizer state (collective), rank 0 writes atomically."""
    tensors = D.full_state(model, set(trainable))
    opt_state = D.optimizer_state(model, optimizer)
    rngs = D.all_gather_objects(_rng_state(), dinfo)
    error = None
    if dinfo.is_main:
        py_state = random.getstate()
        meta = {"loop": asdict(state), "world_size": dinfo.world_size,
                "python_rng": [py_state[0], list(py_state[1]), py_state[2]]}
        training_state = {"optimizer": opt_state, "scheduler": scheduler.state_dict(),
                          "scaler": scaler.state_dict(), "rng": rngs}
        try:
            ckpt.save_checkpoint(workdir / "checkpoints", state.step, tensors, training_state, meta,
                                 keep_last=cfg.training.keep_last)
        except ckpt.CheckpointError as err:
            error = str(err)
    error = D.broadcast_object(error, dinfo)
    if error is not None:
        raise ckpt.CheckpointError(error)


def restore_state(path: Path, model, optimizer, scheduler, scaler, dinfo: D.DistInfo,
             trainable: list[str]) -> LoopState:
    meta = ckpt.read_meta(path)
    if meta is None:
        raise ckpt.CheckpointError(f"checkpoint {path} is incomplete; delete it to resume from an earlier one")
    tensors = ckpt.load_model_state(path)
    missing = sorted(set(trainable) - set(tensors))
    if missing:
        raise ckpt.CheckpointError(
            f"checkpoint {path} lacks {len(missing)} trainable tensors of this model (e.g. {missing[0]!r}); "
            "it was written for another method/target_modules. Use --force to start over."
        )
    D.load_full_state(model, {k: tensors[k] for k in trainable})
    state = ckpt.load_training_state(path)
    D.load_optimizer_state(model, optimizer, state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    rngs = state["rng"]
    mine = rngs[dinfo.rank] if dinfo.rank < len(rngs) else rngs[0]
    torch.set_rng_state(mine["torch"])
    if mine["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(mine["cuda"])
    v, st, g = meta["python_rng"]
    random.setstate((v, tuple(st), g))
    return LoopState(**meta["loop"])


def file_size(path: Path, name: str) -> int:
    return (path / name).stat().st_size


def export_adapter(model: nn.Module, cfg: Section, workdir: Path, task,
                    full: dict[str, Tensor] | None) -> None:
    """Save the (averaged) LoRA adapter in PEFT's layout under ``workdir/adapter``.

    ``full``: the gathered trainable tensors when the model is FSDP-sharded; they are loaded into a
    plain copy of the model first (rank 0 only).
    """
    if cfg.method.name not in ("lora", "full"):
        _export_method(model, cfg, workdir, task, full)
        return
    if cfg.method.name != "lora":
        return
    from lorakit import save_adapter

    if full is not None:
        seed_everything(cfg.training.seed, False)
        plain = build_configured_model(cfg, task)
        plain.load_state_dict(full, strict=False)
        model = plain
    save_adapter(D.unwrap(model), workdir / "adapter")


def _export_method(model: nn.Module, cfg: Section, workdir: Path, task,
                   full: dict[str, Tensor] | None) -> None:
    """A baseline's final trainable tensors (PreLayer's MLP folded into its prefixes) in
    ``workdir/adapter/model.safetensors`` with ``method.json`` (the method section of the config)."""
    from lorakit.methods import drop_reparameterization

    if full is not None:
        seed_everything(cfg.training.seed, False)
        plain = build_configured_model(cfg, task)
        plain.load_state_dict(full, strict=False)
        model = plain
    model = D.unwrap(model)
    drop_reparameterization(model)
    tensors = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    out = workdir / "adapter"
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "model.safetensors", ckpt.tensor_bytes(tensors))
    atomic_write(out / "method.json", json.dumps(cfg.method, indent=2) + "\n")


class RunLogger:
    """``metrics.jsonl`` (one JSON object per line) and TensorBoard scalars; rank 0 only.

    On resume at step ``s``, lines after ``s`` (written after the last checkpoint) are dropped first,
    and TensorBoard purges its events after ``s``.
    """

    def __init__(self, workdir: Path, lcfg: Section, enabled: bool, resume_step: int = 0):
        self.enabled = enabled
        self.path = workdir / "metrics.jsonl"
        self.tb = None
        if not enabled:
            return
        if resume_step > 0 and self.path.exists():
            kept = [line for line in self.path.read_text(encoding="utf-8").splitlines()
                    if line.strip() and _keep_on_resume(line, resume_step)]
            atomic_write(self.path, "".join(line + "\n" for line in kept))
        self.fh = open(self.path, "a", encoding="utf-8")
        if lcfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=resume_step or None)
            except ImportError:
                print("note: tensorboard is not installed; no event files (pip install tensorboard)",
                      file=sys.stderr)

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        self.fh.write(json.dumps(json_safe(record)) + "\n")
        self.fh.flush()
        if self.tb is not None:
            split = record.get("split", "train")
            for k, v in record.items():
                if k not in ("step", "split") and isinstance(v, (int, float)) and math.isfinite(v):
                    self.tb.add_scalar(f"{split}/{k}", v, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        if not self.fh.closed:
            self.fh.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None


def _keep_on_resume(line: str, step: int) -> bool:
    """Keep what was logged up to the checkpoint, minus the final report of an earlier finished run."""
    try:
        row = json.loads(line)
        return int(row["step"]) < step or (int(row["step"]) == step and row.get("split") != "dev_averaged")
    except (ValueError, KeyError, TypeError, AttributeError):
        return False  # a torn last line


def versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "lorakit"):
        try:
            out[name] = importlib.import_module(name).__version__
        except (ImportError, AttributeError):
            pass
    return out
