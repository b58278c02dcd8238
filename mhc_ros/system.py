"""One Python description of the node sets of the stack.

``launch/sim.launch.py`` turns it into ``launch_ros.actions.Node`` actions and ``mhc bringup``
(:mod:`mhc_ros.bringup`) into processes, so both start exactly the same nodes with the same
parameters. Pure data: no ROS import.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from typing import Any

PACKAGE = "mhc_ros"
POLICIES = ("expert", "mhc")  # scripted expert (ground truth) or the learned mHC controller


@dataclass(frozen=True)
class NodeDescription:
    """One node of the system, as ``ros2 run PACKAGE EXECUTABLE --ros-args ...`` would start it.

    ``module`` is the Python module whose ``main()`` the console script ``executable`` calls, so the
    node also starts as ``python -m MODULE`` where no ament index exists. ``parameters`` are ROS
    parameter values (bool, int, float, str); ``remappings`` are ``(from, to)`` topic pairs;
    ``env`` holds extra environment variables for the process.
    """

    package: str
    executable: str
    name: str
    module: str
    parameters: dict[str, Any] = field(default_factory=dict)
    remappings: tuple[tuple[str, str], ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    params_file: str | None = None  # a ``--params-file`` YAML; ``parameters`` override its values

    def ros_arguments(self) -> list[str]:
        """``--ros-args -r __node:=NAME [--params-file F] -p key:=value ... -r from:=to ...`` for a command line."""
        args = ["--ros-args", "-r", f"__node:={self.name}"]
        if self.params_file:
            args += ["--params-file", self.params_file]
        for key, value in self.parameters.items():
            args += ["-p", f"{key}:={parameter_literal(value)}"]
        for source, target in self.remappings:
            args += ["-r", f"{source}:={target}"]
        return args

    def command(self, python: str = sys.executable) -> list[str]:
        """Process command line: ``python -m MODULE --ros-args ...``."""
        return [python, "-m", self.module, *self.ros_arguments()]


def parameter_literal(value: Any) -> str:
    """A parameter value as the YAML literal ``--ros-args -p key:=VALUE`` parses back to the same type."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text if any(c in text for c in ".eEn") else f"{text}.0"
    if isinstance(value, str):
        return json.dumps(value)  # a double-quoted YAML scalar stays a string ("1" is not an int)
    raise TypeError(f"parameter value {value!r} of type {type(value).__name__} not supported "
                    "(bool, int, float, str)")


# The mhc_controller's per-tick JSON trace (what each tick used; `mhc replay` follows it, `mhc eval --ros` counts it).
TRACE_TOPIC = "/mhc/controller_tick"
# How long a lockstep bridge holds an episode's first observation for the controller's instruction announcement.
INSTRUCTION_ACK_TIMEOUT_S = 2.0


def instruction_sha(text: str) -> str:
    """The instruction's identity in the tick trace: first 16 hex digits of the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def stamp_seconds(stamp: list[int] | None) -> float | None:
    """A trace stamp ``[sec, nanosec]`` in seconds (None stays None)."""
    return None if stamp is None else stamp[0] + stamp[1] * 1e-9


def sim_system(policy: str = "expert", task: str = "reach", seed: int = 0, image_width: int = 96,
               image_height: int = 96, control_hz: float = 20.0, realtime_factor: float = 1.0,
               publish_images: bool = True, auto_start: bool = True, use_sim_time: bool = True,
               checkpoint_path: str | None = None, backend: str = "onnxruntime", inference_threads: int = 2
               ) -> list[NodeDescription]:
    """Nodes of the simulated system: ``mhc_sim_bridge`` plus the controller of ``policy``.

    task, seed: the episode the bridge starts by itself (``auto_start``); more episodes are
    requested on ``/sim/episode_request``. image_width/height: camera resolution (pixels).
    control_hz: control rate (Hz). realtime_factor: simulation speed vs wall clock (0 = as fast as
    the controller answers). use_sim_time: the controller follows ``/clock`` (its command stamps are sim
    time, so the bridge can tell a command sent before an episode's reset from one sent after it).
    checkpoint_path, backend, inference_threads: the ``mhc_controller`` of policy ``mhc`` (it ticks on
    the wall clock; in lockstep the bridge steps when its command arrives).
    Raises ``ValueError`` naming an unknown policy or a missing checkpoint.
    """
    if policy not in POLICIES:
        raise ValueError(f"policy '{policy}' not available (expected one of {', '.join(POLICIES)})")
    if policy == "mhc" and not checkpoint_path:
        raise ValueError("policy 'mhc' needs a checkpoint_path")
    # In lockstep the mhc_controller acts once per observation and the bridge holds each episode's first
    # observation until the controller has announced the new instruction (see the two nodes' parameters).
    lockstep = policy == "mhc" and float(realtime_factor) == 0.0
    bridge = NodeDescription(
        package=PACKAGE, executable="mhc_sim_bridge", name="mhc_sim_bridge", module="mhc_ros.sim_bridge_node",
        parameters={"task": task, "seed": int(seed), "auto_start": bool(auto_start),
                    "image_width": int(image_width), "image_height": int(image_height),
                    "publish_images": bool(publish_images), "control_hz": float(control_hz),
                    "realtime_factor": float(realtime_factor),
                    **({"instruction_ack_timeout_s": INSTRUCTION_ACK_TIMEOUT_S} if lockstep else {})})
    if policy == "mhc":
        controller = NodeDescription(
            package=PACKAGE, executable="mhc_controller", name="mhc_controller", module="mhc_ros.controller_node",
            parameters={"checkpoint_path": str(checkpoint_path), "backend": backend,
                        "inference_threads": int(inference_threads), "control_rate_hz": float(control_hz),
                        "use_sim_time": bool(use_sim_time), "lockstep": lockstep})
    else:
        controller = NodeDescription(
            package=PACKAGE, executable="mhc_expert_controller", name="mhc_expert_controller",
            module="mhc_ros.expert_controller_node",
            parameters={"control_hz": float(control_hz), "use_sim_time": bool(use_sim_time)})
    return [bridge, controller]


# Topics of the controller a robot set-up commonly renames: argument name -> default topic.
CONTROLLER_TOPICS: dict[str, str] = {
    "image_topic": "/camera/image_raw",
    "joint_states_topic": "/joint_states",
    "instruction_topic": "/mhc/instruction",
    "trajectory_topic": "/arm_controller/joint_trajectory",
    "gripper_topic": "/gripper_controller/commands",
}


def robot_system(checkpoint_path: str | None = None, backend: str | None = None, engine_dir: str | None = None,
                 control_rate_hz: float | None = None, use_sim_time: bool | None = None,
                 params_file: str | None = None, topics: dict[str, str] | None = None) -> list[NodeDescription]:
    """Nodes of a real robot: the ``mhc_controller`` alone (the robot's drivers and controllers run elsewhere).

    Only the values given (not None) become parameters, so a ``params_file`` (e.g.
    ``config/controller.yaml``) supplies the rest. ``topics`` maps ``CONTROLLER_TOPICS`` names to
    topic names; a name that differs from the default becomes a remapping.
    Raises ``ValueError`` naming an unknown topic argument.
    """
    given = {"checkpoint_path": checkpoint_path, "backend": backend, "engine_dir": engine_dir,
             "control_rate_hz": None if control_rate_hz is None else float(control_rate_hz),
             "use_sim_time": None if use_sim_time is None else bool(use_sim_time)}
    topics = dict(topics or {})
    unknown = sorted(set(topics) - set(CONTROLLER_TOPICS))
    if unknown:
        raise ValueError(f"topic argument '{unknown[0]}' unknown (expected {', '.join(CONTROLLER_TOPICS)})")
    remappings = tuple((default, topics[name]) for name, default in CONTROLLER_TOPICS.items()
                       if topics.get(name) and topics[name] != default)
    controller = NodeDescription(
        package=PACKAGE, executable="mhc_controller", name="mhc_controller", module="mhc_ros.controller_node",
        parameters={key: value for key, value in given.items() if value is not None},
        remappings=remappings, params_file=params_file or None)
    return [controller]


# ------------------------------------------------------------------------------ ros2 launch files

LaunchArguments = dict[str, tuple[str, type, str]]  # name -> (default text, type, description)


def launch_value(text: str, kind: type) -> Any:
    """A launch argument's text as ``kind`` (bool: true/false); ``""`` means not given: None."""
    if text == "":
        return None
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got '{text}'")
        return text.lower() == "true"
    return kind(text)


def launch_description(arguments: LaunchArguments, describe: Any) -> Any:
    """A ``LaunchDescription`` declaring ``arguments`` (each with its description) whose nodes are
    ``describe(values)`` — the same ``NodeDescription`` list ``mhc bringup`` starts as processes.

    Imports ``launch``/``launch_ros`` only here: they exist where ``ros2 launch`` does.
    """
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.substitutions import LaunchConfiguration
    from launch_ros.actions import Node

    from launch import LaunchDescription

    def nodes(context: Any, *args: Any, **kwargs: Any) -> list:
        values = {name: launch_value(LaunchConfiguration(name).perform(context), kind)
                  for name, (_default, kind, _description) in arguments.items()}
        return [
            Node(package=node.package, executable=node.executable, name=node.name, output="screen",
                 parameters=[*([node.params_file] if node.params_file else []), node.parameters],
                 remappings=list(node.remappings), additional_env=dict(node.env))
            for node in describe(values)
        ]

    declared = [DeclareLaunchArgument(name, default_value=default, description=description)
                for name, (default, _kind, description) in arguments.items()]
    return LaunchDescription([*declared, OpaqueFunction(function=nodes)])
