"""``lorakit report WORKDIR...``: the results of many runs as one table, like the LoRA paper's.

Each WORKDIR is a finished run (it holds ``results.json`` and ``config.json``) or a folder searched
recursively for such runs. Runs are grouped by method (``LoRA (r=8)``, ``full FT``, ``head only``; with the
learning rate, ``LoRA (r=8), lr 0.0005``, when one method was run at several) and task; the seeds of a
group are summarised as median and mean +- sample std. The table has one row per method, one column per
task, the trainable parameters (without and with the head) and, when a method has every task, the average
of its per-task medians (the paper's "Avg.").

Outputs: Markdown on stdout (the summary table, then one row per run with its dev metric, trainable
parameters, wall time and the exact command that reproduces it) and, with ``--out DIR``,
``DIR/report.md`` and ``DIR/report.png`` (grouped bars: median per method and task, std as error bars,
one dot per seed).

Parameter counts come from the run's own files: ``results.json`` gives the total and trainable counts,
the last checkpoint's tensor names (read from the safetensors header, no tensor is loaded) tell the head
(``classifier``, and the pooler when ``model.pooling`` is ``pooler``) and the LoRA factors apart.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError
from lorakit.fileio import atomic_write

__all__ = ["ReportError", "RunRecord", "collect_runs", "summarise", "markdown_report", "plot_report", "main"]


class ReportError(LorakitError, ValueError):
    """A workdir cannot be reported; the message names the file and what to do."""


@dataclass
class RunRecord:
    """One finished run. ``value`` is the main dev metric as stored (fractions for GLUE)."""

    workdir: Path
    task: str
    method: str  # display label, e.g. "LoRA (r=8)"
    seed: int
    metric: str
    value: float
    trainable: int
    head: int | None  # parameters of the head (None: no checkpoint to read them from)
    adapter: int | None  # LoRA factors (0 for full / head-only)
    encoder: int | None  # pretrained encoder parameters, head and inserted parameters (LoRA, adapters) excluded;
    # for a distilled student, its teacher's encoder: "% of encoder" is then the student's size against it
    wall_time_s: float | None
    steps: int | None
    command: str
    extra: dict[str, Any] = field(default_factory=dict)
    after_training: int | None = None  # trainable without the head once training-only parts are dropped
    stored: int | None = None  # parameters a task stores: non-zero ones for pruning, else n/a

    @property
    def trainable_without_head(self) -> int | None:
        """The paper's |Theta|: trainable parameters without the head, after training (PreLayer's MLP dropped)."""
        if self.after_training is not None:
            return self.after_training
        return None if self.head is None else self.trainable - self.head


# ------------------------------------------------------------------------------------------------------
# Reading runs
# ------------------------------------------------------------------------------------------------------

def _find_run_dirs(paths: Sequence[str | Path]) -> tuple[list[Path], list[Path]]:
    """(finished runs, unfinished runs) under ``paths``: folders with config.json, split by results.json."""
    done: list[Path] = []
    unfinished: list[Path] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.is_dir():
            raise ReportError(f"{path} is not a folder (pass run workdirs or folders holding them)")
        found = sorted({p.parent for p in path.rglob("config.json")} | ({path} if (path / "config.json").is_file()
                                                                         else set()))
        for run in found:
            if (run / "results.json").is_file():
                done.append(run)
            elif (run / "metrics.jsonl").is_file() or (run / "checkpoints").is_dir():
                unfinished.append(run)
    return list(dict.fromkeys(done)), list(dict.fromkeys(unfinished))


def method_label(cfg: dict[str, Any]) -> str:
    """``LoRA (r=8)``, ``full FT`` or ``head only`` (the paper's row names, roughly)."""
    method = cfg.get("method") or {}
    name = method.get("name", "lora")
    if name == "lora":
        targets = method.get("target_modules", ["query", "value"])
        where = "" if targets in (["query", "value"], ["value", "query"]) else \
            f", {'+'.join(targets) if isinstance(targets, list) else targets}"
        bias = {"all": "+BitFit", "lora_only": "+biases"}.get(method.get("bias", "none"), "")
        return f"LoRA{bias} (r={method.get('r', 8)}{where})"
    size, prefix = method.get("adapter_size", 64), method.get("prefix_length", 10)
    return {"full": "full FT", "head_only": "head only", "ft_top2": "FT-Top2", "bitfit": "BitFit",
            "adapter_houlsby": f"Adapter-H (m={size})", "adapter_pfeiffer": f"Adapter-P (m={size})",
            "prefix_embed": f"PreEmbed (l_p={prefix}, l_i={method.get('infix_length', 0)})",
            "prefix_layer": f"PreLayer (l_p={prefix})",
            "distill": f"Distillation ({method.get('student_layers') or 'all'} layers, "
                       f"T={method.get('temperature', 2.0):g})",
            "prune": f"Pruning (s={method.get('sparsity', 0.5):g}, {method.get('prune_schedule', 'one_shot')})",
            }.get(name, name)


def _checkpoint_counts(workdir: Path, pooling: str) -> tuple[int, int] | None:
    """(head, LoRA) parameter counts from the tensor names of the last checkpoint, or None."""
    from safetensors import safe_open

    from . import checkpoint as ckpt

    found = ckpt.list_checkpoints(workdir / "checkpoints")
    if not found:
        return None
    head = adapter = 0
    with safe_open(str(found[-1].path / ckpt.MODEL_FILE), framework="pt") as fh:
        for name in fh.keys():  # noqa: SIM118 - safe_open is not a dict
            n = math.prod(fh.get_slice(name).get_shape())
            if name.startswith("classifier.") or (pooling == "pooler" and ".pooler." in f".{name}"):
                head += n
            elif "lora_" in name:
                adapter += n
    return head, adapter


def _command(workdir: Path, cfg: dict[str, Any]) -> str:
    data = (cfg.get("data") or {}).get("dir")
    parts = ["python", "main.py", "--config", str(workdir / "config.json")]
    if data:
        parts += ["--data", str(data)]
    return shlex.join(parts + ["--workdir", str(workdir)])


def read_run(workdir: str | Path) -> RunRecord:
    """One finished run's record; ``ReportError`` names the missing or malformed file."""
    workdir = Path(workdir)
    try:
        cfg = json.loads((workdir / "config.json").read_text(encoding="utf-8"))
        res = json.loads((workdir / "results.json").read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ReportError(f"{err.filename}: missing; is {workdir} a finished lorakit run?") from None
    except ValueError as err:
        raise ReportError(f"{workdir}: config.json or results.json is not valid JSON ({err})") from None
    try:
        metric = res["main_metric"]
        value = (res.get("averaged") or {}).get("metrics", {}).get(metric)
        if value is None:
            value = res["final"][metric]
        params = res["parameters"]
        trainable, total = int(params["trainable"]), int(params["total"])
    except (KeyError, TypeError) as err:
        raise ReportError(f"{workdir / 'results.json'}: lacks {err} (written by another lorakit version?)") from None
    pooling = (cfg.get("model") or {}).get("pooling", "mean")
    counts = _checkpoint_counts(workdir, pooling)
    head = adapter = encoder = None
    if counts is not None:
        head, adapter = counts
        encoder = total - head - adapter
    if "inserted" in params and "head" in params:  # exact counts of the run (adapters and prefixes included)
        head, adapter = int(params["head"]), int(params["inserted"])
        encoder = total - head - adapter
    if "teacher_encoder" in params:  # method distill: the student is measured against the model it replaces
        encoder = int(params["teacher_encoder"])
    return RunRecord(
        workdir=workdir, task=str(res.get("task") or (cfg.get("task") or {}).get("name")),
        method=method_label(cfg), seed=int((cfg.get("training") or {}).get("seed", 0)), metric=metric,
        value=float("nan") if value is None else float(value), trainable=trainable, head=head,
        adapter=adapter, encoder=encoder, wall_time_s=res.get("wall_time_s"), steps=res.get("steps"),
        command=_command(workdir, cfg), after_training=params.get("after_training"),
        stored=params.get("stored_nonzero"),
        extra={"batch_size": (cfg.get("training") or {}).get("batch_size"),
               "max_length": (cfg.get("data") or {}).get("max_length"),
               "lr": (cfg.get("optimizer") or {}).get("lr")},
    )


def collect_runs(paths: Sequence[str | Path], warn=lambda msg: print(msg, file=sys.stderr)) -> list[RunRecord]:
    """Every finished run under ``paths`` (unfinished ones are named on ``warn`` and skipped)."""
    done, unfinished = _find_run_dirs(paths)
    for run in unfinished:
        warn(f"note: {run} has no results.json (still running or failed); skipped")
    if not done:
        raise ReportError(f"no finished run (a folder with config.json and results.json) under "
                          f"{', '.join(str(p) for p in paths)}")
    return _label_learning_rates([read_run(run) for run in done])


def _label_learning_rates(runs: list[RunRecord]) -> list[RunRecord]:
    """A method swept over learning rates (some task run at several) becomes one method row per rate:
    ``LoRA (r=8), lr 0.0005``. A method with one rate per task (tuned per task, or not at all) keeps its
    plain label; a run whose config names no rate is labelled ``lr ?``."""
    rates: dict[tuple[str, str], set] = {}
    for r in runs:
        rates.setdefault((r.method, r.task), set()).add(r.extra.get("lr"))
    swept = {method for (method, _task), seen in rates.items() if len(seen) > 1}
    for r in runs:
        if r.method in swept:
            lr = r.extra.get("lr")
            r.method = f"{r.method}, lr {'?' if lr is None else format(lr, 'g')}"
    return runs


# ------------------------------------------------------------------------------------------------------
# Summarising
# ------------------------------------------------------------------------------------------------------

@dataclass
class Cell:
    """One method x task group: the per-seed values (display scale) and their summary."""

    values: list[float]
    metric: str

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0


@dataclass
class Summary:
    tasks: list[str]
    methods: list[str]
    cells: dict[tuple[str, str], Cell]
    runs: list[RunRecord]
    scale: dict[str, float]  # task -> factor applied to its values (100 for fractions)


def _task_scale(values: list[float]) -> float:
    """Fractions (every value in [-1, 1]) are shown in percent like the paper; others as they are."""
    finite = [v for v in values if math.isfinite(v)]
    return 100.0 if finite and all(-1.0 <= v <= 1.0 for v in finite) else 1.0


_TASK_ORDER = ("mnli", "sst2", "mrpc", "cola", "qnli", "qqp", "rte", "stsb", "squad", "squad_v2")


def summarise(runs: Sequence[RunRecord]) -> Summary:
    """Group runs by (method, task); tasks in the paper's column order, then alphabetically."""
    tasks = sorted({r.task for r in runs}, key=lambda t: (_TASK_ORDER.index(t) if t in _TASK_ORDER else 99, t))
    methods = sorted({r.method for r in runs}, key=lambda m: (not m.startswith("full"), m))
    scale = {t: _task_scale([r.value for r in runs if r.task == t]) for t in tasks}
    cells: dict[tuple[str, str], Cell] = {}
    for r in runs:
        key = (r.method, r.task)
        cell = cells.setdefault(key, Cell([], r.metric))
        if cell.metric != r.metric:
            raise ReportError(f"task {r.task!r}, {r.method}: runs report different main metrics "
                              f"({cell.metric!r} and {r.metric!r} in {r.workdir}); set evaluation.metric alike")
        cell.values.append(r.value * scale[r.task])
    return Summary(tasks, methods, cells, list(runs), scale)


def _fmt_count(n: int | None) -> str:
    if n is None:
        return "n/a"
    for unit, size in (("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.{2 if abs(n) < 10 * size else 1}f}{unit}"
    return str(n)


def _fmt_cell(cell: Cell | None) -> str:
    if cell is None:
        return "–"
    if len(cell.values) == 1:
        return f"{cell.values[0]:.1f}"
    return f"**{cell.median:.1f}** ({cell.mean:.1f} ± {cell.std:.1f}, n={len(cell.values)})"


def _method_params(runs: list[RunRecord]) -> tuple[str, str, str]:
    """(without head, with head, % of encoder) over a method's runs; a range when tasks differ."""

    def span(values: list[int | None]) -> str:
        known = sorted({v for v in values if v is not None})
        if not known:
            return "n/a"
        low, high = _fmt_count(known[0]), _fmt_count(known[-1])
        return low if low == high else f"{low}–{high}"

    pct = sorted({round(100.0 * r.trainable_without_head / r.encoder, 3) for r in runs
                  if r.trainable_without_head is not None and r.encoder})
    pct_text = "n/a" if not pct else (f"{pct[0]:g}%" if len(pct) == 1 else f"{pct[0]:g}–{pct[-1]:g}%")
    return span([r.trainable_without_head for r in runs]), span([r.trainable for r in runs]), pct_text


def markdown_report(summary: Summary) -> str:
    """The summary table (method x task) and the per-run table, as Markdown."""
    metric_of = {t: next(c.metric for (m, tt), c in summary.cells.items() if tt == t) for t in summary.tasks}
    head = ["method", "trainable (no head)", "trainable (with head)", "% of encoder",
            *[f"{t} ({metric_of[t]})" for t in summary.tasks], "Avg."]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method in summary.methods:
        runs = [r for r in summary.runs if r.method == method]
        cells = [summary.cells.get((method, t)) for t in summary.tasks]
        avg = statistics.fmean(c.median for c in cells) if all(cells) else None
        row = [method, *_method_params(runs), *[_fmt_cell(c) for c in cells],
               "–" if avg is None else f"{avg:.1f}"]
        lines.append("| " + " | ".join(row) + " |")
    scaled = [t for t in summary.tasks if summary.scale[t] != 1.0]
    notes = ["", "Cells: the dev metric over seeds; with several seeds **median** (mean ± sample std, n seeds). "
             "Avg.: mean of the per-task medians (only for a method with every task)."]
    if scaled:
        notes.append(f"Metrics of {', '.join(scaled)} are fractions in the run files, shown ×100.")
    lines += notes
    lines += ["", "| task | method | seed | metric | dev | trainable (with head) | trainable (no head) | stored "
              "(non-zero) | steps | wall time | command |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(summary.runs, key=lambda r: (summary.tasks.index(r.task), summary.methods.index(r.method),
                                                   r.seed)):
        wall = "n/a" if r.wall_time_s is None else f"{r.wall_time_s / 60:.1f} min"
        no_head = "n/a" if r.trainable_without_head is None else f"{r.trainable_without_head:,}"
        stored = "n/a" if r.stored is None else f"{r.stored:,}"
        lines.append(f"| {r.task} | {r.method} | {r.seed} | {r.metric} | {r.value * summary.scale[r.task]:.2f} | "
                     f"{r.trainable:,} | {no_head} | {stored} | {r.steps} | {wall} | `{r.command}` |")
    return "\n".join(lines) + "\n"


def plot_report(summary: Summary, path: str | Path) -> Path | None:
    """Grouped bars (median per method and task, sample std as error bars, one dot per seed) as a PNG.

    Returns the path, or None when matplotlib is not installed (a note is printed).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("note: matplotlib is not installed; no figure (pip install matplotlib)", file=sys.stderr)
        return None
    path = Path(path)
    n_tasks, n_methods = len(summary.tasks), len(summary.methods)
    width = 0.8 / max(n_methods, 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * n_tasks + 2) + 2.2, 3.8))  # + room for the legend
    for j, method in enumerate(summary.methods):
        xs, med, err = [], [], []
        for i, task in enumerate(summary.tasks):
            cell = summary.cells.get((method, task))
            if cell is None:
                continue
            x = i + (j - (n_methods - 1) / 2) * width
            xs.append(x)
            med.append(cell.median)
            err.append(cell.std)
            ax.scatter([x] * len(cell.values), cell.values, color="black", s=8, zorder=3)
        ax.bar(xs, med, width=width * 0.95, yerr=err, capsize=3, label=method)
    ax.set_xticks(range(n_tasks))
    ax.set_xticklabels([f"{t}\n({next(c.metric for (m, tt), c in summary.cells.items() if tt == t)})"
                        for t in summary.tasks])
    ax.set_ylabel("dev metric (×100 for fractions)")
    ax.set_title("dev metric by task and method\nbars: median over seeds, whiskers: std, dots: single seeds",
                 fontsize=9)
    ax.axhline(0, color="gray", linewidth=0.5)
    # beside the axes, so that it never hides a bar (a sweep has many method rows)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
    return path


# ------------------------------------------------------------------------------------------------------
# Command line
# ------------------------------------------------------------------------------------------------------

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
        atomic_write(out_dir / "loss.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
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
        atomic_write(out_dir / "metrics.png", lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
        plt.close(fig)
        written.append(out_dir / "metrics.png")
    return written


def main(argv: list[str] | None = None) -> int:
    """``lorakit report WORKDIR... [--out DIR]``; exit status 0, 1 (unreadable runs) or 2 (usage)."""
    parser = argparse.ArgumentParser(
        prog="lorakit report",
        description="Summarise finished runs as a method x task table (Markdown on stdout; --out adds "
                    "report.md and report.png).")
    parser.add_argument("workdirs", nargs="+", help="run workdirs, or folders searched for them")
    parser.add_argument("--out", help="folder for report.md and report.png")
    args = parser.parse_args(argv)
    try:
        summary = summarise(collect_runs(args.workdirs))
    except ReportError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    text = markdown_report(summary)
    print(text, end="")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "report.md", text)
        png = plot_report(summary, out / "report.png")
        print(f"\nwrote {out / 'report.md'}" + (f" and {png}" if png else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
