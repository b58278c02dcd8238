#!/usr/bin/env bash
# Train the runs of a table side by side on the GPUs of one host (H200; python 3.12, torch 2.11, no ROS,
# no PyBullet) and write fp16 copies of each run's last checkpoint (OUT_DIR/<run>.safetensors) and the
# logs (OUT_DIR/runs.tgz). Last, not best-validation: validation loss is a poor guide to closed-loop
# success here (bench/results/train_h200_v2/README.md).
# RUNS_TABLE: one run per line, `name config gpu steps lr seed [init [train options]]` (`#` starts a comment;
# config is a preset or a JSON file relative to this folder; init, a checkpoint to fine-tune from, may be
# written as $INIT_CHECKPOINT, also in the train options that follow it, e.g. --init-blocks 0,2,3 or
# --distill-from $INIT_CHECKPOINT). Every run: batch 1 024, 300 warm-up steps, cosine to 0.1x, word dropout
# 0.1, recovery steps 4x, 8 CPU threads (torch's default of one per core starved several runs on one host).
# A device call lasts 10 minutes at most: each call trains for BUDGET_S seconds; a later call with
# --resume continues every unfinished run from its last checkpoint (same steps: the schedule is fixed).
# Usage: [INIT_CHECKPOINT=C] model/recipes/h200_runs.sh RUNS_TABLE SHARDS_DIR OUT_DIR BUDGET_S [--resume]
set -o pipefail
TABLE=$1; DATA=$2; OUT=$3; BUDGET_S=$4; RESUME=${5:-}
RECIPES=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1
if ! python3 -c "import mhc_model" 2>/dev/null; then  # not pip-installed: map model/ to mhc_model
  mkdir -p /tmp/mhc_pkgs && ln -sfn "$RECIPES/.." /tmp/mhc_pkgs/mhc_model && export PYTHONPATH=/tmp/mhc_pkgs
fi
run() {  # name config gpu steps lr seed [init [train options]]
  local dir=/tmp/runs_$1 config=$2 extra=()
  [[ -f $RECIPES/$config ]] && config=$RECIPES/$config
  if [[ -n "$RESUME" ]]; then
    [[ -f $dir/checkpoints/last.safetensors && ! -f $dir/done ]] || return 0
    extra=(--resume)
  elif [[ -n "${7:-}" ]]; then
    extra=(--init "$(eval echo "$7")")
    for option in "${@:8}"; do extra+=("$(eval echo "$option")"); done  # $INIT_CHECKPOINT may appear here too
  fi
  CUDA_VISIBLE_DEVICES=$3 timeout "$BUDGET_S" python3 -m mhc_model.train --config "$config" --data "$DATA" \
    --out "$dir" --steps "$4" --batch-size 1024 --lr "$5" --warmup 300 --val-every 500 --seed "$6" \
    --no-progress --threads 8 --word-dropout 0.1 --recovery-repeats 4 --no-flops "${extra[@]}" \
    >> "$dir.log" 2>&1 && touch "$dir/done"
}
names=()
while read -r -a fields; do
  [[ ${#fields[@]} -eq 0 || ${fields[0]} == \#* ]] && continue
  names+=("${fields[0]}"); run "${fields[@]}" &
done < "$TABLE"
wait
mkdir -p "$OUT" /tmp/runs_small
for name in "${names[@]}"; do
  dir=/tmp/runs_$name
  echo "== $name $([[ -f $dir/done ]] && echo done || echo unfinished)"; tail -n 1 "$dir.log"
  [[ -f $dir/checkpoints/last.safetensors ]] && \
    python3 -m mhc_model.checkpoint "$dir/checkpoints/last.safetensors" "$OUT/$name.safetensors"
  mkdir -p "/tmp/runs_small/$name"
  cp "$dir.log" "$dir/metrics.jsonl" "$dir/summary.json" "$dir/curves.png" "/tmp/runs_small/$name/" 2>/dev/null
done
tar -czf "$OUT/runs.tgz" -C /tmp/runs_small .
