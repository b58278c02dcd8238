"""``mhc train --config C --data DIR --out RUN``: train an mHC policy on ``mhc collect`` shards.

CPU, one GPU (bf16 autocast) or several through ``torchrun`` (DDP, one process per GPU):
``torchrun --nproc_per_node=N -m mhc_model.train --config s --data DIR --out RUN``.
Writes ``RUN/metrics.jsonl`` (train and validation records), ``RUN/curves.png``,
``RUN/checkpoints/{last,best}.safetensors`` (+ JSON) and ``last.train.safetensors`` (optimizer, for
``--resume``). Reproducible for a given ``--seed`` (same device and world size).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from mhc_model.checkpoint import (
    ZERO_START_INPUTS,
    init_from,
    load_optimizer,
    load_policy,
    save_checkpoint,
    save_optimizer,
)
from mhc_model.config import MHCConfig, load_config
from mhc_model.data import (
    ShardDataset,
    augment_images,
    build_vocabularies,
    drop_words,
    epoch_order,
    list_shards,
    load_episode,
    split_episodes,
)
from mhc_model.flops import count_flops
from mhc_model.metrics import RoutingStats
from mhc_model.mhc import MHC, count_parameters
from mhc_model.policy import MHCPolicy


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mhc train``."""
    parser.add_argument("--config", required=True, help="preset (tiny, s, dense_tiny, dense_s) or JSON file")
    parser.add_argument("--data", required=True, help="folder written by `mhc collect` (DIR/shards/*.npz)")
    parser.add_argument("--out", required=True, help="run folder (metrics, curves, checkpoints)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=64, help="samples per step per process")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine schedule)")
    parser.add_argument("--min-lr-ratio", type=float, default=0.1, help="final lr as a fraction of the peak")
    parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--val-every", type=int, default=250, help="validate + checkpoint every N steps")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="share of episodes held out")
    parser.add_argument("--val-batches", type=int, default=20, help="max validation batches")
    parser.add_argument("--log-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 autocast on CUDA, fp32 on CPU")
    parser.add_argument("--no-augment", action="store_true",
                        help="disable colour jitter, crops and word dropout")
    parser.add_argument("--word-dropout", type=float, default=0.0,
                        help="probability that an instruction word becomes <unk> in a training sample")
    parser.add_argument("--recovery-repeats", type=int, default=1,
                        help="times per epoch each step after a masked deliberate mistake is sampled "
                             "(its recovery; `mhc collect --grasp-miss`)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN/checkpoints/last")
    parser.add_argument("--init", default=None, metavar="CHECKPOINT",
                        help="fine-tune: start from this checkpoint's weights, vocabularies and normalisers; "
                             "--config may differ only in image_size (position embeddings are resized) and "
                             f"dropout, and turn {' or '.join(ZERO_START_INPUTS)} on (their projections "
                             "start at zero)")
    parser.add_argument("--init-blocks", type=block_indices, default=None, metavar="I,J,...",
                        help="with --init: the checkpoint's blocks the model starts from, in order (default: "
                             "all); the config's n_layers is their count (e.g. 0,2,3 drops block 1)")
    parser.add_argument("--distill-from", default=None, metavar="CHECKPOINT",
                        help="a teacher with the same vocabulary and action normaliser: its action chunk on each "
                             "training batch is a second target (losses.distill_loss); --resume keeps it")
    parser.add_argument("--distill-weight", type=float, default=1.0,
                        help="weight of the distillation term (default: 1.0, the action loss's)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-flops", action="store_true", help="skip FLOP counting in validation records")
    return parser


def block_indices(text: str) -> list[int]:
    """``--init-blocks`` ``"0,2,3"`` → ``[0, 2, 3]``."""
    try:
        return [int(i) for i in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not comma-separated block indices") from None


def _check_args(args: argparse.Namespace) -> None:
    for name in ["steps", "batch_size", "val_every", "log_every", "val_batches", "recovery_repeats"]:
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be > 0")
    for name in ["lr", "warmup", "weight_decay", "grad_clip", "threads", "distill_weight"]:
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 0")
    if not 0.0 <= args.min_lr_ratio <= 1.0:
        raise ValueError(f"--min-lr-ratio={args.min_lr_ratio} must be in [0, 1]")
    if not 0.0 <= args.word_dropout < 1.0:
        raise ValueError(f"--word-dropout={args.word_dropout} must be in [0, 1)")
    if args.init and args.resume:
        raise ValueError("--init and --resume exclude each other (--resume continues the run's own checkpoint)")
    if args.init_blocks is not None and not args.init:
        raise ValueError("--init-blocks needs --init (the checkpoint whose blocks it picks)")
    if args.device not in ("auto", "cpu", "cuda") and not args.device.startswith("cuda:"):
        raise ValueError(f"--device={args.device!r} unknown (auto, cpu, cuda)")


def load_teacher(path: str, student: MHCPolicy, device: torch.device) -> MHCPolicy:
    """The ``--distill-from`` policy, frozen on ``device``; raises unless it reads the student's token ids
    and its actions are normalised as the student's (the distillation target is normalised actions)."""
    teacher = load_policy(path)[0]
    if teacher.vocabulary.words != student.vocabulary.words:
        raise ValueError(f"--distill-from {path!r}: its vocabulary differs from the model's (start the model "
                         "from it with --init)")
    mine, theirs = student.model.heads.action_norm.state_dict(), teacher.model.heads.action_norm.state_dict()
    if any(not torch.equal(mine[k].cpu(), theirs[k].cpu()) for k in mine):
        raise ValueError(f"--distill-from {path!r}: its action normaliser differs from the model's")
    return teacher.to(device).eval().requires_grad_(False)


def lr_at(step: int, args: argparse.Namespace) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio · lr``."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def dense_twin(cfg: MHCConfig) -> MHCConfig:
    """The dense baseline of ``cfg``: same width and depth, all heads on every token, dense FFN."""
    if cfg.dense:
        return cfg
    return cfg.replace(name=f"dense_{cfg.name}", dense=True, shared_heads=3 * cfg.heads_per_domain + cfg.shared_heads)


def flops_record(cfg: MHCConfig) -> dict[str, float]:
    """FLOPs per sample for each profile, mHC vs its dense baseline (counted on CPU)."""
    out: dict[str, float] = {}
    with torch.random.fork_rng():
        model, dense = MHC(cfg), MHC(dense_twin(cfg))
        for profile in ("full", "instruct", "control"):
            out[f"flops_{profile}"] = count_flops(model, profile)
            out[f"flops_dense_{profile}"] = count_flops(dense, profile)
            out[f"flops_ratio_{profile}"] = out[f"flops_{profile}"] / out[f"flops_dense_{profile}"]
    return out


def _to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@torch.no_grad()
def evaluate(policy: MHCPolicy, dataset: ShardDataset, device: torch.device, args: argparse.Namespace,
             autocast: Any, batch_size: int) -> dict[str, Any]:
    """Mean losses per head and routing metrics over the first ``val_batches`` batches of ``batch_size``.

    ``batch_size`` is the global batch (per-process batch × processes), so validation covers the same
    samples whatever the number of GPUs and the curves of 1- and N-GPU runs compare.
    """
    was_training = policy.training
    policy.eval()
    sums: dict[str, float] = {}
    batches = 0
    cfg = policy.config
    stats = RoutingStats(cfg.n_layers, cfg.experts_per_domain) if not cfg.dense else None
    modality = policy.model.modality_labels("full").to(device)
    for start in range(0, len(dataset), batch_size):
        if batches >= args.val_batches:
            break
        index = torch.arange(start, min(start + batch_size, len(dataset)), device=dataset.images.device)
        batch = _to(dataset.batch(index), device)
        with autocast():
            outputs, routings = policy.run_full(batch, return_routing=True)
            _, loss_dict = policy.loss_terms(outputs, routings, batch)
            if stats is not None:
                stats.update(routings, modality.repeat(len(index)))
        for k, v in loss_dict.items():
            sums[k] = sums.get(k, 0.0) + v
        batches += 1
    policy.train(was_training)
    record: dict[str, Any] = {k: v / max(1, batches) for k, v in sums.items()}
    if stats is not None:
        record.update(stats.summary())
    return record


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """PNG of train/val losses from the JSONL log (matplotlib imported lazily; skipped if missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    train, val = [], []
    for line in metrics_path.read_text().splitlines():
        rec = json.loads(line)
        (train if rec.get("split") == "train" else val if rec.get("split") == "val" else []).append(rec)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("loss", "loss_task"):
        if train:
            axes[0].plot([r["step"] for r in train], [r[key] for r in train], label=f"train {key}")
        if val:
            axes[0].plot([r["step"] for r in val], [r[key] for r in val], "o-", label=f"val {key}")
    heads = [k for k in (val[-1] if val else train[-1] if train else {}) if k.startswith("loss_")
             and k != "loss_task"]
    src = val or train
    for key in heads:
        axes[1].plot([r["step"] for r in src], [r[key] for r in src], label=key)
    for ax, title in zip(axes, ("total", "per head (val)" if val else "per head (train)"), strict=True):
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(png_path, dpi=90)
    plt.close(fig)


def _distributed() -> tuple[int, int, int]:
    """``(rank, world, local_rank)``; initialises the process group when started by torchrun."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, 0
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0))


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run training; returns the final summary (also written to ``RUN/summary.json``)."""
    _check_args(args)
    rank, world, local_rank = _distributed()
    if args.threads:
        torch.set_num_threads(args.threads)
    want_cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    if want_cuda and not torch.cuda.is_available():
        raise ValueError(f"--device={args.device!r} but CUDA is not available")
    device = torch.device(f"cuda:{local_rank}" if want_cuda and args.device in ("auto", "cuda") else
                          args.device if want_cuda else "cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
    use_bf16 = args.precision == "bf16" or (args.precision == "auto" and device.type == "cuda")

    def autocast():
        if use_bf16:
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    out = Path(args.out)
    ckpt_dir = out / "checkpoints"
    resume_path = ckpt_dir / "last.safetensors"
    if args.resume and not resume_path.is_file():
        raise ValueError(f"--resume but no checkpoint at {str(resume_path)!r}")
    cfg = load_config(args.config)
    torch.manual_seed(args.seed)

    episodes = [load_episode(p) for p in list_shards(args.data)]
    by_name = {e.name: e for e in episodes}
    train_names, val_names = split_episodes(list(by_name), args.val_fraction, args.seed)
    start_step, extra = 0, {}
    if args.resume:
        policy, extra = load_policy(resume_path)
        start_step = int(extra.get("step", 0))
        cfg = policy.config
    elif args.init:
        policy = init_from(args.init, cfg, [by_name[n].meta["instruction"] for n in train_names], args.init_blocks)
        cfg = policy.config
    else:
        vocab, skills, targets = build_vocabularies([by_name[n] for n in train_names])
        cfg = cfg.replace(vocab_size=len(vocab), num_skills=max(cfg.num_skills, len(skills)),
                          num_targets=max(cfg.num_targets, len(targets)))
        policy = MHCPolicy(cfg, vocab, skills, targets)
    train_set = ShardDataset([by_name[n] for n in train_names], cfg, policy.vocabulary, policy.skills, policy.targets,
                             recovery_repeats=args.recovery_repeats)
    val_set = (ShardDataset([by_name[n] for n in val_names], cfg, policy.vocabulary, policy.skills, policy.targets)
               if val_names else train_set)
    if device.type == "cuda":  # the whole (small) dataset on the GPU: batching is a gather
        train_set.to(device)
        if val_set is not train_set:
            val_set.to(device)
    if not args.resume and not args.init:
        stats = train_set.statistics()
        policy.model.phys_tokens.norm.set_stats(*stats["joints"])
        policy.model.heads.action_norm.set_stats(*stats["actions"])
        policy.model.heads.position_norm.set_stats(*stats["positions"])
    policy.to(device).train()
    decay = [p for p in policy.parameters() if p.dim() >= 2]
    no_decay = [p for p in policy.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                                  fused=device.type == "cuda")
    if args.resume and (ckpt_dir / "last.train.safetensors").is_file():
        load_optimizer(ckpt_dir / "last.train.safetensors", optimizer)
    distill_from = args.distill_from or extra.get("distill_from")  # extra: the resumed run's record, else {}
    teacher = load_teacher(distill_from, policy, device) if distill_from else None
    distill_weight = float(extra.get("distill_weight", args.distill_weight))
    model = policy
    if world > 1 or dist.is_initialized():
        model = torch.nn.parallel.DistributedDataParallel(
            policy, device_ids=[device.index] if device.type == "cuda" else None)

    is_main = rank == 0
    metrics_path = out / "metrics.jsonl"
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        if not args.resume and metrics_path.exists():
            metrics_path.unlink()
        (out / "config.json").write_text(json.dumps({"model": cfg.to_dict(), "args": vars(args),
                                                     "world_size": world, "device": str(device),
                                                     "train_episodes": train_names, "val_episodes": val_names},
                                                    indent=2, default=str))
    flops = flops_record(cfg) if (is_main and not args.no_flops) else {}
    n_params = count_parameters(policy.model)

    def log(record: dict[str, Any]) -> None:
        if is_main:
            with metrics_path.open("a") as f:
                f.write(json.dumps(record) + "\n")

    gen = torch.Generator().manual_seed(args.seed * 7919 + rank + start_step)
    steps_per_epoch = max(1, math.ceil(len(train_set) / world) // args.batch_size)
    bar = None
    if is_main and not args.no_progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=args.steps, initial=start_step, desc="train", dynamic_ncols=True)
        except ImportError:
            bar = None
    best = float(extra.get("best_val", float("inf")))
    summary: dict[str, Any] = {"params": n_params, "device": str(device), "world_size": world}
    first_loss = None
    t_train, samples, window = 0.0, 0, []
    order, order_epoch = None, -1
    step = start_step
    while step < args.steps:
        epoch, pos = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = epoch_order(len(train_set), epoch, args.seed, rank, world), epoch
        index = order[pos * args.batch_size : (pos + 1) * args.batch_size]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        batch = _to(train_set.batch(index.to(train_set.images.device)), device)
        if not args.no_augment:
            crop = {} if cfg.crop_augment else {"max_shift": 0.0, "max_zoom": 0.0}
            batch["image"] = augment_images(batch["image"], gen, **crop)
            batch["instruction_ids"] = drop_words(batch["instruction_ids"], gen, args.word_dropout, policy.vocabulary)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, args)
        if teacher is not None:
            with torch.no_grad(), autocast():
                batch["teacher_action_norm"] = teacher.run_full(batch)["action_norm"].float()
        with autocast():
            loss, loss_dict = model(batch, distill_weight)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(policy.parameters(), args.grad_clip)
        optimizer.step()
        if world > 1:
            for layer in policy.model.moe_layers():
                dist.all_reduce(layer.load_accum)
        policy.model.update_balance_bias()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        dt = time.perf_counter() - t0
        step += 1
        if step > start_step + 3:  # skip warm-up steps in the throughput figure
            t_train += dt
            samples += len(index) * world
        if first_loss is None:
            first_loss = loss_dict
        window.append(loss_dict)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss_dict['loss']:.4f}")
        if step % args.log_every == 0 or step == args.steps:
            mean = {k: sum(d[k] for d in window) / len(window) for k in window[0]}
            window = []
            if world > 1:  # the logged training loss is the mean over every rank's samples
                values = torch.tensor(list(mean.values()), dtype=torch.float64, device=device)
                dist.all_reduce(values)
                mean = dict(zip(mean, (values / world).tolist(), strict=True))
            log({"step": step, "split": "train", "lr": lr_at(step - 1, args), **mean,
                 "samples_per_s": samples / t_train if t_train else None})
            summary["last_train"] = mean
        if step % args.val_every == 0 or step == args.steps:
            record = evaluate(policy, val_set, device, args, autocast, args.batch_size * world) if is_main else {}
            if is_main:
                log({"step": step, "split": "val", **record, **flops})
                extra_state = {"step": step, "best_val": min(best, record.get("loss", best)), "seed": args.seed}
                if distill_from:
                    extra_state.update(distill_from=str(distill_from), distill_weight=distill_weight)
                save_checkpoint(ckpt_dir / "last", policy, extra_state)
                save_optimizer(ckpt_dir / "last.train.safetensors", optimizer, extra_state)
                if record.get("loss", float("inf")) < best:
                    best = record["loss"]
                    shutil.copyfile(ckpt_dir / "last.safetensors", ckpt_dir / "best.safetensors")
                    shutil.copyfile(ckpt_dir / "last.json", ckpt_dir / "best.json")
                plot_curves(metrics_path, out / "curves.png")
                summary["last_val"] = record
            if world > 1:
                dist.barrier()
    if bar is not None:
        bar.close()
    summary.update({"first_train": first_loss, "steps": step, "samples_per_s": samples / t_train if t_train else None,
                    "train_seconds": t_train, "flops": flops})
    if is_main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    if world > 1:  # leave together: a rank that tears its process group down while a peer still works can abort
        dist.barrier()
    return summary


def run(args: argparse.Namespace) -> int:
    """CLI entry: 0 on success, 2 on a bad value (one-line error naming it)."""
    try:
        summary = train(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if int(os.environ.get("RANK", 0)) == 0:
        sps = summary.get("samples_per_s")
        print(f"done: {summary['steps']} steps, {summary['params']} parameters, "
              f"{sps:.1f} samples/s" if sps else f"done: {summary['steps']} steps")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="mhc train", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
