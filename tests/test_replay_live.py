"""``mhc replay`` of a bag recorded live from ``mhc bringup sim --policy mhc`` (bridge in lockstep + ``mhc_controller``
with the tiny checkpoint, as separate processes) by ``mhc record``; the controller's tick trace
(``/mhc/controller_tick``) lets the replay use exactly the inputs each tick used, so it passes within the default
tolerance.

The ROS domain and localhost-only discovery come from ``tests/conftest.py``.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from rosbags.rosbag2 import Reader

from mhc_ros.record import DEFAULT_TOPICS
from mhc_ros.replay import DEFAULT_TOLERANCE, TRACE_TOPIC

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "artifacts" / "tiny_policy.safetensors"
TOPICS = ["/camera/image_raw", "/joint_states", "/mhc/instruction", "/arm_controller/joint_trajectory",
          "/gripper_controller/commands", TRACE_TOPIC]

def test_default_record_topics_include_the_trace():
    assert TRACE_TOPIC in DEFAULT_TOPICS


def test_bag_recorded_from_mhc_bringup_replays_within_tolerance(tmp_path):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    bag = tmp_path / "live"
    recorder = subprocess.Popen([sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(bag),
                                 "--duration", "9", "--wait", "30", "--topics", *TOPICS],
                                env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    bringup = subprocess.Popen([sys.executable, "-m", "mhc_ros.cli", "bringup", "sim", "--policy", "mhc",
                                "--checkpoint", str(CHECKPOINT), "--backend", "torch", "--task", "reach",
                                "--seed", "3", "--episodes", "2", "--realtime-factor", "0", "--image-width", "48",
                                "--image-height", "48", "--timeout", "30"],
                               env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert recorder.wait(timeout=60) == 0, recorder.stderr.read()
        assert "episode 2/2 reach" in bringup.communicate(timeout=60)[0]
    finally:
        for process in (recorder, bringup):
            if process.poll() is None:
                process.kill()
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
    # Bringup requests the first episode as soon as its nodes are up, which can be before the recorder's
    # subscriptions match; ticks before the controller's first recorded restart cannot be rebuilt and are
    # skipped, so the second episode (its new instruction restarts the controller) is always compared.
    assert report["ticks"] - report.get("skipped", 0) >= 20 and counts["/gripper_controller/commands"] >= 20
