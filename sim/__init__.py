"""mhc_sim: PyBullet tabletop simulation (Franka Panda, cubes, bin, ball), tasks and scripted experts.

No ROS and no torch here. World frame = table-top robot base frame (z up, x forward, y left); metres,
radians, seconds.
"""

from mhc_sim.experts import Expert, make_expert
from mhc_sim.kinematics import PandaKinematics
from mhc_sim.rollout import EpisodeResult, ExpertPolicy, evaluate, run_episode
from mhc_sim.scene import DIRECTIONS, JOINT_NAMES, OBJECT_SLOTS
from mhc_sim.tasks import HELD_OUT_TEMPLATES, SKILLS, TASKS, EpisodeSpec, TaskSpec, episode_spec, held_out_instruction
from mhc_sim.world import Observation, TabletopWorld, WorldConfig, project_scene_points, unproject_to_height

__all__ = [
    "DIRECTIONS",
    "HELD_OUT_TEMPLATES",
    "JOINT_NAMES",
    "OBJECT_SLOTS",
    "SKILLS",
    "TASKS",
    "EpisodeResult",
    "EpisodeSpec",
    "Expert",
    "ExpertPolicy",
    "Observation",
    "PandaKinematics",
    "TabletopWorld",
    "TaskSpec",
    "WorldConfig",
    "episode_spec",
    "evaluate",
    "held_out_instruction",
    "make_expert",
    "project_scene_points",
    "run_episode",
    "unproject_to_height",
]
