#!/usr/bin/env bash
# Training throughput of preset `s` (bf16, one GPU) and a `torchrun --nproc_per_node=1` (DDP) run, on
# synthetic shards in the `mhc collect` format. Usage: bench/h200_train.sh OUT_DIR  (no ROS needed).
set -o pipefail
OUT=${1:-/tmp/mhc_bench}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import mhc_model" 2>/dev/null; then  # not pip-installed: map model/ to mhc_model
  mkdir -p /tmp/mhc_pkgs && ln -sfn "$PWD/model" /tmp/mhc_pkgs/mhc_model && export PYTHONPATH=/tmp/mhc_pkgs
fi
python3 -c "import torch, numpy, safetensors; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')
for m in ('tqdm', 'matplotlib'):
    try: __import__(m); print(m, 'ok')
    except ImportError: print(m, 'missing')" 2>&1 | tee "$OUT/env.txt"
python3 -m mhc_model.synthetic /tmp/mhc_data --episodes 64 --steps 100 --image-size 96
for cfg in s dense_s; do
  python3 -m mhc_model.train --config $cfg --data /tmp/mhc_data --out /tmp/run_$cfg --steps 120 --batch-size 256 \
    --val-every 120 --no-progress --seed 0 2>&1 | tee "$OUT/train_$cfg.log"
  cp /tmp/run_$cfg/summary.json "$OUT/summary_$cfg.json"
done
TR="torchrun"; command -v torchrun >/dev/null || TR="python3 -m torch.distributed.run"
$TR --nproc_per_node=1 -m mhc_model.train --config s --data /tmp/mhc_data --out /tmp/run_ddp --steps 60 \
  --batch-size 128 --val-every 30 --no-progress 2>&1 | tee "$OUT/torchrun.log"
cp /tmp/run_ddp/summary.json "$OUT/summary_ddp.json"; cp /tmp/run_ddp/metrics.jsonl "$OUT/metrics_ddp.jsonl"
cp /tmp/run_ddp/curves.png "$OUT/curves_ddp.png" 2>/dev/null || true
