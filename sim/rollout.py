"""Run episodes with a policy and summarise success (the JSON ``mhc eval`` prints)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from mhc_sim.experts import Expert
from mhc_sim.kinematics import PandaKinematics
from mhc_sim.tasks import EpisodeSpec, held_out_instruction
from mhc_sim.world import Observation, TabletopWorld, WorldConfig


class Policy(Protocol):
    """What ``run_episode`` drives: ``reset(episode)`` then ``act(obs) -> (8,)`` every control period."""

    def reset(self, episode: EpisodeSpec) -> None: ...

    def act(self, obs: Observation) -> np.ndarray: ...


GRASP_MISS_RANGE = (0.035, 0.045)  # metres off the cube's centre of a deliberate miss, either side
# Control periods the arm holds still in a late start: the expert still stops the ball after 30, about half
# the time after 45, and from 55 on nearly never (11 of 12); the ball leaves the table near period 70.
LATE_START_RANGE = (55, 70)


class ExpertPolicy:
    """The scripted expert behind the ``Policy`` interface; one IK client reused across episodes.

    ``grasp_miss``: probability that an episode with a grasp starts with a deliberate miss (the first
    grasp aimed ``GRASP_MISS_RANGE`` beside the cube, drawn from the episode's seed), so recordings show
    the expert re-grasping; :attr:`demonstrating` is False during the miss.
    ``late_start``: probability that an intercept episode starts late (the arm held still for
    ``LATE_START_RANGE`` periods, drawn from the episode's seed), so recordings show the ball rolling on
    past the arm; :attr:`demonstrating` is False all through such an episode.
    """

    def __init__(self, grasp_miss: float = 0.0, late_start: float = 0.0) -> None:
        for name, value in (("grasp_miss", grasp_miss), ("late_start", late_start)):
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value} must be in [0, 1]")
        self._kinematics = PandaKinematics()
        self.grasp_miss = grasp_miss
        self.late_start = late_start
        self.expert: Expert | None = None

    def reset(self, episode: EpisodeSpec) -> None:
        miss, delay = 0.0, 0
        if self.grasp_miss > 0 and any(skill == "grasp" for skill, _ in episode.plan):
            rng = np.random.default_rng([episode.seed, 2])
            if rng.random() < self.grasp_miss:
                miss = float(rng.choice([-1.0, 1.0]) * rng.uniform(*GRASP_MISS_RANGE))
        if self.late_start > 0 and any(skill == "block" for skill, _ in episode.plan):
            rng = np.random.default_rng([episode.seed, 3])
            if rng.random() < self.late_start:
                delay = int(rng.integers(LATE_START_RANGE[0], LATE_START_RANGE[1] + 1))
        self.expert = Expert(episode, self._kinematics, miss, delay)

    @property
    def demonstrating(self) -> bool:
        """False while the expert performs a deliberate miss or a late start (not to be imitated)."""
        return self.expert is None or self.expert.demonstrating

    @property
    def start_delay(self) -> int:
        """Periods this episode's late start holds the arm still (0: not a late start)."""
        return 0 if self.expert is None else self.expert.start_delay

    def act(self, obs: Observation) -> np.ndarray:
        if self.expert is None:
            raise RuntimeError("ExpertPolicy.act() before reset(episode)")
        return self.expert.act(obs)

    @property
    def phase(self) -> int:
        """Index of the current step of the episode's plan."""
        return 0 if self.expert is None else self.expert.phase


@dataclass
class EpisodeResult:
    """Outcome of one episode: success, control steps taken, simulated seconds, failure reason or None."""

    task: str
    seed: int
    instruction: str
    success: bool
    steps: int
    sim_time: float
    failure: str | None


def run_episode(world: TabletopWorld, task: str, seed: int, policy: Policy,
                on_step: Callable[[int, Observation, np.ndarray], None] | None = None,
                instruction: str | None = None) -> EpisodeResult:
    """Reset ``world`` to (task, seed) and step ``policy`` until success, failure or ``max_steps``.

    ``on_step(t, obs, action)`` is called with observation t and the action commanded after seeing it.
    ``instruction`` replaces the episode's own (e.g. a held-out paraphrase).
    """
    obs = world.reset(task, seed, instruction)
    episode = world.episode
    assert episode is not None
    policy.reset(episode)
    success, failure = False, None
    for t in range(episode.max_steps):
        action = np.asarray(policy.act(obs), dtype=float)
        if on_step is not None:
            on_step(t, obs, action)
        obs = world.step(action)
        if world.success():
            success = True
            break
        failure = world.failed()
        if failure is not None:
            break
    else:
        failure = "timeout"
    return EpisodeResult(task=task, seed=seed, instruction=episode.instruction, success=success,
                         steps=world.steps, sim_time=world.sim_time, failure=failure)


INSTRUCTION_SETS = ("train", "held-out", "mixed")


def episode_instructions(task: str, seed: int, episodes: int, instructions: str) -> list[str | None]:
    """Per episode (seeds ``seed ..``), the instruction replacing its own, or None to keep it: ``train``
    keeps every one, ``held-out`` replaces every one with a paraphrase from ``HELD_OUT_TEMPLATES``,
    ``mixed`` every second one (episodes 1, 3, ...)."""
    if instructions not in INSTRUCTION_SETS:
        raise ValueError(f"instructions={instructions!r} unknown ({', '.join(INSTRUCTION_SETS)})")
    held_out = [instructions == "held-out" or (instructions == "mixed" and i % 2 == 1) for i in range(episodes)]
    return [held_out_instruction(task, seed + i) if h else None for i, h in enumerate(held_out)]


def success_by_instructions(successes: list[bool], replaced: list[str | None], instructions: str) -> dict[str, float]:
    """``success_rate_train_instructions`` / ``success_rate_held_out_instructions`` of a run whose episodes
    had ``replaced`` instructions (:func:`episode_instructions` for ``instructions``); empty for ``train``."""
    if instructions == "train":
        return {}
    rates = {}
    for name, held_out in (("train", False), ("held_out", True)):
        subset = [ok for ok, text in zip(successes, replaced, strict=True) if (text is not None) == held_out]
        if subset:
            rates[f"success_rate_{name}_instructions"] = sum(subset) / len(subset)
    return rates


def evaluate(task: str, episodes: int, seed: int = 0, policy_factory: Callable[[], Policy] = ExpertPolicy,
             config: WorldConfig | None = None, instructions: str = "train",
             on_step: Callable[[TabletopWorld, int, Observation, np.ndarray], None] | None = None,
             on_result: Callable[[EpisodeResult], None] | None = None) -> dict:
    """Run seeds ``seed .. seed+episodes-1`` of ``task``; returns task, episodes, success_rate, mean_steps,
    mean_sim_time_s, failures (reason -> count), seeds (of failed episodes: ``failed_seeds``) and wall_time_s.

    ``instructions``: ``train`` (the episode's own template), ``held-out`` (a paraphrase from
    ``HELD_OUT_TEMPLATES``, never in training data) or ``mixed`` (every second episode held out); with
    held-out episodes the report adds ``success_rate_train_instructions`` / ``success_rate_held_out_instructions``.
    ``on_step(world, t, obs, action)`` and ``on_result(result)`` observe every step and episode.
    """
    if episodes < 1:
        raise ValueError(f"episodes={episodes!r} must be >= 1")
    replaced = episode_instructions(task, seed, episodes, instructions)
    world = TabletopWorld(config or WorldConfig(render=False))
    policy = policy_factory()
    step_hook = None if on_step is None else (lambda t, obs, action: on_step(world, t, obs, action))
    results = []
    start = time.perf_counter()
    try:
        for s, instruction in zip(range(seed, seed + episodes), replaced, strict=True):
            result = run_episode(world, task, s, policy, on_step=step_hook, instruction=instruction)
            results.append(result)
            if on_result is not None:
                on_result(result)
    finally:
        world.close()
    wall = time.perf_counter() - start
    summary = {
        "task": task,
        "episodes": episodes,
        "success_rate": sum(r.success for r in results) / episodes,
        "mean_steps": float(np.mean([r.steps for r in results])),
        "mean_sim_time_s": float(np.mean([r.sim_time for r in results])),
        "failures": dict(Counter(r.failure for r in results if not r.success)),
        "seeds": [r.seed for r in results],
        "failed_seeds": [r.seed for r in results if not r.success],
        "instructions": instructions,
        "wall_time_s": wall,
    }
    summary.update(success_by_instructions([r.success for r in results], replaced, instructions))
    return summary
