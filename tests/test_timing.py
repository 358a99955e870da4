"""lorakit.timing: the interleaved timer shared by ``lorakit inspect --latency`` and ``bench/``."""

import time

import pytest
import torch
from torch import nn

from lorakit.timing import Case, Timings, compare_to_base, forward_timings, interleaved_timings


def test_every_round_calls_every_variant_once_starting_from_a_rotated_one():
    calls: list[str] = []
    cases = {name: Case(run=lambda name=name: calls.append(name)) for name in "abc"}
    t = interleaved_timings(cases, repeats=4, warmup=2)
    rounds = [calls[i : i + 3] for i in range(0, len(calls), 3)]
    assert len(rounds) == 2 + 4
    assert all(sorted(r) == ["a", "b", "c"] for r in rounds)
    assert [r[0] for r in rounds[2:]] == ["a", "b", "c", "a"]  # timed rounds rotate the starting variant
    assert set(t.samples) == {"a", "b", "c"} and all(len(s) == 4 for s in t.samples.values())


def test_a_slower_variant_measures_slower_in_seconds():
    cases = {"slow": Case(run=lambda: time.sleep(0.020)), "fast": Case(run=lambda: time.sleep(0.001))}
    t = interleaved_timings(cases, repeats=5, warmup=1)
    assert t.median("slow") >= 0.019  # seconds; a sleep never returns early
    assert t.median("slow") > t.median("fast")
    assert t.ratio("slow", "fast") > 1.0 and t.ratio("fast", "slow") < 1.0


def test_reset_runs_before_every_call_and_is_not_timed():
    resets: list[int] = []
    case = Case(run=lambda: None, reset=lambda: (resets.append(1), time.sleep(0.030)))
    t = interleaved_timings({"x": case}, repeats=3, warmup=1, inner=2)
    assert len(resets) == (1 + 3) * 2
    assert t.median("x") < 0.015


def test_ratios_are_paired_per_round():
    t = Timings({"a": [2.0, 4.0, 30.0], "b": [1.0, 2.0, 10.0]})
    assert t.ratio("a", "b") == 2.0  # per-round ratios 2, 2, 3; not the ratio of the medians (4 / 2)
    assert t.ratio_shown("a", "b") == (2.0, "2.000")  # quartiles only from 4 rounds on
    with pytest.raises(ValueError, match="equal lengths"):
        Timings({"a": [1.0], "b": [1.0, 2.0]}).ratio("a", "b")
    with pytest.raises(ValueError, match="repeats"):
        interleaved_timings({"a": Case(run=lambda: None)}, repeats=0)


class _Toy(nn.Module):
    def __init__(self, sleep: float):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.sleep = sleep
        self.seen: list[tuple] = []

    def forward(self, input_ids, attention_mask):
        self.seen.append((tuple(input_ids.shape), torch.is_grad_enabled(), bool(attention_mask.all())))
        time.sleep(self.sleep)
        return self.emb(input_ids)


def test_forward_timings_give_every_model_the_same_batch_without_grad():
    base, method = _Toy(0.001), _Toy(0.020)
    t = forward_timings({"base": base, "method": method}, batch_size=2, seq_len=5, vocab_size=10, rounds=4, warmup=1)
    assert base.seen == method.seen == [((2, 5), False, True)] * 5
    row = compare_to_base(t, "method")
    assert row["method_ms"] >= 19 and row["ratio"] > 1.0 and row["overhead_pct"] > 0
    assert row["ratio_q1"] <= row["ratio"] <= row["ratio_q3"]
