"""``lorakit train`` / ``lorakit eval`` / ``lorakit inspect`` (and ``python main.py``): argument parsing
and error reporting around ``lorakit.train.loop``. Each ``*_main(argv) -> int`` returns the exit status:
0 success, 1 a run that failed (data, model, checkpoint, NaN loss), 2 a bad command line or config.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .config import ConfigError, Section, apply_overrides, read_json, validate

__all__ = ["train_main", "eval_main", "inspect_main", "generate_main", "export_main", "read_config"]


def _error(message: str, code: int) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _known_errors() -> tuple[type[BaseException], ...]:
    from .checkpoint import CheckpointError
    from .errors import ModelLoadError, TrainingError
    from .tasks import DataError

    return (DataError, TrainingError, CheckpointError, ModelLoadError)


def read_config(path: str, overrides: list[str], data: str | None = None) -> Section:
    """Read CONFIG (a JSON file, or a workdir holding config.json), apply --set and --data, validate."""
    p = Path(path)
    source = p / "config.json" if p.is_dir() else p
    raw = read_json(source)
    raw = apply_overrides(raw, overrides)
    if data is not None:
        raw.setdefault("data", {})
        if isinstance(raw["data"], dict):
            raw["data"]["dir"] = str(Path(data).expanduser().resolve())
    return validate(raw, str(source))


def _set_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config field, e.g. --set training.max_steps=100 (repeatable; "
                             "VALUE is JSON, else a string)")


def _checkpoint_args(parser: argparse.ArgumentParser) -> None:
    """Which checkpoint of a run (``--checkpoint`` / ``--average``), ``--data`` and ``--set``."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--checkpoint", help="step number or folder name (default: the latest)")
    which.add_argument("--average", type=int, metavar="K", help="average the last K checkpoints")
    parser.add_argument("--data", help="data folder (default: the run's data.dir)")
    _set_arg(parser)


def train_main(argv: list[str] | None = None) -> int:
    """``python main.py --config CONFIG --data DATA_DIR --workdir WORK_DIR [--set k=v] [--resume|--force]``"""
    parser = argparse.ArgumentParser(
        prog="lorakit train", description="Run a fine-tuning experiment described by a JSON config.")
    parser.add_argument("--config", required=True, help="JSON config (see configs/ and docs/experiments.md)")
    parser.add_argument("--data", help="data folder (overrides data.dir)")
    parser.add_argument("--workdir", required=True, help="where config.json, metrics, checkpoints, results go")
    _set_arg(parser)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true",
                      help="continue the run in WORK_DIR even if its config differs")
    mode.add_argument("--force", action="store_true", help="discard the run in WORK_DIR and start over")
    args = parser.parse_args(argv)
    try:
        cfg = read_config(args.config, args.overrides, args.data)
    except ConfigError as err:
        return _error(str(err), 2)
    from .loop import train

    try:
        train(cfg, args.workdir, resume=args.resume, force=args.force)
    except _known_errors() as err:
        return _error(str(err), 1)
    except KeyboardInterrupt:
        print("\ninterrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr)
        return 130
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    """``lorakit eval WORKDIR [--checkpoint STEP | --average K] [--split dev] [--data DIR]``"""
    parser = argparse.ArgumentParser(prog="lorakit eval",
                                     description="Evaluate a run's checkpoint, or the average of its last K.")
    parser.add_argument("workdir")
    _checkpoint_args(parser)
    parser.add_argument("--split", help="data split file to score (default: data.eval_split)")
    args = parser.parse_args(argv)
    if args.average is not None and args.average < 1:
        return _error("--average must be >= 1", 2)
    try:
        cfg = read_config(args.workdir, args.overrides, args.data)
    except ConfigError as err:
        return _error(str(err), 2)
    from .finished_run import evaluate_workdir

    try:
        out = evaluate_workdir(cfg, args.workdir, checkpoint=args.checkpoint, average=args.average,
                               split=args.split)
    except _known_errors() as err:
        return _error(str(err), 1)
    print(json.dumps(out, indent=2))
    return 0


def latency_summary(cfg: Section, batches: tuple[int, ...] = (1, 8), seq_len: int | None = None,
                    repeats: int = 20, warmup: int = 3) -> dict[str, Any]:
    """Forward latency of the configured method against the base model (the same encoder and head, nothing
    inserted) at each batch size: eval mode, ``torch.no_grad()``, random ids of ``seq_len`` (default
    ``data.max_length``) tokens. The two models are timed interleaved (``lorakit.timing``: ``repeats``
    rounds after ``warmup``, order rotated every round); per batch size ``batch_{b}`` holds
    ``lorakit.timing.compare_to_base``: median ms of each, the median per-round ratio method / base with
    its quartiles, and ``overhead_pct`` = 100 * (ratio - 1)."""
    import torch

    from lorakit.timing import compare_to_base, forward_timings

    from .build import build_configured_model, seed_everything

    seed_everything(cfg.training.seed, False)
    base = build_configured_model(cfg, with_method=False).eval()
    seed_everything(cfg.training.seed, False)
    adapted = build_configured_model(cfg).eval()
    vocab = int(getattr(getattr(base, "encoder", base).config, "vocab_size", 1000))
    seq = seq_len or cfg.data.max_length
    out: dict[str, Any] = {"seq_len": seq, "threads": torch.get_num_threads(), "device": "cpu",
                           "timing": "interleaved", "rounds": repeats, "warmup": warmup}
    for b in batches:
        timings = forward_timings({"base": base, "method": adapted}, b, seq, vocab, repeats, warmup)
        out[f"batch_{b}"] = compare_to_base(timings, "method")
    return out


def inspect_summary(cfg: Section, workdir: Path | None = None) -> dict[str, Any]:
    """Parameter counts, per-module LoRA ranks and adapter size on disk, without data or training."""
    import safetensors.torch

    from . import checkpoint as ckpt
    from .build import build_configured_model, parameter_counts, seed_everything

    seed_everything(cfg.training.seed, False)
    model = build_configured_model(cfg)
    counts = parameter_counts(model)
    ranks: dict[str, int] = {}
    for name, module in model.named_modules():
        rank = getattr(module, "rank", None) if hasattr(module, "lora_A") else None
        if isinstance(rank, dict) and rank:
            ranks[name] = int(next(iter(rank.values())))
        elif isinstance(getattr(module, "r", None), int) and hasattr(module, "lora_A"):
            ranks[name] = module.r
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    latest = ckpt.latest_checkpoint(workdir / "checkpoints") if workdir else None
    if latest is not None:
        size, where = (latest.path / ckpt.MODEL_FILE).stat().st_size, str(latest.path / ckpt.MODEL_FILE)
    else:
        size = len(safetensors.torch.save({n: p.detach().contiguous() for n, p in trainable.items()}))
        where = "computed (no checkpoint yet)"
    return {
        "model": cfg.model.name_or_path or f"architecture:{cfg.model.architecture.get('model_type')}",
        "task": cfg.task.name, "method": cfg.method.name, **counts, "lora_ranks": ranks,
        "trainable_tensors": len(trainable), "adapter_bytes": size, "adapter_file": where,
    }


def inspect_main(argv: list[str] | None = None) -> int:
    """``lorakit inspect CONFIG_OR_WORKDIR [--set k=v] [--json]``"""
    parser = argparse.ArgumentParser(
        prog="lorakit inspect",
        description="Show total/trainable parameters, per-module LoRA rank and adapter size, without training.")
    parser.add_argument("target", help="a JSON config or a run's workdir")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--latency", action="store_true",
                        help="also time the forward pass of the method against the base model at batch 1 and 8 "
                             "(interleaved rounds; medians and the median per-round ratio)")
    _set_arg(parser)
    args = parser.parse_args(argv)
    try:
        cfg = read_config(args.target, args.overrides)
    except ConfigError as err:
        return _error(str(err), 2)
    target = Path(args.target)
    try:
        info = inspect_summary(cfg, target if target.is_dir() else None)
        if args.latency:
            info["latency"] = latency_summary(cfg)
    except _known_errors() as err:
        return _error(str(err), 1)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model:      {info['model']}")
    print(f"task:       {info['task']}    method: {info['method']}")
    print(f"parameters: {info['total']:,} total, {info['trainable']:,} trainable ({info['percent']:.4f}%)")
    print(f"            {info['trainable_excluding_head']:,} trainable excluding the head ({info['head']:,} in the "
          f"head); {info['after_training']:,} after training (PreLayer's MLP dropped)")
    print(f"memory:     {info['stored_bytes']:,} bytes of parameters and buffers as stored (4-bit weights packed)")
    print(f"adapter:    {info['adapter_bytes']:,} bytes on disk ({info['adapter_file']})")
    if "latency" in info:
        lat = info["latency"]
        for key in (k for k in lat if k.startswith("batch_")):
            row = lat[key]
            iqr = "" if row["ratio_q1"] is None else f"; ratio IQR {row['ratio_q1']:.2f}-{row['ratio_q3']:.2f}"
            print(f"latency {key.replace('_', ' ')}, {lat['seq_len']} tokens: base {row['base_ms']:.2f} ms, "
                  f"{info['method']} {row['method_ms']:.2f} ms ({row['overhead_pct']:+.1f}%{iqr}; "
                  f"interleaved, {lat['rounds']} rounds)")
    if info["lora_ranks"]:
        print(f"LoRA modules ({len(info['lora_ranks'])}):")
        for name, r in info["lora_ranks"].items():
            print(f"  {name}: r={r}")
    return 0


def _run_on_workdir(parser: argparse.ArgumentParser, argv: list[str] | None,
                    action: Callable[[Section, argparse.Namespace], Any]) -> int:
    """Parse ``--workdir`` + the checkpoint arguments, load the run's config, then ``action(cfg, args)``;
    exit status 2 for a bad command line or config, 1 for a failed action."""
    parser.add_argument("--workdir", required=True, help="a run's workdir (its config.json is used)")
    _checkpoint_args(parser)
    args = parser.parse_args(argv)
    if args.average is not None and args.average < 1:
        return _error("--average must be >= 1", 2)
    if not (Path(args.workdir) / "config.json").is_file():
        return _error(f"{args.workdir} is not a run's workdir (no config.json); train first", 2)
    try:
        cfg = read_config(args.workdir, args.overrides, args.data)
    except ConfigError as err:
        return _error(str(err), 2)
    try:
        action(cfg, args)
    except _known_errors() as err:
        return _error(str(err), 1)
    return 0


def generate_main(argv: list[str] | None = None) -> int:
    """``lorakit generate --workdir WORKDIR [--split test] [--checkpoint STEP | --average K] [--out DIR]``"""
    from .finished_run import generate_workdir

    parser = argparse.ArgumentParser(
        prog="lorakit generate",
        description="Predict a split with a trained run (NLG tasks: decode with the config's generation "
                    "section) and write predictions, references and the metrics JSON.")
    parser.add_argument("--split", default="test", help="the split to predict (default: test)")
    parser.add_argument("--out", help="output folder (default: WORKDIR/generate)")
    return _run_on_workdir(parser, argv, lambda cfg, args: generate_workdir(
        cfg, args.workdir, split=args.split, checkpoint=args.checkpoint, average=args.average, out_dir=args.out))


def export_main(argv: list[str] | None = None) -> int:
    """``lorakit export --workdir WORKDIR --out DIR [--checkpoint STEP | --average K]``"""
    from .finished_run import export_workdir

    parser = argparse.ArgumentParser(
        prog="lorakit export",
        description="Write a trained language-model run (lora merged, full, ft_top2, bitfit) as a standalone "
                    "Hugging Face model folder, e.g. to fine-tune it further (model.name_or_path).")
    parser.add_argument("--out", required=True, help="a new (or empty) folder for the model")
    return _run_on_workdir(parser, argv, lambda cfg, args: export_workdir(
        cfg, args.workdir, args.out, checkpoint=args.checkpoint, average=args.average))


