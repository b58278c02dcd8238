"""``mhc bringup sim`` as the product demo: a task list, ``--bag`` (the recorder as one more child, bag complete
on normal exit, on a dying node and on Ctrl-C), ``--video`` rendered from it, and the mHC controller's latency
per episode. Each test runs its system on its own ``ROS_DOMAIN_ID`` with localhost-only discovery."""

import io
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image as PILImage
from rosbags.rosbag2 import Reader

from mhc_ros import bringup
from mhc_ros.bags import TYPESTORE
from mhc_ros.cli import main

ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT = ROOT / "tests" / "artifacts" / "tiny_policy.safetensors"
RECORDED = ["/camera/image_raw", "/joint_states", "/arm_controller/joint_trajectory", "/gripper_controller/commands",
            "/sim/episode_status", "/sim/episode_request", "/mhc/instruction", "/diagnostics", "/clock"]
MHC_RECORDED = ["/mhc/predicted_motion", "/mhc/plan", "/mhc/controller_tick"]


@pytest.fixture
def domain_id(monkeypatch):
    """A domain of its own (conftest's session domain is 1..101, test_record's 110..160)."""
    value = random.randint(161, 230)
    monkeypatch.setenv("ROS_DOMAIN_ID", str(value))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    return value


def bag_statuses(bag):
    with Reader(bag) as reader:
        connections = [c for c in reader.connections if c.topic == "/sim/episode_status"]
        return [json.loads(TYPESTORE.deserialize_cdr(raw, conn.msgtype).data)
                for conn, _, raw in reader.messages(connections=connections)]


def bag_counts(bag):
    with Reader(bag) as reader:
        return {conn.topic: conn.msgcount for conn in reader.connections}


def test_expert_task_list_bag_and_video(tmp_path, domain_id):
    bag, video, out = tmp_path / "out" / "bag", tmp_path / "out" / "demo.gif", io.StringIO()
    bag.mkdir(parents=True)  # an empty folder is fine: it becomes the bag
    result = bringup.bringup_sim(task="reach,pick_place", episodes=2, seed=5, realtime_factor=0.0, timeout_s=60.0,
                                 domain_id=domain_id, bag=bag, video=video, out=out)
    lines = out.getvalue().splitlines()
    assert result["error"] is None and result["successes"] == 2, (lines, result["error"])
    assert [(e["task"], e["seed"], e["success"]) for e in result["episodes"]] == [("reach", 5, True),
                                                                                  ("pick_place", 6, True)]
    assert lines[0].startswith("episode 1/2 reach seed=5: success") and "latency" not in lines[0]
    assert lines[1].startswith("episode 2/2 pick_place seed=6: success")
    assert lines[3].startswith(f"bag: {bag} (") and lines[4].startswith(f"video: {video} (")
    assert result["exit_codes"] == {"mhc_sim_bridge": 0, "mhc_expert_controller": 0, "mhc_recorder": 0}

    counts = bag_counts(bag)
    assert all(counts.get(topic, 0) > 0 for topic in RECORDED), counts
    assert counts["/sim/episode_request"] == 2 and not set(MHC_RECORDED) & set(counts)
    statuses = bag_statuses(bag)
    # The first episode is in the bag from its first step: it was requested once the recorder had subscribed.
    assert (1, 0) in {(s["episode_id"], s["step"]) for s in statuses}
    done = [(s["task"], s["seed"], s["success"]) for s in statuses if s["done"]]
    assert done == [("reach", 5, True), ("pick_place", 6, True)]
    steps = sum(e["steps"] for e in result["episodes"])
    gif = PILImage.open(video)
    assert result["video_frames"] == gif.n_frames and gif.n_frames >= steps // 2 > 20  # 10 of 20 frames/s


def test_mhc_policy_reports_latency_and_records_its_motion(tmp_path, domain_id):
    out = io.StringIO()
    result = bringup.bringup_sim(policy="mhc", checkpoint_path=str(CHECKPOINT), backend="torch", task="reach",
                                 episodes=1, seed=3, realtime_factor=0.0, timeout_s=3.0, image_width=48,
                                 image_height=48, domain_id=domain_id, bag=tmp_path / "bag", out=out,
                                 instructions=["reach the red block"])
    assert result["error"] is None, result["error"]
    with Reader(tmp_path / "bag") as reader:  # the instruction override reached the bridge and the controller
        connections = [c for c in reader.connections if c.topic == "/mhc/instruction"]
        said = [TYPESTORE.deserialize_cdr(raw, c.msgtype).data for c, _, raw in reader.messages(connections)]
    assert said and set(said) == {"reach the red block"}, said
    (episode,) = result["episodes"]  # untrained: it times out; its latency is reported all the same
    assert 0.0 < episode["latency_p50_ms"] <= episode["latency_p99_ms"], episode
    assert isinstance(episode["ticks_on_old_joint_state"], int) and episode["ticks_on_old_joint_state"] >= 0
    assert f"latency p50={episode['latency_p50_ms']:.1f}ms p99=" in out.getvalue().splitlines()[0]
    assert all(result["bag_topics"].get(topic, 0) > 0 for topic in RECORDED + MHC_RECORDED), result["bag_topics"]
    from mhc_ros.bag_video import render_bag

    rendered = render_bag(tmp_path / "bag", tmp_path / "tiny.gif")
    assert rendered["motion_frames"] > 0 and rendered["frames"] > rendered["motion_frames"] // 2


def test_ticks_on_an_old_joint_state_are_counted_per_episode(domain_id):
    """In lockstep each joint state is used by one tick; the episode client counts the ticks that reused one,
    from the controller's tick trace: not the previous episode's states, not the idle ticks on the last one."""
    from types import SimpleNamespace

    from mhc_ros.episode_client import EpisodeClient

    client = EpisodeClient(domain_id)
    try:
        def tick(stamp_s, source="tick"):
            stamp = None if stamp_s is None else [int(stamp_s), round((stamp_s % 1) * 1e9)]
            client._on_trace(SimpleNamespace(data=json.dumps({"source": source, "joint_state_stamp": stamp})))

        client.request("reach", 1)
        for stamp in (9.95, 10.0, 10.05, 10.05, 10.1, 10.15, 10.15, 10.15, None):  # 10.05 twice, 10.15 the last
            tick(stamp)
        tick(10.1, source="stop")  # a /mhc/stop hold is not a tick
        assert client.ticks_on_old_joint_state(start_time=10.0) == 1
        client.request("reach", 2)  # a new episode starts counting afresh
        assert client.ticks_on_old_joint_state(start_time=10.2) == 0
    finally:
        client.close()


def _children(name):
    """Pids of this process's children whose command line contains ``name``."""
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid() \
                    and name in (entry / "cmdline").read_bytes().decode(errors="replace"):
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return pids


class KillControllerAfterFirstEpisode(io.StringIO):
    def write(self, text):
        if text.startswith("episode 1/"):
            for pid in _children("mhc_ros.expert_controller_node"):
                os.kill(pid, signal.SIGKILL)
        return super().write(text)


def test_bag_is_complete_when_a_node_dies(tmp_path, domain_id):
    result = bringup.bringup_sim(task="reach", episodes=5, realtime_factor=0.0, timeout_s=30.0,
                                 domain_id=domain_id, bag=tmp_path / "bag", out=KillControllerAfterFirstEpisode())
    assert "node 'mhc_expert_controller'" in result["error"], result["error"]
    assert result["exit_codes"]["mhc_recorder"] == 0
    assert any(s["episode_id"] == 1 and s["done"] for s in bag_statuses(tmp_path / "bag"))


def test_ctrl_c_finalises_the_bag(tmp_path, domain_id):
    bag = tmp_path / "bag"
    process = subprocess.Popen([sys.executable, "-m", "mhc_ros.bringup", "sim", "--task", "reach", "--episodes", "50",
                                "--realtime-factor", "0", "--bag", str(bag), "--domain-id", str(domain_id)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("episode 1/50"), first + process.stderr.read()
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert code == 130, process.stderr.read()
    assert "bag: " in process.stdout.read()
    assert bag_counts(bag)["/camera/image_raw"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--task", "reach,fly"], "unknown task 'fly'"),
    (["--task", "reach,"], "task list 'reach,' has an empty entry"),
    (["--video", "demo.mp4"], "--video 'demo.mp4' must name a .gif file"),
    (["--bag", "{existing}"], "--bag '{existing}' already exists and is not an empty folder"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, capsys, argv, message):
    from mhc_ros.cli import main

    existing = tmp_path / "old_bag"
    existing.mkdir()
    (existing / "metadata.yaml").write_text("")
    try:
        code = main(["bringup", "sim", *(a.format(existing=existing) for a in argv)])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message.format(existing=existing) in err and len(err.splitlines()) == 1, err
    assert (existing / "metadata.yaml").exists()


def test_allow_failures_exits_0_only_for_failed_episodes(monkeypatch):
    """A demo run whose episodes fail still exits 0 with --allow-failures; a broken run never does."""
    outcomes = {"error": None}
    monkeypatch.setattr(bringup, "bringup_sim", lambda **kwargs: {"successes": 0, "interrupted": None, **outcomes})
    argv = ["bringup", "sim", "--policy", "expert", "--episodes", "2"]
    assert main(argv) == 1
    assert main([*argv, "--allow-failures"]) == 0
    outcomes["error"] = "node 'mhc_controller' exited unexpectedly"
    assert main([*argv, "--allow-failures"]) == 1
