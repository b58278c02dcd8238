"""Tabletop world: one PyBullet client with a Franka Panda, a table, cubes, a bin and a ball.

Frames and units: metres, radians, seconds. The world frame is the table-top robot base frame
(z up, robot base at the origin, x forward away from the robot, y to the robot's left). The table
top is the plane z = 0.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import pybullet
from mhc_sim.scene import (
    ARM_JOINT_NAMES,
    FINGER_JOINT_NAMES,
    GRIPPER_LINK_NAMES,
    HOME_JOINTS,
    JOINT_NAMES,
    MAX_GRIPPER_WIDTH,
    OBJECT_SLOTS,
    TABLE_HALF_EXTENTS,
    ObjectPlacement,
    build_object,
    build_table,
    connect,
    panda_urdf,
)
from mhc_sim.tasks import TASKS, EpisodeSpec, make_episode

EE_LINK_NAME = "panda_grasptarget"  # between the fingertips; the point the experts steer
ARM_MAX_FORCE = {"panda_joint1": 87.0, "panda_joint2": 87.0, "panda_joint3": 87.0, "panda_joint4": 87.0,
                 "panda_joint5": 12.0, "panda_joint6": 12.0, "panda_joint7": 12.0}
FINGER_FORCE = 60.0  # N per finger, firmer than the URDF effort (20 N) so a lifted cube does not slip


@dataclass
class WorldConfig:
    """Settings of a :class:`TabletopWorld`.

    image_width, image_height: scene camera resolution (pixels).
    control_hz: control (action) rate (Hz). sim_dt: physics step (s); control_hz * sim_dt must divide 1
    closely enough that one control period is a whole number of physics steps.
    wrist_camera: also render a camera on the hand. gui: open the PyBullet GUI instead of DIRECT.
    render: render images at all; False gives ``image=None`` (fast expert evaluation).
    detailed_robot: draw the Panda with its full visual meshes (about 5x slower rendering; same physics).
    """

    image_width: int = 96
    image_height: int = 96
    control_hz: float = 20.0
    sim_dt: float = 1.0 / 240.0
    wrist_camera: bool = False
    gui: bool = False
    render: bool = True
    detailed_robot: bool = False

    def __post_init__(self) -> None:
        for name in ("image_width", "image_height"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 8 <= value <= 4096:
                raise ValueError(f"{name}={value!r} must be an int in [8, 4096]")
        if not math.isfinite(self.control_hz) or not 0.0 < self.control_hz <= 1000.0:
            raise ValueError(f"control_hz={self.control_hz!r} must be in (0, 1000]")
        if not math.isfinite(self.sim_dt) or not 0.0 < self.sim_dt <= 0.05:
            raise ValueError(f"sim_dt={self.sim_dt!r} must be in (0, 0.05] s")
        substeps = 1.0 / (self.control_hz * self.sim_dt)
        if substeps < 0.999 or abs(substeps - round(substeps)) > 1e-6 * substeps + 1e-9:
            raise ValueError(
                f"control_hz={self.control_hz!r} and sim_dt={self.sim_dt!r} give {substeps:.4f} physics steps "
                "per control period; expected a whole number >= 1")

    @property
    def substeps(self) -> int:
        """Physics steps per control period."""
        return round(1.0 / (self.control_hz * self.sim_dt))


@dataclass
class Observation:
    """What the world reports after each reset/step (world frame; metres, radians, seconds).

    image: (H, W, 3) uint8 RGB from the scene camera, or None when ``WorldConfig.render`` is False.
    wrist_image: (H, W, 3) uint8 RGB or None. joint_positions, joint_velocities: (9,) in ``joint_names``
    order (rad, m for fingers). ee_position (3,), ee_orientation (4,) xyzw of ``panda_grasptarget``.
    object_positions (6, 3), object_orientations (6, 4) xyzw, object_velocities (6, 3) m/s,
    object_present (6,) bool, in ``OBJECT_SLOTS`` order; absent slots are zero (identity quaternion).
    """

    sim_time: float
    image: np.ndarray | None
    wrist_image: np.ndarray | None
    joint_names: tuple[str, ...]
    joint_positions: np.ndarray
    joint_velocities: np.ndarray
    ee_position: np.ndarray
    ee_orientation: np.ndarray
    object_positions: np.ndarray
    object_orientations: np.ndarray
    object_velocities: np.ndarray
    object_present: np.ndarray = field(default_factory=lambda: np.zeros(len(OBJECT_SLOTS), bool))


class TabletopWorld:
    """Owns one PyBullet client; ``reset(task, seed)`` builds a deterministic episode, ``step`` runs it."""

    def __init__(self, config: WorldConfig | None = None) -> None:
        self.config = config or WorldConfig()
        self._client = connect(self.config.gui)
        self.episode: EpisodeSpec | None = None
        self.sim_time = 0.0
        self.steps = 0
        self._bodies: dict[str, int] = {}
        self._initial_positions: dict[str, np.ndarray] = {}
        self._touched: set[str] = set()
        self._build_scene({})  # so joint_limits() and the camera work before the first reset
        self._view, self._projection = self._scene_camera_matrices()

    # ------------------------------------------------------------------ building
    def _build_scene(self, placements: dict[str, ObjectPlacement]) -> None:
        """Clear the simulation and load robot, table and the placed objects (identical every time)."""
        c = self._client
        c.resetSimulation()
        c.setGravity(0.0, 0.0, -9.81)
        c.setPhysicsEngineParameter(fixedTimeStep=self.config.sim_dt, numSubSteps=0, numSolverIterations=100,
                                    deterministicOverlappingPairs=1)
        self._table = build_table(c)
        self._robot = c.loadURDF(panda_urdf(self.config.detailed_robot), [0.0, 0.0, 0.0], useFixedBase=True,
                                 flags=pybullet.URDF_USE_INERTIA_FROM_FILE)
        joints: dict[str, int] = {}
        links: dict[str, int] = {}
        for j in range(c.getNumJoints(self._robot)):
            info = c.getJointInfo(self._robot, j)
            joints[info[1].decode()] = j
            links[info[12].decode()] = j
        missing = [n for n in (*JOINT_NAMES, EE_LINK_NAME) if n not in joints and n not in links]
        if missing:
            raise RuntimeError(f"Panda URDF lacks {missing}")
        self._joint_ids = [joints[n] for n in JOINT_NAMES]
        self._ee_link = links[EE_LINK_NAME]
        self._hand_link = links["panda_hand"]
        self._gripper_links = {links[n] for n in GRIPPER_LINK_NAMES}
        for name in FINGER_JOINT_NAMES:
            c.changeDynamics(self._robot, joints[name], lateralFriction=2.0, spinningFriction=0.01)
        for name, q in zip(ARM_JOINT_NAMES, HOME_JOINTS, strict=True):
            c.resetJointState(self._robot, joints[name], q)
        for name in FINGER_JOINT_NAMES:
            c.resetJointState(self._robot, joints[name], MAX_GRIPPER_WIDTH / 2)
        self._bodies = {}
        for slot in OBJECT_SLOTS:
            if slot in placements:
                self._bodies[slot] = build_object(c, slot, placements[slot])
        self._apply_action(np.array([*HOME_JOINTS, MAX_GRIPPER_WIDTH]))

    # ------------------------------------------------------------------ episode API
    def reset(self, task: str, seed: int, instruction: str | None = None) -> Observation:
        """Start an episode of ``task`` (a key of ``TASKS``); the same (task, seed) is bit-identical.

        ``instruction`` replaces the episode's drawn instruction (e.g. a held-out paraphrase); the scene
        and goal stay those of (task, seed)."""
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r} (expected one of {sorted(TASKS)})")
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative int")
        rng = np.random.default_rng(int(seed))
        self.episode, placements = make_episode(task, int(seed), rng)
        if instruction is not None:
            if not isinstance(instruction, str) or not instruction.strip():
                raise ValueError(f"instruction={instruction!r} must be a non-empty string")
            self.episode = dataclasses.replace(self.episode, instruction=instruction)
        self._build_scene(placements)
        self.sim_time = 0.0
        self.steps = 0
        self._touched = set()
        self._initial_positions = {s: self.object_position(s) for s in self._bodies}
        return self.observe()

    def step(self, action: np.ndarray) -> Observation:
        """Apply ``action`` (8,) = 7 arm joint targets (rad) + gripper width (m) for one control period."""
        if self.episode is None:
            raise RuntimeError("step() before reset()")
        action = np.asarray(action, dtype=float)
        if action.shape != (8,):
            raise ValueError(f"action shape {action.shape} invalid (expected (8,))")
        if not np.all(np.isfinite(action)):
            raise ValueError(f"action {action.tolist()} contains non-finite values")
        self._apply_action(action)
        c = self._client
        for _ in range(self.config.substeps):
            c.stepSimulation()
            # Contacts are latched every physics step: a ball can bounce off a finger between control steps.
            for slot, body in self._bodies.items():
                if slot not in self._touched and any(
                        cp[3] in self._gripper_links for cp in c.getContactPoints(self._robot, body)):
                    self._touched.add(slot)
        self.steps += 1
        self.sim_time = self.steps / self.config.control_hz
        return self.observe()

    def success(self) -> bool:
        """Whether the current episode's task is achieved now."""
        return self.episode is not None and TASKS[self.episode.task].success(self, self.episode)

    def failed(self) -> str | None:
        """A failure reason (e.g. ``ball_left_table``) when the episode can no longer succeed, else None."""
        if self.episode is None:
            return None
        return TASKS[self.episode.task].failure(self, self.episode)

    def close(self) -> None:
        """Disconnect the PyBullet client."""
        if self._client is not None:
            self._client.disconnect()
            self._client = None

    def __enter__(self) -> TabletopWorld:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ robot
    def _apply_action(self, action: np.ndarray) -> np.ndarray:
        """Clip ``action`` to the joint limits and send it to the motors; returns the command sent."""
        lower, upper, velocity = self.joint_limits()
        arm = np.clip(action[:7], lower[:7], upper[:7])
        width = float(np.clip(action[7], 0.0, MAX_GRIPPER_WIDTH))
        c = self._client
        for k, name in enumerate(ARM_JOINT_NAMES):
            c.setJointMotorControl2(self._robot, self._joint_ids[k], pybullet.POSITION_CONTROL,
                                    targetPosition=float(arm[k]), force=ARM_MAX_FORCE[name],
                                    maxVelocity=float(velocity[k]), positionGain=0.1)
        for k in (7, 8):
            c.setJointMotorControl2(self._robot, self._joint_ids[k], pybullet.POSITION_CONTROL,
                                    targetPosition=width / 2, force=FINGER_FORCE, maxVelocity=0.1)
        return np.concatenate([arm, [width]])

    def joint_limits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(lower, upper, velocity) arrays (9,) for ``JOINT_NAMES`` from the URDF (rad, m, rad/s, m/s)."""
        if not hasattr(self, "_limits"):
            info = [self._client.getJointInfo(self._robot, j) for j in self._joint_ids]
            self._limits = (np.array([i[8] for i in info]), np.array([i[9] for i in info]),
                            np.array([i[11] for i in info]))
        return self._limits

    # ------------------------------------------------------------------ state queries (used by tasks)
    def object_position(self, slot: str) -> np.ndarray:
        """World position (3,) of a present object slot (m)."""
        return np.array(self._client.getBasePositionAndOrientation(self._bodies[slot])[0])

    def initial_position(self, slot: str) -> np.ndarray:
        """Position (3,) of ``slot`` at reset (m)."""
        return self._initial_positions[slot].copy()

    def object_velocity(self, slot: str) -> np.ndarray:
        """Linear velocity (3,) of ``slot`` (m/s)."""
        return np.array(self._client.getBaseVelocity(self._bodies[slot])[0])

    def set_object_pose(self, slot: str, position: np.ndarray, yaw: float = 0.0) -> None:
        """Teleport a present object to ``position`` (3,) m with ``yaw`` rad, at rest (tests, scripted resets)."""
        if slot not in self._bodies:
            raise ValueError(f"Object slot {slot!r} is not present in this episode (present: {sorted(self._bodies)})")
        c = self._client
        c.resetBasePositionAndOrientation(self._bodies[slot], [float(v) for v in position],
                                          c.getQuaternionFromEuler([0.0, 0.0, float(yaw)]))
        c.resetBaseVelocity(self._bodies[slot], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0])

    def ee_position(self) -> np.ndarray:
        """Position (3,) of ``panda_grasptarget`` (between the fingertips)."""
        return np.array(self._client.getLinkState(self._robot, self._ee_link, computeForwardKinematics=True)[4])

    def touched(self, slot: str) -> bool:
        """Whether a gripper link (hand or finger) has touched ``slot`` since reset (checked every physics step)."""
        return slot in self._touched

    def in_gripper_contact(self, slot: str) -> bool:
        """Whether a gripper link touches ``slot`` now."""
        return any(cp[3] in self._gripper_links
                   for cp in self._client.getContactPoints(self._robot, self._bodies[slot]))

    def gripper_width(self) -> float:
        """Current finger opening (m)."""
        return float(sum(self._client.getJointState(self._robot, self._joint_ids[k])[0] for k in (7, 8)))

    # ------------------------------------------------------------------ observation and cameras
    def observe(self) -> Observation:
        """Snapshot of the current state (renders images when ``config.render``)."""
        c = self._client
        states = c.getJointStates(self._robot, self._joint_ids)
        ee = c.getLinkState(self._robot, self._ee_link, computeForwardKinematics=True)
        n = len(OBJECT_SLOTS)
        positions, orientations = np.zeros((n, 3)), np.tile([0.0, 0.0, 0.0, 1.0], (n, 1))
        velocities, present = np.zeros((n, 3)), np.zeros(n, bool)
        for i, slot in enumerate(OBJECT_SLOTS):
            body = self._bodies.get(slot)
            if body is None:
                continue
            pos, orn = c.getBasePositionAndOrientation(body)
            positions[i], orientations[i] = pos, orn
            velocities[i] = c.getBaseVelocity(body)[0]
            present[i] = True
        image = wrist = None
        if self.config.render:
            image = self._render(self._view, self._projection)
            if self.config.wrist_camera:
                wrist = self._render(*self._wrist_camera_matrices())
        return Observation(
            sim_time=self.sim_time, image=image, wrist_image=wrist, joint_names=JOINT_NAMES,
            joint_positions=np.array([s[0] for s in states]), joint_velocities=np.array([s[1] for s in states]),
            ee_position=np.array(ee[4]), ee_orientation=np.array(ee[5]), object_positions=positions,
            object_orientations=orientations, object_velocities=velocities, object_present=present)

    def _render(self, view: list[float], projection: list[float]) -> np.ndarray:
        w, h = self.config.image_width, self.config.image_height
        _, _, rgba, _, _ = self._client.getCameraImage(w, h, view, projection, renderer=pybullet.ER_TINY_RENDERER,
                                                       flags=pybullet.ER_NO_SEGMENTATION_MASK)
        return np.asarray(rgba, dtype=np.uint8).reshape(h, w, 4)[:, :, :3].copy()

    SCENE_CAMERA_EYE = (1.35, 0.0, 0.95)   # in front of the robot, looking back at it and the table
    SCENE_CAMERA_TARGET = (0.3, 0.0, 0.12)
    SCENE_CAMERA_FOV_DEG = 55.0

    def _scene_camera_matrices(self) -> tuple[list[float], list[float]]:
        c = self._client
        view = c.computeViewMatrix(self.SCENE_CAMERA_EYE, self.SCENE_CAMERA_TARGET, [0.0, 0.0, 1.0])
        aspect = self.config.image_width / self.config.image_height
        projection = c.computeProjectionMatrixFOV(self.SCENE_CAMERA_FOV_DEG, aspect, 0.05, 5.0)
        return view, projection

    def _wrist_camera_matrices(self) -> tuple[list[float], list[float]]:
        c = self._client
        pos, orn = c.getLinkState(self._robot, self._hand_link, computeForwardKinematics=True)[4:6]
        rot = np.array(c.getMatrixFromQuaternion(orn)).reshape(3, 3)
        # Mounted on the hand, looking along the hand's z axis (towards the fingertips).
        eye = np.array(pos) + rot @ [0.05, 0.0, 0.02]
        view = c.computeViewMatrix(eye, eye + rot[:, 2], rot[:, 0])
        aspect = self.config.image_width / self.config.image_height
        return view, c.computeProjectionMatrixFOV(70.0, aspect, 0.01, 2.0)

    def camera_intrinsics(self) -> dict[str, float]:
        """Pinhole intrinsics of the scene camera derived from its projection (pixels): fx, fy, cx, cy, w, h."""
        w, h = self.config.image_width, self.config.image_height
        p = np.array(self._projection).reshape(4, 4).T  # PyBullet stores column-major
        return {"fx": float(p[0, 0] * w / 2), "fy": float(p[1, 1] * h / 2), "cx": w / 2.0, "cy": h / 2.0,
                "width": w, "height": h}

    def project_to_image(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates ``(..., 2)`` (column, row; row 0 at the top) of world points ``(..., 3)`` in
        the scene camera's image; points behind the camera come out as NaN."""
        return project_scene_points(points, self.config.image_width, self.config.image_height)

    def camera_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """Scene camera eye position (3,) and look-at target (3,) in the world frame (m)."""
        return np.array(self.SCENE_CAMERA_EYE), np.array(self.SCENE_CAMERA_TARGET)

    @property
    def table_half_extents(self) -> tuple[float, float, float]:
        """Half extents of the table box (m); see ``scene.TABLE_CENTER`` for its position."""
        return TABLE_HALF_EXTENTS


def _scene_camera_axes() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """Eye, unit forward / side / up axes and the focal factor 1/tan(fov/2) of the scene camera."""
    eye = np.asarray(TabletopWorld.SCENE_CAMERA_EYE, dtype=float)
    forward = np.asarray(TabletopWorld.SCENE_CAMERA_TARGET, dtype=float) - eye
    forward /= np.linalg.norm(forward)
    side = np.cross(forward, [0.0, 0.0, 1.0])
    side /= np.linalg.norm(side)
    up = np.cross(side, forward)
    return eye, forward, side, up, 1.0 / math.tan(math.radians(TabletopWorld.SCENE_CAMERA_FOV_DEG) / 2.0)


def unproject_to_height(pixels: np.ndarray, z: float, width: int, height: int) -> np.ndarray:
    """World points ``(..., 3)`` at height ``z`` seen at pixel (column, row) ``pixels (..., 2)`` of a
    ``width``×``height`` scene-camera image: the inverse of :func:`project_scene_points` on that plane."""
    eye, forward, side, up, focal = _scene_camera_axes()
    pixels = np.asarray(pixels, dtype=float)
    ndc_x = pixels[..., 0] / width * 2.0 - 1.0
    ndc_y = 1.0 - pixels[..., 1] / height * 2.0
    ray = (forward + (ndc_x / (focal * height / width))[..., None] * side
           + (ndc_y / focal)[..., None] * up)  # (..., 3) per unit depth
    depth = (z - eye[2]) / ray[..., 2]
    return eye + depth[..., None] * ray


def project_scene_points(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """Pinhole projection of world points ``(..., 3)`` into a ``width``×``height`` scene-camera image.

    The same look-at and vertical field of view as the rendered scene camera (OpenGL conventions, as
    PyBullet's ``computeViewMatrix`` / ``computeProjectionMatrixFOV``); returns ``(..., 2)`` pixel
    (column, row), row 0 at the top, NaN for points behind the camera. No PyBullet client needed.
    """
    eye, forward, side, up, focal = _scene_camera_axes()
    rel = np.asarray(points, dtype=float) - eye
    depth = rel @ forward
    with np.errstate(divide="ignore", invalid="ignore"):
        ndc_x = focal * (height / width) * (rel @ side) / depth
        ndc_y = focal * (rel @ up) / depth
    pixels = np.stack([(ndc_x + 1.0) * 0.5 * width, (1.0 - ndc_y) * 0.5 * height], axis=-1)
    pixels[depth <= 0] = np.nan
    return pixels
