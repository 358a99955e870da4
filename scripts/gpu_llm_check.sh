#!/usr/bin/env bash
# Issue 17's GPU check. NOT RUN YET on a GPU: no GPU was lent to the session that wrote it; it was debugged end
# to end on the CPU with `PYTHON=... scripts/gpu_llm_check.sh --device cpu --tiny` (a tiny shape, same code path).
#
# One LoRA training step of a Llama-3.2-1B-shaped model (16 layers, hidden 2048, MLP 8192, 32 heads / 8 KV
# heads, vocabulary 128,256, head tied to the embedding), random init, bf16 weights built directly on the GPU,
# bf16 autocast, batch 4 x 2048 tokens, LoRA r=16 on every linear layer of the blocks. Each variant runs in its
# own subprocess (bench/gpu_llm_check.py): HF+PEFT plain, + checkpointing, + checkpointing + Liger-Kernel's fused
# linear cross-entropy, + checkpointing + Cut Cross-Entropy (impl "cce"), lorakit fused loss + checkpointing, the
# same on an NF4 base, lorakit fused loss alone. It measures tokens/s (median of 5 steps after 2 warm-up steps,
# torch.cuda.synchronize around each) and torch.cuda.max_memory_allocated, and prints a markdown table with the
# ratios to HF+PEFT plain and the verdicts of the target: lorakit >= 1.3x HF+PEFT tokens/s and <= 0.5x its peak
# memory. Files: $OUT (else runs/gpu_llm_check)/gpu_llm_check.{md,json,log}, nvidia-smi.txt.
#
# Usage (from anywhere): scripts/gpu_llm_check.sh [more bench.gpu_llm_check arguments, e.g. --variants peft ...]
# Time: under 8 minutes on one H100: the Python side starts no variant after 420 s (--budget-s), kills a variant
# after 150 s (--variant-timeout-s) or when the budget is spent, and the whole command is killed at 470 s. The
# estimate (not measured): 7 subprocesses of ~10-20 s import + build + 7 steps of well under a second each, and
# Cut Cross-Entropy's Triton compilation on first use.
# Installs nothing, with one exception: if .venv/bin/python is missing (and PYTHON is not set) it creates the venv
# with `make .venv/.installed TORCH_INDEX=$TORCH_INDEX` (default --index-url=https://download.pytorch.org/whl/cu126;
# needs the internet). PYTHON=/path/to/python uses another interpreter. The Liger and Cut Cross-Entropy rows are
# reported as skipped, with the reason, when those packages are not installed (`make .venv/.bench-installed` adds
# cut-cross-entropy; liger-kernel is in no lock).
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
if [ -z "${PYTHON:-}" ] && [ ! -x "$py" ]; then
  echo "gpu_llm_check: no .venv here; creating it with make .venv/.installed" >&2
  make .venv/.installed TORCH_INDEX="${TORCH_INDEX:---index-url=https://download.pytorch.org/whl/cu126}"
fi
out=${OUT:-runs/gpu_llm_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv >"$out/nvidia-smi.txt" 2>&1 || true
cat "$out/nvidia-smi.txt"
export PYTHONPATH="$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}"
timeout 470 "$py" -m bench.gpu_llm_check --device cuda --dtype bfloat16 --out "$out" "$@" 2>&1 \
  | tee "$out/gpu_llm_check.log"
