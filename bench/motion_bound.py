"""How well can the ball's motion be predicted from the camera frames alone? A bound for the motion head.

Small ball-only networks (no instruction, no joints, no control): a convolutional keypoint encoder per
frame (spatial soft-argmax at 32×32, so positions are not bound to 16-pixel patches) and an MLP to the
ball's positions at t+1..t+H, trained on the ball episodes of the training shards and scored on held-out
ones. Variants (``VARIANTS``) cross the frames they see — ``current`` (t), ``pair`` (t−1 and t: the
observations of the constant-velocity baseline), the episode's first frame and t (``instruction_noage``:
preset s's frames), the first frame, t−8 and t (``instruction_stride8``) — and whether they also get the
ticks since the first frame (``_age``; ``instruction`` has them) — with the crop augmentation of training
on or off (colour jitter always on).

Two steps, because the GPU machine has no simulator and the camera model lives there::

    python bench/motion_bound.py train --data SHARDS... --out bound.npz          # GPU, torch only
    python bench/motion_bound.py score --data SHARDS... --predictions bound.npz... \\
        --out bench/results/motion_bound/bound.json                               # CPU, with mhc_sim

``score`` compares each variant with constant velocity from the ball seen in the recorded 96 px frames
(``mhc_ros.evaluate.ball_from_image``) at t−1 and t, on the ticks where both saw it, as ``mhc eval`` does,
and also from the first frame and t (the long baseline of the ``instruction`` inputs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from mhc_model.ball_motion import BallTicks, ball_episodes, lr_factor, scored_ticks, split
from mhc_model.config import BALL_SLOT

HORIZON = 8  # the presets' motion_horizon
IMAGE_SIZE = 64  # preset s's input
# variant → (earlier frames beside t: a lag in ticks or the episode's first frame, whether it gets the ticks
# since the first frame). The mHC's preset s sees ``instruction_noage``; ``instruction_stride8`` is what
# image_history 2, image_stride 8 and instruction_frame would give it, with no new input.
VARIANTS: dict[str, tuple[tuple[int | str, ...], bool]] = {
    "current": ((), False),
    "current_age": ((), True),
    "pair": ((1,), False),
    "pair_age": ((1,), True),
    "instruction_noage": (("first",), False),
    "instruction": (("first",), True),
    "instruction_stride8": (("first", 8), False),
}


def _model(n_frames: int, keypoints: int = 16):
    import torch
    from torch import nn

    class KeypointEncoder(nn.Module):
        """``(B, 3, S, S)`` → ``(B, 2·K + 64)``: K soft-argmax keypoints (x, y in [−1, 1]) and pooled features."""

        def __init__(self):
            super().__init__()
            self.convs = nn.Sequential(
                nn.Conv2d(5, 32, 3, padding=1), nn.GELU(), nn.Conv2d(32, 32, 3, padding=1), nn.GELU(),
                nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(), nn.Conv2d(64, 64, 3, padding=1), nn.GELU())
            self.heat = nn.Conv2d(64, keypoints, 1)
            self.temperature = nn.Parameter(torch.tensor(10.0))

        def forward(self, x):
            B, _, S, _ = x.shape
            grid = torch.linspace(-1, 1, S, device=x.device)
            coords = torch.stack([grid[None, :].expand(S, S), grid[:, None].expand(S, S)])  # (2, S, S)
            h = self.convs(torch.cat([x, coords.expand(B, 2, S, S)], dim=1))  # (B, 64, S/2, S/2)
            heat = (self.heat(h) * self.temperature).flatten(2).softmax(-1)  # (B, K, S²/4)
            half = torch.linspace(-1, 1, h.shape[-1], device=x.device)
            xy = torch.stack([half[None, :].expand_as(h[0, 0]), half[:, None].expand_as(h[0, 0])]).flatten(1)
            points = torch.einsum("bkn,cn->bkc", heat, xy)  # (B, K, 2)
            return torch.cat([points.flatten(1), h.mean(dim=(2, 3))], dim=1)

    class BallMotion(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = KeypointEncoder()
            width = n_frames * (2 * keypoints + 64) + 1
            self.mlp = nn.Sequential(nn.Linear(width, 512), nn.GELU(), nn.Linear(512, 512), nn.GELU(),
                                     nn.Linear(512, HORIZON * 3))

        def forward(self, frames, age):  # frames (B, F, 3, S, S), age (B,) ticks
            features = self.encoder(frames.flatten(0, 1)).view(frames.shape[0], -1)
            return self.mlp(torch.cat([features, age[:, None] / 64.0], dim=1)).view(-1, HORIZON, 3)

    return BallMotion()


def _inputs(frames, now, first, variant, crop, generator):
    """``(images (B, F, 3, S, S), age (B,))`` of a variant; age is 0 for variants without it."""
    import torch
    from mhc_model.data import augment_images

    earlier, with_age = VARIANTS[variant]
    ids = [first if e == "first" else (now - e).clamp(min=first) for e in earlier] + [now]
    images = torch.stack([frames[i] for i in ids], dim=1).float() / 255.0  # (B, F, 3, S, S)
    B, F = images.shape[:2]
    if generator is not None:
        kw = {} if crop else {"max_shift": 0.0, "max_zoom": 0.0}
        images = augment_images(images.flatten(1, 2), generator, **kw).view(B, F, 3, IMAGE_SIZE, IMAGE_SIZE)
    return images, (now - first).float() * float(with_age)


def train(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(0)
    device = torch.device(args.device)
    episodes = ball_episodes(args.data)
    train_eps, val_eps = split(episodes)
    print(f"{len(train_eps)} training / {len(val_eps)} held-out ball episodes", flush=True)
    tr = BallTicks(train_eps, IMAGE_SIZE, HORIZON).to(device)
    va = BallTicks(val_eps, IMAGE_SIZE, HORIZON).to(device)
    mean, std = tr.positions.mean(0), tr.positions.std(0)
    out: dict[str, np.ndarray] = {"val_episodes": np.array([e.name for e in val_eps])}
    for variant in args.variants:
        for crop in args.crop:
            name = f"{variant}_{crop}"
            crop = crop == "crop"
            model = _model(len(VARIANTS[variant][0]) + 1).to(device)
            optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps))
            generator = torch.Generator().manual_seed(1)
            started = time.perf_counter()
            for step in range(args.steps):
                pick = torch.randint(len(tr), (args.batch_size,), generator=generator).to(device)
                images, age = _inputs(tr.frames, tr.now[pick], tr.first[pick], variant, crop, generator)
                target = (tr.positions[tr.future[pick]] - mean) / std
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    loss = torch.nn.functional.smooth_l1_loss(model(images, age).float(), target, beta=0.05)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                if (step + 1) % 1000 == 0:
                    print(f"  {name} step {step + 1}/{args.steps}: loss {loss.item():.4f} "
                          f"({time.perf_counter() - started:.0f} s)", flush=True)
            model.eval()
            predictions = []
            with torch.no_grad():
                for chunk in torch.arange(len(va), device=device).split(1024):
                    images, age = _inputs(va.frames, va.now[chunk], va.first[chunk], variant, crop, None)
                    predictions.append(model(images, age).float() * std + mean)
            predicted = torch.cat(predictions)
            ade = (predicted - va.positions[va.future]).norm(dim=-1).mean().item()
            print(f"{name}: {args.steps} steps in {time.perf_counter() - started:.0f} s, held-out ADE "
                  f"{ade * 100:.2f} cm (every scored tick)", flush=True)
            out[name] = predicted.cpu().numpy()
            np.savez_compressed(args.out, **out)  # after each variant: a cut-short run keeps what it finished
            print(f"wrote {args.out}", flush=True)
    return 0


# ---------------------------------------------------------------------------------------------- score


def score(args: argparse.Namespace) -> int:
    from mhc_ros.evaluate import ball_from_image, constant_velocity, displacement_error

    _, val_eps = split(ball_episodes(args.data))
    saved: dict[str, np.ndarray] = {}
    for path in args.predictions:
        with np.load(path, allow_pickle=False) as z:
            if [e.name for e in val_eps] != list(z["val_episodes"]):
                raise SystemExit(f"{path}: held-out episodes differ from those of {args.data}")
            saved.update({k: z[k] for k in z.files if k != "val_episodes"})
    variants = sorted(saved)
    rows: dict[str, dict[str, list[float]]] = {}
    offset = 0
    for e in val_eps:
        steps = len(e.arrays["images"])
        truth_all = e.arrays["object_positions"][:, BALL_SLOT].astype(float)
        seen = [ball_from_image(image) for image in e.arrays["images"]]
        group = "late_start" if e.meta.get("late_start") else "intercept"
        errors = rows.setdefault(group, {k: [] for k in [*variants, "const_velocity_lag1", "const_velocity_first"]})
        for i, t in enumerate(scored_ticks(steps, HORIZON)):
            if seen[t] is None or seen[t - 1] is None or seen[0] is None:
                continue
            truth = truth_all[t + 1 : t + 1 + HORIZON]
            for key, earlier, lag in (("const_velocity_lag1", seen[t - 1], 1), ("const_velocity_first", seen[0], t)):
                errors[key].append(displacement_error(constant_velocity(seen[t], earlier, lag, HORIZON), truth))
            for v in variants:
                errors[v].append(displacement_error(saved[v][offset + i], truth))
        offset += len(scored_ticks(steps, HORIZON))
    report: dict = {"predictions": [Path(p).name for p in args.predictions], "held_out_episodes": len(val_eps)}
    def summary(errors: dict[str, list[float]]) -> dict[str, float]:
        """Mean ADE (m) of each, and each variant's ratio to constant velocity from t−1 / from the first frame."""
        mean = {k: float(np.mean(v)) for k, v in errors.items()}
        return {"ticks": len(errors["const_velocity_lag1"]), **{f"{k}_m": m for k, m in mean.items()},
                **{f"{v}_ratio": mean[v] / mean["const_velocity_lag1"] for v in variants},
                **{f"{v}_ratio_first": mean[v] / mean["const_velocity_first"] for v in variants}}

    report["groups"] = {group: summary(errors) for group, errors in rows.items()}
    report["all"] = summary({k: [x for errors in rows.values() for x in errors[k]] for k in next(iter(rows.values()))})
    print(f"{'':24s}" + "".join(f"{g:>22s}" for g in [*report["groups"], "all"]))
    for k in [*variants, "const_velocity_lag1", "const_velocity_first"]:
        cells = [report["groups"][g][f"{k}_m"] for g in report["groups"]] + [report["all"][f"{k}_m"]]
        print(f"{k:24s}" + "".join(f"{c * 100:19.2f} cm" for c in cells))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train the variants and write their held-out predictions (GPU)")
    t.add_argument("--data", nargs="+", required=True, help="shard folders (the ball episodes are used)")
    t.add_argument("--out", required=True, help="predictions .npz")
    t.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    t.add_argument("--crop", nargs="+", choices=["crop", "nocrop"], default=["crop", "nocrop"],
                   help="train with the crop augmentation, without, or both (one network each)")
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--batch-size", type=int, default=256)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--device", default="cuda")
    s = sub.add_parser("score", help="set the predictions against constant velocity from the frames (CPU)")
    s.add_argument("--data", nargs="+", required=True, help="the same shard folders as `train`")
    s.add_argument("--predictions", nargs="+", required=True, help="the .npz files `train` wrote")
    s.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args(argv)
    return train(args) if args.command == "train" else score(args)


if __name__ == "__main__":
    raise SystemExit(main())
