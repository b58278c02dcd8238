"""Kinematics-only Panda (its own DIRECT PyBullet client) for the experts' inverse kinematics.

Kept apart from the world so an expert can run anywhere it gets an Observation (e.g. in a ROS node).
Positions in metres (world frame = robot base frame), orientations xyzw quaternions, angles in radians.
"""

from __future__ import annotations

import numpy as np
import pybullet
from mhc_sim.scene import ARM_JOINT_NAMES, FINGER_JOINT_NAMES, HOME_JOINTS, connect

EE_LINK_NAME = "panda_grasptarget"


class PandaKinematics:
    """Forward and inverse kinematics of the Panda's ``panda_grasptarget`` frame.

    ``joint_lower`` / ``joint_upper``: URDF position limits (9,) of ``JOINT_NAMES`` (rad, m).
    """

    def __init__(self) -> None:
        self._client = connect()
        self._robot = self._client.loadURDF("franka_panda/panda.urdf", useFixedBase=True)
        joints, links = {}, {}
        for j in range(self._client.getNumJoints(self._robot)):
            info = self._client.getJointInfo(self._robot, j)
            joints[info[1].decode()] = (j, info)
            links[info[12].decode()] = j
        named = [joints[n][1] for n in (*ARM_JOINT_NAMES, *FINGER_JOINT_NAMES)]
        self.joint_lower = np.array([float(i[8]) for i in named])  # URDF limits (9,), rad / m
        self.joint_upper = np.array([float(i[9]) for i in named])
        self._arm = [joints[n][0] for n in ARM_JOINT_NAMES]
        self._fingers = [joints[n][0] for n in FINGER_JOINT_NAMES]
        self._ee = links[EE_LINK_NAME]
        # calculateInverseKinematics wants null-space arrays over all movable joints (7 arm + 2 fingers).
        movable = [info for _, (j, info) in sorted(joints.items(), key=lambda kv: kv[1][0]) if info[2] != 4]
        self._lower = [float(i[8]) for i in movable]
        self._upper = [float(i[9]) for i in movable]
        self._ranges = [u - lo for lo, u in zip(self._lower, self._upper, strict=True)]

    def _set(self, arm: np.ndarray) -> None:
        for j, q in zip(self._arm, arm, strict=True):
            self._client.resetJointState(self._robot, j, float(q))

    def forward(self, arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Position (3,) and orientation (4,) xyzw of the grasp frame for arm joints (7,)."""
        self._set(arm)
        state = self._client.getLinkState(self._robot, self._ee, computeForwardKinematics=True)
        return np.array(state[4]), np.array(state[5])

    def ik(self, position: np.ndarray, orientation: np.ndarray, rest_joints: np.ndarray | None = None,
           seed: np.ndarray | None = None, iterations: int = 4, tolerance: float = 1e-3) -> np.ndarray:
        """Arm joints (7,) placing the grasp frame at ``position`` (3,) with ``orientation`` (4,) xyzw.

        ``rest_joints`` (7,) is the null-space preference (default: the home pose); ``seed`` (7,) is where
        the solver starts (default: ``rest_joints``); seeding with the previous solution gives a smooth joint
        path. Repeats the solve from its own answer, which brings the
        damped-least-squares result to about ``tolerance`` metres.
        """
        rest = np.asarray(HOME_JOINTS if rest_joints is None else rest_joints, dtype=float)
        rest_full = [*rest.tolist(), 0.04, 0.04]
        q = rest.copy() if seed is None else np.asarray(seed, dtype=float).copy()
        for _ in range(iterations):
            self._set(q)
            solution = self._client.calculateInverseKinematics(
                self._robot, self._ee, [float(v) for v in position], [float(v) for v in orientation],
                lowerLimits=self._lower, upperLimits=self._upper, jointRanges=self._ranges,
                restPoses=rest_full, maxNumIterations=100, residualThreshold=1e-5)
            q = np.clip(np.array(solution[:7]), self._lower[:7], self._upper[:7])
            reached, _ = self.forward(q)
            if np.linalg.norm(reached - position) < tolerance:
                break
        return q

    def close(self) -> None:
        """Disconnect the private client."""
        self._client.disconnect()


def top_down_orientation(yaw: float) -> np.ndarray:
    """xyzw quaternion of a grasp frame pointing straight down (z to -z world) rotated by ``yaw`` (rad).

    The fingers then open along world (sin yaw, -cos yaw, 0).
    """
    return np.array(pybullet.getQuaternionFromEuler([np.pi, 0.0, float(yaw)]))
