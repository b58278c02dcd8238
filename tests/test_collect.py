"""`mhc collect` and `mhc eval`: shards follow docs/contracts.md, bags read back, bad input exits 2."""

import json
import subprocess
import sys

import numpy as np
import pytest
from mhc_sim import OBJECT_SLOTS

from mhc_ros.bags import EPISODE_TOPICS, bag_summary
from mhc_ros.cli import main

SHARD_KEYS = {
    "images": (np.uint8, 4), "joint_positions": (np.float32, 2), "joint_velocities": (np.float32, 2),
    "actions": (np.float32, 2), "ee_positions": (np.float32, 2), "object_positions": (np.float32, 3),
    "object_velocities": (np.float32, 3), "object_present": (np.bool_, 1), "phase": (np.int16, 1),
    "sim_time": (np.float64, 1), "train_mask": (np.bool_, 1), "motion_mask": (np.bool_, 1),
}


def mhc(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mhc_ros.cli", *argv], capture_output=True, text=True, timeout=120)


def test_collect_writes_shards_and_bags(tmp_path, capsys):
    assert main(["collect", "--task", "reach,push", "--episodes", "2", "--out", str(tmp_path),
                 "--workers", "2", "--seed", "5", "--image-width", "64", "--image-height", "48"]) == 0
    assert "episodes/minute" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(e["name"] for e in manifest["episodes"]) == [
        "push_000005", "push_000006", "reach_000005", "reach_000006"]
    for entry in manifest["episodes"]:
        assert entry["success"] and entry["written"]
        with np.load(tmp_path / "shards" / f"{entry['name']}.npz", allow_pickle=False) as shard:
            assert set(shard.files) == set(SHARD_KEYS)
            for key, (dtype, ndim) in SHARD_KEYS.items():
                assert shard[key].dtype == dtype and shard[key].ndim == ndim, key
            steps = len(shard["actions"])
            assert shard["images"].shape == (steps, 48, 64, 3)
            assert shard["object_positions"].shape == (steps, 6, 3)
        meta = json.loads((tmp_path / "shards" / f"{entry['name']}.json").read_text())
        assert meta["steps"] == steps and meta["task"] == entry["task"] and meta["instruction"]
        assert meta["camera"]["width"] == 64 and len(meta["joint_names"]) == 9
        summary = bag_summary(tmp_path / "bags" / entry["name"])
        assert {k: v["type"] for k, v in summary.items()} == {t.name: t.msgtype for t in EPISODE_TOPICS}
        assert summary["/camera/image_raw"]["count"] == steps
        assert summary["/arm_controller/joint_trajectory"]["count"] == steps


def test_deliberate_grasp_miss_is_recovered_and_masked(tmp_path):
    """--grasp-miss 1: every pick_place episode starts with a miss beside the cube; the expert notices
    the empty lift, re-grasps and succeeds; the steps of the miss are masked out of training."""
    assert main(["collect", "--task", "pick_place,reach", "--episodes", "2", "--seed", "300000", "--out",
                 str(tmp_path), "--workers", "2", "--no-bags", "--grasp-miss", "1"]) == 0
    manifest = {e["name"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["episodes"]}
    for name, entry in manifest.items():
        assert entry["success"], entry
        with np.load(tmp_path / "shards" / f"{name}.npz", allow_pickle=False) as shard:
            mask, phase = shard["train_mask"], shard["phase"]
        if name.startswith("reach"):  # no grasp: nothing to miss
            assert entry["regrasps"] == 0 and mask.all()
            continue
        assert entry["regrasps"] == 1
        first = int(np.argmax(mask))  # the miss: a masked prefix, then the recovery is imitated
        assert 0 < first < len(mask) and not mask[:first].any() and mask[first:].all()
        assert phase[first - 1] == 2 and phase[first] == 0  # lifting when it noticed, back to move_to


def test_late_start_lets_the_ball_roll_past_and_is_kept_for_motion_only(tmp_path):
    """--late-start 1: every intercept episode holds the arm still 55-70 periods, the ball rolls off the
    table, and the episode is written anyway (without --keep-failed): motion learned, nothing imitated.
    Other tasks are untouched."""
    assert main(["collect", "--task", "intercept,reach", "--episodes", "2", "--seed", "3000002", "--out",
                 str(tmp_path), "--workers", "2", "--no-bags", "--late-start", "1"]) == 0
    manifest = {e["name"]: e for e in json.loads((tmp_path / "manifest.json").read_text())["episodes"]}
    for name, entry in manifest.items():
        with np.load(tmp_path / "shards" / f"{name}.npz", allow_pickle=False) as shard:
            train, motion, joints = shard["train_mask"], shard["motion_mask"], shard["joint_positions"]
            ball = shard["object_positions"][:, OBJECT_SLOTS.index("ball")]
        assert entry["written"], entry
        if name.startswith("reach"):
            assert entry["success"] and entry["late_start"] == 0 and train.all() and motion.all()
            continue
        assert not entry["success"] and 55 <= entry["late_start"] <= 70, entry
        assert not train.any() and motion.all()
        held = entry["late_start"]
        assert np.abs(joints[1:held, :7] - joints[0, :7]).max() < 0.01  # the arm held still
        assert abs(ball[-1, 1]) > 0.5  # the ball rolled across the table (edges at ±0.6 m), past the arm


def test_collect_refuses_to_overwrite(tmp_path):
    argv = ["collect", "--task", "reach", "--episodes", "1", "--out", str(tmp_path), "--workers", "1", "--no-bags"]
    assert main(argv) == 0
    assert main(argv) == 2


@pytest.mark.parametrize("argv, named", [
    (["collect", "--task", "fly", "--episodes", "1", "--out", "OUT"], "'fly'"),
    (["collect", "--task", "reach", "--episodes", "-3", "--out", "OUT"], "-3"),
    (["collect", "--task", "reach", "--episodes", "1", "--out", "/proc/mhc-out"], "'/proc/mhc-out'"),
    (["collect", "--task", "reach", "--episodes", "1", "--out", "OUT", "--grasp-miss", "1.5"], "1.5"),
    (["collect", "--task", "reach", "--episodes", "1", "--out", "OUT", "--late-start", "-0.5"], "-0.5"),
    (["eval", "--policy", "expert", "--task", "fly", "--episodes", "1"], "'fly'"),
    (["eval", "--policy", "expert", "--task", "reach", "--episodes", "-1"], "-1"),
    (["eval", "--policy", "magic", "--task", "reach", "--episodes", "1"], "'magic'"),
])
def test_bad_input_is_one_line_naming_the_value(tmp_path, argv, named):
    result = mhc(*[str(tmp_path) if a == "OUT" else a for a in argv])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and named in errors[0], result.stderr


def test_eval_expert_prints_clean_json():
    result = mhc("eval", "--policy", "expert", "--task", "reach", "--episodes", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["task"] == "reach" and report["episodes"] == 2
    assert report["success_rate"] == 1.0 and report["mean_steps"] > 0


def test_eval_checkpoint_reports_latency_and_failures(tmp_path):
    from mhc_model.checkpoint import save_checkpoint
    from mhc_model.config import preset
    from mhc_model.latency import random_policy

    checkpoint = save_checkpoint(tmp_path / "tiny", random_policy(preset("tiny")).eval())
    result = mhc("eval", "--checkpoint", str(checkpoint), "--backend", "onnxruntime", "--task", "reach",
                 "--episodes", "1", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["policy"] == "mhc" and report["backend"] == "onnxruntime" and report["episodes"] == 1
    assert 0 < report["latency_p50_ms"] <= report["latency_p99_ms"]
    assert report["success_rate"] + sum(report["failures"].values()) == 1  # an untrained policy may fail


def test_eval_checkpoint_errors_name_the_value(tmp_path):
    missing = mhc("eval", "--checkpoint", str(tmp_path / "none.safetensors"), "--task", "reach")
    assert missing.returncode == 2 and "none.safetensors" in missing.stderr
