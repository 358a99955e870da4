"""The head alone: loss + backward of ``hidden @ weight.T`` with a 128k vocabulary, full logits vs chunked.

Run from the repository root::

    python -m bench.linear_ce                       # the issue's shape: 4 x 1024 tokens, hidden 512, vocab 128,256
    python -m bench.linear_ce --tokens 1024 --rounds 2          # smaller and quicker
    python -m bench.linear_ce --update-md           # also write the results into BENCHMARKS.md

Variants (the head frozen, as under LoRA; the hidden states require grad):

* ``full``: ``F.cross_entropy`` on the materialised float32 logits;
* ``grad-in-forward-C``: ``lorakit.linear_cross_entropy(chunk_size=C)``, whose forward loop computes each
  chunk's hidden-state gradient (what lorakit keeps);
* ``recompute-C``: the same loss through ``reduction="none"``, whose backward recomputes each chunk's logits
  (the other strategy).

Each round runs every variant once (loss + backward), in an order rotated each round; times are medians over
rounds. No memory is measured here (bench/llm_step.py measures a whole step, each variant in its own process).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
import torch.nn.functional as F

import lorakit

from . import common

SECTION_TITLE = "Linear cross-entropy alone: chunking strategy and chunk size (bench/linear_ce.py)"


def variants(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> dict:
    """name -> a function computing the mean loss (with a backward-ready graph)."""
    vocab = weight.shape[0]

    def full():
        logits = (hidden @ weight.T)[:, :-1].float()
        return F.cross_entropy(logits.reshape(-1, vocab), labels[:, 1:].reshape(-1))

    out = {"full": full}
    for size in (32, 130, 256, 392, 512, 1024):
        out[f"grad-in-forward-{size}"] = lambda size=size: lorakit.linear_cross_entropy(hidden, weight, labels,
                                                                                       chunk_size=size)
    for size in (392,):
        out[f"recompute-{size}"] = lambda size=size: (
            lorakit.linear_cross_entropy(hidden, weight, labels, chunk_size=size, reduction="none").sum()
            / lorakit.count_label_tokens(labels))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=4096, help="tokens in the batch (as 4 rows)")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--vocab", type=int, default=128256)
    ap.add_argument("--rounds", type=int, default=3)
    common.add_update_md_argument(ap)
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    hidden = torch.randn(4, args.tokens // 4, args.hidden, requires_grad=True)
    weight = torch.randn(args.vocab, args.hidden) * 0.02
    labels = torch.randint(0, args.vocab, (4, args.tokens // 4))
    cases = variants(hidden, weight, labels)
    names = list(cases)
    times: dict[str, list[float]] = {n: [] for n in names}
    load_before, revision = common.load_average(), common.git_revision()
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            start = time.perf_counter()
            cases[name]().backward()
            times[name].append(time.perf_counter() - start)
            hidden.grad = None
        print(f"round {r}: " + ", ".join(f"{n} {times[n][-1]:.2f}s" for n in names), file=sys.stderr, flush=True)
    base = statistics.median(times["full"])
    rows = [[n, f"{statistics.median(times[n]):.2f}", f"{statistics.median(times[n]) / base:.2f}"] for n in names]
    body = "\n".join([
        f"Command: `{common.command_line('bench.linear_ce', argv)}`", "", f"Code: lorakit at commit {revision}", "",
        f"Machine: {common.describe_machine('cpu')}", "",
        f"Date: {common.today()}; 1-minute load average before / after: {load_before:.2f} / "
        f"{common.load_average():.2f} (2 cores shared with other jobs: times are inflated and noisy)", "",
        f"Shape: {args.tokens} tokens, hidden {args.hidden}, vocabulary {args.vocab}, frozen head, float32; "
        f"median of {args.rounds} rounds of loss + backward.", "",
        common.markdown_table(["variant", "s (median)", "/ full"], rows)])
    return common.publish_section(SECTION_TITLE, body, args.update_md)


if __name__ == "__main__":
    raise SystemExit(main())
