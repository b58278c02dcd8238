"""Spinning helpers for the in-process ROS tests (each builds its own executor)."""

import time


def spin_until_function(executor, poll_s: float, default_timeout_s: float):
    """``spin_until(condition, timeout_s=default_timeout_s)``: spin ``executor`` (``poll_s`` per wait) until
    ``condition()`` holds; raises ``AssertionError`` when ``timeout_s`` passes first."""

    def spin_until(condition, timeout_s=default_timeout_s):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=poll_s)
            if condition():
                return True
        raise AssertionError(f"condition not met within {timeout_s} s")

    return spin_until


def spin_for_function(executor, poll_s: float = 0.01):
    """``spin_for(seconds)``: spin ``executor`` for that long, whatever arrives."""

    def spin_for(seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=poll_s)

    return spin_for
