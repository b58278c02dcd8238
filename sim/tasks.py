"""Tasks as data: instruction templates, scene sampling, plan, success and failure checks.

Directions (world frame): left = +y, right = -y, forward = +x (away from the robot), back = -x.
Every random choice of an episode is drawn from the ``np.random.Generator`` that ``make_episode`` gets,
in a fixed order, so (task, seed) fixes the episode.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from mhc_sim.scene import (
    BALL_RADIUS,
    BIN_HEIGHT,
    BIN_INNER_HALF,
    CUBE_HALF,
    CUBE_SLOTS,
    DIRECTIONS,
    TABLE_CENTER,
    TABLE_HALF_EXTENTS,
    ObjectPlacement,
)

if TYPE_CHECKING:
    from mhc_sim.world import TabletopWorld

SKILLS: tuple[str, ...] = ("move_to", "touch", "grasp", "lift", "place", "release", "push", "block", "retreat")

CUBE_REGION = ((0.38, 0.64), (-0.22, 0.22))  # x, y ranges (m) the arm reaches comfortably from above
PUSH_DISTANCE = 0.10                          # success: displacement along the direction (m)


@dataclass(frozen=True)
class EpisodeSpec:
    """One episode: instruction, goal (target slot, direction or None) and the expert's plan.

    plan: list of (skill, target) with skill in ``SKILLS`` and target an object slot or a direction.
    """

    task: str
    seed: int
    instruction: str
    template_index: int
    target: str
    direction: str | None
    plan: list[tuple[str, str]] = field(default_factory=list)
    max_steps: int = 200


Placements = dict[str, ObjectPlacement]


@dataclass(frozen=True)
class TaskSpec:
    """A task as data. ``sample_goal(rng) -> (target, direction)``; ``sample_scene(rng, target, direction)``
    places objects; ``success(world, episode)``; ``failure(world, episode) -> reason | None``;
    ``build_plan(target, direction)``; ``phrase(target, direction)`` fills the template fields."""

    name: str
    templates: tuple[str, ...]
    max_steps: int
    sample_goal: Callable[[np.random.Generator], tuple[str, str | None]]
    sample_scene: Callable[[np.random.Generator, str, str | None], Placements]
    build_plan: Callable[[str, str | None], list[tuple[str, str]]]
    success: Callable[[TabletopWorld, EpisodeSpec], bool]
    failure: Callable[[TabletopWorld, EpisodeSpec], str | None]


def _colour(slot: str) -> str:
    return slot.split("_")[0]


_DIRECTION_PHRASES = {"left": "to the left", "right": "to the right", "forward": "forward", "back": "back"}


def _fill(template: str, target: str, direction: str | None) -> str:
    return template.format(colour=_colour(target), where=_DIRECTION_PHRASES.get(direction or "", ""))


# ---------------------------------------------------------------------------------------------- sampling
def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance in the xy plane from point p to segment ab."""
    ab = b[:2] - a[:2]
    t = float(np.clip(np.dot(p[:2] - a[:2], ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p[:2] - (a[:2] + t * ab)))


def _uniform_xy(rng: np.random.Generator, region: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
    return np.array([rng.uniform(*region[0]), rng.uniform(*region[1])])


def _cube_scene(rng: np.random.Generator, target: str, direction: str | None) -> Placements:
    """Four cubes and the bin; the target's push path (if any) is kept clear of other objects."""
    placements: Placements = {}
    # The bin sits to one side. Cubes keep 0.19 m from its centre: its outer corner is 0.125 m out and an open
    # finger reaches 0.05 m beyond a cube centre, so a grasp never lands a finger on the rim.
    bin_xy = np.array([rng.uniform(0.42, 0.58), rng.choice([-1.0, 1.0]) * rng.uniform(0.30, 0.34)])
    placements["bin"] = ObjectPlacement(np.array([*bin_xy, 0.0]), 0.0)
    keepout: list[tuple[np.ndarray, np.ndarray, float]] = [(bin_xy, bin_xy, 0.19)]  # segment a-b, clearance
    order = [target] + [s for s in CUBE_SLOTS if s != target]
    for slot in order:
        for _ in range(1000):
            xy = _uniform_xy(rng, CUBE_REGION)
            if slot == target and direction is not None:
                d = np.array(DIRECTIONS[direction][:2])
                end = xy + d * 0.17
                # Keep the whole push (approach behind the cube to the end point) on the reachable table.
                if not (0.36 <= end[0] <= 0.68 and abs(end[1]) <= 0.28 and xy[0] - d[0] * 0.08 >= 0.33):
                    continue
                # The hand comes down behind the cube and sweeps to past its end: keep that strip off the bin.
                path = [xy + d * t for t in np.linspace(-0.09, 0.19, 8)]
                if any(_segment_distance(p, a, b) <= r + 0.02 for p in path for a, b, r in keepout):
                    continue
            if all(_segment_distance(np.array(xy), a, b) > r for a, b, r in keepout):
                break
        else:  # pragma: no cover - the regions are roomy; this would be a bug in the ranges above
            raise RuntimeError(f"could not place {slot}")
        placements[slot] = ObjectPlacement(np.array([*xy, CUBE_HALF]), float(rng.uniform(-np.pi / 4, np.pi / 4)))
        if slot == target and direction is not None:
            d = np.array(DIRECTIONS[direction][:2])
            keepout.append((xy - d * 0.09, xy + d * 0.19, 0.085))
        else:
            keepout.append((xy, xy, 0.085))
    return placements


def _sample_cube(rng: np.random.Generator) -> tuple[str, str | None]:
    return str(CUBE_SLOTS[rng.integers(len(CUBE_SLOTS))]), None


def _sample_cube_direction(rng: np.random.Generator) -> tuple[str, str | None]:
    slot = str(CUBE_SLOTS[rng.integers(len(CUBE_SLOTS))])
    return slot, str(list(DIRECTIONS)[rng.integers(len(DIRECTIONS))])


def _ball_scene(rng: np.random.Generator, target: str, direction: str | None) -> Placements:
    """The ball starts near one side edge and rolls across the table in front of the robot.

    Start y = +-0.45 m, x in [0.42, 0.58], speed 0.2-0.4 m/s, heading within 10 degrees of the y axis:
    it crosses y = 0 at x in about [0.34, 0.66] (reachable) and needs >= 1.5 s to cross the table.
    """
    side = float(rng.choice([-1.0, 1.0]))
    x0 = rng.uniform(0.42, 0.58)
    speed = rng.uniform(0.2, 0.4)
    heading = rng.uniform(-np.radians(10.0), np.radians(10.0))
    velocity = np.array([speed * np.sin(heading), -side * speed * np.cos(heading), 0.0])
    return {"ball": ObjectPlacement(np.array([x0, side * 0.45, BALL_RADIUS]), 0.0, velocity)}


# ---------------------------------------------------------------------------------------------- checks
def _target_fell(world: TabletopWorld, episode: EpisodeSpec) -> str | None:
    return "object_fell" if world.object_position(episode.target)[2] < -0.05 else None


def _reach_success(world: TabletopWorld, episode: EpisodeSpec) -> bool:
    distance = np.linalg.norm(world.ee_position() - world.object_position(episode.target))
    return bool(distance < 0.03 or world.in_gripper_contact(episode.target))


def _in_bin_success(world: TabletopWorld, episode: EpisodeSpec) -> bool:
    """The cube rests (slow, released) within the bin's inner footprint, below the rim."""
    cube, bin_pos = world.object_position(episode.target), world.object_position("bin")
    inside = bool(np.all(np.abs(cube[:2] - bin_pos[:2]) < BIN_INNER_HALF) and cube[2] < bin_pos[2] + BIN_HEIGHT)
    return (inside and float(np.linalg.norm(world.object_velocity(episode.target))) < 0.05
            and not world.in_gripper_contact(episode.target))


def _push_success(world: TabletopWorld, episode: EpisodeSpec) -> bool:
    """Moved >= PUSH_DISTANCE along the direction while staying on the table (z near its resting height)."""
    start, now = world.initial_position(episode.target), world.object_position(episode.target)
    along = float(np.dot(now - start, DIRECTIONS[episode.direction or "left"]))
    return along >= PUSH_DISTANCE and now[2] < CUBE_HALF + 0.015


def _push_failure(world: TabletopWorld, episode: EpisodeSpec) -> str | None:
    if world.object_position(episode.target)[2] > CUBE_HALF + 0.05:
        return "cube_lifted"  # the task says push, not carry
    return _target_fell(world, episode)


def ball_on_table(position: np.ndarray) -> bool:
    """Whether a ball centre (3,) is above the table top's footprint and not fallen."""
    centre, half = np.array(TABLE_CENTER), np.array(TABLE_HALF_EXTENTS)
    return bool(np.all(np.abs(position[:2] - centre[:2]) <= half[:2]) and position[2] > 0.0)


def _intercept_success(world: TabletopWorld, episode: EpisodeSpec) -> bool:
    return world.touched("ball") and ball_on_table(world.object_position("ball"))


def _intercept_failure(world: TabletopWorld, episode: EpisodeSpec) -> str | None:
    if world.touched("ball"):
        return None
    return None if ball_on_table(world.object_position("ball")) else "ball_left_table"


# ---------------------------------------------------------------------------------------------- registry
TASKS: dict[str, TaskSpec] = {
    "reach": TaskSpec(
        name="reach",
        templates=("touch the {colour} cube", "reach for the {colour} cube", "move your gripper to the {colour} cube",
                   "put your fingers on the {colour} block", "go and touch the {colour} cube",
                   "tap the {colour} cube"),
        max_steps=100,
        sample_goal=_sample_cube,
        sample_scene=_cube_scene,
        build_plan=lambda target, direction: [("move_to", target), ("touch", target)],
        success=_reach_success,
        failure=_target_fell,
    ),
    "pick_place": TaskSpec(
        name="pick_place",
        templates=("put the {colour} cube in the bin", "pick up the {colour} cube and drop it into the bin",
                   "place the {colour} block in the bin", "move the {colour} cube into the container",
                   "grab the {colour} cube and put it in the bin", "the {colour} cube goes in the bin"),
        max_steps=300,
        sample_goal=_sample_cube,
        sample_scene=_cube_scene,
        build_plan=lambda target, direction: [
            ("move_to", target), ("grasp", target), ("lift", target), ("move_to", "bin"), ("place", "bin"),
            ("release", target), ("retreat", target)],
        success=_in_bin_success,
        failure=_target_fell,
    ),
    "push": TaskSpec(
        name="push",
        templates=("push the {colour} cube {where}", "slide the {colour} block {where}",
                   "nudge the {colour} cube {where}", "shove the {colour} cube {where} without lifting it",
                   "move the {colour} cube {where} by pushing it"),
        max_steps=200,
        sample_goal=_sample_cube_direction,
        sample_scene=_cube_scene,
        build_plan=lambda target, direction: [("move_to", target), ("push", direction or "left"),
                                              ("retreat", target)],
        success=_push_success,
        failure=_push_failure,
    ),
    "intercept": TaskSpec(
        name="intercept",
        templates=("stop the rolling ball", "catch the ball before it rolls off the table", "block the rolling ball",
                   "intercept the ball", "don't let the ball roll off the table", "put your hand in the ball's way"),
        max_steps=160,
        sample_goal=lambda rng: ("ball", None),
        sample_scene=_ball_scene,
        build_plan=lambda target, direction: [("move_to", "ball"), ("block", "ball")],
        success=_intercept_success,
        failure=_intercept_failure,
    ),
}


# Paraphrases that make_episode never draws, so `mhc collect` never trains on them: evaluation only.
# Built from words of the training templates, in new combinations (no unknown words).
HELD_OUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "reach": ("move the gripper to the {colour} block", "reach the {colour} block",
              "touch the {colour} block"),
    "pick_place": ("put the {colour} block into the container", "pick the {colour} block up and put it in the bin",
                   "drop the {colour} cube in the container"),
    "push": ("push the {colour} block {where}", "slide the {colour} cube {where} without lifting it",
             "move the {colour} block {where} by pushing it"),
    "intercept": ("stop the ball before it rolls off the table", "catch the rolling ball",
                  "put your gripper in the ball's way"),
}


def held_out_instruction(task: str, seed: int) -> str:
    """A held-out paraphrase of episode (task, seed)'s instruction (same target and direction)."""
    spec = episode_spec(task, seed)
    templates = HELD_OUT_TEMPLATES[task]
    return _fill(templates[int(seed) % len(templates)], spec.target, spec.direction)


def make_episode(task: str, seed: int, rng: np.random.Generator) -> tuple[EpisodeSpec, Placements]:
    """Draw an episode of ``task`` from ``rng``: goal, instruction template, then the object placements."""
    spec = TASKS[task]
    target, direction = spec.sample_goal(rng)
    template_index = int(rng.integers(len(spec.templates)))
    placements = spec.sample_scene(rng, target, direction)
    episode = EpisodeSpec(task=task, seed=seed, instruction=_fill(spec.templates[template_index], target, direction),
                          template_index=template_index, target=target, direction=direction,
                          plan=spec.build_plan(target, direction), max_steps=spec.max_steps)
    return episode, placements


def episode_spec(task: str, seed: int) -> EpisodeSpec:
    """The EpisodeSpec that ``TabletopWorld.reset(task, seed)`` would make, without building a world."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r} (expected one of {sorted(TASKS)})")
    return make_episode(task, int(seed), np.random.default_rng(int(seed)))[0]
