"""The training run as a recipe, top to bottom: ``train = setup_run -> fit -> finish``.

``setup_run`` reads and checks everything that can fail on user input (data, tokenizer, model, workdir) before
the first byte is written, then builds the optimizer and resumes from the last checkpoint; ``fit`` is the loop
of optimizer steps with logging, evaluation, early stopping and checkpoints; ``finish`` evaluates the last and
the checkpoint-averaged model and writes ``results.json`` and the adapter. Read ``train`` first; everything
below the three phases is one small helper per step. The loop knows nothing task-specific: the task plugin
(``lorakit.train.tasks``) loads, encodes and collates the data and turns a batch into a loss, predictions and
metrics. Building lives in ``build``, the workdir (save/restore, logs, export) in ``run_dir``.

Data order is a pure function of (seed, step): the permutation of epoch ``e`` comes from a generator
seeded with ``(seed, e)`` and a random sequence length from one seeded with ``(seed, step)``. Resuming at
step ``s`` therefore needs only ``s``, plus the model, optimizer, scheduler and RNG states saved in the
checkpoint, to continue exactly as if never interrupted.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lorakit.errors import processing
from lorakit.fileio import atomic_write, json_safe

from . import batches as B
from . import checkpoint as ckpt
from . import distributed as D
from . import run_dir
from .build import (
    build_configured_model,
    build_optimizer,
    build_scheduler,
    distilling_task,
    init_from_run,
    load_tokenizer,
    parameter_counts,
    seed_everything,
)
from .config import Section
from .errors import NonFiniteLossError, TrainingError
from .report import plot_curves
from .run_dir import LoopState, RunLogger
from .tasks import DataError, Task, task_from_config

__all__ = ["train", "setup_run", "fit", "finish", "Run", "evaluate", "predict_dataset", "load_split",
           "require_data_dir", "autocast_dtype", "format_metrics"]


@dataclass
class Run:
    """What ``setup_run`` builds and ``fit`` / ``finish`` use: one training run in one process."""

    cfg: Section
    workdir: Path
    dinfo: D.DistInfo
    say: Callable[[str], None]  # prints on the main process only
    task: Task
    train_set: list[dict]
    dev_set: list[dict]
    micro: int  # examples per forward pass of this process
    model: nn.Module
    trainable: list[str]  # names of the parameters that train (what a checkpoint holds)
    params: dict[str, Any]
    init_info: dict | None
    amp_dtype: torch.dtype | None
    total_steps: int
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    state: LoopState
    resumed: bool
    log: RunLogger

    def evaluate(self) -> dict[str, float]:
        """Dev metrics of the model as it is now."""
        return evaluate(self.model, self.task, self.dev_set, self.cfg.evaluation.batch_size, self.dinfo,
                        self.amp_dtype)


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
    dinfo = D.setup(cfg.training.device)  # torchrun's process group, or one process
    try:
        run = setup_run(cfg, Path(workdir), dinfo, resume=resume, force=force, echo=echo)
        train_time = fit(run)
        return finish(run, t_start, train_time)
    finally:
        D.cleanup(dinfo)


def setup_run(cfg: Section, workdir: Path, dinfo: D.DistInfo, *, resume: bool = False, force: bool = False,
              echo: Callable[[str], None] = print) -> Run:
    """Data, model and workdir checked and built; optimizer, schedule and (when resuming) their states."""
    say = echo if dinfo.is_main else (lambda _msg: None)

    # 1. data: read, check and tokenize both splits
    task = task_from_config(cfg)
    data_dir = require_data_dir(cfg)
    with processing(f"reading the data in {data_dir}"):
        tokenizer = load_tokenizer(cfg.model)
        train_set = load_split(task, cfg.data.train_split, data_dir, cfg.data.max_train_examples, tokenizer, cfg,
                               training=True)
        dev_set = load_split(task, cfg.data.eval_split, data_dir, cfg.data.max_eval_examples, tokenizer, cfg)
    micro = _micro_batch_size(cfg, dinfo, len(train_set))
    _check_metric_name(cfg, task, task.reported_metrics())  # a typo in evaluation.metric fails now

    if cfg.method.name == "distill":  # before the seeded build: loading the teacher reseeds
        task = distilling_task(task, cfg, say)

    # 2. model: seeded build, then the fine-tuning method decides what trains
    seed_everything(cfg.training.seed, cfg.training.deterministic)
    with processing(f"building the model ({cfg.method.name})"):
        model = build_configured_model(cfg, task)
        for note in getattr(model, "lorakit_load_notes", ()):  # e.g. a masked-LM head built new
            say(note)
        init_info = init_from_run(model, cfg, say) if cfg.model.init_from is not None else None
        task.check_model(model)  # e.g. sequences longer than the model's positions
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    params = parameter_counts(model)

    # 3. workdir: same run -> resume, other run -> refuse (unless --force / --resume); nothing written yet
    candidates = run_dir.prepare_workdir(workdir, cfg, resume=resume, force=force) if dinfo.is_main else []
    candidates = [Path(p) for p in D.broadcast_object([str(c.path) for c in candidates], dinfo)]
    chosen = run_dir.pick_checkpoint(candidates, model, trainable, say)  # read and checked, not loaded yet

    # 4. device, precision, processes; optimizer over the trainable parameters only
    amp_dtype = autocast_dtype(cfg.training.precision, dinfo.device, say)
    model.to(dinfo.device)
    pruner = getattr(model, "lorakit_pruner", None)
    model = D.wrap(model, dinfo, cfg.training.strategy)  # DDP / FSDP under torchrun, else as is
    B.check_fused_loss(task, model)  # training.fused_loss true on a model causal_lm_loss cannot run stops here
    steps_per_epoch = len(train_set) // cfg.training.batch_size  # the incomplete tail of an epoch is skipped
    total_steps = cfg.training.max_steps or max(1, math.ceil(cfg.training.epochs * steps_per_epoch))
    optimizer = build_optimizer(model, cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.schedule, total_steps, say)
    scaler = torch.amp.GradScaler("cuda", enabled=(amp_dtype == torch.float16))  # loss scaling for fp16 only

    # 5. resume from the newest checkpoint that reads and fits (others skipped with a warning); only now is the
    #    workdir written
    state = LoopState()
    start_from = None if chosen is None else chosen[0]
    if chosen is not None:
        with processing(f"loading checkpoint {start_from}"):
            state = run_dir.restore_state(chosen, model, optimizer, scheduler, scaler, dinfo, trainable)
        say(f"resuming from {start_from} (step {state.step} of {total_steps})")
    if pruner is not None:  # method prune: masked gradients, re-zeroed and re-pruned after every step
        pruner.end_step = max(1, round(cfg.method.prune_end * total_steps))
        pruner.resume(state.step)
        pruner.attach(optimizer)
    if dinfo.is_main:
        run_dir.start_workdir(workdir, cfg, force=force, resumed=chosen is not None, say=say)
    D.barrier(dinfo)
    log = RunLogger(workdir, cfg.logging, enabled=dinfo.is_main, resume_step=state.step)
    say(f"{task.name}: {len(train_set)} train / {len(dev_set)} dev examples; {cfg.method.name}: "
        f"{params['trainable']:,} of {params['total']:,} parameters train ({params['percent']:.3f}%); "
        f"{total_steps} steps of {cfg.training.batch_size} on {dinfo.world_size} x {dinfo.device.type}")
    return Run(cfg, workdir, dinfo, say, task, train_set, dev_set, micro, model, trainable, params, init_info,
               amp_dtype, total_steps, steps_per_epoch, optimizer, scheduler, scaler, state,
               start_from is not None, log)


def fit(run: Run) -> float:
    """Optimizer steps from ``run.state.step`` to the end (or early stopping); returns the seconds spent."""
    cfg, state, dinfo, model, task = run.cfg, run.state, run.dinfo, run.model, run.task

    # the untrained baseline (once: a resumed run has it in its state)
    if state.step == 0 and cfg.evaluation.baseline and not state.baseline:
        state.baseline = run.evaluate()
        _check_metric_name(cfg, task, state.baseline)
        run.log.write({"step": 0, "split": "dev", **state.baseline})
        run.say(f"baseline (untrained): {format_metrics(state.baseline)}")

    t_train = time.time()
    model.train()
    bar = _progress(cfg, dinfo, run.total_steps, state.step)
    window = _Window()
    last_saved = state.step if run.resumed else None
    epoch_cache: dict[int, list[int]] = {}
    accum = cfg.training.grad_accumulation
    while state.step < run.total_steps and not state.stopped_early:
        step = state.step
        indices = _batch_indices(step, len(run.train_set), cfg.training.batch_size, cfg.training.seed, epoch_cache)
        length = _random_length(cfg, step)
        first = dinfo.rank * run.micro * accum  # this process's part of the global batch starts here
        task.start_step(step, first)  # collate's random choices (MLM masks) follow (seed, step, global row)
        mine = indices[first:first + run.micro * accum]
        step_loss, tokens = _forward_backward(model, task, [run.train_set[i] for i in mine], run.micro, length,
                                              run.scaler, run.amp_dtype, dinfo, cfg.data)
        if not math.isfinite(step_loss):
            _stop_on_nonfinite(run, step_loss, step)  # before the update: the weights stay finite
        _update(model, run.optimizer, run.scheduler, run.scaler, cfg.training.max_grad_norm)
        state.step = step + 1

        window.add(step_loss, tokens)
        if state.step % cfg.logging.every == 0 or state.step == run.total_steps:
            record = window.record(state.step, run.scheduler.get_last_lr()[0], run.steps_per_epoch)
            run.log.write(record)
            bar.set_postfix_str(format_metrics({"loss": record["loss"], "lr": record["lr"], **state.last_eval}),
                                refresh=False)
            window = _Window()
        if state.step % cfg.evaluation.every == 0 or state.step == run.total_steps:
            state.last_eval = run.evaluate()
            _check_metric_name(cfg, task, state.last_eval)
            run.log.write({"step": state.step, "split": "dev", **state.last_eval})
            _early_stopping(cfg, task, state)
            bar.set_postfix_str(format_metrics({"loss": step_loss, **state.last_eval}), refresh=False)
        if state.step % cfg.training.checkpoint_every == 0:
            run_dir.save_state(run.workdir, model, run.optimizer, run.scheduler, run.scaler, state, cfg, dinfo,
                               run.trainable)
            last_saved = state.step
        bar.update(1)
    bar.close()
    train_time = time.time() - t_train
    if last_saved != state.step:  # the final step is always in a checkpoint
        run_dir.save_state(run.workdir, model, run.optimizer, run.scheduler, run.scaler, state, cfg, dinfo,
                           run.trainable)
    return train_time


def finish(run: Run, t_start: float, train_time: float) -> dict[str, Any]:
    """Evaluate the last model and the average of the last K checkpoints; write results.json and the adapter.
    ``t_start``: when the run began (``time.time()``), for the wall time."""
    cfg, state, dinfo, workdir = run.cfg, run.state, run.dinfo, run.workdir

    # the last model, then the average of the last K checkpoints (loaded into the model in place)
    final = state.last_eval or run.evaluate()
    kept = ckpt.list_checkpoints(workdir / "checkpoints")[-cfg.evaluation.average_last:]
    averaged = {"checkpoints": [c.step for c in kept], "metrics": final}
    if len(kept) > 1:
        D.load_full_state(run.model, ckpt.average_checkpoints([c.path for c in kept]))
        averaged["metrics"] = run.evaluate()
        run.log.write({"step": state.step, "split": "dev_averaged", **averaged["metrics"]})
    run.log.close()

    results = {
        "name": cfg.name, "task": run.task.name, "method": cfg.method.name,
        "main_metric": _main_metric(cfg, run.task), "steps": state.step, "total_steps": run.total_steps,
        "stopped_early": state.stopped_early, "baseline": state.baseline, "final": final, "averaged": averaged,
        "best": {"step": state.best_step, "value": state.best_metric}, "init_from": run.init_info,
        "parameters": _with_method_counts(run.params, run.model, run.task, cfg),
        "adapter_bytes": run_dir.file_size(kept[-1].path, ckpt.MODEL_FILE) if kept else None,
        "wall_time_s": time.time() - t_start, "train_time_s": train_time,
        "world_size": dinfo.world_size, "device": dinfo.device.type, "versions": run_dir.versions(),
    }
    sharded = dinfo.enabled and cfg.training.strategy == "fsdp"
    export_state = D.full_state(run.model, set(run.trainable)) if sharded else None  # collective under FSDP
    if dinfo.is_main:
        run_dir.export_adapter(run.model, cfg, workdir, run.task, export_state)
        atomic_write(workdir / "results.json", json.dumps(json_safe(results), indent=2) + "\n")
        if cfg.logging.plots:
            plot_curves(workdir / "metrics.jsonl", workdir / "plots", run.say)
        key = results["main_metric"]
        base = state.baseline.get(key)
        run.say(f"dev {key}: {averaged['metrics'].get(key, float('nan')):.4f} (averaged over checkpoints "
                f"{averaged['checkpoints']}), last model {final.get(key, float('nan')):.4f}"
                + (f", untrained baseline {base:.4f}" if base is not None else ""))
        run.say(f"results: {workdir / 'results.json'}")
    D.barrier(dinfo)
    return results


# ======================================================================================================
# The steps of fit
# ======================================================================================================

class _Window:
    """The train loss and token count since the last log line."""

    def __init__(self) -> None:
        self.loss, self.n, self.tokens, self.t = 0.0, 0, 0.0, time.time()

    def add(self, loss: float, tokens: float) -> None:
        self.loss, self.n, self.tokens = self.loss + loss, self.n + 1, self.tokens + tokens

    def record(self, step: int, lr: float, steps_per_epoch: int) -> dict[str, Any]:
        """The ``metrics.jsonl`` line of a train log: mean loss, learning rate, throughput, epoch."""
        return {"step": step, "split": "train", "loss": self.loss / self.n, "lr": lr,
                "tokens_per_s": self.tokens / max(time.time() - self.t, 1e-9), "epoch": step / max(steps_per_epoch, 1)}


def _with_method_counts(params: dict[str, Any], model: nn.Module, task: Any, cfg: Section) -> dict[str, Any]:
    """``prune`` runs add ``stored_nonzero``: the parameters a sparse copy of the final model stores;
    ``distill`` runs add ``teacher_encoder``: the teacher's encoder parameters (head and inserted ones
    excluded), what the student's size is reported against."""
    if cfg.method.name == "prune":
        from lorakit.pruning import nonzero_parameters

        return {**params, "stored_nonzero": nonzero_parameters(model)}
    if cfg.method.name == "distill":
        from lorakit.distill import encoder_parameters

        return {**params, "teacher_encoder": encoder_parameters(task.teacher)}
    return params


def _stop_on_nonfinite(run: Run, step_loss: float, step: int) -> None:
    """A NaN/inf loss stops the run before the update, naming the last good checkpoint and what to change."""
    run.log.close()
    last = ckpt.latest_checkpoint(run.workdir / "checkpoints")
    raise NonFiniteLossError(
        f"the loss is {step_loss} at step {step + 1} (lr {run.scheduler.get_last_lr()[0]:.3g}); "
        f"training stopped before the update. Last good checkpoint: {last.path if last else 'none'}"
        ". Lower optimizer.lr, set training.max_grad_norm, or use training.precision=fp32, then "
        "rerun with --resume."
    )


# ======================================================================================================
# Data
# ======================================================================================================

def require_data_dir(cfg: Section) -> Path:
    if cfg.data.dir is None:
        raise DataError("no data folder: pass --data DIR (or set data.dir in the config)")
    path = Path(cfg.data.dir).expanduser()
    if not path.is_dir():
        raise DataError(f"data folder not found: {path} (pass --data DIR with the task's train.tsv and dev.tsv)")
    return path


def load_split(task, split: str, data_dir: Path, limit: int | None, tokenizer, cfg: Section,
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


# ======================================================================================================
# One step's helpers
# ======================================================================================================


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


def autocast_dtype(name: str, device: torch.device, say: Callable[[str], None]) -> torch.dtype | None:
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
    sign = -1.0 if task.is_lower_better(key) else 1.0
    es = cfg.training.early_stopping
    min_delta = es.min_delta if es is not None else 0.0
    if value is not None and math.isfinite(value) and (state.best_metric is None or
                                                       sign * (value - state.best_metric) > min_delta):
        state.best_metric, state.best_step, state.bad_evals = float(value), state.step, 0
    else:
        state.bad_evals += 1
    if es is not None and state.bad_evals >= es.patience:
        state.stopped_early = True


def format_metrics(values: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())


def _progress(cfg: Section, dinfo: D.DistInfo, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc="train", unit="step", dynamic_ncols=True,
                disable=not (dinfo.is_main and cfg.logging.progress_bar))


