"""The ball's predicted motion from colour keypoints (``cfg.ball_keypoints``), and its training.

The ball is the one object that moves by itself. Its motion-slot token sees the scene through 16-pixel
patches; in closed loop it predicted the ball at 4.6 cm average displacement error, against 1.7 cm for
constant velocity from the same camera frames (``bench/results/finetune_age/``).

:class:`BallMotionHead` reads the instruction's first frame and the current frame of the model's image
input. Per-pixel colour features (1×1 convolutions: 0.46 M multiply-adds for both frames at 64×64) give
``K`` heat maps per frame; a softmax over the pixels turns each into a keypoint at sub-pixel precision
(soft-argmax), and its peak is a visibility. The keypoints' displacement over the ticks between the two
frames (``instruction_age``) is a velocity; an MLP maps keypoints, velocities, visibilities and the age
to the ball's ``H`` future positions, normalised like every motion output. With
``cfg.ball_keypoints > 0`` this replaces the ball slot of ``motion``; the other slots and every action
still come from the query tokens.

It is trained after the trunk, on the ball's episodes, with every other weight frozen, so the actions
of the checkpoint it starts from do not change (``python -m mhc_model.ball_motion``)::

    python -m mhc_model.ball_motion --checkpoint model/checkpoints/mhc_s.safetensors \
        --data data/ball data/ball_late --out RUN/mhc_s_ball.safetensors

It reads nothing of the trunk, so a trained head moves to another trunk with the same camera input and
motion normaliser unchanged (``--head-from HEAD.safetensors`` instead of training; it still reports the
held-out error on ``--data``).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from mhc_model.config import BALL_SLOT, MHCConfig
from mhc_model.tokenizers import AGE_FEATURES, age_features
from torch import nn

HIDDEN = 256
COLOUR_FEATURES = 8
VELOCITY_SCALE = 16.0  # keypoint displacement per tick (image half-widths) → order one


class BallMotionHead(nn.Module):
    """``image (B, 6, S, S)`` (instruction frame, current frame) in [0, 1], ``age (B, 1)`` → ``(B, H, 3)``
    normalised ball positions."""

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        k = self.k = cfg.ball_keypoints
        self.horizon = cfg.motion_horizon
        self.heat = nn.Sequential(nn.Conv2d(3, COLOUR_FEATURES, 1), nn.LeakyReLU(0.1),
                                  nn.Conv2d(COLOUR_FEATURES, k, 1))
        side = cfg.image_size
        centres = (torch.arange(side, dtype=torch.float32) + 0.5) / side * 2 - 1  # pixel centres in [−1, 1]
        grid = torch.stack([centres[None, :].expand(side, side), centres[:, None].expand(side, side)])
        self.register_buffer("grid", grid.reshape(2, side * side).T.contiguous(), persistent=False)  # (S², 2)
        self.mlp = nn.Sequential(nn.Linear(8 * k + AGE_FEATURES, HIDDEN), nn.GELU(),
                                 nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, self.horizon * 3))

    def keypoints(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``frames (N, 3, S, S)`` → keypoints ``(N, K, 2)`` (x, y in [−1, 1]) and visibilities ``(N, K)``.

        ``heat`` applied to the frames centred as ``(x − 0.5) · 4``, written as two matrix products over
        the pixels with the centring folded into the first layer's weights (constants in an export): on a
        CPU at batch 1 that is half the time of the 1×1 convolutions and their two elementwise passes.
        """
        first, last = self.heat[0], self.heat[2]
        w = first.weight.flatten(1)  # (F, 3)
        h = torch.matmul(w * 4.0, frames.flatten(2)) + (first.bias - 2.0 * w.sum(1))[:, None]  # (N, F, S²)
        h = self.heat[1](h)
        logits = torch.matmul(last.weight.flatten(1), h) + last.bias[:, None]  # (N, K, S²)
        return logits.softmax(dim=-1) @ self.grid, logits.amax(dim=-1)

    def forward(self, image: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        B, _, S, _ = image.shape
        points, seen = self.keypoints(image.reshape(B * 2, 3, S, S))  # both frames at once
        points = points.reshape(B, 2, self.k, 2)
        velocity = (points[:, 1] - points[:, 0]) / age.float().clamp(min=1.0)[:, :, None] * VELOCITY_SCALE
        features = torch.cat([points.flatten(1), velocity.flatten(1), seen.reshape(B, 2 * self.k),
                              age_features(age)], dim=1)
        return self.mlp(features).reshape(B, self.horizon, 3)


# ------------------------------------------------------------------------------------------- training

VAL_FRACTION = 0.15
SPLIT_SEED = 0


def ball_episodes(dirs: list[str]) -> list:
    """The episodes whose scene has the ball (``intercept``), from shard folders, sorted by name."""
    from mhc_model.data import list_shards, load_episode

    def intercept(path: Path) -> bool:  # the ball's only task, read from the small JSON beside the shard
        return json.loads(path.with_suffix(".json").read_text())["task"] == "intercept"

    episodes = [load_episode(p) for d in dirs for p in list_shards(d) if intercept(p)]
    return sorted((e for e in episodes if e.arrays["object_present"][BALL_SLOT]), key=lambda e: e.name)


def split(episodes: list) -> tuple[list, list]:
    """Training and held-out episodes, by a fixed split of their names."""
    from mhc_model.data import split_episodes

    train, val = split_episodes([e.name for e in episodes], VAL_FRACTION, SPLIT_SEED)
    by_name = {e.name: e for e in episodes}
    return [by_name[n] for n in train], [by_name[n] for n in val]


def scored_ticks(steps: int, horizon: int) -> np.ndarray:
    """Ticks ``t ≥ 1`` of an episode of ``steps`` ticks whose whole horizon ``t+1..t+horizon`` is in it."""
    return np.arange(1, steps - horizon)


class BallTicks:
    """Every tick ``t ≥ 1`` of some episodes whose horizon ``t+1..t+H`` was recorded: the frames at the
    model's input size (uint8), the ball's true positions, and per tick its frame index, its episode's
    first frame index and the future frame indices ``(H,)``."""

    def __init__(self, episodes: list, image_size: int, horizon: int):
        from mhc_model.data import resized_frames

        frames, positions, now, first = [], [], [], []
        offset = 0
        for e in episodes:
            frames.append(resized_frames(e.arrays["images"], image_size))
            positions.append(torch.from_numpy(e.arrays["object_positions"][:, BALL_SLOT].astype(np.float32)))
            ticks = scored_ticks(len(frames[-1]), horizon)
            now.append(offset + ticks)
            first.append(np.full(len(ticks), offset))
            offset += len(frames[-1])
        self.frames, self.positions = torch.cat(frames), torch.cat(positions)
        self.now = torch.from_numpy(np.concatenate(now))
        self.first = torch.from_numpy(np.concatenate(first))
        self.future = self.now[:, None] + torch.arange(1, horizon + 1)

    def __len__(self) -> int:
        return len(self.now)

    def to(self, device: torch.device) -> BallTicks:
        for name in ("frames", "positions", "now", "first", "future"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def inputs(self, ticks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (B, 6, S, S)`` in [0, 1] (first frame, current) and ``age (B, 1)`` of some ticks."""
        image = torch.cat([self.frames[self.first[ticks]], self.frames[self.now[ticks]]], dim=1).float() / 255.0
        return image, (self.now[ticks] - self.first[ticks]).float()[:, None]


def lr_factor(step: int, steps: int) -> float:
    """Linear warm-up over the first 5 % of the steps, then cosine to 0."""
    return min(1.0, (step + 1) / max(1, steps // 20)) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / steps)))


def held_out_ade(head: BallMotionHead, data: BallTicks, position_norm) -> float:
    """Mean ADE (m) of ``head`` over every tick of ``data``."""
    head.eval()
    errors = []
    with torch.no_grad():
        for chunk in torch.arange(len(data), device=data.now.device).split(1024):
            predicted = position_norm.denormalize(head(*data.inputs(chunk)))
            errors.append((predicted - data.positions[data.future[chunk]]).norm(dim=-1).mean(dim=-1))
    head.train()
    return float(torch.cat(errors).mean())


def train(args: argparse.Namespace) -> int:
    from mhc_model.checkpoint import init_from, read_metadata, save_checkpoint
    from mhc_model.data import augment_images

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    meta = read_metadata(args.checkpoint)  # config and training record only: init_from loads the weights
    extra = json.loads(meta.get("extra", "{}"))
    config = MHCConfig.from_json(meta["config"]).replace(ball_keypoints=args.keypoints)
    policy = init_from(args.checkpoint, config, [])
    policy.to(device)
    head, position_norm = policy.model.ball_motion, policy.model.heads.position_norm
    cfg = policy.config
    train_eps, val_eps = split(ball_episodes(args.data))
    if not train_eps or not val_eps:
        raise SystemExit(f"--data {args.data}: {len(train_eps) + len(val_eps)} ball episodes, need at least 2")
    va = BallTicks(val_eps, cfg.image_size, cfg.motion_horizon).to(device)
    if args.head_from:  # nothing to train: only the held-out ticks are needed
        return graft(args, policy, va, extra)
    tr = BallTicks(train_eps, cfg.image_size, cfg.motion_horizon).to(device)
    print(f"{len(train_eps)} training / {len(val_eps)} held-out ball episodes ({len(tr)} / {len(va)} ticks)",
          flush=True)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps))
    generator = torch.Generator().manual_seed(args.seed)
    shift = {} if args.crop else {"max_shift": 0.0, "max_zoom": 0.0}
    started = time.perf_counter()
    for step in range(args.steps):
        pick = torch.randint(len(tr), (args.batch_size,), generator=generator).to(device)
        image, age = tr.inputs(pick)
        image = augment_images(image, generator, **shift)
        target = position_norm.normalize(tr.positions[tr.future[pick]])
        loss = nn.functional.smooth_l1_loss(head(image, age), target, beta=0.05)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(f"step {step + 1}/{args.steps}: loss {loss.item():.4f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)
    ade = held_out_ade(head, va, position_norm)
    print(f"held-out ADE of the ball: {ade * 100:.2f} cm over {len(va)} ticks", flush=True)
    trained = {"ball_motion": {"from": str(args.checkpoint), "data": [str(d) for d in args.data],
                               "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
                               "crop": args.crop, "held_out_ade_m": ade}}
    path = save_checkpoint(args.out, policy.cpu(), {**extra, **trained})
    print(f"wrote {path}")
    return 0


def graft(args: argparse.Namespace, policy, held_out: BallTicks, extra: dict) -> int:
    """Copy the trained head of ``args.head_from`` into ``policy`` (``args.checkpoint`` with the head added),
    report its held-out error, write ``args.out``."""
    from mhc_model.checkpoint import load_policy, save_checkpoint

    source, source_extra = load_policy(args.head_from)
    model, donor = policy.model, source.model
    if donor.ball_motion is None:
        raise ValueError(f"--head-from {str(args.head_from)!r} has no ball head (ball_keypoints 0)")
    same = {k: getattr(source.config, k) == getattr(policy.config, k)
            for k in ("ball_keypoints", "image_size", "motion_horizon")}
    same["motion normaliser"] = all(torch.equal(a, b.to(a.device)) for a, b in zip(
        model.heads.position_norm.buffers(), donor.heads.position_norm.buffers(), strict=True))
    if not all(same.values()):
        raise ValueError(f"--head-from {str(args.head_from)!r}: differs from --checkpoint in "
                         f"{[k for k, v in same.items() if not v]}")
    model.ball_motion.load_state_dict(donor.ball_motion.state_dict())
    ade = held_out_ade(model.ball_motion, held_out, model.heads.position_norm)
    print(f"held-out ADE of the grafted head: {ade * 100:.2f} cm over {len(held_out)} ticks", flush=True)
    grafted = {"ball_motion": {**source_extra.get("ball_motion", {}), "grafted_from": str(args.head_from),
                               "held_out_ade_m": ade}}
    path = save_checkpoint(args.out, policy.cpu(), {**extra, **grafted})
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhc_model.ball_motion", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="trained mHC checkpoint to add the head to")
    parser.add_argument("--data", required=True, nargs="+", help="`mhc collect` folders with intercept episodes")
    parser.add_argument("--out", required=True, type=Path, help="checkpoint to write (.safetensors)")
    parser.add_argument("--keypoints", type=int, default=4, help="soft-argmax keypoints per frame")
    parser.add_argument("--head-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="copy this checkpoint's trained head instead of training one")
    parser.add_argument("--steps", type=int, default=8000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--crop", action="store_true", help="random shift/zoom of the frames (colour jitter always)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu, cuda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-every", type=int, default=500)
    args = parser.parse_args(argv)
    if args.keypoints < 1:
        parser.error(f"--keypoints {args.keypoints} must be >= 1")
    try:
        return train(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
