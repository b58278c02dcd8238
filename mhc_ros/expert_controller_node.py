"""``mhc_expert_controller``: the simulation's scripted expert as a ROS 2 controller.

Reads only what a ROS controller can see — ``/sim/episode_status`` (which episode, hence the
expert's plan), ``/joint_states`` and ``/sim/object_poses`` — rebuilds an ``mhc_sim.Observation``
from them (end effector by forward kinematics of the Panda URDF, object velocities
finite-differenced between pose stamps; no images), and answers every joint state with one
``/arm_controller/joint_trajectory`` point and one ``/gripper_controller/commands`` width.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from mhc_ros import conversions as conv
from mhc_ros.ros_env import run_node
from mhc_ros.sim_bridge_node import LATCHED_QOS, RELIABLE_QOS


class ObservationAssembler:
    """Builds ``mhc_sim.Observation`` objects from message contents (pure; no ROS graph needed).

    ``kinematics`` is an ``mhc_sim.PandaKinematics`` (forward kinematics of the grasp frame).
    Poses are stored with their stamps (s); object velocities are the finite difference of the
    two latest pose samples of the current episode.
    """

    def __init__(self, kinematics: Any) -> None:
        self.kinematics = kinematics
        self.reset(0.0, np.zeros(0, bool))

    def reset(self, start_time: float, object_present: np.ndarray) -> None:
        """Forget pose history; the new episode started at ``/clock`` time ``start_time`` (s)."""
        self.start_time = start_time
        self.object_present = np.asarray(object_present, bool)
        self.positions: np.ndarray | None = None
        self.orientations: np.ndarray | None = None
        self.velocities: np.ndarray | None = None
        self.stamp = -np.inf

    def add_poses(self, positions: np.ndarray, orientations: np.ndarray, stamp: float) -> None:
        """Record object poses (N, 3) m, (N, 4) xyzw at ``stamp`` (s); older-episode samples are ignored."""
        if stamp < self.start_time - 1e-9 or stamp <= self.stamp:
            return
        dt = stamp - self.stamp
        self.velocities = conv.finite_difference_velocity(self.positions, positions, dt)
        self.positions, self.orientations, self.stamp = positions, orientations, stamp

    def observation(self, joint_names: tuple[str, ...], positions: np.ndarray, velocities: np.ndarray,
                    stamp: float) -> Any | None:
        """Observation at ``stamp`` (s), or None until the current episode's object poses are known."""
        from mhc_sim import Observation

        if self.positions is None or stamp < self.start_time - 1e-9:
            return None
        ee_position, ee_orientation = self.kinematics.forward(positions[:7])
        present = self.object_present if len(self.object_present) == len(self.positions) else \
            np.ones(len(self.positions), bool)
        return Observation(
            sim_time=stamp - self.start_time, image=None, wrist_image=None, joint_names=tuple(joint_names),
            joint_positions=positions, joint_velocities=velocities, ee_position=ee_position,
            ee_orientation=ee_orientation, object_positions=self.positions.copy(),
            object_orientations=self.orientations.copy(), object_velocities=self.velocities.copy(),
            object_present=present.copy())


class ExpertControllerNode(Node):
    """Runs ``mhc_sim.make_expert`` for the current episode at the rate joint states arrive."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mhc_expert_controller", **kwargs)
        self.declare_parameter("control_hz", 20.0)
        self.period = 1.0 / float(self.get_parameter("control_hz").value)
        import mhc_sim

        self.kinematics = mhc_sim.PandaKinematics()  # one private PyBullet client: FK here, IK in the expert
        self.lower, self.upper = self.kinematics.joint_lower, self.kinematics.joint_upper  # URDF limits (9,)
        self.assembler = ObservationAssembler(self.kinematics)
        self.expert: Any = None
        self.episode_id = -1
        self.done = True
        self.last_joints: tuple[tuple[str, ...], np.ndarray, np.ndarray, float] | None = None
        self.acted_stamp = -np.inf
        self.pub_trajectory = self.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory", RELIABLE_QOS)
        self.pub_gripper = self.create_publisher(Float64MultiArray, "/gripper_controller/commands", RELIABLE_QOS)
        self.create_subscription(String, "/sim/episode_status", self._on_status, LATCHED_QOS)
        self.create_subscription(PoseArray, "/sim/object_poses", self._on_poses, RELIABLE_QOS)
        self.create_subscription(JointState, "/joint_states", self._on_joint_states, RELIABLE_QOS)

    def _on_status(self, msg: String) -> None:
        status = json.loads(msg.data)
        self.done = bool(status["done"])
        if status["episode_id"] == self.episode_id:
            return
        import mhc_sim

        self.episode_id = status["episode_id"]
        spec = mhc_sim.episode_spec(status["task"], int(status["seed"]))
        self.expert = mhc_sim.make_expert(spec, self.kinematics)
        self.expert.reset()
        self.assembler.reset(float(status["start_time"]), np.asarray(status.get("object_present", []), bool))
        self.acted_stamp = -np.inf
        self.get_logger().info(f"episode {self.episode_id}: expert for {spec.task} seed {spec.seed}")
        if self.last_joints is not None:  # the first state of the episode may have come before its status
            self._act(*self.last_joints)

    def _on_poses(self, msg: PoseArray) -> None:
        positions, orientations = conv.pose_array_arrays(msg)
        self.assembler.add_poses(positions, orientations, conv.time_to_seconds(msg.header.stamp))

    def _on_joint_states(self, msg: JointState) -> None:
        positions, velocities = conv.joint_state_arrays(msg)
        self.last_joints = (conv.JOINT_NAMES, positions, velocities, conv.time_to_seconds(msg.header.stamp))
        self._act(*self.last_joints)

    def _act(self, names: tuple[str, ...], positions: np.ndarray, velocities: np.ndarray, stamp: float) -> None:
        if self.expert is None or self.done or stamp <= self.acted_stamp:
            return
        obs = self.assembler.observation(names, positions, velocities, stamp)
        if obs is None:
            return
        action = np.asarray(self.expert.act(obs), dtype=float)
        self.acted_stamp = stamp
        # The world clips commands to the URDF limits itself; the bridge (like a real driver) rejects them.
        action[:7] = np.clip(action[:7], self.lower[:7], self.upper[:7])
        action[7] = np.clip(action[7], 0.0, conv.GRIPPER_MAX_WIDTH)
        # Gripper first: the bridge (in lockstep) steps when the arm trajectory arrives.
        self.pub_gripper.publish(conv.gripper_msg(float(action[7])))
        self.pub_trajectory.publish(conv.joint_trajectory_msg(action[:7], self.period, stamp))

    def close(self) -> None:
        """Release the kinematics client and the node's handles."""
        self.kinematics.close()
        self.destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script; exits with status 0 on Ctrl-C and SIGTERM (see ``mhc_ros.ros_env.run_node``)."""
    run_node(ExpertControllerNode, args)


if __name__ == "__main__":
    main()
