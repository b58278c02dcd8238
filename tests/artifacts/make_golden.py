"""Regenerate the golden replay artifacts of ``tests/test_replay.py`` (overwrites them: needs ``--yes-overwrite``).

    python tests/artifacts/make_golden.py --yes-overwrite

Writes, under ``tests/artifacts/``:
- ``tiny_policy.safetensors`` (+ ``.json``): a ``tiny`` preset mHC policy, randomly initialised with a fixed
  seed (no trained model ships yet); a trained checkpoint can be substituted with ``--checkpoint``;
- ``golden/<task>_<seed>/``: short closed-loop episodes in the simulation (48×48 camera), the policy driven
  by the controller's own core (``RuntimePolicy`` → ``ControllerCore``), written as rosbag2 bags in the
  format of ``mhc_ros/bags.py`` (MCAP, metadata v9, QoS); the recorded commands are the node's commands;
- ``golden/<task>_<seed>.expected.json``: the golden commands, from ``mhc replay --update`` of each bag.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import numpy as np

ARTIFACTS = Path(__file__).resolve().parent
EPISODES = (("reach", 0), ("pick_place", 1))
STEPS = 40
IMAGE_SIZE = 48
POLICY_SEED = 7


def make_checkpoint(path: Path) -> Path:
    from mhc_model.checkpoint import save_checkpoint
    from mhc_model.config import preset
    from mhc_model.latency import random_policy

    return save_checkpoint(path, random_policy(preset("tiny"), seed=POLICY_SEED).eval())


def record_closed_loop(task: str, seed: int, checkpoint: Path, bag: Path) -> dict:
    """Run the controller core closed-loop for ``STEPS`` control periods and write the episode bag."""
    from mhc_model.runtime import load_runtime
    from mhc_sim import OBJECT_SLOTS, TabletopWorld, WorldConfig

    from mhc_ros.bags import write_episode_bag
    from mhc_ros.model_policy import RuntimePolicy

    world = TabletopWorld(WorldConfig(image_width=IMAGE_SIZE, image_height=IMAGE_SIZE, control_hz=20.0))
    try:
        obs = world.reset(task, seed)
        runtime = load_runtime(str(checkpoint), backend="torch", device="cpu", threads=1)
        policy = RuntimePolicy(runtime)
        policy.reset(world.episode)
        keys = ("images", "joint_positions", "joint_velocities", "actions", "ee_positions", "ee_orientations",
                "object_positions", "object_orientations", "object_velocities", "sim_time")
        steps: dict[str, list] = {key: [] for key in keys}
        for _ in range(STEPS):
            action = policy.act(obs)
            for key, value in (("images", obs.image), ("joint_positions", obs.joint_positions),
                               ("joint_velocities", obs.joint_velocities), ("actions", action),
                               ("ee_positions", obs.ee_position), ("ee_orientations", obs.ee_orientation),
                               ("object_positions", obs.object_positions),
                               ("object_orientations", obs.object_orientations),
                               ("object_velocities", obs.object_velocities), ("sim_time", obs.sim_time)):
                steps[key].append(value)
            obs = world.step(action)
        arrays = {key: np.asarray(values, dtype=np.uint8 if key == "images" else np.float64)
                  for key, values in steps.items()}
        meta = {"instruction": world.episode.instruction, "control_hz": 20.0,
                "joint_names": list(obs.joint_names), "object_slots": list(OBJECT_SLOTS)}
        write_episode_bag(bag, arrays, meta)
        return {"task": task, "seed": seed, "instruction": world.episode.instruction, "steps": STEPS}
    finally:
        world.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--yes-overwrite", action="store_true", help="required: replace the committed artifacts")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="use this checkpoint instead of a fresh random tiny policy (copied into artifacts)")
    args = parser.parse_args(argv)
    if not args.yes_overwrite:
        print("make_golden: refusing to overwrite tests/artifacts without --yes-overwrite", file=sys.stderr)
        return 2
    from mhc_ros.replay import replay

    checkpoint = ARTIFACTS / "tiny_policy.safetensors"
    if args.checkpoint is None:
        make_checkpoint(checkpoint)
    else:
        shutil.copyfile(args.checkpoint, checkpoint)
        shutil.copyfile(args.checkpoint.with_suffix(".json"), checkpoint.with_suffix(".json"))
    golden = ARTIFACTS / "golden"
    shutil.rmtree(golden, ignore_errors=True)
    golden.mkdir()
    for task, seed in EPISODES:
        bag = golden / f"{task}_{seed:06d}"
        info = record_closed_loop(task, seed, checkpoint, bag)
        report = replay(bag, checkpoint, update=True)
        worst = max(row["max_abs"] for row in report["commands"].values())
        print(f"{bag.name}: {info['steps']} ticks, '{info['instruction']}', replay vs closed loop max |dev| "
              f"{worst:.2e} -> {report['updated']}")
    total = sum(p.stat().st_size for p in ARTIFACTS.rglob("*") if p.is_file() and p.suffix != ".py")
    print(f"artifacts: {total / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
