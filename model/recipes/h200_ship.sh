#!/usr/bin/env bash
# The shipping run on one or two H200 (python 3.12, torch 2.11, no ROS, no PyBullet): `s` and `dense_s`
# trained side by side on the same shards; fp16 copies of each run's last checkpoint and the run logs go
# to OUT_DIR. Last, not best-validation: validation loss is a poor guide to closed-loop success here (the
# 2nd shipping run's best-validation checkpoints, steps 300-600, did pick_place 0.48-0.50; its last ones
# 0.66; bench/results/train_h200_v2/README.md).
# A device call is limited to 10 minutes, so each call trains for at most BUDGET_S seconds and a later
# call with --resume continues both runs (same STEPS: the cosine schedule is fixed by it).
# Usage: [INIT_DIR=DIR] [CONFIG_DIR=DIR] [LR=1e-3] [BATCH=256] [WORD_DROPOUT=0] [RECOVERY_REPEATS=1] [THREADS=8]
#        model/recipes/h200_ship.sh SHARDS_DIR OUT_DIR STEPS [--resume]
# SHARDS_DIR holds `mhc collect` shards (see model/recipes/README.md for the collect lines).
# INIT_DIR: fine-tune from DIR/mhc_s.safetensors and DIR/mhc_dense_s.safetensors (`mhc train --init`).
# CONFIG_DIR: train DIR/s.json and DIR/dense_s.json instead of the presets (e.g. model/recipes/finetune_96px).
# BATCH: a step costs ~75-80 ms whatever the batch (host-bound), so 1024 trains ~3.7x more samples/s than
# the first shipped run's 256 (scale LR with it; README, multi-GPU results).
# WORD_DROPOUT, RECOVERY_REPEATS: `mhc train --word-dropout` / `--recovery-repeats`. THREADS: CPU threads
# per run (with torch's default of one per core, two runs on a 32-core host wrote nothing in 9 minutes).
# With two GPUs visible the two runs get one each (the step is host-bound: sharing one GPU slows both).
set -o pipefail
DATA=$1; OUT=$2; STEPS=$3; RESUME=${4:-}; BUDGET_S=${BUDGET_S:-540}; LR=${LR:-1e-3}; BATCH=${BATCH:-256}
WORD_DROPOUT=${WORD_DROPOUT:-0}; RECOVERY_REPEATS=${RECOVERY_REPEATS:-1}
export PYTHONUNBUFFERED=1
if ! python3 -c "import mhc_model" 2>/dev/null; then  # not pip-installed: map model/ to mhc_model
  mkdir -p /tmp/mhc_pkgs && ln -sfn "$PWD/model" /tmp/mhc_pkgs/mhc_model && export PYTHONPATH=/tmp/mhc_pkgs
fi
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
IFS=, read -ra GPU_IDS <<< "${CUDA_VISIBLE_DEVICES:-$(nvidia-smi --query-gpu=index --format=csv,noheader | paste -sd,)}"
train() {  # preset run_dir gpu
  local init=()
  [[ -n "${INIT_DIR:-}" && -z "$RESUME" ]] && init=(--init "$INIT_DIR/mhc_$1.safetensors")
  local config=$1; [[ -n "${CONFIG_DIR:-}" ]] && config="$CONFIG_DIR/$1.json"
  CUDA_VISIBLE_DEVICES=$3 timeout "$BUDGET_S" python3 -m mhc_model.train --config "$config" --data "$DATA" --out "$2" --steps "$STEPS" \
    --batch-size "$BATCH" --lr "$LR" --warmup 300 --val-every 300 --seed 0 --no-progress --threads "${THREADS:-8}" \
    --word-dropout "$WORD_DROPOUT" --recovery-repeats "$RECOVERY_REPEATS" $RESUME "${init[@]}" \
    >> "$2.log" 2>&1
}
train s /tmp/run_s "${GPU_IDS[0]}" & train dense_s /tmp/run_dense_s "${GPU_IDS[-1]}" & wait
for run in s dense_s; do
  python3 -m mhc_model.checkpoint /tmp/run_$run/checkpoints/last.safetensors "$OUT/mhc_$run.safetensors"
  mkdir -p /tmp/small/$run && cp /tmp/run_$run.log /tmp/run_$run/metrics.jsonl /tmp/run_$run/summary.json \
    /tmp/run_$run/curves.png /tmp/small/$run/ 2>/dev/null
  tail -n 2 /tmp/run_$run.log
done
tar -czf "$OUT/runs.tgz" -C /tmp/small .
