#!/usr/bin/env bash
# The fourth run (bench/results/train_h200_v4/): four mHC-S runs on two H200, two per GPU (python 3.12,
# torch 2.11, no ROS, no PyBullet). Run A, the preset `s` from scratch, is the shipped model.
#   A scratch_s           preset s from scratch (hand pose on), lr 1e-3, 13 000 steps
#   B scratch_dropout_s   A with dropout 0.1 (sweep/s_dropout.json)
#   C finetune_dropout_s  fine-tune of INIT_CHECKPOINT with dropout 0.1, lr 3e-4, 6 000 steps
#   D scratch_top3_s      A with three experts per token (sweep/s_top3.json)
# All: batch 1 024, 300 warm-up steps, cosine to 0.1x, word dropout 0.1, recovery steps 4x, seed 0.
# A device call lasts 10 minutes at most: each call trains for BUDGET_S seconds, a later call with
# --resume continues every unfinished run (three calls of 545, 545 and 475 s finished all four).
# fp16 copies of each run's last checkpoint (OUT_DIR/<run>.safetensors) and the logs (OUT_DIR/runs.tgz).
# Usage: model/recipes/h200_sweep.sh SHARDS_DIR INIT_CHECKPOINT OUT_DIR BUDGET_S [--resume]
set -o pipefail
DATA=$1; INIT=$2; OUT=$3; BUDGET_S=$4; RESUME=${5:-}
RECIPES=$(dirname "$0")
export PYTHONUNBUFFERED=1
if ! python3 -c "import mhc_model" 2>/dev/null; then  # not pip-installed: map model/ to mhc_model
  mkdir -p /tmp/mhc_pkgs && ln -sfn "$PWD/model" /tmp/mhc_pkgs/mhc_model && export PYTHONPATH=/tmp/mhc_pkgs
fi
run() {  # name config gpu steps lr [init]
  local dir=/tmp/sweep_$1 extra=()
  if [[ -n "$RESUME" ]]; then
    [[ -f $dir/checkpoints/last.safetensors && ! -f $dir/done ]] || return 0
    extra=(--resume)
  elif [[ -n "${6:-}" ]]; then
    extra=(--init "$6")
  fi
  CUDA_VISIBLE_DEVICES=$3 timeout "$BUDGET_S" python3 -m mhc_model.train --config "$2" --data "$DATA" --out "$dir" \
    --steps "$4" --batch-size 1024 --lr "$5" --warmup 300 --val-every 500 --seed 0 --no-progress --threads 8 \
    --word-dropout 0.1 --recovery-repeats 4 --no-flops "${extra[@]}" >> "$dir.log" 2>&1 && touch "$dir/done"
}
run scratch_s s 0 13000 1e-3 &
run scratch_dropout_s "$RECIPES/sweep/s_dropout.json" 0 13000 1e-3 &
run finetune_dropout_s "$RECIPES/sweep/s_dropout.json" 1 6000 3e-4 "$INIT" &
run scratch_top3_s "$RECIPES/sweep/s_top3.json" 1 13000 1e-3 &
wait
mkdir -p /tmp/sweep_small
for name in scratch_s scratch_dropout_s finetune_dropout_s scratch_top3_s; do
  dir=/tmp/sweep_$name
  echo "== $name"; tail -n 1 "$dir.log"
  [[ -f $dir/checkpoints/last.safetensors ]] && \
    python3 -m mhc_model.checkpoint "$dir/checkpoints/last.safetensors" "$OUT/$name.safetensors"
  mkdir -p /tmp/sweep_small/$name
  cp "$dir.log" "$dir/metrics.jsonl" "$dir/summary.json" "$dir/curves.png" /tmp/sweep_small/$name/ 2>/dev/null
done
tar -czf "$OUT/runs.tgz" -C /tmp/sweep_small .
