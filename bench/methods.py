"""Inference cost of the LoRA paper's baselines: forward latency of each method against the base model.

    .venv/bin/python -m bench.methods [--configs configs/baselines] [--seq-len 128] [--repeats 20] [--json]

For every config in the folder: the base model (the same encoder and head, nothing inserted) and the
method's model, at batch 1 and batch 8, median of ``repeats`` timed forward passes after a warm-up, in
eval mode on this machine. Same numbers as ``lorakit inspect CONFIG --latency``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lorakit.train.commands import _load, latency_summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench.methods", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="configs/baselines", help="folder of experiment configs")
    parser.add_argument("--seq-len", type=int, default=None, help="tokens per row (default: data.max_length)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rows = []
    for path in sorted(Path(args.configs).glob("*.json")):
        cfg = _load(str(path), [])
        lat = latency_summary(cfg, seq_len=args.seq_len, repeats=args.repeats)
        rows.append({"config": path.name, "method": cfg.method.name, **lat})
        if not args.json:
            b1, b8 = lat["batch_1"], lat["batch_8"]
            print(f"{path.stem:34s} batch 1: {b1['method_ms']:8.2f} ms ({b1['overhead_pct']:+6.1f}% vs base)   "
                  f"batch 8: {b8['method_ms']:8.2f} ms ({b8['overhead_pct']:+6.1f}%)", flush=True)
    if args.json:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
