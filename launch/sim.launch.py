"""Simulated system: ``ros2 launch mhc_ros sim.launch.py task:=pick_place policy:=expert``.

The node list comes from :func:`mhc_ros.system.sim_system`, the same description ``mhc bringup sim``
starts as processes on machines without ``ros2 launch``.
"""

from __future__ import annotations

from mhc_ros.system import launch_description, sim_system

# name -> (default, type, description)
ARGUMENTS = {
    "policy": ("expert", str, "controller: 'expert' (scripted expert) or 'mhc' (needs checkpoint_path)"),
    "checkpoint_path": ("", str, "mHC checkpoint for policy:=mhc"),
    "backend": ("onnxruntime", str, "inference backend of the mhc_controller (auto, torch, onnxruntime, tensorrt)"),
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


def generate_launch_description():
    """Launch arguments (each with a description) and the nodes of :func:`mhc_ros.system.sim_system`."""
    return launch_description(ARGUMENTS, lambda values: sim_system(**values))
