"""Batch-1 latency of every backend available here × every profile, mHC preset vs its dense baseline.

Wraps ``mhc bench latency --backend all`` and writes the JSON to ``bench/results/latency_<host>.json``.
Usage: ``python bench/latency.py [--preset s] [--threads 2] [--iterations 100]``.
"""

from __future__ import annotations

import argparse
import socket
import sys
from pathlib import Path

from mhc_model import latency


def main(argv: list[str] | None = None) -> int:
    parser = latency.configure_parser(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = str(Path(__file__).parent / "results" / f"latency_{socket.gethostname()}.json")
    return latency.run(args)


if __name__ == "__main__":
    sys.exit(main())
