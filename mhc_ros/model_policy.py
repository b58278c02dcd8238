"""The learned controller's per-tick logic as a simulation policy (no ROS graph).

``RuntimePolicy`` does per control period what the ``mhc_controller`` node does per tick — joint
history → ``runtime.step`` → chunk blending → joint limits — so ``mhc eval --checkpoint`` measures
the same behaviour as the node, only without the transport.
"""

from __future__ import annotations

import time

import numpy as np

from mhc_ros.control_logic import LatencyStats
from mhc_ros.controller_core import ControllerCore


class RuntimePolicy:
    """Closed-loop policy over an inference runtime (docs/contracts.md § Inference runtime).

    ``act(obs)`` returns the action ``(8,)``: 7 arm joint targets (rad) + gripper width (m), after the
    same :class:`ControllerCore` (smoothing and limits) as the node. ``parameters``: node parameter
    values (``mhc_ros.controller_core.CORE_DEFAULTS``), defaults when absent. ``latency`` collects the
    ``runtime.step`` times.
    """

    def __init__(self, runtime, parameters: dict | None = None) -> None:
        self.runtime = runtime
        self.core = ControllerCore(runtime.joint_history_length, parameters)
        self.latency = LatencyStats(window=1_000_000)  # every step of an evaluation
        self.last_output = None

    @property
    def tick(self) -> int:
        return self.core.tick

    def reset(self, episode) -> None:
        """Start an episode: encode its instruction once, forget history and chunks."""
        self.runtime.encode_instruction(episode.instruction)
        self.core.clear()

    def act(self, obs) -> np.ndarray:
        self.core.push_joints(obs.joint_positions, obs.joint_velocities)
        if self.core.tick == 0:
            self.core.restart(obs.joint_positions)
        started = time.perf_counter()
        self.last_output = self.runtime.step(obs.image, "rgb8", self.core.joint_history())
        self.latency.add(time.perf_counter() - started)
        command = self.core.command(self.last_output.action_chunk)
        return np.append(command.arm, command.gripper).astype(np.float32)
