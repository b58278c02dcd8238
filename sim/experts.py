"""Scripted IK experts: follow an episode's plan reading only the Observation and the EpisodeSpec.

Each plan step ``(skill, target)`` is a small controller returning a Cartesian goal for the grasp frame
(``panda_grasptarget``, world frame, metres), a gripper width (m) and a yaw (rad, top-down grasp). The
commanded point moves towards the goal by at most a few centimetres per control period, so motion is smooth
and the hand does not sweep objects away. Object velocities are never read: the intercept expert fits them
from positions, as it must when it runs from ROS pose messages.
"""

from __future__ import annotations

from collections import deque

import numpy as np
from mhc_sim.kinematics import PandaKinematics, top_down_orientation
from mhc_sim.scene import CUBE_HALF, DIRECTIONS, HOME_JOINTS, MAX_GRIPPER_WIDTH, OBJECT_SLOTS
from mhc_sim.tasks import EpisodeSpec
from mhc_sim.world import Observation

HOVER = 0.10          # grasp-frame height above a cube's centre before descending (m)
CARRY_Z = 0.22        # carrying height (m), clears the bin rim with the cube hanging below
STEP = 0.02           # default Cartesian step per control period (m)
YAW_STEP = 0.15       # max yaw change per control period (rad)
MISS_CLEARANCE = 0.06  # lifting this far above a cube that stayed on the table means the grasp missed (m)
INTERCEPT_OFFSET = 0.10  # the hand waits this far past the table centre line, on the ball's far side (m)


def _up(height: float) -> np.ndarray:
    """World-frame offset (3,) of ``height`` metres straight up."""
    return np.array([0.0, 0.0, height])


def yaw_of(quaternion: np.ndarray) -> float:
    """Rotation (rad) about the world's vertical of an ``xyzw`` quaternion."""
    x, y, z, w = quaternion
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def _cube_grasp_yaw(quaternion: np.ndarray) -> float:
    """A cube looks the same every 90 degrees: pick the equivalent yaw nearest the home yaw (0)."""
    yaw = yaw_of(quaternion)
    return float((yaw + np.pi / 4) % (np.pi / 2) - np.pi / 4)


class Expert:
    """Plan-following expert. ``act(obs) -> (8,)`` action; ``phase`` indexes ``episode.plan``."""

    def __init__(self, episode: EpisodeSpec, kinematics: PandaKinematics | None = None,
                 miss_offset: float = 0.0, start_delay: int = 0) -> None:
        """``miss_offset`` (m, signed): the first grasp aims this far off the cube's centre along the hand's
        x axis (across the fingers' closing direction), so the fingers close beside the cube — a
        deliberate miss that shows the recovery (see :attr:`demonstrating`). 0: no miss.
        ``start_delay`` (control periods): hold the arm still this long before following the plan — a
        deliberately late start (on intercept the ball rolls past the arm); the whole episode is then
        not a demonstration. 0: start at once."""
        if start_delay < 0:
            raise ValueError(f"start_delay={start_delay} must be >= 0")
        self.episode = episode
        self._kinematics = kinematics or PandaKinematics()
        self._first_miss = float(miss_offset)
        self.start_delay = int(start_delay)
        self.reset()

    def reset(self) -> None:
        """Forget the episode's progress (call before its first observation)."""
        self.phase = 0
        self._stage = 0
        self._count = 0
        self._cmd: np.ndarray | None = None
        self._yaw = 0.0
        self._q = np.array(HOME_JOINTS)
        self._anchor: np.ndarray | None = None
        self._start: dict[str, np.ndarray] = {}
        self._ball: deque[tuple[float, np.ndarray]] = deque(maxlen=8)
        self._miss = self._first_miss
        self._held = 0  # periods held still so far (start_delay)
        self.regrasps = 0

    @property
    def demonstrating(self) -> bool:
        """False while a deliberate miss (``miss_offset``) is under way, and all through a late start
        (``start_delay``): those actions are not to be imitated."""
        return self._miss == 0.0 and self.start_delay == 0

    # ------------------------------------------------------------------ main loop
    def act(self, obs: Observation) -> np.ndarray:
        """Action (8,): 7 arm joint targets (rad) + gripper width (m) for this observation."""
        if self._cmd is None:
            self._cmd = np.array(obs.ee_position, dtype=float)
            self._q = np.array(obs.joint_positions[:7], dtype=float)
            self._yaw = yaw_of(obs.ee_orientation)
            self._start = {s: np.array(obs.object_positions[i]) for i, s in enumerate(OBJECT_SLOTS)}
        if obs.object_present[OBJECT_SLOTS.index("ball")]:
            self._ball.append((float(obs.sim_time), np.array(obs.object_positions[OBJECT_SLOTS.index("ball")])))
        if self._held < self.start_delay:
            self._held += 1
            return np.array([*self._q, float(obs.joint_positions[7] + obs.joint_positions[8])])
        skill, target = self.episode.plan[self.phase]
        if skill == "lift" and self._missed(obs, target):
            self.phase = self.episode.plan.index(("move_to", target))  # open, re-approach, grasp again
            self._stage, self._count, self._anchor = 0, 0, None
            self._miss = 0.0
            self.regrasps += 1
            skill, target = self.episode.plan[self.phase]
        goal, width, yaw, step, done = getattr(self, f"_{skill}")(obs, target)
        if done and self.phase < len(self.episode.plan) - 1:
            self.phase += 1
            self._stage, self._count, self._anchor = 0, 0, None
        delta = goal - self._cmd
        distance = float(np.linalg.norm(delta))
        self._cmd = goal.copy() if distance <= step else self._cmd + delta * (step / distance)
        self._yaw += float(np.clip(np.angle(np.exp(1j * (yaw - self._yaw))), -YAW_STEP, YAW_STEP))
        # Null space: prefer the home elbow, but keep joint 7 where it is (it carries the yaw).
        rest = np.array(HOME_JOINTS)
        rest[6] = self._q[6]
        self._q = self._kinematics.ik(self._cmd, top_down_orientation(self._yaw), rest_joints=rest, seed=self._q)
        return np.array([*self._q, width])

    def _obj(self, obs: Observation, slot: str) -> np.ndarray:
        return np.array(obs.object_positions[OBJECT_SLOTS.index(slot)], dtype=float)

    def _arrived(self, obs: Observation, goal: np.ndarray, tolerance: float) -> bool:
        """The command has reached the goal and the hand has caught up with it."""
        assert self._cmd is not None
        return bool(np.linalg.norm(self._cmd - goal) < 1e-6 and np.linalg.norm(obs.ee_position - goal) < tolerance)

    def _miss_offset(self, yaw: float) -> np.ndarray:
        """World offset (3,) of a deliberate miss: ``miss_offset`` along the hand's x axis at ``yaw``."""
        return self._miss * np.array([np.cos(yaw), np.sin(yaw), 0.0])

    def _missed(self, obs: Observation, target: str) -> bool:
        """Lifting, the hand well above the cube, and the cube still on the table: the grasp missed."""
        cube = self._obj(obs, target)
        return bool(obs.ee_position[2] - cube[2] > MISS_CLEARANCE and cube[2] < CUBE_HALF + 0.01)

    def _next_skill(self) -> str | None:
        plan = self.episode.plan
        return plan[self.phase + 1][0] if self.phase + 1 < len(plan) else None

    # ------------------------------------------------------------------ skills
    # Each returns (goal (3,), gripper width, yaw, max step per period, done).
    def _move_to(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        if target == "ball":
            goal, yaw = self._intercept_point(obs)
            return goal, 0.04, yaw, 0.04, self._arrived(obs, goal, 0.03)
        obj = self._obj(obs, target)
        if target == "bin":  # carrying: keep the fingers closed
            goal = obj + _up(CARRY_Z)
            return goal, 0.0, 0.0, STEP, self._arrived(obs, goal, 0.02)
        yaw = _cube_grasp_yaw(obs.object_orientations[OBJECT_SLOTS.index(target)])
        if self._next_skill() == "push":
            d = np.array(DIRECTIONS[self.episode.direction or "left"])
            goal = obj - d * (CUBE_HALF + 0.04) + _up(HOVER)
            return goal, 0.0, self._push_yaw(d), STEP, self._arrived(obs, goal, 0.015)
        goal = obj + _up(HOVER) + self._miss_offset(yaw)
        aligned = abs(np.angle(np.exp(1j * (yaw - self._yaw)))) < 0.05
        return goal, MAX_GRIPPER_WIDTH, yaw, STEP, aligned and self._arrived(obs, goal, 0.012)

    def _touch(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        obj = self._obj(obs, target)
        yaw = _cube_grasp_yaw(obs.object_orientations[OBJECT_SLOTS.index(target)])
        return obj + _up(0.005), MAX_GRIPPER_WIDTH, yaw, 0.015, False

    def _grasp(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        yaw = self._yaw
        if self._stage == 0:  # descend around the cube with the fingers open
            goal = self._obj(obs, target) + _up(0.002) + self._miss_offset(yaw)
            if self._arrived(obs, goal, 0.008):
                self._stage, self._anchor = 1, goal
            return goal, MAX_GRIPPER_WIDTH, yaw, 0.015, False
        assert self._anchor is not None
        self._count += 1  # close and hold still while the fingers settle
        return self._anchor, 0.0, yaw, 0.015, self._count >= 10

    def _lift(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        if self._anchor is None:
            self._anchor = np.array([*obs.ee_position[:2], CARRY_Z])
        return self._anchor, 0.0, self._yaw, 0.015, bool(obs.ee_position[2] > CARRY_Z - 0.03)

    def _place(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        goal = self._obj(obs, target) + _up(0.09)
        return goal, 0.0, self._yaw, 0.015, self._arrived(obs, goal, 0.015)

    def _release(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        assert self._cmd is not None
        if self._anchor is None:
            self._anchor = self._cmd.copy()
        self._count += 1
        return self._anchor, MAX_GRIPPER_WIDTH, self._yaw, STEP, self._count >= 8

    def _retreat(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        if self._anchor is None:
            self._anchor = np.array([*obs.ee_position[:2], 0.28])
        return self._anchor, MAX_GRIPPER_WIDTH, self._yaw, STEP, False

    @staticmethod
    def _push_yaw(direction: np.ndarray) -> float:
        # Fingers closed side by side across the push direction give a wider, steadier pushing face.
        return float(np.arctan2(direction[1], direction[0]))

    def _push(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        cube_slot = self.episode.target
        d = np.array(DIRECTIONS[target])
        cube = self._obj(obs, cube_slot)
        yaw = self._push_yaw(d)
        moved = float(np.dot(cube - self._start[cube_slot], d))
        if self._stage == 0:  # lower behind the cube
            goal = cube - d * (CUBE_HALF + 0.04)
            goal[2] = 0.02
            if self._arrived(obs, goal, 0.01):
                self._stage = 1
            return goal, 0.0, yaw, 0.015, False
        # Aim a little into the cube's trailing face, on its centre line (closed-loop on its position).
        goal = cube - d * (CUBE_HALF + 0.012) + d * 0.025
        goal[2] = 0.02
        return goal, 0.0, yaw, 0.01, moved >= PUSH_OVERSHOOT

    def _block(self, obs: Observation, target: str) -> tuple[np.ndarray, float, float, float, bool]:
        goal, yaw = self._intercept_point(obs)
        return goal, 0.04, yaw, 0.03, False

    # ------------------------------------------------------------------ intercept
    def ball_velocity(self) -> np.ndarray:
        """Least-squares velocity (3,) m/s of the ball over the last few observed positions (zeros if < 2)."""
        if len(self._ball) < 2:
            return np.zeros(3)
        t = np.array([s[0] for s in self._ball])
        p = np.stack([s[1] for s in self._ball])
        t = t - t.mean()
        return (t[:, None] * (p - p.mean(axis=0))).sum(axis=0) / max(float((t * t).sum()), 1e-9)

    def _intercept_point(self, obs: Observation) -> tuple[np.ndarray, float]:
        """Where the ball will cross the waiting line y = y_line; fingers (opening along x) low above it."""
        ball = self._obj(obs, "ball")
        start = self._start["ball"]
        side = 1.0 if start[1] >= 0.0 else -1.0            # the ball starts on this side and rolls across
        y_line = -side * INTERCEPT_OFFSET
        v = self.ball_velocity()
        x = ball[0]
        if abs(v[1]) > 0.02 and (y_line - ball[1]) * v[1] > 0:
            x = ball[0] + v[0] * (y_line - ball[1]) / v[1]
            goal = np.array([x, y_line, 0.03])
        elif abs(v[1]) > 0.02:  # already past the line: chase where it will be shortly
            goal = np.array([*(ball[:2] + v[:2] * 0.3), 0.03])
        else:
            goal = np.array([x, y_line, 0.03])
        goal[0] = float(np.clip(goal[0], 0.3, 0.72))
        goal[1] = float(np.clip(goal[1], -0.4, 0.4))
        return goal, np.pi / 2


PUSH_OVERSHOOT = 0.13  # push this far (m) so the 0.10 m success margin survives the cube sliding back


def make_expert(episode: EpisodeSpec, kinematics: PandaKinematics | None = None) -> Expert:
    """The scripted expert for ``episode`` (any task in ``TASKS``); pass ``kinematics`` to share an IK client."""
    return Expert(episode, kinematics)
