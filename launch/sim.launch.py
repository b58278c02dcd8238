"""Simulated system: ``ros2 launch mhc_ros sim.launch.py task:=pick_place policy:=expert``.

The node list comes from :func:`mhc_ros.system.sim_system`, the same description ``mhc bringup sim``
starts as processes on machines without ``ros2 launch``.
"""

from __future__ import annotations

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from mhc_ros.system import sim_system

# name -> (default, type, description)
ARGUMENTS = {
    "policy": ("expert", str, "controller: 'expert' (scripted expert; the learned mHC policy comes later)"),
    "task": ("reach", str, "task of the first episode (a key of mhc_sim.TASKS)"),
    "seed": ("0", int, "seed of the first episode (>= 0)"),
    "image_width": ("96", int, "camera image width (pixels)"),
    "image_height": ("96", int, "camera image height (pixels)"),
    "control_hz": ("20.0", float, "control rate (Hz)"),
    "realtime_factor": ("1.0", float, "simulation speed vs wall clock; 0 = as fast as the controller answers"),
    "publish_images": ("true", bool, "render and publish /camera/image_raw"),
    "use_sim_time": ("true", bool, "controllers follow /clock"),
    "auto_start": ("true", bool, "the bridge starts episode (task, seed) by itself; false: wait for "
                                 "/sim/episode_request (what mhc bringup does)"),
}


def _convert(text: str, kind: type):
    if kind is bool:
        if text.lower() not in ("true", "false"):
            raise ValueError(f"expected true or false, got '{text}'")
        return text.lower() == "true"
    return kind(text)


def _nodes(context, *args, **kwargs) -> list:
    values = {name: _convert(LaunchConfiguration(name).perform(context), kind)
              for name, (_default, kind, _description) in ARGUMENTS.items()}
    return [
        Node(package=node.package, executable=node.executable, name=node.name, output="screen",
             parameters=[node.parameters], remappings=list(node.remappings), additional_env=dict(node.env))
        for node in sim_system(**values)
    ]


def generate_launch_description() -> LaunchDescription:
    """Launch arguments (each with a description) and the nodes of :func:`mhc_ros.system.sim_system`."""
    arguments = [DeclareLaunchArgument(name, default_value=default, description=description)
                 for name, (default, _kind, description) in ARGUMENTS.items()]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
