"""Real (non-pad) tokens per second on the real E2E training pairs: packed rows against padded batches.

Run from the repository root::

    python -m bench.packing                 # the issue's shape, 4 timed rounds (about 5 minutes on 2 cores)
    python -m bench.packing --quick         # smoke run: small vocabulary, 1 round (numbers meaningless)
    python -m bench.packing --update-md     # also write the results into BENCHMARKS.md
    python -m bench.packing --memory-only lorakit-packed   # one variant's peak RSS growth over one step (JSON)
    python -m bench.packing --positions --update-md        # positions per real token by batch size (seconds)

Data: the training pairs of the real E2E ``trainset.csv`` (``$LORAKIT_DATA`` or ``../shared/data``), encoded
exactly as ``task: e2e`` encodes them for training (prompt ``{mr}\\n`` + reference + EOS, real GPT-2 BPE, loss on
the reference tokens), in random order (seed 0); each round takes the next ``--examples`` pairs.

Model: the issue's shape, a randomly initialised Llama-architecture model (4 layers, hidden 512, 8 heads / 2 KV
heads, MLP 1536, vocabulary 128,256, untied head, ``sdpa`` attention), fp32 on the CPU; LoRA r=16, alpha=32 on
every linear layer of the blocks. One timed call = forward, loss, backward of one micro-batch (the optimizer
step, the same for every variant, is left out). Variants:

* ``peft-padded``: PEFT LoRA, the batch padded to its longest pair (dynamic padding, as HF's collators do),
  ``model(input_ids, attention_mask, labels).loss``;
* ``lorakit-padded``: lorakit LoRA, the same padded batch, the loss of ``task: e2e``;
* ``lorakit-packed``: lorakit LoRA, the same pairs packed into rows of ``--row-length`` tokens
  (``data.packing: true``: :func:`lorakit.data.packing.pack_batch`, positions restarting per pair, attention
  kept inside each pair by transformers' block-diagonal mask from the position ids).

Before timing, the per-pair loss sums of the padded and the packed batch (same lorakit model) are compared;
the largest difference is reported. Times are interleaved (``bench/common.py``); the real tokens of a batch are
the same for all variants, so a tokens/s ratio is the inverse of the paired time ratio. Memory: one subprocess
per variant, the growth of peak RSS over one step after the model and the batch exist.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

import lorakit
from lorakit.data.packing import forward_inputs, pack_batch, pack_rows

from . import common

VARIANTS = ("peft-padded", "lorakit-padded", "lorakit-packed")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
SHAPE = {"num_hidden_layers": 4, "hidden_size": 512, "num_attention_heads": 8, "num_key_value_heads": 2,
         "intermediate_size": 1536, "vocab_size": 128_256, "max_position_embeddings": 2048}


def _shared_data() -> Path:
    if os.environ.get("LORAKIT_DATA"):
        return Path(os.environ["LORAKIT_DATA"])
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def e2e_items(limit: int) -> tuple[list[dict], object]:
    """``limit`` training items (pairs) of the real E2E train split in random order (seed 0), and the task."""
    from transformers import AutoTokenizer

    from lorakit.train.config import validate
    from lorakit.train.tasks import get_task

    data = _shared_data()
    task = get_task("e2e")
    cfg = validate({"model": {"name_or_path": "x"}, "data": {"max_length": 256, "max_prompt_length": 128}}).data
    tokenizer = AutoTokenizer.from_pretrained(str(data / "gpt2-vocab"))
    examples = task.load("train", data / "e2e")
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0)).tolist()
    items = task.encode([examples[i] for i in order[:limit]], tokenizer, cfg, training=True)
    shuffle = torch.randperm(len(items), generator=torch.Generator().manual_seed(1)).tolist()
    return [items[i] for i in shuffle[:limit]], task


def build(variant: str, vocab: int):
    """The model of ``variant`` (seeded: every variant starts from the same base weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**dict(SHAPE, vocab_size=vocab), tie_word_embeddings=False,
                                         attn_implementation="sdpa"))
    if variant.startswith("peft"):
        import peft

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return peft.get_peft_model(model, peft.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS)).train()
    lorakit.inject(model, lorakit.LoraConfig(r=16, lora_alpha=32, target_modules=TARGETS))
    return model.train()


def step_fn(variant: str, model, task, batches: list[dict], row_length: int) -> Callable[[], None]:
    """One call = forward + loss + backward of the next batch (cycling)."""
    packed = [pack_batch(b, row_length) for b in batches] if variant.endswith("packed") else None
    state = {"i": 0}

    def run() -> None:
        k = state["i"] % len(batches)
        state["i"] += 1
        if variant.startswith("peft"):
            b = batches[k]
            loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        else:
            loss = task.loss(model, packed[k] if packed is not None else batches[k])
        loss.backward()
        model.zero_grad(set_to_none=True)

    return run


def per_pair_losses(model, batch: dict, row_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed loss of each pair: from the padded batch and from its packed rows (``(pairs,)`` each)."""
    with torch.no_grad():
        def token_losses(b):
            logits = model(**forward_inputs(b)).logits[:, :-1].float()
            return F.cross_entropy(logits.transpose(1, 2), b["labels"][:, 1:], reduction="none")

        padded = token_losses(batch).sum(1)
        lengths = batch["attention_mask"].sum(1).tolist()
        rows = pack_rows(lengths, row_length)
        packed_tokens = token_losses(pack_batch(batch, row_length))
        packed = torch.zeros_like(padded)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                packed[i] = packed_tokens[r, start:start + lengths[i] - 1].sum()
                start += lengths[i]
    return padded, packed



def positions_table(args) -> str:
    """Positions computed per real token, padded (to the longest pair of each batch) and packed (rows of
    ``--row-length``), over consecutive batches of 4,096 shuffled E2E training pairs. With a step whose cost
    is proportional to positions (here the LM head dominates), padded / packed is the speed-up packing can give."""
    items, _task = e2e_items(4096)
    lengths = [len(it["input_ids"]) for it in items]
    rows = []
    for size in (4, 8, 16, 32, 64, 128):
        real = padded = packed = 0
        for k in range(0, len(lengths) - size + 1, size):
            chunk = lengths[k:k + size]
            real += sum(chunk)
            padded += max(chunk) * size
            layout = pack_rows(chunk, args.row_length)
            packed += len(layout) * max(sum(chunk[i] for i in row) for row in layout)
        rows.append([size, f"{padded / real:.3f}", f"{packed / real:.3f}", f"{padded / packed:.2f}"])
    return "\n".join([
        f"Command: `{common.command_line('bench.packing')}` (from the repository root)", "",
        f"Code: lorakit at commit {common.git_revision()}", "",
        f"{len(lengths)} real E2E training pairs (shuffled, seed 0), tokens per pair: min {min(lengths)}, mean "
        f"{sum(lengths) / len(lengths):.1f}, max {max(lengths)}; packed rows of {args.row_length} tokens. No model "
        "runs: these are counts. When the step's cost is proportional to the positions, the last column is the "
        "largest speed-up packing can give over dynamic padding at that batch size.", "",
        common.markdown_table(["pairs per batch", "padded positions / real token", "packed positions / real token",
                               "padded / packed"], rows),
    ])


def memory_only(variant: str, args) -> dict:
    """Peak RSS growth over one step (Linux: the peak is reset through /proc/self/clear_refs after the model
    and the batch are built, so building does not hide the step's peak)."""
    items, task = e2e_items(args.examples)
    batch = task.collate(items[:args.examples])
    model = build(variant, args.vocab)
    run = step_fn(variant, model, task, [batch], args.row_length)
    common.reset_peak_rss()
    before = common.proc_status_kib("VmRSS")
    run()
    return {"variant": variant, "peak_rss_growth_bytes": (common.proc_status_kib("VmHWM") - before) * 1024}


def measure_memory(variant: str, args) -> int:
    cmd = [sys.executable, "-m", "bench.packing", "--memory-only", variant, "--examples", str(args.examples),
           "--vocab", str(args.vocab), "--row-length", str(args.row_length)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800,
                         cwd=Path(__file__).resolve().parents[1])
    return int(json.loads(out.stdout.strip().splitlines()[-1])["peak_rss_growth_bytes"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--examples", type=int, default=32, help="E2E pairs per micro-batch")
    ap.add_argument("--rounds", type=int, default=4, help="timed rounds (each a new batch)")
    ap.add_argument("--row-length", type=int, default=1024, help="packed row length (data.max_length)")
    ap.add_argument("--vocab", type=int, default=SHAPE["vocab_size"])
    ap.add_argument("--quick", action="store_true", help="vocabulary 50,257, 1 round: a smoke run")
    ap.add_argument("--memory-only", choices=VARIANTS, default=None)
    ap.add_argument("--positions", action="store_true", help="only the positions-per-real-token table")
    common.add_update_md_argument(ap)
    args = ap.parse_args(argv)
    if args.quick:
        args.vocab, args.rounds = 50_257, 1
    if args.memory_only:
        print(json.dumps(memory_only(args.memory_only, args)))
        return 0
    if args.positions:
        return common.publish_section("bench.packing: positions per real token on E2E, padded vs packed",
                                      positions_table(args), args.update_md)
    log = common.progress_logger()
    load_before = common.load_average()
    items, task = e2e_items(args.examples * (args.rounds + 1))
    batches = [task.collate(items[k * args.examples:(k + 1) * args.examples]) for k in range(args.rounds + 1)]
    real = [int(b["attention_mask"].sum()) for b in batches]
    padded_tokens = [b["input_ids"].numel() for b in batches]
    packed_tokens = [pack_batch(b, args.row_length)["input_ids"].numel() for b in batches]
    log(f"{len(batches)} batches of {args.examples} pairs: {sum(real)} real tokens, {sum(padded_tokens)} padded, "
        f"{sum(packed_tokens)} packed")

    models = {v: build(v, args.vocab) for v in VARIANTS}
    padded_loss, packed_loss = per_pair_losses(models["lorakit-packed"], batches[0], args.row_length)
    loss_gap = float((padded_loss - packed_loss).abs().max())
    rel_gap = float(((padded_loss - packed_loss).abs() / padded_loss.abs()).max())
    log(f"per-pair losses padded vs packed: largest difference {loss_gap:.2e} ({rel_gap:.1e} relative)")

    # warm-up = the batch of round 0 for every variant; timed rounds use batches 1..rounds
    cases = {v: common.Case(step_fn(v, models[v], task, batches, args.row_length)) for v in VARIANTS}
    timings = common.interleaved_timings(cases, repeats=args.rounds, warmup=1)
    timed_real = sum(real[1:]) / args.rounds
    log("timed")
    memory = {v: measure_memory(v, args) for v in VARIANTS}
    load_after = common.load_average()

    rows = []
    for v in VARIANTS:
        ratio, shown = timings.ratio_shown("peft-padded", v)
        rows.append([v, f"{timings.median(v):.2f}", f"{timed_real / timings.median(v):.0f}", shown,
                     common.format_bytes(memory[v])])
    packed_vs_peft = timings.ratio("peft-padded", "lorakit-packed")
    packed_vs_padded = timings.ratio("lorakit-padded", "lorakit-packed")
    body = "\n".join([
        f"Command: `{common.command_line('bench.packing', argv)}` (from the repository root)", "",
        f"Code: lorakit at commit {common.git_revision()}", "",
        f"Machine: {common.describe_machine('cpu', ['transformers', 'peft'])}", "",
        f"Date: {common.today()}; 1-minute load average before / after the run: {load_before:.2f} / "
        f"{load_after:.2f} (a shared machine: other processes competed for the CPU; the paired ratios are "
        "more reliable than the absolute times)", "",
        f"Setup: see the docstring of `bench/packing.py`. Llama shape: 4 layers, hidden 512, 8 / 2 heads, MLP 1536, "
        f"vocabulary {args.vocab:,}; LoRA r=16 on every block linear; {args.examples} real E2E training pairs per "
        f"micro-batch, {args.rounds} timed rounds (a new batch each) after 1 warm-up round; packed rows of "
        f"{args.row_length} tokens. Per timed batch on average: {timed_real:.0f} real tokens, "
        f"{sum(padded_tokens[1:]) / args.rounds:.0f} padded positions, {sum(packed_tokens[1:]) / args.rounds:.0f} "
        "packed positions.", "",
        f"Per-pair losses, padded vs packed (lorakit, same weights, {args.examples} pairs): largest difference "
        f"{loss_gap:.2e} nats ({rel_gap:.1e} relative).", "",
        common.markdown_table(["variant", "s / step (median)", "real tokens / s", "tokens/s vs peft-padded (IQR)",
                               "peak RSS growth"], rows, align="lrrrr"), "",
        common.markdown_table(["target", "measured", "limit", "result"], [
            ["real tokens/s, lorakit packed / HF+PEFT padded", f"{packed_vs_peft:.2f}", ">= 1.5",
             "PASS" if packed_vs_peft >= 1.5 else "MISS"],
            ["per-pair losses equal (fp32)", f"{rel_gap:.1e} relative", "<= 1e-5",
             "PASS" if rel_gap <= 1e-5 else "MISS"],
        ], align="llrc"), "",
        f"Packing alone (lorakit packed / lorakit padded): {packed_vs_padded:.2f}x real tokens/s.",
    ])
    return common.publish_section("bench.packing: real tokens/s on E2E, packed vs padded", body, args.update_md)


if __name__ == "__main__":
    sys.exit(main())
