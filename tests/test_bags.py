"""Episode bags: written with rosbags as rosbag2 v9 / MCAP, read back with topics, types and counts."""

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader

from mhc_ros.bags import EPISODE_TOPICS, TYPESTORE, bag_summary, write_episode_bag

JOINTS = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_finger_joint1", "panda_finger_joint2"]


def _episode(steps: int = 7):
    rng = np.random.default_rng(0)
    arrays = {
        "images": rng.integers(0, 255, (steps, 12, 16, 3), dtype=np.uint8),
        "joint_positions": rng.normal(size=(steps, 9)).astype(np.float32),
        "joint_velocities": rng.normal(size=(steps, 9)).astype(np.float32),
        "actions": rng.normal(size=(steps, 8)).astype(np.float32),
        "ee_positions": rng.normal(size=(steps, 3)).astype(np.float32),
        "object_positions": rng.normal(size=(steps, 6, 3)).astype(np.float32),
        "sim_time": np.arange(steps) * 0.05,
    }
    meta = {"control_hz": 20.0, "joint_names": JOINTS, "instruction": "touch the red cube"}
    return arrays, meta


def test_bag_round_trip(tmp_path):
    arrays, meta = _episode()
    write_episode_bag(tmp_path / "ep", arrays, meta)
    summary = bag_summary(tmp_path / "ep")
    assert {t.name: t.msgtype for t in EPISODE_TOPICS} == {k: v["type"] for k, v in summary.items()}
    assert summary["/mhc/instruction"]["count"] == 1
    assert all(v["count"] == 7 for k, v in summary.items() if k != "/mhc/instruction")

    metadata = yaml.safe_load((tmp_path / "ep" / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert metadata["version"] == 9 and metadata["storage_identifier"] == "mcap"

    with Reader(tmp_path / "ep") as reader:
        decoded = {}
        for conn, stamp, raw in reader.messages():
            decoded.setdefault(conn.topic, []).append((stamp, TYPESTORE.deserialize_cdr(raw, conn.msgtype)))
    stamp, image = decoded["/camera/image_raw"][3]
    assert stamp == 150_000_000
    assert (image.height, image.width, image.encoding, image.step) == (12, 16, "rgb8", 48)
    np.testing.assert_array_equal(np.asarray(image.data).reshape(12, 16, 3), arrays["images"][3])
    _, joints = decoded["/joint_states"][2]
    assert list(joints.name) == JOINTS
    np.testing.assert_allclose(joints.position, arrays["joint_positions"][2], rtol=1e-6)
    _, trajectory = decoded["/arm_controller/joint_trajectory"][4]
    np.testing.assert_allclose(trajectory.points[0].positions, arrays["actions"][4, :7], rtol=1e-6)
    _, gripper = decoded["/gripper_controller/commands"][4]
    np.testing.assert_allclose(gripper.data, arrays["actions"][4, 7:], rtol=1e-6)
    assert decoded["/mhc/instruction"][0][1].data == "touch the red cube"


def test_existing_bag_is_never_overwritten(tmp_path):
    arrays, meta = _episode()
    (tmp_path / "ep").mkdir()
    with pytest.raises(FileExistsError, match="ep"):
        write_episode_bag(tmp_path / "ep", arrays, meta)
