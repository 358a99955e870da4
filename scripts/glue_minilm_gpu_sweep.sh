#!/usr/bin/env bash
# LoRA against full fine-tuning on MRPC, STS-B and CoLA with all-MiniLM-L6-v2, with what the CPU runs of
# RESULTS.md lacked: several seeds, a learning-rate sweep for each method and a multi-epoch LoRA budget
# (RESULTS.md, "On a GPU: learning-rate sweep, 3 seeds"). JOBS trainings share one GPU at a time (these
# small runs are bound by the host's kernel launches, so several processes fill the GPU better than one).
# Usage: scripts/glue_minilm_gpu_sweep.sh GLUE_DIR [RUNS_DIR] [JOBS]
#   LORA_EPOCHS (default 10), FULL_EPOCHS (default 3), SEEDS (default "0 1 2"),
#   LORA_LRS (default "5e-4 1e-3 2e-3"), FULL_LRS (default "5e-5 1e-4") override the grid.
# A little over 7 minutes on one H200 with JOBS=15 (45 runs; in RESULTS.md's run the last one was cut off
# at 6.7 minutes; a 10-epoch LoRA run took 1.6-3.1 minutes beside 14 others); every run writes RUNS_DIR/<method>_lr<lr>/<task>_s<seed>/, the summary RUNS_DIR/report/.
set -euo pipefail
glue=${1:?usage: $0 GLUE_DIR [RUNS_DIR] [JOBS]}
runs=${2:-runs/glue_minilm_gpu_sweep}
jobs=${3:-4}
py=${PYTHON:-python}
lora_epochs=${LORA_EPOCHS:-10}
full_epochs=${FULL_EPOCHS:-3}
seeds=${SEEDS:-0 1 2}
lora_lrs=${LORA_LRS:-5e-4 1e-3 2e-3}
full_lrs=${FULL_LRS:-5e-5 1e-4}
mkdir -p "$runs"
commands="$runs/commands.txt"
: > "$commands"
# task:steps per epoch (train examples / batch size of configs/glue/minilm_<task>_*.json: 16, 16, 32)
for spec in mrpc:230 stsb:360 cola:268; do
  task=${spec%%:*}; per_epoch=${spec##*:}
  for seed in $seeds; do
    for lr in $lora_lrs; do
      dir="$runs/lora_lr$lr/${task}_s$seed"
      echo "$py main.py --config configs/glue/minilm_${task}_lora.json --data $glue --workdir $dir" \
        "--set training.seed=$seed --set optimizer.lr=$lr --set training.max_steps=$((lora_epochs * per_epoch))" \
        ">$dir.log 2>&1" >> "$commands"
    done
    for lr in $full_lrs; do
      dir="$runs/full_lr$lr/${task}_s$seed"
      echo "$py main.py --config configs/glue/minilm_${task}_full.json --data $glue --workdir $dir" \
        "--set training.seed=$seed --set optimizer.lr=$lr --set training.max_steps=$((full_epochs * per_epoch))" \
        ">$dir.log 2>&1" >> "$commands"
    done
  done
done
for dir in $(sed -n 's/.*--workdir \([^ ]*\) .*/\1/p' "$commands"); do mkdir -p "$(dirname "$dir")"; done
echo "$(wc -l < "$commands") runs, $jobs at a time; commands in $commands" >&2
failed=0
xargs -P "$jobs" -I CMD sh -c 'CMD || { echo "FAILED: CMD" >&2; exit 1; }' < "$commands" || failed=1
# one table and plot over every run: a method run at several learning rates gets one row per rate
$py -m lorakit.cli report "$runs" --out "$runs/report" > /dev/null
exit $failed
