"""bench/motion_phases.py: tick bins and the ball ADE table against constant velocity."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "motion_phases.py"
spec = importlib.util.spec_from_file_location("bench_motion_phases", SCRIPT)
motion_phases = importlib.util.module_from_spec(spec)
spec.loader.exec_module(motion_phases)


def test_bins_parse_and_bad_ones_are_named():
    assert motion_phases.parse_bins("0,20") == [(0, 20), (20, motion_phases.OPEN_END)]
    for bad in ["5,10", "0,10,10", "0,x", ""]:
        with pytest.raises(ValueError, match="--bins"):
            motion_phases.parse_bins(bad)


def test_table_splits_by_tick_and_outcome():
    """A ball rolling at 1 cm per tick: a model that predicts it exactly until tick 6, then predicts it
    stopped; the camera sees it exactly. Constant velocity is exact everywhere, the model only early."""
    def episode(success):
        ticks = []
        for t in range(16):
            future = np.array([[0.01 * (t + h), 0.0, 0.0] for h in range(1, 4)])
            if t >= 6:
                future[:] = [0.01 * t, 0.0, 0.0]  # predicted to stay where it is
            ticks.append((np.array([0.01 * t, 0.0, 0.0]), future, np.array([0.01 * t, 0.0, 0.0])))
        return {"success": success, "ticks": ticks}

    ticks = motion_phases.scored_ticks([episode(True), episode(False)])
    table = motion_phases.score(ticks, motion_phases.parse_bins("0,6"))
    rows = {(r["ticks_from"], r["episodes"]): r for r in table}
    early, late = rows[(0, "all")], rows[(6, "all")]
    assert early["n"] == 2 * 4 and late["n"] == 2 * (16 - 3 - 6)  # ticks 2..5 and 6..12 of each episode
    assert early["model_m"] == pytest.approx(0.0, abs=1e-12)
    assert late["model_m"] == pytest.approx(0.02)  # mean of 1, 2, 3 cm
    assert late["const_velocity_lag1_m"] == pytest.approx(0.0, abs=1e-12)
    assert rows[(6, "success")]["n"] == rows[(6, "failure")]["n"] == 16 - 3 - 6


def test_by_horizon_step_keeps_each_step_and_the_camera_error():
    """The camera sees the ball 1 cm off in y; the model predicts it stopped: its error grows by 1 cm a step,
    constant velocity's is the camera's 1 cm at every step."""
    ticks = []
    for t in range(12):
        future = np.array([[0.01 * t, 0.0, 0.0]] * 3)
        ticks.append((np.array([0.01 * t, 0.0, 0.0]), future, np.array([0.01 * t, 0.01, 0.0])))
    scored = motion_phases.scored_ticks([{"success": True, "ticks": ticks}])
    row = motion_phases.by_horizon_step(scored, 5)
    assert row["n"] == 3  # ticks 2, 3, 4
    assert row["model_m"] == pytest.approx([0.01, 0.02, 0.03])
    assert row["const_velocity_lag1_m"] == pytest.approx([0.01] * 3)
    assert row["camera_position_error_m"] == pytest.approx(0.01)
    assert motion_phases.by_horizon_step(scored, motion_phases.OPEN_END)["ticks_to"] is None
    with pytest.raises(ValueError, match="before tick 2"):
        motion_phases.by_horizon_step(scored, 2)
