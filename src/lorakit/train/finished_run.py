"""A finished (or running) workdir: evaluate one of its checkpoints or the average of its last K, predict a
split to files, or export a language-model run as a standalone Hugging Face model folder.

``lorakit eval``, ``lorakit generate`` and ``lorakit export`` call these. Each rebuilds the run's model from its
``config.json`` (:func:`load_run`) and loads the chosen checkpoint(s); nothing in the workdir changes except
the files a command writes.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lorakit.fileio import atomic_write, json_safe

from . import checkpoint as ckpt
from . import distributed as D
from .build import SequenceClassifier, build_configured_model, load_tokenizer, seed_everything
from .config import Section
from .errors import TrainingError, WorkdirError
from .loop import autocast_dtype, evaluate, format_metrics, load_split, predict_dataset, require_data_dir
from .tasks import task_from_config

__all__ = ["evaluate_workdir", "generate_workdir", "export_workdir", "LoadedRun", "load_run"]


def evaluate_workdir(cfg: Section, workdir: str | Path, *, checkpoint: str | None = None,
                     average: int | None = None, split: str | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint (``checkpoint``: a step number or folder name; default: the latest) or of
    the average of the last ``average`` checkpoints, on ``split`` (default: ``data.eval_split``)."""
    run = load_run(cfg, workdir, checkpoint, average, split)
    metrics = evaluate(run.model, run.task, run.dataset, cfg.evaluation.batch_size, run.dinfo, run.amp_dtype)
    return {"checkpoints": run.checkpoints, "split": run.split, "metrics": metrics}


def generate_workdir(cfg: Section, workdir: str | Path, *, split: str = "test", checkpoint: str | None = None,
                     average: int | None = None, out_dir: str | Path | None = None,
                     echo: Callable[[str], None] = print) -> dict[str, Any]:
    """Predict ``split`` with a trained run and write, under ``out_dir`` (default ``WORKDIR/generate``):
    ``predictions.{split}.txt`` (one output per line, in input order), ``references.{split}.txt`` (each
    input's references, one per line, inputs separated by a blank line: the E2E scorer's multi-reference
    layout) and ``metrics.{split}.json``. For generation tasks the outputs are decoded texts; for others
    the task's predictions (class ids, scores, answers) as JSON values."""
    run = load_run(cfg, workdir, checkpoint, average, split)
    out = Path(out_dir) if out_dir is not None else Path(workdir) / "generate"
    t0 = time.time()
    predictions, references = predict_dataset(run.model, run.task, run.dataset, cfg.evaluation.batch_size,
                                              run.dinfo, run.amp_dtype, progress=cfg.logging.progress_bar)
    metrics = run.task.metrics(predictions, references)
    out.mkdir(parents=True, exist_ok=True)
    as_line = (lambda p: " ".join(str(p).split())) if all(isinstance(p, str) for p in predictions) else json.dumps
    atomic_write(out / f"predictions.{split}.txt", "".join(as_line(p) + "\n" for p in predictions))
    groups = [r["references"] if isinstance(r, dict) and "references" in r else [json.dumps(json_safe(r))]
              for r in references]
    atomic_write(out / f"references.{split}.txt", "\n".join("".join(x + "\n" for x in g) for g in groups))
    result = {"checkpoints": run.checkpoints, "split": split, "examples": len(predictions),
              "seconds": time.time() - t0, "metrics": metrics}
    atomic_write(out / f"metrics.{split}.json", json.dumps(json_safe(result), indent=2) + "\n")
    echo(f"{split}: {format_metrics(metrics)}")
    echo(f"wrote {out / f'predictions.{split}.txt'}, references.{split}.txt and metrics.{split}.json")
    return result


def export_workdir(cfg: Section, workdir: str | Path, out_dir: str | Path, *, checkpoint: str | None = None,
                   average: int | None = None, echo: Callable[[str], None] = print) -> Path:
    """Write a trained language-model run as a standalone Hugging Face model folder (``config.json``,
    weights, tokenizer) that ``from_pretrained`` and ``model.name_or_path`` read: LoRA folded into the
    weights (``merge_and_unload``), PreLayer's MLP dropped. Adapters and prefixes of the other baselines
    stay modules of lorakit, so those runs (and classifier runs, whose head is lorakit's) are refused."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise WorkdirError(f"{out} exists and is not empty; choose a new folder for the exported model")
    run = load_run(cfg, workdir, checkpoint, average, None, with_data=False)
    if isinstance(run.model, SequenceClassifier) or cfg.method.name not in ("lora", "full", "ft_top2", "bitfit"):
        raise TrainingError(f"export writes language models trained with lora, full, ft_top2 or bitfit; this run "
                            f"is a {cfg.task.name} {cfg.method.name} run (use its workdir/adapter instead)")
    model = run.model
    if cfg.method.name == "lora":
        from lorakit import merge_and_unload

        model = merge_and_unload(model)
    tokenizer = load_tokenizer(cfg.model)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    out.mkdir(parents=True, exist_ok=True)
    for item in tmp.iterdir():
        item.replace(out / item.name)
    tmp.rmdir()
    echo(f"wrote {out}: {cfg.method.name} run {workdir} at step(s) {run.checkpoints} as a plain "
         f"{type(model).__name__}")
    return out


@dataclass
class LoadedRun:
    """A run rebuilt from its workdir: the model with the chosen checkpoint(s) loaded (on the run's device),
    the task, the encoded ``split`` (empty when not asked for), the checkpoint steps, the autocast dtype."""

    model: nn.Module
    task: Any
    dataset: list[dict]
    split: str
    checkpoints: list[int]
    dinfo: D.DistInfo
    amp_dtype: torch.dtype | None


def load_run(cfg: Section, workdir: str | Path, checkpoint: str | None, average: int | None,
              split: str | None, with_data: bool = True) -> LoadedRun:
    """Rebuild a run's model from its config and load the chosen checkpoint(s); read ``split`` (unless
    ``with_data`` is false: then ``dataset`` is empty)."""
    workdir = Path(workdir)
    found = ckpt.list_checkpoints(workdir / "checkpoints")
    if not found:
        raise WorkdirError(f"{workdir} holds no complete checkpoint")
    if average is not None:
        chosen = found[-average:]
    elif checkpoint is not None:
        key = checkpoint.removeprefix("step-")
        chosen = [c for c in found if key.isdigit() and c.step == int(key)]
        if not chosen:
            raise WorkdirError(f"no checkpoint {checkpoint!r} in {workdir}; available steps: "
                               f"{[c.step for c in found]}")
    else:
        chosen = found[-1:]
    split = split or cfg.data.eval_split
    dinfo = D.DistInfo(0, 1, 0, D.pick_device(cfg.training.device, 0))
    task = task_from_config(cfg)
    dataset = []
    if with_data:
        tokenizer = load_tokenizer(cfg.model)
        dataset = load_split(task, split, require_data_dir(cfg), cfg.data.max_eval_examples, tokenizer, cfg)
    seed_everything(cfg.training.seed, cfg.training.deterministic)
    model = build_configured_model(cfg, task)
    state = ckpt.average_checkpoints([c.path for c in chosen]) if len(chosen) > 1 else \
        ckpt.load_model_state(chosen[0].path)
    unknown = sorted(set(state) - set(model.state_dict()))
    if unknown:
        raise ckpt.CheckpointError(f"checkpoint tensors {unknown[:3]} do not exist in the model built from "
                                   f"{workdir / 'config.json'}; was the config edited after training?")
    model.load_state_dict(state, strict=False)
    model.to(dinfo.device)
    amp = autocast_dtype(cfg.training.precision, dinfo.device, lambda _m: None)
    return LoadedRun(model, task, dataset, split, [c.step for c in chosen], dinfo, amp)
