"""``mhc bench latency``: batch-1 latency (ms, p50/p99) of each domain profile on each available backend.

Backends: ``torch`` (eager; CUDA when available, else CPU with ``--threads``), ``cuda-graph`` (the profile
captured in a CUDA graph and replayed), ``onnxruntime`` (CPU EP, ``--threads`` intra-op threads, the graph
exported on the fly), ``tensorrt`` (needs engines built on the target; skipped here) and ``all`` (every backend
available on this machine × every profile, for the preset and its dense baseline, in one table).

What is timed: one call of the profile's graph on prepared inputs (``mhc_model.export.ProfileGraph``: the
unit that is exported / captured), host wall-clock with a CUDA synchronize per call; image preprocessing and
output decoding are not included. Without ``--checkpoint`` the weights are random (latency does not depend on
them); a small synthetic vocabulary is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from mhc_model.config import DENSE_BASELINE, PRESETS, PROFILES, MHCConfig, preset
from mhc_model.export import ProfileGraph, example_inputs, export_profile, profile_inputs

BENCH_BACKENDS = ("torch", "cuda-graph", "onnxruntime", "tensorrt")
WORDS = ("pick", "up", "the", "red", "green", "blue", "yellow", "cube", "ball", "bin", "put", "it", "in", "into",
         "on", "left", "right", "forward", "back", "place", "move", "to", "and", "please")
SKILLS = ("reach", "grasp", "lift", "move", "place", "release", "push")
TARGETS = ("red_cube", "green_cube", "blue_cube", "yellow_cube", "ball", "bin", "left", "right", "forward", "back")


def random_policy(cfg: MHCConfig, seed: int = 0) -> Any:
    """An ``MHCPolicy`` of ``cfg`` with random weights and a small synthetic vocabulary (eval mode)."""
    from mhc_model.policy import MHCPolicy
    from mhc_model.tokenizers import LabelVocabulary, Vocabulary

    torch.manual_seed(seed)
    vocab = Vocabulary.build([" ".join(WORDS[: max(1, cfg.vocab_size - 3)])])
    skills = LabelVocabulary.build(SKILLS[: cfg.num_skills - 1])
    targets = LabelVocabulary.build(TARGETS[: cfg.num_targets - 1])
    return MHCPolicy(cfg, vocab, skills, targets).eval()


def percentiles(samples_s: list[float]) -> dict[str, float]:
    ms = np.asarray(samples_s) * 1e3
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)),
            "mean_ms": float(ms.mean())}


def time_call(fn: Callable[[], Any], iterations: int, warmup: int, cuda: bool) -> dict[str, float]:
    """Wall-clock per call (synchronising CUDA after each), after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter()
        fn()
        if cuda:
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return percentiles(samples)


def backend_problem(backend: str) -> str | None:
    """Why ``backend`` cannot be timed on this machine, or None."""
    if backend == "cuda-graph" and not torch.cuda.is_available():
        return "no CUDA device"
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed"
    if backend == "tensorrt":
        from mhc_model.engine import TRT_MISSING, import_tensorrt

        try:
            import_tensorrt()
        except ImportError:
            return TRT_MISSING
        return "time engines with trtexec --loadEngine=trt_engines/<profile>.engine on the target"
    return None


@torch.no_grad()
def bench_one(policy: Any, backend: str, profile: str, iterations: int = 100, threads: int = 2,
              precision: str = "fp32", warmup: int = 10, compile_module: bool = False) -> dict[str, Any]:
    """Latency row of ``profile`` on ``backend`` for ``policy`` (batch 1)."""
    torch.set_num_threads(threads)
    cfg = policy.config
    row: dict[str, Any] = {"backend": backend, "preset": cfg.name, "profile": profile, "threads": threads,
                           "iterations": iterations}
    if backend in ("torch", "cuda-graph"):
        device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
        model = policy.model.to(device).eval()
        graph = ProfileGraph(model, profile)
        inputs = example_inputs(model, profile, seed=1)
        if backend == "cuda-graph":
            from mhc_model.runtime.torch_backend import GraphedProfile

            graphed = GraphedProfile(graph, inputs, precision, compile_module=compile_module)
            fn: Callable[[], Any] = lambda: graphed(*inputs)  # noqa: E731
            row["precision"] = precision
            row["compiled"] = compile_module
        else:
            fn = lambda: graph(*inputs)  # noqa: E731
        row["device"] = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        row.update(time_call(fn, iterations, warmup, device.type == "cuda"))
        policy.model.cpu()
        return row
    if backend == "onnxruntime":
        from mhc_model.runtime.onnx_backend import make_session

        model = policy.model.cpu().eval()
        with tempfile.TemporaryDirectory(prefix="mhc_bench_") as tmp:
            path = Path(tmp) / f"{profile}.onnx"
            export_profile(model, profile, path)
            session = make_session(path, threads)
        inputs = example_inputs(model, profile, seed=1)
        feed = {n: t.numpy() for n, t in zip(profile_inputs(model.cfg, profile), inputs, strict=True)}
        row["device"] = "cpu"
        row.update(time_call(lambda: session.run(None, feed), iterations, warmup, False))
        return row
    raise ValueError(f"backend {backend!r} cannot be timed here ({backend_problem(backend)})")


def bench_table(presets: list[str], backends: list[str], profiles: list[str], iterations: int, threads: int,
                precision: str, checkpoint: str | None = None,
                compile_module: bool = False) -> tuple[list[dict], list[str]]:
    """Rows for every (preset, backend, profile) available; plus one line per skipped backend."""
    rows, skipped = [], []
    usable = []
    for backend in backends:
        problem = backend_problem(backend)
        if problem is None:
            usable.append(backend)
        else:
            skipped.append(f"{backend}: skipped ({problem})")
    for name in presets:
        if checkpoint is not None and name == presets[0]:
            from mhc_model.checkpoint import load_policy
            from mhc_model.runtime.base import resolve_checkpoint

            policy = load_policy(resolve_checkpoint(checkpoint))[0].eval()
        else:
            policy = random_policy(preset(name))
        for backend in usable:
            for profile in profiles:
                rows.append(bench_one(policy, backend, profile, iterations, threads, precision,
                                      compile_module=compile_module))
    return rows, skipped


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mhc bench latency``."""
    parser.add_argument("--backend", default="all", choices=[*BENCH_BACKENDS, "all"],
                        help="backend to time, or all available ones (default: all)")
    parser.add_argument("--preset", default="s", choices=list(PRESETS), help="model preset (default: s)")
    parser.add_argument("--profile", default=None, choices=list(PROFILES),
                        help="domain profile (default: control; --backend all: every profile)")
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint's weights (default: random)")
    parser.add_argument("--iterations", type=int, default=100, help="timed calls per row (default: 100)")
    parser.add_argument("--threads", type=int, default=2, help="CPU intra-op threads (default: 2)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                        help="cuda-graph precision (default: fp32)")
    parser.add_argument("--compile", action="store_true",
                        help="cuda-graph: torch.compile the step (Inductor fusion) before capturing it")
    parser.add_argument("--no-dense", action="store_true", help="with --backend all: skip the dense baseline")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.iterations < 1 or args.threads < 1:
        print(f"mhc bench latency: error: --iterations {args.iterations} and --threads {args.threads} must be >= 1",
              file=sys.stderr)
        return 2
    every = args.backend == "all"
    backends = list(BENCH_BACKENDS) if every else [args.backend]
    profiles = [args.profile] if args.profile else (list(PROFILES) if every else ["control"])
    presets = [args.preset]
    if every and not args.no_dense and args.preset in DENSE_BASELINE:
        presets.append(DENSE_BASELINE[args.preset])
    if not every and backend_problem(args.backend) is not None:
        print(f"mhc bench latency: error: backend '{args.backend}' unavailable: {backend_problem(args.backend)}",
              file=sys.stderr)
        return 2
    rows, skipped = bench_table(presets, backends, profiles, args.iterations, args.threads, args.precision,
                                args.checkpoint, compile_module=args.compile)
    doc: dict[str, Any] = rows[0] if len(rows) == 1 and not every else {"results": rows, "skipped": skipped}
    text = json.dumps(doc, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    if args.json:
        print(text)
        return 0
    print(f"{'backend':12} {'device':14} {'preset':8} {'profile':9} {'p50 ms':>8} {'p99 ms':>8}  threads")
    for r in rows:
        backend = r["backend"] + (f"-{r['precision']}" if r.get("precision", "fp32") != "fp32" else "")
        backend += "+compile" if r.get("compiled") else ""
        print(f"{backend:12} {r['device'][:14]:14} {r['preset']:8} {r['profile']:9} {r['p50_ms']:8.3f} "
              f"{r['p99_ms']:8.3f}  {r['threads']}")
    for line in skipped:
        print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="mhc bench latency", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
