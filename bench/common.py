"""Helpers shared by the benchmarks in ``bench/``: timing, memory, tables, machine description, publishing.

Conventions every benchmark follows (so that numbers from a shared, noisy machine stay comparable):

* variants that are compared with each other are timed **interleaved in one process**: each round
  runs every variant once, in an order rotated from round to round, after interleaved warm-up
  rounds (:func:`interleaved_timings`, from :mod:`lorakit.timing`, which ``lorakit inspect
  --latency`` uses too);
* results are reported as **medians**, and comparisons as the median over rounds of the ratio of two
  variants timed in the same round (a paired ratio, robust to load that changes between rounds);
* memory on CPU is the bytes the autograd graph keeps alive between forward and backward
  (:func:`autograd_graph_bytes`); on CUDA it is the peak allocation during forward + backward above
  what was allocated before (:func:`cuda_peak_bytes`).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.metadata
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

# The interleaved timer lives in the package (``lorakit inspect --latency`` uses it too); the benchmarks
# reach it as ``common.Case``, ``common.interleaved_timings`` ...
from lorakit.timing import Case, Timings, interleaved_timings, paired_ratios, synchronize  # noqa: F401

# ---------------------------------------------------------------------------------------------
# machine description
# ---------------------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or ``platform.processor()`` elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown CPU"
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else (platform.processor() or "unknown CPU")


def _version(distribution: str) -> str:
    """The installed version of a distribution (``importlib.metadata``), or ``not installed``."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def describe_machine(device: torch.device | str = "cpu", packages: Sequence[str] = ()) -> str:
    """One line naming the hardware and software a benchmark ran on.

    ``packages``: extra distribution names whose versions are listed after torch's.
    """
    device = torch.device(device)
    cores = os.cpu_count()
    parts = [f"CPU: {cpu_model()}, {cores} cores, torch threads {torch.get_num_threads()}"]
    if device.type == "cuda":
        parts.append(f"GPU: {torch.cuda.get_device_name(device)}")
    parts.append(f"Python {platform.python_version()}, torch {torch.__version__}")
    parts.extend(f"{name} {_version(name)}" for name in packages)
    return "; ".join(parts)


def git_revision(paths: Sequence[str] = ("src",), cwd: Path | str | None = None) -> str:
    """The checkout's short commit hash, plus ``(modified: ...)`` when ``paths`` differ from it.

    Benchmarks record it so that a result can be traced to the code it measured; ``unknown`` outside
    a git checkout.
    """

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, check=True, timeout=30
        ).stdout.rstrip()  # not strip(): porcelain lines start with a status column that may be a space

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", *paths)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not dirty:
        return head
    changed = ", ".join(line[3:] for line in dirty.splitlines())
    return f"{head} (modified: {changed})"


def load_average() -> float:
    """The 1-minute load average (``nan`` where the OS does not report one).

    Benchmarks print it before and after a run: a value near or above the core count means other
    processes competed for the CPU and the absolute times (less so the paired ratios) are inflated.
    """
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def today() -> str:
    """The date in ISO format (YYYY-MM-DD), for result records."""
    return _dt.date.today().isoformat()


# ---------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------


def _storage_key(t: Tensor) -> tuple[str, int]:
    return (str(t.device), t.untyped_storage().data_ptr())


@dataclass
class GraphMemory:
    """What an autograd graph keeps alive: total bytes and one line per counted storage."""

    total_bytes: int
    items: list[str]


def autograd_graph_bytes(
    forward: Callable[[], Tensor],
    exclude: Iterable[Tensor] = (),
    labels: Mapping[str, Tensor] | None = None,
) -> GraphMemory:
    """Bytes kept alive between forward and backward by the graph that ``forward()`` builds.

    Counts each distinct storage once (views share their base's storage): every tensor the autograd
    graph saves for backward (seen through ``torch.autograd.graph.saved_tensors_hooks``; this includes
    custom ``autograd.Function``'s ``save_for_backward``) plus the output. Storages of the tensors in
    ``exclude`` are not counted (pass the module's parameters and buffers, which exist whether or not
    a graph is built). Tensors that the graph does not save, e.g. a dropout mask regenerated in
    backward, are not counted; neither are temporaries freed during forward (this is not the
    transient peak). ``labels`` names known tensors (e.g. ``{"input x": x}``) in the item list;
    the others are listed as ``saved`` or ``output``.
    """
    excluded = {_storage_key(t) for t in exclude}
    known = {_storage_key(t): name for name, t in (labels or {}).items()}
    counted: dict[tuple[str, int], str] = {}
    sizes: dict[tuple[str, int], int] = {}

    def describe(t: Tensor, what: str) -> str:
        return f"{what} {tuple(t.shape)} {str(t.dtype).removeprefix('torch.')}"

    def pack(t: Tensor) -> Tensor:
        key = _storage_key(t)
        if key not in excluded and key not in counted:
            counted[key] = describe(t, f"saved {known[key]}" if key in known else "saved")
            sizes[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = forward()
    key = _storage_key(out)
    if key not in excluded and key not in counted:
        counted[key] = describe(out, "output")
        sizes[key] = out.untyped_storage().nbytes()
    items = [f"{counted[k]}: {format_bytes(sizes[k])}" for k in counted]
    total = sum(sizes.values())
    del out
    return GraphMemory(total, items)


def cuda_peak_bytes(step: Callable[[], object], device: torch.device | str = "cuda") -> int:
    """Peak CUDA bytes allocated while ``step()`` runs, above what was allocated before it."""
    device = torch.device(device)
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    step()
    synchronize(device)
    return torch.cuda.max_memory_allocated(device) - base


def proc_status_kib(field: str) -> int:
    """A field of /proc/self/status in KiB (``VmRSS``: resident now, ``VmHWM``: its peak); Linux only,
    RuntimeError elsewhere or when the field is missing."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError as err:
        raise RuntimeError(f"/proc/self/status is not readable ({err}): peak RSS is measured on Linux") from err
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak_rss() -> None:
    """Reset the kernel's RSS high-water mark ``VmHWM`` to the current RSS (Linux; OSError elsewhere)."""
    Path("/proc/self/clear_refs").write_text("5")


def tensors_bytes(tensors: Iterable[Tensor | None]) -> int:
    """Sum of the distinct storages' sizes of ``tensors`` (None entries are skipped)."""
    seen: dict[tuple[str, int], int] = {}
    for t in tensors:
        if t is not None:
            seen[_storage_key(t)] = t.untyped_storage().nbytes()
    return sum(seen.values())


def format_bytes(n: float) -> str:
    """Human-readable binary size: ``3.00 MiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


# ---------------------------------------------------------------------------------------------
# reporting
# ---------------------------------------------------------------------------------------------


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[object]], align: str = "") -> str:
    """A GitHub Markdown table. ``align``: one of l/r/c per column (default: left first, right rest)."""
    headers = [str(h) for h in headers]
    if not align:
        align = "l" + "r" * (len(headers) - 1)
    if len(align) != len(headers):
        raise ValueError(f"align has {len(align)} letters for {len(headers)} columns")
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(marks[a] for a in align) + "|"]
    for row in rows:
        cells = [str(c) for c in row]
        if len(cells) != len(headers):
            raise ValueError(f"row has {len(cells)} cells for {len(headers)} columns: {cells}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(value: float, limit: float) -> str:
    """``PASS`` when ``value <= limit`` else ``MISS``."""
    return "PASS" if value <= limit else "MISS"


BENCHMARKS_INTRO = """\
# Benchmarks

One `## ` section per benchmark script in `bench/`, each with the exact command, the machine, the
date and the results. Comparisons are always measured interleaved in one process and reported as
ratios (the machines these run on are shared, so absolute times drift). Shared helpers:
`bench/common.py`.

"""


def add_update_md_argument(ap: argparse.ArgumentParser) -> None:
    """Add ``--update-md [PATH]`` (``args.update_md``: None, or the file for :func:`publish_section`)."""
    ap.add_argument(
        "--update-md",
        nargs="?",
        const="BENCHMARKS.md",
        default=None,
        metavar="PATH",
        help="write the results as this script's section of PATH (default BENCHMARKS.md)",
    )


def command_line(module: str, argv: Sequence[str] | None = None) -> str:
    """The command that reruns a benchmark: ``python -m {module}`` and its arguments, shell-quoted.

    ``argv``: the arguments as passed to the script's ``main`` (``sys.argv[1:]`` when None).
    """
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m " + module, *map(shlex.quote, args)])


def publish_section(
    title: str,
    body: str,
    update_md: Path | str | None,
    out: Callable[[str], object] = print,
    device: torch.device | str = "cpu",
) -> int:
    """Print ``## {title}`` and ``body`` through ``out``; with ``update_md``, also write them as that
    section of the Markdown file (:func:`replace_markdown_section`; a new file starts with
    :data:`BENCHMARKS_INTRO`). A run on a GPU gets its own section: ``", GPU"`` is added to the title,
    so CPU and GPU results stand side by side. Returns 0, the benchmark's exit status."""
    if torch.device(device).type == "cuda":
        title += ", GPU"
    out(f"## {title}\n\n{body}")
    if update_md:
        replace_markdown_section(update_md, title, body, intro=BENCHMARKS_INTRO)
        print(f"updated {update_md}", file=sys.stderr)
    return 0


def progress_logger() -> Callable[[str], None]:
    """A ``log(msg)`` that prints ``[  12.3 s] msg`` (seconds since this call) to stderr."""
    started = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {msg}", file=sys.stderr, flush=True)

    return log


def replace_markdown_section(path: Path | str, title: str, body: str, intro: str = "") -> None:
    """Write ``## {title}`` followed by ``body`` into the Markdown file at ``path``.

    The section runs from its ``## `` heading to the next ``## `` heading (or the end); an existing
    section with the same title is replaced in place, otherwise the section is appended. Other
    sections are left byte-for-byte unchanged. A missing file is created starting with ``intro``.
    """
    path = Path(path)
    text = path.read_text() if path.exists() else intro
    heading = f"## {title}"
    section = f"{heading}\n\n{body.strip()}\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        sep = "" if not text or text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        path.write_text(text + sep + section)
        return
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    tail = "".join(lines[end:])
    path.write_text("".join(lines[:start]) + section + ("\n" + tail if tail else ""))
