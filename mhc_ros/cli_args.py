"""Argument checks shared by the ``mhc`` verbs: each failure names the bad value in one line."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path


class UsageError(Exception):
    """Bad command-line input; ``mhc`` prints it as one line and exits with status 2."""


def known_task(name: str) -> str:
    """Argparse type: a task name from the simulation's task registry."""
    from mhc_sim import TASKS

    if name not in TASKS:
        raise argparse.ArgumentTypeError(f"unknown task '{name}' (expected one of {', '.join(TASKS)})")
    return name


def non_negative_int(text: str) -> int:
    """Argparse type: an integer ≥ 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative (expected ≥ 0)")
    return value


def positive_int(text: str) -> int:
    """Argparse type: an integer ≥ 1."""
    value = non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not positive (expected ≥ 1)")
    return value


def writable_dir(path: Path) -> Path:
    """Create ``path`` if needed and prove it is writable; raise ``UsageError`` naming it otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-probe-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise UsageError(f"output directory '{path}' is not writable ({err.strerror or err})") from None
    return path


def controller_parameters(items: list[str]) -> dict:
    """``--param NAME=VALUE`` overrides of the controller's ``CORE_DEFAULTS`` (value parsed as JSON, else
    kept as a string); raise ``UsageError`` naming an item that is not ``NAME=VALUE`` with a known NAME."""
    from mhc_ros.controller_core import CORE_DEFAULTS

    params = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or name not in CORE_DEFAULTS:
            raise UsageError(f"--param '{item}' invalid (expected NAME=VALUE, NAME one of {', '.join(CORE_DEFAULTS)})")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    return params
