"""Real robot: ``ros2 launch mhc_ros robot.launch.py checkpoint_path:=/path/model.pt params_file:=...``.

Starts the ``mhc_controller`` alone (the robot's drivers and ros2_control run elsewhere). The node
list comes from :func:`mhc_ros.system.robot_system`, the same description ``mhc bringup robot``
starts as a process on machines without ``ros2 launch``. Empty arguments leave the value to the
params file (``config/controller.yaml`` by default), then to the node's own defaults.
"""

from __future__ import annotations

from pathlib import Path

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mhc_ros.system import CONTROLLER_TOPICS, robot_system


def _default_params_file() -> str:
    try:
        from ament_index_python.packages import get_package_share_directory

        return str(Path(get_package_share_directory("mhc_ros")) / "config" / "controller.yaml")
    except Exception:  # no ament index (source checkout): the repository's own file
        return str(Path(__file__).resolve().parents[1] / "config" / "controller.yaml")


# name -> (default, type, description); "" = not given (params file or node default applies)
ARGUMENTS = {
    "params_file": (_default_params_file(), str, "controller parameters YAML (mhc_controller: ros__parameters)"),
    "checkpoint_path": ("", str, "mHC checkpoint file or folder (overrides the params file)"),
    "backend": ("", str, "inference backend: auto, torch, onnxruntime or tensorrt (overrides the params file)"),
    "engine_dir": ("", str, "folder of exported ONNX models / TensorRT engines (overrides the params file)"),
    "control_rate_hz": ("", float, "control rate in Hz (overrides the params file; default 20)"),
    "use_sim_time": ("", bool, "follow /clock (true for a simulated robot; overrides the params file)"),
    **{name: (default, str, f"topic the controller uses for {default} (remapping)")
       for name, default in CONTROLLER_TOPICS.items()},
}


def _convert(text: str, kind: type):
    if text == "":
        return None
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got '{text}'")
        return text.lower() == "true"
    return kind(text)


def _nodes(context, *args, **kwargs) -> list:
    values = {name: _convert(LaunchConfiguration(name).perform(context), kind)
              for name, (_default, kind, _description) in ARGUMENTS.items()}
    topics = {name: values.pop(name) for name in CONTROLLER_TOPICS if values.get(name)}
    nodes = robot_system(topics=topics, **values)
    return [
        Node(package=node.package, executable=node.executable, name=node.name, output="screen",
             parameters=[*([node.params_file] if node.params_file else []), node.parameters],
             remappings=list(node.remappings), additional_env=dict(node.env))
        for node in nodes
    ]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments (each with a description) and the nodes of :func:`mhc_ros.system.robot_system`."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, _kind, description) in ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
