"""Pure conversions between ROS 2 messages and numpy arrays.

Every function that carries logic (checks, indexing, interpolation) works on plain Python/numpy
values so tests call it without a ROS graph; the ``*_msg`` helpers only build or unpack message
objects (message classes import without ``rclpy.init``). Units: metres, radians, seconds; poses
are in the ``world`` frame (table-top robot base frame, z up), quaternions are ``xyzw``.
"""

from __future__ import annotations

import array
import itertools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Pose, PoseArray
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from mhc_ros.control_logic import ARM_JOINTS, GRIPPER_MAX_WIDTH, JOINT_NAMES, image_fault

IMAGE_ENCODINGS = ("rgb8", "bgr8", "mono8")
LIMIT_TOLERANCE = 1e-6  # rad; slack on URDF limits for round-off in commanded targets

JointLimits = Mapping[str, tuple[float, float]]


class CommandRejected(ValueError):
    """A command message that must not reach the robot; ``str(err)`` is the reason, naming the bad value."""


# --------------------------------------------------------------------------------------------- time


def seconds_to_time(seconds: float) -> Time:
    """``builtin_interfaces/Time`` for ``seconds`` ≥ 0 (sim or wall time, s)."""
    sec = math.floor(seconds)
    nanosec = min(round((seconds - sec) * 1e9), 999_999_999)
    return Time(sec=int(sec), nanosec=int(nanosec))


def time_to_seconds(stamp: Time | Duration) -> float:
    """Seconds from a ``Time`` or ``Duration`` message."""
    return float(stamp.sec) + float(stamp.nanosec) * 1e-9


def clock_msg(sim_time: float) -> Clock:
    """``/clock`` message for simulation time ``sim_time`` (s)."""
    return Clock(clock=seconds_to_time(sim_time))


def header(stamp_s: float, frame_id: str = "") -> Header:
    """``std_msgs/Header`` stamped at ``stamp_s`` (s)."""
    return Header(stamp=seconds_to_time(stamp_s), frame_id=frame_id)


# -------------------------------------------------------------------------------------------- image


def image_from_buffer(data: bytes | bytearray | memoryview | Sequence[int], height: int, width: int,
                      step: int, encoding: str) -> np.ndarray:
    """Decode raw image bytes to an RGB array ``(height, width, 3) uint8``.

    ``step`` is the row length in bytes (may include padding). ``mono8`` is replicated to three
    channels; ``bgr8`` is reordered to RGB. Raises :class:`~mhc_ros.control_logic.InputRejected` (a
    ``ValueError``) naming the bad encoding or size, from :func:`~mhc_ros.control_logic.image_fault`.
    """
    flat = np.frombuffer(bytes(data), dtype=np.uint8)
    fault = image_fault(encoding, height, width, step, flat.size, IMAGE_ENCODINGS)
    if fault is not None:
        raise fault
    channels = 1 if encoding == "mono8" else 3
    rows = flat[: step * height].reshape(height, step)[:, : width * channels]
    pixels = rows.reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pixels, 3, axis=2)
    if encoding == "bgr8":
        return np.ascontiguousarray(pixels[:, :, ::-1])
    return pixels.copy()


def image_msg(image: np.ndarray, stamp_s: float = 0.0, frame_id: str = "camera",
              encoding: str = "rgb8") -> Image:
    """``sensor_msgs/Image`` from an ``(H, W, 3)`` RGB or ``(H, W)`` mono ``uint8`` array.

    ``encoding`` is the wire encoding: ``rgb8``/``bgr8`` need a 3-channel RGB input, ``mono8``
    a 2-D input. ``Image.data`` is set from ``array.array('B', ...)`` (fast path; lists are slow).
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"Image encoding '{encoding}' not supported ({', '.join(IMAGE_ENCODINGS)})")
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"Image dtype {image.dtype} not supported (uint8)")
    if encoding == "mono8":
        if image.ndim != 2:
            raise ValueError(f"mono8 image needs shape (H, W), got {image.shape}")
        pixels = image
    else:
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"{encoding} image needs shape (H, W, 3), got {image.shape}")
        pixels = image[:, :, ::-1] if encoding == "bgr8" else image
    pixels = np.ascontiguousarray(pixels)
    msg = Image(header=header(stamp_s, frame_id), height=int(pixels.shape[0]), width=int(pixels.shape[1]),
                encoding=encoding, is_bigendian=0, step=int(pixels.shape[1] * (1 if pixels.ndim == 2 else 3)))
    msg.data = array.array("B", pixels.tobytes())
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """RGB ``(H, W, 3) uint8`` array from a ``sensor_msgs/Image`` (rgb8, bgr8 or mono8)."""
    return image_from_buffer(msg.data, msg.height, msg.width, msg.step, msg.encoding)


# ------------------------------------------------------------------------------------- joint states


def joint_state_msg(names: Sequence[str], positions: np.ndarray, velocities: np.ndarray | None = None,
                    stamp_s: float = 0.0) -> JointState:
    """``sensor_msgs/JointState`` with positions (rad or m for fingers) and velocities (rad/s, m/s)."""
    msg = JointState(header=header(stamp_s), name=list(names))
    msg.position = [float(v) for v in np.asarray(positions, dtype=float).reshape(-1)]
    if velocities is not None:
        msg.velocity = [float(v) for v in np.asarray(velocities, dtype=float).reshape(-1)]
    return msg


def joint_arrays(names: Sequence[str], positions: Sequence[float], velocities: Sequence[float],
                 expected: Sequence[str] = JOINT_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """Positions and velocities ordered as ``expected``, looked up by joint name.

    Returns ``(positions (N,), velocities (N,))`` float64; missing velocities become 0.
    Raises ``ValueError`` naming a missing joint or a length mismatch.
    """
    names = list(names)
    if len(positions) != len(names):
        raise ValueError(f"JointState has {len(names)} names but {len(positions)} positions")
    if len(velocities) not in (0, len(names)):
        raise ValueError(f"JointState has {len(names)} names but {len(velocities)} velocities")
    index = {name: i for i, name in enumerate(names)}
    missing = [name for name in expected if name not in index]
    if missing:
        raise ValueError(f"JointState lacks joint '{missing[0]}' (expected {', '.join(expected)})")
    order = [index[name] for name in expected]
    pos = np.asarray(positions, dtype=float)[order]
    vel = np.asarray(velocities, dtype=float)[order] if len(velocities) else np.zeros(len(expected))
    return pos, vel


def joint_state_arrays(msg: JointState, expected: Sequence[str] = JOINT_NAMES) -> tuple[np.ndarray, np.ndarray]:
    """``(positions, velocities)`` in ``expected`` order from a ``JointState`` message."""
    return joint_arrays(msg.name, msg.position, msg.velocity, expected)


# -------------------------------------------------------------------------------------- trajectory


def validate_joint_targets(names: Sequence[str], points: Sequence[Sequence[float]], limits: JointLimits,
                           required: Sequence[str] = ARM_JOINTS) -> np.ndarray:
    """Check a trajectory's joint names and points; return positions ``(P, len(required))`` in ``required`` order.

    Rejects (``CommandRejected`` naming the value): no points, unknown or duplicate joint names,
    missing required joints, a point whose length differs from the names, NaN/inf, and positions
    outside the URDF limits ``limits[name] = (lower, upper)`` (rad).
    """
    names = list(names)
    if not points:
        raise CommandRejected("trajectory has no points")
    for name in names:
        if name not in required:
            raise CommandRejected(f"unknown joint name '{name}' (expected {', '.join(required)})")
    if len(set(names)) != len(names):
        duplicate = next(name for name in names if names.count(name) > 1)
        raise CommandRejected(f"joint name '{duplicate}' appears twice")
    missing = [name for name in required if name not in names]
    if missing:
        raise CommandRejected(f"missing joint '{missing[0]}' (trajectory must command {', '.join(required)})")
    order = [names.index(name) for name in required]
    targets = np.empty((len(points), len(required)))
    for p, point in enumerate(points):
        if len(point) != len(names):
            raise CommandRejected(f"point {p} has {len(point)} positions for {len(names)} joint names")
        values = np.asarray(point, dtype=float)
        for i, value in enumerate(values):
            if not math.isfinite(value):
                raise CommandRejected(f"point {p}: joint '{names[i]}' position {value} is not finite")
        for j, name in enumerate(required):
            value = values[order[j]]
            lower, upper = limits[name]
            if not lower - LIMIT_TOLERANCE <= value <= upper + LIMIT_TOLERANCE:
                raise CommandRejected(
                    f"point {p}: joint '{name}' position {value:.4f} rad outside URDF limits "
                    f"[{lower:.4f}, {upper:.4f}]")
        targets[p] = values[order]
    return targets


def target_at(targets: np.ndarray, times_from_start: Sequence[float], t: float) -> np.ndarray:
    """Linear interpolation of trajectory ``targets (P, N)`` at ``t`` seconds from the trajectory's start.

    Before the first point the first point is the target (the controller moves there now); after
    the last point the last one holds. ``times_from_start`` (s) must be non-decreasing.
    """
    times = np.asarray(times_from_start, dtype=float)
    if len(targets) == 1 or t <= times[0]:
        return targets[0].copy()
    if t >= times[-1]:
        return targets[-1].copy()
    k = int(np.searchsorted(times, t, side="right"))
    t0, t1 = times[k - 1], times[k]
    alpha = 0.0 if t1 <= t0 else (t - t0) / (t1 - t0)
    return (1.0 - alpha) * targets[k - 1] + alpha * targets[k]


def trajectory_target(msg: JointTrajectory, limits: JointLimits, horizon_s: float,
                      required: Sequence[str] = ARM_JOINTS) -> np.ndarray:
    """Arm target ``(7,)`` rad for the next control period from a ``JointTrajectory``.

    Validates the message (``validate_joint_targets``) and interpolates the points at ``horizon_s``
    (one control period, s) by ``time_from_start``. Raises ``CommandRejected`` with the reason.
    """
    times = [time_to_seconds(point.time_from_start) for point in msg.points]
    if any(b < a for a, b in itertools.pairwise(times)):
        raise CommandRejected(f"time_from_start decreases: {times}")
    targets = validate_joint_targets(msg.joint_names, [list(p.positions) for p in msg.points], limits, required)
    return target_at(targets, times, horizon_s)


def joint_trajectory_msg(positions: np.ndarray, time_from_start_s: float, stamp_s: float = 0.0,
                         names: Sequence[str] = ARM_JOINTS) -> JointTrajectory:
    """One-point ``JointTrajectory`` reaching ``positions`` (rad) ``time_from_start_s`` after ``stamp_s``."""
    seconds = max(float(time_from_start_s), 0.0)
    sec = math.floor(seconds)
    point = JointTrajectoryPoint(
        positions=[float(v) for v in np.asarray(positions, dtype=float).reshape(-1)],
        time_from_start=Duration(sec=int(sec), nanosec=round((seconds - sec) * 1e9)))
    return JointTrajectory(header=header(stamp_s), joint_names=list(names), points=[point])


# ----------------------------------------------------------------------------------------- gripper


def gripper_width(data: Sequence[float], max_width: float = GRIPPER_MAX_WIDTH) -> float:
    """Gripper opening width (m) from ``Float64MultiArray.data = [width]``; ``CommandRejected`` if invalid."""
    if len(data) != 1:
        raise CommandRejected(f"gripper command has {len(data)} values (expected [width])")
    width = float(data[0])
    if not math.isfinite(width):
        raise CommandRejected(f"gripper width {width} is not finite")
    if not -LIMIT_TOLERANCE <= width <= max_width + LIMIT_TOLERANCE:
        raise CommandRejected(f"gripper width {width:.4f} m outside [0, {max_width}]")
    return float(np.clip(width, 0.0, max_width))


def gripper_msg(width: float) -> Float64MultiArray:
    """``/gripper_controller/commands`` message: ``data=[width]`` (m)."""
    return Float64MultiArray(data=[float(width)])


# ----------------------------------------------------------------------------------------- objects


def pose_array_msg(positions: np.ndarray, orientations: np.ndarray, stamp_s: float = 0.0,
                   frame_id: str = "world") -> PoseArray:
    """``PoseArray`` from object positions ``(N, 3)`` m and orientations ``(N, 4)`` xyzw, in ``frame_id``."""
    positions = np.asarray(positions, dtype=float).reshape(-1, 3)
    orientations = np.asarray(orientations, dtype=float).reshape(-1, 4)
    if len(positions) != len(orientations):
        raise ValueError(f"{len(positions)} positions but {len(orientations)} orientations")
    msg = PoseArray(header=header(stamp_s, frame_id))
    for (x, y, z), (qx, qy, qz, qw) in zip(positions, orientations, strict=True):
        pose = Pose()
        pose.position.x, pose.position.y, pose.position.z = float(x), float(y), float(z)
        pose.orientation.x, pose.orientation.y = float(qx), float(qy)
        pose.orientation.z, pose.orientation.w = float(qz), float(qw)
        msg.poses.append(pose)
    return msg


def pose_array_arrays(msg: PoseArray) -> tuple[np.ndarray, np.ndarray]:
    """``(positions (N, 3) m, orientations (N, 4) xyzw)`` from a ``PoseArray``."""
    positions = np.array([[p.position.x, p.position.y, p.position.z] for p in msg.poses], dtype=float)
    orientations = np.array([[p.orientation.x, p.orientation.y, p.orientation.z, p.orientation.w]
                             for p in msg.poses], dtype=float)
    return positions.reshape(-1, 3), orientations.reshape(-1, 4)


def finite_difference_velocity(previous: np.ndarray | None, current: np.ndarray, dt: float) -> np.ndarray:
    """Velocities ``(N, 3)`` m/s from two position samples ``dt`` seconds apart; zeros without history."""
    if previous is None or dt <= 0.0 or previous.shape != current.shape:
        return np.zeros_like(current)
    return (current - previous) / dt
