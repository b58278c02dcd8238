"""``mhc replay``: the golden bags replay within tolerance; a perturbed weight or smoothing parameter fails;
bad bags exit 2 with one line and never touch the golden files; the bags read with Kilted and Jazzy stores."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.interfaces import MessageDefinitionFormat
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

from mhc_ros.bag_import import read_streams
from mhc_ros.cli import main
from mhc_ros.replay import expected_path, recorded_commands

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHECKPOINT = ARTIFACTS / "tiny_policy.safetensors"
GOLDEN = sorted(p for p in (ARTIFACTS / "golden").iterdir() if p.is_dir())


def test_golden_artifacts_exist_and_are_small():
    assert len(GOLDEN) >= 2 and all(expected_path(bag).is_file() for bag in GOLDEN)
    total = sum(p.stat().st_size for p in ARTIFACTS.rglob("*") if p.is_file() and p.suffix != ".py")
    assert total <= 2_000_000, total


@pytest.mark.parametrize("bag", GOLDEN, ids=lambda p: p.name)
def test_golden_bag_replays_within_tolerance(bag, tmp_path, capsys):
    report_file = tmp_path / "report.json"
    assert main(["replay", str(bag), "--checkpoint", str(CHECKPOINT), "--report", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "PASSED" in out and "panda_joint7" in out and "first divergence" in out
    (report,) = json.loads(report_file.read_text())
    assert report["passed"] and report["ticks"] == 40
    assert max(row["max_abs"] for row in report["commands"].values()) <= 1e-6


def test_golden_file_matches_the_commands_recorded_in_the_bag():
    """The bag was recorded from the controller core closed-loop: replay reproduces what it commanded."""
    for bag in GOLDEN:
        recorded = recorded_commands(read_streams(bag))
        golden = json.loads(expected_path(bag).read_text())["commands"]
        np.testing.assert_allclose(recorded.arm, golden["arm"], atol=1e-6)
        np.testing.assert_allclose(recorded.gripper, np.array(golden["gripper"], dtype=float), atol=1e-6)


def _perturbed_checkpoint(tmp_path: Path) -> Path:
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(CHECKPOINT), framework="pt") as f:
        metadata = f.metadata()
        tensors = {key: f.get_tensor(key) for key in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    import torch

    # Random, not constant: a constant offset on every weight of a row cancels after the layer norm.
    generator = torch.Generator().manual_seed(0)
    weight = tensors["heads.action.weight"]
    tensors["heads.action.weight"] = weight + 0.02 * torch.randn(weight.shape, generator=generator)
    out = tmp_path / "perturbed.safetensors"
    save_file(tensors, str(out), metadata=metadata)
    shutil.copyfile(CHECKPOINT.with_suffix(".json"), out.with_suffix(".json"))
    return out


def test_changed_weight_is_a_regression(tmp_path, capsys):
    assert main(["replay", str(GOLDEN[0]), "--checkpoint", str(_perturbed_checkpoint(tmp_path))]) == 1
    assert "REGRESSION" in capsys.readouterr().out


@pytest.mark.parametrize("param", ["ensemble_decay=0.5", "smoothing=\"crossfade\"", "max_joint_velocity=1.0"])
def test_changed_smoothing_or_limit_is_a_regression(param, capsys):
    assert main(["replay", str(GOLDEN[0]), "--checkpoint", str(CHECKPOINT), "--param", param]) == 1
    assert "REGRESSION" in capsys.readouterr().out


def test_update_rewrites_the_golden_file(tmp_path):
    bag = tmp_path / GOLDEN[0].name
    shutil.copytree(GOLDEN[0], bag)
    assert main(["replay", str(bag), "--checkpoint", str(CHECKPOINT), "--param", "ensemble_decay=0.5"]) == 1
    assert main(["replay", str(bag), "--checkpoint", str(CHECKPOINT), "--param", "ensemble_decay=0.5",
                 "--update"]) == 0
    golden = json.loads(expected_path(bag).read_text())
    assert golden["controller"]["ensemble_decay"] == 0.5 and len(golden["commands"]["arm"]) == 40
    assert main(["replay", str(bag), "--checkpoint", str(CHECKPOINT)]) == 0  # parameters come with the golden file


def _bad_bags(tmp_path: Path) -> dict[str, tuple[list[str], str]]:
    truncated = tmp_path / "truncated"
    shutil.copytree(GOLDEN[0], truncated)
    mcap = next(truncated.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])
    corrupt = tmp_path / "corrupt"
    shutil.copytree(GOLDEN[0], corrupt)
    mcap = next(corrupt.glob("*.mcap"))
    data = bytearray(mcap.read_bytes())
    data[:64] = b"\0" * 64
    mcap.write_bytes(bytes(data))
    return {
        "missing": ([str(tmp_path / "nope")], "nope"),
        "truncated": ([str(truncated)], "truncated"),
        "corrupt": ([str(corrupt)], "corrupt"),
        "missing_topic": ([str(GOLDEN[0]), "--topic-map", "image=/my/cam"], "/my/cam"),
        "wrong_type": ([str(GOLDEN[0]), "--topic-map", "image=/joint_states"], "sensor_msgs/msg/JointState"),
    }


@pytest.mark.parametrize("case", ["missing", "truncated", "corrupt", "missing_topic", "wrong_type"])
def test_bad_bag_is_one_line_exit_2_and_writes_nothing(case, tmp_path):
    argv, named = _bad_bags(tmp_path)[case]
    before = {p: p.read_bytes() for p in (ARTIFACTS / "golden").glob("*.json")}
    result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "replay", str(GOLDEN[1]), *argv,
                             "--checkpoint", str(CHECKPOINT), "--update"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "error" in errors[0] and named in errors[0], result.stderr
    assert {p: p.read_bytes() for p in (ARTIFACTS / "golden").glob("*.json")} == before


@pytest.mark.parametrize("store", [Stores.ROS2_KILTED, Stores.ROS2_JAZZY])
def test_golden_bags_are_rosbag2_v9_readable_with_kilted_and_jazzy(store):
    typestore = get_typestore(store)
    for bag in GOLDEN:
        info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
        assert info["version"] == 9 and info["storage_identifier"] == "mcap"
        assert all(t["topic_metadata"]["offered_qos_profiles"] for t in info["topics_with_message_count"])
        with Reader(bag) as reader:
            assert all(conn.msgdef.format == MessageDefinitionFormat.MSG and conn.msgdef.data
                       for conn in reader.connections)
            counts = {}
            for conn, _, raw in reader.messages():
                typestore.deserialize_cdr(raw, conn.msgtype)
                counts[conn.topic] = counts.get(conn.topic, 0) + 1
        assert b"ros2msg" in next(bag.glob("*.mcap")).read_bytes()  # MCAP schema encoding
        assert counts["/camera/image_raw"] == counts["/arm_controller/joint_trajectory"] == 40


def test_play_republishes_the_bag_on_its_topics():
    """`mhc replay --play` publishes every recorded message on its topic (like `ros2 bag play`)."""
    import threading

    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState
    from trajectory_msgs.msg import JointTrajectory

    from mhc_ros.bags import bag_summary

    bag = Path(__file__).parent / "artifacts" / "golden" / "reach_000000"
    expected = bag_summary(bag)
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("play_listener", context=context)
    received = {"/joint_states": 0, "/arm_controller/joint_trajectory": 0}

    def counter(topic):
        def count(_msg):
            received[topic] += 1
        return count

    node.create_subscription(JointState, "/joint_states", counter("/joint_states"), 100)
    node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory",
                             counter("/arm_controller/joint_trajectory"), 100)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    try:
        result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "replay", str(bag), "--play", "--rate", "4"],
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and received["/joint_states"] < expected["/joint_states"]["count"]:
            time.sleep(0.05)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    for topic, count in received.items():
        assert count == expected[topic]["count"], (topic, count, expected[topic])
