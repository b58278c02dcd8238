"""Where the CPU time of the ``control`` step goes: ONNX Runtime per operator type, mHC vs dense, side by side.

Exports both checkpoints' ``control`` profile and times them unprofiled in short interleaved blocks (each
round runs every graph ``--iterations`` times in turn, after a few warm-up steps; many short rounds keep the
machine's drift out of the ratio): the median step of each graph over all rounds, their ratio, and the
spread of the per-round ratios. Then it runs each once more with ONNX Runtime's profiler and sums the
kernel time per operator type. It also prints the bytes of expert weights the mHC graph gathers per
step (each token copies its k experts' weights: the static-shape export's price for sparse experts), and
times the mHC graph once more with the routed experts cut out (routing kept, the experts' output replaced
by the input): what the rest of the network costs; and, when the checkpoint has a ball head
(``cfg.ball_keypoints``), once more without it: what the head costs (the dense baseline has none).
``--also`` times more mHC checkpoints in the same rounds (a candidate against the shipped model).
Writes JSON to ``--out`` (default ``bench/results/ort_ops_cpu<threads>.json``).

Usage: ``python bench/ort_ops.py --checkpoint model/checkpoints/mhc_s.safetensors --baseline DENSE.safetensors``
(without checkpoints: random weights of presets ``s`` and ``dense_s``; timing does not depend on weights).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from mhc_model.config import preset
from mhc_model.export import example_inputs, export_profile, file_sha256, profile_inputs
from mhc_model.latency import random_policy
from mhc_model.mhc import MHC, ExpertBank


def load_model(spec: str | None, fallback_preset: str) -> MHC:
    if spec is None:
        return random_policy(preset(fallback_preset)).model.eval()
    from mhc_model.checkpoint import load_policy
    from mhc_model.runtime.base import resolve_checkpoint

    return load_policy(resolve_checkpoint(spec))[0].model.eval()


@contextlib.contextmanager
def routed_experts_cut_out() -> Any:
    """While active, exports skip the routed experts' computation (the router still runs and is used)."""
    packed = ExpertBank.packed  # the export path
    ExpertBank.packed = lambda self, x, idx, weight: x * weight.sum(-1, keepdim=True)
    try:
        yield
    finally:
        ExpertBank.packed = packed


@contextlib.contextmanager
def ball_head_cut_out(model: MHC) -> Any:
    """While active, ``model`` exports without its ball head (the ball slot from its query token)."""
    head, model.ball_motion = model.ball_motion, None
    try:
        yield
    finally:
        model.ball_motion = head


def session(model: MHC, folder: Path, threads: int, profile_prefix: str | None = None, name: str = "") -> Any:
    import onnxruntime as ort

    path = folder / f"{name or model.cfg.name}_control.onnx"
    if not path.exists():
        export_profile(model, "control", path)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def feeds(model: MHC) -> dict[str, np.ndarray]:
    names = profile_inputs(model.cfg, "control")
    return {n: t.numpy() for n, t in zip(names, example_inputs(model, "control", seed=1), strict=True)}


def step_ms(sess: Any, feed: dict[str, np.ndarray], iterations: int, warmup: int = 10) -> list[float]:
    """``iterations`` timed steps (ms) after ``warmup`` untimed ones (the thread pool wakes up)."""
    for _ in range(warmup):
        sess.run(None, feed)
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        sess.run(None, feed)
        samples.append((time.perf_counter() - start) * 1e3)
    return samples


def interleaved(sessions: dict[str, tuple[Any, dict[str, np.ndarray]]], rounds: int, iterations: int) -> dict:
    """Medians of every graph over ``rounds`` interleaved blocks, and the mHC / dense ratios."""
    samples: dict[str, list[float]] = {key: [] for key in sessions}
    per_round = []
    for _ in range(rounds):
        block = {key: step_ms(sess, feed, iterations) for key, (sess, feed) in sessions.items()}
        for key, values in block.items():
            samples[key].extend(values)
        per_round.append(statistics.median(block["mhc"]) / statistics.median(block["dense"]))
    median = {key: statistics.median(values) for key, values in samples.items()}
    p10 = {key: sorted(values)[len(values) // 10] for key, values in samples.items()}
    ratios = sorted(per_round)
    cut = {f"ratio_{key[4:]}": median[key] / median["dense"] for key in median if key.startswith("mhc_without")}
    cut.update({f"ratio_{key}": median[key] / median["dense"] for key in median if key.startswith("also:")})
    return {"median_ms": median, "p10_ms": p10,
            "ratio": median["mhc"] / median["dense"], **cut,
            "ratio_p10": p10["mhc"] / p10["dense"],
            "round_ratio_min_median_max": [ratios[0], statistics.median(ratios), ratios[-1]]}


def op_profile(model: MHC, folder: Path, threads: int, iterations: int) -> dict[str, Any]:
    """Kernel µs per step and node count per operator type, from one profiled session."""
    sess = session(model, folder, threads, str(folder / f"{model.cfg.name}_prof"))
    feed = feeds(model)
    for _ in range(iterations):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    runs = sum(1 for e in events if e.get("name") == "model_run")
    micros: dict[str, float] = collections.defaultdict(float)
    nodes: dict[str, set] = collections.defaultdict(set)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            micros[e["args"]["op_name"]] += e["dur"]
            nodes[e["args"]["op_name"]].add(e["name"])
    ops = {op: {"us_per_step": micros[op] / runs, "nodes": len(nodes[op])}
           for op in sorted(micros, key=micros.get, reverse=True)}
    return {"nodes": sum(len(v) for v in nodes.values()), "kernel_ms_per_step": sum(micros.values()) / runs / 1e3,
            "ops": ops}


def gathered_expert_bytes(model: MHC) -> int:
    """Bytes of expert weights copied per control step by the gathered-weights export (fp32)."""
    c = model.cfg
    if c.dense:
        return 0
    routed = range(c.shared_only_layers, c.n_layers)  # the shared-only blocks gather nothing
    tokens = sum(c.n_query_tokens if i == c.n_layers - 1 else c.n_patches + c.n_physical_tokens  # last: queries
                 for i in routed)
    per_expert = 2 * c.d_model * c.expert_hidden + c.expert_hidden + c.d_model
    return tokens * c.top_k * per_expert * 4


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="mHC checkpoint (default: random preset s)")
    parser.add_argument("--baseline", default=None, help="dense checkpoint (default: random preset dense_s)")
    parser.add_argument("--also", nargs="+", default=[], metavar="CHECKPOINT",
                        help="more mHC checkpoints timed in the same rounds (e.g. the model shipped before)")
    parser.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads (default: 2)")
    parser.add_argument("--iterations", type=int, default=100, help="timed steps per graph and round (default: 100)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default: 20)")
    parser.add_argument("--top", type=int, default=8, help="operator types printed per model (default: 8)")
    parser.add_argument("--out", default=None, help="JSON output (default: bench/results/ort_ops_cpu<threads>.json)")
    args = parser.parse_args(argv)
    if min(args.threads, args.iterations, args.rounds, args.top) < 1:
        parser.error("--threads, --iterations, --rounds and --top must be >= 1")
    models = {"mhc": load_model(args.checkpoint, "s"), "dense": load_model(args.baseline, "dense_s")}
    if models["mhc"].cfg.dense or not models["dense"].cfg.dense:
        parser.error(f"--checkpoint must be an mHC model and --baseline a dense one "
                     f"(got {models['mhc'].cfg.name}, {models['dense'].cfg.name})")
    out = Path(args.out or Path(__file__).parent / "results" / f"ort_ops_cpu{args.threads}.json")
    with tempfile.TemporaryDirectory(prefix="mhc_ort_ops_") as tmp:
        folder = Path(tmp)
        sessions = {k: (session(m, folder, args.threads), feeds(m)) for k, m in models.items()}
        with routed_experts_cut_out():
            sessions["mhc_without_experts"] = (session(models["mhc"], folder, args.threads, name="no_experts"),
                                               feeds(models["mhc"]))
        if models["mhc"].ball_motion is not None:
            with ball_head_cut_out(models["mhc"]):
                sessions["mhc_without_ball_head"] = (session(models["mhc"], folder, args.threads, name="no_ball"),
                                                     feeds(models["mhc"]))
        for i, spec in enumerate(args.also):
            other = load_model(spec, "s")
            sessions[f"also:{Path(spec).name}"] = (session(other, folder, args.threads, name=f"also{i}"), feeds(other))
        timing = interleaved(sessions, args.rounds, args.iterations)
        med, p10 = timing["median_ms"], timing["p10_ms"]
        low, mid, high = timing["round_ratio_min_median_max"]
        print(f"median step over {args.rounds} interleaved rounds of {args.iterations}: mHC {med['mhc']:.3f} ms, "
              f"dense {med['dense']:.3f} ms, ratio {timing['ratio']:.3f} (per round {low:.2f} / {mid:.2f} / "
              f"{high:.2f} min / median / max); 10th percentile {p10['mhc']:.3f} vs {p10['dense']:.3f} ms, "
              f"ratio {timing['ratio_p10']:.3f}; mHC without its routed experts {med['mhc_without_experts']:.3f} "
              f"ms, ratio {timing['ratio_without_experts']:.3f}")
        if "mhc_without_ball_head" in med:
            head_ms = med["mhc"] - med["mhc_without_ball_head"]
            print(f"mHC without its ball head {med['mhc_without_ball_head']:.3f} ms, ratio "
                  f"{timing['ratio_without_ball_head']:.3f} (the head: {head_ms:.3f} ms)")
        for key in (k for k in med if k.startswith("also:")):
            print(f"{key[5:]}: {med[key]:.3f} ms, ratio {timing[f'ratio_{key}']:.3f}")
        profiles = {k: op_profile(m, folder, args.threads, args.iterations) for k, m in models.items()}
    for key, prof in profiles.items():
        print(f"{key} ({models[key].cfg.name}): {prof['nodes']} nodes, profiled kernel time "
              f"{prof['kernel_ms_per_step']:.3f} ms/step")
        for op, v in list(prof["ops"].items())[: args.top]:
            print(f"  {op:22} {v['us_per_step']:8.1f} us/step  {v['nodes']:4d} nodes")
    gathered = gathered_expert_bytes(models["mhc"])
    print(f"expert weights gathered per mHC step: {gathered / 1e6:.1f} MB")
    doc = {"threads": args.threads, "iterations": args.iterations, "checkpoint": args.checkpoint,
           "baseline": args.baseline,
           "also": args.also,
           "sha256": {key: file_sha256(path) for key, path in (("checkpoint", args.checkpoint),
                                                               ("baseline", args.baseline),
                                                               *((f"also:{Path(p).name}", p) for p in args.also))
                      if path},
           "rounds": args.rounds, "timing": timing, "profiles": profiles,
           "mhc_gathered_expert_bytes_per_step": gathered}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
