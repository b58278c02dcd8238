"""Where the ball's predicted motion goes wrong: ADE by time since the episode's start, on intercept.

Runs ``intercept`` episodes in closed loop (ONNX Runtime on CPU, the evaluation seeds of ``mhc eval``) and
splits the ball's average displacement error over the prediction horizon by the tick it was predicted at
(``--bins``), next to two constant-velocity extrapolations from the ball seen in the camera frames
(``mhc_ros.evaluate.ball_from_image``): from ticks t−1 and t, and from t−2 and t. Ticks are scored where
the whole horizon was observed and the ball was seen at t−2, t−1 and t. Also splits by episode outcome,
and gives the errors at each step of the horizon over the first bin's ticks with the camera's own ball
position error, which bounds how well constant velocity from the frames can do at step 1.

Usage::

    python bench/motion_phases.py --checkpoint model/checkpoints/mhc_s.safetensors --episodes 50 \
        --out bench/results/motion_phases.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

from mhc_ros.evaluate import EVAL_SEED_BASE, ball_from_image, constant_velocity, step_errors

OPEN_END = 1 << 30  # the last bin's end: no end


def parse_bins(text: str) -> list[tuple[int, int]]:
    """``"0,20,40"`` → ``[(0, 20), (20, 40), (40, ∞)]``; raises ``ValueError`` naming a bad value."""
    try:
        edges = [int(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--bins {text!r}: expected comma-separated integers") from None
    if not edges or edges[0] != 0 or any(b <= a for a, b in itertools.pairwise(edges)):
        raise ValueError(f"--bins {text!r}: must start at 0 and increase")
    return list(zip(edges, [*edges[1:], OPEN_END], strict=True))


class Tick(NamedTuple):
    """One scored tick: the ball's error (m) at each step of the horizon, of the model and of constant
    velocity from the camera frames at lag 1 and 2, and the camera's ball position error at t."""

    t: int
    success: bool
    model: np.ndarray  # (H,)
    const_velocity_lag1: np.ndarray  # (H,)
    const_velocity_lag2: np.ndarray  # (H,)
    camera_error: float


def scored_ticks(episodes: list[dict]) -> list[Tick]:
    """The ticks whose whole horizon was observed and whose ball was seen at t−2, t−1 and t.

    ``episodes``: ``{"success": bool, "ticks": [(true position (3,), predicted (H, 3), seen (3,) | None)]}``.
    """
    scored = []
    for episode in episodes:
        ticks = episode["ticks"]
        positions = np.array([p for p, _, _ in ticks])
        for t, (position, predicted, seen) in enumerate(ticks):
            horizon = len(predicted)
            if t < 2 or t + horizon >= len(positions):
                continue
            earlier = [ticks[t - 1][2], ticks[t - 2][2]]
            if seen is None or any(e is None for e in earlier):
                continue
            truth = positions[t + 1 : t + 1 + horizon]
            scored.append(Tick(t, episode["success"], step_errors(predicted, truth),
                               step_errors(constant_velocity(seen, earlier[0], 1, horizon), truth),
                               step_errors(constant_velocity(seen, earlier[1], 2, horizon), truth),
                               float(np.linalg.norm(seen - position))))
    return scored


def score(ticks: list[Tick], bins: list[tuple[int, int]]) -> list[dict]:
    """Per bin (and outcome): ticks, model ADE, constant-velocity ADE from lag 1 and lag 2 (metres)."""
    table = []
    for lo, hi in bins:
        for outcome in (None, True, False):
            picked = [r for r in ticks if lo <= r.t < hi and (outcome is None or r.success == outcome)]
            if not picked:
                continue
            model, cv1, cv2 = (float(np.mean([getattr(r, name).mean() for r in picked]))
                               for name in ("model", "const_velocity_lag1", "const_velocity_lag2"))
            table.append({"ticks_from": lo, "ticks_to": hi if hi < OPEN_END else None,
                          "episodes": {None: "all", True: "success", False: "failure"}[outcome],
                          "n": len(picked), "model_m": model, "const_velocity_lag1_m": cv1,
                          "const_velocity_lag2_m": cv2, "ratio_lag1": model / cv1 if cv1 > 0 else float("nan")})
    return table


def by_horizon_step(ticks: list[Tick], ticks_to: int) -> dict:
    """Errors (m) at each step of the horizon, mean over ticks before ``ticks_to``, of the model and of
    constant velocity (lag 1), with the camera's mean ball position error at t — the floor of the latter."""
    picked = [r for r in ticks if r.t < ticks_to]
    if not picked:
        raise ValueError(f"no scored tick before tick {ticks_to}")
    return {"ticks_to": ticks_to if ticks_to < OPEN_END else None, "n": len(picked),
            "model_m": np.mean([r.model for r in picked], axis=0).tolist(),
            "const_velocity_lag1_m": np.mean([r.const_velocity_lag1 for r in picked], axis=0).tolist(),
            "camera_position_error_m": float(np.mean([r.camera_error for r in picked]))}


def run(checkpoint: str, episodes: int, seed: int, threads: int) -> list[dict]:
    from mhc_model.runtime import load_runtime
    from mhc_sim import OBJECT_SLOTS, WorldConfig, evaluate
    from tqdm import tqdm

    from mhc_ros.model_policy import RuntimePolicy

    runtime = load_runtime(checkpoint, backend="onnxruntime", threads=threads)
    policy = RuntimePolicy(runtime)
    slot = OBJECT_SLOTS.index("ball")
    recorded: list[dict] = []
    current: list = []
    progress = tqdm(total=episodes, desc="intercept episodes", unit="ep")

    def on_step(world, t, obs, action) -> None:
        if obs.object_present[slot]:
            current.append((obs.object_positions[slot].copy(), policy.last_output.motion[:, slot].copy(),
                            ball_from_image(obs.image)))

    def on_result(result) -> None:
        recorded.append({"success": bool(result.success), "ticks": list(current)})
        current.clear()
        progress.update()

    evaluate("intercept", episodes, seed=seed, policy_factory=lambda: policy,
             config=WorldConfig(image_width=96, image_height=96), on_step=on_step, on_result=on_result)
    progress.close()
    return recorded


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True, help="mHC checkpoint (.safetensors)")
    parser.add_argument("--episodes", type=int, default=50, help="intercept episodes (default: 50)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED_BASE, help=f"first seed (default: {EVAL_SEED_BASE})")
    parser.add_argument("--bins", default="0,20,40", help="tick bin edges (default: 0,20,40)")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (default: 1)")
    parser.add_argument("--out", type=Path, help="write the table as JSON here")
    args = parser.parse_args(argv)
    try:
        bins = parse_bins(args.bins)
    except ValueError as err:
        parser.error(str(err))
    ticks = scored_ticks(run(args.checkpoint, args.episodes, args.seed, args.threads))
    table, horizon = score(ticks, bins), by_horizon_step(ticks, bins[0][1])
    print(f"{'ticks':>9} {'episodes':>8} {'n':>5} {'model cm':>9} {'CV lag1':>8} {'CV lag2':>8} {'ratio':>6}")
    for row in table:
        span = f"{row['ticks_from']}-{row['ticks_to'] or ''}"
        print(f"{span:>9} {row['episodes']:>8} {row['n']:>5} {row['model_m'] * 100:9.1f} "
              f"{row['const_velocity_lag1_m'] * 100:8.1f} {row['const_velocity_lag2_m'] * 100:8.1f} "
              f"{row['ratio_lag1']:6.1f}")
    span = "all ticks" if horizon["ticks_to"] is None else f"ticks 0-{horizon['ticks_to'] - 1}"
    print(f"by step of the horizon, {span} (n {horizon['n']}), cm:")
    for name in ("model_m", "const_velocity_lag1_m"):
        print(f"  {name[:-2]:>20} " + " ".join(f"{e * 100:5.2f}" for e in horizon[name]))
    print(f"  camera's ball position error at t: {horizon['camera_position_error_m'] * 100:.2f} cm")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"checkpoint": args.checkpoint, "episodes": args.episodes,
                                        "seed": args.seed, "table": table,
                                        "by_horizon_step": horizon}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
