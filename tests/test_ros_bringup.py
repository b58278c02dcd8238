"""``mhc bringup sim`` across real processes: episodes succeed, every child exits, signals and deaths are handled.

The ROS domain and localhost-only discovery come from ``tests/conftest.py``.
"""

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mhc_ros import bringup
from mhc_ros.system import NodeDescription

ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited all the same.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_expert_reach_succeeds_across_processes():
    out = io.StringIO()
    result = bringup.bringup_sim(task="reach", episodes=2, seed=0, realtime_factor=0.0, timeout_s=60.0, out=out)
    lines = out.getvalue().splitlines()
    assert result["error"] is None, result["error"]
    assert result["successes"] == 2, lines
    assert [e["seed"] for e in result["episodes"]] == [0, 1]
    assert all(e["rejected_commands"] == 0 for e in result["episodes"])
    assert lines[0].startswith("episode 1/2 reach seed=0: success") and lines[-1].startswith("2/2 episodes succeeded")
    assert result["exit_codes"] == {"mhc_sim_bridge": 0, "mhc_expert_controller": 0}
    assert not any(_alive(pid) for pid in result["pids"].values())
    assert result["log_dir"] is None  # temporary logs removed after a clean run


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_stops_every_process(tmp_path, sig, status):
    report = tmp_path / "result.json"
    command = [sys.executable, "-m", "mhc_ros.bringup", "sim", "--task", "pick_place", "--episodes", "20",
               "--realtime-factor", "0", "--json", str(report), "--log-dir", str(tmp_path / "logs")]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()  # the first episode is over: the system is up and running
        assert first.startswith("episode 1/20"), first + process.stderr.read()
        process.send_signal(sig)
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    stderr = process.stderr.read()
    assert code == status, stderr
    assert f"interrupted by {sig.name}" in stderr
    result = json.loads(report.read_text())
    assert result["interrupted"] == sig
    assert result["exit_codes"] == {"mhc_sim_bridge": 0, "mhc_expert_controller": 0}
    assert not any(_alive(pid) for pid in result["pids"].values())


def test_unexpected_child_death_is_reported(monkeypatch, tmp_path):
    broken = NodeDescription(package="mhc_ros", executable="broken", name="broken_controller",
                             module="mhc_ros.no_such_module")

    def nodes(*args, **kwargs):
        return [bringup.sim_system(auto_start=False)[0], broken]

    monkeypatch.setattr(bringup, "bringup_nodes", nodes)
    started = time.monotonic()
    result = bringup.bringup_sim(task="reach", episodes=1, out=io.StringIO(), log_dir=tmp_path)
    assert time.monotonic() - started < 30
    assert "node 'broken_controller'" in result["error"] and "exited unexpectedly with status 1" in result["error"]
    assert "No module named mhc_ros.no_such_module" in result["error"]  # the tail of its log
    # The bridge may still be importing (no signal handler yet) when it is told to stop: killed by SIGINT.
    assert result["exit_codes"]["mhc_sim_bridge"] in (0, -signal.SIGINT)
    assert not any(_alive(pid) for pid in result["pids"].values())


@pytest.mark.parametrize("argv, message", [
    (["--policy", "magic"], "policy 'magic' not available"),
    (["--policy", "mhc"], "--policy mhc needs an existing --checkpoint"),
    (["--task", "fly"], "unknown task 'fly'"),
    (["--episodes", "-2"], "-2 is negative"),
    (["--timeout", "0"], "--timeout 0.0 must be"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    from mhc_ros.cli import main

    try:
        code = main(["bringup", "sim", *argv])
    except SystemExit as exit_:
        code = exit_.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
