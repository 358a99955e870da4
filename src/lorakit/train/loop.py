"""The training run, top to bottom: build, train, evaluate, checkpoint, report.

``train(cfg, workdir)`` is the whole recipe; read it first. Everything below it is one small helper
per step. The loop knows nothing task-specific: the task plugin (``lorakit.train.tasks``) loads,
encodes and collates the data and turns a batch into a loss, predictions and metrics.

Data order is a pure function of (seed, step): the permutation of epoch ``e`` comes from a generator
seeded with ``(seed, e)`` and a random sequence length from one seeded with ``(seed, step)``. Resuming at
step ``s`` therefore needs only ``s``, plus the model, optimizer, scheduler and RNG states saved in the
checkpoint, to continue exactly as if never interrupted.
"""

from __future__ import annotations

import importlib
import importlib.resources
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from . import batches as B
from . import checkpoint as ckpt
from . import distributed as D
from .build import (
    SequenceClassifier,
    apply_method,
    build_configured_model,
    build_model,
    init_from_run,
    load_tokenizer,
)
from .config import Section, config_diff
from .errors import ModelLoadError, NonFiniteLossError, TrainingError, WorkdirError
from .tasks import DataError, is_lower_better, task_from_config

__all__ = [
    "train", "evaluate_workdir", "generate_workdir", "export_workdir", "predict_dataset", "build_model",
    "build_configured_model", "apply_method", "init_from_run", "load_tokenizer", "SequenceClassifier", "TrainingError",
    "ModelLoadError", "WorkdirError", "NonFiniteLossError", "RUN_OUTPUTS",
]

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


# ======================================================================================================
# The recipe
# ======================================================================================================

def train(
    cfg: Section,
    workdir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    echo: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the experiment ``cfg`` in ``workdir``; return the content of ``results.json``.

    Everything that can fail on user input (data, tokenizer, model, workdir clash) is checked before
    the first byte is written to ``workdir``. A workdir holding the same config resumes automatically
    from its last checkpoint; a different config is refused unless ``resume`` (continue with the new
    config) or ``force`` (start over).
    """
    t_start = time.time()
    dinfo = D.setup(cfg.training.device)
    say = echo if dinfo.is_main else (lambda _msg: None)
    try:
        # 1. data: read, check and tokenize both splits
        task = task_from_config(cfg)
        data_dir = _require_data_dir(cfg)
        tokenizer = load_tokenizer(cfg.model)
        train_set = _load_split(task, cfg.data.train_split, data_dir, cfg.data.max_train_examples, tokenizer, cfg,
                                training=True)
        dev_set = _load_split(task, cfg.data.eval_split, data_dir, cfg.data.max_eval_examples, tokenizer, cfg)
        micro = _micro_batch_size(cfg, dinfo, len(train_set))
        _check_metric_name(cfg, task, _metric_names(task))  # a typo in evaluation.metric fails now

        # 2. model: seeded build, then the fine-tuning method decides what trains
        _seed_everything(cfg.training.seed, cfg.training.deterministic)
        model = build_configured_model(cfg, task)
        init_info = init_from_run(model, cfg, say) if cfg.model.init_from is not None else None
        if hasattr(task, "check_model"):  # e.g. sequences longer than the model's positions
            task.check_model(model)
        trainable = [n for n, p in model.named_parameters() if p.requires_grad]
        params = _parameter_counts(model)

        # 3. workdir: same run -> resume, other run -> refuse (unless --force / --resume)
        workdir = Path(workdir)
        start_from = None
        if dinfo.is_main:
            start_from = _prepare_workdir(workdir, cfg, resume=resume, force=force)
        start_from = D.broadcast_object(None if start_from is None else str(start_from.path), dinfo)
        D.barrier(dinfo)

        # 4. device, precision, processes; optimizer over the trainable parameters only
        device = dinfo.device
        amp_dtype = _precision(cfg.training.precision, device, say)
        model.to(device)
        model = D.wrap(model, dinfo, cfg.training.strategy)
        steps_per_epoch = len(train_set) // cfg.training.batch_size
        total_steps = cfg.training.max_steps or max(1, math.ceil(cfg.training.epochs * steps_per_epoch))
        optimizer = build_optimizer(model, cfg.optimizer)
        scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, say)
        scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16))
        state = LoopState()

        # 5. resume: trainable tensors, optimizer, scheduler, RNG and loop state
        if start_from is not None:
            state = _restore(Path(start_from), model, optimizer, scheduler, scaler, dinfo, trainable)
            say(f"resuming from {start_from} (step {state.step} of {total_steps})")

        log = RunLogger(workdir, cfg.logging, enabled=dinfo.is_main, resume_step=state.step)
        say(f"{task.name}: {len(train_set)} train / {len(dev_set)} dev examples; {cfg.method.name}: "
            f"{params['trainable']:,} of {params['total']:,} parameters train ({params['percent']:.3f}%); "
            f"{total_steps} steps of {cfg.training.batch_size} on {dinfo.world_size} x {device.type}")

        # 6. the untrained baseline
        evaluate_fn = lambda: evaluate(model, task, dev_set, cfg.evaluation.batch_size, dinfo, amp_dtype)  # noqa: E731
        if state.step == 0 and cfg.evaluation.baseline and not state.baseline:
            state.baseline = evaluate_fn()
            _check_metric_name(cfg, task, state.baseline)
            log.write({"step": 0, "split": "dev", **state.baseline})
            say(f"baseline (untrained): {_fmt(state.baseline)}")

        # 7. train
        t_train = time.time()
        model.train()
        bar = _progress(cfg, dinfo, total_steps, state.step)
        window = {"loss": 0.0, "n": 0, "tokens": 0.0, "t": time.time()}
        last_saved = state.step if start_from is not None else None
        epoch_cache: dict[int, list[int]] = {}
        accum = cfg.training.grad_accumulation
        while state.step < total_steps and not state.stopped_early:
            step = state.step
            indices = _batch_indices(step, len(train_set), cfg.training.batch_size, cfg.training.seed,
                                     epoch_cache)
            length = _random_length(cfg, step)
            mine = indices[dinfo.rank * micro * accum:(dinfo.rank + 1) * micro * accum]  # this process's part
            step_loss, tokens = _forward_backward(model, task, [train_set[i] for i in mine], micro, length,
                                                  scaler, amp_dtype, dinfo, cfg.data)
            if not math.isfinite(step_loss):
                log.close()
                last = ckpt.latest_checkpoint(workdir / "checkpoints")
                raise NonFiniteLossError(
                    f"the loss is {step_loss} at step {step + 1} (lr {scheduler.get_last_lr()[0]:.3g}); "
                    f"training stopped before the update. Last good checkpoint: {last.path if last else 'none'}"
                    ". Lower optimizer.lr, set training.max_grad_norm, or use training.precision=fp32, then "
                    "rerun with --resume."
                )
            _update(model, optimizer, scheduler, scaler, cfg.training.max_grad_norm)
            state.step = step + 1

            window["loss"] += step_loss
            window["n"] += 1
            window["tokens"] += tokens
            if state.step % cfg.logging.every == 0 or state.step == total_steps:
                now = time.time()
                record = {"step": state.step, "split": "train", "loss": window["loss"] / window["n"],
                          "lr": scheduler.get_last_lr()[0],
                          "tokens_per_s": window["tokens"] / max(now - window["t"], 1e-9),
                          "epoch": state.step / max(steps_per_epoch, 1)}
                log.write(record)
                shown = {"loss": record["loss"], "lr": record["lr"], **state.last_eval}
                bar.set_postfix_str(_fmt(shown), refresh=False)
                window = {"loss": 0.0, "n": 0, "tokens": 0.0, "t": now}
            if state.step % cfg.evaluation.every == 0 or state.step == total_steps:
                state.last_eval = evaluate_fn()
                _check_metric_name(cfg, task, state.last_eval)
                log.write({"step": state.step, "split": "dev", **state.last_eval})
                _early_stopping(cfg, task, state)
                bar.set_postfix_str(_fmt({"loss": step_loss, **state.last_eval}), refresh=False)
            if state.step % cfg.training.checkpoint_every == 0:
                _save(workdir, model, optimizer, scheduler, scaler, state, cfg, dinfo, trainable)
                last_saved = state.step
            bar.update(1)
        bar.close()
        train_time = time.time() - t_train
        if last_saved != state.step:
            _save(workdir, model, optimizer, scheduler, scaler, state, cfg, dinfo, trainable)

        # 8. final evaluation: the last model, then the average of the last K checkpoints
        final = state.last_eval or evaluate_fn()
        kept = ckpt.list_checkpoints(workdir / "checkpoints")[-cfg.evaluation.average_last:]
        averaged = {"checkpoints": [c.step for c in kept], "metrics": final}
        if len(kept) > 1:
            D.load_full_state(model, ckpt.average_checkpoints([c.path for c in kept]))
            averaged["metrics"] = evaluate_fn()
            log.write({"step": state.step, "split": "dev_averaged", **averaged["metrics"]})
        log.close()

        # 9. report
        results = {
            "name": cfg.name, "task": task.name, "method": cfg.method.name, "main_metric": _main_metric(cfg, task),
            "steps": state.step, "total_steps": total_steps, "stopped_early": state.stopped_early,
            "baseline": state.baseline, "final": final, "averaged": averaged,
            "best": {"step": state.best_step, "value": state.best_metric}, "init_from": init_info,
            "parameters": params, "adapter_bytes": _dir_file_size(kept[-1].path, ckpt.MODEL_FILE) if kept else None,
            "wall_time_s": time.time() - t_start, "train_time_s": train_time,
            "world_size": dinfo.world_size, "device": device.type, "versions": _versions(),
        }
        sharded = dinfo.enabled and cfg.training.strategy == "fsdp"
        export_state = D.full_state(model, set(trainable)) if sharded else None  # collective under FSDP
        if dinfo.is_main:
            _export_adapter(model, cfg, workdir, task, export_state)
            ckpt.atomic_write(workdir / "results.json", json.dumps(_json_safe(results), indent=2) + "\n")
            if cfg.logging.plots:
                plot_curves(workdir / "metrics.jsonl", workdir / "plots", say)
            key = results["main_metric"]
            base = state.baseline.get(key)
            say(f"dev {key}: {averaged['metrics'].get(key, float('nan')):.4f} (averaged over checkpoints "
                f"{averaged['checkpoints']}), last model {final.get(key, float('nan')):.4f}"
                + (f", untrained baseline {base:.4f}" if base is not None else ""))
            say(f"results: {workdir / 'results.json'}")
        D.barrier(dinfo)
        return results
    finally:
        D.cleanup(dinfo)


# ======================================================================================================
# Building: data, tokenizer, model, method, optimizer, schedule
# ======================================================================================================

def _require_data_dir(cfg: Section) -> Path:
    if cfg.data.dir is None:
        raise DataError("no data folder: pass --data DIR (or set data.dir in the config)")
    path = Path(cfg.data.dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder not found: {path} (pass --data DIR with the task's train.tsv and dev.tsv)")
    return path


def _load_split(task, split: str, data_dir: Path, limit: int | None, tokenizer, cfg: Section,
                training: bool = False) -> list[dict]:
    examples = task.load(split, data_dir)
    if limit is not None:
        examples = examples[:limit]
    return task.encode(examples, tokenizer, cfg.data, training=training)


def _micro_batch_size(cfg: Section, dinfo: D.DistInfo, n_train: int) -> int:
    b, acc, world = cfg.training.batch_size, cfg.training.grad_accumulation, dinfo.world_size
    if b % (acc * world) != 0:
        raise TrainingError(
            f"training.batch_size={b} (the global batch) must be divisible by processes x grad_accumulation "
            f"= {world} x {acc}; pick a multiple of {acc * world}"
        )
    if n_train < b:
        raise DataError(f"the training set has {n_train} examples, fewer than training.batch_size={b}; "
                        "lower the batch size or add data")
    return b // (acc * world)




def build_optimizer(model: nn.Module, ocfg: Section) -> torch.optim.Optimizer:
    """AdamW over trainable parameters only; biases and norms (``no_decay``) without weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if any(name.endswith(s) for s in ocfg.no_decay) else decay).append(p)
    if not decay and not no_decay:
        raise TrainingError("no parameter is trainable: check method.target_modules / modules_to_save")
    groups = [{"params": decay, "weight_decay": ocfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=ocfg.lr, betas=tuple(ocfg.betas), eps=ocfg.eps)


def build_scheduler(optimizer: torch.optim.Optimizer, scfg: Section, total_steps: int,
                    say: Callable[[str], None]) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup from lr/warmup to lr, then linear (or cosine) decay to 0 at ``total_steps``."""
    warmup = scfg.warmup_steps if scfg.warmup_ratio is None else int(round(scfg.warmup_ratio * total_steps))
    if warmup >= total_steps and scfg.name != "constant":
        say(f"note: warmup ({warmup} steps) is not shorter than the run ({total_steps} steps): the learning "
            "rate never reaches optimizer.lr; set schedule.warmup_steps or schedule.warmup_ratio")
    name = scfg.name

    def factor(step: int) -> float:  # step = optimizer steps taken so far
        if step < warmup:
            return (step + 1) / warmup
        if name == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if name == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return max(0.0, 1.0 - progress)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _parameter_counts(model: nn.Module) -> dict[str, Any]:
    """total, trainable, percent; head (trainable head parameters), trainable_excluding_head (the LoRA
    paper's count) and after_training (that, once PreLayer's reparameterisation MLP is dropped)."""
    from lorakit.methods import count_parameters

    return count_parameters(model, head=("classifier", "pooler"))


# ======================================================================================================
# One step's helpers
# ======================================================================================================

def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:
        pass
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def _batch_indices(step: int, n: int, batch_size: int, seed: int, cache: dict[int, list[int]]) -> list[int]:
    """The global batch of optimizer step ``step``: a slice of epoch ``step // steps_per_epoch``'s
    permutation (seeded by (seed, epoch)); the incomplete tail of each epoch is skipped."""
    per_epoch = n // batch_size
    epoch, pos = divmod(step, per_epoch)
    if epoch not in cache:
        cache.clear()
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        cache[epoch] = torch.randperm(n, generator=g).tolist()
    return cache[epoch][pos * batch_size:(pos + 1) * batch_size]


def _random_length(cfg: Section, step: int) -> int | None:
    """Random sequence-length sampling: one length per global batch, a function of (seed, step)."""
    if cfg.data.random_length is None:
        return None
    lo, hi = cfg.data.random_length
    g = torch.Generator().manual_seed(cfg.training.seed * 7_919 + step + 1)
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _precision(name: str, device: torch.device, say: Callable[[str], None]) -> torch.dtype | None:
    """The autocast dtype (None = fp32). On CPU, half precisions fall back to fp32 with a note."""
    if device.type != "cuda":
        if name in ("bf16", "fp16"):
            say(f"note: training.precision={name} needs a GPU; training in fp32 on {device.type}")
        return None
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def _autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def _no_sync(model: nn.Module, sync: bool):
    """Skip DDP's gradient all-reduce on all but the last micro-batch of a step."""
    if not sync and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def _forward_backward(model: nn.Module, task, items: list[dict], micro: int, length: int | None,
                      scaler: torch.amp.GradScaler, amp_dtype: torch.dtype | None,
                      dinfo: D.DistInfo, data_cfg: Section) -> tuple[float, float]:
    """Accumulate the gradients of this process's part of one global batch, ``micro`` items at a time.

    The step's loss is the sum over all micro-batches and processes divided by the number of loss terms
    (label tokens, or examples) of the whole global batch (:mod:`lorakit.train.batches`): the same update
    for any split into processes and accumulation steps. Returns that loss and the number of real
    (non-pad) tokens all processes processed.
    """
    accum = max(1, len(items) // micro)
    batches, tokens = [], 0.0
    for k in range(accum):
        batch, real = B.training_batch(task, items[k * micro:(k + 1) * micro], length, data_cfg)
        batches.append(batch)
        tokens += real
    terms = float(sum(B.loss_count(task, batch) for batch in batches))
    total_terms, tokens = D.all_reduce_sum([terms, tokens], dinfo)  # counted before the first backward
    scale = B.step_scale(total_terms, dinfo.world_size)
    loss_sum = 0.0
    for k, batch in enumerate(batches):
        batch = {name: t.to(dinfo.device) for name, t in batch.items()}
        with _no_sync(model, sync=k == accum - 1), _autocast(dinfo.device, amp_dtype):
            summed = B.loss_sum(task, model, batch)
        scaler.scale(summed * scale).backward()
        loss_sum += float(summed.detach())
    (loss_sum,) = D.all_reduce_sum([loss_sum], dinfo)
    return loss_sum / max(total_terms, 1.0), tokens


def _update(model: nn.Module, optimizer: torch.optim.Optimizer, scheduler, scaler: torch.amp.GradScaler,
            max_grad_norm: float | None) -> None:
    """Clip (after unscaling fp16 gradients), step the optimizer and the schedule, clear the gradients."""
    scaler.unscale_(optimizer)
    if max_grad_norm is not None:
        params = [p for p in model.parameters() if p.grad is not None]
        if params:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    scaler.step(optimizer)
    scaler.update()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def evaluate(model: nn.Module, task, dataset: list[dict], batch_size: int, dinfo: D.DistInfo,
             amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Dev metrics of ``model`` on ``dataset`` (see :func:`predict_dataset`)."""
    return task.metrics(*predict_dataset(model, task, dataset, batch_size, dinfo, amp_dtype))


@torch.no_grad()
def predict_dataset(model: nn.Module, task, dataset: list[dict], batch_size: int, dinfo: D.DistInfo,
                    amp_dtype: torch.dtype | None = None, progress: bool = False) -> tuple[list, list]:
    """``(predictions, references)`` in dataset order. Each process predicts a strided shard (padded so
    every process runs the same number of forward passes, which DDP/FSDP need); the predictions are
    gathered on every process."""
    was_training = model.training
    model.eval()
    n, world = len(dataset), dinfo.world_size
    mine = list(range(dinfo.rank, n, world))
    per_rank = math.ceil(n / world)
    padded = mine + [mine[-1] if mine else 0] * (per_rank - len(mine))
    preds: list[tuple[int, float]] = []
    starts = range(0, per_rank, batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="predict", unit="batch", disable=not dinfo.is_main)
    for start in starts:
        chunk = padded[start:start + batch_size]
        batch = {k: v.to(dinfo.device) for k, v in task.collate([dataset[i] for i in chunk]).items()}
        with _autocast(dinfo.device, amp_dtype):
            pred = task.predict(model, batch)  # a tensor, or a list of task-defined picklable objects
            out = pred.float().cpu().tolist() if isinstance(pred, Tensor) else list(pred)
        real = len(mine) - start
        preds += list(zip(chunk[:max(0, real)], out[:max(0, real)], strict=False))
    everything = sorted(p for part in D.all_gather_objects(preds, dinfo) for p in part)
    predictions = [p for _, p in everything]
    references = [dataset[i]["label"] for i, _ in everything]
    if task.num_labels > 1 and all(isinstance(p, float) for p in predictions):
        predictions = [int(p) for p in predictions]
    model.train(was_training)
    return predictions, references


def _main_metric(cfg: Section, task) -> str:
    return cfg.evaluation.metric or task.main_metric


def _metric_names(task) -> list[str]:
    """What the task's ``metrics`` reports: its ``metric_names``, else the keys of a call on dummy input."""
    names = getattr(task, "metric_names", None)
    return list(names) if names is not None else list(task.metrics([0, 1], [0, 1]))


def _check_metric_name(cfg: Section, task, metrics: Iterable[str]) -> None:
    key = _main_metric(cfg, task)
    if key not in metrics:
        raise TrainingError(f"evaluation.metric {key!r} is not reported by task {task.name!r}; "
                            f"choose one of {sorted(metrics)}")


def _early_stopping(cfg: Section, task, state: LoopState) -> None:
    """Track the best dev value (the largest, or the smallest where the task says its metric is lower-is-better)
    and count evaluations without improvement; stop after ``training.early_stopping.patience`` of them."""
    key = _main_metric(cfg, task)
    value = state.last_eval.get(key)
    sign = -1.0 if is_lower_better(task, key) else 1.0
    es = cfg.training.early_stopping
    min_delta = es.min_delta if es is not None else 0.0
    if value is not None and math.isfinite(value) and (state.best_metric is None or
                                                       sign * (value - state.best_metric) > min_delta):
        state.best_metric, state.best_step, state.bad_evals = float(value), state.step, 0
    else:
        state.bad_evals += 1
    if es is not None and state.bad_evals >= es.patience:
        state.stopped_early = True


def _fmt(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _progress(cfg: Section, dinfo: D.DistInfo, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                disable=not (dinfo.is_main and cfg.logging.progress_bar))


# ======================================================================================================
# Workdir, checkpoints, logging, report
# ======================================================================================================

def _comparable(cfg: dict) -> dict:
    """The parts of a config that define a run (logging and the name do not)."""
    return {k: v for k, v in cfg.items() if k not in ("logging", "name")}


def _prepare_workdir(workdir: Path, cfg: Section, *, resume: bool, force: bool) -> ckpt.CheckpointInfo | None:
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
    ckpt.atomic_write(stored, json.dumps(cfg, indent=2) + "\n")
    if start_from is None:  # a fresh start: drop logs of an earlier attempt that never checkpointed
        for name in ("metrics.jsonl", "results.json"):
            (workdir / name).unlink(missing_ok=True)
    return start_from


def _rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _save(workdir: Path, model, optimizer, scheduler, scaler, state: LoopState, cfg: Section,
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


def _restore(path: Path, model, optimizer, scheduler, scaler, dinfo: D.DistInfo,
             trainable: list[str]) -> LoopState:
    meta = ckpt._read_meta(path)
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


def _dir_file_size(path: Path, name: str) -> int:
    return (path / name).stat().st_size


def _export_adapter(model: nn.Module, cfg: Section, workdir: Path, task,
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
        _seed_everything(cfg.training.seed, False)
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
        _seed_everything(cfg.training.seed, False)
        plain = build_configured_model(cfg, task)
        plain.load_state_dict(full, strict=False)
        model = plain
    model = D.unwrap(model)
    drop_reparameterization(model)
    tensors = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    out = workdir / "adapter"
    out.mkdir(parents=True, exist_ok=True)
    ckpt.atomic_write(out / "model.safetensors", ckpt._tensor_bytes(tensors))
    ckpt.atomic_write(out / "method.json", json.dumps(cfg.method, indent=2) + "\n")


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
            ckpt.atomic_write(self.path, "".join(line + "\n" for line in kept))
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
        self.fh.write(json.dumps(_json_safe(record)) + "\n")
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


def _json_safe(obj: Any) -> Any:
    """NaN/inf -> None, so every output is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def plot_curves(metrics_path: Path, out_dir: Path, say: Callable[[str], None] = print) -> list[Path]:
    """``loss.png`` (train loss and lr) and ``metrics.png`` (dev metrics) from ``metrics.jsonl``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        say("note: matplotlib is not installed; no plots (pip install matplotlib)")
        return []
    rows = [json.loads(line) for line in metrics_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    train_rows = [r for r in rows if r.get("split") == "train"]
    if train_rows:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot([r["step"] for r in train_rows], [r["loss"] for r in train_rows], label="train loss")
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in train_rows], [r["lr"] for r in train_rows], color="gray", alpha=0.5,
                 label="lr")
        ax2.set_ylabel("learning rate")
        ax.set_title("training loss")
        fig.tight_layout()
        fig.savefig(out_dir / "loss.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "loss.png")
    dev_rows = [r for r in rows if r.get("split") == "dev"]
    names = sorted({k for r in dev_rows for k, v in r.items() if k not in ("step", "split")
                    and isinstance(v, (int, float))})
    if dev_rows and names:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name in names:
            pts = [(r["step"], r[name]) for r in dev_rows if isinstance(r.get(name), (int, float))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, label=name)
        ax.set_xlabel("step")
        ax.set_title("dev metrics")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / "metrics.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / "metrics.png")
    return written


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "lorakit"):
        try:
            out[name] = importlib.import_module(name).__version__
        except (ImportError, AttributeError):
            pass
    return out


# ======================================================================================================
# Evaluation of a finished (or running) workdir
# ======================================================================================================

def evaluate_workdir(cfg: Section, workdir: str | Path, *, checkpoint: str | None = None,
                     average: int | None = None, split: str | None = None) -> dict[str, Any]:
    """Metrics of one checkpoint (``checkpoint``: a step number or folder name; default: the latest) or of
    the average of the last ``average`` checkpoints, on ``split`` (default: ``data.eval_split``)."""
    run = _load_run(cfg, workdir, checkpoint, average, split)
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
    run = _load_run(cfg, workdir, checkpoint, average, split)
    out = Path(out_dir) if out_dir is not None else Path(workdir) / "generate"
    t0 = time.time()
    predictions, references = predict_dataset(run.model, run.task, run.dataset, cfg.evaluation.batch_size,
                                              run.dinfo, run.amp_dtype, progress=cfg.logging.progress_bar)
    metrics = run.task.metrics(predictions, references)
    out.mkdir(parents=True, exist_ok=True)
    as_line = (lambda p: " ".join(str(p).split())) if all(isinstance(p, str) for p in predictions) else json.dumps
    ckpt.atomic_write(out / f"predictions.{split}.txt", "".join(as_line(p) + "\n" for p in predictions))
    groups = [r["references"] if isinstance(r, dict) and "references" in r else [json.dumps(_json_safe(r))]
              for r in references]
    ckpt.atomic_write(out / f"references.{split}.txt", "\n".join("".join(x + "\n" for x in g) for g in groups))
    result = {"checkpoints": run.checkpoints, "split": split, "examples": len(predictions),
              "seconds": time.time() - t0, "metrics": metrics}
    ckpt.atomic_write(out / f"metrics.{split}.json", json.dumps(_json_safe(result), indent=2) + "\n")
    echo(f"{split}: {_fmt(metrics)}")
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
    run = _load_run(cfg, workdir, checkpoint, average, None, with_data=False)
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
class _LoadedRun:
    model: nn.Module
    task: Any
    dataset: list[dict]
    split: str
    checkpoints: list[int]
    dinfo: D.DistInfo
    amp_dtype: torch.dtype | None


def _load_run(cfg: Section, workdir: str | Path, checkpoint: str | None, average: int | None,
              split: str | None, with_data: bool = True) -> _LoadedRun:
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
    dinfo = D.DistInfo(0, 1, 0, D._pick_device(cfg.training.device, 0))
    task = task_from_config(cfg)
    dataset = []
    if with_data:
        tokenizer = load_tokenizer(cfg.model)
        dataset = _load_split(task, split, _require_data_dir(cfg), cfg.data.max_eval_examples, tokenizer, cfg)
    _seed_everything(cfg.training.seed, cfg.training.deterministic)
    model = build_configured_model(cfg, task)
    state = ckpt.average_checkpoints([c.path for c in chosen]) if len(chosen) > 1 else \
        ckpt.load_model_state(chosen[0].path)
    unknown = sorted(set(state) - set(model.state_dict()))
    if unknown:
        raise ckpt.CheckpointError(f"checkpoint tensors {unknown[:3]} do not exist in the model built from "
                                   f"{workdir / 'config.json'}; was the config edited after training?")
    model.load_state_dict(state, strict=False)
    model.to(dinfo.device)
    amp = _precision(cfg.training.precision, dinfo.device, lambda _m: None)
    return _LoadedRun(model, task, dataset, split, [c.step for c in chosen], dinfo, amp)
