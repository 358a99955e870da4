"""``lorakit lm-eval``: perplexity / bits per character of a language model on a text corpus.

    lorakit lm-eval --model NAME_OR_PATH [--adapter DIR] --text PATH --layout wikitext|enwik8|text8|text
                    [--split test] [--context 1024] [--stride 512] [--batch-size 8] [--mlm] [--out metrics.json]

A causal LM is scored with strided windows (``lorakit.metrics.lm.sliding_window_nll``); with
``--mlm`` a masked LM gets its pseudo-perplexity (Salazar et al., 2020) instead, ``--context`` then being
the window length including the special tokens. The corpus layouts and what ``bpc``/``bpb``/``word_ppl``
divide by are described in ``lorakit.metrics.lm``. The command prints a small table and, with
``--out``, writes the numbers as JSON (atomically). Bad input exits with status 2 and a message.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lorakit.errors import LorakitError

from .data.corpora import LAYOUTS, CorpusError, read_corpus
from .fileio import atomic_write, json_safe

__all__ = ["main", "evaluate_lm", "LMEvalError"]


class LMEvalError(LorakitError, ValueError):
    """Unusable arguments or input; the message says what to change."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lorakit lm-eval",
                                description="Perplexity, bits per character/byte of a language model on a corpus.")
    p.add_argument("--model", required=True, help="local folder or Hugging Face name (from_pretrained)")
    p.add_argument("--adapter", help="a LoRA adapter folder (PEFT or lorakit format) to load on top")
    p.add_argument("--tokenizer", help="tokenizer folder or name (default: --model)")
    p.add_argument("--text", required=True, help="the corpus: its file, or the folder holding it")
    p.add_argument("--layout", default="text", choices=LAYOUTS, help="corpus layout (default: text)")
    p.add_argument("--split", default="test", help="train, valid (dev), test or all (default: test)")
    p.add_argument("--context", type=int, help="tokens per window (default: the model's positions, at most 1024)")
    p.add_argument("--stride", type=int,
                   help="tokens between window ends (default: context // 2; --mlm: non-overlapping windows)")
    p.add_argument("--batch-size", type=int, default=8, help="windows (--mlm: masked copies) per forward pass")
    p.add_argument("--mlm", action="store_true", help="masked LM: pseudo-perplexity")
    p.add_argument("--no-bos", action="store_true",
                   help="do not put the BOS token in front (the first token is then context only)")
    p.add_argument("--max-chars", type=int, help="evaluate only the first N characters of the split")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="model weights' dtype")
    p.add_argument("--out", help="write the results here as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _from_pretrained(loader: Any, name: str, what: str) -> Any:
    """A local folder (or ``package:PKG/SUB``), else the Hugging Face cache, else the Hub when reachable:
    the experiment system's loader, with its errors as ``LMEvalError``."""
    from .pretrained import ModelLoadError
    from .pretrained import from_pretrained as load

    try:
        return load(loader, name, what)
    except ModelLoadError as err:
        raise LMEvalError(str(err)) from None


def _load(args: argparse.Namespace) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    auto = AutoModelForMaskedLM if args.mlm else AutoModelForCausalLM
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, args.tokenizer or args.model, "tokenizer")
    model = _from_pretrained(auto.from_pretrained, args.model, "masked LM" if args.mlm else "causal LM")
    if args.adapter:
        from . import load_adapter

        if not Path(args.adapter).is_dir():
            raise LMEvalError(f"adapter folder not found: {args.adapter}")
        load_adapter(model, args.adapter)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    return model.to(dtype).eval(), tokenizer


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse numbers out of range and an --out in a missing folder, before any model is loaded."""
    if args.context is not None and args.context < 2:
        raise LMEvalError(f"--context must be >= 2 tokens, got {args.context}")
    if args.stride is not None and args.stride < 1:
        raise LMEvalError(f"--stride must be >= 1, got {args.stride}")
    if args.stride is not None and args.context is not None and args.stride > args.context:
        raise LMEvalError(f"--stride {args.stride} is larger than --context {args.context}: tokens between windows "
                          "would never be scored; use a stride <= context")
    if args.batch_size < 1:
        raise LMEvalError(f"--batch-size must be >= 1, got {args.batch_size}")
    out_path = Path(args.out) if args.out else None
    if out_path is not None and not out_path.parent.resolve().is_dir():
        raise LMEvalError(f"cannot write --out {out_path}: the folder {out_path.parent} does not exist")


def evaluate_lm(args: argparse.Namespace) -> dict[str, Any]:
    """Run the evaluation the parsed arguments describe; return the JSON record."""
    import torch

    from .metrics.lm import (
        lm_metrics,
        max_positions,
        pseudo_perplexity,
        sliding_window_nll,
        tokenize_text,
    )

    _check_arguments(args)
    try:
        corpus = read_corpus(args.text, args.layout, args.split)
    except CorpusError as exc:
        raise LMEvalError(str(exc)) from None
    text = corpus.text if args.max_chars is None else corpus.text[: max(0, args.max_chars)]
    if not text.strip():
        raise LMEvalError(f"{corpus.source}: the {corpus.split} split is empty, nothing to evaluate")

    model, tokenizer = _load(args)
    limit = max_positions(model)
    context = args.context if args.context is not None else min(limit or 1024, 1024)
    if limit is not None and context > limit:
        raise LMEvalError(f"--context {context} exceeds the {limit} positions of {args.model}")
    if args.stride is not None and args.stride > context:
        raise LMEvalError(f"--stride {args.stride} is larger than the context {context}")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        raise LMEvalError("--device cuda: no CUDA device is available")
    model.to(device)

    words = corpus.layout == "wikitext"
    tok = tokenize_text(tokenizer, text, add_bos=not (args.no_bos or args.mlm), counts=True, word_units=words)
    progress = not args.no_progress
    t0 = time.perf_counter()
    if args.mlm:
        if len(tok) < 1:
            raise LMEvalError(f"{corpus.source}: the text has no tokens")
        width = context - tokenizer.num_special_tokens_to_add(pair=False)
        stride = args.stride if args.stride is not None else width
        if stride > width:
            raise LMEvalError(f"--stride {stride} exceeds the {width} content tokens of a {context}-token window")
        res = pseudo_perplexity(model, tokenizer, tok.ids, max_length=context, stride=stride,
                                batch_size=args.batch_size, device=device, progress=progress)
        total, n_tokens = -res.pll, res.n_tokens
        scored = torch.ones(len(tok), dtype=torch.bool)
    else:
        if len(tok) < 2:
            raise LMEvalError(f"{corpus.source}: the text has fewer than 2 tokens, nothing to score")
        stride = args.stride if args.stride is not None else max(1, context // 2)
        res = sliding_window_nll(model, tok.ids, context=context, stride=stride, batch_size=args.batch_size,
                                 device=device, progress=progress)
        total, n_tokens = res.total_nll, res.n_tokens
        scored = ~torch.isnan(res.token_nll)
    seconds = time.perf_counter() - t0
    n_chars = int(tok.n_chars[scored].sum())
    n_bytes = int(tok.n_bytes[scored].sum())
    n_words = int(tok.n_words[scored].sum()) if tok.n_words is not None else None
    record: dict[str, Any] = dict(lm_metrics(total, n_tokens, n_chars, n_bytes, n_words))
    record.update({
        "total_nll_nats": total, "n_tokens": n_tokens, "n_chars": n_chars, "n_bytes": n_bytes,
        "n_words": n_words, "mode": "mlm" if args.mlm else "causal", "model": args.model,
        "adapter": args.adapter, "text": corpus.source, "layout": corpus.layout, "split": corpus.split,
        "max_chars": args.max_chars, "context": context, "stride": stride, "bos": tok.bos,
        "batch_size": args.batch_size, "device": str(device), "dtype": args.dtype,
        "seconds": seconds, "tokens_per_s": n_tokens / seconds if seconds > 0 else float("nan"),
    })
    if n_words is None:
        del record["n_words"]
    return record


def format_table(record: dict[str, Any]) -> str:
    """The headline numbers, one per line."""
    rows = [("corpus", f"{record['text']} ({record['layout']}, {record['split']})"),
            ("model", record["model"] + (f" + {record['adapter']}" if record.get("adapter") else "")),
            ("windows", f"context {record['context']}, stride {record['stride']}"
                        + (", pseudo-perplexity" if record["mode"] == "mlm" else "")),
            ("scored", f"{record['n_tokens']} tokens, {record['n_chars']} chars, {record['n_bytes']} bytes"
                       + (f", {record['n_words']} words" if "n_words" in record else ""))]
    names = {"nll_per_token": "nll (nats/token)", "ppl": "pppl" if record["mode"] == "mlm" else "ppl (token)",
             "bpc": "bits/char", "bpb": "bits/byte", "word_ppl": "ppl (word)"}
    for key, label in names.items():
        if key in record:
            rows.append((label, f"{record[key]:.4f}"))
    rows.append(("speed", f"{record['tokens_per_s']:.1f} tokens/s ({record['seconds']:.1f} s)"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lorakit lm-eval``; returns the exit status."""
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # --help (0) or a usage error (2)
        return int(exc.code or 0)
    try:
        record = evaluate_lm(args)
    except (LMEvalError, ValueError) as exc:
        print(f"lorakit lm-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(record))
    if args.out:
        try:
            atomic_write(args.out, json.dumps(json_safe(record), indent=1) + "\n")
        except OSError as exc:
            print(f"lorakit lm-eval: error: cannot write --out {args.out}: {exc}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
