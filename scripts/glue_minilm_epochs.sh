#!/usr/bin/env bash
# LoRA with a multi-epoch budget (as the LoRA paper trains it) against full fine-tuning with the usual
# 3 epochs, all-MiniLM-L6-v2 on MRPC, STS-B and CoLA (RESULTS.md, "Several epochs").
# Usage: scripts/glue_minilm_epochs.sh GLUE_DIR [RUNS_DIR]   (about 45 min on 2 CPU cores)
set -euo pipefail
glue=${1:?usage: $0 GLUE_DIR [RUNS_DIR]}
runs=${2:-runs/glue_minilm_epochs}
py=${PYTHON:-python}
# task:steps per epoch (train examples / batch size of configs/glue/minilm_<task>_*.json)
for spec in mrpc:230 stsb:360 cola:268; do
  task=${spec%%:*}; per_epoch=${spec##*:}
  $py main.py --config "configs/glue/minilm_${task}_lora_smoke.json" --data "$glue" \
    --workdir "$runs/${task}_lora_4ep_s0" --set training.seed=0 --set training.max_steps=$((4 * per_epoch))
  $py main.py --config "configs/glue/minilm_${task}_full_smoke.json" --data "$glue" \
    --workdir "$runs/${task}_full_3ep_s0" --set training.seed=0 --set training.max_steps=$((3 * per_epoch))
done
$py -m lorakit.cli report "$runs" --out "$runs/report"
