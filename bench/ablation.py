"""mHC vs dense in closed loop: success per task of several checkpoints of each, group means, difference.

Runs ``mhc eval --json`` for every (checkpoint, task, first seed) on the CPU, ``--jobs`` at a time with one
inference thread each, and keeps every result in ``--cache`` (named by the checkpoint's sha256, task, seed
and episode count, so a rerun only evaluates what is missing). Then prints, per task, each checkpoint's
success over its seed blocks, the mean of the mHC and of the dense checkpoints, mHC − dense in points and
whether that is within ``--margin``. Writes the table as JSON to ``--out``.

Usage (the fifth run's ablation, ``bench/results/ablation_v5.json``)::

    python bench/ablation.py --mhc model/checkpoints/mhc_s.safetensors MHC_SEED0 --dense DENSE_SEED0 DENSE_SEED1 \
        --task-seeds pick_place=1000000,1000050 push=1000000,1000050
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from statistics import mean
from typing import Any

from mhc_model.export import file_sha256

from mhc_ros.evaluate import EVAL_SEED_BASE

TASKS = ("reach", "pick_place", "push", "intercept")


def parse_task_seeds(items: list[str]) -> dict[str, list[int]]:
    """``["push=1000000,1000050"]`` → ``{"push": [1000000, 1000050]}``; a bad item raises ``ValueError``."""
    out = {}
    for item in items:
        task, _, seeds = item.partition("=")
        if task not in TASKS or not seeds:
            raise ValueError(f"--task-seeds {item!r}: expected TASK=SEED[,SEED...] with TASK in {', '.join(TASKS)}")
        try:
            out[task] = [int(s) for s in seeds.split(",")]
        except ValueError:
            raise ValueError(f"--task-seeds {item!r}: seeds must be integers") from None
    return out


def evaluate(checkpoint: Path, task: str, seed: int, episodes: int, cache: Path) -> tuple[dict[str, Any], float]:
    """One ``mhc eval`` result (from the cache when there); returns it and the seconds it took (0 if cached)."""
    path = cache / f"{file_sha256(checkpoint)[:16]}_{task}_{seed}_{episodes}.json"
    if path.is_file():
        return json.loads(path.read_text()), 0.0
    start = time.monotonic()
    command = [sys.executable, "-m", "mhc_ros.cli", "eval", "--checkpoint", str(checkpoint), "--task", task,
               "--episodes", str(episodes), "--seed", str(seed), "--threads", "1", "--json"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    result = json.loads(done.stdout)
    path.write_text(json.dumps(result) + "\n")
    return result, time.monotonic() - start


def table(groups: dict[str, list[Path]], tasks: list[str], seeds: dict[str, list[int]], episodes: int,
          results: dict[tuple[Path, str, int], dict[str, Any]], margin: float) -> dict[str, Any]:
    """Success per checkpoint and task (pooled over seed blocks), group means and mHC − dense."""
    doc: dict[str, Any] = {"episodes_per_block": episodes, "margin_points": margin, "seeds": seeds,
                           "checkpoints": {}, "tasks": {}}
    for group, paths in groups.items():
        for path in paths:
            doc["checkpoints"][str(path)] = {"group": group, "sha256": file_sha256(path)}
    for task in tasks:
        row: dict[str, Any] = {}
        for group, paths in groups.items():
            rates = {str(p): mean(results[(p, task, s)]["success_rate"] for s in seeds[task]) for p in paths}
            row[group] = {"per_checkpoint": rates, "mean": mean(rates.values())}
        row["difference_points"] = 100 * (row["mhc"]["mean"] - row["dense"]["mean"])
        row["within_margin"] = row["difference_points"] >= -margin
        doc["tasks"][task] = row
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mhc", nargs="+", type=Path, required=True, help="mHC checkpoints (.safetensors)")
    parser.add_argument("--dense", nargs="+", type=Path, required=True, help="dense baseline checkpoints")
    parser.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated (default: {','.join(TASKS)})")
    parser.add_argument("--episodes", type=int, default=50, help="episodes per seed block (default: 50)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE,
                        help=f"first seed of every task (default: {EVAL_SEED_BASE})")
    parser.add_argument("--task-seeds", nargs="*", default=[], metavar="TASK=SEED,SEED",
                        help="first seeds of several blocks for a task, e.g. push=1000000,1000050")
    parser.add_argument("--margin", type=float, default=5.0, help="allowed mHC − dense, points (default: 5)")
    parser.add_argument("--jobs", type=int, default=2, help="evaluations at once (default: 2)")
    parser.add_argument("--cache", type=Path, default=Path("out/ablation_cache"), help="folder of eval results")
    parser.add_argument("--out", type=Path, default=Path("out/ablation.json"), help="JSON table")
    args = parser.parse_args(argv)
    tasks = [t for t in args.tasks.split(",") if t]
    bad = [t for t in tasks if t not in TASKS]
    missing = [str(p) for p in [*args.mhc, *args.dense] if not p.is_file()]
    if bad:
        parser.error(f"--tasks: unknown {bad} (known: {', '.join(TASKS)})")
    if missing:
        parser.error(f"checkpoint(s) not found: {missing}")
    if args.episodes < 1 or args.jobs < 1:
        parser.error(f"--episodes {args.episodes} and --jobs {args.jobs} must be >= 1")
    try:
        seeds = {t: [args.seed] for t in tasks} | parse_task_seeds(args.task_seeds)
    except ValueError as err:
        parser.error(str(err))
    groups = {"mhc": args.mhc, "dense": args.dense}
    jobs = [(p, t, s) for t in tasks for s in seeds[t] for p in [*args.mhc, *args.dense]]
    args.cache.mkdir(parents=True, exist_ok=True)
    results: dict[tuple[Path, str, int], dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(evaluate, p, t, s, args.episodes, args.cache): (p, t, s) for p, t, s in jobs}
        for i, future in enumerate(as_completed(futures), 1):
            key = futures[future]
            results[key], seconds = future.result()
            took = f"{seconds:.0f} s" if seconds else "cached"
            print(f"[{i}/{len(jobs)}] {key[0].name} {key[1]} seeds {key[2]}+: "
                  f"{results[key]['success_rate']:.2f} ({took})", flush=True)
    doc = table(groups, tasks, seeds, args.episodes, results, args.margin)
    print(f"\n{'task':11} {'mHC mean':>9} {'dense mean':>11} {'mHC-dense':>10}  within {args.margin:g} points")
    for task, row in doc["tasks"].items():
        rates = "; ".join(f"{Path(p).name} {r:.2f}" for g in groups for p, r in row[g]["per_checkpoint"].items())
        print(f"  {task}: {rates}")
        print(f"{task:11} {row['mhc']['mean']:9.3f} {row['dense']['mean']:11.3f} {row['difference_points']:+10.1f}  "
              f"{'yes' if row['within_margin'] else 'NO'}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
