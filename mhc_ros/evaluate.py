"""``mhc eval``: closed-loop evaluation in the simulation, directly or through the ROS graph (``--ros``).

``--policy expert`` runs the scripted experts; ``--checkpoint C`` runs the learned model through an
inference runtime with the controller node's smoothing and limits (``RuntimePolicy``). Evaluation
seeds start at ``EVAL_SEED_BASE`` by default, so they never overlap the seeds that ``mhc collect``
uses for training data (which start at 0). By default every second episode is instructed with a
held-out paraphrase (``mhc_sim.HELD_OUT_TEMPLATES``, never in training data).

With a model, the report also has the control-step latency and the motion prediction's average
displacement error (ADE) of the ball over the prediction horizon, next to constant-velocity
extrapolations from the ball's last two positions: true ones (privileged: the model sees only the
camera and the joints) and ones seen in the same camera frames (``ball_from_image``).
``--video DIR`` writes GIFs of the first episodes with the predicted
motion drawn. ``--ros`` runs the same episodes through ``mhc bringup sim`` (sim bridge and
``mhc_controller`` as separate processes).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from mhc_ros.cli_args import (
    UsageError,
    controller_parameters,
    known_task,
    non_negative_int,
    positive_int,
    writable_dir,
)

EVAL_SEED_BASE = 1_000_000
POLICIES = ("expert", "mhc")


def configure_parser(parser: argparse.ArgumentParser) -> None:
    from mhc_sim.rollout import INSTRUCTION_SETS

    parser.add_argument("--policy", default=None,
                        help=f"policy to evaluate ({', '.join(POLICIES)}; default: mhc with --checkpoint, else expert)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="mHC checkpoint (.safetensors) for --policy mhc")
    parser.add_argument("--backend", default="onnxruntime",
                        help="inference backend (auto, torch, onnxruntime, tensorrt; checked by mhc_model.runtime)")
    parser.add_argument("--threads", type=positive_int, default=2, help="CPU inference threads")
    parser.add_argument("--task", type=known_task, required=True)
    parser.add_argument("--episodes", type=positive_int, default=50)
    parser.add_argument("--seed", type=non_negative_int, default=EVAL_SEED_BASE, help="first evaluation seed")
    parser.add_argument("--instructions", choices=INSTRUCTION_SETS, default="mixed",
                        help="train: the episodes' own templates; held-out: paraphrases never trained on; "
                             "mixed (default): every second episode held out")
    parser.add_argument("--image-size", type=positive_int, default=96, help="scene camera width and height (px)")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a controller parameter of the model (e.g. ensemble_decay=0.1); repeatable")
    parser.add_argument("--video", type=Path, default=None, metavar="DIR",
                        help="write GIFs of the first --video-episodes episodes here (predicted motion drawn)")
    parser.add_argument("--video-episodes", type=positive_int, default=4, help="episodes written with --video")
    parser.add_argument("--ros", action="store_true",
                        help="run the episodes through `mhc bringup sim` (bridge + controller as processes)")
    parser.add_argument("--realtime-factor", type=float, default=0.0,
                        help="--ros: simulation speed vs wall clock; 0 (default) = lockstep with the controller")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a summary")


def ball_from_image(image: np.ndarray, min_pixels: int = 3) -> np.ndarray | None:
    """The ball's position (m, world) seen in a scene-camera frame: centroid of its orange pixels
    unprojected to the height of a ball resting on the table; None when too few pixels are visible."""
    from mhc_sim import unproject_to_height
    from mhc_sim.scene import BALL_RADIUS

    rgb = np.asarray(image, dtype=np.float32)
    red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    mask = (red > 80) & (green > 0.3 * red) & (green < 0.7 * red) & (blue < 0.3 * red)
    rows, cols = np.nonzero(mask)
    if len(rows) < min_pixels:
        return None
    centroid = np.array([cols.mean() + 0.5, rows.mean() + 0.5])
    return unproject_to_height(centroid, BALL_RADIUS, rgb.shape[1], rgb.shape[0])


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else math.nan


def step_errors(path: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """``(H,)``: distance (m) of a predicted ``path (H, 3)`` from ``truth (H, 3)`` at each step."""
    return np.linalg.norm(path - truth, axis=-1)


def displacement_error(path: np.ndarray, truth: np.ndarray) -> float:
    """Average displacement error (m) of a predicted ``path (H, 3)`` against ``truth (H, 3)``."""
    return float(step_errors(path, truth).mean())


def constant_velocity(now: np.ndarray, earlier: np.ndarray, lag: int, horizon: int) -> np.ndarray:
    """``(horizon, 3)``: positions 1..horizon ticks after ``now`` at the velocity from ``earlier`` (``lag`` ticks
    before) to ``now``."""
    steps = np.arange(1, horizon + 1)[:, None]
    return now + steps * (now - earlier) / lag


class MotionError:
    """Ball ADE (m) over the prediction horizon: the model's ``motion`` vs two constant-velocity
    extrapolations, one from the ball's true positions at t−1 and t (privileged), one from its positions
    seen in camera frames (``ball_from_image``) at t − ``lag`` and t, compared on the ticks where both
    saw the ball. ``lag``: the model's frame stride when it sees earlier frames (the same observations),
    else 1 (the previous frame)."""

    def __init__(self, slot: int, lag: int = 1) -> None:
        if lag < 1:
            raise ValueError(f"lag={lag} must be >= 1")
        self.slot, self.lag = slot, lag
        self.positions: list[np.ndarray] = []  # true slot position at each tick (3,)
        self.seen: list[np.ndarray | None] = []  # position estimated from the camera frame, or None
        self.predictions: list[np.ndarray] = []  # predicted (H, 3) at each tick
        self.errors: dict[str, list[float]] = {"model": [], "const_velocity": [], "model_seen": [],
                                               "const_velocity_seen": []}

    def add(self, position: np.ndarray, prediction: np.ndarray, seen: np.ndarray | None = None) -> None:
        self.positions.append(np.asarray(position, dtype=float).copy())
        self.predictions.append(np.asarray(prediction, dtype=float).copy())
        self.seen.append(None if seen is None else np.asarray(seen, dtype=float).copy())

    def end_episode(self) -> None:
        """Score ticks t ≥ ``lag`` whose whole horizon t+1..t+H was observed, then forget the episode."""
        positions = np.asarray(self.positions)
        for t, predicted in enumerate(self.predictions):
            horizon = len(predicted)
            if t < self.lag or t + horizon >= len(positions):
                continue
            truth = positions[t + 1 : t + 1 + horizon]  # (H, 3)
            model = displacement_error(predicted, truth)
            self.errors["model"].append(model)
            extrapolated = constant_velocity(positions[t], positions[t - 1], 1, horizon)
            self.errors["const_velocity"].append(displacement_error(extrapolated, truth))
            earlier = self.seen[t - self.lag]
            if self.seen[t] is not None and earlier is not None:
                extrapolated = constant_velocity(self.seen[t], earlier, self.lag, horizon)
                self.errors["model_seen"].append(model)
                self.errors["const_velocity_seen"].append(displacement_error(extrapolated, truth))
        self.positions, self.seen, self.predictions = [], [], []

    def report(self) -> dict[str, float]:
        if not self.errors["model"]:
            return {}
        mean = {name: float(np.mean(values)) if values else math.nan for name, values in self.errors.items()}
        return {"motion_ade_ball_m": mean["model"], "motion_ade_ball_const_velocity_m": mean["const_velocity"],
                "motion_ade_ratio": _ratio(mean["model"], mean["const_velocity"]),
                "motion_ade_ticks": len(self.errors["model"]),
                "motion_ade_ball_seen_ticks_m": mean["model_seen"],
                "motion_ade_ball_const_velocity_seen_m": mean["const_velocity_seen"],
                "motion_ade_ratio_seen": _ratio(mean["model_seen"], mean["const_velocity_seen"]),
                "motion_ade_seen_ticks": len(self.errors["model_seen"])}


class EpisodeObserver:
    """``on_step`` / ``on_result`` hooks of ``mhc_sim.evaluate`` for a model policy: motion error, videos."""

    def __init__(self, policy, video_dir: Path | None, video_episodes: int, motion_lag: int = 1) -> None:
        from mhc_sim import OBJECT_SLOTS

        self.policy = policy  # the RuntimePolicy the episodes run
        self.motion = MotionError(OBJECT_SLOTS.index("ball"), motion_lag)
        self.video_dir, self.video_episodes = video_dir, video_episodes
        self.frames: list = []
        self.written: list[str] = []
        self.episode_index = 0

    def on_step(self, world, t: int, obs, action) -> None:
        output = self.policy.last_output
        if obs.object_present[self.motion.slot]:
            seen = ball_from_image(obs.image) if obs.image is not None else None
            self.motion.add(obs.object_positions[self.motion.slot], output.motion[:, self.motion.slot], seen)
        if self.video_dir is not None and self.episode_index < self.video_episodes and obs.image is not None:
            from mhc_ros.video import draw_frame

            episode = world.episode
            self.frames.append(draw_frame(obs.image, world.project_to_image, output.motion,
                                          output.motion_present >= 0.5, f"{episode.instruction} t={t}"))

    def on_result(self, result) -> None:
        self.motion.end_episode()
        if self.frames:
            from mhc_ros.video import write_gif

            outcome = "success" if result.success else (result.failure or "failure")
            path = write_gif(self.frames, self.video_dir / f"{result.task}_{result.seed}_{outcome}.gif")
            self.written.append(str(path))
            self.frames = []
        self.episode_index += 1


def _load_runtime(args: argparse.Namespace):
    from mhc_model.runtime import RuntimeLoadError, load_runtime

    if args.checkpoint is None:
        raise UsageError("--policy mhc needs --checkpoint")
    try:  # an unknown backend is a RuntimeLoadError naming it, raised before anything is loaded
        return load_runtime(str(args.checkpoint), backend=args.backend, threads=args.threads)
    except RuntimeLoadError as err:
        raise UsageError(str(err).splitlines()[0]) from None


def evaluate_direct(args: argparse.Namespace, policy_name: str) -> dict:
    """The episodes in this process: the simulation and the policy (expert or runtime) step in lockstep."""
    from mhc_sim import ExpertPolicy, WorldConfig, evaluate

    if policy_name == "expert":
        return evaluate(args.task, args.episodes, seed=args.seed, policy_factory=ExpertPolicy,
                        instructions=args.instructions)
    from mhc_ros.model_policy import RuntimePolicy

    parameters = controller_parameters(args.param)
    runtime = _load_runtime(args)
    policy = RuntimePolicy(runtime, parameters)
    model_config = runtime.config  # the constant-velocity baseline sees the frames the model sees
    lag = model_config.image_stride if model_config.image_history > 1 else 1
    observer = EpisodeObserver(policy, writable_dir(args.video) if args.video else None, args.video_episodes, lag)
    config = WorldConfig(image_width=args.image_size, image_height=args.image_size)
    result = evaluate(args.task, args.episodes, seed=args.seed, policy_factory=lambda: policy, config=config,
                      instructions=args.instructions, on_step=observer.on_step, on_result=observer.on_result)
    p50, p99 = policy.latency.percentiles_ms()
    result.update(checkpoint=str(args.checkpoint), backend=runtime.backend, controller_overrides=parameters,
                  latency_p50_ms=p50, latency_p99_ms=p99, **observer.motion.report())
    if observer.written:
        result["videos"] = observer.written
    return result


# Counts in a --ros result that are 0 when the lockstep held, i.e. when each episode is the direct one.
LOCKSTEP_DEVIATIONS = ("controller_ticks_on_old_joint_state", "controller_hold_ticks",
                       "controller_ticks_on_other_image", "bridge_uncommanded_steps")


def evaluate_ros(args: argparse.Namespace, policy_name: str) -> dict:
    """The same episodes (seeds, instructions) through ``mhc bringup sim``'s processes."""
    import io

    from mhc_sim.rollout import episode_instructions, success_by_instructions

    from mhc_ros.bringup import bringup_sim

    if args.param or args.video:
        raise UsageError("--param and --video are not available with --ros (use `mhc bringup sim --video`)")
    if policy_name == "mhc" and (args.checkpoint is None or not args.checkpoint.exists()):
        raise UsageError(f"--ros needs an existing --checkpoint (got '{args.checkpoint}')")
    if not math.isfinite(args.realtime_factor) or args.realtime_factor < 0:
        raise UsageError(f"--realtime-factor {args.realtime_factor} must be a finite number >= 0")
    instructions = episode_instructions(args.task, args.seed, args.episodes, args.instructions)
    log = io.StringIO()
    run = bringup_sim(policy=policy_name, task=args.task, episodes=args.episodes, seed=args.seed,
                      realtime_factor=args.realtime_factor, image_width=args.image_size,
                      image_height=args.image_size, out=log, backend=args.backend, instructions=instructions,
                      checkpoint_path=None if args.checkpoint is None else str(args.checkpoint.resolve()))
    if run["error"] is not None or run["interrupted"] is not None:
        raise UsageError(f"bringup failed: {run['error'] or 'interrupted'}")
    episodes = run["episodes"]
    failures: dict[str, int] = {}
    for episode in episodes:
        if not episode["success"]:
            reason = "wall_timeout" if episode["timed_out"] else (episode["failure"] or "timeout")
            failures[reason] = failures.get(reason, 0) + 1
    result = {"task": args.task, "episodes": len(episodes), "success_rate": run["success_rate"],
              "mean_steps": float(np.mean([e["steps"] for e in episodes])),
              "mean_episode_wall_s": float(np.mean([e["wall_s"] for e in episodes])),
              "failures": failures, "seeds": [e["seed"] for e in episodes],
              "failed_seeds": [e["seed"] for e in episodes if not e["success"]],
              "instructions": args.instructions, "wall_time_s": run["wall_s"], "ros": True}
    result.update(success_by_instructions([e["success"] for e in episodes], instructions, args.instructions))
    latencies = [e.get("latency_p50_ms") for e in episodes if e.get("latency_p50_ms") is not None]
    if latencies:
        result.update(latency_p50_ms=float(np.median(latencies)),
                      latency_p99_ms=float(max(e.get("latency_p99_ms") or 0.0 for e in episodes)))
    for key in ("ticks_on_old_joint_state", "hold_ticks", "ticks_on_other_image"):
        if any(key in e for e in episodes):
            result[f"controller_{key}"] = sum(e.get(key, 0) for e in episodes)
    for key in ("stale_commands", "uncommanded_steps"):  # stale: the last episode's holds, ignored: no deviation
        result[f"bridge_{key}"] = sum(e.get(key, 0) for e in episodes)
    if policy_name == "mhc":
        result.update(checkpoint=str(args.checkpoint), backend=args.backend)
    return result


def run(args: argparse.Namespace) -> int:
    policy_name = args.policy or ("mhc" if args.checkpoint is not None else "expert")
    if policy_name not in POLICIES:
        raise UsageError(f"unknown policy '{policy_name}' (expected one of {', '.join(POLICIES)})")
    result = evaluate_ros(args, policy_name) if args.ros else evaluate_direct(args, policy_name)
    result["policy"] = policy_name
    deviations = {key: result[key] for key in LOCKSTEP_DEVIATIONS if result.get(key)}
    if args.ros and args.realtime_factor == 0 and deviations:
        print(f"warning: the lockstep did not hold ({', '.join(f'{k} {v}' for k, v in deviations.items())}), so "
              "these episodes differ from the direct evaluation's (a loaded CPU, dropped camera frames?)",
              file=sys.stderr)
    if args.json:
        print(json.dumps(result))
        return 0
    line = (f"{result['task']} ({policy_name}{', ROS' if args.ros else ''}): success {result['success_rate']:.2f} "
            f"over {result['episodes']} episodes, mean {result['mean_steps']:.1f} steps")
    if "success_rate_held_out_instructions" in result:
        line += (f" (train instructions {result['success_rate_train_instructions']:.2f}, held-out paraphrases "
                 f"{result['success_rate_held_out_instructions']:.2f})")
    if "latency_p50_ms" in result:
        line += f", control step p50 {result['latency_p50_ms']:.2f} / p99 {result['latency_p99_ms']:.2f} ms"
    if "motion_ade_ball_m" in result:
        line += (f", ball ADE {result['motion_ade_ball_m'] * 100:.1f} cm vs constant velocity "
                 f"{result['motion_ade_ball_const_velocity_m'] * 100:.1f} cm from true positions "
                 f"({result['motion_ade_ratio']:.2f}×), {result['motion_ade_ball_seen_ticks_m'] * 100:.1f} vs "
                 f"{result['motion_ade_ball_const_velocity_seen_m'] * 100:.1f} cm from the camera frames "
                 f"({result['motion_ade_ratio_seen']:.2f}×)")
    print(f"{line}, failures {result['failures']}")
    for path in result.get("videos", []):
        print(f"video: {path}")
    return 0
