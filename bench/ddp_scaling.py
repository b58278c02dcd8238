"""DDP scaling of ``mhc train`` on one host: same shards, preset, seed and global batch on N = 1, 2, … GPUs.

Each N runs ``python3 -m torch.distributed.run --standalone --nproc_per_node=N -m mhc_model.train`` with a
per-process batch of global/N (``--weak``: the same per-process batch, so the global batch grows with N),
``NCCL_NVLS_ENABLE=0`` (NVLink multicast off). Prints samples/s, the scaling efficiency
``sps(N) / (N · sps(1))`` and how far each N's validation losses are from N = 1's at the same steps;
writes ``OUT/ddp_scaling.json`` and ``OUT/ddp_val_loss.png``.
Usage: ``python3 bench/ddp_scaling.py --data SHARDS --out OUT [--gpus 1,2] [--steps 600] [--weak]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def run_n(n: int, args: argparse.Namespace) -> dict:
    out = args.out / f"n{n}"
    per_gpu = args.global_batch if args.weak else args.global_batch // n
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "-m", "mhc_model.train", "--config", args.config, "--data", str(args.data), "--out", str(out),
               "--steps", str(args.steps), "--batch-size", str(per_gpu), "--val-every",
               str(args.val_every), "--warmup", "50", "--seed", "0", "--no-progress", "--no-flops"]
    print("$", " ".join(command), flush=True)
    subprocess.run(command, check=True, env={**os.environ, "NCCL_NVLS_ENABLE": "0"})
    summary = json.loads((out / "summary.json").read_text())
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = {r["step"]: r["loss"] for r in records if r["split"] == "val"}
    return {"gpus": n, "per_gpu_batch": per_gpu, "global_batch": per_gpu * n, "samples_per_s": summary["samples_per_s"],
            "train_seconds": summary["train_seconds"], "val_loss": val, "command": " ".join(command)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--gpus", default="1,2", help="comma list of process counts (GPUs)")
    parser.add_argument("--config", default="s")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--val-every", type=int, default=100)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--weak", action="store_true",
                        help="weak scaling: --global-batch per GPU (the global batch grows with N)")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.gpus.split(",")]
    if counts[0] != 1 or any(args.global_batch % n for n in counts):
        parser.error(f"--gpus {args.gpus!r} must start at 1 and divide --global-batch {args.global_batch}")
    rows = [run_n(n, args) for n in counts]
    base = rows[0]
    for row in rows:
        row["speedup"] = row["samples_per_s"] / base["samples_per_s"]
        row["efficiency"] = row["speedup"] / row["gpus"]
        common = sorted(set(row["val_loss"]) & set(base["val_loss"]))
        row["val_loss_max_rel_diff_vs_1"] = max(abs(row["val_loss"][s] - base["val_loss"][s]) / base["val_loss"][s]
                                                for s in common)
        print(f"N={row['gpus']}: {row['samples_per_s']:.0f} samples/s, speedup {row['speedup']:.2f}, "
              f"efficiency {row['efficiency']:.2f}, val loss within {100 * row['val_loss_max_rel_diff_vs_1']:.1f} % "
              f"of N=1 at steps {common}")
    (args.out / "ddp_scaling.json").write_text(json.dumps({"config": args.config, "steps": args.steps,
                                                           "weak": args.weak, "rows": rows},
                                                          indent=1))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return 0
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for row in rows:
        steps = sorted(row["val_loss"])
        ax.plot(steps, [row["val_loss"][s] for s in steps], marker="o", label=f"{row['gpus']} GPU")
    ax.set(xlabel=f"step (global batch {args.global_batch})", ylabel="validation loss", title="DDP: same data")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out / "ddp_val_loss.png", dpi=90)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
