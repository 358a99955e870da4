"""Issue 17's GPU check: one LoRA training step of a Llama-3.2-1B-shaped model, tokens/s and peak memory.

Run from the repository root (``scripts/gpu_llm_check.sh`` runs the first line and writes into ``$OUT``)::

    python -m bench.gpu_llm_check --device cuda --dtype bfloat16 --out runs/gpu_llm_check
    python -m bench.gpu_llm_check --device cpu --tiny            # the same code path at a tiny shape (debugging)
    python -m bench.gpu_llm_check --variants peft lorakit-fused-ckpt    # some variants only
    python -m bench.gpu_llm_check --worker peft ...              # one variant in this process (JSON), what it spawns

Model: a randomly initialised ``LlamaForCausalLM`` of Llama-3.2-1B's shape (16 layers, hidden 2048, MLP 8192,
32 heads / 8 KV heads of 64, vocabulary 128,256, the head tied to the embedding as in Llama-3.2-1B), built in
``--dtype`` directly on ``--device`` with the same seed in every variant. A batch of 4 x 2048 random token ids,
labels = input ids (every token is real and scored). LoRA r=16, alpha=32 on every linear layer of the blocks
(q, k, v, o, gate, up, down; the head stays frozen), each library's default adapter dtype, the step under
``torch.autocast(dtype)``, ``torch.optim.AdamW`` over the LoRA parameters. A step is
``loss.backward(); opt.step(); opt.zero_grad()``.

Variants (each in its own subprocess): HF+PEFT plain (``model(..., labels=...).loss``, full logits), HF+PEFT with
checkpointing, HF+PEFT with checkpointing and Liger-Kernel's fused linear cross-entropy (when ``liger_kernel``
imports), HF+PEFT with checkpointing and Cut Cross-Entropy ``impl="cce"`` (when ``cut_cross_entropy`` imports
and the device is CUDA), lorakit with ``lorakit.causal_lm_loss`` and checkpointing, the same on an NF4 base
(``lorakit.quantize``), and lorakit with the fused loss without checkpointing. A variant whose package is
missing is reported as skipped, with the reason.

Measurement: ``--warmup`` steps, then ``--steps`` timed steps (``torch.cuda.synchronize`` around each); the
reported time is their median, tokens/s = batch x seq / median. Memory on CUDA is
``torch.cuda.max_memory_allocated`` over the timed steps (the peak stats are reset after the warm-up, so it
includes the weights, the optimizer state and the step's transient memory); on the CPU it is the peak RSS
growth over the first timed step (VmHWM, Linux), for debugging only. Ratios are to HF+PEFT plain of the same
run; the verdicts are issue 17's GPU target: lorakit >= 1.3x HF+PEFT plain's tokens/s and <= 0.5x its peak
memory. The table and the raw results go to ``--out`` (``gpu_llm_check.md``, ``gpu_llm_check.json``).
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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from . import common
from .llm_step import LORA_R, adapt

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULT_TAG = "RESULT_JSON "

# Issue 17's GPU target, for lorakit against HF+PEFT plain.
TARGET_TOKENS_RATIO = 1.3  # at least
TARGET_MEMORY_RATIO = 0.5  # at most

#: Llama-3.2-1B's shape, and a tiny one for --tiny (the CPU debugging run).
FULL_SHAPE = {"layers": 16, "hidden": 2048, "mlp": 8192, "heads": 32, "kv_heads": 8, "vocab": 128256,
              "batch": 4, "seq": 2048}
TINY_SHAPE = {"layers": 2, "hidden": 64, "mlp": 128, "heads": 4, "kv_heads": 2, "vocab": 4096,
              "batch": 2, "seq": 128}


@dataclass(frozen=True)
class Variant:
    """One row: the library that adds LoRA, checkpointing, the loss (``hf``: the model's own, full logits;
    ``liger``: Liger FLCE; ``cce``: Cut Cross-Entropy; ``fused``: ``lorakit.causal_lm_loss``), NF4 base."""

    name: str
    label: str
    library: str
    checkpointing: bool = False
    loss: str = "hf"
    nf4: bool = False


# In order of importance: a run cut short by --budget-s keeps the rows that decide the verdicts.
VARIANTS = [
    Variant("peft", "HF+PEFT plain", "peft"),
    Variant("lorakit-fused-ckpt", "lorakit fused + ckpt", "lorakit", checkpointing=True, loss="fused"),
    Variant("lorakit-fused-ckpt-nf4", "lorakit fused + ckpt + NF4", "lorakit", checkpointing=True, loss="fused",
            nf4=True),
    Variant("peft-ckpt", "HF+PEFT + ckpt", "peft", checkpointing=True),
    Variant("peft-ckpt-cce", "HF+PEFT + ckpt + CCE (cce)", "peft", checkpointing=True, loss="cce"),
    Variant("peft-ckpt-liger", "HF+PEFT + ckpt + Liger FLCE", "peft", checkpointing=True, loss="liger"),
    Variant("lorakit-fused", "lorakit fused", "lorakit", loss="fused"),
]
BY_NAME = {v.name: v for v in VARIANTS}


class Skip(Exception):
    """The variant cannot run here (a package missing, a device it needs); the message says why."""


def _unavailable(variant: Variant, device: torch.device) -> str | None:
    """Why ``variant`` cannot run, known without importing anything (a package not installed, a device)."""
    import importlib.util

    for package, needed in (("liger_kernel", variant.loss == "liger"), ("cut_cross_entropy", variant.loss == "cce"),
                            ("peft", variant.library == "peft")):
        if needed and importlib.util.find_spec(package) is None:
            return f"{package} is not installed"
    if variant.loss in ("liger", "cce") and device.type != "cuda":
        return "its Triton kernels need CUDA"
    return None


def _missing(variant: Variant, device: torch.device) -> str | None:
    """Why ``variant`` cannot run on ``device`` (None when it can)."""
    try:
        if variant.loss == "liger":
            import liger_kernel.transformers  # noqa: F401
        if variant.loss == "cce":
            import cut_cross_entropy  # noqa: F401
        if variant.library == "peft":
            import peft  # noqa: F401
    except Exception as err:  # noqa: BLE001 - any import failure means: not on this machine
        return f"does not import ({type(err).__name__}: {err})"
    if variant.loss in ("liger", "cce") and device.type != "cuda":
        return "its Triton kernels need CUDA"
    return None


def build(variant: Variant, shape: dict[str, int], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The random-init model in ``dtype`` on ``device`` (seed 0), NF4 and LoRA as the variant says, train mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(hidden_size=shape["hidden"], intermediate_size=shape["mlp"],
                         num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                         num_key_value_heads=shape["kv_heads"], head_dim=shape["hidden"] // shape["heads"],
                         vocab_size=shape["vocab"], max_position_embeddings=max(2048, shape["seq"]),
                         rope_theta=500000.0, tie_word_embeddings=True)
    torch.manual_seed(0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # parameters are created in dtype on the device: no float32 copy anywhere
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default)
    return adapt(model, variant, compute_dtype=dtype)


def loss_function(variant: Variant, model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``ids (batch, seq) -> scalar`` mean next-token loss (labels = ids, shifted as Hugging Face does)."""
    if variant.loss == "hf":
        return lambda ids: model(input_ids=ids, labels=ids).loss
    if variant.loss == "fused":
        import lorakit

        return lambda ids: lorakit.causal_lm_loss(model, ids)
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    if variant.loss == "cce":
        from cut_cross_entropy import linear_cross_entropy

        def cce(ids: torch.Tensor) -> torch.Tensor:
            hidden = hf.model(input_ids=ids, use_cache=False).last_hidden_state  # (batch, seq, hidden)
            return linear_cross_entropy(hidden, hf.lm_head.weight, ids, shift=True, impl="cce")

        return cce
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    flce = LigerFusedLinearCrossEntropyLoss()

    def liger(ids: torch.Tensor) -> torch.Tensor:
        hidden = hf.model(input_ids=ids, use_cache=False).last_hidden_state  # (batch, seq, hidden)
        shifted = hidden[:, :-1].reshape(-1, hidden.shape[-1])  # position t predicts token t + 1
        out = flce(hf.lm_head.weight, shifted, ids[:, 1:].reshape(-1))
        return out[0] if isinstance(out, tuple) else out  # some releases return (loss, z_loss)

    return liger


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def worker(variant: Variant, args: argparse.Namespace) -> dict:
    """Build, warm up, time ``args.steps`` steps; their median, tokens/s and peak memory (see the module doc)."""
    device, dtype, shape = torch.device(args.device), getattr(torch, args.dtype), shape_of(args)
    reason = _missing(variant, device)
    if reason is not None:
        raise Skip(reason)
    t0 = time.perf_counter()
    model = build(variant, shape, device, dtype)
    loss_of = loss_function(variant, model)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    gen = torch.Generator(device="cpu").manual_seed(1)
    ids = torch.randint(0, shape["vocab"], (shape["batch"], shape["seq"]), generator=gen).to(device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else nullcontext()

    def step() -> torch.Tensor:
        with autocast:
            loss = loss_of(ids)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    first_loss = float(step())
    for _ in range(args.warmup - 1):
        step()
    build_s = time.perf_counter() - t0
    _sync(device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        common.reset_peak_rss()
        before = common.proc_status_kib("VmRSS") * 1024
    times, peak = [], None
    for k in range(args.steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
        if k == 0 and device.type != "cuda":
            peak = common.proc_status_kib("VmHWM") * 1024 - before  # growth over the first timed step
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
    step_s = statistics.median(times)
    return {"variant": variant.name, "tokens_per_s": shape["batch"] * shape["seq"] / step_s, "step_s": step_s,
            "times": times, "peak_bytes": peak, "before_bytes": before, "first_loss": first_loss,
            "build_and_warmup_s": build_s, "trainable": sum(p.numel() for p in params),
            "adapter_dtypes": sorted({str(p.dtype) for p in params})}


def run_variant(name: str, argv: list[str], timeout_s: float) -> dict:
    """One variant in a fresh subprocess; its JSON result, or ``{"skipped": why}``."""
    env = dict(os.environ, PYTHONWARNINGS="ignore", MALLOC_MMAP_THRESHOLD_="131072")
    cmd = [sys.executable, "-m", "bench.gpu_llm_check", *argv, "--worker", name]
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return {"variant": name, "skipped": f"did not finish in {timeout_s:.0f} s (killed)"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_TAG):
            return json.loads(line[len(RESULT_TAG):])
    tail = proc.stderr.strip().splitlines()[-12:]
    return {"variant": name, "skipped": f"failed (exit {proc.returncode}): " + " / ".join(tail)[-1500:]}


def shape_of(args: argparse.Namespace) -> dict[str, int]:
    shape = dict(TINY_SHAPE if args.tiny else FULL_SHAPE)
    shape.update({k: getattr(args, k) for k in shape if getattr(args, k, None) is not None})
    return shape


def _ratio(num: float | None, den: float | None) -> float | None:
    return None if num is None or not den else num / den


def _times(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def verdicts(results: dict[str, dict]) -> list[dict]:
    """Issue 17's GPU target for each lorakit row that ran: tokens/s and peak memory against HF+PEFT plain."""
    base = results.get("peft", {})
    out = []
    for name, r in results.items():
        if not name.startswith("lorakit") or "skipped" in r or "skipped" in base or not base:
            continue
        tokens = _ratio(r["tokens_per_s"], base["tokens_per_s"])
        memory = _ratio(r["peak_bytes"], base["peak_bytes"])
        tokens_pass = tokens is not None and tokens >= TARGET_TOKENS_RATIO
        memory_pass = memory is not None and memory <= TARGET_MEMORY_RATIO
        out.append({"variant": name, "tokens_ratio": tokens, "memory_ratio": memory, "tokens_pass": tokens_pass,
                    "memory_pass": memory_pass, "pass": tokens_pass and memory_pass})
    return out


def report(results: dict[str, dict], args: argparse.Namespace, command: str, revision: str) -> str:
    """The markdown: command, machine, shape, the table with ratios to HF+PEFT plain, the verdicts."""
    device = torch.device(args.device)
    base = results.get("peft", {})
    memory_name = "peak allocated" if device.type == "cuda" else "peak RSS growth (1st step)"
    rows = []
    for name, r in results.items():
        label = BY_NAME[name].label
        if "skipped" in r:
            rows.append([label, "skipped", "", "", "", "", r["skipped"]])
            continue
        tok = _ratio(r["tokens_per_s"], base.get("tokens_per_s"))
        mem = _ratio(r["peak_bytes"], base.get("peak_bytes"))
        rows.append([label, f"{r['tokens_per_s']:,.0f}", f"{r['step_s'] * 1000:.0f}",
                     common.format_bytes(r["peak_bytes"]), _times(tok), _times(mem),
                     f"loss {r['first_loss']:.4f}; adapters {'/'.join(r['adapter_dtypes'])}"])
    table = common.markdown_table(["variant", "tokens/s", "step ms (median)", memory_name, "tokens/s vs HF+PEFT",
                                   "memory vs HF+PEFT", "notes"], rows, align="lrrrrrl")
    shape = shape_of(args)
    packages = ["transformers", "peft", "bitsandbytes", "torchao", "liger-kernel", "cut-cross-entropy"]
    lines = [f"Command: `{command}`", "", f"Code: lorakit at commit {revision}", "",
             f"Machine: {common.describe_machine(device, packages)}", "", f"Date: {common.today()}", "",
             f"Shape: {shape['layers']} layers, hidden {shape['hidden']}, MLP {shape['mlp']}, {shape['heads']} heads / "
             f"{shape['kv_heads']} KV heads, vocabulary {shape['vocab']:,} (tied head), batch {shape['batch']} x "
             f"{shape['seq']} tokens, {args.dtype} weights and autocast; LoRA r={LORA_R} on q/k/v/o/gate/up/down; "
             f"{args.warmup} warm-up steps, then the median of {args.steps}.", "", table, ""]
    checks = verdicts(results)
    if checks:
        lines += [f"Issue 17's GPU target: lorakit >= {TARGET_TOKENS_RATIO}x HF+PEFT plain tokens/s and <= "
                  f"{TARGET_MEMORY_RATIO}x its peak memory.", ""]
        rows = [[BY_NAME[c["variant"]].label, _times(c["tokens_ratio"]), "PASS" if c["tokens_pass"] else "MISS",
                 _times(c["memory_ratio"]), "PASS" if c["memory_pass"] else "MISS", "PASS" if c["pass"] else "MISS"]
                for c in checks]
        lines.append(common.markdown_table(["variant", "tokens/s ratio", ">= 1.3x", "memory ratio", "<= 0.5x",
                                            "verdict"], rows, align="lrcrcc"))
    else:
        lines.append("No verdict: HF+PEFT plain or every lorakit row is missing.")
    if device.type != "cuda":
        lines += ["", "Not a GPU run: a debugging run of the code path, its numbers mean nothing."]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the check) or cpu (debugging, with --tiny)")
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    ap.add_argument("--tiny", action="store_true", help="a tiny shape (2 layers, hidden 64, vocabulary 4096, 2 x 128)")
    for key in FULL_SHAPE:
        ap.add_argument(f"--{key.replace('_', '-')}", dest=key, type=int, default=None,
                        help=f"override the shape (Llama-3.2-1B: {FULL_SHAPE[key]}, tiny: {TINY_SHAPE[key]})")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (kernels, allocator, optimizer state)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per variant")
    ap.add_argument("--variants", nargs="+", choices=list(BY_NAME), default=list(BY_NAME))
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_llm_check",
                    help="folder for gpu_llm_check.md and .json (default $OUT, else runs/gpu_llm_check)")
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="start no variant after this many seconds; each variant gets at most what is left")
    ap.add_argument("--variant-timeout-s", type=float, default=150.0,
                    help="a variant still running after this many seconds is killed and reported as such")
    ap.add_argument("--worker", choices=list(BY_NAME), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        ap.error("--warmup and --steps must be at least 1")
    return args


def _worker_argv(args: argparse.Namespace) -> list[str]:
    argv = [f"--device={args.device}", f"--dtype={args.dtype}", f"--warmup={args.warmup}", f"--steps={args.steps}"]
    shape = [f"--{key.replace('_', '-')}={value}" for key, value in shape_of(args).items()]
    return argv + (["--tiny"] if args.tiny else []) + shape


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:
        try:
            result = worker(BY_NAME[args.worker], args)
        except Skip as why:
            result = {"variant": args.worker, "skipped": str(why)}
        print(RESULT_TAG + json.dumps(result), flush=True)
        return 0
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench.gpu_llm_check: --device cuda but torch sees no GPU (torch "
              f"{torch.__version__}); use --device cpu --tiny to debug on the CPU", file=sys.stderr)
        return 1
    log, start = common.progress_logger(), time.monotonic()
    revision = common.git_revision()  # at the start: the code the subprocesses run
    results: dict[str, dict] = {}
    for name in args.variants:
        left = args.budget_s - (time.monotonic() - start)
        if left < 20:
            results[name] = {"variant": name, "skipped": f"not started: the {args.budget_s:.0f} s budget was spent"}
            continue
        reason = _unavailable(BY_NAME[name], torch.device(args.device))
        if reason is not None:  # no subprocess (its start-up alone takes seconds) for a package that is not there
            results[name] = r = {"variant": name, "skipped": reason}
        else:
            log(f"variant {name} ...")
            results[name] = r = run_variant(name, _worker_argv(args), min(left, args.variant_timeout_s))
        log(f"  {name}: " + (r["skipped"] if "skipped" in r else
                             f"{r['tokens_per_s']:,.0f} tokens/s, {common.format_bytes(r['peak_bytes'])}, steps "
                             f"{[round(t, 3) for t in r['times']]} s, build+warm-up {r['build_and_warmup_s']:.0f} s"))
    body = report(results, args, common.command_line("bench.gpu_llm_check", argv), revision)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_llm_check.md").write_text(body)
    (out / "gpu_llm_check.json").write_text(json.dumps({"args": vars(args), "revision": revision, "results": results,
                                                        "verdicts": verdicts(results)}, indent=1))
    print(body)
    print(f"written: {out / 'gpu_llm_check.md'}, {out / 'gpu_llm_check.json'} ({time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
