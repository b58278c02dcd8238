"""What the gripper did in the pick_place episodes a checkpoint fails, sorted into kinds.

Runs the episodes ``mhc eval`` runs (ONNX Runtime on CPU, evaluation seeds, every second instruction held
out) and, for each failed one, follows the target cube and the gripper command: where the hand was,
relative to the cube's centre, and how far its fingers were turned from the cube's faces (a cube looks
the same every 90°, so 0–45°) at each close command, how high the cube got, and where it ended. Kinds:

- ``never closed``: the gripper was never commanded shut;
- ``never picked up``: it closed, but the cube never rose ``LIFTED`` above where it started;
- ``lifted, then lost``: the cube rose at least ``CARRIED`` and ended back on the table (slipped or
  dropped outside the bin);
- ``held low until the time ran out``: the episode ended with the gripper shut and the cube in it, less
  than ``CARRIED`` up;
- ``other``.

It also counts the episodes, failed and successful, whose first close came more than ``HIGH`` above the
cube's centre (the fingertips on its top edge).

Usage::

    python bench/pick_failures.py --checkpoint model/checkpoints/mhc_s.safetensors --episodes 50 \
        --out bench/results/pick_failures.json
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np

from mhc_ros.evaluate import EVAL_SEED_BASE

CLOSED = 0.02  # gripper command (m) below which the fingers are told to shut
LIFTED = 0.005  # the cube this far (m) above where it started has left the table
CARRIED = 0.03  # ... and this far is being carried
HIGH = 0.015  # the hand this far (m) above the cube's centre at a close: fingertips on the cube's top edge


def close_events(width: np.ndarray) -> list[tuple[int, int]]:
    """``(close, open)`` step pairs of a gripper command track ``width (T,)``; open is T if never reopened."""
    shut = np.asarray(width) < CLOSED
    closes = [t for t in range(1, len(shut)) if shut[t] and not shut[t - 1]]
    events = []
    for t in closes:
        reopened = np.flatnonzero(~shut[t:])
        events.append((t, int(t + reopened[0]) if len(reopened) else len(shut)))
    return events


def failure_kind(width: np.ndarray, cube_z: np.ndarray) -> str:
    """Kind of a failed episode from its gripper commands ``(T,)`` and the cube's height ``(T,)`` (m)."""
    events = close_events(width)
    rise = np.asarray(cube_z) - cube_z[0]
    if not events:
        return "never closed"
    if rise.max() < LIFTED:
        return "never picked up"
    if rise.max() >= CARRIED and rise[-1] < LIFTED:
        return "lifted, then lost"
    if events[-1][1] == len(rise) and LIFTED <= rise[-1] < CARRIED:
        return "held low until the time ran out"
    return "other"


def face_angle_deg(hand_yaw: np.ndarray, cube_yaw: np.ndarray) -> np.ndarray:
    """How far (degrees, 0–45) the fingers are turned from the nearest pair of the cube's faces."""
    turn = np.degrees(np.asarray(hand_yaw) - np.asarray(cube_yaw))
    return np.abs((turn + 45.0) % 90.0 - 45.0)


def closes(hand: np.ndarray, cube: np.ndarray, width: np.ndarray, face_angle: np.ndarray) -> list[dict]:
    """Per close command: the hand's offset from the cube's centre (cm), the fingers' angle to the cube's
    faces (degrees) and the cube's highest rise (cm) while the gripper stayed shut."""
    rise = cube[:, 2] - cube[0, 2]
    return [{"step": t, "hand_minus_cube_cm": np.round((hand[t] - cube[t]) * 100, 1).tolist(),
             "face_angle_deg": round(float(face_angle[t]), 1),
             "cube_rise_cm": round(float(rise[t:end].max()) * 100, 1)}
            for t, end in close_events(width)]


def describe(hand: np.ndarray, cube: np.ndarray, width: np.ndarray, face_angle: np.ndarray) -> dict:
    """One failed episode: its kind and its :func:`closes`."""
    return {"kind": failure_kind(width, cube[:, 2]), "steps": len(width),
            "closes": closes(hand, cube, width, face_angle)}


def closed_high(first_closes: list[dict]) -> int:
    """How many of these first closes came more than ``HIGH`` above the cube's centre."""
    return sum(1 for close in first_closes if close["hand_minus_cube_cm"][2] > HIGH * 100)


def run(checkpoint: str, episodes: int, seed: int, threads: int) -> tuple[float, dict[int, dict], list[dict]]:
    """Success rate, the failed episodes (:func:`describe`) by seed, and the first of the :func:`closes`
    of each successful episode."""
    from mhc_model.runtime import load_runtime
    from mhc_sim import OBJECT_SLOTS, WorldConfig, evaluate
    from mhc_sim.experts import yaw_of
    from tqdm import tqdm

    from mhc_ros.model_policy import RuntimePolicy

    runtime = load_runtime(checkpoint, backend="onnxruntime", threads=threads)
    track: list[tuple[np.ndarray, np.ndarray, float, float]] = []
    failed: dict[int, dict] = {}
    succeeded: list[dict] = []
    progress = tqdm(total=episodes, desc="pick_place episodes", unit="ep")

    def on_step(world, t, obs, action) -> None:
        slot = OBJECT_SLOTS.index(world.episode.target)
        angle = face_angle_deg(yaw_of(obs.ee_orientation), yaw_of(obs.object_orientations[slot]))
        track.append((np.array(obs.ee_position), np.array(obs.object_positions[slot]), float(action[7]), angle))

    def on_result(result) -> None:
        hand, cube, width, angle = (np.array(column) for column in zip(*track, strict=True))
        if not result.success:
            failed[result.seed] = describe(hand, cube, width, angle)
        elif made := closes(hand, cube, width, angle):
            succeeded.append(made[0])
        track.clear()
        progress.update()

    report = evaluate("pick_place", episodes, seed=seed, policy_factory=lambda: RuntimePolicy(runtime),
                      config=WorldConfig(image_width=96, image_height=96), instructions="mixed",
                      on_step=on_step, on_result=on_result)
    progress.close()
    return report["success_rate"], failed, succeeded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="mHC or dense checkpoint (.safetensors)")
    parser.add_argument("--episodes", type=int, default=50, help="pick_place episodes (default: 50)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help=f"first seed (default: {EVAL_SEED_BASE})")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default: 1)")
    parser.add_argument("--out", type=Path, help="write the failed episodes as JSON here")
    args = parser.parse_args(argv)
    success_rate, failed, succeeded = run(args.checkpoint, args.episodes, args.seed, args.threads)
    kinds = Counter(episode["kind"] for episode in failed.values())
    print(f"success {success_rate:.2f}; {len(failed)} failed: " + ", ".join(f"{n} {k}" for k, n in kinds.most_common()))
    failed_first = [episode["closes"][0] for episode in failed.values() if episode["closes"]]
    high = {"failed": closed_high(failed_first), "succeeded": closed_high(succeeded)}
    print(f"first close more than {HIGH * 100:.1f} cm above the cube's centre: {high['failed']} of "
          f"{len(failed_first)} failed and {high['succeeded']} of {len(succeeded)} successful episodes that closed")
    succeeded_angles = [close["face_angle_deg"] for close in succeeded]
    if succeeded_angles:
        print(f"fingers to the cube's faces at the first close of the successful episodes: median "
              f"{np.median(succeeded_angles):.1f}°, 90th percentile {np.percentile(succeeded_angles, 90):.1f}°")
    for seed, episode in sorted(failed.items()):
        first = episode["closes"][0] if episode["closes"] else None
        where = (f", first {first['hand_minus_cube_cm']} cm from the centre, {first['face_angle_deg']}° to the faces"
                 if first else "")
        print(f"  {seed}: {episode['kind']}, {len(episode['closes'])} closes{where}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": args.checkpoint, "episodes": args.episodes, "seed": args.seed,
                                        "success_rate": success_rate, "kinds": dict(kinds),
                                        "first_close_high": high, "succeeded_first_closes": succeeded,
                                        "failed": {str(s): e for s, e in sorted(failed.items())}}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
