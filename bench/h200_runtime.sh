#!/usr/bin/env bash
# CUDA-graph runtime on one H200: parity against eager (plain and torch.compile'd capture), then batch-1
# latency of every profile for `s` and `dense_s`. Usage: bench/h200_runtime.sh OUT_DIR
set -o pipefail
OUT=${1:-/tmp/mhc_runtime}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if ! python3 -c "import mhc_model" 2>/dev/null; then  # not pip-installed: map model/ to mhc_model
  mkdir -p /tmp/mhc_pkgs && ln -sfn "$PWD/model" /tmp/mhc_pkgs/mhc_model && export PYTHONPATH=/tmp/mhc_pkgs
fi
python3 - <<'PY' 2>&1 | tee "$OUT/parity.txt"
import torch
from mhc_model.config import preset
from mhc_model.latency import random_policy
from mhc_model.export import ProfileGraph, example_inputs
from mhc_model.runtime.torch_backend import GraphedProfile
for name in ("tiny", "s"):
    model = random_policy(preset(name)).model.cuda().eval()
    for profile in ("instruct", "control"):
        graph = ProfileGraph(model, profile)
        for compiled in (False, True):
            graphed = GraphedProfile(graph, example_inputs(model, profile, seed=0), compile_module=compiled)
            x = example_inputs(model, profile, seed=7)  # different from the capture example
            with torch.no_grad():
                ref, out = graph(*x), graphed(*x)
            diff = max((a - b).abs().max().item() for a, b in zip(ref, out))
            print(f"{name} {profile} compiled={compiled}: max abs diff vs eager {diff:.3e}")
PY
for flag in "" "--compile"; do
  python3 -m mhc_model.latency --backend cuda-graph --preset s --profile control --iterations 500 $flag --json
  python3 -m mhc_model.latency --backend all --preset s --iterations 300 $flag --json \
    --out "$OUT/latency_h200${flag:+_compiled}.json" > /dev/null
done 2>&1 | tee "$OUT/latency.log"
