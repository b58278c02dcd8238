"""Scene constants and body builders (table, cubes, bin, ball); world frame, metres, kilograms.

Direction names used by tasks: left = +y, right = -y, forward = +x (away from the robot), back = -x.
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import pybullet
import pybullet_data
from pybullet_utils.bullet_client import BulletClient

OBJECT_SLOTS: tuple[str, ...] = ("red_cube", "green_cube", "blue_cube", "yellow_cube", "ball", "bin")
CUBE_SLOTS: tuple[str, ...] = OBJECT_SLOTS[:4]
ARM_JOINT_NAMES: tuple[str, ...] = tuple(f"panda_joint{i}" for i in range(1, 8))
FINGER_JOINT_NAMES: tuple[str, ...] = ("panda_finger_joint1", "panda_finger_joint2")
JOINT_NAMES: tuple[str, ...] = ARM_JOINT_NAMES + FINGER_JOINT_NAMES
GRIPPER_LINK_NAMES: tuple[str, ...] = ("panda_hand", "panda_leftfinger", "panda_rightfinger")
HOME_JOINTS: tuple[float, ...] = (0.0, -0.3, 0.0, -2.3, 0.0, 2.0, 0.785)  # gripper ~(0.46, 0, 0.36), pointing down
MAX_GRIPPER_WIDTH = 0.08

DIRECTIONS: dict[str, tuple[float, float, float]] = {
    "left": (0.0, 1.0, 0.0), "right": (0.0, -1.0, 0.0), "forward": (1.0, 0.0, 0.0), "back": (-1.0, 0.0, 0.0)}

TABLE_CENTER = (0.35, 0.0, -0.025)
TABLE_HALF_EXTENTS = (0.6, 0.6, 0.025)  # top at z = 0; x in [-0.25, 0.95], y in [-0.6, 0.6]
CUBE_HALF = 0.0225                       # 4.5 cm cubes
CUBE_MASS = 0.08
BALL_RADIUS = 0.03
BALL_MASS = 0.05
BIN_INNER_HALF = 0.08                    # inner half width of the square bin (m)
BIN_WALL = 0.008                         # wall thickness
BIN_HEIGHT = 0.06                        # wall height above the table

COLOURS: dict[str, tuple[float, float, float, float]] = {
    "red_cube": (0.85, 0.1, 0.1, 1.0), "green_cube": (0.1, 0.7, 0.15, 1.0), "blue_cube": (0.1, 0.25, 0.9, 1.0),
    "yellow_cube": (0.95, 0.85, 0.1, 1.0), "ball": (0.95, 0.5, 0.05, 1.0), "bin": (0.45, 0.3, 0.2, 1.0)}


@dataclass
class ObjectPlacement:
    """Initial state of one object: position (3,) m, yaw rad, linear velocity (3,) m/s."""

    position: np.ndarray
    yaw: float = 0.0
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))


def connect(gui: bool = False) -> BulletClient:
    """A new PyBullet client (DIRECT unless ``gui``) with ``pybullet_data`` on its search path.

    PyBullet's C code prints ``argv[0]=`` on stdout when it connects; that would corrupt JSON that the CLI
    prints on stdout (``mhc eval --json``), so stdout is pointed at /dev/null for the connect call only.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            client = BulletClient(connection_mode=pybullet.GUI if gui else pybullet.DIRECT)
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    client.setAdditionalSearchPath(pybullet_data.getDataPath())
    return client


@cache
def panda_urdf(detailed_visuals: bool) -> str:
    """Path of the Panda URDF to load.

    With ``detailed_visuals`` False the visual meshes are replaced by the collision meshes (~3.5k instead of
    ~100k triangles): TinyRenderer's cost is per triangle, so 96x96 frames render several times faster and
    the small image loses nothing. Physics is identical either way.
    """
    original = os.path.join(pybullet_data.getDataPath(), "franka_panda", "panda.urdf")
    if detailed_visuals:
        return original
    meshes = os.path.join(pybullet_data.getDataPath(), "franka_panda", "meshes")
    with open(original) as f:
        text = f.read()
    text = text.replace("package://meshes/visual/", os.path.join(meshes, "collision") + "/")
    text = text.replace("package://meshes/collision/", os.path.join(meshes, "collision") + "/")
    folder = tempfile.mkdtemp(prefix="mhc_sim_")
    path = os.path.join(folder, "panda_low_poly.urdf")
    with open(path, "w") as f:
        f.write(text)
    return path


def build_table(client: pybullet) -> int:
    """Static table box with its top at z = 0."""
    col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=TABLE_HALF_EXTENTS)
    vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=TABLE_HALF_EXTENTS, rgbaColor=(0.8, 0.7, 0.55, 1))
    body = client.createMultiBody(0.0, col, vis, TABLE_CENTER)
    # Low enough that a cube pushed at mid-height slides instead of tipping over (cube-table mu ~ 0.5).
    client.changeDynamics(body, -1, lateralFriction=0.4, rollingFriction=0.0, spinningFriction=0.0)
    return body


def build_object(client: pybullet, slot: str, placement: ObjectPlacement) -> int:
    """Create the body of ``slot`` at ``placement``; returns the PyBullet body id."""
    orn = client.getQuaternionFromEuler([0.0, 0.0, float(placement.yaw)])
    pos = [float(v) for v in placement.position]
    if slot in CUBE_SLOTS:
        half = [CUBE_HALF] * 3
        col = client.createCollisionShape(pybullet.GEOM_BOX, halfExtents=half)
        vis = client.createVisualShape(pybullet.GEOM_BOX, halfExtents=half, rgbaColor=COLOURS[slot])
        body = client.createMultiBody(CUBE_MASS, col, vis, pos, orn)
        # High friction so two fingers hold the cube; some spinning friction stops it twirling when pushed.
        client.changeDynamics(body, -1, lateralFriction=1.2, spinningFriction=0.002, rollingFriction=0.0)
    elif slot == "ball":
        col = client.createCollisionShape(pybullet.GEOM_SPHERE, radius=BALL_RADIUS)
        vis = client.createVisualShape(pybullet.GEOM_SPHERE, radius=BALL_RADIUS, rgbaColor=COLOURS[slot])
        body = client.createMultiBody(BALL_MASS, col, vis, pos, orn)
        # A little rolling friction so the ball slows as a real one does, without stopping on the table.
        client.changeDynamics(body, -1, lateralFriction=0.6, rollingFriction=2e-5, spinningFriction=1e-4,
                              linearDamping=0.0, angularDamping=0.0)
        v = np.asarray(placement.velocity, float)
        # Start already rolling (omega = z x v / r) so there is no skidding phase.
        omega = np.cross([0.0, 0.0, 1.0], v) / BALL_RADIUS
        client.resetBaseVelocity(body, v.tolist(), omega.tolist())
    elif slot == "bin":
        body = _build_bin(client, pos, orn)
    else:
        raise ValueError(f"Unknown object slot {slot!r} (expected one of {OBJECT_SLOTS})")
    return body


def _build_bin(client: pybullet, pos: list[float], orn: tuple[float, ...]) -> int:
    """Open static box: a floor and four walls, one compound shape; the base frame is the floor centre."""
    outer = BIN_INNER_HALF + BIN_WALL
    half_h = BIN_HEIGHT / 2
    boxes = [  # (half extents, centre in the bin frame)
        ([outer, outer, BIN_WALL / 2], [0.0, 0.0, BIN_WALL / 2]),
        ([BIN_WALL / 2, outer, half_h], [BIN_INNER_HALF + BIN_WALL / 2, 0.0, half_h]),
        ([BIN_WALL / 2, outer, half_h], [-BIN_INNER_HALF - BIN_WALL / 2, 0.0, half_h]),
        ([BIN_INNER_HALF, BIN_WALL / 2, half_h], [0.0, BIN_INNER_HALF + BIN_WALL / 2, half_h]),
        ([BIN_INNER_HALF, BIN_WALL / 2, half_h], [0.0, -BIN_INNER_HALF - BIN_WALL / 2, half_h]),
    ]
    kinds = [pybullet.GEOM_BOX] * len(boxes)
    halves = [b[0] for b in boxes]
    centres = [b[1] for b in boxes]
    col = client.createCollisionShapeArray(kinds, halfExtents=halves, collisionFramePositions=centres)
    vis = client.createVisualShapeArray(kinds, halfExtents=halves, visualFramePositions=centres,
                                        rgbaColors=[COLOURS["bin"]] * len(boxes))
    body = client.createMultiBody(0.0, col, vis, pos, orn)
    client.changeDynamics(body, -1, lateralFriction=0.8)
    return body
