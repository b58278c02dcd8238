"""`mhc eval` with the shipped model: closed loop, held-out paraphrases, motion error, videos."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from mhc_sim import HELD_OUT_TEMPLATES, TASKS, TabletopWorld, WorldConfig, episode_spec, held_out_instruction
from mhc_sim.tasks import _fill

from mhc_ros.cli import main
from mhc_ros.evaluate import EVAL_SEED_BASE, MotionError, ball_from_image

SHIPPED = Path(__file__).resolve().parents[1] / "model" / "checkpoints" / "mhc_s.safetensors"


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_held_out_paraphrases_are_never_drawn_for_training(task):
    trained = {episode_spec(task, seed).instruction for seed in range(400)}
    held_out = {held_out_instruction(task, seed) for seed in range(EVAL_SEED_BASE, EVAL_SEED_BASE + 100)}
    assert len(held_out) > 1 and not trained & held_out
    # new combinations of known words only: every held-out word is in some task's training instructions
    known = set().union(*(_words(episode_spec(name, s).instruction) for name in TASKS for s in range(400)))
    for template in HELD_OUT_TEMPLATES[task]:
        assert _words(_fill(template, "red_cube", "left")) <= known, template


def test_instruction_override_keeps_the_scene():
    world = TabletopWorld(WorldConfig(render=False))
    try:
        own = world.reset("push", 7)
        spec = world.episode
        other = world.reset("push", 7, instruction="push the red block to the left")
        assert world.episode.instruction == "push the red block to the left"
        assert world.episode.target == spec.target and world.episode.direction == spec.direction
        np.testing.assert_array_equal(own.object_positions, other.object_positions)
        with pytest.raises(ValueError, match="non-empty string"):
            world.reset("push", 7, instruction=" ")
    finally:
        world.close()


def test_ball_is_found_in_the_camera_frame():
    world = TabletopWorld(WorldConfig(image_width=96, image_height=96))
    try:
        obs = world.reset("intercept", EVAL_SEED_BASE)
        seen = ball_from_image(obs.image)
        assert seen is not None and np.linalg.norm(seen - obs.object_positions[4]) < 0.03  # ~1 px at 1.2 m
        assert ball_from_image(np.zeros_like(obs.image)) is None
    finally:
        world.close()


def test_motion_error_against_constant_velocity():
    error = MotionError(slot=5)
    positions = [np.array([0.1 * t, 0.0, 0.0]) for t in range(12)]  # constant velocity: 0.1 m per tick
    for t, position in enumerate(positions):
        future = np.array([[0.1 * (t + h), 0.02, 0.0] for h in range(1, 4)])  # right path, 2 cm off sideways
        error.add(position, future, seen=position + np.array([0.0, 0.0, 0.01 * (t % 2)]))  # 1 cm jitter
    error.end_episode()
    report = error.report()
    assert report["motion_ade_ball_const_velocity_m"] == pytest.approx(0.0, abs=1e-12)
    assert report["motion_ade_ball_m"] == pytest.approx(0.02)
    assert report["motion_ade_ticks"] == report["motion_ade_seen_ticks"] == 12 - 3 - 1  # t >= 1, horizon seen
    assert report["motion_ade_ball_const_velocity_seen_m"] > 0.01  # the jitter, extrapolated
    assert MotionError(slot=5).report() == {}


def test_motion_error_baseline_sees_the_frames_the_model_sees():
    """With lag 2 (a model fed the frame two ticks back) the seen-frames baseline extrapolates from ticks
    t−2 and t: 1 cm of jitter on odd ticks is gone from every velocity, and ticks t < 2 are not scored."""
    error = MotionError(slot=5, lag=2)
    for t in range(12):
        position = np.array([0.1 * t, 0.0, 0.0])
        future = np.array([[0.1 * (t + h), 0.0, 0.0] for h in range(1, 4)])
        error.add(position, future, seen=position + np.array([0.0, 0.0, 0.01 * (t % 2)]))
    error.end_episode()
    report = error.report()
    assert report["motion_ade_ticks"] == 12 - 3 - 2
    # ticks 2..8 scored; on the odd ones (3 of 7) the seen position is 1 cm off, the velocity never is
    assert report["motion_ade_ball_const_velocity_seen_m"] == pytest.approx(0.01 * 3 / 7)
    with pytest.raises(ValueError, match="lag=0"):
        MotionError(slot=5, lag=0)


def test_shipped_checkpoint_closes_the_loop(tmp_path, capsys):
    """The shipped model, ONNX Runtime on CPU, reaches the cube on seeded evaluation episodes (one of them
    instructed with a held-out paraphrase); a broken model, export or runtime fails here."""
    assert SHIPPED.is_file(), f"shipped checkpoint missing: {SHIPPED}"
    code = main(["eval", "--checkpoint", str(SHIPPED), "--task", "reach", "--episodes", "2", "--json",
                 "--video", str(tmp_path / "videos"), "--video-episodes", "1"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success_rate"] == 1.0, result
    assert result["success_rate_held_out_instructions"] == 1.0
    assert result["backend"] == "onnxruntime" and 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert len(result["videos"]) == 1 and Path(result["videos"][0]).stat().st_size > 0


def test_shipped_checkpoint_predicts_the_ball(capsys):
    """Its ball head beats constant velocity from the same camera frames by the issue's margin (0.31× on
    this episode; the model before the head: 2.7× over 50 episodes)."""
    code = main(["eval", "--checkpoint", str(SHIPPED), "--task", "intercept", "--episodes", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["success_rate"] == 1.0, result
    assert result["motion_ade_seen_ticks"] > 10
    assert result["motion_ade_ratio_seen"] < 0.5, result


def test_bad_override_is_named(capsys):
    code = main(["eval", "--checkpoint", str(SHIPPED), "--task", "reach", "--episodes", "1",
                 "--param", "warp_speed=9"])
    assert code == 2
    assert "warp_speed=9" in capsys.readouterr().err
