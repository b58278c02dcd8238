"""The learned controller's per-tick logic as a simulation policy (no ROS graph).

``RuntimePolicy`` does per control period what the ``mhc_controller`` node does per tick — joint
history → ``runtime.step`` → chunk blending → joint limits — so ``mhc eval --checkpoint`` measures
the same behaviour as the node, only without the transport.
"""

from __future__ import annotations

import time

import numpy as np

from mhc_ros.control_logic import (
    PANDA_LOWER,
    PANDA_UPPER,
    ActionBlender,
    JointHistory,
    JointLimiter,
    LatencyStats,
    clamp_gripper,
    validate_chunk,
)


class RuntimePolicy:
    """Closed-loop policy over an inference runtime (docs/contracts.md § Inference runtime).

    ``act(obs)`` returns the action ``(8,)``: 7 arm joint targets (rad) + gripper width (m), after the
    same smoothing and limits as the node's defaults. ``latency`` collects the ``runtime.step`` times.
    """

    def __init__(self, runtime, control_hz: float = 20.0, smoothing: str = "ensemble", ensemble_decay: float = 0.01,
                 joint_limit_margin: float = 0.05, max_joint_velocity: float = 1.5,
                 max_joint_acceleration: float = 8.0) -> None:
        self.runtime = runtime
        self.history = JointHistory(runtime.joint_history_length)
        self.blender = ActionBlender(smoothing, decay=ensemble_decay)
        self.limiter = JointLimiter(PANDA_LOWER, PANDA_UPPER, joint_limit_margin, max_joint_velocity,
                                    max_joint_acceleration, 1.0 / control_hz)
        self.latency = LatencyStats()
        self.tick = 0
        self.last_output = None

    def reset(self, episode) -> None:
        """Start an episode: encode its instruction once, forget history and chunks."""
        self.runtime.encode_instruction(episode.instruction)
        self.history.clear()
        self.blender.reset()
        self.tick = 0

    def act(self, obs) -> np.ndarray:
        self.history.push(obs.joint_positions, obs.joint_velocities)
        if self.tick == 0:
            self.limiter.reset(obs.joint_positions[:7])
        started = time.perf_counter()
        self.last_output = self.runtime.step(obs.image, "rgb8", self.history.array())
        self.latency.add(time.perf_counter() - started)
        self.blender.add(validate_chunk(self.last_output.action_chunk), self.tick)
        action = self.blender.action(self.tick)
        self.tick += 1
        arm = self.limiter.step(action[:7])
        return np.append(arm, clamp_gripper(action[7])).astype(np.float32)
