"""The sim bridge in-process on a real rclpy graph: bad commands are rejected, counted, and the arm holds.

The ROS domain and localhost-only discovery come from ``tests/conftest.py``.
"""

import json
import math

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_spin import spin_for_function, spin_until_function  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402

from mhc_ros import conversions as conv  # noqa: E402
from mhc_ros.sim_bridge_node import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS, SimBridgeNode  # noqa: E402
from mhc_ros.system import TRACE_TOPIC, instruction_sha  # noqa: E402


class Probe:
    """A test node that commands the bridge and records what it publishes."""

    def __init__(self, context):
        self.node = rclpy.create_node("probe", context=context)
        self.joints: np.ndarray | None = None
        self.joint_stamp = -1.0
        self.status: dict = {}
        self.diagnostics: dict[str, str] = {}
        self.images = 0
        self.instruction = ""
        self.trajectory = self.node.create_publisher(JointTrajectory, "/arm_controller/joint_trajectory",
                                                     RELIABLE_QOS)
        self.gripper = self.node.create_publisher(Float64MultiArray, "/gripper_controller/commands", RELIABLE_QOS)
        self.request = self.node.create_publisher(String, "/sim/episode_request", RELIABLE_QOS)
        self.node.create_subscription(JointState, "/joint_states", self._on_joints, RELIABLE_QOS)
        self.node.create_subscription(String, "/sim/episode_status", self._on_status, LATCHED_QOS)
        self.node.create_subscription(String, "/mhc/instruction", self._on_instruction, LATCHED_QOS)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.node.create_subscription(Image, "/camera/image_raw", self._on_image, SENSOR_QOS)

    def _on_joints(self, msg):
        self.joints, _ = conv.joint_state_arrays(msg)
        self.joint_stamp = conv.time_to_seconds(msg.header.stamp)

    def _on_status(self, msg):
        self.status = json.loads(msg.data)

    def _on_instruction(self, msg):
        self.instruction = msg.data

    def _on_image(self, msg):
        assert conv.image_from_msg(msg).shape == (32, 32, 3)
        self.images += 1

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith("mhc_sim_bridge"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}


@pytest.fixture
def graph():
    context = rclpy.Context()
    rclpy.init(context=context)
    bridge = SimBridgeNode(context=context, parameter_overrides=[
        Parameter("task", value="reach"), Parameter("seed", value=1), Parameter("image_width", value=32),
        Parameter("image_height", value=32), Parameter("realtime_factor", value=5.0),
        Parameter("max_steps", value=100000), Parameter("reject_log_period_s", value=0.2)])
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(probe.node)

    spin_until = spin_until_function(executor, poll_s=0.02, default_timeout_s=20.0)

    yield bridge, probe, spin_until
    executor.shutdown()
    probe.node.destroy_node()
    bridge.close()
    context.try_shutdown()


def _trajectory(positions, names=conv.ARM_JOINTS):
    return conv.joint_trajectory_msg(np.asarray(positions, float), 0.05, names=names)


def test_bad_trajectories_are_rejected_counted_and_the_arm_holds(graph):
    bridge, probe, spin_until = graph
    spin_until(lambda: probe.status.get("episode_id") == 1 and probe.joints is not None and probe.images > 0
               and probe.instruction != "")
    assert probe.instruction == probe.status["instruction"] and probe.status["seed"] == 1
    home = probe.joints[:7].copy()

    # Before any command the arm holds its reset pose.
    stamp = probe.joint_stamp
    spin_until(lambda: probe.joint_stamp > stamp + 0.5)
    np.testing.assert_allclose(probe.joints[:7], home, atol=2e-3)

    # A valid command moves joint 1.
    goal = home.copy()
    goal[0] += 0.3
    probe.trajectory.publish(_trajectory(goal))
    probe.gripper.publish(conv.gripper_msg(0.02))
    spin_until(lambda: abs(probe.joints[0] - goal[0]) < 5e-3 and abs(probe.joints[7] + probe.joints[8] - 0.02) < 2e-3)

    # Unknown name, NaN, a position outside the URDF limits, wrong length, bad gripper: all rejected.
    far = goal.copy()
    far[0] -= 0.6
    unknown = _trajectory(far, names=[*conv.ARM_JOINTS[:6], "wrist"])
    nan = far.copy()
    nan[2] = math.nan
    outside = far.copy()
    outside[3] = 0.5  # panda_joint4 upper limit is 0.0 rad
    short = _trajectory(far)
    short.points[0].positions = list(far[:6])
    for msg in (unknown, _trajectory(nan), _trajectory(outside), short):
        probe.trajectory.publish(msg)
    probe.gripper.publish(Float64MultiArray(data=[math.inf]))
    spin_until(lambda: probe.status.get("rejected_commands") == 5)
    assert bridge.rejected_total == 5
    assert "rejected, holding" in bridge.last_rejection

    # The arm holds the last valid command while the bridge keeps stepping.
    step = probe.status["step"]
    spin_until(lambda: probe.status["step"] > step + 20)
    np.testing.assert_allclose(probe.joints[:7], goal, atol=5e-3)
    assert abs(probe.joints[7] + probe.joints[8] - 0.02) < 2e-3
    spin_until(lambda: probe.diagnostics.get("rejected_commands_total") == "5")
    assert probe.diagnostics["rejected_commands"] == "5"

    # ... and still obeys the next valid command.
    probe.trajectory.publish(_trajectory(home))
    spin_until(lambda: abs(probe.joints[0] - home[0]) < 5e-3)
    assert not probe.status["done"]


def test_episode_requests_are_validated(graph):
    bridge, probe, spin_until = graph
    spin_until(lambda: probe.status.get("episode_id") == 1)
    for text in ("not json", '{"task": "fly", "seed": 0}', '{"task": "reach", "seed": -3}'):
        probe.request.publish(String(data=text))
    spin_until(lambda: bridge.bad_requests == 3)
    assert probe.status["episode_id"] == 1
    probe.request.publish(String(data=json.dumps({"task": "push", "seed": 2, "request_id": "r1"})))
    spin_until(lambda: probe.status.get("episode_id") == 2)
    assert (probe.status["task"], probe.status["seed"], probe.status["request_id"]) == ("push", 2, "r1")
    assert probe.status["step"] < 50 and probe.status["rejected_commands"] == 0  # a fresh episode
    assert probe.status["start_time"] > 0.0  # /clock keeps running across episodes
    spin_until(lambda: probe.diagnostics.get("bad_episode_requests") == "3")


def test_commands_sent_before_an_episode_reset_are_ignored(graph):
    """A hold of the previous episode's pose still in flight at a reset must not move the reset arm."""
    bridge, probe, spin_until = graph
    spin_until(lambda: probe.status.get("episode_id") == 1 and probe.joints is not None)
    spin_until(lambda: probe.joint_stamp > 0.5)  # sim time runs on: the next episode starts later on /clock
    probe.request.publish(String(data=json.dumps({"task": "reach", "seed": 1, "request_id": "r2",
                                                  "instruction": "reach the red block"})))
    spin_until(lambda: probe.status.get("request_id") == "r2" and probe.joint_stamp >= probe.status["start_time"])
    spin_until(lambda: probe.instruction == "reach the red block")
    assert probe.status["instruction"] == "reach the red block"
    start, home = probe.status["start_time"], probe.joints[:7].copy()
    away = home.copy()
    away[0] += 0.4
    old = conv.joint_trajectory_msg(away, 0.05, stamp_s=start - 0.2)  # stamped before the reset
    probe.trajectory.publish(old)
    spin_until(lambda: bridge.stale_commands == 1)
    step = probe.status["step"]
    spin_until(lambda: probe.status["step"] > step + 10)
    np.testing.assert_allclose(probe.joints[:7], home, atol=2e-3)
    assert probe.status["rejected_commands"] == 0
    spin_until(lambda: probe.diagnostics.get("stale_commands_ignored") == "1")
    fresh = conv.joint_trajectory_msg(away, 0.05, stamp_s=probe.joint_stamp)  # stamped in this episode: obeyed
    probe.trajectory.publish(fresh)
    spin_until(lambda: abs(probe.joints[0] - away[0]) < 5e-3)


@pytest.fixture
def lockstep_graph(request):
    """A lockstep bridge (realtime_factor 0) that holds each episode's first observation for the announcement."""
    context = rclpy.Context()
    rclpy.init(context=context)
    bridge = SimBridgeNode(context=context, parameter_overrides=[
        Parameter("task", value="reach"), Parameter("seed", value=1), Parameter("image_width", value=32),
        Parameter("image_height", value=32), Parameter("realtime_factor", value=0.0),
        Parameter("instruction_ack_timeout_s", value=request.param)])
    probe = Probe(context)
    trace = probe.node.create_publisher(String, TRACE_TOPIC, RELIABLE_QOS)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(bridge)
    executor.add_node(probe.node)
    spin_until = spin_until_function(executor, poll_s=0.02, default_timeout_s=20.0)
    spin_for = spin_for_function(executor)

    yield bridge, probe, trace, spin_until, spin_for
    executor.shutdown()
    probe.node.destroy_node()
    bridge.close()
    context.try_shutdown()


@pytest.mark.parametrize("lockstep_graph", [30.0], indirect=True)
@pytest.mark.parametrize("source", ["instruction", "tick"])  # announced, or (announcement lost) ticked on
def test_lockstep_first_observation_waits_for_the_instruction_announcement(lockstep_graph, source):
    bridge, probe, trace, spin_until, spin_for = lockstep_graph
    spin_until(lambda: probe.status.get("episode_id") == 1 and probe.instruction)
    spin_for(0.5)
    assert probe.joints is None and probe.images == 0  # nothing of the new scene before the announcement
    for other in ({"source": "instruction", "instruction_sha": instruction_sha("another task")},
                  {"source": "tick", "instruction_sha": instruction_sha("another task")},
                  {"source": "stop", "instruction_sha": instruction_sha(probe.instruction)}):
        trace.publish(String(data=json.dumps(other)))
    trace.publish(String(data="not json"))
    spin_for(0.3)
    assert probe.joints is None
    announced = {"source": source, "instruction_sha": instruction_sha(probe.instruction), "tick": 0}
    trace.publish(String(data=json.dumps(announced)))
    spin_until(lambda: probe.joints is not None and probe.images > 0)
    assert probe.status["step"] == 0 and bridge.ack_timeouts == 0


@pytest.mark.parametrize("lockstep_graph", [0.3], indirect=True)
def test_lockstep_first_observation_goes_out_at_the_timeout_without_an_announcement(lockstep_graph):
    bridge, probe, _trace, spin_until, _spin_for = lockstep_graph
    spin_until(lambda: probe.status.get("episode_id") == 1)
    spin_until(lambda: probe.joints is not None, timeout_s=5.0)
    assert bridge.ack_timeouts == 1
    spin_until(lambda: probe.diagnostics.get("instruction_ack_timeouts") == "1")
