"""Synthetic shards in the exact ``mhc collect`` format (docs/contracts.md), for tests and benchmarks.

No simulator: objects sit on a table, the end effector moves toward the instructed object, the
image is a top view with coloured squares, joints follow a smooth trajectory. Deterministic in seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

OBJECT_SLOTS = ("red_cube", "green_cube", "blue_cube", "yellow_cube", "ball", "bin")
COLOURS = {"red_cube": (220, 30, 30), "green_cube": (30, 200, 30), "blue_cube": (30, 30, 220),
           "yellow_cube": (230, 220, 20), "ball": (240, 240, 240), "bin": (120, 80, 40)}
SKILLS = ("reach", "grasp", "lift", "move", "place", "release")
JOINT_NAMES = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]
TEMPLATES = ("pick up the {c} and put it in the bin", "place the {c} into the bin",
             "move the {c} to the bin please")


def _project(xy: np.ndarray, size: int) -> tuple[int, int]:
    """Table x ∈ [0.3, 0.7], y ∈ [−0.2, 0.2] (metres) → pixel (row, col) of a top view."""
    row = int(np.clip((xy[0] - 0.3) / 0.4 * (size - 1), 0, size - 1))
    col = int(np.clip((xy[1] + 0.2) / 0.4 * (size - 1), 0, size - 1))
    return row, col


def make_episode(seed: int, steps: int = 40, image_size: int = 64, task: str = "pick_place"):
    """``(arrays, meta)`` of one synthetic episode following the shard contract."""
    rng = np.random.default_rng(seed)
    present = np.ones(6, dtype=bool)
    present[4] = bool(rng.integers(2))  # the ball is sometimes absent
    obj = np.zeros((6, 3), np.float32)
    obj[:, 0] = rng.uniform(0.35, 0.65, 6)
    obj[:, 1] = rng.uniform(-0.15, 0.15, 6)
    obj[:, 2] = 0.02
    obj[~present] = 0.0
    target_slot = int(rng.integers(4))
    name = OBJECT_SLOTS[target_slot]
    template_index = int(rng.integers(len(TEMPLATES)))
    instruction = TEMPLATES[template_index].format(c=name.replace("_", " "))
    plan = [["reach", name], ["grasp", name], ["lift", name], ["move", "bin"], ["release", "bin"]]
    T = steps
    s = np.linspace(0, 1, T, dtype=np.float32)
    start = np.array([0.4, 0.0, 0.3], np.float32)
    ee = np.empty((T, 3), np.float32)
    half = T // 2
    ee[:half] = start + (obj[target_slot] - start) * s[:half, None] * 2
    ee[half:] = obj[target_slot] + (obj[5] + [0, 0, 0.15] - obj[target_slot]) * (s[half:, None] - 0.5) * 2
    objects = np.repeat(obj[None], T, axis=0)
    objects[half:, target_slot] = ee[half:] - [0, 0, 0.03]  # carried
    q0 = rng.normal(0, 0.2, 9).astype(np.float32)
    joints = q0 + np.outer(s, np.concatenate([ee[-1] - ee[0], ee[-1] - ee[0], [0.0, 0.0, 0.0]])).astype(np.float32)
    joints[:, 7:] = np.where(np.arange(T) < half, 0.04, 0.01)[:, None]
    velocities = np.gradient(joints, axis=0).astype(np.float32) * 20.0
    actions = np.concatenate([np.roll(joints[:, :7], -1, axis=0), joints[:, 7:8] * 2], axis=1).astype(np.float32)
    actions[-1, :7] = joints[-1, :7]
    phase = np.minimum((np.arange(T) * len(plan)) // T, len(plan) - 1).astype(np.int16)
    images = np.full((T, image_size, image_size, 3), 90, np.uint8)
    r = max(1, image_size // 24)
    for t in range(T):
        for i, slot in enumerate(OBJECT_SLOTS):
            if present[i]:
                row, col = _project(objects[t, i], image_size)
                images[t, max(0, row - r) : row + r + 1, max(0, col - r) : col + r + 1] = COLOURS[slot]
        row, col = _project(ee[t], image_size)
        images[t, max(0, row - 1) : row + 2, max(0, col - 1) : col + 2] = 0
    arrays = {
        "images": images, "joint_positions": joints, "joint_velocities": velocities, "actions": actions,
        "ee_positions": ee, "object_positions": objects.astype(np.float32),
        "object_velocities": (np.gradient(objects, axis=0) * 20.0).astype(np.float32),
        "object_present": present, "phase": phase, "sim_time": np.arange(T, dtype=np.float64) / 20.0,
    }
    meta = {
        "task": task, "seed": seed, "instruction": instruction, "template_index": template_index, "plan": plan,
        "success": True, "steps": T, "object_slots": list(OBJECT_SLOTS), "joint_names": JOINT_NAMES,
        "control_hz": 20.0,
        "camera": {"width": image_size, "height": image_size, "fx": image_size, "fy": image_size,
                   "cx": image_size / 2, "cy": image_size / 2},
    }
    return arrays, meta


def write_synthetic_shards(out_dir: str | Path, episodes: int = 8, steps: int = 40, image_size: int = 64,
                           seed: int = 0, task: str = "pick_place") -> Path:
    """Write ``out_dir/shards/<task>_<seed:06d>.npz/.json`` and ``manifest.json``; returns ``out_dir``."""
    out = Path(out_dir)
    (out / "shards").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(episodes):
        arrays, meta = make_episode(seed + i, steps, image_size, task)
        stem = out / "shards" / f"{task}_{seed + i:06d}"
        np.savez_compressed(stem.with_suffix(".npz"), **arrays)
        stem.with_suffix(".json").write_text(json.dumps(meta))
        names.append(stem.name)
    (out / "manifest.json").write_text(json.dumps({"episodes": names, "command": "mhc_model.synthetic"}))
    return out


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="write synthetic mhc shards")
    p.add_argument("out")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    print(write_synthetic_shards(a.out, a.episodes, a.steps, a.image_size, a.seed))
