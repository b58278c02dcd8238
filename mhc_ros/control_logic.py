"""Pure control logic of the ``mhc_controller`` node: everything between the messages and the model.

No ROS import (numpy only), so tests drive it without a graph. Arrays: arm joint positions ``(7,)``
rad, actions ``(8,)`` = 7 arm targets (rad) + gripper opening width (m), action chunks ``(K, 8)``
where row ``j`` is the action for control tick ``t0 + j`` of a chunk predicted at tick ``t0``
(observation t and the action commanded after seeing it share index t, as in the training shards).

Safety layering per tick (see :func:`decide_mode`): stop request > stale inputs > invalid model
output > missing instruction > run the model. Every non-``ok`` mode publishes a *hold* command: the
last measured arm positions. Model commands pass chunk blending (:class:`ActionBlender`), then
position limits with a margin and per-period velocity/acceleration limits relative to the last
command (:class:`JointLimiter`), which starts from the measured state after activation or a hold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Position limits (rad) of panda_joint1..7 in the Panda URDF the simulation uses
# (pybullet_data/franka_panda/panda.urdf); the real FR3/Panda limits are within ±0.1 rad of these.
PANDA_LOWER = (-2.9671, -1.8326, -2.9671, -3.1416, -2.9671, -0.0873, -2.9671)
PANDA_UPPER = (2.9671, 1.8326, 2.9671, 0.0, 2.9671, 3.8223, 2.9671)
GRIPPER_MAX_WIDTH = 0.08  # m, fully open (two fingers × 0.04 m)
ARM_JOINTS: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINTS: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
JOINT_NAMES: tuple[str, ...] = ARM_JOINTS + FINGER_JOINTS  # /joint_states order of the Panda

SMOOTHING_MODES = ("ensemble", "crossfade", "none")

# Safety states reported on /diagnostics (and the mode a tick runs in).
OK, STALE, STOPPED, NAN, NO_INSTRUCTION = "ok", "stale", "stopped", "nan", "no_instruction"


class InputRejected(ValueError):
    """An input message that must not reach the model; ``reason`` is the counter key, ``str(err)`` the detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


# ------------------------------------------------------------------------------------------- inputs


def image_fault(encoding: str, height: int, width: int, step: int, nbytes: int,
                encodings: Sequence[str] = ("rgb8", "bgr8", "mono8")) -> InputRejected | None:
    """Why an image with these header fields cannot be decoded (``InputRejected``), or None if it can."""
    if encoding not in encodings:
        return InputRejected("image_encoding", f"Image encoding '{encoding}' not supported ({', '.join(encodings)})")
    if height <= 0 or width <= 0 or nbytes == 0:
        return InputRejected("image_empty", f"Image {width}x{height} with {nbytes} bytes is empty")
    channels = 1 if encoding == "mono8" else 3
    if step < width * channels:
        return InputRejected("image_size", f"Image step {step} < width {width} × {channels} channels")
    if nbytes < step * height:
        return InputRejected("image_size", f"Image data has {nbytes} bytes, expected step {step} × height {height}")
    return None


def joint_state_fault(names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                      expected: Sequence[str]) -> InputRejected | None:
    """Why a ``JointState`` cannot be used (missing joint, length mismatch), or None if it can.

    Extra (unknown) joints are ignored; velocities may be empty (taken as 0). Finite values are
    checked separately (:func:`all_finite`) after ordering.
    """
    if len(positions) != len(names) or len(velocities) not in (0, len(names)):
        return InputRejected("joint_length", f"JointState has {len(names)} names, {len(positions)} positions, "
                                             f"{len(velocities)} velocities")
    present = set(names)
    missing = [name for name in expected if name not in present]
    if missing:
        return InputRejected("joint_missing", f"JointState lacks joint '{missing[0]}' "
                                              f"(expected {', '.join(expected)})")
    return None


def all_finite(*arrays: np.ndarray) -> bool:
    """True when every value of every array is finite (no NaN, no ±inf)."""
    return all(bool(np.all(np.isfinite(np.asarray(a, dtype=float)))) for a in arrays)


def instruction_fault(text: str, max_bytes: int) -> InputRejected | None:
    """Why an instruction string is refused before tokenising (too long, empty), or None."""
    size = len(text.encode("utf-8", errors="replace"))
    if size > max_bytes:
        return InputRejected("instruction_too_long", f"instruction of {size} bytes exceeds {max_bytes} bytes")
    if not text.strip():
        return InputRejected("instruction_empty", "instruction is empty")
    return None


def validate_chunk(chunk: object, action_dim: int = 8) -> np.ndarray:
    """A model's action chunk as ``(K, action_dim)`` float64; ``InputRejected`` (``output_shape``/``output_nan``)."""
    try:
        array = np.asarray(chunk, dtype=float)
    except (TypeError, ValueError) as err:
        raise InputRejected("output_shape", f"action chunk is not numeric ({err})") from None
    if array.ndim == 1 and array.shape[0] == action_dim:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] != action_dim:
        raise InputRejected("output_shape", f"action chunk shape {array.shape} (expected (K, {action_dim}))")
    if not all_finite(array):
        raise InputRejected("output_nan", "action chunk contains NaN/inf")
    return array


class JointHistory:
    """The last ``length`` joint states, sampled once per control tick (as in training: one per step).

    ``array()`` is ``(length, 2N)`` float32 = N positions + N velocities, oldest first; until
    ``length`` samples exist the oldest one is repeated (a robot at rest before the first tick).
    """

    def __init__(self, length: int) -> None:
        if length < 1:
            raise ValueError(f"joint history length {length} must be >= 1")
        self.samples: deque[np.ndarray] = deque(maxlen=length)

    def push(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        """Append one state: positions (N,) rad/m and velocities (N,) rad/s, m/s."""
        self.samples.append(np.concatenate([positions, velocities]).astype(np.float32))

    def clear(self) -> None:
        self.samples.clear()

    def array(self) -> np.ndarray:
        if not self.samples:
            raise ValueError("joint history is empty")
        missing = self.samples.maxlen - len(self.samples)
        return np.stack([self.samples[0]] * missing + list(self.samples))


# -------------------------------------------------------------------------------------------- modes


class Watchdog:
    """Freshness of named inputs on a monotonic clock (s): stale when older than ``timeout_s`` or never seen."""

    def __init__(self, names: Sequence[str], timeout_s: float) -> None:
        self.timeout_s = float(timeout_s)
        self.last: dict[str, float] = {name: -math.inf for name in names}

    def feed(self, name: str, now: float) -> None:
        self.last[name] = now

    def reset(self) -> None:
        for name in self.last:
            self.last[name] = -math.inf

    def stale(self, now: float) -> list[str]:
        """Names of inputs not received within ``timeout_s`` before ``now``."""
        return [name for name, t in self.last.items() if now - t > self.timeout_s]


def decide_mode(stopped: bool, stale_inputs: Sequence[str], has_instruction: bool) -> str:
    """Mode of a tick before inference: ``stopped`` > ``stale`` > ``no_instruction`` > ``ok``.

    (``nan`` is decided after inference, when the model's output is invalid.)
    """
    if stopped:
        return STOPPED
    if stale_inputs:
        return STALE
    if not has_instruction:
        return NO_INSTRUCTION
    return OK


# ---------------------------------------------------------------------------------------- smoothing


class ActionBlender:
    """Blends consecutive action chunks so commands have no jump at chunk boundaries.

    ``ensemble`` (ACT's temporal ensembling): the action for tick t is the weighted mean of every
    stored chunk's prediction for t, weights ``exp(-decay * i)`` with ``i = 0`` the oldest chunk
    (decay 0 = plain mean; > 0 favours older predictions, i.e. smoother; < 0 favours newer ones).
    A new chunk that disagrees by D moves the command by at most ``D * w_new / sum(w)``.
    ``crossfade``: each new chunk fades in linearly over ``crossfade_ticks`` ticks from the blend
    before it (step at a boundary ≤ D / crossfade_ticks when chunks come that far apart; with a new
    chunk every tick it acts as a low-pass filter). ``none``: the newest chunk's row for t.
    Past a chunk's end its last row holds.
    """

    def __init__(self, mode: str = "ensemble", decay: float = 0.01, crossfade_ticks: int = 3,
                 max_chunks: int = 64) -> None:
        if mode not in SMOOTHING_MODES:
            raise ValueError(f"smoothing '{mode}' unknown (expected one of {', '.join(SMOOTHING_MODES)})")
        if crossfade_ticks < 1:
            raise ValueError(f"crossfade_ticks {crossfade_ticks} must be >= 1")
        self.mode, self.decay, self.crossfade_ticks = mode, float(decay), int(crossfade_ticks)
        self.chunks: deque[tuple[int, np.ndarray]] = deque(maxlen=max_chunks)

    def reset(self) -> None:
        self.chunks.clear()

    def add(self, chunk: np.ndarray, tick: int) -> None:
        """Store ``chunk (K, A)`` predicted at control tick ``tick`` (its row 0 is the action for ``tick``)."""
        self.chunks.append((int(tick), np.asarray(chunk, dtype=float)))

    @staticmethod
    def _row(start: int, chunk: np.ndarray, tick: int) -> np.ndarray:
        return chunk[min(max(tick - start, 0), len(chunk) - 1)]

    def action(self, tick: int) -> np.ndarray | None:
        """The blended action ``(A,)`` for ``tick``; None before the first chunk."""
        if not self.chunks:
            return None
        newest_start, newest = self.chunks[-1]
        if self.mode == "none":
            return self._row(newest_start, newest, tick).copy()
        if self.mode == "crossfade":
            # Fold from the newest chunk whose fade is complete; each later chunk fades in over its own ticks.
            alphas = [min(1.0, (tick - start + 1) / self.crossfade_ticks) for start, _ in self.chunks]
            first = max((i for i, alpha in enumerate(alphas) if alpha >= 1.0), default=0)
            start, chunk = self.chunks[first]
            out = self._row(start, chunk, tick).copy()
            for i in range(first + 1, len(self.chunks)):
                start, chunk = self.chunks[i]
                alpha = max(alphas[i], 0.0)
                out = (1.0 - alpha) * out + alpha * self._row(start, chunk, tick)
            return out
        # ensemble: chunks that still cover tick (expired ones are dropped; the newest always counts)
        while len(self.chunks) > 1 and tick - self.chunks[0][0] >= len(self.chunks[0][1]):
            self.chunks.popleft()
        rows = np.stack([self._row(start, chunk, tick) for start, chunk in self.chunks])
        weights = np.exp(-self.decay * np.arange(len(rows)))
        return weights @ rows / weights.sum()


# ------------------------------------------------------------------------------------------- limits


class JointLimiter:
    """Position (with margin), velocity and acceleration limits per control period, relative to the last command.

    lower, upper: URDF position limits (N,) rad; margin: kept clear of them (rad); max_velocity
    (rad/s), max_acceleration (rad/s²): scalars or (N,); period_s: control period (s).
    ``reset(measured)`` makes the measured state the last command at rest, so the first command
    after activation or a hold starts there (no jump). Targets are clamped into
    ``[lower + margin, upper - margin]``; the step toward them is limited to ``max_velocity``,
    to the speed from which ``max_acceleration`` can still stop at the target, and to a change of
    ``max_acceleration * period`` from the last command's velocity. A command never moves further
    out of the margin box than the last command was (a start inside the margin only moves inward).
    """

    def __init__(self, lower: Sequence[float], upper: Sequence[float], margin: float, max_velocity: float,
                 max_acceleration: float, period_s: float) -> None:
        self.lower = np.asarray(lower, dtype=float)
        self.upper = np.asarray(upper, dtype=float)
        if self.lower.shape != self.upper.shape or np.any(self.upper - self.lower <= 2 * margin):
            raise ValueError(f"position limits {list(self.lower)} .. {list(self.upper)} leave no room "
                             f"for margin {margin} rad")
        self.box_lower, self.box_upper = self.lower + margin, self.upper - margin
        self.max_velocity = np.broadcast_to(np.asarray(max_velocity, dtype=float), self.lower.shape)
        self.max_acceleration = np.broadcast_to(np.asarray(max_acceleration, dtype=float), self.lower.shape)
        self.period_s = float(period_s)
        self.command: np.ndarray | None = None
        self.velocity = np.zeros_like(self.lower)

    def reset(self, measured: np.ndarray) -> None:
        """Restart from the measured positions (N,) rad at rest."""
        self.command = np.clip(np.asarray(measured, dtype=float), self.lower, self.upper)
        self.velocity = np.zeros_like(self.lower)

    def step(self, target: np.ndarray) -> np.ndarray:
        """The next command (N,) rad toward ``target`` (N,) rad; ``reset`` must have run once."""
        if self.command is None:
            raise RuntimeError("JointLimiter.step before reset(measured)")
        dt = self.period_s
        last = self.command
        goal = np.clip(np.asarray(target, dtype=float), self.box_lower, self.box_upper)
        error = goal - last
        # Fastest speed from which braking by max_acceleration * dt per period still stops at the goal:
        # v + (v - dv) + ... ≤ |error| / dt  ⇔  v (v + dv) ≤ 2 a |error|  (no overshoot).
        dv = self.max_acceleration * dt
        stopping = 0.5 * (np.sqrt(dv * dv + 8.0 * self.max_acceleration * np.abs(error)) - dv)
        speed = np.minimum(self.max_velocity, np.minimum(stopping, np.abs(error) / dt))
        velocity = np.sign(error) * speed
        velocity = np.clip(velocity, self.velocity - dv, self.velocity + dv)
        velocity = np.clip(velocity, -self.max_velocity, self.max_velocity)
        command = last + velocity * dt
        command = np.clip(command, np.minimum(self.box_lower, last), np.maximum(self.box_upper, last))
        self.velocity = (command - last) / dt
        self.command = command
        return command.copy()


def clamp_gripper(width: float, max_width: float = GRIPPER_MAX_WIDTH) -> float:
    """Gripper width (m) clamped to ``[0, max_width]``."""
    return float(min(max(float(width), 0.0), max_width))


# ------------------------------------------------------------------------------------------ latency


class LatencyStats:
    """Rolling latency samples (s) of the last ``window`` events; percentiles in milliseconds."""

    def __init__(self, window: int = 1000) -> None:
        self.samples: deque[float] = deque(maxlen=window)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.samples.append(float(seconds))
        self.count += 1

    def percentiles_ms(self, qs: Sequence[float] = (50.0, 99.0)) -> tuple[float, ...]:
        """Percentiles ``qs`` (ms) of the window; NaN for each when empty."""
        if not self.samples:
            return tuple(math.nan for _ in qs)
        values = np.percentile(np.fromiter(self.samples, dtype=float), list(qs))
        return tuple(float(v) * 1e3 for v in values)


# Predicted-motion slots in model order (the simulation's 6 object slots + the end effector), the
# namespace prefix of their markers on /mhc/predicted_motion, and the colour each path is drawn in
# (RViz markers and GIF videos alike), RGB in [0, 1].
MOTION_SLOTS = ("red_cube", "green_cube", "blue_cube", "yellow_cube", "ball", "bin", "end_effector")
MOTION_MARKER_NAMESPACE = "mhc_motion/"
MOTION_SLOT_COLOURS = ((0.9, 0.1, 0.1), (0.1, 0.8, 0.1), (0.1, 0.3, 0.9), (0.9, 0.9, 0.1), (1.0, 0.55, 0.0),
                       (0.6, 0.35, 0.15), (0.0, 0.9, 0.9))


@dataclass(frozen=True)
class MotionPaths:
    """Predicted paths for visualisation: ``points (H, 7, 3)`` m of 6 object slots + EE, which are shown."""

    points: np.ndarray
    shown: np.ndarray


def motion_paths(motion: object, present: object, threshold: float = 0.5) -> MotionPaths | None:
    """Validated ``(H, 7, 3)`` motion and a ``(7,)`` shown mask (presence ≥ threshold); None when invalid."""
    try:
        points = np.asarray(motion, dtype=float)
        probabilities = np.asarray(present, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        return None
    if points.ndim != 3 or points.shape[2] != 3 or points.shape[1] != len(probabilities) or \
            not all_finite(points, probabilities):
        return None
    return MotionPaths(points=points, shown=probabilities >= threshold)
