"""``mhc collect``: scripted-expert demonstrations as rosbag2 bags and training shards.

Each episode runs the task's expert in the PyBullet world, in a pool of worker processes, and is
written twice (docs/contracts.md): a rosbag2 bag (MCAP), the format a real robot records, and a
compact ``.npz`` shard + ``.json`` metadata that ``mhc train`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from mhc_ros.cli_args import UsageError, non_negative_int, positive_int, writable_dir


@dataclass(frozen=True)
class CollectJob:
    """One episode to record."""

    task: str
    seed: int
    out: str
    image_width: int
    image_height: int
    control_hz: float
    write_bag: bool
    keep_failed: bool
    action_noise: float = 0.0
    grasp_miss: float = 0.0
    late_start: float = 0.0


def episode_name(task: str, seed: int) -> str:
    """File stem shared by an episode's shard, metadata and bag."""
    return f"{task}_{seed:06d}"


class NoisyExecution:
    """Policy adapter: the arm executes ``policy``'s targets plus Gaussian noise (``std`` rad on the 7 arm
    joints) while ``label`` keeps the policy's own action — the data then shows how the expert recovers
    from states slightly off its path, which a cloned policy will visit. ``std`` 0 executes the labels."""

    def __init__(self, policy, std: float, seed: int) -> None:
        self.policy, self.std = policy, std
        self.rng = np.random.default_rng([seed, 1])
        self.label: np.ndarray | None = None

    def reset(self, episode) -> None:
        self.policy.reset(episode)

    def act(self, obs) -> np.ndarray:
        self.label = np.asarray(self.policy.act(obs), dtype=np.float32)
        executed = self.label.copy()
        if self.std > 0:
            executed[:7] += self.rng.normal(0.0, self.std, 7).astype(np.float32)
        return executed


STEP_KEYS = ("images", "joint_positions", "joint_velocities", "actions", "ee_positions", "ee_orientations",
             "object_positions", "object_orientations", "object_velocities", "phase", "sim_time", "train_mask",
             "motion_mask")


def record_episode(world, task: str, seed: int, expert,
                   action_noise: float = 0.0) -> tuple[dict[str, np.ndarray], dict]:
    """Run ``expert`` (an ``ExpertPolicy``) on episode (task, seed) of ``world`` and record it.

    Returns the shard arrays (observation t and the action chosen from it share index t) and the
    episode's outcome. ``action_noise``: see :class:`NoisyExecution`. ``train_mask`` is False on the
    steps of a deliberate miss (``ExpertPolicy(grasp_miss=...)``) and all through a late start
    (``late_start``): kept as context, never imitated. ``motion_mask`` is True where the scene's motion is
    still to be learned from: the imitated steps and every step of a late start (the ball rolling past).
    """
    from mhc_sim import run_episode

    policy = NoisyExecution(expert, action_noise, seed)
    steps: dict[str, list] = {key: [] for key in STEP_KEYS}
    present: list[np.ndarray] = []

    def record(t: int, obs, _executed: np.ndarray) -> None:
        if t == 0:
            present.append(np.asarray(obs.object_present, dtype=bool))
        for key, value in (("images", obs.image), ("joint_positions", obs.joint_positions),
                           ("joint_velocities", obs.joint_velocities), ("actions", policy.label),
                           ("ee_positions", obs.ee_position), ("ee_orientations", obs.ee_orientation),
                           ("object_positions", obs.object_positions),
                           ("object_orientations", obs.object_orientations),
                           ("object_velocities", obs.object_velocities), ("phase", expert.phase),
                           ("sim_time", obs.sim_time), ("train_mask", expert.demonstrating),
                           ("motion_mask", expert.demonstrating or expert.start_delay > 0)):
            steps[key].append(value)

    result = run_episode(world, task, seed, policy, on_step=record)
    dtypes = {"images": np.uint8, "phase": np.int16, "sim_time": np.float64, "train_mask": bool, "motion_mask": bool}
    arrays = {key: np.asarray(values, dtype=dtypes.get(key, np.float32)) for key, values in steps.items()}
    arrays["object_present"] = present[0]
    return arrays, {"success": bool(result.success), "steps": len(steps["actions"]),
                    "regrasps": expert.expert.regrasps, "late_start": expert.start_delay}


_WORKER: tuple | None = None


def _worker_for(job: CollectJob):
    """One world and one expert (its IK client) per worker process, reused across its episodes
    (loading the URDFs is the slow part)."""
    global _WORKER
    from mhc_sim import ExpertPolicy, TabletopWorld, WorldConfig

    config = WorldConfig(image_width=job.image_width, image_height=job.image_height, control_hz=job.control_hz)
    if _WORKER is None or _WORKER[0].config != config:
        _WORKER = (TabletopWorld(config), ExpertPolicy())
    _WORKER[1].grasp_miss = job.grasp_miss
    _WORKER[1].late_start = job.late_start
    return _WORKER


def collect_episode(job: CollectJob) -> dict:
    """Record one episode and write its shard, metadata and bag; returns its manifest entry."""
    from mhc_sim import JOINT_NAMES, OBJECT_SLOTS

    from mhc_ros.bags import write_episode_bag

    world, expert = _worker_for(job)
    arrays, outcome = record_episode(world, job.task, job.seed, expert, job.action_noise)
    episode = world.episode
    name = episode_name(job.task, job.seed)
    entry = {"name": name, "task": job.task, "seed": job.seed, **outcome, "written": False}
    if not outcome["success"] and not job.keep_failed and not outcome["late_start"]:  # late starts miss by design
        return entry
    meta = {
        "task": job.task,
        "seed": job.seed,
        "instruction": episode.instruction,
        "template_index": episode.template_index,
        "plan": [list(step) for step in episode.plan],
        **outcome,
        "object_slots": list(OBJECT_SLOTS),
        "joint_names": list(JOINT_NAMES),
        "control_hz": job.control_hz,
        "camera": world.camera_intrinsics(),
    }
    out = Path(job.out)
    shard_arrays = {k: v for k, v in arrays.items() if k not in ("ee_orientations", "object_orientations")}
    np.savez_compressed(out / "shards" / f"{name}.npz", **shard_arrays)
    (out / "shards" / f"{name}.json").write_text(json.dumps(meta, indent=1))
    if job.write_bag:
        write_episode_bag(out / "bags" / name, arrays, meta)
    entry["written"] = True
    return entry


def parse_tasks(text: str) -> list[str]:
    """``all`` or a comma-separated list of task names, each checked against the registry."""
    from mhc_sim import TASKS

    names = list(TASKS) if text == "all" else [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in names if t not in TASKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown task '{','.join(unknown) or text}' (expected 'all' or some of {', '.join(TASKS)})"
        )
    return names


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", type=parse_tasks, default=None, help="task name, comma list, or 'all'")
    parser.add_argument("--episodes", type=positive_int, default=None, help="episodes per task")
    parser.add_argument("--from-bags", type=Path, default=None, metavar="DIR",
                        help="convert the rosbag2 bags under DIR (e.g. a robot's) into training shards "
                             "instead of running the expert (docs/bags.md)")
    parser.add_argument("--topic-map", default=None,
                        help="--from-bags: topic names, e.g. image=/my/cam,joints=/my/joint_states,"
                             "trajectory=/arm/cmd,gripper=/grip/cmd,instruction=/task")
    parser.add_argument("--instruction", default=None, help="--from-bags: instruction of every episode")
    parser.add_argument("--out", type=Path, required=True, help="output directory (shards/, bags/)")
    parser.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--seed", type=non_negative_int, default=0, help="first seed; episode i uses seed+i")
    parser.add_argument("--image-width", type=positive_int, default=96)
    parser.add_argument("--image-height", type=positive_int, default=96)
    parser.add_argument("--control-hz", type=float, default=20.0)
    parser.add_argument("--no-bags", action="store_true", help="write training shards only")
    parser.add_argument("--keep-failed", action="store_true", help="also write episodes the expert failed")
    parser.add_argument("--action-noise", type=float, default=0.0,
                        help="std (rad) of noise added to the executed arm targets; labels stay the expert's")
    parser.add_argument("--grasp-miss", type=float, default=0.0,
                        help="probability of a deliberate first-grasp miss (3.5-4.5 cm beside the cube) that the "
                             "expert recovers from; the miss is masked out of training (train_mask)")
    parser.add_argument("--late-start", type=float, default=0.0,
                        help="probability that an intercept episode starts late (the arm held still 55-70 "
                             "periods, so the ball rolls past it); kept whatever the outcome, its motion is "
                             "learned (motion_mask), its actions never imitated (train_mask)")


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    if args.from_bags is not None:
        return run_from_bags(args)
    if args.task is None or args.episodes is None:
        raise UsageError("--task and --episodes are required (or --from-bags DIR)")
    if not np.isfinite(args.action_noise) or args.action_noise < 0:
        raise UsageError(f"--action-noise {args.action_noise} must be a finite value ≥ 0 (rad)")
    if not 0.0 <= args.grasp_miss <= 1.0:
        raise UsageError(f"--grasp-miss {args.grasp_miss} must be a probability in [0, 1]")
    if not 0.0 <= args.late_start <= 1.0:
        raise UsageError(f"--late-start {args.late_start} must be a probability in [0, 1]")
    out = writable_dir(args.out)
    for sub in ("shards", "bags"):
        (out / sub).mkdir(exist_ok=True)
    clashes = [
        episode_name(task, seed)
        for task in args.task
        for seed in range(args.seed, args.seed + args.episodes)
        if (out / "shards" / f"{episode_name(task, seed)}.npz").exists()
        or (out / "bags" / episode_name(task, seed)).exists()
    ]
    if clashes:
        raise UsageError(f"episode '{clashes[0]}' already exists in '{out}' (choose another --out or --seed)")
    jobs = [
        CollectJob(task, seed, str(out), args.image_width, args.image_height, args.control_hz,
                   not args.no_bags, args.keep_failed, args.action_noise, args.grasp_miss, args.late_start)
        for task in args.task
        for seed in range(args.seed, args.seed + args.episodes)
    ]
    started = time.perf_counter()
    entries = []
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(collect_episode, job) for job in jobs]
        for future in tqdm(as_completed(futures), total=len(futures), desc="collect", unit="ep", file=sys.stderr):
            entries.append(future.result())
    elapsed = time.perf_counter() - started
    entries.sort(key=lambda e: e["name"])
    manifest = {
        "command": " ".join(["mhc", "collect", *sys.argv[2:]]),
        "jobs": [asdict(j) for j in jobs[:1]],
        "episodes": entries,
        "elapsed_s": elapsed,
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    written = sum(e["written"] for e in entries)
    successes = sum(e["success"] for e in entries)
    late = sum(e["late_start"] > 0 for e in entries)
    late_text = f", {late} late starts" if late else ""
    print(
        f"collected {len(entries)} episodes ({successes} successful{late_text}, {written} written) "
        f"in {elapsed:.1f} s: "
        f"{len(entries) / elapsed * 60:.1f} episodes/minute -> {out}"
    )
    return 0


def run_from_bags(args: argparse.Namespace) -> int:
    """``mhc collect --from-bags DIR --out OUT``: every rosbag2 bag under DIR → ``OUT/shards`` (docs/bags.md)."""
    from mhc_ros.bag_import import BagError, import_bags, parse_topic_map

    started = time.perf_counter()
    out = writable_dir(args.out)
    try:
        entries = import_bags(args.from_bags, out, parse_topic_map(args.topic_map), args.instruction)
    except BagError as err:
        raise UsageError(str(err)) from None
    elapsed = time.perf_counter() - started
    manifest = {"command": " ".join(["mhc", "collect", *sys.argv[2:]]), "from_bags": str(args.from_bags),
                "episodes": entries, "elapsed_s": elapsed}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    steps = sum(e["steps"] for e in entries)
    print(f"converted {len(entries)} bags ({steps} steps) in {elapsed:.1f} s -> {out / 'shards'}")
    return 0
