"""Pure control logic of ``mhc_controller``: smoothing, limits, watchdog, guards, latency (no ROS graph)."""

import math

import numpy as np
import pytest

from mhc_ros import control_logic as cl

DT = 0.05
LOWER, UPPER = np.array(cl.PANDA_LOWER), np.array(cl.PANDA_UPPER)
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785])


def _limiter(margin=0.05, vmax=1.5, amax=8.0):
    limiter = cl.JointLimiter(LOWER, UPPER, margin, vmax, amax, DT)
    limiter.reset(HOME)
    return limiter


@pytest.mark.parametrize("mode, bound", [("ensemble", 0.2 + 1e-9), ("crossfade", 0.5), ("none", 1.0)])
def test_smoothing_bounds_the_step_at_chunk_boundaries(mode, bound):
    # Chunks (K=5) predict "stay at 0" until tick 6, then every new chunk says "stay at 1": a raw
    # switch to the newest chunk jumps by 1.0 at that boundary.
    blender = cl.ActionBlender(mode, decay=0.0, crossfade_ticks=3)
    outputs = []
    for tick in range(16):
        blender.add(np.full((5, 8), 0.0 if tick < 6 else 1.0), tick)
        outputs.append(blender.action(tick))
    steps = np.abs(np.diff(np.stack(outputs), axis=0))
    assert steps.max() <= bound and (mode != "none" or steps.max() == 1.0)
    np.testing.assert_allclose(outputs[-1], np.ones(8))  # ... and it still arrives where the model says


def test_crossfade_step_is_a_fraction_of_the_disagreement():
    blender = cl.ActionBlender("crossfade", crossfade_ticks=4)
    blender.add(np.zeros((8, 8)), 0)
    blender.add(np.ones((8, 8)), 2)
    values = [blender.action(t)[0] for t in range(2, 7)]
    np.testing.assert_allclose(values, [0.25, 0.5, 0.75, 1.0, 1.0])


def test_no_smoothing_follows_the_newest_chunk_and_holds_its_last_row():
    blender = cl.ActionBlender("none")
    assert blender.action(0) is None
    blender.add(np.arange(16, dtype=float).reshape(2, 8), 4)
    np.testing.assert_array_equal(blender.action(4), np.arange(8))
    np.testing.assert_array_equal(blender.action(9), np.arange(8, 16))  # past the end: last row holds
    with pytest.raises(ValueError, match="smoothing 'fancy' unknown"):
        cl.ActionBlender("fancy")


def test_ensemble_averages_every_prediction_of_the_same_tick():
    blender = cl.ActionBlender("ensemble", decay=0.0)
    blender.add(np.array([[0.0] * 8, [2.0] * 8]), 0)
    blender.add(np.array([[4.0] * 8, [6.0] * 8]), 1)
    np.testing.assert_allclose(blender.action(1), np.full(8, 3.0))  # mean of 2 (chunk 0, row 1) and 4
    np.testing.assert_allclose(blender.action(2), np.full(8, 6.0))  # chunk 0 expired


def test_first_command_starts_from_the_measured_state():
    limiter = _limiter()
    far = HOME + 1.0
    first = limiter.step(far)
    # at rest, one period of max acceleration: |Δ| <= a dt²
    assert np.abs(first - HOME).max() <= 8.0 * DT * DT + 1e-12
    limiter.reset(HOME + 0.2)  # after a hold: restart from the newly measured positions
    assert np.abs(limiter.step(far) - (HOME + 0.2)).max() <= 8.0 * DT * DT + 1e-12


def test_velocity_and_acceleration_limits_per_period():
    limiter = _limiter(vmax=1.5, amax=8.0)
    commands = [HOME.copy()]
    target = HOME.copy()
    target[0] = 2.5
    for _ in range(60):
        commands.append(limiter.step(target))
    commands = np.stack(commands)
    velocity = np.diff(commands, axis=0) / DT
    acceleration = np.diff(velocity, axis=0) / DT
    assert np.abs(velocity).max() <= 1.5 + 1e-9
    assert np.abs(acceleration).max() <= 8.0 + 1e-6
    assert abs(commands[-1, 0] - 2.5) < 1e-6  # arrives without overshoot
    assert commands[:, 0].max() <= 2.5 + 2e-3  # braking planned ahead: overshoot < 2 mrad


def test_position_limits_clamp_out_of_range_targets_with_margin():
    limiter = _limiter(margin=0.05, vmax=100.0, amax=1e5)
    for _ in range(5):
        command = limiter.step(np.array([10.0, -10.0, 5.0, 3.0, -7.0, 9.0, 4.0]))
    assert np.all(command <= UPPER - 0.05 + 1e-12) and np.all(command >= LOWER + 0.05 - 1e-12)
    assert command[3] == pytest.approx(-0.05)  # panda_joint4 upper limit 0.0 rad minus the margin
    # a start inside the margin band never moves further out
    limiter.reset(np.array([0, 0, 0, -0.01, 0, 1.0, 0]))
    assert limiter.step(np.array([0, 0, 0, 0.0, 0, 1.0, 0]))[3] <= -0.01
    with pytest.raises(ValueError, match="leave no room"):
        cl.JointLimiter(LOWER, UPPER, 2.0, 1.0, 1.0, DT)
    assert cl.clamp_gripper(0.5) == cl.GRIPPER_MAX_WIDTH and cl.clamp_gripper(-1.0) == 0.0


def test_watchdog_and_modes():
    watchdog = cl.Watchdog(("image", "joint_states"), 0.3)
    assert watchdog.stale(0.0) == ["image", "joint_states"]  # never seen
    watchdog.feed("image", 1.0)
    watchdog.feed("joint_states", 1.1)
    assert watchdog.stale(1.25) == []
    assert watchdog.stale(1.35) == ["image"]
    assert cl.decide_mode(False, [], True) == cl.OK
    assert cl.decide_mode(False, [], False) == cl.NO_INSTRUCTION
    assert cl.decide_mode(False, ["image"], True) == cl.STALE
    assert cl.decide_mode(True, ["image"], False) == cl.STOPPED


def test_nan_guards_on_inputs_and_outputs():
    assert cl.all_finite(np.zeros(3), np.ones(2))
    assert not cl.all_finite(np.zeros(3), np.array([1.0, math.nan]))
    assert not cl.all_finite(np.array([math.inf]))
    chunk = np.zeros((4, 8))
    assert cl.validate_chunk(chunk).shape == (4, 8)
    chunk[2, 3] = math.nan
    with pytest.raises(cl.InputRejected) as err:
        cl.validate_chunk(chunk)
    assert err.value.reason == "output_nan"
    with pytest.raises(cl.InputRejected) as err:
        cl.validate_chunk(np.zeros((4, 7)))
    assert err.value.reason == "output_shape"


def test_input_faults_name_their_reason():
    assert cl.image_fault("rgb8", 4, 4, 12, 48) is None
    assert cl.image_fault("yuv422", 4, 4, 8, 32).reason == "image_encoding"
    assert cl.image_fault("rgb8", 0, 0, 0, 0).reason == "image_empty"
    assert cl.image_fault("rgb8", 4, 4, 12, 47).reason == "image_size"
    assert cl.image_fault("rgb8", 4, 4, 10, 48).reason == "image_size"
    names = [f"j{i}" for i in range(3)]
    assert cl.joint_state_fault(names, [0, 0, 0], [], names) is None
    assert cl.joint_state_fault([*names, "extra"], [0] * 4, [0] * 4, names) is None
    assert cl.joint_state_fault(names, [0, 0], [], names).reason == "joint_length"
    assert cl.joint_state_fault(names[:2], [0, 0], [], names).reason == "joint_missing"
    assert cl.instruction_fault("pick the red cube", 4096) is None
    assert cl.instruction_fault("x" * 5000, 4096).reason == "instruction_too_long"
    assert cl.instruction_fault("  ", 4096).reason == "instruction_empty"


def test_joint_history_pads_with_the_oldest_state():
    history = cl.JointHistory(3)
    history.push(np.ones(9), np.zeros(9))
    array = history.array()
    assert array.shape == (3, 18) and array.dtype == np.float32
    history.push(2 * np.ones(9), np.zeros(9))
    np.testing.assert_array_equal(history.array()[:, 0], [1, 1, 2])
    for value in (3, 4):
        history.push(value * np.ones(9), np.zeros(9))
    np.testing.assert_array_equal(history.array()[:, 0], [2, 3, 4])


def test_latency_percentiles():
    stats = cl.LatencyStats(window=100)
    assert all(math.isnan(v) for v in stats.percentiles_ms())
    for ms in range(1, 101):
        stats.add(ms / 1000.0)
    p50, p99 = stats.percentiles_ms()
    assert p50 == pytest.approx(50.5) and p99 == pytest.approx(99.01)
    for _ in range(100):
        stats.add(0.001)  # the window forgets old samples
    assert stats.percentiles_ms()[1] == pytest.approx(1.0)
