"""One LoRA training step of a Llama-architecture decoder with a 128k vocabulary: peak memory and step time.

Run from the repository root::

    python -m bench.llm_step                          # the issue's shape, every variant, 3 timed steps each
    python -m bench.llm_step --layers 2 --seq 256 --vocab 32000 --steps 2   # a quick run (numbers meaningless)
    python -m bench.llm_step --variants peft lorakit-fused     # some variants only
    python -m bench.llm_step --update-md              # also write the results into BENCHMARKS.md
    python -m bench.llm_step --worker lorakit-fused   # one variant in this process (JSON), what the run spawns

Model: a randomly initialised ``LlamaForCausalLM`` (default 4 layers, hidden 512, 8 heads / 2 KV heads, MLP
1536, vocabulary 128,256 as Llama 3, untied head), float32, a batch of 4 x 1024 random token ids with
labels = input ids, LoRA r=16, alpha=32 on every linear layer of the blocks (the head stays frozen),
``torch.optim.AdamW`` over the LoRA parameters. A step is ``loss.backward(); opt.step(); opt.zero_grad()``.

Each variant runs in its own subprocess: one warm-up step (compilation, optimizer state), then
``--steps`` timed steps; the reported time is their median. Memory is the peak RSS growth over the
first timed step: the kernel's high-water mark (VmHWM) is reset through ``/proc/self/clear_refs`` just
before it, and the growth is VmHWM after the step minus VmRSS before it. glibc's adaptive mmap threshold
is pinned (``MALLOC_MMAP_THRESHOLD_``) so that freed large tensors go back to the OS and do not hide
in the heap between steps. Ratios are to HF+PEFT plain of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from . import common

SECTION_TITLE = "LLM training step: Llama architecture, 128k vocabulary (bench/llm_step.py)"
REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "RESULT_JSON "
LORA_R, LORA_ALPHA = 16, 32
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Targets from issue 17 (lorakit fused loss + checkpointing against the peers).
TARGET_MEMORY_VS_PLAIN = 0.20
TARGET_MEMORY_VS_CKPT_CCE = 0.50
TARGET_TIME_VS_PLAIN = 1.05
TARGET_TIME_VS_CKPT_CCE = 1.00


@dataclass(frozen=True)
class Variant:
    """One row of the table: which library adapts the model, whether the blocks are checkpointed, and which
    loss: ``hf`` (``model(..., labels=...).loss``, full logits), ``cce`` (Cut Cross-Entropy's
    torch_compile implementation), ``fused`` (``lorakit.causal_lm_loss``: gradients computed in the forward's
    chunk loop), ``fused-recompute`` (the same loss through ``reduction="none"``, which recomputes each chunk's
    logits in backward: the other strategy, for comparison)."""

    name: str
    library: str
    checkpointing: bool = False
    loss: str = "hf"
    nf4: bool = False  # the frozen block linears stored in 4-bit NF4 (lorakit.quantize) before LoRA


# lorakit with each feature alone and all together (offload is plain checkpointing on the CPU; packing is
# measured on real E2E pairs by bench/packing.py). New features become new fields and new rows here.
VARIANTS = [
    Variant("peft", "peft"),
    Variant("peft-ckpt", "peft", checkpointing=True),
    Variant("peft-cce", "peft", loss="cce"),
    Variant("peft-ckpt-cce", "peft", checkpointing=True, loss="cce"),
    Variant("lorakit", "lorakit"),
    Variant("lorakit-ckpt", "lorakit", checkpointing=True),
    Variant("lorakit-nf4", "lorakit", nf4=True),
    Variant("lorakit-fused", "lorakit", loss="fused"),
    Variant("lorakit-fused-ckpt", "lorakit", checkpointing=True, loss="fused"),
    Variant("lorakit-fused-ckpt-nf4", "lorakit", checkpointing=True, loss="fused", nf4=True),
    Variant("lorakit-fused-recompute", "lorakit", loss="fused-recompute"),
]
BY_NAME = {v.name: v for v in VARIANTS}


def build(variant: Variant, args: argparse.Namespace) -> torch.nn.Module:
    """The random-init model with LoRA from the variant's library, checkpointing as asked, in train mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=args.hidden, intermediate_size=args.mlp, num_hidden_layers=args.layers,
                         num_attention_heads=8, num_key_value_heads=2, vocab_size=args.vocab,
                         max_position_embeddings=args.seq, tie_word_embeddings=False)
    return adapt(LlamaForCausalLM(config), variant)


def adapt(model: torch.nn.Module, variant: Any, compute_dtype: torch.dtype | None = None) -> torch.nn.Module:
    """LoRA from ``variant.library`` on every block linear (the NF4 base first when ``variant.nf4``, computing in
    ``compute_dtype``), block checkpointing when ``variant.checkpointing``; the model in train mode. Shared by
    bench/gpu_llm_check.py, whose variants have the same three fields."""
    if variant.library == "peft":
        import peft

        model = peft.get_peft_model(model, peft.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA,
                                                           target_modules=LORA_TARGETS))
    else:
        import lorakit

        if variant.nf4:
            lorakit.quantize(model, "nf4", compute_dtype=compute_dtype)
        lorakit.inject(model, lorakit.LoraConfig(r=LORA_R, lora_alpha=LORA_ALPHA, target_modules=LORA_TARGETS))
    if variant.checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    return model.train()


def loss_function(variant: Variant, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ids -> scalar loss`` for the variant's loss (labels = ids, shifted as Hugging Face does)."""
    if variant.loss == "hf":
        return lambda ids: model(input_ids=ids, labels=ids).loss
    if variant.loss == "fused":
        import lorakit

        return lambda ids: lorakit.causal_lm_loss(model, ids)
    if variant.loss == "fused-recompute":  # reduction="none" recomputes each chunk's logits in backward
        import lorakit

        return lambda ids: lorakit.causal_lm_loss(model, ids, reduction="none").sum() / lorakit.count_label_tokens(ids)
    from cut_cross_entropy import linear_cross_entropy

    hf = model.get_base_model() if hasattr(model, "get_base_model") else model

    def cce(ids: torch.Tensor) -> torch.Tensor:
        hidden = hf.model(input_ids=ids, use_cache=False).last_hidden_state
        return linear_cross_entropy(hidden, hf.lm_head.weight, ids, shift=True, impl="torch_compile")

    return cce


def worker(variant: Variant, args: argparse.Namespace) -> dict:
    """Build, warm up, then time ``args.steps`` steps; the first timed step's peak RSS growth."""
    model = build(variant, args)
    loss_of = loss_function(variant, model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))

    def step() -> float:
        loss = loss_of(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    first_loss = step()  # warm-up
    times, growth = [], None
    for k in range(args.steps):
        if k == 0:
            common.reset_peak_rss()
            rss_before = common.proc_status_kib("VmRSS")  # the model, optimizer state and interpreter
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        if k == 0:
            growth = (common.proc_status_kib("VmHWM") - rss_before) * 1024
    return {"variant": variant.name, "step_s": statistics.median(times), "times": times,
            "peak_growth_bytes": growth, "rss_before_bytes": rss_before * 1024, "first_loss": first_loss}


def run_variant(name: str, argv: list[str]) -> dict:
    """One variant in a fresh subprocess (its own peak RSS); its JSON result."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072", PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "bench.llm_step", *argv, "--worker", name], cwd=REPO_ROOT,
                          env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    raise RuntimeError(f"variant {name} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def pooled(runs: list[dict]) -> dict:
    """One variant's processes (one per round) as one result: the median over every timed step of every
    process, the median peak growth, and the slowest/fastest step (the spread the noise of the machine made)."""
    times = [t for r in runs for t in r["times"]]
    return {**runs[0], "step_s": statistics.median(times), "times": times,
            "peak_growth_bytes": statistics.median(r["peak_growth_bytes"] for r in runs),
            "rss_before_bytes": statistics.median(r["rss_before_bytes"] for r in runs)}


def report(results: dict[str, dict], args: argparse.Namespace, command: str, loads: tuple[float, float],
           revision: str) -> str:
    base = results.get("peft")
    rows = []
    for name, r in results.items():
        mem_ratio = r["peak_growth_bytes"] / base["peak_growth_bytes"] if base else float("nan")
        time_ratio = r["step_s"] / base["step_s"] if base else float("nan")
        rows.append([name, common.format_bytes(r["rss_before_bytes"]), common.format_bytes(r["peak_growth_bytes"]),
                     f"{r['step_s']:.2f} ({min(r['times']):.2f}-{max(r['times']):.2f})",
                     f"{mem_ratio:.3f}", f"{time_ratio:.3f}", f"{r['first_loss']:.4f}"])
    table = common.markdown_table(["variant", "RSS at step start", "peak RSS growth", "step s: median (range)",
                                   "memory / peft",
                                   "time / peft", "loss (warm-up step)"], rows)
    lines = [f"Command: `{command}`", "", f"Code: lorakit at commit {revision}", "",
             f"Machine: {common.describe_machine('cpu', ['transformers', 'peft', 'cut-cross-entropy'])}", "",
             f"Date: {common.today()}; 1-minute load average before / after the run: {loads[0]:.2f} / "
             f"{loads[1]:.2f} (2 cores shared with other jobs: absolute times are inflated and noisy, compare "
             "ratios, and only roughly)", "",
             f"Shape: {args.layers} layers, hidden {args.hidden}, MLP {args.mlp}, vocabulary {args.vocab}, batch "
             f"{args.batch} x {args.seq} tokens; LoRA r={LORA_R} on every linear layer of the blocks; "
             f"{args.rounds} round(s), each variant in a fresh process per round (order rotated); in each, a warm-up "
             f"step then {args.steps} timed steps; step time: median over all timed steps of all rounds (range: "
             "fastest-slowest step); memory: over the first timed step, median over rounds.", "", table]
    goal = results.get("lorakit-fused-ckpt")
    if base and goal and "peft-ckpt-cce" in results:
        cce = results["peft-ckpt-cce"]
        checks = [("memory vs HF+PEFT plain", goal["peak_growth_bytes"] / base["peak_growth_bytes"],
                   TARGET_MEMORY_VS_PLAIN),
                  ("memory vs HF+PEFT+ckpt+CCE", goal["peak_growth_bytes"] / cce["peak_growth_bytes"],
                   TARGET_MEMORY_VS_CKPT_CCE),
                  ("step time vs HF+PEFT plain", goal["step_s"] / base["step_s"], TARGET_TIME_VS_PLAIN),
                  ("step time vs HF+PEFT+ckpt+CCE", goal["step_s"] / cce["step_s"], TARGET_TIME_VS_CKPT_CCE)]
        lines += ["", "Targets (issue 17) for lorakit + fused loss + checkpointing:", "",
                  common.markdown_table(["target", "ratio", "limit", "verdict"],
                                        [[n, f"{v:.3f}", f"{lim:.2f}", common.verdict(v, lim)]
                                         for n, v, lim in checks])]
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--mlp", type=int, default=1536)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up step)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run every variant this many times, each in a fresh process, order rotated per round")
    ap.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    ap.add_argument("--worker", choices=list(BY_NAME), help=argparse.SUPPRESS)
    common.add_update_md_argument(ap)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        print(RESULT_TAG + json.dumps(worker(BY_NAME[args.worker], args)), flush=True)
        return 0
    shape_argv = [f"--{key}={getattr(args, key)}" for key in ("layers", "hidden", "mlp", "vocab", "seq", "batch",
                                                              "steps")]
    log = common.progress_logger()
    revision = common.git_revision()  # at the start: the code the subprocesses run
    load_before = common.load_average()
    runs: dict[str, list[dict]] = {name: [] for name in args.variants}
    for round_index in range(args.rounds):  # each round runs every variant once, the order rotated per round
        shift = round_index % len(args.variants)
        for name in args.variants[shift:] + args.variants[:shift]:
            log(f"round {round_index + 1}/{args.rounds}: variant {name} ...")
            r = run_variant(name, shape_argv)
            runs[name].append(r)
            log(f"  {name}: {common.format_bytes(r['peak_growth_bytes'])}, step {r['step_s']:.2f} s {r['times']}")
    results = {name: pooled(rs) for name, rs in runs.items()}
    body = report(results, args, common.command_line("bench.llm_step", argv), (load_before, common.load_average()),
                  revision)
    return common.publish_section(SECTION_TITLE, body, args.update_md)


if __name__ == "__main__":
    raise SystemExit(main())
