"""Forward kinematics of the Franka Panda as a fixed layer: joint angles → hand pose features.

The model's only sense of where its hand is was its joint angles; learning the 7-joint chain from
data left the hand's height near the table 1–2 cm off, and most failed grasps closed that far above
the cube. This layer computes the pose of ``panda_grasptarget`` (the point between the fingertips)
exactly, with constant-shaped tensor ops only (Sin, Cos, MatMul), so it exports to ONNX / TensorRT.

Constants: the joint origins of the Panda URDF (``franka_panda/panda.urdf``: every arm joint turns
about its own z axis after a fixed origin transform), robot base at the world origin as in the
simulation. ``tests/test_model_kinematics.py`` checks the result against PyBullet.
"""

from __future__ import annotations

import math

import torch
from torch import nn

ARM_JOINTS = 7
HALF_PI = math.pi / 2
# (xyz, rpy) of each arm joint's origin in its parent link
ARM_JOINT_ORIGINS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, 0.0, 0.333), (0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (-HALF_PI, 0.0, 0.0)),
    ((0.0, -0.316, 0.0), (HALF_PI, 0.0, 0.0)),
    ((0.0825, 0.0, 0.0), (HALF_PI, 0.0, 0.0)),
    ((-0.0825, 0.384, 0.0), (-HALF_PI, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (HALF_PI, 0.0, 0.0)),
    ((0.088, 0.0, 0.0), (HALF_PI, 0.0, 0.0)),
)
# link7 → flange (0.107 along z) → hand (−45° about z) → grasp target (0.105 along z)
TOOL_ORIGINS: tuple[tuple[tuple[float, float, float], tuple[float, float, float]], ...] = (
    ((0.0, 0.0, 0.107), (0.0, 0.0, 0.0)),
    ((0.0, 0.0, 0.0), (0.0, 0.0, -math.pi / 4)),
    ((0.0, 0.0, 0.105), (0.0, 0.0, 0.0)),
)
POSE_FEATURES = 12  # rotation matrix (9, row-major) + position (3, m)


def origin_transform(xyz: tuple[float, float, float], rpy: tuple[float, float, float]) -> torch.Tensor:
    """URDF ``<origin>`` as a 4×4 float64 transform: translation, then R = Rz(yaw) Ry(pitch) Rx(roll)."""
    (cr, sr), (cp, sp), (cy, sy) = ((math.cos(a), math.sin(a)) for a in rpy)
    return torch.tensor([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr, xyz[0]],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr, xyz[1]],
        [-sp, cp * sr, cp * cr, xyz[2]],
        [0.0, 0.0, 0.0, 1.0],
    ], dtype=torch.float64)


class PandaForwardKinematics(nn.Module):
    """``arm_positions (..., 7)`` rad → ``(..., 12)``: rotation (row-major) and position (m) of the grasp target.

    Joint i's transform is ``O_i · Rz(q_i) = cos q_i · (O_i A) + sin q_i · (O_i B) + O_i C`` with
    constant A, B, C, so all seven come from one broadcast expression (the fixed tool transform folded
    into the last joint's constants); the chain is then six matmuls.
    """

    def __init__(self) -> None:
        super().__init__()
        rot_cos = torch.diag(torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=torch.float64))  # Rz(q) = cos·A + sin·B + C
        rot_sin = torch.zeros(4, 4, dtype=torch.float64)
        rot_sin[0, 1], rot_sin[1, 0] = -1.0, 1.0
        rot_const = torch.diag(torch.tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float64))
        origins = torch.stack([origin_transform(*o) for o in ARM_JOINT_ORIGINS])  # (7, 4, 4)
        tool = torch.eye(4, dtype=torch.float64)
        for o in TOOL_ORIGINS:
            tool = tool @ origin_transform(*o)
        after = torch.stack([torch.eye(4, dtype=torch.float64)] * (ARM_JOINTS - 1) + [tool])  # (7, 4, 4)
        for name, part in (("cos_part", rot_cos), ("sin_part", rot_sin), ("const_part", rot_const)):
            self.register_buffer(name, (origins @ part @ after).float(), persistent=False)

    def forward(self, arm_positions: torch.Tensor) -> torch.Tensor:
        q = arm_positions[..., :, None, None]  # (..., 7, 1, 1)
        joints = q.cos() * self.cos_part + q.sin() * self.sin_part + self.const_part  # (..., 7, 4, 4)
        links = joints.split(1, dim=-3)  # each (..., 1, 4, 4): no per-joint squeeze in the graph
        target = links[0]
        for link in links[1:]:
            target = target @ link
        target = target[..., 0, :, :]  # (..., 4, 4) grasp target in the base (= world) frame
        rotation = target[..., :3, :3].reshape(*arm_positions.shape[:-1], 9)
        return torch.cat([rotation, target[..., :3, 3]], dim=-1)
