"""Process-level ROS 2 plumbing shared by the node executables.

:func:`run_node` is the ``main()`` of every node: ``rclpy.init`` in a ``with`` block, spin, clean exit
(status 0) on Ctrl-C (SIGINT) and SIGTERM. rclpy's own signal handlers shut the context down from
inside the C signal handler, which races with a running executor (``RCLError: failed to initialize
wait set`` or a ``KeyboardInterrupt`` raised inside a message take, both seen under ``mhc bringup``);
so here a signal only sets a flag that the spin loop checks between callbacks.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

SPIN_PERIOD_S = 0.1  # longest wait between two checks of the stop flag (s)


def run_node(make_node: Callable[[], Any], args: list[str] | None = None) -> None:
    """Create the node from ``make_node()`` and spin it until SIGINT/SIGTERM or an external shutdown.

    The node's ``close()`` (or ``destroy_node()``) runs before ``rclpy`` shuts down.
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO):
            node = make_node()
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            try:
                while not stop and rclpy.ok():
                    executor.spin_once(timeout_sec=SPIN_PERIOD_S)
            finally:
                executor.shutdown()
                (getattr(node, "close", None) or node.destroy_node)()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
