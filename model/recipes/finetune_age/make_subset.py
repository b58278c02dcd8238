"""The episodes of the instruction-age fine-tune: every intercept, a fixed random share of the rest.

A CPU holds about 2 500 of the 6 689 shipped training episodes as tensors in 24 GiB (all of them were
killed for memory). Links the chosen shards into ``OUT/shards`` (``mhc train --data OUT``).

Usage: ``python model/recipes/finetune_age/make_subset.py OUT DATA_DIR...`` with the data folders of
``model/recipes/README.md`` (train, train2, … train6: the shipped model's 6 689 episodes).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

EPISODES = {"intercept": 1300, "pick_place": 700, "push": 400, "reach": 150}  # intercept: all of them


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    out = Path(argv[0]) / "shards"
    shards = {p.stem: p for d in argv[1:] for p in sorted((Path(d) / "shards").glob("*.npz"))}
    by_task: dict[str, list[str]] = {}
    for name in sorted(shards):
        by_task.setdefault(name.rsplit("_", 1)[0], []).append(name)
    random.seed(0)
    out.mkdir(parents=True, exist_ok=False)
    for task, count in EPISODES.items():
        if len(by_task.get(task, [])) < count:
            raise SystemExit(f"{task}: {len(by_task.get(task, []))} episodes in {argv[1:]}, the subset takes {count}")
        for name in random.sample(by_task[task], count):
            for suffix in (".npz", ".json"):
                (out / f"{name}{suffix}").symlink_to(shards[name].with_suffix(suffix).resolve())
    print(f"{sum(EPISODES.values())} episodes linked into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
