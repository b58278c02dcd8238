"""``mhc replay`` of a bag recorded live: ``mhc_sim_bridge`` (lockstep) + ``mhc_controller`` with the tiny checkpoint
as separate processes, ``mhc record`` next to them; the controller's tick trace (``/mhc/controller_tick``) lets the
replay use exactly the inputs each tick used, so it passes within the default tolerance.

The ROS domain and localhost-only discovery come from ``tests/conftest.py``.
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from rosbags.rosbag2 import Reader

from mhc_ros.record import DEFAULT_TOPICS
from mhc_ros.replay import DEFAULT_TOLERANCE, TRACE_TOPIC

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "artifacts" / "tiny_policy.safetensors"
TOPICS = ["/camera/image_raw", "/joint_states", "/mhc/instruction", "/arm_controller/joint_trajectory",
          "/gripper_controller/commands", TRACE_TOPIC]

REQUEST = textwrap.dedent("""
    import time
    import rclpy
    from std_msgs.msg import String
    rclpy.init()
    node = rclpy.create_node("episode_requester")
    pub = node.create_publisher(String, "/sim/episode_request", 10)
    deadline = time.monotonic() + 20
    while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    pub.publish(String(data='{"task": "pick_place", "seed": 3}'))
    time.sleep(0.3)
    node.destroy_node()
    rclpy.shutdown()
""")


def test_default_record_topics_include_the_trace():
    assert TRACE_TOPIC in DEFAULT_TOPICS


def test_live_recorded_bag_replays_within_tolerance(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    bridge = [sys.executable, "-m", "mhc_ros.sim_bridge_node", "--ros-args", "-p", "auto_start:=false",
              "-p", "realtime_factor:=0.0", "-p", "image_width:=48", "-p", "image_height:=48"]
    controller = [sys.executable, "-m", "mhc_ros.controller_node", "--ros-args", "-p",
                  f"checkpoint_path:={CHECKPOINT}", "-p", "backend:=torch", "-p", "device:=cpu",
                  "-p", "inference_threads:=1", "-p", "visualization_rate_hz:=0.0"]
    logs = {name: open(tmp_path / f"{name}.log", "w") for name in ("bridge", "controller")}  # noqa: SIM115
    processes = [subprocess.Popen(command, env=env, cwd=ROOT, stdout=logs[name], stderr=subprocess.STDOUT)
                 for name, command in (("bridge", bridge), ("controller", controller))]
    bag = tmp_path / "live"
    try:
        recorder = subprocess.Popen([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(bag),
                                     "--duration", "4", "--wait", "20", "--topics", *TOPICS],
                                    env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert "recording" in recorder.stderr.readline()
        time.sleep(0.3)  # the recorder's subscriptions match before the episode (and its latched instruction) starts
        subprocess.run([sys.executable, "-c", REQUEST], env=env, cwd=ROOT, timeout=30, check=True)
        assert recorder.wait(timeout=30) == 0, recorder.stderr.read()
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=20)
        for log in logs.values():
            log.close()
    with Reader(bag) as reader:
        counts = {conn.topic: conn.msgcount for conn in reader.connections}
    assert counts[TRACE_TOPIC] >= 40 and counts["/arm_controller/joint_trajectory"] >= 20, counts

    report_file = tmp_path / "report.json"
    result = subprocess.run([sys.executable, "-m", "mhc_ros.cli", "replay", str(bag), "--checkpoint",
                             str(CHECKPOINT), "--report", str(report_file)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)
    (report,) = json.loads(report_file.read_text())
    deviation = max(row["max_abs"] for row in report["commands"].values())
    print(f"live bag: {report['ticks']} ticks, {report.get('skipped', 0)} skipped, max |deviation| {deviation:.3e}")
    assert result.returncode == 0, result.stdout + result.stderr
    assert report["traced"] and report["passed"] and deviation <= DEFAULT_TOLERANCE
    assert report.get("skipped", 0) == 0 and counts["/gripper_controller/commands"] >= 20  # the model drove
