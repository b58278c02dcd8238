"""Episode recordings as rosbag2 bags (MCAP storage, format version 9) written with ``rosbags``.

A bag written here is what ``ros2 bag record`` of the simulated robot would hold: the same topics,
message types and QoS as the live graph (docs/contracts.md), so a user's own bags and ours are read
by the same code. Messages are built from ``rosbags``' Kilted type store and serialised to CDR;
nothing here needs a running ROS graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from mhc_ros.control_logic import ARM_JOINTS

TYPESTORE = get_typestore(Stores.ROS2_KILTED)

WORLD_FRAME = "world"
CAMERA_FRAME = "scene_camera_optical_frame"

_ZERO_TIME = QosTime(sec=0, nsec=0)
_INFINITE = QosTime(sec=0x7FFFFFFF, nsec=0xFFFFFFFF)


def qos_profile(reliability: QosReliability, durability: QosDurability, depth: int) -> Qos:
    """A rosbag2 offered-QoS record: keep-last ``depth``, automatic liveliness, no deadline or lifespan."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=reliability,
        durability=durability,
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


SENSOR_QOS = qos_profile(QosReliability.BEST_EFFORT, QosDurability.VOLATILE, 1)
DEFAULT_QOS = qos_profile(QosReliability.RELIABLE, QosDurability.VOLATILE, 10)
LATCHED_QOS = qos_profile(QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL, 1)


@dataclass(frozen=True)
class TopicSpec:
    """One recorded topic: its ROS type and the QoS its publisher offers."""

    name: str
    msgtype: str
    qos: Qos


EPISODE_TOPICS = (
    TopicSpec("/clock", "rosgraph_msgs/msg/Clock", DEFAULT_QOS),
    TopicSpec("/camera/image_raw", "sensor_msgs/msg/Image", SENSOR_QOS),
    TopicSpec("/joint_states", "sensor_msgs/msg/JointState", DEFAULT_QOS),
    TopicSpec("/mhc/instruction", "std_msgs/msg/String", LATCHED_QOS),
    TopicSpec("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", DEFAULT_QOS),
    TopicSpec("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray", DEFAULT_QOS),
    TopicSpec("/sim/object_poses", "geometry_msgs/msg/PoseArray", DEFAULT_QOS),
    TopicSpec("/sim/ee_pose", "geometry_msgs/msg/PoseStamped", DEFAULT_QOS),
)


def _msg(name: str):
    return TYPESTORE.types[name]


def _sec_nanosec(t_s: float) -> dict[str, int]:
    sec, nanosec = divmod(round(t_s * 1e9), 1_000_000_000)
    return {"sec": sec, "nanosec": nanosec}


def _stamp(t_s: float):
    return _msg("builtin_interfaces/msg/Time")(**_sec_nanosec(t_s))


def _header(t_s: float, frame: str):
    return _msg("std_msgs/msg/Header")(stamp=_stamp(t_s), frame_id=frame)


def _pose(position: np.ndarray, orientation_xyzw: np.ndarray):
    point = _msg("geometry_msgs/msg/Point")(*(float(v) for v in position))
    quat = _msg("geometry_msgs/msg/Quaternion")(*(float(v) for v in orientation_xyzw))
    return _msg("geometry_msgs/msg/Pose")(position=point, orientation=quat)


def _duration(t_s: float):
    return _msg("builtin_interfaces/msg/Duration")(**_sec_nanosec(t_s))


def episode_messages(arrays: Mapping[str, np.ndarray], meta: Mapping) -> list[tuple[str, float, object]]:
    """Turn one episode (shard arrays + metadata, docs/contracts.md) into ``(topic, time_s, msg)``.

    Step t publishes the observation (clock, image, joint states, object and end-effector poses)
    at ``sim_time[t]`` and then the command computed from it at the same stamp, as a live controller
    answering within one control period would appear in ``ros2 bag record``.
    """
    control_period = 1.0 / float(meta["control_hz"])
    joint_names = list(meta["joint_names"])
    identity = np.array([0.0, 0.0, 0.0, 1.0])
    ee_orientations = arrays.get("ee_orientations")
    object_orientations = arrays.get("object_orientations")
    messages: list[tuple[str, float, object]] = [
        ("/mhc/instruction", float(arrays["sim_time"][0]), _msg("std_msgs/msg/String")(data=meta["instruction"]))
    ]
    for t, now in enumerate(np.asarray(arrays["sim_time"], dtype=np.float64)):
        now = float(now)
        messages.append(("/clock", now, _msg("rosgraph_msgs/msg/Clock")(clock=_stamp(now))))
        image = np.ascontiguousarray(arrays["images"][t])
        height, width = image.shape[:2]
        messages.append((
            "/camera/image_raw",
            now,
            _msg("sensor_msgs/msg/Image")(
                header=_header(now, CAMERA_FRAME), height=height, width=width, encoding="rgb8",
                is_bigendian=0, step=width * 3, data=image.reshape(-1),
            ),
        ))
        messages.append((
            "/joint_states",
            now,
            _msg("sensor_msgs/msg/JointState")(
                header=_header(now, ""), name=joint_names,
                position=np.asarray(arrays["joint_positions"][t], dtype=np.float64),
                velocity=np.asarray(arrays["joint_velocities"][t], dtype=np.float64),
                effort=np.zeros(0, dtype=np.float64),
            ),
        ))
        slots = arrays["object_positions"].shape[1]
        quats = [identity] * slots if object_orientations is None else object_orientations[t]
        poses = [_pose(position, quat) for position, quat in zip(arrays["object_positions"][t], quats, strict=True)]
        messages.append((
            "/sim/object_poses", now, _msg("geometry_msgs/msg/PoseArray")(header=_header(now, WORLD_FRAME), poses=poses)
        ))
        ee_quat = identity if ee_orientations is None else ee_orientations[t]
        messages.append((
            "/sim/ee_pose",
            now,
            _msg("geometry_msgs/msg/PoseStamped")(
                header=_header(now, WORLD_FRAME), pose=_pose(arrays["ee_positions"][t], ee_quat)
            ),
        ))
        action = np.asarray(arrays["actions"][t], dtype=np.float64)
        point = _msg("trajectory_msgs/msg/JointTrajectoryPoint")(
            positions=action[:7], velocities=np.zeros(0), accelerations=np.zeros(0), effort=np.zeros(0),
            time_from_start=_duration(control_period),
        )
        messages.append((
            "/arm_controller/joint_trajectory",
            now,
            _msg("trajectory_msgs/msg/JointTrajectory")(
                header=_header(now, ""), joint_names=list(ARM_JOINTS), points=[point]
            ),
        ))
        layout = _msg("std_msgs/msg/MultiArrayLayout")(dim=[], data_offset=0)
        messages.append((
            "/gripper_controller/commands",
            now,
            _msg("std_msgs/msg/Float64MultiArray")(layout=layout, data=action[7:8]),
        ))
    return messages


def write_episode_bag(path: Path, arrays: Mapping[str, np.ndarray], meta: Mapping) -> None:
    """Write one episode to a new rosbag2 directory ``path`` (MCAP, metadata version 9).

    Raises ``FileExistsError`` when ``path`` exists (rosbag2 never overwrites a bag).
    """
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"bag directory '{path}' already exists")
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        connections = {
            spec.name: writer.add_connection(
                spec.name, spec.msgtype, typestore=TYPESTORE, offered_qos_profiles=[spec.qos]
            )
            for spec in EPISODE_TOPICS
        }
        for topic, time_s, msg in episode_messages(arrays, meta):
            conn = connections[topic]
            writer.write(conn, round(time_s * 1e9), TYPESTORE.serialize_cdr(msg, conn.msgtype))


def bag_summary(path: Path) -> dict[str, dict]:
    """``{topic: {"type": msgtype, "count": n}}`` of a rosbag2 directory, read with ``rosbags``."""
    with Reader(Path(path)) as reader:
        return {
            conn.topic: {"type": conn.msgtype, "count": conn.msgcount}
            for conn in reader.connections
        }
