"""When a checkpoint commands the gripper shut on the expert's own pick_place states (teacher-forced).

``bench/pick_failures.py`` finds mHC-S closing on the cube's top edge in closed loop more often than its
dense baseline. This asks whether that is learned timing: on fresh expert demonstrations (states the
expert reached, so no compounding error), in the ``--window`` ticks before the expert's first close,
does the model's next command already say "close" (``CLOSED``, as in ``bench/pick_failures.py``) while
the hand is still more than ``HIGH`` above the height where the expert closed? Also: how often it says
"close" on the expert's close ticks, and its joint-target error (mrad) over the window.

Demonstrations no model has seen (seeds 3 000 000+: not training, evaluation or tuning seeds)::

    mhc collect --task pick_place --episodes 40 --out DEMOS --no-bags --seed 3000000 --workers 2
    python bench/grasp_timing.py --data DEMOS --checkpoints MHC.safetensors DENSE.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from pick_failures import CLOSED, HIGH, close_events  # the same close command and height bound (bench/)


def first_close(actions: np.ndarray) -> int:
    """The tick of the first close command in ``actions (T, 8)``; raises if the gripper never closes."""
    events = close_events(np.asarray(actions)[:, 7])
    if not events:
        raise ValueError("the demonstration never closes the gripper (not a pick_place episode?)")
    return events[0][0]


def window_figures(next_before: np.ndarray, next_at: np.ndarray, actions: np.ndarray, hand_z: np.ndarray,
                   before: np.ndarray, close: int) -> dict:
    """One demonstration: the model's next commands ``next_before (W, 8)`` on ticks ``before`` (ahead of
    the expert's close tick ``close``) and ``next_at (A, 8)`` on the ticks from ``close`` on, against the
    expert's ``actions (T, 8)`` and hand heights ``hand_z (T,)``."""
    shut = next_before[:, 7] < CLOSED
    high = hand_z[before] - hand_z[close] > HIGH
    return {"high_ticks": int(high.sum()), "shut_while_high": int((shut & high).sum()),
            "closes_high": bool((shut & high).any()),
            "shut_at_close": float((next_at[:, 7] < CLOSED).mean()),
            "joint_error_rad": float(np.abs(next_before[:, :7] - actions[before, :7]).mean())}


def run(checkpoint: str, episodes: list, window: int) -> dict:
    """:func:`window_figures` over ``episodes`` (``mhc_model.data.Episode``), summed and averaged."""
    import torch
    from mhc_model.checkpoint import load_policy
    from mhc_model.data import ShardDataset
    from mhc_model.export import file_sha256

    policy = load_policy(checkpoint)[0].eval()
    dataset = ShardDataset(episodes, policy.config, policy.vocabulary, policy.skills, policy.targets)
    if len(dataset) != sum(len(episode.arrays["actions"]) for episode in episodes):
        raise ValueError("some demonstration steps are not imitated (--grasp-miss, --late-start or train_mask): "
                         "collect plain expert demonstrations for this")

    def next_commands(ticks: np.ndarray) -> np.ndarray:  # the first action of the chunk predicted on each tick
        with torch.no_grad():
            batch = dataset.batch(torch.as_tensor(ticks))
            return policy.run_full(batch)["action_chunk"][:, 0].numpy()

    rows, offset = [], 0  # every step is imitated (checked above), so sample i of the dataset is frame i
    for episode in episodes:
        actions, hand_z = episode.arrays["actions"], episode.arrays["ee_positions"][:, 2]
        close = first_close(actions)
        before = np.arange(max(0, close - window), close)
        at = np.arange(close, min(len(actions), close + 4))
        rows.append(window_figures(next_commands(offset + before), next_commands(offset + at), actions, hand_z,
                                   before, close))
        offset += len(actions)
    high_ticks = sum(r["high_ticks"] for r in rows)
    return {"checkpoint": checkpoint, "sha256": file_sha256(checkpoint), "episodes": len(rows),
            "high_ticks": high_ticks,
            "shut_while_high": sum(r["shut_while_high"] for r in rows),
            "episodes_closing_high": sum(r["closes_high"] for r in rows),
            "shut_at_expert_close": float(np.mean([r["shut_at_close"] for r in rows])),
            "joint_error_mrad": 1000 * float(np.mean([r["joint_error_rad"] for r in rows]))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="expert pick_place shards (mhc collect --out DIR)")
    parser.add_argument("--checkpoints", nargs="+", required=True, help="checkpoints (.safetensors)")
    parser.add_argument("--window", type=int, default=20, help="ticks before the expert's close (default: 20)")
    parser.add_argument("--out", type=Path, help="write the figures as JSON here")
    args = parser.parse_args(argv)
    if args.window < 1:
        parser.error(f"--window {args.window} must be >= 1")
    import torch
    from mhc_model.data import list_shards, load_episode

    torch.set_num_threads(2)
    episodes = [load_episode(path) for path in list_shards(args.data)]
    results = []
    for checkpoint in args.checkpoints:
        r = run(checkpoint, episodes, args.window)
        results.append(r)
        print(f"{Path(checkpoint).name}: commands close with the hand > {HIGH * 100:.1f} cm above the expert's "
              f"closing height on {r['shut_while_high']} of {r['high_ticks']} ticks ({r['episodes_closing_high']} "
              f"of {r['episodes']} demonstrations); close on the expert's close ticks {r['shut_at_expert_close']:.0%}; "
              f"joint-target error over the window {r['joint_error_mrad']:.1f} mrad", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"data": args.data, "window": args.window, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
