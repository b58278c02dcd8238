"""Real robot: ``ros2 launch mhc_ros robot.launch.py checkpoint_path:=/path/model.pt params_file:=...``.

Starts the ``mhc_controller`` alone (the robot's drivers and ros2_control run elsewhere). The node
list comes from :func:`mhc_ros.system.robot_system`, the same description ``mhc bringup robot``
starts as a process on machines without ``ros2 launch``. Empty arguments leave the value to the
params file (``config/controller.yaml`` by default), then to the node's own defaults.
"""

from __future__ import annotations

from pathlib import Path

from mhc_ros.system import CONTROLLER_TOPICS, launch_description, robot_system


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


def _robot_nodes(values: dict) -> list:
    topics = {name: values.pop(name, None) for name in CONTROLLER_TOPICS}
    return robot_system(topics={name: topic for name, topic in topics.items() if topic}, **values)


def generate_launch_description():
    """Launch arguments (each with a description) and the nodes of :func:`mhc_ros.system.robot_system`."""
    return launch_description(ARGUMENTS, _robot_nodes)
