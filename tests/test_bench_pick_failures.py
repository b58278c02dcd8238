"""bench/pick_failures.py: close events and the kinds of failed pick_place episodes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "pick_failures.py"
spec = importlib.util.spec_from_file_location("bench_pick_failures", SCRIPT)
pick_failures = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pick_failures)

OPEN, SHUT, REST = 0.08, 0.0, 0.022  # gripper commands (m); the cube's height on the table (m)


def track(width, rise):
    return np.array(width, float), REST + np.array(rise, float)


def test_close_events_pair_each_close_with_its_reopening():
    width = [OPEN, SHUT, SHUT, OPEN, OPEN, SHUT, SHUT]
    assert pick_failures.close_events(np.array(width)) == [(1, 3), (5, 7)]
    assert pick_failures.close_events(np.full(4, OPEN)) == []


def test_failure_kinds():
    kind = pick_failures.failure_kind
    assert kind(*track([OPEN] * 4, [0] * 4)) == "never closed"
    assert kind(*track([OPEN, SHUT, OPEN, SHUT], [0, 0, 0.002, 0])) == "never picked up"
    assert kind(*track([OPEN, SHUT, SHUT, OPEN, OPEN], [0, 0.01, 0.15, 0.0, 0.0])) == "lifted, then lost"
    assert kind(*track([OPEN, SHUT, SHUT, SHUT], [0, 0.01, 0.02, 0.02])) == "held low until the time ran out"
    assert kind(*track([OPEN, SHUT, SHUT, SHUT], [0, 0.01, 0.15, 0.15])) == "other"  # carried, time ran out


def test_describe_gives_offsets_and_rise_per_close():
    width, cube_z = track([OPEN, SHUT, OPEN, SHUT, SHUT], [0, 0, 0, 0.01, 0.02])
    cube = np.stack([np.full(5, 0.5), np.zeros(5), cube_z], axis=1)
    hand = cube + np.array([0.03, 0.0, 0.01])
    angle = pick_failures.face_angle_deg(np.radians([0, 30, 0, 100, 0]), np.zeros(5))
    assert angle.tolist() == pytest.approx([0, 30, 0, 10, 0])  # 100° is 10° from the next faces
    episode = pick_failures.describe(hand, cube, width, angle)
    assert episode["kind"] == "held low until the time ran out" and episode["steps"] == 5
    assert [c["step"] for c in episode["closes"]] == [1, 3]
    assert episode["closes"][0]["hand_minus_cube_cm"] == [3.0, 0.0, 1.0]
    assert [c["face_angle_deg"] for c in episode["closes"]] == [30.0, 10.0]
    assert [c["cube_rise_cm"] for c in episode["closes"]] == [0.0, 2.0]


def test_closed_high_counts_first_closes_above_the_cube():
    at = [{"hand_minus_cube_cm": [0.0, 0.0, z]} for z in (0.2, 1.4, 1.6, 2.9)]
    assert pick_failures.closed_high(at) == 2
    assert pick_failures.closed_high([]) == 0
