"""NF4 backends on one frozen linear layer: speed, memory and accuracy of bitsandbytes against torchao.

Run from the repository root::

    python -m bench.quant                  # d = 4096, 512 tokens, bf16 compute (about 3 minutes on 2 CPU cores)
    python -m bench.quant --quick          # smoke run: d = 512, 64 tokens (seconds; numbers meaningless)
    python -m bench.quant --update-md      # also write the results into BENCHMARKS.md
    python -m bench.quant --device cuda    # on a CUDA GPU

Setup: one ``d x d`` weight drawn with ``randn / sqrt(d)`` (seed 0) and a bias, frozen; the input
``(tokens, d)`` requires grad (as in the middle of a network, where the input gradient is needed). Variants:
``dense``: ``nn.Linear`` in the compute dtype (the baseline the 4-bit layers save memory against);
``bitsandbytes`` and ``torchao``: ``lorakit.quant.Linear4bit`` with that backend. One timed call = forward +
``backward(grad_out)``, the variants interleaved in one process (bench/common.py conventions), plus the
dequantization of the whole weight alone. Memory: the bytes the weight is stored in; and, one subprocess per
variant, the peak RSS growth during forward + backward above the RSS after the layer was built (the weight it
was quantized from freed; the peak is reset through ``/proc/self/clear_refs``). Accuracy: the dequantized
weight against the original (max and mean abs error), and the layer output against the dense layer's.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lorakit import quant

from . import common

SECTION_TITLE = "NF4 backends (bench/quant.py)"
REPO_ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("dense", "bitsandbytes", "torchao")
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def original_linear(d: int) -> nn.Linear:
    """The float32 layer every variant is built from (seed 0)."""
    gen = torch.Generator().manual_seed(0)
    layer = nn.Linear(d, d)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d, d, generator=gen) / d**0.5)
        layer.bias.copy_(torch.randn(d, generator=gen) * 0.1)
    return layer.requires_grad_(False)


def build(variant: str, d: int, dtype: torch.dtype, device: torch.device) -> nn.Module:
    source = original_linear(d).to(device)
    if variant == "dense":
        return source.to(dtype)
    return quant.Linear4bit.from_dense(source, variant, compute_dtype=dtype)


def inputs(d: int, tokens: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(tokens, d, generator=gen).to(device, dtype).requires_grad_()
    return x, torch.randn(tokens, d, generator=gen).to(device, dtype)


def step(layer: nn.Module, x: Tensor, grad_out: Tensor) -> None:
    x.grad = None
    layer(x).backward(grad_out)


def weight_bytes(layer: nn.Module) -> int:
    if isinstance(layer, quant.Linear4bit):
        return sum(t.numel() * t.element_size() for t in layer.quant_state().values())
    return layer.weight.numel() * layer.weight.element_size()


def child_memory(variant: str, d: int, tokens: int, dtype: torch.dtype) -> dict[str, int]:
    """Run in a fresh process: peak RSS growth of one forward + backward (CPU)."""
    device = torch.device("cpu")
    layer = build(variant, d, dtype, device)
    x, grad_out = inputs(d, tokens, dtype, device)
    step(layer, x, grad_out)  # warm-up: allocator pools and kernel workspaces exist before the measured step
    x.grad = None
    gc.collect()
    common.reset_peak_rss()
    before = common.proc_status_kib("VmRSS") * 1024
    step(layer, x, grad_out)
    return {"peak_growth": common.proc_status_kib("VmHWM") * 1024 - before, "rss_after_build": before}


def memory_in_subprocesses(d: int, tokens: int, dtype_name: str) -> dict[str, dict[str, int]]:
    results = {}
    for variant in VARIANTS:
        cmd = [sys.executable, "-m", "bench.quant", "--child", variant, "--d", str(d), "--tokens", str(tokens),
               "--dtype", dtype_name]
        proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
        if proc.returncode:
            raise RuntimeError(f"memory subprocess for {variant} failed:\n{proc.stderr[-3000:]}")
        results[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def accuracy(layers: dict[str, nn.Module], d: int, x: Tensor) -> dict[str, tuple[float, float, float]]:
    """(max abs weight error, mean abs weight error, relative output error) per 4-bit variant."""
    weight = original_linear(d).weight.to(x.device)
    with torch.no_grad():
        reference = layers["dense"](x).float()
        out = {}
        for name in VARIANTS[1:]:
            error = (layers[name].dequantized_weight(torch.float32) - weight).abs()
            rel = ((layers[name](x).float() - reference).norm() / reference.norm()).item()
            out[name] = (error.max().item(), error.mean().item(), rel)
    return out


def choice_text(timings: common.Timings, memory: dict[str, dict[str, int]] | None,
                acc: dict[str, tuple[float, float, float]]) -> str:
    """The backend choice, read off this run's numbers."""
    speed = timings.ratio("torchao", "bitsandbytes")
    deq = timings.ratio("dequantize torchao", "dequantize bitsandbytes")
    peak_ratio = memory["torchao"]["peak_growth"] / memory["bitsandbytes"]["peak_growth"] if memory else None
    peak = f", and its peak RSS growth was {peak_ratio:.1f}x" if memory else ""
    return (f"Choice (`backend=\"auto\"`, `lorakit.quant.default_backend`): bitsandbytes on CPU and CUDA when it is "
            f"installed, torchao elsewhere (other devices, or no bitsandbytes). In this run torchao's forward + "
            f"backward took {speed:.1f}x bitsandbytes' time (its dequantization {deq:.1f}x){peak}; the stored bytes "
            f"are the same (both NF4, blocks of 64, absmax double-quantized in blocks of 256), and so is the "
            f"accuracy (mean abs weight error {acc['bitsandbytes'][1]:.3g} vs {acc['torchao'][1]:.3g}). torchao "
            "stays as the fallback because it is pure PyTorch: it runs wherever PyTorch does.")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.quant", description=__doc__.splitlines()[0])
    ap.add_argument("--d", type=int, default=4096, help="layer width (default 4096)")
    ap.add_argument("--tokens", type=int, default=512, help="input rows (default 512)")
    ap.add_argument("--dtype", choices=list(DTYPES), default="bf16", help="compute dtype (default bf16)")
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds (default 10)")
    ap.add_argument("--quick", action="store_true", help="smoke run: d=512, 64 tokens, 3 rounds")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    common.add_update_md_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.d, args.tokens, args.repeats = 512, 64, 3
    return args


def main(argv: Sequence[str] | None = None, out: Callable[[str], object] = print) -> int:
    args = parse_args(argv)
    dtype = DTYPES[args.dtype]
    if args.child:
        print(json.dumps(child_memory(args.child, args.d, args.tokens, dtype)))
        return 0
    device = torch.device(args.device)
    log = common.progress_logger()
    load_before = common.load_average()
    quantize_s = {}
    layers = {}
    for variant in VARIANTS:
        started = time.perf_counter()
        layers[variant] = build(variant, args.d, dtype, device)
        quantize_s[variant] = time.perf_counter() - started
    log(f"built {list(layers)}")
    x, grad_out = inputs(args.d, args.tokens, dtype, device)
    acc = accuracy(layers, args.d, x)
    cases = {name: common.Case(lambda layer=layer: step(layer, x, grad_out)) for name, layer in layers.items()}
    cases.update({f"dequantize {name}": common.Case(lambda layer=layers[name]: layer.dequantized_weight())
                  for name in VARIANTS[1:]})
    timings = common.interleaved_timings(cases, repeats=args.repeats, warmup=2, device=device)
    log("timed")
    memory = memory_in_subprocesses(args.d, args.tokens, args.dtype) if device.type == "cpu" else None
    log("memory measured")

    rows = []
    for name in VARIANTS:
        ratio = "1.000" if name == "dense" else timings.ratio_shown(name, "dense")[1]
        deq = "" if name == "dense" else f"{1e3 * timings.median('dequantize ' + name):.1f}"
        err = ("", "", "") if name == "dense" else (f"{acc[name][0]:.2e}", f"{acc[name][1]:.2e}", f"{acc[name][2]:.4f}")
        stored = weight_bytes(layers[name])
        rows.append([name, f"{1e3 * timings.median(name):.1f}", ratio, deq, f"{quantize_s[name]:.2f}",
                     common.format_bytes(stored), f"{stored / (args.d * args.d * 2):.3f}",
                     common.format_bytes(memory[name]["peak_growth"]) if memory else "n/a", *err])
    headers = ["variant", "fwd+bwd ms", "vs dense", "dequantize ms", "build s", "weight stored", "vs bf16",
               "peak RSS growth", "max abs err W", "mean abs err W", "rel err out"]
    body = "\n\n".join([
        f"Command: `{common.command_line('bench.quant', argv)}` (from the repository root)",
        f"Code: lorakit at commit {common.git_revision()}",
        f"Machine: {common.describe_machine(device, ['bitsandbytes', 'torchao'])}",
        f"Date: {common.today()}; 1-minute load average before / after the run: {load_before:.2f} / "
        f"{common.load_average():.2f} (a shared machine: the absolute times are noisy, the paired ratios less so)",
        f"Setup: one frozen {args.d} x {args.d} layer with bias, input ({args.tokens}, {args.d}) in "
        f"{args.dtype} with requires_grad, compute dtype {args.dtype}; {args.repeats} interleaved rounds, medians; "
        "ratio = median of per-round ratios (interquartile range). Memory: one subprocess per variant.",
        common.markdown_table(headers, rows),
        choice_text(timings, memory, acc),
    ])
    return common.publish_section(SECTION_TITLE, body, args.update_md, out, device)


if __name__ == "__main__":
    raise SystemExit(main())
