"""Inference cost of the LoRA paper's baselines: forward latency of each method against the base model.

    OMP_NUM_THREADS=1 .venv/bin/python -m bench.methods [--configs configs/baselines] [--seq-len N]
        [--rounds 30] [--warmup 3] [--batches 1,8] [--skip-same-structure] [--json]

The configs of the folder are grouped by base model (same ``model`` section, task and sequence length,
``--seq-len`` or else each config's ``data.max_length``). For each group and batch size, the base model
(the same encoder and head, nothing inserted) and every method's model are timed **interleaved in one
process** (``lorakit.timing.forward_timings``): each round runs every variant once, starting from a
variant that rotates from round to round, after ``--warmup`` untimed rounds. Eval mode,
``torch.no_grad()``, random token ids (seed 0), all-ones attention mask.

A method's number is the median over rounds of the per-round ratio time(method) / time(base), with
its interquartile range; ``overhead_pct`` is 100 * (ratio - 1). Absolute times (medians) are shown
too, but on a shared machine only the paired ratios are comparable.

Every config with LoRA layers is timed twice: **unmerged** (the injected layers, as trained) and
**merged** (a copy after ``lorakit.merge_and_unload``), the form the LoRA paper's "no additional
inference latency" refers to. Before both, each ``lora_B`` gets random values (std 0.02, seed 0) so
that the merge writes a non-zero update, as after training; merged and unmerged outputs are checked
equal.

Methods whose model has the base model's structure (same modules and parameter shapes: full
fine-tuning, head only, FT-Top2, BitFit) are timed as well, as a control that shows what "no
difference" reads as on this machine; with ``--skip-same-structure`` they are not timed and reported as
"1 (same structure)". The lines (or with ``--json`` the rows) name which.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from torch import nn

import lorakit
from lorakit.lora import lora_modules
from lorakit.timing import compare_to_base, forward_timings
from lorakit.train.build import build_configured_model, seed_everything
from lorakit.train.commands import read_config

from . import common

SAME_STRUCTURE = "1 (same structure)"


@dataclass
class Variant:
    """One model timed against its group's base model."""

    label: str  # unique within the group; the table's row name
    config: str  # the config's file name
    method: str  # the config's method.name
    variant: str  # "as built", "unmerged" or "merged"
    model: nn.Module | None  # None: same structure as base and not timed
    same_structure: bool


@dataclass
class Group:
    """Configs that share a base model and a sequence length."""

    seq_len: int
    base: nn.Module
    vocab: int
    variants: list[Variant]


def structure(model: nn.Module) -> tuple:
    """The model's module tree (names and classes) and parameter shapes: equal for models that compute alike."""
    modules = tuple((name, type(m).__qualname__) for name, m in model.named_modules())
    params = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    return modules, params


def randomize_lora_b(model: nn.Module, std: float = 0.02, seed: int = 0) -> int:
    """Give every ``lora_B`` weight random values (as after training); returns how many tensors were set."""
    g = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B." in f".{name}.":
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
                count += 1
    return count


def _forward(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask)
    return out if isinstance(out, torch.Tensor) else out["logits"] if isinstance(out, dict) else out[0]


def build_groups(paths: list[Path], seq_len: int | None, skip_same: bool, info: TextIO = sys.stderr) -> list[Group]:
    """Load every config, build its model (and base model once per group) in eval mode; notes go to ``info``."""
    groups: dict[str, Group] = {}
    for path in paths:
        cfg = read_config(str(path), [])
        seq = seq_len or cfg.data.max_length
        key = json.dumps([cfg.model, cfg.task.name, seq], sort_keys=True, default=str)
        if key not in groups:
            seed_everything(cfg.training.seed, False)
            base = build_configured_model(cfg, with_method=False).eval()
            vocab = int(getattr(getattr(base, "encoder", base).config, "vocab_size", 1000))
            groups[key] = Group(seq, base, vocab, [])
        group = groups[key]
        seed_everything(cfg.training.seed, False)
        model = build_configured_model(cfg).eval()
        same = structure(model) == structure(group.base)
        stem, method = path.stem, cfg.method.name
        if not any(True for _ in lora_modules(model)):
            timed = None if same and skip_same else model
            group.variants.append(Variant(stem, path.name, method, "as built", timed, same))
            continue
        randomize_lora_b(model)
        merged = lorakit.merge_and_unload(copy.deepcopy(model)).eval()
        ids = torch.randint(0, group.vocab, (2, min(seq, 32)), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            a, b = _forward(model, ids, torch.ones_like(ids)), _forward(merged, ids, torch.ones_like(ids))
            moved = (a - _forward(group.base, ids, torch.ones_like(ids))).abs().max().item()
        diff = (a - b).abs().max().item()
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-4):
            raise AssertionError(f"{path.name}: merged and unmerged outputs differ by up to {diff:.3g}")
        print(f"{path.name}: merged output equals unmerged (max abs difference {diff:.1e}); the random lora_B "
              f"moves the output by up to {moved:.3g} from the base model's", file=info, flush=True)
        group.variants.append(Variant(f"{stem} unmerged", path.name, method, "unmerged", model, False))
        group.variants.append(Variant(f"{stem} merged", path.name, method, "merged", merged, False))
    return list(groups.values())


def time_group(group: Group, batches: list[int], rounds: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Per variant label and ``batch_{b}``: base and method medians (ms), the paired ratio and its quartiles."""
    out: dict[str, dict[str, Any]] = {v.label: {} for v in group.variants}
    timed = {"base": group.base, **{v.label: v.model for v in group.variants if v.model is not None}}
    for b in batches:
        t = forward_timings(timed, b, group.seq_len, group.vocab, rounds, warmup)
        base_ms = 1000 * t.median("base")
        for v in group.variants:
            if v.model is None:
                entry = {"base_ms": base_ms, "method_ms": None, "ratio": 1.0, "ratio_q1": None, "ratio_q3": None,
                         "overhead_pct": 0.0, "shown": SAME_STRUCTURE, "base_spread": None}
            else:
                entry = {**compare_to_base(t, v.label), "shown": t.ratio_shown(v.label, "base")[1],
                         "base_spread": t.spread("base") if rounds >= 4 else None}
            out[v.label][f"batch_{b}"] = entry
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.methods", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/baselines", help="folder of experiment configs")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per row (default: data.max_length)")
    parser.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=30,
                        help="timed interleaved rounds per batch size (each times every variant once)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed interleaved rounds first")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--skip-same-structure", action="store_true",
                        help=f"do not time methods with the base model's structure; report them as {SAME_STRUCTURE!r}")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (the header goes to stderr)")
    args = parser.parse_args(argv)
    batches = [int(x) for x in args.batches.split(",")]
    paths = sorted(Path(args.configs).glob("*.json"))
    if not paths:
        parser.error(f"no *.json configs in {args.configs}")
    info = sys.stderr if args.json else sys.stdout
    print(f"# {common.describe_machine()}; git {common.git_revision()}; {common.today()}; "
          f"{args.rounds} interleaved rounds after {args.warmup} warm-up; load average {common.load_average():.2f}",
          file=info, flush=True)
    rows = []
    for group in build_groups(paths, args.seq_len, args.skip_same_structure, info):
        results = time_group(group, batches, args.rounds, args.warmup)
        names = sorted({v.config.rsplit(".", 1)[0] for v in group.variants})
        if not args.json:
            base_ms = ", ".join(f"batch {b} {results[group.variants[0].label][f'batch_{b}']['base_ms']:.1f} ms"
                                for b in batches)
            print(f"\n# seq {group.seq_len}: {', '.join(names)}; base model median {base_ms}; "
                  "ratio = median over rounds of time(method) / time(base) (interquartile range)", flush=True)
        for v in group.variants:
            res = results[v.label]
            rows.append({"config": v.config, "method": v.method, "variant": v.variant,
                         "same_structure": v.same_structure, "timed": v.model is not None, "seq_len": group.seq_len,
                         "threads": torch.get_num_threads(), "device": "cpu", "timing": "interleaved",
                         "rounds": args.rounds, "warmup": args.warmup, **res})
            if not args.json:
                label = v.label + (" (same structure)" if v.same_structure and v.model is not None else "")
                cells = []
                for b in batches:
                    e = res[f"batch_{b}"]
                    ms = "" if e["method_ms"] is None else f"{e['method_ms']:8.2f} ms"
                    cells.append(f"batch {b}: {ms:>11s} {e['shown']:>20s}")
                print(f"{label:50s} " + "   ".join(cells), flush=True)
    print(f"# load average after: {common.load_average():.2f}", file=info, flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
