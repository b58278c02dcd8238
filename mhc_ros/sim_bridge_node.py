"""``mhc_sim_bridge``: the PyBullet tabletop world as a ROS 2 robot.

Steps a :class:`mhc_sim.TabletopWorld` at the control rate and publishes what a real arm's drivers
would (``/joint_states``, ``/camera/image_raw``) plus simulation-only topics (``/clock``,
``/sim/object_poses``, ``/sim/episode_status``, ``/mhc/instruction``). It executes
``/arm_controller/joint_trajectory`` (ros2_control JointTrajectoryController style) and
``/gripper_controller/commands`` (forward command controller, ``[width m]``).

Safety: a trajectory with unknown joint names, NaN/inf, positions outside the URDF limits or
wrong lengths is rejected — logged with its reason (throttled), counted (``/diagnostics`` and the
episode status) — and the arm holds its current commanded position. Before any command the arm
holds its reset pose. ``/clock`` is continuous across episodes (each episode's ``start_time`` is
in its status), so nodes with ``use_sim_time`` never see time go backwards.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import PoseArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock as ClockMsg
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray, String
from trajectory_msgs.msg import JointTrajectory

from mhc_ros import conversions as conv
from mhc_ros.ros_env import run_node
from mhc_ros.system import TRACE_TOPIC, instruction_sha

SENSOR_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                        durability=DurabilityPolicy.VOLATILE)
LATCHED_QOS = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL)
RELIABLE_QOS = QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)

# name -> (default, description); every one is a ROS parameter of the node.
PARAMETERS: dict[str, tuple[Any, str]] = {
    "task": ("reach", "task of the episode started at start-up (a key of mhc_sim.TASKS)"),
    "seed": (0, "seed of the episode started at start-up (>= 0)"),
    "auto_start": (True, "start an episode of (task, seed) at start-up"),
    "image_width": (96, "scene camera width (pixels)"),
    "image_height": (96, "scene camera height (pixels)"),
    "publish_images": (True, "render and publish /camera/image_raw"),
    "image_encoding": ("rgb8", "wire encoding of /camera/image_raw (rgb8, bgr8, mono8 not for colour)"),
    "control_hz": (20.0, "control rate: one world step per period (Hz)"),
    "sim_dt": (1.0 / 240.0, "physics step (s); control period must be a whole number of them"),
    "publish_clock": (True, "publish /clock (simulation time, continuous across episodes)"),
    "realtime_factor": (1.0, "simulation speed vs wall clock; 0 = as fast as possible, in lockstep with "
                             "the controller (step once a command answered the last state)"),
    "lockstep_timeout_s": (1.0, "with realtime_factor 0: step anyway after this wall time without a command (s)"),
    "instruction_ack_timeout_s": (0.0, "with realtime_factor 0: hold an episode's first observation until the "
                                       "mhc_controller's tick trace shows the episode's instruction (announced or "
                                       "ticked on), at most this long (s); 0 = do not wait"),
    "max_steps": (0, "episode length limit in control periods; 0 = the task's own max_steps"),
    "camera_frame_id": ("camera", "frame_id of /camera/image_raw"),
    "world_frame_id": ("world", "frame_id of /sim/object_poses"),
    "reject_log_period_s": (1.0, "minimum wall time between two rejection log lines (s)"),
    "diagnostics_period_s": (1.0, "wall period of /diagnostics (s)"),
}


MAX_INSTRUCTION_CHARS = 1000


def parse_episode_request(text: str, tasks: Mapping[str, Any] | Any) -> dict[str, Any]:
    """Validate a ``/sim/episode_request`` JSON ``{"task", "seed"[, "request_id"][, "instruction"]}``.

    Returns ``{"task": str, "seed": int, "request_id": str | None, "instruction": str | None}``
    (``instruction`` replaces the episode's own, e.g. a held-out paraphrase); raises ``ValueError``
    naming the bad value.
    """
    try:
        request = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"episode request {text[:80]!r} is not JSON ({err.msg})") from None
    if not isinstance(request, dict):
        raise ValueError(f"episode request {text[:80]!r} is not a JSON object")
    task = request.get("task")
    if task not in tasks:
        raise ValueError(f"unknown task {task!r} (expected one of {', '.join(sorted(tasks))})")
    seed = request.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed {seed!r} must be an integer >= 0")
    request_id = request.get("request_id")
    instruction = request.get("instruction")
    if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()
                                    or len(instruction) > MAX_INSTRUCTION_CHARS):
        raise ValueError(f"instruction {str(instruction)[:80]!r} must be a non-empty string of at most "
                         f"{MAX_INSTRUCTION_CHARS} characters")
    return {"task": task, "seed": seed, "request_id": None if request_id is None else str(request_id),
            "instruction": instruction}


def episode_status(episode_id: int, spec: Any, step: int, success: bool, failure: str | None, done: bool,
                   rejected_commands: int, object_present: np.ndarray, start_time: float,
                   max_steps: int, request_id: str | None, stale_commands: int = 0,
                   uncommanded_steps: int = 0) -> dict[str, Any]:
    """The ``/sim/episode_status`` JSON object.

    ``start_time`` is the ``/clock`` time (s) of the episode's reset; the episode's own time is
    ``step / control_hz``. ``object_present`` (6,) in ``OBJECT_SLOTS`` order (absent slots have a
    zero pose in ``/sim/object_poses``). ``stale_commands``: arm commands of this episode's time that
    were stamped before its reset and ignored; ``uncommanded_steps``: lockstep steps taken without a new
    command, at ``lockstep_timeout_s``.
    """
    return {
        "episode_id": episode_id, "task": spec.task, "seed": int(spec.seed), "instruction": spec.instruction,
        "step": step, "success": bool(success), "done": bool(done), "failure": failure,
        "rejected_commands": rejected_commands, "stale_commands": stale_commands,
        "uncommanded_steps": uncommanded_steps, "max_steps": max_steps,
        "start_time": start_time,
        "object_present": [bool(p) for p in object_present], "request_id": request_id,
    }


class SimBridgeNode(Node):
    """The simulated robot: world stepping, sensor publishing and command execution."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("mhc_sim_bridge", **kwargs)
        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, _descriptor(description))
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        self.p = p
        import mhc_sim  # deferred: the simulation is heavy and tests of pure helpers do not need it

        self._tasks = mhc_sim.TASKS
        self.world = mhc_sim.TabletopWorld(mhc_sim.WorldConfig(
            image_width=int(p["image_width"]), image_height=int(p["image_height"]),
            control_hz=float(p["control_hz"]), sim_dt=float(p["sim_dt"]), render=bool(p["publish_images"])))
        lower, upper, _ = self.world.joint_limits()
        self.limits = {name: (float(lo), float(hi)) for name, lo, hi in zip(conv.JOINT_NAMES, lower, upper,
                                                                              strict=True)}
        self.period = 1.0 / float(p["control_hz"])

        self.pub_clock = self.create_publisher(ClockMsg, "/clock", 10) if p["publish_clock"] else None
        self.pub_image = self.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
        self.pub_joints = self.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
        self.pub_poses = self.create_publisher(PoseArray, "/sim/object_poses", RELIABLE_QOS)
        self.pub_status = self.create_publisher(String, "/sim/episode_status", LATCHED_QOS)
        self.pub_instruction = self.create_publisher(String, "/mhc/instruction", LATCHED_QOS)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_trajectory,
                                 RELIABLE_QOS)
        self.create_subscription(Float64MultiArray, "/gripper_controller/commands", self._on_gripper, RELIABLE_QOS)
        self.create_subscription(String, "/sim/episode_request", self._on_episode_request, RELIABLE_QOS)

        # Episode state (all touched only from this node's executor thread).
        self.episode_id = 0
        self.request_id: str | None = None
        self.clock_offset = 0.0          # /clock time of the current episode's reset (s)
        self.command = np.zeros(8)       # held action: 7 arm targets (rad) + gripper width (m)
        self.done = True
        self.success = False
        self.failure: str | None = None
        self.max_steps = 0
        self.object_present = np.zeros(0, bool)
        self.rejected_episode = 0
        self.rejected_total = 0
        self.bad_requests = 0
        self.stale_commands = 0  # trajectories stamped before the current episode's reset, ignored
        self.stale_episode = 0   # of them, those received during the current episode
        self.uncommanded_steps = 0  # lockstep steps of the current episode taken at lockstep_timeout_s
        self.last_rejection = ""
        self.commands_since_publish = 0
        self.last_publish_wall = time.monotonic()
        self.held_observation: Any = None  # an episode's first observation, awaiting the instruction's announcement
        self.held_since = 0.0
        self.awaited_sha = ""
        self.ack_timeouts = 0  # episodes whose first observation went out without the announcement

        steady = Clock(clock_type=ClockType.STEADY_TIME)
        rtf = float(p["realtime_factor"])
        if not math.isfinite(rtf) or rtf < 0.0:
            raise ValueError(f"realtime_factor={rtf!r} must be >= 0 (0 = as fast as possible)")
        self.lockstep = rtf == 0.0
        self.ack_timeout = float(p["instruction_ack_timeout_s"]) if self.lockstep else 0.0
        if not math.isfinite(self.ack_timeout) or self.ack_timeout < 0.0:
            raise ValueError(f"instruction_ack_timeout_s={self.ack_timeout!r} must be >= 0 (0 = do not wait)")
        if self.ack_timeout > 0.0:
            self.create_subscription(String, TRACE_TOPIC, self._on_controller_trace, RELIABLE_QOS)
        self.create_timer(0.001 if self.lockstep else self.period / rtf, self._on_step_timer, clock=steady)
        self.create_timer(float(p["diagnostics_period_s"]), self._publish_diagnostics, clock=steady)
        if p["auto_start"]:
            self.start_episode(str(p["task"]), int(p["seed"]), None)

    # ------------------------------------------------------------------ episodes
    def start_episode(self, task: str, seed: int, request_id: str | None, instruction: str | None = None) -> None:
        """Reset the world to (task, seed), hold the reset pose and announce the episode (``instruction``
        replaces the episode's own)."""
        if self.episode_id:
            self.clock_offset += self.world.sim_time + self.period  # keep /clock strictly increasing
        obs = self.world.reset(task, seed, instruction)
        spec = self.world.episode
        self.episode_id += 1
        self.request_id = request_id
        self.command = np.concatenate([obs.joint_positions[:7], [obs.joint_positions[7] + obs.joint_positions[8]]])
        self.done = self.success = False
        self.failure = None
        self.max_steps = int(self.p["max_steps"]) or int(spec.max_steps)
        self.object_present = np.asarray(obs.object_present, bool)
        self.rejected_episode = 0
        self.stale_episode = 0
        self.uncommanded_steps = 0
        self.pub_instruction.publish(String(data=spec.instruction))
        self.get_logger().info(f"episode {self.episode_id}: {task} seed {seed}: '{spec.instruction}'")
        if self.ack_timeout > 0.0:
            # the controller must not see this episode's scene while it still follows the last instruction
            self.held_observation, self.held_since = obs, time.monotonic()
            self.awaited_sha = instruction_sha(spec.instruction)
        else:
            self._publish_observation(obs)
        self._publish_status()

    def _on_controller_trace(self, msg: String) -> None:
        if self.held_observation is None:
            return
        try:
            trace = json.loads(msg.data)
        except ValueError:
            return  # not the controller's JSON: the observation goes out at the timeout
        # the announcement, or a tick already on the instruction (the announcement can be lost while the
        # trace's publisher and this subscription are still discovering each other)
        if isinstance(trace, dict) and trace.get("source") in ("instruction", "tick") \
                and trace.get("instruction_sha") == self.awaited_sha:
            self._release_held_observation()

    def _release_held_observation(self) -> None:
        obs, self.held_observation = self.held_observation, None
        self._publish_observation(obs)

    def _on_episode_request(self, msg: String) -> None:
        try:
            request = parse_episode_request(msg.data, self._tasks)
        except ValueError as err:
            self.bad_requests += 1
            self.get_logger().error(f"bad episode request ignored: {err}")
            return
        self.start_episode(request["task"], request["seed"], request["request_id"], request["instruction"])

    # ------------------------------------------------------------------ commands
    def _on_trajectory(self, msg: JointTrajectory) -> None:
        stamp = conv.time_to_seconds(msg.header.stamp)
        if self.episode_id and 0.0 < stamp < self.clock_offset - 1e-6:
            # sent before this episode's reset (e.g. a hold of the previous episode's last pose, still in
            # flight): it must not move the freshly reset arm nor trigger a lockstep step
            self.stale_commands += 1
            self.stale_episode += 1
            return
        self.commands_since_publish += 1
        try:
            self.command[:7] = conv.trajectory_target(msg, self.limits, self.period)
        except conv.CommandRejected as err:
            self._reject(f"joint trajectory rejected, holding position: {err}")

    def _on_gripper(self, msg: Float64MultiArray) -> None:
        try:
            self.command[7] = conv.gripper_width(msg.data)
        except conv.CommandRejected as err:
            self._reject(f"gripper command rejected, holding width: {err}")

    def _reject(self, reason: str) -> None:
        self.rejected_episode += 1
        self.rejected_total += 1
        self.last_rejection = reason
        self.get_logger().warning(f"{reason} (rejected so far: {self.rejected_total})",
                                  throttle_duration_sec=float(self.p["reject_log_period_s"]))
        self._publish_diagnostics()

    # ------------------------------------------------------------------ stepping
    def _on_step_timer(self) -> None:
        if self.held_observation is not None:
            if time.monotonic() - self.held_since >= self.ack_timeout:
                self.ack_timeouts += 1
                self.get_logger().warning(f"episode {self.episode_id}: no instruction announcement from the "
                                          f"controller within {self.ack_timeout} s; starting anyway")
                self._release_held_observation()
            return
        if self.done:
            return
        if self.lockstep and self.commands_since_publish == 0:
            if time.monotonic() - self.last_publish_wall < float(self.p["lockstep_timeout_s"]):
                return
            self.uncommanded_steps += 1
        obs = self.world.step(self.command.copy())
        self.success = bool(self.world.success())
        self.failure = self.world.failed() if not self.success else None
        self.done = self.success or self.failure is not None or self.world.steps >= self.max_steps
        self._publish_observation(obs)
        self._publish_status()
        if self.done:
            outcome = "success" if self.success else f"failure ({self.failure or 'max_steps'})"
            self.get_logger().info(f"episode {self.episode_id} done after {self.world.steps} steps: {outcome}")

    def _publish_observation(self, obs: Any) -> None:
        stamp = self.clock_offset + float(obs.sim_time)
        if self.pub_clock is not None:
            self.pub_clock.publish(conv.clock_msg(stamp))
        if obs.image is not None:
            encoding = str(self.p["image_encoding"])
            image = obs.image.mean(axis=2).astype(np.uint8) if encoding == "mono8" else obs.image
            self.pub_image.publish(conv.image_msg(image, stamp, str(self.p["camera_frame_id"]), encoding))
        self.pub_poses.publish(conv.pose_array_msg(obs.object_positions, obs.object_orientations, stamp,
                                                   str(self.p["world_frame_id"])))
        # Joint states last: controllers act on them, so the poses of the same instant are already out.
        self.pub_joints.publish(conv.joint_state_msg(obs.joint_names, obs.joint_positions, obs.joint_velocities,
                                                     stamp))
        self.commands_since_publish = 0
        self.last_publish_wall = time.monotonic()

    def status(self) -> dict[str, Any]:
        """Current episode status (the ``/sim/episode_status`` JSON object)."""
        return episode_status(self.episode_id, self.world.episode, self.world.steps, self.success, self.failure,
                              self.done, self.rejected_episode, self.object_present, self.clock_offset,
                              self.max_steps, self.request_id, self.stale_episode, self.uncommanded_steps)

    def _publish_status(self) -> None:
        self.pub_status.publish(String(data=json.dumps(self.status())))

    def _publish_diagnostics(self) -> None:
        level = DiagnosticStatus.WARN if self.rejected_episode else DiagnosticStatus.OK
        values = {"episode_id": self.episode_id, "step": self.world.steps, "done": self.done,
                  "rejected_commands": self.rejected_episode, "rejected_commands_total": self.rejected_total,
                  "bad_episode_requests": self.bad_requests, "stale_commands_ignored": self.stale_commands,
                  "instruction_ack_timeouts": self.ack_timeouts,
                  "last_rejection": self.last_rejection}
        status = DiagnosticStatus(
            level=level, name=f"{self.get_name()}: commands", hardware_id="pybullet",
            message=f"{self.rejected_episode} commands rejected this episode" if self.rejected_episode else "ok",
            values=[KeyValue(key=k, value=str(v)) for k, v in values.items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(msg)

    def close(self) -> None:
        """Release the PyBullet client and the node's handles."""
        self.world.close()
        self.destroy_node()


def _descriptor(description: str):
    from rcl_interfaces.msg import ParameterDescriptor

    return ParameterDescriptor(description=description)


def main(args: list[str] | None = None) -> None:
    """Console script; exits with status 0 on Ctrl-C and SIGTERM (see ``mhc_ros.ros_env.run_node``)."""
    run_node(SimBridgeNode, args)


if __name__ == "__main__":
    main()
