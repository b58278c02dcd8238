"""Reading rosbag2 episodes back: the controller's inputs and commands, for ``mhc replay`` and training.

:func:`read_streams` turns one rosbag2 directory (ours, or any robot's ``ros2 bag record``; MCAP or
sqlite3, read with ``rosbags``) into time-ordered numpy streams of the controller's topics, which a
``--topic-map`` can rename. :func:`episode_from_streams` turns them into a training shard
(docs/contracts.md) — ``mhc collect --from-bags`` (see docs/bags.md). Every failure is a
:class:`BagError` whose one line names the bag, topic or type.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mhc_ros.bags import TYPESTORE
from mhc_ros.control_logic import ARM_JOINTS, JOINT_NAMES

# stream key -> (default topic, expected message type, required)
STREAMS: dict[str, tuple[str, str, bool]] = {
    "image": ("/camera/image_raw", "sensor_msgs/msg/Image", True),
    "joints": ("/joint_states", "sensor_msgs/msg/JointState", True),
    "instruction": ("/mhc/instruction", "std_msgs/msg/String", False),
    "trajectory": ("/arm_controller/joint_trajectory", "trajectory_msgs/msg/JointTrajectory", True),
    "gripper": ("/gripper_controller/commands", "std_msgs/msg/Float64MultiArray", False),
    "ee_pose": ("/sim/ee_pose", "geometry_msgs/msg/PoseStamped", False),
    "object_poses": ("/sim/object_poses", "geometry_msgs/msg/PoseArray", False),
}


class BagError(ValueError):
    """A bag that cannot be used; the message is one line naming the bag, topic or type."""


def parse_topic_map(text: str | None) -> dict[str, str]:
    """``image=/my/cam,joints=/my/joint_states`` → ``{"image": "/my/cam", ...}``; unknown keys raise ``BagError``."""
    mapping: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        key, sep, topic = item.partition("=")
        if not sep or key not in STREAMS or not topic.startswith("/"):
            raise BagError(f"topic map entry '{item}' invalid (expected KEY=/topic, KEY one of {', '.join(STREAMS)})")
        mapping[key] = topic
    return mapping


@dataclass
class Streams:
    """Time-ordered ``(t_ns, value)`` lists of one bag (``t_ns``: the bag's receive time, ns).

    image: RGB ``(H, W, 3) uint8``; joints: ``(positions (9,), velocities (9,))`` in JOINT_NAMES
    order; instruction: str; trajectory: arm targets ``(7,)`` rad (first point, ARM_JOINTS order);
    gripper: width (m); ee_pose: ``(3,)`` m; object_poses: ``(N, 3)`` m.
    """

    path: Path
    topics: dict[str, str]
    image: list[tuple[int, np.ndarray]] = field(default_factory=list)
    joints: list[tuple[int, tuple[np.ndarray, np.ndarray]]] = field(default_factory=list)
    instruction: list[tuple[int, str]] = field(default_factory=list)
    trajectory: list[tuple[int, np.ndarray]] = field(default_factory=list)
    gripper: list[tuple[int, float]] = field(default_factory=list)
    ee_pose: list[tuple[int, np.ndarray]] = field(default_factory=list)
    object_poses: list[tuple[int, np.ndarray]] = field(default_factory=list)


def first_line(err: BaseException) -> str:
    """An exception as one line: its message's first line, else its type's name."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def require_bag_dir(path: str | Path) -> Path:
    """``path`` as a rosbag2 directory; :class:`BagError` (one line) when it has no ``metadata.yaml``."""
    path = Path(path)
    if not (path / "metadata.yaml").is_file():
        raise BagError(f"bag '{path}' not found (expected a rosbag2 directory with metadata.yaml)")
    return path


def _decode(key: str, msg, topic: str):
    from mhc_ros.conversions import image_from_buffer, joint_arrays

    if key == "image":
        return image_from_buffer(msg.data, msg.height, msg.width, msg.step, msg.encoding)
    if key == "joints":
        return joint_arrays(msg.name, msg.position, msg.velocity, JOINT_NAMES)
    if key == "instruction":
        return str(msg.data)
    if key == "trajectory":
        if not msg.points:
            raise ValueError(f"JointTrajectory on '{topic}' has no points")
        index = {name: i for i, name in enumerate(msg.joint_names)}
        missing = [name for name in ARM_JOINTS if name not in index]
        if missing:
            raise ValueError(f"JointTrajectory on '{topic}' lacks joint '{missing[0]}'")
        positions = np.asarray(msg.points[0].positions, dtype=float)
        return positions[[index[name] for name in ARM_JOINTS]]
    if key == "gripper":
        if len(msg.data) < 1:
            raise ValueError(f"Float64MultiArray on '{topic}' is empty (expected [width])")
        return float(msg.data[0])
    if key == "ee_pose":
        p = msg.pose.position
        return np.array([p.x, p.y, p.z])
    return np.array([[pose.position.x, pose.position.y, pose.position.z] for pose in msg.poses]).reshape(-1, 3)


def read_streams(path: str | Path, topic_map: Mapping[str, str] | None = None,
                 required: tuple[str, ...] | None = None) -> Streams:
    """Decode the controller topics of the rosbag2 directory ``path`` (see :class:`Streams`).

    ``topic_map`` renames stream topics; ``required``: stream keys that must be present (default: those
    marked required in :data:`STREAMS`). Raises :class:`BagError`: missing/unreadable bag, missing topic,
    unexpected message type, undecodable message.
    """
    from rosbags.rosbag2 import Reader

    path = require_bag_dir(path)
    topics = {key: (topic_map or {}).get(key, default) for key, (default, _, _) in STREAMS.items()}
    required = required if required is not None else tuple(k for k, (_, _, req) in STREAMS.items() if req)
    streams = Streams(path=path, topics=topics)
    try:
        with Reader(path) as reader:
            by_topic = {conn.topic: conn for conn in reader.connections}
            wanted = []
            for key, topic in topics.items():
                expected_type = STREAMS[key][1]
                conn = by_topic.get(topic)
                if conn is None:
                    if key in required:
                        raise BagError(f"bag '{path}' has no topic '{topic}' ({key}, {expected_type})")
                    continue
                if conn.msgtype != expected_type:
                    raise BagError(f"topic '{topic}' in bag '{path}' has type '{conn.msgtype}' "
                                   f"(expected '{expected_type}')")
                wanted.append(conn)
            key_of = {topic: key for key, topic in topics.items()}
            for conn, t_ns, raw in reader.messages(connections=wanted):
                key = key_of[conn.topic]
                try:
                    value = _decode(key, TYPESTORE.deserialize_cdr(raw, conn.msgtype), conn.topic)
                except Exception as err:
                    raise BagError(f"message on '{conn.topic}' at {t_ns * 1e-9:.3f} s in bag '{path}' "
                                   f"cannot be decoded: {first_line(err)}") from None
                getattr(streams, key).append((int(t_ns), value))
    except BagError:
        raise
    except Exception as err:  # rosbags' reader errors: corrupt or truncated storage, bad metadata
        raise BagError(f"bag '{path}' unreadable: {first_line(err)}") from None
    for key in required:
        if not getattr(streams, key):
            raise BagError(f"bag '{path}' has no messages on '{topics[key]}' ({key})")
    for key in STREAMS:
        getattr(streams, key).sort(key=lambda item: item[0])
    return streams


def find_bags(root: str | Path) -> list[Path]:
    """``root`` itself when it is a rosbag2 directory, else the rosbag2 directories below it (sorted)."""
    root = Path(root)
    if (root / "metadata.yaml").is_file():
        return [root]
    if not root.is_dir():
        raise BagError(f"bag folder '{root}' not found")
    bags = sorted(p.parent for p in root.rglob("metadata.yaml"))
    if not bags:
        raise BagError(f"no rosbag2 directory (metadata.yaml) under '{root}'")
    return bags


def latest_before(stream: list[tuple[int, object]], times_ns: np.ndarray) -> Iterator[int]:
    """For each time, the index of the last item of ``stream`` at or before it (-1 when none)."""
    stamps = np.fromiter((t for t, _ in stream), dtype=np.int64, count=len(stream))
    yield from (int(i) - 1 for i in np.searchsorted(stamps, times_ns, side="right"))


def episode_from_streams(streams: Streams, object_slots: int = 6) -> tuple[dict[str, np.ndarray], dict]:
    """A training shard (docs/contracts.md) from a bag's streams: one step per recorded arm command.

    Step t's observation is the latest image and joint state at or before command t; its action is
    that command's 7 arm targets plus the latest gripper command (when no gripper topic: the measured
    finger width). Unknown quantities: object slots absent (``object_present`` False, positions 0),
    end effector 0 when no ``ee_pose`` topic, plan empty and phase 0.
    """
    ticks = np.array([t for t, _ in streams.trajectory], dtype=np.int64)
    image_i = np.array(list(latest_before(streams.image, ticks)))
    joint_i = np.array(list(latest_before(streams.joints, ticks)))
    usable = (image_i >= 0) & (joint_i >= 0)
    if not usable.any():
        raise BagError(f"bag '{streams.path}' has no arm command after both an image and a joint state")
    ticks, image_i, joint_i = ticks[usable], image_i[usable], joint_i[usable]
    commands = [a for a, ok in zip(streams.trajectory, usable, strict=True) if ok]
    positions = np.stack([streams.joints[i][1][0] for i in joint_i])
    velocities = np.stack([streams.joints[i][1][1] for i in joint_i])
    if streams.gripper:
        gripper_i = np.array(list(latest_before(streams.gripper, ticks)))
        widths = np.array([streams.gripper[i][1] if i >= 0 else positions[k, 7:9].sum()
                           for k, i in enumerate(gripper_i)])
    else:
        widths = positions[:, 7:9].sum(axis=1)
    steps = len(ticks)
    if streams.ee_pose:
        ee = np.stack([streams.ee_pose[max(i, 0)][1] for i in latest_before(streams.ee_pose, ticks)])
    else:
        ee = np.zeros((steps, 3))
    images = np.stack([streams.image[i][1] for i in image_i])
    arrays = {
        "images": images.astype(np.uint8),
        "joint_positions": positions.astype(np.float32),
        "joint_velocities": velocities.astype(np.float32),
        "actions": np.column_stack([np.stack([c for _, c in commands]), widths]).astype(np.float32),
        "ee_positions": ee.astype(np.float32),
        "object_positions": np.zeros((steps, object_slots, 3), np.float32),
        "object_velocities": np.zeros((steps, object_slots, 3), np.float32),
        "object_present": np.zeros(object_slots, bool),
        "phase": np.zeros(steps, np.int16),
        "sim_time": (ticks - ticks[0]) * 1e-9,
    }
    period = float(np.median(np.diff(ticks))) * 1e-9 if steps > 1 else 0.05
    height, width = images.shape[1:3]
    meta = {
        "instruction": streams.instruction[-1][1] if streams.instruction else "",
        "plan": [], "success": True, "steps": steps, "joint_names": list(JOINT_NAMES),
        "control_hz": 1.0 / period if period > 0 else 20.0,
        "camera": {"width": int(width), "height": int(height)},
        "source_bag": str(streams.path), "topics": streams.topics,
    }
    return arrays, meta


def import_bags(source: str | Path, out: str | Path, topic_map: Mapping[str, str] | None = None,
                instruction: str | None = None, object_slots: list[str] | None = None) -> list[dict]:
    """Convert every rosbag2 directory under ``source`` into ``out/shards/bag_<i:06d>.{npz,json}``.

    ``instruction`` replaces (or supplies) the bag's instruction. Returns the manifest entries.
    Raises :class:`BagError` for a bag that cannot be used, or a shard that already exists.
    """
    from mhc_ros.collect import episode_name

    if object_slots is None:
        from mhc_sim import OBJECT_SLOTS

        object_slots = list(OBJECT_SLOTS)
    bags = find_bags(source)
    shards = Path(out) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    names = [episode_name("bag", index) for index in range(len(bags))]
    clash = next((n for n in names if (shards / f"{n}.npz").exists()), None)
    if clash:
        raise BagError(f"shard '{shards / clash}.npz' already exists (choose another --out)")
    converted = []  # every bag is read before anything is written: a bad bag leaves no partial output
    for index, bag in enumerate(bags):
        arrays, meta = episode_from_streams(read_streams(bag, topic_map), len(object_slots))
        if instruction is not None:
            meta["instruction"] = instruction
        if not meta["instruction"].strip():
            topic = (topic_map or {}).get("instruction", STREAMS["instruction"][0])
            raise BagError(f"bag '{bag}' has no instruction on '{topic}' (pass --instruction TEXT)")
        meta.update({"task": "bag", "seed": index, "template_index": 0, "object_slots": list(object_slots)})
        converted.append((bag, arrays, meta))
    entries = []
    for (bag, arrays, meta), name in zip(converted, names, strict=True):
        np.savez_compressed(shards / f"{name}.npz", **arrays)
        (shards / f"{name}.json").write_text(json.dumps(meta, indent=1))
        entries.append({"name": name, "task": "bag", "seed": meta["seed"], "success": True, "steps": meta["steps"],
                        "written": True, "source_bag": str(bag)})
    return entries
