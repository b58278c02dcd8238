"""``mhc record``: live topics (found on the graph, raw subscriptions) into a rosbag2 v9 MCAP bag with QoS
metadata, read back with the Kilted and Jazzy type stores; a topic that never appears is one line, exit 2."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore

ROOT = Path(__file__).resolve().parents[1]

PUBLISHER = textwrap.dedent("""
    import array, signal, time
    import rclpy
    from rclpy.qos import QoSProfile, DurabilityPolicy, ReliabilityPolicy
    from sensor_msgs.msg import Image, JointState
    from std_msgs.msg import String
    rclpy.init()
    node = rclpy.create_node("fake_robot")
    image_pub = node.create_publisher(Image, "/camera/image_raw",
                                      QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    joint_pub = node.create_publisher(JointState, "/joint_states", 10)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    node.create_publisher(String, "/mhc/instruction", latched).publish(String(data="touch the red cube"))
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    k = 0
    while not stop:
        image = Image(height=4, width=5, encoding="rgb8", step=15)
        image.data = array.array("B", bytes((k + i) % 256 for i in range(60)))
        image_pub.publish(image)
        joint_pub.publish(JointState(name=["a", "b"], position=[0.1 * k, -1.0], velocity=[1.0, 0.0]))
        k += 1
        time.sleep(0.02)
    node.destroy_node()
    rclpy.shutdown()
""")


@pytest.fixture
def ros_env():
    env = dict(os.environ, ROS_DOMAIN_ID=str(random.randint(110, 160)), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
               PYTHONUNBUFFERED="1")
    return env


def test_record_live_topics(tmp_path, ros_env):
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER], env=ros_env, cwd=ROOT)
    try:
        result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(tmp_path / "bag"),
                                 "--duration", "1.5", "--wait", "20", "--topics", "/camera/image_raw",
                                 "/joint_states", "/mhc/instruction"],
                                env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
        # No --duration: SIGINT (Ctrl-C) ends the recording cleanly with a complete bag.
        interrupted = subprocess.Popen([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(tmp_path / "sig"),
                                        "--topics", "/joint_states"], env=ros_env, cwd=ROOT,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "recording" in interrupted.stderr.readline()
        time.sleep(0.5)
        interrupted.send_signal(signal.SIGINT)
        assert interrupted.wait(timeout=20) == 0
        assert "stopped by SIGINT" in interrupted.stdout.read()
        with Reader(tmp_path / "sig") as reader:
            assert reader.message_count > 0
    finally:
        publisher.terminate()
        publisher.wait(timeout=10)
    assert result.returncode == 0, result.stderr
    assert "recorded" in result.stdout
    bag = tmp_path / "bag"
    info = yaml.safe_load((bag / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert info["version"] == 9 and info["storage_identifier"] == "mcap"
    qos = {t["topic_metadata"]["name"]: t["topic_metadata"]["offered_qos_profiles"][0]
           for t in info["topics_with_message_count"]}
    assert qos["/camera/image_raw"]["reliability"] == "best_effort"
    assert qos["/mhc/instruction"]["durability"] == "transient_local"
    for store in (Stores.ROS2_KILTED, Stores.ROS2_JAZZY):
        typestore = get_typestore(store)
        messages: dict[str, list] = {}
        with Reader(bag) as reader:
            for conn, _, raw in reader.messages():
                messages.setdefault(conn.topic, []).append(typestore.deserialize_cdr(raw, conn.msgtype))
        assert [m.data for m in messages["/mhc/instruction"]] == ["touch the red cube"]  # latched: caught late
        assert len(messages["/camera/image_raw"]) >= 10 and len(messages["/joint_states"]) >= 10
        image = messages["/camera/image_raw"][-1]
        assert (image.height, image.width, image.encoding) == (4, 5, "rgb8")
        first = int(image.data[0])
        np.testing.assert_array_equal(image.data, (first + np.arange(60)) % 256)
        assert list(messages["/joint_states"][0].name) == ["a", "b"]


def test_topic_that_never_appears_is_one_line_exit_2(tmp_path, ros_env):
    result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(tmp_path / "bag"),
                             "--wait", "1", "--topics", "/no/such/topic"],
                            env=ros_env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "'/no/such/topic'" in errors[0], result.stderr
    assert not (tmp_path / "bag").exists()


def test_existing_bag_is_refused(tmp_path, ros_env):
    (tmp_path / "bag").mkdir()
    result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(tmp_path / "bag"),
                             "--wait", "1", "--topics", "/x"], env=ros_env, cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "already exists" in result.stderr
