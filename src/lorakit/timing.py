"""Interleaved timing: compare variants on a shared, noisy machine. All times are in **seconds**.

Variants compared with each other are timed in one process, **interleaved**: each round calls every
variant once, starting from a variant that rotates from round to round (so none always runs right after
the same neighbour), after untimed warm-up rounds. Load that comes and goes then slows every variant
alike, and the comparison is the median over rounds of the per-round ratio (a paired ratio), with its
interquartile range. Timing variants one after another instead lets a burst of load land on one of them.

Used by ``lorakit inspect --latency`` (:func:`forward_timings`) and by the benchmarks in ``bench/``
(through ``bench.common``).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["Case", "Timings", "interleaved_timings", "paired_ratios", "synchronize", "forward_timings",
           "compare_to_base"]


def synchronize(device: torch.device | str) -> None:
    """Wait for queued kernels on ``device`` (a no-op on CPU)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Case:
    """One variant to time: ``run`` is timed; ``reset`` (untimed) runs before every call of ``run``."""

    run: Callable[[], object]
    reset: Callable[[], object] | None = None


@dataclass
class Timings:
    """Seconds per call of every case, one entry per round (rounds are aligned across cases)."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def median(self, name: str) -> float:
        """Median seconds per call of ``name``."""
        return statistics.median(self.samples[name])

    def spread(self, name: str) -> float:
        """Interquartile range over median of ``name``'s times: ~0.01-0.03 on an idle machine.

        A large value flags rounds slowed down by other processes (the medians and paired ratios
        are then less trustworthy).
        """
        q = statistics.quantiles(self.samples[name], n=4)
        return (q[2] - q[0]) / q[1]

    def ratio(self, num: str, den: str) -> float:
        """Median over rounds of time(num) / time(den), both timed in the same round."""
        return statistics.median(paired_ratios(self.samples[num], self.samples[den]))

    def ratio_quartiles(self, num: str, den: str) -> tuple[float, float]:
        """The 25th and 75th percentiles of the per-round ratio time(num) / time(den)."""
        q = statistics.quantiles(paired_ratios(self.samples[num], self.samples[den]), n=4)
        return q[0], q[2]

    def ratio_shown(self, num: str, den: str) -> tuple[float, str]:
        """The median ratio and its text, "1.234 (1.10–1.30)" with the interquartile range.

        With fewer than 4 rounds the quartiles would be extrapolated, so only the median is shown.
        """
        value = self.ratio(num, den)
        if len(self.samples[num]) >= 4:
            lo, hi = self.ratio_quartiles(num, den)
            return value, f"{value:.3f} ({lo:.2f}–{hi:.2f})"
        return value, f"{value:.3f}"


def paired_ratios(num: Sequence[float], den: Sequence[float]) -> list[float]:
    """Element-wise num[i] / den[i] for two equally long sequences of per-round timings."""
    if len(num) != len(den):
        raise ValueError(f"paired timings must have equal lengths, got {len(num)} and {len(den)}")
    return [a / b for a, b in zip(num, den, strict=True)]


def interleaved_timings(
    cases: Mapping[str, Case],
    repeats: int,
    warmup: int = 3,
    device: torch.device | str = "cpu",
    inner: int = 1,
) -> Timings:
    """Time every case ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Each round calls every case once, starting from a case that rotates from round to round so that
    no variant always runs right after the same neighbour. ``inner`` > 1 times that many back-to-back
    calls per sample (for calls too short for the timer) and divides. Python's garbage collector is
    off while timing; ``device`` is synchronized around every timed call. Returns seconds per call,
    ``repeats`` samples per case.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = list(cases)
    timings = Timings({name: [] for name in names})

    def one_round(round_index: int, record: bool) -> None:
        start = round_index % len(names)
        for name in names[start:] + names[:start]:
            case = cases[name]
            elapsed = 0.0
            for _ in range(inner):
                if case.reset is not None:
                    case.reset()
                synchronize(device)
                t0 = time.perf_counter()
                case.run()
                synchronize(device)
                elapsed += time.perf_counter() - t0
            if record:
                timings.samples[name].append(elapsed / inner)

    for i in range(warmup):
        one_round(i, record=False)
    gc.collect()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(repeats):
            one_round(i, record=True)
    finally:
        if was_enabled:
            gc.enable()
    return timings


def forward_timings(
    models: Mapping[str, nn.Module], batch_size: int, seq_len: int, vocab_size: int, rounds: int, warmup: int = 3
) -> Timings:
    """Seconds per forward pass of each model, the models timed interleaved (:func:`interleaved_timings`).

    One call is ``model(input_ids=ids, attention_mask=ones)`` under ``torch.no_grad()``, every model on
    the same random ids ``(batch_size, seq_len)`` in ``[0, vocab_size)`` (seed 0), on the device of the
    first model's parameters. The models run in the mode they are in (``eval()`` them for inference).
    """
    first = next(iter(models.values()))
    device = next(first.parameters()).device
    ids = torch.randint(0, vocab_size, (batch_size, seq_len), generator=torch.Generator().manual_seed(0)).to(device)
    mask = torch.ones_like(ids)
    cases = {name: Case(run=lambda m=m: m(input_ids=ids, attention_mask=mask)) for name, m in models.items()}
    with torch.no_grad():
        return interleaved_timings(cases, repeats=rounds, warmup=warmup, device=device)


def compare_to_base(timings: Timings, name: str, base: str = "base") -> dict[str, Any]:
    """``name`` against ``base`` from the same rounds: medians in ms (``base_ms``, ``method_ms``), the
    median per-round ratio time(name) / time(base) (``ratio``), its quartiles (``ratio_q1``,
    ``ratio_q3``; None below 4 rounds) and ``overhead_pct`` = 100 * (ratio - 1)."""
    ratio = timings.ratio(name, base)
    q1, q3 = timings.ratio_quartiles(name, base) if len(timings.samples[name]) >= 4 else (None, None)
    return {"base_ms": 1000 * timings.median(base), "method_ms": 1000 * timings.median(name), "ratio": ratio,
            "ratio_q1": q1, "ratio_q3": q3, "overhead_pct": 100.0 * (ratio - 1.0)}
