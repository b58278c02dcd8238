"""``mhc video``: predicted-motion markers → ``(motion, shown)``, frames matched to the latest markers of their
episode, drawn and written as a GIF; bad input is one line, exit 2. Synthetic bags, no ROS graph."""

import json

import numpy as np
import pytest
from geometry_msgs.msg import Point
from PIL import Image as PILImage
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from mhc_ros import bag_video
from mhc_ros.bags import TYPESTORE
from mhc_ros.conversions import image_msg
from mhc_ros.video import SCALE, SLOT_COLOURS

SIZE = 32
EE = 6  # the end-effector slot
PATH = [(0.4, -0.2, 0.05), (0.5, 0.0, 0.05), (0.6, 0.2, 0.05)]  # world frame: in view of the 32×32 scene camera


def line(slot, points, ns=None, action=Marker.ADD, kind=Marker.LINE_STRIP):
    return Marker(ns=ns or f"mhc_motion/slot{slot}", id=slot, type=kind, action=action,
                  points=[Point(x=x, y=y, z=z) for x, y, z in points])


def motion_msg(shown_slot=EE):
    markers = [line(slot, PATH) if slot == shown_slot else line(slot, [], action=Marker.DELETE) for slot in range(7)]
    return MarkerArray(markers=markers)


def test_markers_to_motion_and_shown():
    markers = [line(1, PATH[:2]), line(EE, PATH), line(2, [], action=Marker.DELETE),
               line(3, PATH, ns="other/namespace"), line(4, PATH, kind=Marker.POINTS), line(9, PATH)]
    motion, shown = bag_video.motion_from_markers(markers)
    assert motion.shape == (3, 7, 3)
    assert shown.tolist() == [False, True, False, False, False, False, True]
    np.testing.assert_allclose(motion[:, EE], PATH)
    np.testing.assert_allclose(motion[:2, 1], PATH[:2])
    assert np.isnan(motion[2, 1]).all() and np.isnan(motion[:, 0]).all()  # padding / hidden slots
    # DELETEALL hides what came before it; an empty array shows nothing.
    _, shown = bag_video.motion_from_markers([line(EE, PATH), Marker(ns="mhc_motion/", action=Marker.DELETEALL)])
    assert not shown.any()
    motion, shown = bag_video.motion_from_markers([])
    assert motion.shape == (0, 7, 3) and not shown.any()


def write_bag(path, episodes=((1, "reach", 3, 20), (2, "push", 4, 10)), marker_frame=5, images=True):
    """Episodes ``(id, task, seed, frames)`` at 20 Hz of one continuing clock; the predicted motion arrives with
    frame ``marker_frame`` of the first episode (received just after it). Receive time = stamp + 1 ms."""
    with Writer(path, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        topics = (("/camera/image_raw", "sensor_msgs/msg/Image"), ("/sim/episode_status", "std_msgs/msg/String"),
                  ("/mhc/predicted_motion", "visualization_msgs/msg/MarkerArray"))
        add = {topic: writer.add_connection(topic, msgtype, typestore=TYPESTORE)
               for topic, msgtype in topics[0 if images else 1:]}
        k = 0
        for episode_id, task, seed, count in episodes:
            start = k * 0.05
            for i in range(count):
                stamp = k * 0.05
                t_ns = round(stamp * 1e9) + 1_000_000
                if images:
                    pixels = np.full((SIZE, SIZE, 3), 100 + i, np.uint8)
                    writer.write(add["/camera/image_raw"], t_ns, serialize_message(image_msg(pixels, stamp)))
                status = {"episode_id": episode_id, "task": task, "seed": seed, "start_time": start, "step": i}
                status_msg = String(data=json.dumps(status))
                writer.write(add["/sim/episode_status"], t_ns + 1000, serialize_message(status_msg))
                if episode_id == 1 and i == marker_frame:
                    writer.write(add["/mhc/predicted_motion"], t_ns + 2000, serialize_message(motion_msg()))
                k += 1
    return path


def test_frames_get_the_latest_markers_of_their_episode(tmp_path):
    contents = bag_video.read_bag(write_bag(tmp_path / "bag"), fps=20.0)
    assert len(contents.frames) == 30 and contents.image_topic == "/camera/image_raw"
    assert [(e.episode_id, e.task, e.seed) for e in contents.episodes] == [(1, "reach", 3), (2, "push", 4)]
    composed = bag_video.compose(contents.frames, contents.motions, contents.episodes)
    with_motion = [i for i, (_, motion, _, _) in enumerate(composed) if motion is not None]
    # From the frame after the markers arrived to the end of episode 1; episode 2 has none of its own.
    assert with_motion == list(range(6, 20))
    _, motion, shown, caption = composed[10]
    assert shown.tolist() == [False] * 6 + [True] and motion.shape == (3, 7, 3)
    assert caption == "ep 1 reach seed=3 t=0.50s"
    assert composed[20][3] == "ep 2 push seed=4 t=0.00s" and composed[29][3] == "ep 2 push seed=4 t=0.45s"
    np.testing.assert_array_equal(composed[3][0], np.full((SIZE, SIZE, 3), 103, np.uint8))
    # --fps 10 keeps every other 20 Hz frame (by stamp).
    assert len(bag_video.read_bag(tmp_path / "bag", fps=10.0).frames) == 15


def _colour_pixels(frame, colour, tolerance=30):
    rgb = np.asarray(frame.convert("RGB"), dtype=int)
    return int((np.abs(rgb - np.array(colour)).max(axis=2) <= tolerance).sum())


def test_render_draws_the_predicted_path(tmp_path):
    result = bag_video.render_bag(write_bag(tmp_path / "bag"), tmp_path / "out.gif", fps=20.0)
    assert result["frames"] == 30 and result["motion_frames"] == 14 and result["episodes"] == 2
    gif = PILImage.open(tmp_path / "out.gif")
    assert gif.n_frames == 30 and gif.size == (SIZE * SCALE, SIZE * SCALE)
    assert gif.info["duration"] == 50
    gif.seek(10)
    drawn = _colour_pixels(gif, SLOT_COLOURS[EE])
    gif.seek(2)
    before = _colour_pixels(gif, SLOT_COLOURS[EE])
    assert drawn > 40 and before == 0, (drawn, before)
    # At most --max-frames frames, spread over the whole bag (both episodes).
    thinned = bag_video.render_bag(tmp_path / "bag", tmp_path / "thin.gif", fps=20.0, max_frames=7)
    assert thinned["frames"] == 7 and PILImage.open(tmp_path / "thin.gif").n_frames == 7


def test_bag_without_predicted_motion_gives_plain_frames(tmp_path):
    result = bag_video.render_bag(write_bag(tmp_path / "bag", marker_frame=-1), tmp_path / "plain.gif")
    assert result["frames"] == 15 and result["motion_frames"] == 0


def _mhc(capsys, argv):
    from mhc_ros.cli import main

    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    return code, capsys.readouterr()


@pytest.mark.parametrize("case, message", [
    ("missing", "bag '{bag}' not found"),
    ("no_images", "bag '{bag}' has no camera image topic"),
    ("not_gif", "must name a .gif file"),
    ("fps", "--fps 0.0 must be a number in (0, 50]"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, case, message):
    bag, out = tmp_path / "bag", tmp_path / "out.gif"
    if case == "no_images":
        write_bag(bag, images=False)
    elif case != "missing":
        write_bag(bag)
    argv = ["video", "--bag", str(bag), "--out", str(out.with_suffix(".png") if case == "not_gif" else out)]
    code, captured = _mhc(capsys, [*argv, "--fps", "0"] if case == "fps" else argv)
    err = captured.err.strip()
    assert code == 2 and message.format(bag=bag) in err and len(err.splitlines()) == 1, err
    assert not out.exists()


def test_cli_writes_the_gif(tmp_path, capsys):
    code, captured = _mhc(capsys, ["video", "--bag", str(write_bag(tmp_path / "bag")), "--out",
                                   str(tmp_path / "sub" / "v.gif"), "--max-frames", "12"])
    assert code == 0, captured.err
    assert "12 frames (" in captured.out and PILImage.open(tmp_path / "sub" / "v.gif").n_frames == 12
