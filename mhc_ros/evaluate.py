"""``mhc eval``: closed-loop evaluation directly in the simulation (no ROS graph).

``--policy expert`` runs the scripted experts; ``--checkpoint C`` runs the learned model through an
inference runtime with the controller node's smoothing and limits (``RuntimePolicy``). Evaluation
seeds start at ``EVAL_SEED_BASE`` by default, so they never overlap the seeds that ``mhc collect``
uses for training data (which start at 0).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mhc_ros.cli_args import UsageError, known_task, non_negative_int, positive_int

EVAL_SEED_BASE = 1_000_000
POLICIES = ("expert", "mhc")
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default=None,
                        help=f"policy to evaluate ({', '.join(POLICIES)}; default: mhc with --checkpoint, else expert)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="mHC checkpoint (.safetensors) for --policy mhc")
    parser.add_argument("--backend", default="onnxruntime", help=f"inference backend ({', '.join(BACKENDS)})")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU inference threads")
    parser.add_argument("--task", type=known_task, required=True)
    parser.add_argument("--episodes", type=positive_int, default=50)
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED_BASE, help="first evaluation seed")
    parser.add_argument("--image-size", type=positive_int, default=96, help="scene camera width and height (px)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def _model_policy_factory(args: argparse.Namespace, made: list):
    from mhc_model.runtime import RuntimeLoadError, load_runtime

    from mhc_ros.model_policy import RuntimePolicy

    if args.checkpoint is None:
        raise UsageError("--policy mhc needs --checkpoint")
    if args.backend not in BACKENDS:
        raise UsageError(f"unknown backend '{args.backend}' (expected one of {', '.join(BACKENDS)})")
    try:
        runtime = load_runtime(str(args.checkpoint), backend=args.backend, threads=args.threads)
    except RuntimeLoadError as err:
        raise UsageError(str(err).splitlines()[0]) from None

    def factory():
        made.append(RuntimePolicy(runtime))
        return made[-1]

    return factory


def run(args: argparse.Namespace) -> int:
    from mhc_sim import ExpertPolicy, WorldConfig, evaluate

    policy_name = args.policy or ("mhc" if args.checkpoint is not None else "expert")
    if policy_name not in POLICIES:
        raise UsageError(f"unknown policy '{policy_name}' (expected one of {', '.join(POLICIES)})")
    made: list = []
    if policy_name == "expert":
        factory, config = ExpertPolicy, None
    else:
        factory = _model_policy_factory(args, made)
        config = WorldConfig(image_width=args.image_size, image_height=args.image_size)
    result = evaluate(args.task, args.episodes, seed=args.seed, policy_factory=factory, config=config)
    result["policy"] = policy_name
    if made:
        p50, p99 = made[0].latency.percentiles_ms()
        result.update(checkpoint=str(args.checkpoint), backend=made[0].runtime.backend,
                      latency_p50_ms=p50, latency_p99_ms=p99)
    if args.json:
        print(json.dumps(result))
    else:
        latency = f", control step p50 {result['latency_p50_ms']:.2f} ms" if made else ""
        print(
            f"{result['task']} ({policy_name}): success {result['success_rate']:.2f} over {result['episodes']} "
            f"episodes, mean {result['mean_steps']:.1f} steps{latency}, failures {result['failures']}"
        )
    return 0
