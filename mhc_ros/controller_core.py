"""The ``mhc_controller``'s per-tick core, without ROS: joint history → chunk → blend → limits → command.

One :class:`ControllerCore` is what the node (:mod:`mhc_ros.controller_node`), the simulation
policy (:class:`mhc_ros.model_policy.RuntimePolicy`) and ``mhc replay`` (:mod:`mhc_ros.replay`) run,
so a replayed bag checks exactly the arithmetic the node performs. Safety modes (stale inputs, stop,
no instruction) stay in the node; the core only sees ticks on which the model drives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from mhc_ros import control_logic as cl

# The node's smoothing/limit parameters, with the node's defaults (config/controller.yaml).
CORE_DEFAULTS: dict[str, Any] = {
    "control_rate_hz": 20.0,
    "joint_lower_limits": list(cl.PANDA_LOWER),
    "joint_upper_limits": list(cl.PANDA_UPPER),
    "joint_limit_margin": 0.05,
    "max_joint_velocity": 1.5,
    "max_joint_acceleration": 8.0,
    "gripper_max_width": cl.GRIPPER_MAX_WIDTH,
    "smoothing": "ensemble",
    "ensemble_decay": 0.01,
    "crossfade_ticks": 3,
}


@dataclass(frozen=True)
class Command:
    """One tick's command: ``arm (7,)`` joint position targets (rad), ``gripper`` width (m)."""

    arm: np.ndarray
    gripper: float


class ControllerCore:
    """Blending and limits of the node's control tick; ``parameters`` as :data:`CORE_DEFAULTS` (missing = default).

    Per tick: :meth:`push_joints` (every tick, also while holding), :meth:`restart` on the first
    model-driven tick after activation, a hold or a new instruction, then the runtime's chunk →
    :meth:`command`.
    """

    def __init__(self, joint_history_length: int, parameters: Mapping[str, Any] | None = None) -> None:
        p = {**CORE_DEFAULTS, **{k: v for k, v in (parameters or {}).items() if k in CORE_DEFAULTS}}
        self.parameters = p
        self.period = 1.0 / float(p["control_rate_hz"])
        self.history = cl.JointHistory(int(joint_history_length))
        self.blender = cl.ActionBlender(str(p["smoothing"]), float(p["ensemble_decay"]), int(p["crossfade_ticks"]))
        self.limiter = cl.JointLimiter(p["joint_lower_limits"], p["joint_upper_limits"], float(p["joint_limit_margin"]),
                                       float(p["max_joint_velocity"]), float(p["max_joint_acceleration"]), self.period)
        self.gripper_max_width = float(p["gripper_max_width"])
        self.tick = 0

    def clear(self) -> None:
        """Forget joint history and chunks (new episode / lifecycle reset)."""
        self.history.clear()
        self.blender.reset()
        self.tick = 0

    def push_joints(self, positions: np.ndarray, velocities: np.ndarray) -> None:
        """One joint state (9,) rad/m + (9,) rad/s, m/s into the history (once per control tick)."""
        self.history.push(positions, velocities)

    def joint_history(self) -> np.ndarray:
        """``(Hj, 18)`` float32, oldest first: what ``runtime.step`` takes."""
        return self.history.array()

    def restart(self, positions: np.ndarray) -> None:
        """Start driving from the measured arm positions (first 7 of ``positions``): limiter at rest, no chunks."""
        self.limiter.reset(np.asarray(positions)[:7])
        self.blender.reset()
        self.tick = 0

    def command(self, action_chunk: object) -> Command:
        """The command for this tick from the model's ``action_chunk (K, 8)``; ``InputRejected`` when invalid."""
        chunk = cl.validate_chunk(action_chunk)
        self.blender.add(chunk, self.tick)
        action = self.blender.action(self.tick)
        self.tick += 1
        arm = self.limiter.step(action[:7])
        return Command(arm=arm, gripper=cl.clamp_gripper(action[7], self.gripper_max_width))
