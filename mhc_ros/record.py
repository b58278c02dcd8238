"""``mhc record``: live ROS 2 topics to a rosbag2 bag (MCAP, metadata v9, QoS metadata), like ``ros2 bag record``.

Works against ``mhc bringup`` or any ROS 2 graph: it waits until every requested topic has a publisher,
takes each topic's type from the graph (``get_topic_names_and_types``) and its message definition from
``rosbags``' Kilted type store, subscribes with ``raw=True`` (the exact serialized bytes are written:
``serialize_message`` can return over-long buffers that ``rosbags`` rejects) and with a QoS compatible
with every publisher (best effort if any publisher is; transient local if all are). The offered QoS of the
publishers is stored in the bag's metadata. Stops cleanly on Ctrl-C, SIGTERM or ``--duration``; the bag
is complete (indexed, metadata written) in every case.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mhc_ros.bags import DEFAULT_QOS, EPISODE_TOPICS, TYPESTORE, qos_profile
from mhc_ros.cli_args import UsageError
from mhc_ros.system import TRACE_TOPIC

DEFAULT_TOPICS = (*(spec.name for spec in EPISODE_TOPICS), TRACE_TOPIC)
# Default topics not every graph has (the bridge publishes no end-effector pose, a robot no /sim topics, the
# expert controller no trace): recorded when they have a publisher once the others are there, else skipped.
OPTIONAL_DEFAULT_TOPICS = ("/clock", "/sim/object_poses", "/sim/ee_pose", TRACE_TOPIC)
OPTIONAL_GRACE_S = 1.0
NODE_NAME = "mhc_recorder"  # the recorder's node (mhc bringup --bag waits for its subscriptions)
SPIN_PERIOD_S = 0.05


class RecordError(ValueError):
    """Recording cannot start; one line naming the topic, type or path."""


def offered_qos(endpoints: list) -> Any:
    """The ``rosbags`` QoS of the first publisher (its reliability/durability/depth), for the bag metadata."""
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosReliability

    if not endpoints:
        return DEFAULT_QOS
    profile = endpoints[0].qos_profile
    reliability = (QosReliability.BEST_EFFORT if profile.reliability == ReliabilityPolicy.BEST_EFFORT
                   else QosReliability.RELIABLE)
    durability = (QosDurability.TRANSIENT_LOCAL if profile.durability == DurabilityPolicy.TRANSIENT_LOCAL
                  else QosDurability.VOLATILE)
    return qos_profile(reliability, durability, max(int(profile.depth or 1), 1))


def subscription_qos(endpoints: list) -> Any:
    """A QoS that matches every publisher: best effort if any offers it, transient local if all do."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100)
    if any(e.qos_profile.reliability == ReliabilityPolicy.BEST_EFFORT for e in endpoints):
        qos.reliability = ReliabilityPolicy.BEST_EFFORT
    if endpoints and all(e.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for e in endpoints):
        qos.durability = DurabilityPolicy.TRANSIENT_LOCAL
    return qos


def record(topics: list[str], out: Path, duration_s: float | None = None, wait_s: float = 30.0,
           stop: list[int] | None = None, log=sys.stderr, optional: tuple[str, ...] = ()) -> dict[str, int]:
    """Record ``topics`` into the new bag directory ``out``; returns ``{topic: messages}``.

    Waits up to ``wait_s`` (wall time) for every topic to appear. ``stop``: a list a signal handler
    appends to; recording ends when it is non-empty or after ``duration_s``. ``optional``: topics of ``topics``
    that need not appear: once the others have publishers they get ``OPTIONAL_GRACE_S`` more, then those
    still without a publisher are left out (one line on ``log``). Raises :class:`RecordError`.
    """
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions
    from rosbags.rosbag2 import StoragePlugin, Writer

    from mhc_ros.bag_player import message_class

    out = Path(out)
    if out.exists():
        raise RecordError(f"bag directory '{out}' already exists (rosbag2 never overwrites a bag)")
    if not out.parent.is_dir():
        raise RecordError(f"output folder '{out.parent}' does not exist")
    stop = stop if stop is not None else []
    counts = dict.fromkeys(topics, 0)
    with rclpy.init(signal_handler_options=SignalHandlerOptions.NO):
        node = rclpy.create_node(NODE_NAME)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            deadline = time.monotonic() + wait_s
            types: dict[str, str] = {}
            required_since = None
            while not stop:
                graph = dict(node.get_topic_names_and_types())
                types = {t: graph[t][0] for t in topics if graph.get(t) and node.get_publishers_info_by_topic(t)}
                if len(types) == len(topics) or time.monotonic() > deadline:
                    break
                if all(t in types for t in topics if t not in optional):
                    required_since = required_since or time.monotonic()
                    if time.monotonic() - required_since > OPTIONAL_GRACE_S:
                        break
                executor.spin_once(timeout_sec=0.1)
            if stop:
                return counts
            skipped = [t for t in topics if t not in types and t in optional]
            if skipped:
                print(f"not recording (no publisher): {' '.join(skipped)}", file=log)
                topics = [t for t in topics if t not in skipped]
                counts = dict.fromkeys(topics, 0)
            missing = [t for t in topics if t not in types]
            if missing:
                raise RecordError(f"topic '{missing[0]}' has no publisher after {wait_s:g} s")
            unknown = [t for t in topics if types[t] not in TYPESTORE.types]
            if unknown:
                raise RecordError(f"topic '{unknown[0]}' has type '{types[unknown[0]]}', not in the rosbags "
                                  "Kilted type store (no message definition to write)")
            classes = {t: message_class(types[t]) for t in topics}
            with Writer(out, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
                subscriptions = []
                for topic in topics:
                    endpoints = node.get_publishers_info_by_topic(topic)
                    conn = writer.add_connection(topic, types[topic], typestore=TYPESTORE,
                                                 offered_qos_profiles=[offered_qos(endpoints)])

                    def on_message(raw: bytes, conn=conn, topic=topic) -> None:
                        writer.write(conn, time.time_ns(), raw)
                        counts[topic] += 1

                    subscriptions.append(node.create_subscription(classes[topic], topic, on_message,
                                                                  subscription_qos(endpoints), raw=True))
                print(f"recording {len(topics)} topics to {out}", file=log)
                end = None if duration_s is None else time.monotonic() + duration_s
                while not stop and (end is None or time.monotonic() < end):
                    executor.spin_once(timeout_sec=SPIN_PERIOD_S)
                for subscription in subscriptions:
                    node.destroy_subscription(subscription)
        finally:
            executor.shutdown()
            node.destroy_node()
    return counts


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", nargs="+", default=None,
                        help="topics to record (default: the episode topics of docs/contracts.md and "
                             f"{TRACE_TOPIC}; those of them a graph may lack are left out when absent)")
    parser.add_argument("--out", type=Path, required=True, help="new rosbag2 directory to write")
    parser.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: Ctrl-C)")
    parser.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the topics to appear")


def run(args: argparse.Namespace) -> int:
    for name in ("duration", "wait"):
        value = getattr(args, name)
        if value is not None and not (0.0 < value < float("inf")):
            raise UsageError(f"--{name} {value} must be a finite number > 0 (s)")
    optional = OPTIONAL_DEFAULT_TOPICS if args.topics is None else ()
    topics = list(DEFAULT_TOPICS) if args.topics is None else args.topics
    bad = [t for t in topics if not t.startswith("/")]
    if bad:
        raise UsageError(f"topic '{bad[0]}' must be an absolute name (starting with '/')")
    stop: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, _frame: stop.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        counts = record(list(dict.fromkeys(topics)), args.out, args.duration, args.wait, stop, optional=optional)
    except RecordError as err:
        raise UsageError(str(err)) from None
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    total = sum(counts.values())
    print(f"recorded {total} messages on {len(counts)} topics to {args.out}"
          + (f" (stopped by {signal.Signals(stop[0]).name})" if stop else ""))
    for topic, count in counts.items():
        print(f"  {topic}: {count}")
    return 0
