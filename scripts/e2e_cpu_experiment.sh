#!/usr/bin/env bash
# A CPU-scale version of the paper's E2E comparison (LoRA vs full fine-tuning of GPT-2), for machines
# without a GPU and without the pretrained GPT-2 weights:
#   1. pretrain a 4-layer GPT-2 (d=128, the real GPT-2 tokenizer) from scratch on the E2E training texts,
#   2. export it as a plain Hugging Face folder (lorakit export),
#   3. fine-tune it on E2E (MR -> text) with LoRA r=4 on W_q, W_v and with full fine-tuning,
#   4. decode the first N test MRs with beam search and score them with the official E2E metrics.
# Usage: scripts/e2e_cpu_experiment.sh [E2E_DIR] [GPT2_VOCAB_DIR] [N_TEST]   (run from the repository root)
set -euo pipefail
E2E=${1:-../shared/data/e2e}
VOCAB=${2:-../shared/data/gpt2-vocab}
N_TEST=${3:-200}
PY=${PY:-.venv/bin/python}
OUT=runs/e2e_cpu
mkdir -p "$OUT/corpus"
# the E2E training references as plain text (train) and the dev references (valid): one text per line
"$PY" - "$E2E" "$OUT/corpus" <<'PYEOF'
import sys
from pathlib import Path
from lorakit.data.nlg import read_split
e2e, out = sys.argv[1], Path(sys.argv[2])
for split, name in (("train", "train.txt"), ("dev", "valid.txt")):
    texts = [ref for example in read_split("e2e", split, e2e) for ref in example.references]
    (out / name).write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    print(f"{name}: {len(texts)} texts")
PYEOF
"$PY" main.py --config configs/e2e/cpu_tiny_pretrain.json --data "$OUT/corpus" --workdir "$OUT/pretrain" \
    --set model.tokenizer="$VOCAB"
rm -rf "$OUT/base"
"$PY" -m lorakit.cli export --workdir "$OUT/pretrain" --out "$OUT/base"
for method in lora full; do
    "$PY" main.py --config "configs/e2e/cpu_tiny_$method.json" --data "$E2E" --workdir "$OUT/$method" \
        --set model.name_or_path="$OUT/base"
    "$PY" -m lorakit.cli generate --workdir "$OUT/$method" --split test \
        --set data.max_eval_examples="$N_TEST" --set generation.metrics=all
done
"$PY" - "$OUT" <<'PYEOF'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
print("| method | trainable | train time | BLEU | NIST | METEOR | ROUGE-L | CIDEr |")
print("|---|---|---|---|---|---|---|---|")
for method in ("lora", "full"):
    r = json.loads((out / method / "results.json").read_text())
    m = json.loads((out / method / "generate" / "metrics.test.json").read_text())["metrics"]
    print(f"| {method} | {r['parameters']['trainable']:,} | {r['train_time_s'] / 60:.1f} min | {100 * m['BLEU']:.1f} "
          f"| {m['NIST']:.2f} | {100 * m['METEOR']:.1f} | {100 * m['ROUGE_L']:.1f} | {m['CIDEr']:.2f} |")
PYEOF
