"""``EpisodeClient``: the ``mhc bringup sim`` process's own ROS node — it requests simulation episodes on
``/sim/episode_request``, follows them on ``/sim/episode_status``, keeps the controller's inference
latency from ``/diagnostics`` and the joint states its ticks used from ``/mhc/controller_tick``, and tells
when the started system (and its recorder) is ready.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

from mhc_ros.system import CONTROLLER_TOPICS, TRACE_TOPIC, stamp_seconds


class EpisodeClient:
    """This process's own ROS node: requests episodes and follows their status."""

    def __init__(self, domain_id: int, status_readers: int = 2, recorded_topics: tuple[str, ...] = ()) -> None:
        """``status_readers``: subscribers of ``/sim/episode_status`` expected when ready (this client
        plus, for the expert, its controller; the mHC controller does not read it). ``recorded_topics``:
        topics the recorder child (node ``mhc_recorder``) must subscribe to before the system is ready."""
        import rclpy
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.signals import SignalHandlerOptions
        from std_msgs.msg import String

        from mhc_ros.sim_bridge_node import LATCHED_QOS, RELIABLE_QOS

        self._string = String
        self.context = rclpy.Context()
        rclpy.init(context=self.context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("mhc_bringup", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.status: dict[str, Any] | None = None
        self.recorded_topics = tuple(recorded_topics)
        # The recorder also reads the status and joint states: one more subscriber of each when recording.
        self.status_readers = status_readers + (1 if self.recorded_topics else 0)
        self.joint_state_readers = 1 + (1 if self.recorded_topics else 0)
        self.latency: tuple[float, float] | None = None  # controller inference p50, p99 (ms) last reported
        self.latency_time = -math.inf                      # time.monotonic() when it arrived
        # (joint-state stamp s, image stamp s or None, mode) of each mhc_controller tick since the last request
        self.ticks: list[tuple[float, float | None, str]] = []
        self.request_pub = self.node.create_publisher(String, "/sim/episode_request", RELIABLE_QOS)
        self.node.create_subscription(String, "/sim/episode_status", self._on_status, LATCHED_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(String, TRACE_TOPIC, self._on_trace, RELIABLE_QOS)

    def _on_status(self, msg: Any) -> None:
        self.status = json.loads(msg.data)

    def _on_diagnostics(self, msg: Any) -> None:
        """Keep the mhc_controller's ``inference_p50_ms`` / ``inference_p99_ms`` (the bridge's status has neither)."""
        for status in msg.status:
            values = {kv.key: kv.value for kv in status.values}
            if "inference_p50_ms" not in values:
                continue
            try:
                p50, p99 = float(values["inference_p50_ms"]), float(values["inference_p99_ms"])
            except (KeyError, ValueError):
                continue
            self.latency = (p50, p99) if math.isfinite(p50) and math.isfinite(p99) else None
            self.latency_time = time.monotonic()

    def _on_trace(self, msg: Any) -> None:
        trace = json.loads(msg.data)
        joint_state = stamp_seconds(trace.get("joint_state_stamp"))
        if trace.get("source") == "tick" and joint_state is not None:
            self.ticks.append((joint_state, stamp_seconds(trace.get("image_stamp")), str(trace.get("mode"))))

    def _episode_ticks(self, start_time: float) -> list[tuple[float, float | None, str]]:
        """Ticks on the joint states of the episode that began at ``start_time`` (``/clock`` s), without those
        on its last state (the controller keeps ticking on it after the episode ends)."""
        ticks = [t for t in self.ticks if t[0] >= start_time - 1e-6]
        last = max((t[0] for t in ticks), default=0.0)
        return [t for t in ticks if t[0] < last - 1e-6]

    def ticks_on_old_joint_state(self, start_time: float) -> int:
        """Ticks of the episode that began at ``start_time`` (``/clock`` s) that used a joint state an earlier
        tick had used. In lockstep every state is used once, so a count above 0 means the episode is not the
        one ``mhc eval`` runs without ROS."""
        body = [t[0] for t in self._episode_ticks(start_time)]
        return len(body) - len(set(body))

    def hold_ticks(self, start_time: float) -> int:
        """Ticks of the episode that began at ``start_time`` on which the controller held the arm instead of
        following the model (stale input, stopped, no instruction, invalid output; see ``control_logic``)."""
        return sum(t[2] != "ok" for t in self._episode_ticks(start_time))

    def ticks_on_other_image(self, start_time: float) -> int:
        """Model ticks of the episode that began at ``start_time`` whose image was not taken with their joint
        state (the bridge stamps both of an observation alike; a camera frame delayed or dropped)."""
        return sum(t[2] == "ok" and (t[1] is None or abs(t[1] - t[0]) > 1e-6) for t in self._episode_ticks(start_time))

    def spin_once(self, timeout_s: float = 0.05) -> None:
        """Process pending messages, waiting up to ``timeout_s`` seconds."""
        self.executor.spin_once(timeout_sec=timeout_s)

    def ready(self) -> bool:
        """Whether the bridge listens for requests and a controller answers joint states."""
        node = self.node
        return (self.request_pub.get_subscription_count() > 0
                and node.count_publishers(CONTROLLER_TOPICS["trajectory_topic"]) > 0
                and node.count_subscribers(CONTROLLER_TOPICS["joint_states_topic"]) >= self.joint_state_readers
                and node.count_subscribers("/sim/episode_status") >= self.status_readers
                and self.recorder_ready())

    def recorder_ready(self) -> bool:
        """Whether the recorder has a subscription on every recorded topic (True when not recording).

        The recorder subscribes only once every topic has a publisher, so until then an episode would be
        lost from the bag. ``/sim/episode_request`` (published here) must also have matched it.
        """
        from mhc_ros.record import NODE_NAME

        if not self.recorded_topics:
            return True
        if "/sim/episode_request" in self.recorded_topics and self.request_pub.get_subscription_count() < 2:
            return False
        return all(any(info.node_name == NODE_NAME for info in self.node.get_subscriptions_info_by_topic(topic))
                   for topic in self.recorded_topics)

    def request(self, task: str, seed: int, instruction: str | None = None) -> str:
        """Publish an episode request (``instruction`` replaces the episode's own); returns its
        ``request_id`` (echoed in the episode status)."""
        request_id = uuid.uuid4().hex
        self.ticks.clear()
        request = {"task": task, "seed": seed, "request_id": request_id}
        if instruction is not None:
            request["instruction"] = instruction
        self.request_pub.publish(self._string(data=json.dumps(request)))
        return request_id

    def close(self) -> None:
        """Destroy the node and shut the private context down."""
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()
