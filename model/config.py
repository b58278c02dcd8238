"""``MHCConfig``: every size and coefficient of the mHC network, validated on construction.

Presets: ``tiny`` (tests), ``s`` (shipping, ≤ 10M parameters) and their dense baselines
``dense_tiny`` / ``dense_s`` (same width and depth, every head on every token, dense FFN), used
for ablations and FLOP comparisons.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOMAINS: tuple[str, ...] = ("linguistic", "visual", "physical")
PROFILES: tuple[str, ...] = ("full", "instruct", "control")
BALANCE_MODES: tuple[str, ...] = ("bias", "loss", "both", "none")

ACTION_DIM = 8  # 7 arm joint targets (rad) + gripper width (m)
JOINT_STATE_DIM = 18  # positions + velocities of the 9 joints
NUM_OBJECT_SLOTS = 6
MOTION_SLOTS = NUM_OBJECT_SLOTS + 1  # object slots + end effector
BALL_SLOT = 4  # the ball's motion slot: mhc_sim.OBJECT_SLOTS.index("ball") (tests check it)


@dataclass
class MHCConfig:
    """Sizes of the mHC transformer. Every field is validated in ``__post_init__``."""

    name: str = "custom"
    dense: bool = False  # dense baseline: all heads on all tokens, dense FFN, no routers

    # trunk
    d_model: int = 256
    n_layers: int = 6
    head_dim: int = 32
    dropout: float = 0.0

    # attention: per-domain head groups + shared (cross-domain) heads
    heads_per_domain: int = 2  # heads in each of the linguistic / visual / physical groups
    shared_heads: int = 2  # heads that attend across domains

    # hierarchical MoE feed-forward
    experts_per_domain: int = 8  # E fine-grained experts per domain
    top_k: int = 2  # constant k experts chosen per token inside its domain
    expert_hidden: int = 80
    shared_expert_hidden: int = 256  # always-on shared expert
    # the first N blocks' FFN is the shared expert alone: no routers, no routed experts (as DeepSeek-V3's
    # first dense layers). At batch 1 on a CPU a routed expert costs its weights' copy, not its FLOPs.
    shared_only_layers: int = 0
    dense_ffn_hidden: int = 1024  # FFN width of the dense baseline

    # routing losses and balancing
    router_label_smoothing: float = 0.1  # soft targets of the task router against modality labels
    clustering_coef: float = 0.1  # cross-entropy of the task router vs modality (soft targets)
    mutual_info_coef: float = 0.05  # log E − H(mean p) + mean H(p|x) over sub-experts, per domain
    balance: str = "both"  # bias (aux-loss-free), loss (Switch balance loss), both, none
    balance_coef: float = 0.01  # Switch balance loss coefficient (balance in {loss, both})
    bias_update_rate: float = 1e-3  # γ of the aux-loss-free bias update (balance in {bias, both})
    z_loss_coef: float = 1e-3  # router z-loss

    # linguistic input
    vocab_size: int = 512  # embedding rows; the built vocabulary must fit
    max_instruction_len: int = 16  # tokens including <bos>; longer instructions are truncated

    # visual input
    image_size: int = 96  # model input S×S
    patch_size: int = 16  # total stride of the conv stem: 4 · 2^n
    stem_channels: int = 32
    image_history: int = 1  # camera frames of the last ticks: t − stride·(n−1), …, t − stride, t
    image_stride: int = 1  # ticks between those frames
    instruction_frame: bool = False  # also the frame of the instruction's first tick (the unoccluded scene)
    # the ticks since the instruction's first tick as an input (graph input ``instruction_age``): what turns
    # a displacement since the first frame into a velocity
    instruction_age: bool = False

    # physical input
    joint_history: int = 4  # Hj past joint states (positions+velocities)
    ee_pose_features: bool = False  # add each state's hand pose (fixed Panda forward kinematics); presets: on

    # outputs
    action_chunk: int = 16  # K steps of 8-dim actions
    action_steps_per_query: int = 1  # consecutive chunk steps decoded from one query token (divides K)
    n_action_steps: int = 8  # actions of a chunk executed by select_action before re-predicting
    motion_horizon: int = 8  # H future steps of object/end-effector positions
    plan_slots: int = 8  # P sub-goal slots
    # > 0: the ball's motion from that many colour keypoints per frame (mhc_model.ball_motion) instead of
    # its motion-slot token; needs the instruction frame and age, and image_history 1
    ball_keypoints: int = 0
    num_skills: int = 16  # skill classes including <none>
    num_targets: int = 16  # target classes including <none>

    # head loss weights
    loss_weights: dict[str, float] = field(
        default_factory=lambda: {"action": 1.0, "motion": 0.5, "presence": 0.1, "plan": 0.1, "phase": 0.1}
    )
    # training augmentation: random shift/zoom of the frames (colour jitter is always on). Off, the
    # camera's pixels keep one mapping to the world frame the motion targets are in.
    crop_augment: bool = True

    def __post_init__(self) -> None:
        positive = [
            "d_model", "n_layers", "head_dim", "vocab_size", "max_instruction_len", "image_size",
            "patch_size", "stem_channels", "image_history", "image_stride", "joint_history", "action_chunk",
            "action_steps_per_query", "n_action_steps", "motion_horizon", "plan_slots", "num_skills", "num_targets",
        ]
        if self.dense:
            positive += ["shared_heads", "dense_ffn_hidden"]
        else:
            positive += ["heads_per_domain", "experts_per_domain", "top_k", "expert_hidden"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"MHCConfig.{name}={value!r} must be a positive integer")
        for name in ["shared_heads", "shared_expert_hidden", "dense_ffn_hidden", "heads_per_domain", "ball_keypoints",
                     "shared_only_layers"]:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"MHCConfig.{name}={value!r} must be a non-negative integer")
        if not self.dense and self.top_k > self.experts_per_domain:
            raise ValueError(
                f"MHCConfig.top_k={self.top_k} must be <= experts_per_domain={self.experts_per_domain}"
            )
        if self.shared_only_layers and (self.dense or self.shared_only_layers >= self.n_layers
                                        or not self.shared_expert_hidden):
            raise ValueError(
                f"MHCConfig.shared_only_layers={self.shared_only_layers} needs an mHC config (dense false) with a "
                f"shared expert (shared_expert_hidden > 0, has {self.shared_expert_hidden}) and fewer than "
                f"n_layers={self.n_layers} (at least one block routes)"
            )
        for name in ("ee_pose_features", "instruction_frame", "instruction_age", "crop_augment"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"MHCConfig.{name}={getattr(self, name)!r} must be true or false")
        if self.ball_keypoints and not (self.instruction_frame and self.instruction_age and self.image_history == 1):
            raise ValueError(
                f"MHCConfig.ball_keypoints={self.ball_keypoints} reads the instruction frame, the current frame and "
                f"the instruction age: needs instruction_frame and instruction_age true and image_history 1 "
                f"(has {self.instruction_frame}, {self.instruction_age}, {self.image_history})"
            )
        if self.balance not in BALANCE_MODES:
            raise ValueError(f"MHCConfig.balance={self.balance!r} unknown ({', '.join(BALANCE_MODES)})")
        for name in [
            "router_label_smoothing", "clustering_coef", "mutual_info_coef", "balance_coef",
            "bias_update_rate", "z_loss_coef", "dropout",
        ]:
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"MHCConfig.{name}={value!r} must be a number >= 0")
        if self.router_label_smoothing >= 1.0:
            raise ValueError(f"MHCConfig.router_label_smoothing={self.router_label_smoothing} must be < 1")
        if self.dropout >= 1.0:
            raise ValueError(f"MHCConfig.dropout={self.dropout} must be < 1")
        stride, n = self.patch_size, 0
        while stride > 4 and stride % 2 == 0:
            stride, n = stride // 2, n + 1
        if stride != 4:
            raise ValueError(f"MHCConfig.patch_size={self.patch_size} must be 4·2^n (4, 8, 16, 32)")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"MHCConfig.image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        if self.action_chunk % self.action_steps_per_query:
            raise ValueError(
                f"MHCConfig.action_steps_per_query={self.action_steps_per_query} must divide "
                f"action_chunk={self.action_chunk}"
            )
        if self.n_action_steps > self.action_chunk:
            raise ValueError(
                f"MHCConfig.n_action_steps={self.n_action_steps} must be <= action_chunk={self.action_chunk}"
            )
        if self.num_skills < 2 or self.num_targets < 2:
            raise ValueError(
                f"MHCConfig.num_skills={self.num_skills}/num_targets={self.num_targets} must be >= 2 "
                "(class 0 is <none>)"
            )
        if not self.dense and self.heads_per_domain == 0 and self.shared_heads == 0:
            raise ValueError("MHCConfig.heads_per_domain=0 and shared_heads=0: no attention heads")
        if self.shared_heads == 0:
            # visual/physical tokens read the instruction only through the shared heads
            raise ValueError(f"MHCConfig.shared_heads={self.shared_heads} must be >= 1")
        for key, value in self.loss_weights.items():
            if key not in {"action", "motion", "presence", "plan", "phase"}:
                raise ValueError(f"MHCConfig.loss_weights key {key!r} unknown")
            if value < 0:
                raise ValueError(f"MHCConfig.loss_weights[{key!r}]={value} must be >= 0")

    # derived sizes ------------------------------------------------------------------------------
    @property
    def n_patches(self) -> int:
        """Visual tokens per image."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def n_frames(self) -> int:
        """Camera frames in the model's image input: the instruction frame (if any), then the history."""
        return self.image_history + int(self.instruction_frame)

    @property
    def frame_lag(self) -> int:
        """Ticks between the oldest and the newest frame of the history."""
        return self.image_stride * (self.image_history - 1)

    @property
    def n_action_queries(self) -> int:
        """Action-chunk queries: each predicts ``action_steps_per_query`` consecutive steps."""
        return self.action_chunk // self.action_steps_per_query

    @property
    def n_query_tokens(self) -> int:
        """Learned output queries: K / steps-per-query action + 7 motion slots + 1 plan + 1 phase."""
        return self.n_action_queries + MOTION_SLOTS + 2

    @property
    def n_physical_tokens(self) -> int:
        return self.joint_history + self.n_query_tokens

    # serialisation ------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MHCConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"MHCConfig: unknown field(s) {unknown}")
        return cls(**data)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> MHCConfig:
        """Build from a JSON string or a path to a JSON file."""
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text).read_text()
        return cls.from_dict(json.loads(text))

    def replace(self, **changes: Any) -> MHCConfig:
        return dataclasses.replace(self, **changes)


_TINY = dict(
    name="tiny", d_model=64, n_layers=2, head_dim=16, heads_per_domain=1, shared_heads=1,
    experts_per_domain=4, top_k=2, expert_hidden=32, shared_expert_hidden=64, dense_ffn_hidden=256,
    vocab_size=64, max_instruction_len=12, image_size=32, patch_size=8, stem_channels=16,
    joint_history=2, action_chunk=4, n_action_steps=2, motion_horizon=4, plan_slots=6,
    num_skills=8, num_targets=12, ee_pose_features=True,
)
# Shipping preset: MHCConfig defaults with the batch-1 cost cut where it is spent (measured with ONNX
# Runtime on 2 CPU cores): 4 action steps per query token, 64×64 input (16 patches), 4 layers.
# (96×96 input, fine-tuned: 5.0–5.2 ms instead of 2.6–2.9 on that CPU; bench/results/finetune_96px/.)
# The hand pose from forward kinematics goes into the physical tokens (grasps closed 1–3 cm above the cube).
# The instruction's first frame is a second image input (the hand hid the cube in pushes toward the robot),
# and one routed expert of 32 units per token instead of two of 80: each token copies its experts' weights
# at batch 1, 8.8 MB per step instead of 43.6, and it came level with the dense baseline (ninth run,
# bench/results/train_h200_v9/; the earlier preset: model/recipes/two_experts/).
_S = dict(name="s", action_steps_per_query=4, image_size=64, n_layers=4, ee_pose_features=True,
          instruction_frame=True, top_k=1, expert_hidden=32)


def _dense(base: dict[str, Any], name: str) -> MHCConfig:
    """Dense baseline of ``base``: same width/depth, every head (3 groups + shared) on every token.

    The routed-expert sizes keep their defaults (a dense model has none)."""
    mhc = MHCConfig(**base)
    rest = {k: v for k, v in base.items() if k not in ("top_k", "expert_hidden")}
    return MHCConfig(**{**rest, "name": name, "dense": True,
                        "shared_heads": 3 * mhc.heads_per_domain + mhc.shared_heads})


PRESETS = {
    "tiny": lambda: MHCConfig(**_TINY),
    "s": lambda: MHCConfig(**_S),
    "dense_tiny": lambda: _dense(_TINY, "dense_tiny"),
    "dense_s": lambda: _dense(_S, "dense_s"),
}

# mHC preset → its dense baseline
DENSE_BASELINE = {"tiny": "dense_tiny", "s": "dense_s"}


def preset(name: str) -> MHCConfig:
    """Return a fresh config of preset ``name`` (tiny, s, dense_tiny, dense_s)."""
    if name not in PRESETS:
        raise ValueError(f"preset {name!r} unknown ({', '.join(PRESETS)})")
    return PRESETS[name]()


def load_config(spec: str) -> MHCConfig:
    """``spec`` is a preset name or a path to a JSON config file."""
    if spec in PRESETS:
        return preset(spec)
    path = Path(spec)
    if not path.is_file():
        raise ValueError(f"config {spec!r} is neither a preset ({', '.join(PRESETS)}) nor a JSON file")
    return MHCConfig.from_json(path)
