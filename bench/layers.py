"""Forward+backward time and graph memory of one LoRA linear layer: lorakit vs loralib vs PEFT.

Run from the repository root::

    python -m bench.layers                 # the full grid (about 3 minutes on 2 idle CPU cores)
    python -m bench.layers --quick         # a smoke run with small layers (seconds; numbers meaningless)
    python -m bench.layers --update-md     # also write the results into BENCHMARKS.md

Variants, all in train mode, sharing the same W, b, A, B, with only the LoRA parameters trainable
(biases frozen too, as after ``mark_only_lora_as_trainable(model, bias="none")``):

* ``frozen``: a plain ``nn.Linear`` with ``requires_grad=False`` parameters, the cost floor;
* ``lorakit``: ``lorakit.Linear`` (custom autograd function ``functional.lora_linear``);
* ``loralib``: ``loralib.Linear`` 0.1.2;
* ``peft``: the ``peft.tuners.lora.Linear`` that ``peft.get_peft_model`` puts around an ``nn.Linear``.

The input (8, 128, d) requires grad, as in the middle of a network; each timed call is one forward
and one ``backward`` with a fixed output gradient. Variants are timed interleaved (round-robin,
rotating the order), and ratios are medians of per-round ratios (see ``bench/common.py``).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import lorakit

from . import common

VARIANTS = ("frozen", "lorakit", "loralib", "peft")
LORA_ALPHA = 16
# Targets from the project issue.
TARGET_VS_FROZEN = 1.08  # lorakit / frozen nn.Linear, r=8, no dropout
TARGET_VS_PEFT_DROPOUT = 0.90  # lorakit / PEFT, dropout 0.1
TARGET_MEM_VS_PEFT = 1.00  # lorakit graph memory / PEFT's, every configuration


@dataclass(frozen=True)
class Config:
    """One point of the grid: square layer size, LoRA rank, dropout probability."""

    d: int
    r: int
    p: float


@dataclass
class ConfigResult:
    """Timings (seconds, per round) and graph memory (bytes) of every variant for one config."""

    config: Config
    timings: common.Timings
    memory: dict[str, int]
    memory_items: dict[str, list[str]]
    attempts: int = 1

    @property
    def noise(self) -> float:
        """The largest interquartile range / median of the variants' times (see ``Timings.spread``)."""
        return max(self.timings.spread(v) for v in VARIANTS)


def _tiny_peft_linear(base: nn.Linear, r: int, p: float) -> nn.Module:
    """PEFT's LoRA Linear, built the way users get it: get_peft_model on a module holding ``base``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from peft import LoraConfig, get_peft_model

        class Tiny(nn.Module):
            def __init__(self, lin: nn.Linear):
                super().__init__()
                self.lin = lin

            def forward(self, x: Tensor) -> Tensor:
                return self.lin(x)

        config = LoraConfig(r=r, lora_alpha=LORA_ALPHA, lora_dropout=p, target_modules=["lin"], bias="none")
        model = get_peft_model(Tiny(base), config)
    layer = model.base_model.model.lin
    if type(layer).__module__.split(".")[:3] != ["peft", "tuners", "lora"]:
        raise RuntimeError(f"get_peft_model did not wrap the layer with PEFT's LoRA Linear: {type(layer)}")
    return layer


def build_variants(
    d: int, r: int, p: float, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> dict[str, nn.Module]:
    """The four layers of one configuration, with identical W, b, A and B (B non-zero), in train mode."""
    import loralib

    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(d, d, generator=gen) / d**0.5
    bias = torch.randn(d, generator=gen) * 0.1
    lora_a = torch.randn(r, d, generator=gen) / d**0.5
    lora_b = torch.randn(d, r, generator=gen) / r**0.5

    def fill(w: Tensor, b: Tensor, a: Tensor | None, bb: Tensor | None) -> None:
        with torch.no_grad():
            w.copy_(weight)
            b.copy_(bias)
            if a is not None:
                a.copy_(lora_a)
                bb.copy_(lora_b)

    frozen = nn.Linear(d, d)
    fill(frozen.weight, frozen.bias, None, None)
    frozen.requires_grad_(False)

    lk = lorakit.Linear(d, d, r=r, lora_alpha=LORA_ALPHA, lora_dropout=p)
    fill(lk.weight, lk.bias, lk.lora_A, lk.lora_B)
    lorakit.mark_only_lora_as_trainable(lk, bias="none")

    ll = loralib.Linear(d, d, r=r, lora_alpha=LORA_ALPHA, lora_dropout=p)
    fill(ll.weight, ll.bias, ll.lora_A, ll.lora_B)
    loralib.mark_only_lora_as_trainable(ll, bias="none")

    pf = _tiny_peft_linear(nn.Linear(d, d), r, p)
    fill(pf.base_layer.weight, pf.base_layer.bias, pf.lora_A["default"].weight, pf.lora_B["default"].weight)

    layers = {"frozen": frozen, "lorakit": lk, "loralib": ll, "peft": pf}
    for name, layer in layers.items():
        layer.to(device=device, dtype=dtype).train()
        trainable = {n for n, q in layer.named_parameters() if q.requires_grad}
        if name == "frozen" and trainable:
            raise RuntimeError(f"frozen nn.Linear has trainable parameters: {trainable}")
        if name != "frozen" and (len(trainable) != 2 or not all("lora" in n for n in trainable)):
            raise RuntimeError(f"{name}: expected exactly the two LoRA matrices trainable, got {trainable}")
    return layers


def _clear_grads(layer: nn.Module, x: Tensor) -> None:
    x.grad = None
    for q in layer.parameters():
        q.grad = None


def check_agreement(layers: dict[str, nn.Module], x: Tensor, grad_out: Tensor) -> None:
    """Without dropout, every LoRA variant must give the same output and gradients (a sanity check)."""
    results = {}
    for name in ("lorakit", "loralib", "peft"):
        layer = layers[name]
        _clear_grads(layer, x)
        out = layer(x)
        out.backward(grad_out)
        grads = [q.grad.clone() for n, q in sorted(layer.named_parameters()) if q.requires_grad]
        results[name] = (out.detach(), x.grad.clone(), grads)
        _clear_grads(layer, x)
    ref = results["lorakit"]
    tol = {"rtol": 1e-3, "atol": 1e-3} if x.dtype == torch.float32 else {"rtol": 5e-2, "atol": 5e-2}
    for name in ("loralib", "peft"):
        other = results[name]
        pairs = [("output", ref[0], other[0]), ("x.grad", ref[1], other[1])]
        pairs += [(f"lora grad {i}", a, b) for i, (a, b) in enumerate(zip(ref[2], other[2], strict=True))]
        for what, a, b in pairs:
            if a.shape != b.shape:  # PEFT stores A, B as nn.Linear weights: the same shapes as loralib
                raise RuntimeError(f"lorakit vs {name}: {what} shapes differ: {a.shape} vs {b.shape}")
            if not torch.allclose(a, b, **tol):
                err = (a - b).abs().max().item()
                raise RuntimeError(f"lorakit vs {name}: {what} differs (max abs error {err:.3g})")


def measure_memory(layer: nn.Module, x: Tensor, grad_out: Tensor, device: torch.device) -> common.GraphMemory:
    """Graph bytes (CPU) or peak CUDA bytes above the starting point (CUDA) of one forward+backward."""
    _clear_grads(layer, x)
    if device.type == "cuda":

        def step() -> None:
            layer(x).backward(grad_out)

        peak = common.cuda_peak_bytes(step, device)
        _clear_grads(layer, x)
        return common.GraphMemory(peak, ["torch.cuda.max_memory_allocated during forward+backward"])
    persistent = list(layer.parameters()) + list(layer.buffers())
    mem = common.autograd_graph_bytes(lambda: layer(x), exclude=persistent, labels={"input x": x})
    _clear_grads(layer, x)
    return mem


def run_config(
    config: Config,
    tokens: tuple[int, int],
    repeats: int,
    warmup: int,
    device: torch.device,
    dtype: torch.dtype,
) -> ConfigResult:
    """Check, measure memory, then time all variants of one configuration interleaved."""
    layers = build_variants(config.d, config.r, config.p, device, dtype)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(*tokens, config.d, generator=gen).to(device=device, dtype=dtype).requires_grad_(True)
    grad_out = torch.randn(*tokens, config.d, generator=gen).to(device=device, dtype=dtype)
    if config.p == 0.0:
        check_agreement(layers, x, grad_out)

    memory, items = {}, {}
    for name, layer in layers.items():
        mem = measure_memory(layer, x, grad_out, device)
        memory[name], items[name] = mem.total_bytes, mem.items

    def make_case(layer: nn.Module) -> common.Case:
        def run() -> None:
            layer(x).backward(grad_out)

        return common.Case(run=run, reset=lambda: _clear_grads(layer, x))

    cases = {name: make_case(layer) for name, layer in layers.items()}
    timings = common.interleaved_timings(cases, repeats=repeats, warmup=warmup, device=device)
    return ConfigResult(config, timings, memory, items)


def merged_extra_bytes(dims: Sequence[int], dtypes: Sequence[torch.dtype], r: int = 8) -> list[list[str]]:
    """Rows (d, dtype, weight bytes, buffer bytes unmerged, merged, extra, extra/weight) for lorakit.Linear.

    Measured from the module: the sum of the distinct storages of its buffers in train mode
    (unmerged) and after ``eval()`` (merged; ``merge_weights=True`` is the default). Also checks that
    the pretrained weight is bit-identical after merging.
    """
    rows = []
    for d, dtype in itertools.product(dims, dtypes):
        layer = lorakit.Linear(d, d, r=r, lora_alpha=LORA_ALPHA, dtype=dtype)
        with torch.no_grad():
            layer.lora_B.normal_()
        layer.train()
        before = layer.weight.detach().clone()
        unmerged = common.tensors_bytes(layer.buffers())
        layer.eval()
        if not layer.merged:
            raise RuntimeError("lorakit.Linear did not merge in eval()")
        merged = common.tensors_bytes(layer.buffers())
        if not torch.equal(layer.weight, before):
            raise RuntimeError(f"lorakit.Linear modified its pretrained weight when merging (d={d}, {dtype})")
        weight_bytes = layer.weight.untyped_storage().nbytes()
        extra = merged - unmerged
        rows.append(
            [
                str(d),
                str(dtype).removeprefix("torch."),
                f"{weight_bytes:,}",
                f"{unmerged:,}",
                f"{merged:,}",
                f"{extra:,} ({common.format_bytes(extra)})",
                f"{extra / weight_bytes:.2f}",
            ]
        )
    return rows


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f}"


def results_tables(results: Sequence[ConfigResult], device: torch.device) -> tuple[str, str]:
    """The main Markdown table and the targets table (PASS/MISS)."""
    mem_word = "graph MiB" if device.type == "cpu" else "peak MiB"
    headers = [
        "d",
        "r",
        "dropout",
        "frozen ms",
        "lorakit ms",
        "loralib ms",
        "PEFT ms",
        "lorakit / frozen",
        "lorakit / PEFT",
        "lorakit / loralib",
        f"frozen {mem_word}",
        f"lorakit {mem_word}",
        f"loralib {mem_word}",
        f"PEFT {mem_word}",
        "mem lorakit / PEFT",
        "mem lorakit / loralib",
        "noise",
    ]
    rows = []
    targets = []
    for res in results:
        c, t, m = res.config, res.timings, res.memory
        _, vs_frozen = t.ratio_shown("lorakit", "frozen")
        peft_value, vs_peft = t.ratio_shown("lorakit", "peft")
        _, vs_loralib = t.ratio_shown("lorakit", "loralib")
        rows.append(
            [
                c.d,
                c.r,
                c.p,
                *(_ms(t.median(v)) for v in VARIANTS),
                vs_frozen,
                vs_peft,
                vs_loralib,
                *(_mib(m[v]) for v in VARIANTS),
                f"{m['lorakit'] / m['peft']:.3f}",
                f"{m['lorakit'] / m['loralib']:.3f}",
                f"{100 * res.noise:.0f}%" + (f" ({res.attempts} runs)" if res.attempts > 1 else ""),
            ]
        )
        where = f"d={c.d}, r={c.r}, dropout={c.p}"
        if c.r == 8 and c.p == 0.0:
            value, shown = t.ratio_shown("lorakit", "frozen")
            targets.append(
                (
                    "time lorakit / frozen nn.Linear",
                    where,
                    shown,
                    f"<= {TARGET_VS_FROZEN}",
                    common.verdict(value, TARGET_VS_FROZEN),
                )
            )
        if c.p == 0.1:
            targets.append(
                (
                    "time lorakit / PEFT",
                    where,
                    vs_peft,
                    f"<= {TARGET_VS_PEFT_DROPOUT}",
                    common.verdict(peft_value, TARGET_VS_PEFT_DROPOUT),
                )
            )
        mem_ratio = m["lorakit"] / m["peft"]
        targets.append(
            (
                "memory lorakit / PEFT",
                where,
                f"{mem_ratio:.3f}",
                f"<= {TARGET_MEM_VS_PEFT:.2f}",
                common.verdict(mem_ratio, TARGET_MEM_VS_PEFT),
            )
        )
    main = common.markdown_table(headers, rows, align="rrr" + "r" * (len(headers) - 3))
    target_table = common.markdown_table(
        ["target", "configuration", "measured", "limit", "result"], targets, align="lllrc"
    )
    return main, target_table


def saved_tensors_table(results: Sequence[ConfigResult]) -> str:
    """What each variant's graph keeps, for the first configuration with and without dropout."""
    picked: list[ConfigResult] = []
    for p in sorted({r.config.p for r in results}):
        picked.extend([r for r in results if r.config.p == p][:1])
    rows = []
    for res in picked:
        c = res.config
        for name in VARIANTS:
            rows.append([f"d={c.d}, r={c.r}, dropout={c.p}", name, "; ".join(res.memory_items[name])])
    return common.markdown_table(["configuration", "variant", "storages counted"], rows, align="lll")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line of ``python -m bench.layers``."""
    ap = argparse.ArgumentParser(prog="python -m bench.layers", description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed rounds per configuration (default: 200 on CPU, 300 on CUDA, 3 with --quick; at least 2)",
    )
    ap.add_argument(
        "--warmup", type=int, default=None, help="untimed rounds first (default: 3, 1 with --quick)"
    )
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke mode: d=256, tokens 2x64, few repeats; checks that everything runs",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads (default: torch's default; 1 with --quick on CPU)",
    )
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16", "float16"],
        help="dtype of layers and input (default: float32)",
    )
    ap.add_argument(
        "--noise-limit",
        type=float,
        default=0.25,
        help="re-measure a configuration whose noise (largest IQR/median) exceeds this (default: 0.25)",
    )
    ap.add_argument(
        "--retries",
        type=int,
        default=None,
        help="at most this many re-measurements per configuration; the least noisy is kept "
        "(default: 3, 0 with --quick)",
    )
    ap.add_argument("--dims", type=int, nargs="+", default=None, help="layer sizes d (default: 768 1024)")
    ap.add_argument(
        "--tokens",
        type=int,
        nargs=2,
        default=None,
        metavar=("BATCH", "SEQ"),
        help="input shape (BATCH, SEQ, d) (default: 8 128, the issue's; 2 64 with --quick)",
    )
    common.add_update_md_argument(ap)
    args = ap.parse_args(argv)
    if args.repeats is not None and args.repeats < 2:
        ap.error(
            f"--repeats must be at least 2 (medians and quartiles of per-round ratios), got {args.repeats}"
        )
    return args


SECTION_TITLE = "bench.layers: one LoRA linear layer, forward+backward"

MEMORY_NOTE_CPU = """\
**Memory (CPU) is not an allocator peak**: it is the bytes the autograd graph keeps alive between
forward and backward, i.e. the sum of the distinct storages of every tensor saved for backward (seen
through `torch.autograd.graph.saved_tensors_hooks`, which also sees a custom `autograd.Function`'s
`save_for_backward`) plus the output; views count once with their base. The layer's parameters and
buffers are excluded (they exist with or without a graph). The input `x` **is** counted when a
variant saves it: every LoRA variant saves `x` (or, in loralib and PEFT with dropout, the dropped
copy `dropout(x)` *and* the float dropout multiplier, the two unlabelled `d`-wide tensors below);
lorakit saves `x` and regenerates its mask in backward; the frozen `nn.Linear` saves only its
weight (a parameter). Temporaries freed during forward or backward are not counted. The table below
lists exactly what was summed."""

MEMORY_NOTE_CUDA = """\
**Memory (CUDA)**: `torch.cuda.max_memory_allocated` during one forward+backward minus
`torch.cuda.memory_allocated` just before it (parameters, the input and the output gradient already
allocated; LoRA gradients and `x.grad` cleared before), so it includes transient temporaries, the
output and the gradients produced."""


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    """Run the benchmark, print Markdown, optionally update BENCHMARKS.md. Returns an exit status."""
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.quick:
        dims, tokens, repeats, warmup = (
            args.dims or [256],
            tuple(args.tokens or (2, 64)),
            args.repeats or 3,
            (args.warmup if args.warmup is not None else 1),
        )
        if args.threads is None and device.type == "cpu":
            # One thread: on a busy machine, multi-threaded kernels stall on descheduled threads.
            torch.set_num_threads(1)
    else:
        default_repeats = 300 if device.type == "cuda" else 200
        dims, tokens = args.dims or [768, 1024], tuple(args.tokens or (8, 128))
        repeats, warmup = args.repeats or default_repeats, args.warmup if args.warmup is not None else 3
    retries = args.retries if args.retries is not None else (0 if args.quick else 3)
    configs = [Config(d, r, p) for d in dims for r in (8, 64) for p in (0.0, 0.1)]

    if device.type == "cuda":
        noise_text = (
            "on a GPU at these sizes one call takes well under a millisecond\nand is bound by the host's "
            "kernel launches, not the GPU, so the noise measures host-side jitter."
        )
    else:
        noise_text = (
            "about\n5-15% on an otherwise idle 2-core machine; far above that, other processes slowed rounds "
            "down and the\nrow's times and ratios are unreliable (contention hurts the variants with more, "
            "smaller ops the most)."
        )
    revision = common.git_revision(("src",))  # before the run: the code that gets imported and timed
    load_before = common.load_average()
    results = []
    for c in configs:
        best: ConfigResult | None = None
        for attempt in range(1, retries + 2):
            res = run_config(c, tokens, repeats, warmup, device, dtype)
            res.attempts = attempt
            print(
                f"d={c.d} r={c.r} dropout={c.p}: attempt {attempt}, noise {100 * res.noise:.0f}%",
                file=sys.stderr,
                flush=True,
            )
            if best is None or res.noise < best.noise:
                best = res
            if res.noise <= args.noise_limit:
                break
        best.attempts = attempt
        results.append(best)
    main_table, target_table = results_tables(results, device)
    load_after = common.load_average()
    merged_rows = merged_extra_bytes([768, 1024], [torch.float32, torch.bfloat16])
    merged_table = common.markdown_table(
        [
            "d",
            "dtype",
            "weight bytes",
            "buffers unmerged",
            "buffers merged",
            "extra while merged",
            "extra / weight",
        ],
        merged_rows,
        align="rlrrrrr",
    )

    command = common.command_line("bench.layers", argv)
    quick_note = (
        "\n**Smoke run (--quick): small layers, one thread, few repeats; the numbers are meaningless.**\n"
        if args.quick
        else ""
    )
    mem_note = MEMORY_NOTE_CPU if device.type == "cpu" else MEMORY_NOTE_CUDA
    body = f"""\
Command: `{command}` (from the repository root)

Code: lorakit at commit {revision}

Machine: {common.describe_machine(device, packages=("peft", "loralib"))}

Date: {common.today()}; 1-minute load average before / after the run: {load_before:.2f} / {load_after:.2f}
({os.cpu_count()} cores; a load near or above the core count means other processes competed for the CPU)

Setup: square `d x d` layers with bias, input `({tokens[0]}, {tokens[1]}, d)` {args.dtype} with
`requires_grad=True` (as in the middle of a network), `lora_alpha={LORA_ALPHA}`, train mode, only the
LoRA matrices trainable (biases frozen), identical W, b, A, B (B non-zero) in every variant. One
timed call = one forward + one `backward(grad_out)`. The four variants are timed interleaved in one
process (round-robin, order rotated each round; {warmup} warm-up rounds, {repeats} timed rounds);
times are medians, ratios are the median of per-round ratios with the interquartile range in
parentheses. Without dropout the three LoRA variants are checked to agree (output, input gradient,
LoRA gradients) before timing. PEFT's layer is the `peft.tuners.lora.Linear` produced by
`get_peft_model` on a module holding one `nn.Linear`, called directly (no `PeftModel` wrapper).
"noise" is the largest interquartile range / median of the four variants' times in that row: {noise_text}
A configuration whose noise exceeds {100 * args.noise_limit:.0f}% is measured again (at most {retries} more
times) and the least noisy measurement is kept; "(n runs)" in that column says how many were made.
{quick_note}
{main_table}

Targets from the project issue:

{target_table}

{mem_note}

{saved_tensors_table(results)}

### Merged mode: extra bytes held per layer

`lorakit.Linear` keeps the pretrained weight exact when merged (`eval()` with `merge_weights=True`) by
holding `W + scaling * B A` in a separate non-persistent buffer `merged_weight`. Measured from the
module (sum of its buffers' storages in train mode vs after `eval()`, r=8; the pretrained weight
was checked to be bit-identical after merging). For comparison, loralib merges in `eval()` by adding
the update into `weight` itself, and PEFT's `merge_adapter()` / `merge_and_unload()` also overwrite
the base weight: no extra bytes, but the pretrained weight is modified (and drifts over repeated
merge/unmerge cycles in fp16/bf16).

{merged_table}
"""
    return common.publish_section(SECTION_TITLE, body, args.update_md, out, device)


if __name__ == "__main__":
    raise SystemExit(main())
