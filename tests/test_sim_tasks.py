"""Tasks as data, success/failure checks and the scripted experts."""

import numpy as np
import pytest
from mhc_sim import (
    DIRECTIONS,
    OBJECT_SLOTS,
    SKILLS,
    TASKS,
    ExpertPolicy,
    TabletopWorld,
    WorldConfig,
    evaluate,
    run_episode,
)
from mhc_sim.experts import Expert
from mhc_sim.scene import HOME_JOINTS


@pytest.fixture(scope="module")
def world():
    w = TabletopWorld(WorldConfig(render=False))
    yield w
    w.close()


@pytest.fixture(scope="module")
def expert():
    return ExpertPolicy()


def _up(height):
    return np.array([0.0, 0.0, height])


class HoldStill:
    """Keeps the arm at home: nothing should ever succeed."""

    def reset(self, episode):
        pass

    def act(self, obs):
        return np.array([*HOME_JOINTS, 0.08])


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_is_data(task, world):
    spec = TASKS[task]
    assert spec.name == task and len(spec.templates) >= 5 and len(set(spec.templates)) == len(spec.templates)
    instructions = set()
    for seed in range(8):
        world.reset(task, seed)
        episode = world.episode
        assert episode.task == task and episode.seed == seed and episode.max_steps == spec.max_steps
        assert "{" not in episode.instruction and 0 <= episode.template_index < len(spec.templates)
        assert episode.target in OBJECT_SLOTS
        for skill, target in episode.plan:
            assert skill in SKILLS and (target in OBJECT_SLOTS or target in DIRECTIONS)
        assert not world.success() and world.failed() is None
        instructions.add(episode.instruction)
    assert len(instructions) > 1


def test_reach_success_check(world):
    world.reset("reach", 0)
    target = world.episode.target
    world.set_object_pose(target, world.ee_position() + _up(0.01))
    assert world.success()


def test_pick_place_success_check(world):
    world.reset("pick_place", 0)
    target = world.episode.target
    bin_pos = world.object_position("bin")
    world.set_object_pose(target, bin_pos + _up(0.2))
    assert not world.success()  # above the bin, not in it
    world.set_object_pose(target, bin_pos + np.array([0.02, -0.02, 0.031]))
    assert world.success()


def test_push_success_check(world):
    world.reset("push", 4)
    target, direction = world.episode.target, np.array(DIRECTIONS[world.episode.direction])
    start = world.initial_position(target)
    world.set_object_pose(target, start + direction * 0.08)
    assert not world.success()
    world.set_object_pose(target, start + direction * 0.12)
    assert world.success()
    world.set_object_pose(target, start + direction * 0.12 + _up(0.1))  # carried, not pushed
    assert not world.success() and world.failed() == "cube_lifted"


def test_intercept_fails_when_ball_leaves_table(world):
    result = run_episode(world, "intercept", 2, HoldStill())
    assert not result.success and result.failure == "ball_left_table"
    assert result.sim_time >= 1.5  # the ball takes a while to cross


@pytest.mark.parametrize("task", sorted(TASKS))
def test_expert_succeeds(task, world, expert):
    for seed in (0, 1):
        result = run_episode(world, task, seed, expert)
        assert result.success, (task, seed, result)


class NoVelocities(ExpertPolicy):
    """The expert fed observations without object velocities, as it gets them from ROS poses."""

    def act(self, obs):
        obs.object_velocities = np.full_like(obs.object_velocities, np.nan)
        return super().act(obs)


def test_intercept_expert_needs_only_positions(world):
    assert run_episode(world, "intercept", 5, NoVelocities()).success


def test_late_start_holds_the_arm_then_is_not_a_demonstration(world):
    """ExpertPolicy(late_start=1) on intercept: the arm's commands stay put for the drawn delay, every step
    is flagged not to imitate; other tasks start at once. Bad probabilities and delays are named."""
    late = ExpertPolicy(late_start=1.0)
    actions, flags = [], []
    run_episode(world, "intercept", 7, late, on_step=lambda t, obs, action: (actions.append(action),
                                                                             flags.append(late.demonstrating)))
    delay = late.start_delay
    assert 55 <= delay <= 70 and not any(flags)
    assert np.abs(np.array(actions[:delay])[:, :7] - actions[0][:7]).max() < 1e-9
    run_episode(world, "reach", 7, late)
    assert late.start_delay == 0 and late.demonstrating
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match=f"late_start={bad}"):
            ExpertPolicy(late_start=bad)
    with pytest.raises(ValueError, match="start_delay=-1"):
        Expert(world.episode, start_delay=-1)


def test_expert_phase_advances(world, expert):
    phases = []
    run_episode(world, "pick_place", 3, expert, on_step=lambda t, obs, action: phases.append(expert.phase))
    assert phases[0] == 0 and phases == sorted(phases) and phases[-1] >= 4


def test_evaluate_summary():
    summary = evaluate("reach", 2, seed=10)
    assert summary["task"] == "reach" and summary["episodes"] == 2 and summary["seeds"] == [10, 11]
    assert 0.0 <= summary["success_rate"] <= 1.0 and summary["mean_steps"] > 0
    assert isinstance(summary["failures"], dict)
    with pytest.raises(ValueError, match="episodes=0"):
        evaluate("reach", 0)


def test_episode_spec_matches_world(world):
    from mhc_sim import episode_spec

    world.reset("push", 11)
    assert episode_spec("push", 11) == world.episode
