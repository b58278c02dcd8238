"""TabletopWorld: configuration, joints by name, cameras, actions, determinism."""

import numpy as np
import pytest
from mhc_sim import JOINT_NAMES, OBJECT_SLOTS, TabletopWorld, WorldConfig, make_expert


@pytest.fixture(scope="module")
def world():
    w = TabletopWorld(WorldConfig(image_width=64, image_height=48, wrist_camera=True))
    yield w
    w.close()


@pytest.mark.parametrize(("kwargs", "needle"), [
    ({"image_width": 0}, "image_width=0"),
    ({"image_height": 5000}, "image_height=5000"),
    ({"control_hz": -1.0}, "control_hz=-1.0"),
    ({"sim_dt": 0.0}, "sim_dt=0.0"),
    ({"control_hz": 7.0}, "control_hz=7.0"),  # 240/7 physics steps per period is not whole
])
def test_bad_config_names_the_value(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        WorldConfig(**kwargs)


def test_substeps():
    assert WorldConfig().substeps == 12
    assert WorldConfig(control_hz=10.0).substeps == 24


def test_joint_limits_by_name(world):
    lower, upper, velocity = world.joint_limits()
    assert lower.shape == upper.shape == velocity.shape == (9,)
    assert upper[JOINT_NAMES.index("panda_joint4")] == pytest.approx(0.0)
    assert lower[JOINT_NAMES.index("panda_joint4")] == pytest.approx(-3.1416)
    assert upper[JOINT_NAMES.index("panda_finger_joint1")] == pytest.approx(0.04)
    assert np.all(upper > lower) and np.all(velocity > 0)


def test_observation_shapes_and_cameras(world):
    obs = world.reset("pick_place", 0)
    assert obs.image.shape == (48, 64, 3) and obs.image.dtype == np.uint8
    assert obs.wrist_image.shape == (48, 64, 3)
    assert obs.image.std() > 5  # not blank
    assert obs.joint_names == JOINT_NAMES and obs.joint_positions.shape == (9,)
    assert obs.ee_position.shape == (3,) and obs.ee_orientation.shape == (4,)
    assert obs.object_positions.shape == (6, 3) and obs.object_orientations.shape == (6, 4)
    assert obs.object_velocities.shape == (6, 3)
    assert obs.object_present.tolist() == [True, True, True, True, False, True]
    assert np.all(obs.object_positions[OBJECT_SLOTS.index("ball")] == 0)
    intr = world.camera_intrinsics()
    assert (intr["width"], intr["height"], intr["cx"], intr["cy"]) == (64, 48, 32.0, 24.0)
    # 55 degree vertical field of view: fy = (H / 2) / tan(27.5 deg).
    assert intr["fy"] == pytest.approx(24.0 / np.tan(np.radians(27.5)), rel=1e-4)
    assert intr["fx"] == pytest.approx(intr["fy"], rel=1e-4)


def test_render_off_gives_no_image():
    with TabletopWorld(WorldConfig(render=False)) as w:
        assert w.reset("reach", 1).image is None


def test_bad_actions_name_the_value(world):
    world.reset("reach", 0)
    with pytest.raises(ValueError, match=r"\(7,\)"):
        world.step(np.zeros(7))
    bad = np.zeros(8)
    bad[2] = np.nan
    with pytest.raises(ValueError, match="nan"):
        world.step(bad)
    with pytest.raises(ValueError, match="'juggle'"):
        world.reset("juggle", 0)


def _trajectory(task: str, seed: int, steps: int) -> list:
    with TabletopWorld(WorldConfig(image_width=32, image_height=32)) as w:
        obs = w.reset(task, seed)
        expert = make_expert(w.episode)
        frames = [obs]
        for _ in range(steps):
            obs = w.step(expert.act(obs))
            frames.append(obs)
        return frames


@pytest.mark.parametrize("task", ["intercept", "pick_place"])
def test_same_seed_is_bit_identical_across_worlds(task):
    a, b = _trajectory(task, 7, 25), _trajectory(task, 7, 25)
    for oa, ob in zip(a, b, strict=True):
        assert np.array_equal(oa.joint_positions, ob.joint_positions)
        assert np.array_equal(oa.object_positions, ob.object_positions)
        assert np.array_equal(oa.object_velocities, ob.object_velocities)
        assert np.array_equal(oa.image, ob.image)


def test_reset_twice_in_one_world_is_identical(world):
    first = world.reset("push", 3)
    action = np.r_[first.joint_positions[:7] + 0.05, 0.02]
    run1 = [world.step(action).object_positions for _ in range(5)]
    again = world.reset("push", 3)
    assert np.array_equal(first.image, again.image)
    run2 = [world.step(action).object_positions for _ in range(5)]
    assert all(np.array_equal(x, y) for x, y in zip(run1, run2, strict=True))


def test_different_seeds_differ(world):
    a = world.reset("reach", 0).object_positions
    b = world.reset("reach", 1).object_positions
    assert not np.allclose(a, b)


def test_step_clips_to_limits(world):
    world.reset("reach", 0)
    obs = world.step(np.array([10.0, 0, 0, 10.0, 0, 0, 0, 5.0]))  # out of range: clipped, not an error
    _, upper, _ = world.joint_limits()
    assert obs.joint_positions[3] <= upper[3] + 1e-3
    assert world.steps == 1 and world.sim_time == pytest.approx(0.05)


def test_connect_keeps_stdout_clean(capfd):
    # `mhc eval --json` prints JSON on stdout; PyBullet's connect banner must not end up there.
    with TabletopWorld(WorldConfig(render=False)):
        pass
    assert "argv" not in capfd.readouterr().out
