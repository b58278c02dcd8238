"""``mhc video``: a bag's camera frames with the mHC controller's predicted motion drawn on them, as a GIF.

Reads a rosbag2 folder (``mhc bringup sim --bag``, ``mhc record`` or any ``ros2 bag record``) with ``rosbags``:
the camera images (rgb8/bgr8/mono8, decoded like the controller does), ``/mhc/predicted_motion`` and
``/sim/episode_status``. Each frame shows the latest predicted-motion ``MarkerArray`` received at or before it
(bag receive time) within the frame's episode: a ``LINE_STRIP`` marker in namespace ``mhc_motion/NAME`` with
id = slot index (6 object slots + end effector) and points in the world frame is that slot's path; a slot with
a ``DELETE`` marker, or none, is hidden. Paths are projected with the simulation's scene camera
(``mhc_sim.project_scene_points``), so they line up with simulated frames only. Frames are taken at most
``fps`` per second of image stamp time (simulation time) and played at ``fps``: the GIF runs in real time.
A bag without predicted motion (expert policy) gives the plain frames. Drawing and GIF writing:
:mod:`mhc_ros.video`.
"""

from __future__ import annotations

import argparse
import bisect
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhc_ros import control_logic as cl
from mhc_ros.bag_import import BagError, first_line, require_bag_dir
from mhc_ros.cli_args import UsageError, positive_int
from mhc_ros.system import CONTROLLER_TOPICS

IMAGE_TYPE = "sensor_msgs/msg/Image"
MOTION_TOPIC = "/mhc/predicted_motion"
MOTION_TYPE = "visualization_msgs/msg/MarkerArray"
STATUS_TOPIC = "/sim/episode_status"
MOTION_NAMESPACE = cl.MOTION_MARKER_NAMESPACE
MOTION_SLOTS = len(cl.MOTION_SLOTS)  # the 6 object slots (mhc_sim.OBJECT_SLOTS order) + the end effector
# visualization_msgs/Marker constants
LINE_STRIP, ADD, DELETE, DELETEALL = 4, 0, 2, 3
DEFAULT_FPS = 10.0
MAX_FPS = 50.0  # GIF frame delays are in 1/100 s and viewers slow down anything under 2/100 s
DEFAULT_MAX_FRAMES = 600
STAMP_SLACK_NS = 1_000_000  # 1 ms: a frame stamped this close to an episode's start_time belongs to it


@dataclass
class Frame:
    """One camera image of the bag: receive time (bag, ns), header stamp (s) and RGB pixels."""

    bag_ns: int
    stamp_s: float
    image: np.ndarray


@dataclass
class Episode:
    """An episode seen on ``/sim/episode_status``: its first status's receive time and its ``start_time`` (s)."""

    episode_id: int
    task: str
    seed: int
    start_time: float
    first_bag_ns: int


def motion_from_markers(markers: Iterable[Any]) -> tuple[np.ndarray, np.ndarray]:
    """``(motion (T, 7, 3) m, shown (7,) bool)`` from the markers of one ``/mhc/predicted_motion`` MarkerArray.

    A ``LINE_STRIP`` ADD marker in namespace ``mhc_motion/*`` with id = slot gives that slot's path; ``DELETE``
    hides its slot, ``DELETEALL`` every slot; other namespaces, types and ids are ignored. Slots without a marker
    are hidden. ``T`` is the longest path (0 when none); shorter paths are padded with NaN (not drawn).
    Works on rclpy and ``rosbags`` messages alike (``ns``, ``id``, ``type``, ``action``, ``points[].x/y/z``).
    """
    paths: dict[int, np.ndarray] = {}
    for marker in markers:
        action = int(marker.action)
        if not str(marker.ns).startswith(MOTION_NAMESPACE):
            continue
        if action == DELETEALL:
            paths.clear()
            continue
        slot = int(marker.id)
        if not 0 <= slot < MOTION_SLOTS:
            continue
        if action == DELETE:
            paths.pop(slot, None)
        elif action == ADD and int(marker.type) == LINE_STRIP:
            points = np.array([[p.x, p.y, p.z] for p in marker.points], dtype=float).reshape(-1, 3)
            if len(points):
                paths[slot] = points
            else:
                paths.pop(slot, None)
    horizon = max((len(points) for points in paths.values()), default=0)
    motion = np.full((horizon, MOTION_SLOTS, 3), np.nan)
    shown = np.zeros(MOTION_SLOTS, dtype=bool)
    for slot, points in paths.items():
        motion[: len(points), slot] = points
        shown[slot] = True
    return motion, shown


def _image_topic(path: Path, types: dict[str, str], requested: str | None) -> str:
    if requested is not None:
        if requested not in types:
            raise BagError(f"bag '{path}' has no topic '{requested}'")
        if types[requested] != IMAGE_TYPE:
            raise BagError(f"topic '{requested}' of bag '{path}' has type '{types[requested]}', not {IMAGE_TYPE}")
        return requested
    default = CONTROLLER_TOPICS["image_topic"]
    if types.get(default) == IMAGE_TYPE:
        return default
    images = sorted(topic for topic, msgtype in types.items() if msgtype == IMAGE_TYPE)
    if not images:
        raise BagError(f"bag '{path}' has no camera image topic (no {IMAGE_TYPE} connection)")
    if len(images) > 1:
        raise BagError(f"bag '{path}' has several image topics ({', '.join(images)}): choose one with --image-topic")
    return images[0]


@dataclass
class BagContents:
    """What :func:`read_bag` found: frames, predicted motions ``(bag_ns, motion, shown)``, episodes, image topic."""

    frames: list[Frame]
    motions: list[tuple[int, np.ndarray, np.ndarray]]
    episodes: list[Episode]
    image_topic: str


def read_bag(path: str | Path, fps: float = DEFAULT_FPS, image_topic: str | None = None) -> BagContents:
    """Frames (at most ``fps`` per second of stamp time), predicted motions and episodes of a bag.

    Raises :class:`~mhc_ros.bag_import.BagError` (one line): missing or unreadable bag, no image topic, no image.
    """
    from rosbags.rosbag2 import Reader

    from mhc_ros.bags import TYPESTORE
    from mhc_ros.conversions import image_from_buffer

    path = require_bag_dir(path)
    interval_ns = round(1e9 / fps)
    frames: list[Frame] = []
    motions: list[tuple[int, np.ndarray, np.ndarray]] = []
    episodes: dict[int, Episode] = {}
    last_kept_ns: int | None = None
    try:
        with Reader(path) as reader:
            types = {conn.topic: conn.msgtype for conn in reader.connections}
            topic = _image_topic(path, types, image_topic)
            wanted = [conn for conn in reader.connections
                      if conn.topic == topic or (conn.topic == MOTION_TOPIC and conn.msgtype == MOTION_TYPE)
                      or (conn.topic == STATUS_TOPIC and conn.msgtype == "std_msgs/msg/String")]
            for conn, bag_ns, raw in reader.messages(connections=wanted):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                if conn.topic == MOTION_TOPIC:
                    motions.append((bag_ns, *motion_from_markers(msg.markers)))
                elif conn.topic == STATUS_TOPIC:
                    _add_episode(episodes, msg.data, bag_ns)
                else:
                    stamp_ns = int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)
                    if last_kept_ns is not None and last_kept_ns <= stamp_ns < last_kept_ns + interval_ns - 1000:
                        continue
                    try:
                        image = image_from_buffer(msg.data, msg.height, msg.width, msg.step, msg.encoding)
                    except ValueError as err:
                        raise BagError(f"bag '{path}': image on '{topic}' at {bag_ns} ns: {err}") from None
                    frames.append(Frame(bag_ns, stamp_ns * 1e-9, image))
                    last_kept_ns = stamp_ns
    except BagError:
        raise
    except Exception as err:  # rosbags: truncated / corrupt storage, unknown message definitions
        raise BagError(f"bag '{path}' unreadable: {first_line(err)}") from None
    if not frames:
        raise BagError(f"bag '{path}' has no image on '{topic}'")
    return BagContents(frames, motions, sorted(episodes.values(), key=lambda e: e.start_time), topic)


def _add_episode(episodes: dict[int, Episode], text: str, bag_ns: int) -> None:
    try:
        status = json.loads(text)
        episode_id = int(status["episode_id"])
        if episode_id not in episodes:
            episodes[episode_id] = Episode(episode_id, str(status["task"]), int(status["seed"]),
                                           float(status["start_time"]), bag_ns)
    except (ValueError, KeyError, TypeError):
        return  # not the bridge's status JSON: no captions from it


def compose(frames: list[Frame], motions: list[tuple[int, np.ndarray, np.ndarray]], episodes: list[Episode]
            ) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]]:
    """``(image, motion or None, shown or None, caption)`` per frame (see the module docstring)."""
    motion_times = [bag_ns for bag_ns, _, _ in motions]
    starts = [episode.start_time for episode in episodes]
    first_stamp = frames[0].stamp_s if frames else 0.0
    out = []
    for frame in frames:
        k = bisect.bisect_right(starts, frame.stamp_s + STAMP_SLACK_NS * 1e-9) - 1
        episode = episodes[k] if k >= 0 else None
        if episode is None:
            caption, since_ns = f"t={frame.stamp_s - first_stamp:.2f}s", -math.inf
        else:
            caption = (f"ep {episode.episode_id} {episode.task} seed={episode.seed} "
                       f"t={max(frame.stamp_s - episode.start_time, 0.0):.2f}s")
            since_ns = episode.first_bag_ns  # markers from before the episode began belong to the last one
        j = bisect.bisect_right(motion_times, frame.bag_ns) - 1
        motion = shown = None
        if j >= 0 and motion_times[j] >= since_ns and motions[j][2].any():
            motion, shown = motions[j][1], motions[j][2]
        out.append((frame.image, motion, shown, caption))
    return out


def render_bag(bag: str | Path, out: str | Path, fps: float = DEFAULT_FPS, max_frames: int = DEFAULT_MAX_FRAMES,
               image_topic: str | None = None) -> dict[str, Any]:
    """Write the GIF ``out`` of ``bag``; returns ``{"path", "frames", "motion_frames", "episodes", "image_topic"}``.

    More than ``max_frames`` frames are thinned evenly over the whole bag (every episode stays in; the GIF then
    plays faster than real time). Raises :class:`~mhc_ros.bag_import.BagError` for a bag that cannot be used.
    """
    import mhc_sim

    from mhc_ros.video import draw_frame, write_gif

    contents = read_bag(bag, fps, image_topic)
    frames = contents.frames
    if len(frames) > max_frames:
        keep = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
        frames = [frames[i] for i in keep]
    pictures, motion_frames = [], 0
    for image, motion, shown, caption in compose(frames, contents.motions, contents.episodes):
        height, width = image.shape[:2]

        def project(points: np.ndarray, width: int = width, height: int = height) -> np.ndarray:
            return mhc_sim.project_scene_points(points, width, height)

        pictures.append(draw_frame(image, project, motion, shown, caption))
        motion_frames += motion is not None
    path = write_gif(pictures, out, fps)
    return {"path": path, "frames": len(pictures), "motion_frames": motion_frames,
            "episodes": len(contents.episodes), "image_topic": contents.image_topic}


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``mhc video``."""
    parser.add_argument("--bag", type=Path, required=True, help="rosbag2 folder to read")
    parser.add_argument("--out", type=Path, required=True, help="GIF to write (.gif)")
    parser.add_argument("--fps", type=float, default=DEFAULT_FPS,
                        help=f"frames per second of simulation time, and the GIF's playback rate "
                             f"(default {DEFAULT_FPS:g}, at most {MAX_FPS:g})")
    parser.add_argument("--max-frames", type=positive_int, default=DEFAULT_MAX_FRAMES,
                        help=f"at most this many frames, thinned evenly over the bag (default {DEFAULT_MAX_FRAMES})")
    parser.add_argument("--image-topic", default=None,
                        help="camera topic (default /camera/image_raw, else the bag's only Image topic)")


def run(args: argparse.Namespace) -> int:
    """``mhc video``: 0 when the GIF is written, 2 on bad input (one line)."""
    if not (0.0 < args.fps <= MAX_FPS):
        raise UsageError(f"--fps {args.fps} must be a number in (0, {MAX_FPS:g}]")
    if args.out.suffix.lower() != ".gif":
        raise UsageError(f"--out '{args.out}' must name a .gif file")
    try:
        result = render_bag(args.bag, args.out, args.fps, args.max_frames, args.image_topic)
    except BagError as err:
        raise UsageError(str(err)) from None
    print(f"wrote {result['path']}: {result['frames']} frames ({result['motion_frames']} with predicted motion, "
          f"{result['episodes']} episodes) from {args.bag}")
    return 0
