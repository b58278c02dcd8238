"""Training data: the shards written by ``mhc collect`` (see docs/contracts.md), in memory.

Each sample is (episode, step t) with ``train_mask[t]`` true (all steps when a shard has no mask; false
marks a scripted deliberate mistake, kept as history and future but never imitated), or with
``motion_mask[t]`` true (absent: ``train_mask``): a step whose scene motion is learned but whose action,
plan and phase are not (the batch's ``imitate`` is 0; e.g. a late start, the ball rolling past): inputs
``joint_history`` t−Hj+1..t (first state repeated before the start), the camera frames the config
asks for at t (``mhc_model.frames``; resized to the model input once, at load), the instruction, t
itself (``instruction_age``: a shard starts at its instruction); labels: actions t..t+K−1 (last
repeated), object and end-effector positions t+1..t+H (last repeated), presence flags, the episode's plan
and the phase at t.
Augmentations (colour jitter, small random crops, instruction word dropout) run batched on the training
device. Steps just after a masked stretch (the recovery from a deliberate mistake) can be sampled several
times per epoch (``recovery_repeats``): they are few, and they are what the mask is there to teach.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from mhc_model.config import MHCConfig
from mhc_model.frames import frame_ticks
from mhc_model.tokenizers import BOS, NONE, PAD, UNK, LabelVocabulary, Vocabulary, resize_images

RECOVERY_WINDOW = 50  # steps after a masked stretch that count as its recovery (re-approach, grasp, lift)


@dataclass
class Episode:
    name: str
    meta: dict
    arrays: dict[str, np.ndarray]


def list_shards(data_dir: str | Path) -> list[Path]:
    """``DIR/shards/*.npz`` (or ``DIR/*.npz``) sorted by name; raises naming the folder if none."""
    root = Path(data_dir)
    shards = sorted((root / "shards").glob("*.npz")) or sorted(root.glob("*.npz"))
    if not shards:
        raise ValueError(f"no shards (*.npz) under {str(root)!r} or {str(root / 'shards')!r}")
    return shards


def load_episode(npz_path: Path) -> Episode:
    with np.load(npz_path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(npz_path.with_suffix(".json").read_text())
    return Episode(npz_path.stem, meta, arrays)


def resized_frames(images: np.ndarray, size: int) -> torch.Tensor:
    """A shard's ``images (T, H, W, 3) uint8`` → ``(T, 3, size, size) uint8`` at the model input size
    (resized in chunks of 64 frames to bound the float copy)."""
    img = torch.from_numpy(images).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
    chunks = [resize_images(c.float() / 255.0, size) for c in img.split(64)]
    return (torch.cat(chunks) * 255.0).round().to(torch.uint8)


def split_episodes(names: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Deterministic split by episode (never by frame): ``(train, val)``; val empty if < 2 episodes."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction={val_fraction} must be in [0, 1)")
    order = sorted(names)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n_val = 0 if len(order) < 2 or val_fraction == 0 else max(1, round(len(order) * val_fraction))
    return sorted(order[n_val:]), sorted(order[:n_val])


def build_vocabularies(episodes: list[Episode]) -> tuple[Vocabulary, LabelVocabulary, LabelVocabulary]:
    vocab = Vocabulary.build(e.meta["instruction"] for e in episodes)
    skills = LabelVocabulary.build(str(s) for e in episodes for s, _ in e.meta["plan"])
    slots = [str(s) for e in episodes for s in e.meta.get("object_slots", [])]
    targets = LabelVocabulary.build([*slots, *(str(t) for e in episodes for _, t in e.meta["plan"])])
    return vocab, skills, targets


def sample_repeats(train_mask: np.ndarray, recovery_repeats: int, window: int = RECOVERY_WINDOW) -> np.ndarray:
    """Times each step of an episode is sampled per epoch: 0 where ``train_mask`` is false,
    ``recovery_repeats`` for the ``window`` steps after each masked stretch, 1 elsewhere."""
    mask = np.asarray(train_mask, dtype=bool)
    repeats = mask.astype(np.int64)
    ends = np.flatnonzero(~mask[:-1] & mask[1:]) + 1  # first step after each masked stretch
    for end in ends:
        span = slice(end, min(end + window, len(mask)))
        repeats[span] = np.where(mask[span], recovery_repeats, 0)
    return repeats


class ShardDataset:
    """All frames of some episodes as tensors; ``batch(indices)`` builds an input+label dict.

    ``recovery_repeats``: how often each recovery step (see :func:`sample_repeats`) is a sample.
    """

    def __init__(self, episodes: list[Episode], cfg: MHCConfig, vocab: Vocabulary,
                 skills: LabelVocabulary, targets: LabelVocabulary, recovery_repeats: int = 1):
        if not episodes:
            raise ValueError("ShardDataset needs at least one episode")
        if recovery_repeats < 1:
            raise ValueError(f"recovery_repeats={recovery_repeats} must be >= 1")
        self.cfg = cfg
        images, joints, actions, obj, ee, present, phase, ids, masks = [], [], [], [], [], [], [], [], []
        plan_s, plan_t, hist_idx, frame_idx, act_idx, fut_idx, ep_of, sample_counts = [], [], [], [], [], [], [], []
        ticks = []
        imitate = []
        offset = 0
        for ei, ep in enumerate(episodes):
            a = ep.arrays
            T = len(a["actions"])
            images.append(resized_frames(a["images"], cfg.image_size))
            joints.append(np.concatenate([a["joint_positions"], a["joint_velocities"]], axis=1))
            actions.append(a["actions"])
            obj.append(a["object_positions"])
            ee.append(a["ee_positions"])
            present.append(np.concatenate([a["object_present"].astype(bool), [True]]))
            phase.append(np.clip(a["phase"].astype(np.int64), 0, cfg.plan_slots - 1))
            i, m = vocab.encode(ep.meta["instruction"], cfg.max_instruction_len)
            ids.append(i)
            masks.append(m)
            plan = list(ep.meta["plan"])[: cfg.plan_slots]
            s_ids = [skills.id(str(s)) for s, _ in plan] + [skills.id(NONE)] * (cfg.plan_slots - len(plan))
            t_ids = [targets.id(str(t)) for _, t in plan] + [targets.id(NONE)] * (cfg.plan_slots - len(plan))
            plan_s.append(s_ids)
            plan_t.append(t_ids)
            t = np.arange(T)
            hist_idx.append(offset + np.clip(t[:, None] + np.arange(-cfg.joint_history + 1, 1), 0, T - 1))
            frame_idx.append(offset + frame_ticks(cfg, t))
            act_idx.append(offset + np.clip(t[:, None] + np.arange(cfg.action_chunk), 0, T - 1))
            fut_idx.append(offset + np.clip(t[:, None] + np.arange(1, cfg.motion_horizon + 1), 0, T - 1))
            ep_of.append(np.full(T, ei))
            ticks.append(t)
            train = np.asarray(a.get("train_mask", np.ones(T, bool)), dtype=bool)
            motion_only = np.asarray(a.get("motion_mask", train), dtype=bool) & ~train
            sample_counts.append(np.where(motion_only, 1, sample_repeats(train, recovery_repeats)))
            imitate.append(train)
            offset += T
        self.images = torch.cat(images)  # (F, 3, S, S) uint8
        self.joints = torch.from_numpy(np.concatenate(joints).astype(np.float32))  # (F, 18)
        self.actions = torch.from_numpy(np.concatenate(actions).astype(np.float32))  # (F, 8)
        positions = np.concatenate([np.concatenate(obj), np.concatenate(ee)[:, None]], axis=1)
        self.positions = torch.from_numpy(positions.astype(np.float32))  # (F, 7, 3)
        self.phase = torch.from_numpy(np.concatenate(phase))  # (F,)
        self.episode = torch.from_numpy(np.concatenate(ep_of))  # (F,)
        self.tick = torch.from_numpy(np.concatenate(ticks).astype(np.float32))  # (F,) ticks since the instruction
        self.imitate = torch.from_numpy(np.concatenate(imitate))  # (F,) bool: the action is a demonstration
        self.present = torch.from_numpy(np.stack(present))  # (n_ep, 7)
        self.ids = torch.from_numpy(np.stack(ids))  # (n_ep, L)
        self.masks = torch.from_numpy(np.stack(masks))  # (n_ep, L)
        self.plan_skill = torch.tensor(plan_s, dtype=torch.long)  # (n_ep, P)
        self.plan_target = torch.tensor(plan_t, dtype=torch.long)  # (n_ep, P)
        self.hist_idx = torch.from_numpy(np.concatenate(hist_idx))  # (F, Hj)
        self.frame_idx = torch.from_numpy(np.concatenate(frame_idx))  # (F, n_frames)
        self.act_idx = torch.from_numpy(np.concatenate(act_idx))  # (F, K)
        self.fut_idx = torch.from_numpy(np.concatenate(fut_idx))  # (F, H)
        repeats = np.concatenate(sample_counts)  # (F,) times each frame is a sample
        self.samples = torch.from_numpy(np.repeat(np.arange(len(repeats)), repeats))  # (S,) frames to learn from
        if len(self.samples) == 0:
            raise ValueError("ShardDataset: every step of these episodes is masked out (train_mask, motion_mask)")

    def __len__(self) -> int:
        """Samples (frames with ``train_mask`` or ``motion_mask``, recovery steps repeated), the range of
        :meth:`batch`'s indices."""
        return len(self.samples)

    def to(self, device: torch.device | str) -> ShardDataset:
        """Move every tensor (images stay uint8) to ``device``, e.g. the GPU for fast batching."""
        for name, value in vars(self).items():
            if torch.is_tensor(value):
                setattr(self, name, value.to(device))
        return self

    def statistics(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Mean/std of joint states, actions and positions (present slots only) for the normalisers."""
        pos = self.positions.reshape(-1, 3)
        present = self.present[self.episode].reshape(-1)  # (F·7,)
        pos = pos[present] if present.any() else pos
        return {
            "joints": (self.joints.mean(0), self.joints.std(0)),
            "actions": (self.actions.mean(0), self.actions.std(0)),
            "positions": (pos.mean(0), pos.std(0)),
        }

    def batch(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """``index (B,)`` sample ids (``0 <= i < len(self)``) → batch dict (images float in [0, 1])."""
        index = self.samples[index]  # frame ids
        ep = self.episode[index]
        return {
            "instruction_ids": self.ids[ep],
            "instruction_mask": self.masks[ep],
            "image": self.images[self.frame_idx[index]].flatten(1, 2).float() / 255.0,  # (B, 3·n_frames, S, S)
            "joint_history": self.joints[self.hist_idx[index]],  # (B, Hj, 18)
            "instruction_age": self.tick[index][:, None],  # (B, 1)
            "action": self.actions[self.act_idx[index]],  # (B, K, 8)
            "motion": self.positions[self.fut_idx[index]],  # (B, H, 7, 3)
            "motion_present": self.present[ep],  # (B, 7)
            "plan_skill": self.plan_skill[ep],
            "plan_target": self.plan_target[ep],
            "phase": self.phase[index],
            "imitate": self.imitate[index].float(),  # (B,) 0: learn the motion only
        }


def augment_images(images: torch.Tensor, generator: torch.Generator, max_shift: float = 0.06,
                   max_zoom: float = 0.08, jitter: float = 0.2) -> torch.Tensor:
    """Batched small random crops (shift + zoom via an affine grid; none when ``max_shift`` and
    ``max_zoom`` are 0) and colour jitter (brightness, contrast, saturation ± ``jitter``).
    ``images (B, 3·F, S, S)`` in [0, 1]: the F stacked frames of a sample get the same crop and the same
    jitter."""
    B = images.shape[0]
    dev = images.device

    def uniform(*shape: int) -> torch.Tensor:
        return (torch.rand(*shape, generator=generator) * 2 - 1).to(dev)

    out = images
    if max_shift > 0 or max_zoom > 0:
        scale = 1.0 - max_zoom * (uniform(B) + 1) / 2  # zoom in: crop of 92..100 %
        theta = torch.zeros(B, 2, 3, device=dev)
        theta[:, 0, 0] = scale
        theta[:, 1, 1] = scale
        theta[:, :, 2] = uniform(B, 2) * max_shift
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        out = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    brightness = 1 + jitter * uniform(B, 1, 1, 1)
    contrast = 1 + jitter * uniform(B, 1, 1, 1)
    saturation = 1 + jitter * uniform(B, 1, 1, 1)
    out = out * brightness
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * contrast + mean
    frames = out.unflatten(1, (-1, 3))  # (B, F, 3, S, S)
    grey = frames.mean(dim=2, keepdim=True)
    out = ((frames - grey) * saturation[:, None] + grey).flatten(1, 2)
    return out.clamp(0.0, 1.0)


def drop_words(ids: torch.Tensor, generator: torch.Generator, p: float, vocab: Vocabulary) -> torch.Tensor:
    """Instruction word dropout: each word id of ``ids (B, L)`` becomes ``<unk>`` with probability ``p``
    (``<bos>`` and padding stay), so the policy leans on the words that matter and copes with unseen ones."""
    if p <= 0:
        return ids
    words = (ids != vocab.index[BOS]) & (ids != vocab.index[PAD])
    drop = (torch.rand(ids.shape, generator=generator) < p).to(ids.device) & words
    return torch.where(drop, torch.full_like(ids, vocab.index[UNK]), ids)


def epoch_order(n: int, epoch: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Shuffled frame ids of one epoch, this rank's share (equal length on every rank)."""
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    perm = torch.randperm(n, generator=g)
    per_rank = math.ceil(n / world)
    perm = torch.cat([perm, perm[: per_rank * world - n]])  # pad so every rank gets as many
    return perm[rank::world]
