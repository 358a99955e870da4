"""One training step of a small GPT-2: full fine-tuning vs PEFT LoRA vs lorakit LoRA, plus inference.

Run from the repository root::

    python -m bench.train_step                  # the full benchmark (10 timed steps per variant)
    python -m bench.train_step --steps 5        # fewer timed steps
    python -m bench.train_step --quick          # smoke run: small model, 2 steps (~30 s idle; numbers meaningless)
    python -m bench.train_step --update-md      # also write the results into BENCHMARKS.md
    python -m bench.train_step --profile lorakit-all-linear peft-all-linear   # torch.profiler top ops
    python -m bench.train_step --memory-only lorakit-all-linear               # one memory measurement (JSON)
    python -m bench.train_step --device cuda    # on a GPU (memory = torch.cuda.max_memory_allocated)

Model: a randomly initialised ``GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=512, n_head=8))``
(vocabulary 50257, default dropout 0.1 everywhere, tied LM head), a batch of 8 x 128 random token
ids, the LM loss (labels = input ids) and ``torch.optim.AdamW`` over the trainable parameters only.

Training variants (one timed call = ``loss = model(ids, labels=ids).loss; loss.backward(); opt.step()``,
with ``opt.zero_grad(set_to_none=True)`` untimed before it), all in train mode:

* ``full``: full fine-tuning, every parameter trainable;
* ``{peft,lorakit}-c_attn``: LoRA r=8, alpha=16 on the fused attention projection ``c_attn`` only;
* ``{peft,lorakit}-all-linear``: LoRA on every linear layer (``target_modules="all-linear"``; in GPT-2
  these are transformers' ``Conv1D``; the tied LM head is excluded by both libraries);
* ``{peft,lorakit}-all-linear-dropout``: the same with ``lora_dropout=0.1``.

Inference variants (``model(ids).logits`` under ``torch.no_grad()``, eval mode): the base model,
lorakit all-linear unmerged, lorakit all-linear merged (``lorakit.merge``), PEFT all-linear unmerged.

Timing: the variants of each group are timed interleaved in one process (round-robin, order rotated
every round, after warm-up rounds; ``bench/common.py``); times are medians and ratios the median of
per-round ratios. Memory: one subprocess per variant (``--memory-only``); see :data:`MEMORY_NOTE`.
Before timing, each lorakit / PEFT pair is given identical LoRA weights (B non-zero) and checked to
give the same loss (and, for all-linear, the same LoRA gradients).
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import resource
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

import lorakit

from . import common

SECTION_TITLE = "Training step: GPT-2 (bench/train_step.py)"
REPO_ROOT = Path(__file__).resolve().parents[1]
MEMORY_TAG = "MEMORY_JSON "

LORA_R = 8
LORA_ALPHA = 16
LR = 1e-4

# Targets from the project issue.
TARGET_TIME = 0.90  # training step lorakit / PEFT, no dropout
TARGET_TIME_DROPOUT = 0.85  # training step lorakit / PEFT, lora_dropout 0.1
TARGET_MEMORY = 0.90  # peak training memory lorakit / PEFT
TARGET_UNMERGED = 1.03  # lorakit unmerged inference / base
TARGET_MERGED = 1.02  # lorakit merged inference / base ("equal within noise")


@dataclass(frozen=True)
class Variant:
    """One training configuration: ``library`` is full/peft/lorakit; ``target`` c_attn or all-linear."""

    name: str
    library: str
    target: str | None = None
    dropout: float = 0.0

    @property
    def config_label(self) -> str:
        """The LoRA configuration without the library, e.g. ``all-linear, dropout 0.1``."""
        if self.target is None:
            return "full fine-tuning"
        return f"{self.target}, dropout {self.dropout:g}"


TRAIN_VARIANTS: tuple[Variant, ...] = (
    Variant("full", "full"),
    Variant("peft-c_attn", "peft", "c_attn"),
    Variant("lorakit-c_attn", "lorakit", "c_attn"),
    Variant("peft-all-linear", "peft", "all-linear"),
    Variant("lorakit-all-linear", "lorakit", "all-linear"),
    Variant("peft-all-linear-dropout", "peft", "all-linear", 0.1),
    Variant("lorakit-all-linear-dropout", "lorakit", "all-linear", 0.1),
)
VARIANTS_BY_NAME = {v.name: v for v in TRAIN_VARIANTS}
# (lorakit variant, PEFT variant, time target) for each LoRA configuration.
PAIRS: tuple[tuple[str, str, float], ...] = (
    ("lorakit-c_attn", "peft-c_attn", TARGET_TIME),
    ("lorakit-all-linear", "peft-all-linear", TARGET_TIME),
    ("lorakit-all-linear-dropout", "peft-all-linear-dropout", TARGET_TIME_DROPOUT),
)
INFERENCE_VARIANTS = ("base", "lorakit-unmerged", "lorakit-merged", "peft-unmerged")


@dataclass(frozen=True)
class Size:
    """Model depth and batch shape."""

    n_layer: int
    batch: int
    seq: int
    n_embd: int = 512
    n_head: int = 8
    vocab: int = 50257


FULL_SIZE = Size(n_layer=6, batch=8, seq=128)
# Smoke mode only: small enough to run everything, subprocesses included, in well under a minute.
QUICK_SIZE = Size(n_layer=2, batch=2, seq=64, n_embd=256, n_head=4, vocab=8192)


# ============================================================================ building
def build_base(size: Size) -> nn.Module:
    """The randomly initialised GPT-2 LM (seeded, so every process builds the same weights)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    special = min(50256, size.vocab - 1)  # GPT-2's <|endoftext|>, kept inside a smaller smoke-test vocabulary
    config = GPT2Config(
        n_layer=size.n_layer,
        n_embd=size.n_embd,
        n_head=size.n_head,
        vocab_size=size.vocab,
        bos_token_id=special,
        eos_token_id=special,
    )
    return GPT2LMHeadModel(config)


def make_batch(size: Size, device: torch.device | str = "cpu") -> Tensor:
    """Random token ids (batch, seq) on ``device``, the same in every process."""
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, size.vocab, (size.batch, size.seq), generator=gen).to(device)


def _targets(target: str) -> list[str] | str:
    return "all-linear" if target == "all-linear" else [target]


def adapt(base: nn.Module, variant: Variant) -> nn.Module:
    """A copy of ``base`` adapted for ``variant`` (the copy is a fresh module; ``base`` is untouched)."""
    model = copy.deepcopy(base)
    if variant.library == "full":
        model.requires_grad_(True)
    elif variant.library == "lorakit":
        config = lorakit.LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=_targets(variant.target), lora_dropout=variant.dropout
        )
        lorakit.inject(model, config)
    elif variant.library == "peft":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # fan_in_fan_out notices for Conv1D
            from peft import LoraConfig, get_peft_model

            config = LoraConfig(
                r=LORA_R,
                lora_alpha=LORA_ALPHA,
                target_modules=_targets(variant.target),
                lora_dropout=variant.dropout,
                fan_in_fan_out=True,  # GPT-2's Conv1D stores its weight (in, out)
                bias="none",
            )
            model = get_peft_model(model, config)
    else:
        raise ValueError(f"unknown library {variant.library!r}")
    device = next(base.parameters()).device
    model.to(device).train()  # LoRA parameters on the base model's device
    return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    """The parameters with ``requires_grad`` (deduplicated, so the tied LM head counts once)."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: nn.Module) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters only."""
    return torch.optim.AdamW(trainable(model), lr=LR)


def lm_loss(model: nn.Module, ids: Tensor) -> Tensor:
    """The causal LM loss with labels = input ids."""
    return model(input_ids=ids, labels=ids).loss


def train_step(model: nn.Module, ids: Tensor, opt: torch.optim.Optimizer) -> None:
    """Forward, backward and one optimizer step (gradients must have been cleared before)."""
    lm_loss(model, ids).backward()
    opt.step()


# ============================================================================ correctness
def lora_tensors(model: nn.Module) -> dict[str, Tensor]:
    """LoRA parameters keyed by lorakit's names (PEFT's ``base_model.model.`` and ``.weight`` removed)."""
    out = {}
    for name, param in model.named_parameters():
        if ".lora_A." in name or ".lora_B." in name:
            key = name.removeprefix("base_model.model.").removesuffix(".weight")
            out[key] = param
    return out


def share_lora_weights(lk_model: nn.Module, peft_model: nn.Module, seed: int = 2) -> None:
    """Give both models the same random LoRA weights (B non-zero, so the adapters change the output)."""
    lk, pf = lora_tensors(lk_model), lora_tensors(peft_model)
    if sorted(lk) != sorted(pf):
        missing = sorted(set(lk) ^ set(pf))[:6]
        raise RuntimeError(f"lorakit and PEFT adapted different modules; differing keys include {missing}")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key in sorted(lk):
            if lk[key].shape != pf[key].shape:
                raise RuntimeError(f"{key}: lorakit shape {tuple(lk[key].shape)} vs PEFT {tuple(pf[key].shape)}")
            value = torch.randn(lk[key].shape, generator=gen) * 0.02  # drawn on the CPU: the same on any device
            lk[key].copy_(value)
            pf[key].copy_(value)


def check_same_loss(lk_model: nn.Module, peft_model: nn.Module, ids: Tensor, grads: bool) -> str:
    """Eval-mode loss (and optionally LoRA gradients) of the two models must agree. Returns a summary line."""
    results = []
    for model in (lk_model, peft_model):
        model.eval()
        model.zero_grad(set_to_none=True)
        if grads:
            loss = lm_loss(model, ids)
            loss.backward()
            g = {k: p.grad.detach().clone() for k, p in lora_tensors(model).items()}
        else:
            with torch.no_grad():
                loss = lm_loss(model, ids)
            g = {}
        results.append((loss.detach(), g))
        model.zero_grad(set_to_none=True)
        model.train()
    (loss_lk, g_lk), (loss_pf, g_pf) = results
    if not torch.allclose(loss_lk, loss_pf, rtol=1e-5, atol=1e-5):
        raise RuntimeError(f"lorakit loss {loss_lk.item():.6f} != PEFT loss {loss_pf.item():.6f}")
    worst = 0.0
    for key, a in g_lk.items():
        b = g_pf[key]
        if not torch.allclose(a, b, rtol=1e-3, atol=1e-6):
            raise RuntimeError(f"LoRA gradient {key} differs: max abs error {(a - b).abs().max().item():.3g}")
        worst = max(worst, (a - b).abs().max().item())
    line = f"loss lorakit {loss_lk.item():.6f} vs PEFT {loss_pf.item():.6f}"
    if grads:
        line += f"; {len(g_lk)} LoRA gradients agree (max abs difference {worst:.2g})"
    return line


# ============================================================================ memory
@dataclass
class MemoryResult:
    """Bytes measured for one variant in its own process (see :data:`MEMORY_NOTE`)."""

    variant: str
    param_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    graph_bytes: int
    peak_growth: int
    peak_method: str
    cuda_peak_bytes: int | None = None

    @property
    def tracked_bytes(self) -> int:
        """Parameters + gradients + optimizer state + tensors saved for backward."""
        return self.param_bytes + self.grad_bytes + self.optimizer_bytes + self.graph_bytes

    @property
    def judged_bytes(self) -> int:
        """What the memory target is judged on: the CUDA allocator's peak on a GPU, else the tracked total."""
        return self.tracked_bytes if self.cuda_peak_bytes is None else self.cuda_peak_bytes


def _status_kib(field: str) -> int | None:
    """A ``VmRSS``/``VmHWM`` field of /proc/self/status in KiB, or None off Linux."""
    try:
        return common.proc_status_kib(field)
    except RuntimeError:
        return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark; False where it cannot be (off Linux)."""
    try:
        common.reset_peak_rss()
        return True
    except OSError:
        return False


@contextmanager
def saved_storages() -> Iterator[dict[tuple[str, int], int]]:
    """Record every tensor autograd saves for backward inside the block: {storage key: bytes}.

    Unlike ``common.autograd_graph_bytes`` this leaves the graph alive, so the caller can run
    ``backward`` on it afterwards (the measured step is a real training step).
    """
    seen: dict[tuple[str, int], int] = {}

    def pack(t: Tensor) -> Tensor:
        seen[(str(t.device), t.untyped_storage().data_ptr())] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        yield seen


def measure_memory(name: str, size: Size, device: torch.device) -> MemoryResult:
    """Build ``name`` on ``device`` and measure one training step of it (call in a fresh process)."""
    variant = VARIANTS_BY_NAME[name]
    base = build_base(size).to(device)
    model = adapt(base, variant)
    del base
    ids = make_batch(size, device)
    opt = make_optimizer(model)
    # Allocate AdamW's state first (as in every step after the first), without a real step.
    for p in trainable(model):
        p.grad = torch.zeros_like(p)
    opt.step()
    opt.zero_grad(set_to_none=True)
    gc.collect()

    if device.type == "cuda":
        common.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before_kib = torch.cuda.memory_allocated(device) // 1024
        method = "torch.cuda.max_memory_allocated during the step minus memory_allocated before it"
    elif (before_kib := _status_kib("VmRSS")) is not None and _reset_peak_rss():
        method = "VmHWM after reset (/proc/self/clear_refs) minus VmRSS before the step"
    else:
        before_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        method = "ru_maxrss after the step minus ru_maxrss before it (not resettable: a lower bound)"
    with saved_storages() as seen:
        loss = lm_loss(model, ids)
    persistent = {(str(t.device), t.untyped_storage().data_ptr()) for t in [*model.parameters(), *model.buffers()]}
    graph = sum(n for key, n in seen.items() if key not in persistent)
    graph += loss.untyped_storage().nbytes()
    loss.backward()
    del loss
    opt.step()
    cuda_peak = None
    if device.type == "cuda":
        common.synchronize(device)
        cuda_peak = torch.cuda.max_memory_allocated(device)
        peak_kib = cuda_peak // 1024
    elif method.startswith("VmHWM"):
        peak_kib = _status_kib("VmHWM") or 0
    else:
        peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    grads = common.tensors_bytes(p.grad for p in trainable(model))
    state = common.tensors_bytes(t for s in opt.state.values() for t in s.values() if isinstance(t, Tensor))
    params = common.tensors_bytes(model.parameters())
    return MemoryResult(name, params, grads, state, graph, max(0, peak_kib - before_kib) * 1024, method, cuda_peak)


def memory_in_subprocesses(
    groups: Sequence[Sequence[str]], quick: bool, jobs: int, device: torch.device
) -> dict[str, MemoryResult]:
    """Run ``--memory-only NAME...`` once per group of variant names, each group in its own Python process.

    The full benchmark passes one variant per group (every measurement in a fresh process); ``--quick``
    passes one group with every variant.
    """

    def one(names: Sequence[str]) -> list[MemoryResult]:
        cmd = [sys.executable, "-m", "bench.train_step", "--device", str(device), "--memory-only", *names]
        cmd += ["--quick"] if quick else []
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, env=env, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(MEMORY_TAG)]
        if proc.returncode != 0 or len(lines) != len(names):
            raise RuntimeError(
                f"memory subprocess for {list(names)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}"
            )
        return [MemoryResult(**json.loads(line[len(MEMORY_TAG) :])) for line in lines]

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        results = [r for group in pool.map(one, groups) for r in group]
    return {r.variant: r for r in results}


# ============================================================================ timing
def time_training(models: dict[str, nn.Module], ids: Tensor, repeats: int, warmup: int) -> common.Timings:
    """Interleaved training steps of every model (zero_grad untimed, then forward+backward+step timed)."""
    cases = {}
    for name, model in models.items():
        opt = make_optimizer(model)

        def run(model: nn.Module = model, opt: torch.optim.Optimizer = opt) -> None:
            train_step(model, ids, opt)

        def reset(opt: torch.optim.Optimizer = opt) -> None:
            opt.zero_grad(set_to_none=True)

        cases[name] = common.Case(run=run, reset=reset)
    timings = common.interleaved_timings(cases, repeats=repeats, warmup=warmup, device=ids.device)
    for case in cases.values():
        case.reset()
    return timings


def time_inference(models: dict[str, nn.Module], ids: Tensor, repeats: int, warmup: int) -> common.Timings:
    """Interleaved eval-mode forward passes under ``torch.no_grad``."""
    cases = {}
    for name, model in models.items():
        model.eval()

        def run(model: nn.Module = model) -> None:
            with torch.no_grad():
                model(input_ids=ids)

        cases[name] = common.Case(run=run)
    return common.interleaved_timings(cases, repeats=repeats, warmup=warmup, device=ids.device)


def profile_steps(
    names: Sequence[str], size: Size, rows: int, device: torch.device, out: Callable[[str], object] = print
) -> None:
    """torch.profiler tables of one training step per variant, after a warm-up step.

    Top ops by self CPU time, or by self CUDA time when ``device`` is a GPU.
    """
    from torch.profiler import ProfilerActivity, profile

    on_cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if on_cuda else [])
    base = build_base(size).to(device)
    ids = make_batch(size, device)
    for name in names:
        model = adapt(base, VARIANTS_BY_NAME[name])
        opt = make_optimizer(model)
        train_step(model, ids, opt)
        opt.zero_grad(set_to_none=True)
        common.synchronize(device)
        t0 = time.perf_counter()
        with profile(activities=activities) as prof:
            train_step(model, ids, opt)
            common.synchronize(device)
        elapsed = time.perf_counter() - t0
        out(f"### {name}: one profiled step, {elapsed:.4f} s wall\n")
        sort_by = "self_cuda_time_total" if on_cuda else "self_cpu_time_total"
        out(prof.key_averages().table(sort_by=sort_by, row_limit=rows))
        del model, opt
        gc.collect()


# ============================================================================ report
def _s(seconds: float) -> str:
    """Seconds to 4 significant digits (a GPU step takes milliseconds, a CPU step about a second)."""
    return f"{seconds:.4g}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f}"


def timed_verdict(t: common.Timings, num: str, den: str, limit: float) -> str:
    """PASS/MISS of the median ratio, flagged when the ratio's interquartile range straddles ``limit``.

    A flagged verdict means the rounds disagree: rerun with more ``--steps`` or on a quieter machine.
    """
    result = common.verdict(t.ratio(num, den), limit)
    if len(t.samples[num]) >= 4:
        lo, hi = t.ratio_quartiles(num, den)
        if lo <= limit < hi:
            result += " (within noise: IQR straddles the limit)"
    return result


def training_tables(
    timings: common.Timings, memory: dict[str, MemoryResult], n_trainable: dict[str, int]
) -> tuple[str, str, list[tuple[str, str, str, str, str]]]:
    """Per-variant table, per-pair ratio table and target rows for the training variants.

    On a GPU the memory target is judged on ``torch.cuda.max_memory_allocated`` (an extra column), on the
    CPU on the tracked total (see :data:`MEMORY_NOTE`).
    """
    on_cuda = all(m.cuda_peak_bytes is not None for m in memory.values())
    growth_word = "CUDA peak growth" if on_cuda else "RSS peak growth"
    judged_word = "CUDA max_memory_allocated" if on_cuda else "tracked total"
    rows = []
    for v in TRAIN_VARIANTS:
        m = memory[v.name]
        rows.append(
            [
                v.name,
                f"{n_trainable[v.name]:,}",
                _s(timings.median(v.name)),
                _mib(m.param_bytes),
                _mib(m.grad_bytes),
                _mib(m.optimizer_bytes),
                _mib(m.graph_bytes),
                _mib(m.tracked_bytes),
                _mib(m.peak_growth),
            ]
            + ([_mib(m.judged_bytes)] if on_cuda else [])
        )
    per_variant = common.markdown_table(
        [
            "variant",
            "trainable params",
            "step s (median)",
            "params MiB",
            "grads MiB",
            "AdamW state MiB",
            "saved activations MiB",
            "tracked total MiB",
            f"{growth_word} MiB",
        ]
        + (["CUDA peak MiB"] if on_cuda else []),
        rows,
    )
    ratio_rows, targets = [], []
    for lk, pf, time_target in PAIRS:
        label = VARIANTS_BY_NAME[lk].config_label
        t_shown = timings.ratio_shown(lk, pf)[1]
        m_lk, m_pf = memory[lk], memory[pf]
        mem_total = m_lk.tracked_bytes / m_pf.tracked_bytes
        mem_graph = m_lk.graph_bytes / m_pf.graph_bytes
        mem_growth = m_lk.peak_growth / m_pf.peak_growth if m_pf.peak_growth else float("nan")
        mem_judged = m_lk.judged_bytes / m_pf.judged_bytes
        vs_full = timings.ratio(lk, "full")
        ratio_rows.append(
            [label, t_shown, f"{mem_total:.3f}", f"{mem_graph:.3f}", f"{mem_growth:.3f}"]
            + ([f"{mem_judged:.3f}"] if on_cuda else [])
            + [f"{vs_full:.3f}"]
        )
        targets.append(
            (
                "training step time lorakit / PEFT",
                label,
                t_shown,
                f"<= {time_target:.2f}",
                timed_verdict(timings, lk, pf, time_target),
            )
        )
        targets.append(
            (
                f"peak training memory lorakit / PEFT ({judged_word})",
                label,
                f"{mem_judged:.3f}",
                f"<= {TARGET_MEMORY:.2f}",
                common.verdict(mem_judged, TARGET_MEMORY),
            )
        )
    ratios = common.markdown_table(
        [
            "LoRA configuration",
            "time lorakit / PEFT (IQR)",
            "memory lorakit / PEFT: tracked total",
            "saved activations only",
            growth_word,
        ]
        + ([judged_word] if on_cuda else [])
        + ["time lorakit / full FT"],
        ratio_rows,
    )
    return per_variant, ratios, targets


def inference_tables(timings: common.Timings) -> tuple[str, list[tuple[str, str, str, str, str]]]:
    """Inference table (median seconds, ratio to base) and target rows."""
    rows = []
    for name in INFERENCE_VARIANTS:
        shown = "1" if name == "base" else timings.ratio_shown(name, "base")[1]
        rows.append([name, _s(timings.median(name)), shown])
    table = common.markdown_table(["variant (all-linear adapter)", "forward s (median)", "ratio to base (IQR)"], rows)
    unmerged_shown = timings.ratio_shown("lorakit-unmerged", "base")[1]
    merged_shown = timings.ratio_shown("lorakit-merged", "base")[1]
    targets = [
        (
            "inference lorakit unmerged / base",
            "all-linear",
            unmerged_shown,
            f"<= {TARGET_UNMERGED:.2f}",
            timed_verdict(timings, "lorakit-unmerged", "base", TARGET_UNMERGED),
        ),
        (
            "inference lorakit merged / base",
            "all-linear",
            merged_shown,
            f"<= {TARGET_MERGED:.2f}",
            timed_verdict(timings, "lorakit-merged", "base", TARGET_MERGED),
        ),
    ]
    return table, targets


MEMORY_NOTE = """\
**What the memory columns measure (CPU)**: each variant is built and measured in its own Python
process (`python -m bench.train_step --memory-only VARIANT`), with AdamW's state already allocated
(as in every step after the first), over one training step (forward, backward, `opt.step()`):
*params* = distinct storages of all parameters (frozen base + LoRA); *grads* = gradients of the
trainable parameters after backward; *AdamW state* = `exp_avg`, `exp_avg_sq` and `step`;
*saved activations* = distinct storages of every tensor autograd saves for backward during the
forward pass (seen through `torch.autograd.graph.saved_tensors_hooks`, which also sees a custom
`autograd.Function`'s `save_for_backward`; parameters and buffers excluded; views counted once with
their base) plus the loss. *Tracked total* = the sum of the four, the memory that must be alive at
the end of forward plus the gradients (an allocator-independent stand-in for a GPU's
`max_memory_allocated`; temporaries freed inside an op are not in it). *RSS peak growth* = the
process's peak resident set during the step minus its resident set just before it (Linux `VmHWM`
after resetting it through `/proc/self/clear_refs`); it includes transient temporaries and allocator
behaviour and is the noisiest column. The memory target is judged on the tracked total."""

MEMORY_NOTE_CUDA = """\
**What the memory columns measure (CUDA)**: each variant is built and measured in its own Python
process (`python -m bench.train_step --device cuda --memory-only VARIANT`), with AdamW's state already
allocated, over one training step (forward, backward, `opt.step()`). *CUDA peak* =
`torch.cuda.max_memory_allocated` over the step (everything the process holds on the GPU: parameters,
AdamW state, activations, gradients and transient temporaries); *CUDA peak growth* = that peak minus
`torch.cuda.memory_allocated` just before the step. The params, grads, AdamW-state and saved-activation
columns are counted as on the CPU (distinct storages; saved activations seen through
`torch.autograd.graph.saved_tensors_hooks`). The memory target is judged on the CUDA peak."""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m bench.train_step``."""
    ap = argparse.ArgumentParser(prog="python -m bench.train_step", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    ap.add_argument(
        "--steps", type=int, default=None, help="timed training steps per variant (default 10, 50 on CUDA; quick 2)"
    )
    ap.add_argument("--warmup", type=int, default=None, help="untimed interleaved rounds first (default 1, 3 on CUDA)")
    ap.add_argument(
        "--inference-steps", type=int, default=None, help="timed forward passes per inference variant (default --steps)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: 2 layers of width 256, vocabulary 8192, batch 2x64, 2 steps; all memory in one subprocess",
    )
    ap.add_argument("--jobs", type=int, default=2, help="memory subprocesses run at once (default 2)")
    variants = {"nargs": "+", "metavar": "VARIANT", "choices": sorted(VARIANTS_BY_NAME)}
    ap.add_argument(
        "--memory-only",
        **variants,
        help="only measure the memory of VARIANT(s), one after another in this process; print JSON lines",
    )
    ap.add_argument("--profile", **variants, help="only print torch.profiler's top ops for one step of each VARIANT")
    ap.add_argument("--profile-rows", type=int, default=20, help="rows per profiler table (default 20)")
    common.add_update_md_argument(ap)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    """Run the benchmark and print Markdown (optionally into BENCHMARKS.md). Returns an exit status."""
    args = parse_args(argv)
    size = QUICK_SIZE if args.quick else FULL_SIZE
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    warnings.filterwarnings("ignore")
    if args.memory_only:
        for name in args.memory_only:
            result = measure_memory(name, size, device)
            print(MEMORY_TAG + json.dumps(asdict(result)), flush=True)
            gc.collect()
        return 0
    if args.profile:
        profile_steps(args.profile, size, args.profile_rows, device, out)
        return 0

    steps = args.steps or (2 if args.quick else 50 if on_cuda else 10)
    warmup = args.warmup if args.warmup is not None else (3 if on_cuda else 1)
    inference_steps = args.inference_steps or steps
    log = common.progress_logger()
    revision = common.git_revision(("src",))  # before the run: the code that gets imported and timed

    base = build_base(size).to(device)
    ids = make_batch(size, device)
    models = {v.name: adapt(base, v) for v in TRAIN_VARIANTS}
    n_trainable = {name: sum(p.numel() for p in trainable(m)) for name, m in models.items()}
    check_ids = ids[:2]
    checks = []
    for lk, pf, _ in PAIRS:
        if n_trainable[lk] != n_trainable[pf]:
            raise RuntimeError(f"{lk} trains {n_trainable[lk]:,} parameters but {pf} {n_trainable[pf]:,}")
        share_lora_weights(models[lk], models[pf])
        if VARIANTS_BY_NAME[lk].dropout == 0.0:
            line = check_same_loss(models[lk], models[pf], check_ids, grads=VARIANTS_BY_NAME[lk].target == "all-linear")
            checks.append(f"{VARIANTS_BY_NAME[lk].config_label}: {line}")
    log("correctness: " + " | ".join(checks))

    train_t = time_training(models, ids, steps, warmup)
    log("training timed")

    infer_models = {
        "base": copy.deepcopy(base),
        "lorakit-unmerged": models["lorakit-all-linear"],
        "lorakit-merged": lorakit.merge(copy.deepcopy(models["lorakit-all-linear"])),
        "peft-unmerged": models["peft-all-linear"],
    }
    for name in [n for n in models if n not in ("lorakit-all-linear", "peft-all-linear")]:
        del models[name]
    gc.collect()
    with torch.no_grad():
        probe = check_ids[:1]
        unmerged = infer_models["lorakit-unmerged"].eval()(input_ids=probe).logits
        merged = infer_models["lorakit-merged"].eval()(input_ids=probe).logits
        if not torch.allclose(unmerged, merged, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"merged logits differ from unmerged by {(unmerged - merged).abs().max().item():.3g}")
    infer_t = time_inference(infer_models, ids, inference_steps, warmup)
    del infer_models, models
    gc.collect()
    log("inference timed")

    names = [v.name for v in TRAIN_VARIANTS]
    memory = memory_in_subprocesses([names] if args.quick else [[n] for n in names], args.quick, args.jobs, device)
    log("memory measured")

    per_variant, ratios, train_targets = training_tables(train_t, memory, n_trainable)
    infer_table, infer_targets = inference_tables(infer_t)
    target_table = common.markdown_table(
        ["target", "configuration", "measured", "limit", "result"], train_targets + infer_targets, align="lllrc"
    )
    command = common.command_line("bench.train_step", argv)
    quick_note = (
        "**Smoke run (--quick): a smaller model, few steps, memory of all variants measured in one subprocess; "
        "the numbers are meaningless.**\n\n"
        if args.quick
        else ""
    )
    numerics = "float32 on the CPU"
    if on_cuda:
        numerics = f"float32 on the GPU (TF32 matmuls {'on' if torch.backends.cuda.matmul.allow_tf32 else 'off'})"
    model_desc = f"GPT2LMHeadModel(GPT2Config(n_layer={size.n_layer}, n_embd={size.n_embd}, n_head={size.n_head}))"
    body = f"""\
Command: `{command}` (from the repository root)

Code: lorakit at commit {revision}

Machine: {common.describe_machine(device, packages=("transformers", "peft"))}

Date: {common.today()}

{quick_note}Setup: randomly initialised `{model_desc}`
(vocabulary {size.vocab}, default dropout 0.1, tied LM head), batch {size.batch} x {size.seq} random token ids,
LM loss with labels = input ids, `torch.optim.AdamW(lr={LR:g})` over the trainable parameters only,
{numerics}, train mode. LoRA: r={LORA_R}, lora_alpha={LORA_ALPHA}, on `c_attn` only or on `all-linear` (GPT-2's
`Conv1D` layers; the tied LM head is excluded by both libraries). One timed training call = forward +
backward + `opt.step()` (`zero_grad(set_to_none=True)` untimed before it). The seven training variants
are timed interleaved in one process ({warmup} warm-up round, {steps} timed rounds, order rotated every
round); then the four inference variants (`model(ids)` under `torch.no_grad()`, eval mode, the
all-linear adapter as trained above; {warmup} warm-up round, {inference_steps} timed rounds). Times are
medians; ratios are the median of per-round ratios, interquartile range in parentheses.

Correctness, checked before timing with identical random LoRA weights (B non-zero) in both libraries,
eval mode, 2 sequences: {"; ".join(checks)}. Merged logits were checked equal to unmerged.

### Training step

{per_variant}

{ratios}

### Inference (forward only)

{infer_table}

### Targets from the issue

{target_table}

{MEMORY_NOTE_CUDA if on_cuda else MEMORY_NOTE}
"""
    return common.publish_section(SECTION_TITLE, body, args.update_md, out, device)


if __name__ == "__main__":
    raise SystemExit(main())
