"""FLOPs per sample, counted with ``torch.utils.flop_counter`` on a real forward (``mhc bench flops``).

Counted per preset and profile (batch 1, eval mode, CPU): ``full`` (all tokens), ``instruct``
(instruction only, once per instruction) and ``control`` (camera + joints per control step, with
the instruction cache). Each mHC preset is compared to its dense baseline (same width and depth).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
from mhc_model.config import DENSE_BASELINE, PROFILES, MHCConfig, preset
from mhc_model.mhc import MHC, count_parameters
from torch.utils.flop_counter import FlopCounterMode


def example_inputs(cfg: MHCConfig, batch: int = 1, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    L = cfg.max_instruction_len
    mask = torch.ones(batch, L, dtype=torch.bool)
    mask[:, max(2, L // 2) :] = False
    return {
        "instruction_ids": torch.randint(3, cfg.vocab_size, (batch, L), generator=g),
        "instruction_mask": mask,
        "image": torch.rand(batch, 3 * cfg.n_frames, cfg.image_size, cfg.image_size, generator=g),
        "joint_history": torch.randn(batch, cfg.joint_history, 18, generator=g),
        **({"instruction_age": torch.randint(0, 64, (batch, 1), generator=g).float()} if cfg.instruction_age else {}),
    }


@torch.no_grad()
def count_flops(model: MHC, profile: str, batch: int = 1, by_module: bool = False) -> int | tuple[int, dict]:
    """FLOPs of one forward of ``profile`` per sample (``control`` excludes the cached instruction)."""
    model.eval()
    x = example_inputs(model.cfg, batch)
    cache_k = cache_v = None
    if profile == "control":
        cache_k, cache_v = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
    args = dict(x, profile=profile, cache_k=cache_k, cache_v=cache_v)
    if profile == "control":
        args["instruction_ids"] = None
    with FlopCounterMode(display=False) as counter:
        model(**args)
    total = counter.get_total_flops() // batch
    if by_module:
        per_module = {name: sum(ops.values()) // batch for name, ops in counter.get_flop_counts().items()}
        return total, per_module
    return total


def flops_table(presets: list[str]) -> list[dict]:
    """Rows ``{preset, profile, flops_per_sample, params, dense_preset, dense_flops_per_sample, ratio_*}``."""
    rows = []
    for name in presets:
        torch.manual_seed(0)
        model = MHC(preset(name))
        dense_name = DENSE_BASELINE.get(name)
        dense = MHC(preset(dense_name)) if dense_name else None
        dense_full = count_flops(dense, "full") if dense else None
        for profile in PROFILES:
            row = {"preset": name, "profile": profile, "flops_per_sample": count_flops(model, profile),
                   "params": count_parameters(model)}
            if dense is not None:
                row["dense_preset"] = dense_name
                row["dense_flops_per_sample"] = count_flops(dense, profile)
                row["dense_full_flops_per_sample"] = dense_full
                row["ratio_vs_dense_same_profile"] = row["flops_per_sample"] / row["dense_flops_per_sample"]
                row["ratio_vs_dense_full"] = row["flops_per_sample"] / dense_full
            rows.append(row)
    return rows


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mhc bench flops``."""
    parser.add_argument("--preset", action="append", dest="presets", metavar="NAME",
                        help="mHC preset(s) to count (default: tiny and s); repeatable")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    return parser


def run(args: argparse.Namespace) -> int:
    presets = args.presets or ["tiny", "s"]
    try:
        for name in presets:
            preset(name)
        rows = flops_table(presets)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps({"flops": rows}, indent=2))
        return 0
    print(f"{'preset':8} {'profile':9} {'MFLOP/sample':>13} {'dense MFLOP':>12} {'vs dense':>9} "
          f"{'vs dense full':>14} {'params':>10}")
    for r in rows:
        print(f"{r['preset']:8} {r['profile']:9} {r['flops_per_sample'] / 1e6:13.2f} "
              f"{r.get('dense_flops_per_sample', 0) / 1e6:12.2f} {r.get('ratio_vs_dense_same_profile', 0):9.3f} "
              f"{r.get('ratio_vs_dense_full', 0):14.3f} {r['params']:10d}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="mhc bench flops", description=__doc__))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
