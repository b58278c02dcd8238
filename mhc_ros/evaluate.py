"""``mhc eval``: closed-loop evaluation directly in the simulation (no ROS graph).

Evaluation seeds start at ``EVAL_SEED_BASE`` by default, so they never overlap the seeds that
``mhc collect`` uses for training data (which start at 0).
"""

from __future__ import annotations

import argparse
import json

from mhc_ros.cli_args import UsageError, known_task, non_negative_int, positive_int

EVAL_SEED_BASE = 1_000_000
POLICIES = ("expert",)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="expert", help=f"policy to evaluate ({', '.join(POLICIES)})")
    parser.add_argument("--task", type=known_task, required=True)
    parser.add_argument("--episodes", type=positive_int, default=50)
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED_BASE, help="first evaluation seed")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def run(args: argparse.Namespace) -> int:
    from mhc_sim import evaluate

    if args.policy not in POLICIES:
        raise UsageError(f"unknown policy '{args.policy}' (expected one of {', '.join(POLICIES)})")
    result = evaluate(args.task, args.episodes, seed=args.seed)
    if args.json:
        print(json.dumps(result))
    else:
        print(
            f"{result['task']}: success {result['success_rate']:.2f} over {result['episodes']} episodes, "
            f"mean {result['mean_steps']:.1f} steps"
        )
    return 0
