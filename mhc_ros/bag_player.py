"""``mhc replay --play``: republish a rosbag2 bag on its topics at the recorded rate, like ``ros2 bag play``.

Messages go out as the recorded CDR bytes, with the QoS their recorder saw offered.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from mhc_ros.bag_import import BagError, first_line, require_bag_dir
from mhc_ros.processes import signals_recorded


def _rclpy_qos(offered: list) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosReliability

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=10)
    if offered:
        first = offered[0]
        qos.depth = max(int(getattr(first, "depth", 10) or 10), 1)
        if first.reliability == QosReliability.BEST_EFFORT:
            qos.reliability = ReliabilityPolicy.BEST_EFFORT
        if first.durability == QosDurability.TRANSIENT_LOCAL:
            qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Name``; ``BagError`` naming the type when not installed."""
    import importlib

    package, _, name = msgtype.partition("/msg/")
    try:
        return getattr(importlib.import_module(f"{package}.msg"), name)
    except (ImportError, AttributeError):
        raise BagError(f"message type '{msgtype}' is not installed (no Python package '{package}')") from None


def play(bag: Path, rate: float = 1.0, out=sys.stdout, delay_s: float = 3.0) -> int:
    """Publish the bag's messages on their topics at ``rate`` × the recorded speed; SIGINT/SIGTERM stop it.

    Before the first message it waits for discovery: until every publisher has a subscriber, or
    ``delay_s`` seconds (a topic nobody listens to must not hold the playback back forever).
    """
    import rclpy
    from rclpy.duration import Duration
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import Reader

    bag = require_bag_dir(bag)
    stop: list[int] = []
    published = 0
    try:
        with signals_recorded(stop), Reader(bag) as reader, rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
            node = rclpy.create_node("mhc_replay_player")
            publishers = {conn.id: node.create_publisher(message_class(conn.msgtype), conn.topic,
                                                         _rclpy_qos(conn.ext.offered_qos_profiles))
                          for conn in reader.connections}
            deadline = time.monotonic() + delay_s  # messages published before discovery are lost
            while not stop and time.monotonic() < deadline and not all(
                    pub.get_subscription_count() > 0 for pub in publishers.values()):
                time.sleep(0.05)
            start_wall, start_bag = time.monotonic(), None
            for conn, t_ns, raw in reader.messages():
                if stop:
                    break
                start_bag = t_ns if start_bag is None else start_bag
                due = start_wall + (t_ns - start_bag) * 1e-9 / rate
                while not stop and (delay := due - time.monotonic()) > 0:
                    time.sleep(min(delay, 0.05))
                publishers[conn.id].publish(bytes(raw))
                published += 1
            for publisher in publishers.values():  # reliable topics: deliver the tail before leaving
                publisher.wait_for_all_acked(Duration(seconds=1.0))
            node.destroy_node()
    except BagError:
        raise
    except Exception as err:
        raise BagError(f"bag '{bag}' cannot be played: {first_line(err)}") from None
    print(f"played {published} messages from {bag}" + (" (interrupted)" if stop else ""), file=out)
    return 128 + stop[0] if stop else 0
