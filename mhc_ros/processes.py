"""Child processes of ``mhc bringup``: an isolated ROS environment, start, watch and stop node processes.

Each child runs in its own session with its own log file, dies with its parent (Linux), and is stopped
by SIGINT, then SIGTERM, then SIGKILL. SIGINT/SIGTERM to bringup itself are recorded, not raised, so the
caller can shut the children down in order.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TextIO

from mhc_ros.system import NodeDescription

SHUTDOWN_GRACE_S = 10.0    # wall time a child gets after SIGINT (then SIGTERM, then SIGKILL)


class ChildDied(RuntimeError):
    """A node process exited while the system was running."""


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived; ``signum`` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def ros_environment(domain_id: int) -> dict[str, str]:
    """Environment that isolates one system: its domain, localhost-only discovery, large-data transport."""
    return {"ROS_DOMAIN_ID": str(domain_id), "ROS_AUTOMATIC_DISCOVERY_RANGE": "LOCALHOST",
            "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "PYTHONUNBUFFERED": "1"}


def choose_domain_id(requested: int | None = None) -> int:
    """``requested``, else ``$ROS_DOMAIN_ID``, else a random id in 1..101 (valid on every platform)."""
    if requested is not None:
        return requested
    if os.environ.get("ROS_DOMAIN_ID", "").isdigit():
        return int(os.environ["ROS_DOMAIN_ID"])
    return random.randint(1, 101)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` for the block (DDS reads them when the participant is created)."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stop_with_parent() -> None:
    """In the child before exec (Linux): SIGTERM it if bringup itself is killed (e.g. SIGKILL), no orphans."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


class ProcessGroup:
    """Node processes started from :class:`NodeDescription` s, each logging to ``log_dir/NAME.log``."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.env = env
        self.processes: dict[str, subprocess.Popen] = {}
        self._logs: list[TextIO] = []

    def start(self, node: NodeDescription) -> None:
        """Start ``node`` in its own session, so a terminal's Ctrl-C reaches only this process."""
        self.start_command(node.name, node.command(), node.env)

    def start_command(self, name: str, command: list[str], env: dict[str, str] | None = None) -> None:
        """Start ``command`` as the child ``name`` (e.g. the recorder), like a node: own session, own log."""
        log = open(self.log_dir / f"{name}.log", "w")  # noqa: SIM115 - closed in shutdown()
        self._logs.append(log)
        env = {**os.environ, **self.env, **(env or {})}
        self.processes[name] = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log,
                                                stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                                preexec_fn=_stop_with_parent)

    def check(self) -> None:
        """Raise :class:`ChildDied` naming the first child that has exited."""
        for name, process in self.processes.items():
            code = process.poll()
            if code is not None:
                raise ChildDied(f"node '{name}' (pid {process.pid}) exited unexpectedly with status {code}; "
                                f"last lines of {self.log_dir / (name + '.log')}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 15) -> str:
        """Last ``lines`` lines of a child's log."""
        try:
            text = (self.log_dir / f"{name}.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join("    " + line for line in text.splitlines()[-lines:])

    def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> dict[str, int]:
        """Stop every child (SIGINT, SIGTERM after ``grace_s``, SIGKILL after another); return exit codes."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            running = [p for p in self.processes.values() if p.poll() is None]
            for process in running:
                with suppress(ProcessLookupError):
                    process.send_signal(sig)
            deadline = time.monotonic() + grace_s
            for process in running:
                with suppress(subprocess.TimeoutExpired):
                    process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            if all(p.poll() is not None for p in self.processes.values()):
                break
        for log in self._logs:
            log.close()
        return {name: p.returncode for name, p in self.processes.items()}


@contextmanager
def signals_recorded(stop: list[int]) -> Iterator[None]:
    """Record SIGINT/SIGTERM in ``stop`` (main thread only; elsewhere signals keep their handlers)."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
