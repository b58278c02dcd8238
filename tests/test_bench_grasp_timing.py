"""bench/grasp_timing.py: the expert's close tick and the per-demonstration figures."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "grasp_timing.py"
sys.path.insert(0, str(SCRIPT.parent))  # it imports bench/pick_failures.py, as it does when run from bench/
spec = importlib.util.spec_from_file_location("bench_grasp_timing", SCRIPT)
grasp_timing = importlib.util.module_from_spec(spec)
spec.loader.exec_module(grasp_timing)

OPEN, SHUT = 0.08, 0.0


def commands(widths, joints=0.0):
    out = np.full((len(widths), 8), joints, dtype=float)
    out[:, 7] = widths
    return out


def test_first_close_and_a_demonstration_that_never_closes():
    assert grasp_timing.first_close(commands([OPEN, OPEN, SHUT, OPEN])) == 2
    with pytest.raises(ValueError, match="never closes"):
        grasp_timing.first_close(commands([OPEN] * 3))


def test_window_figures_count_closes_only_while_the_hand_is_high():
    actions = commands([OPEN] * 4 + [SHUT] * 2, joints=0.5)
    hand_z = np.array([0.10, 0.08, 0.05, 0.03, 0.02, 0.02])  # the expert closes at tick 4, 2 cm up
    before = np.arange(0, 4)
    # the model says close on ticks 1 (6 cm above: too high) and 3 (1 cm above: fine), joints 0.01 rad off
    figures = grasp_timing.window_figures(commands([OPEN, SHUT, OPEN, SHUT], joints=0.51),
                                          commands([SHUT, OPEN]), actions, hand_z, before, close=4)
    assert figures["high_ticks"] == 3 and figures["shut_while_high"] == 1 and figures["closes_high"]
    assert figures["shut_at_close"] == 0.5
    assert figures["joint_error_rad"] == pytest.approx(0.01)
    on_time = grasp_timing.window_figures(commands([OPEN] * 4), commands([SHUT, SHUT]), actions, hand_z, before, 4)
    assert on_time["shut_while_high"] == 0 and not on_time["closes_high"] and on_time["shut_at_close"] == 1.0


def test_run_feeds_the_instruction_age(tmp_path):
    """A model with ``instruction_age`` gets each tick's age (it used to be called without one and raised)."""
    import argparse

    from mhc_model.checkpoint import save_checkpoint
    from mhc_model.config import preset
    from mhc_model.data import list_shards, load_episode
    from mhc_model.latency import random_policy

    from mhc_ros.collect import configure_parser
    from mhc_ros.collect import run as collect

    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert collect(parser.parse_args(["--task", "pick_place", "--episodes", "1", "--out", str(tmp_path / "demo"),
                                      "--no-bags", "--image-width", "48", "--image-height", "48"])) == 0
    episodes = [load_episode(p) for p in list_shards(tmp_path / "demo")]
    checkpoint = save_checkpoint(tmp_path / "age", random_policy(preset("tiny").replace(instruction_age=True)))
    figures = grasp_timing.run(str(checkpoint), episodes, window=5)
    assert figures["episodes"] == 1 and figures["high_ticks"] <= 5
    assert 0.0 <= figures["shut_at_expert_close"] <= 1.0 and figures["joint_error_mrad"] > 0
