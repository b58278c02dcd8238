"""``mhc_controller`` in-process on a real rclpy graph, with a fake inference runtime that follows the contract.

The runtime is injected by monkeypatching ``mhc_ros.controller_node.load_runtime`` (the node's only
loader hook). The ROS domain and localhost-only discovery come from ``tests/conftest.py``.
"""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from ros_spin import spin_for_function, spin_until_function  # noqa: E402
from sensor_msgs.msg import Image, JointState  # noqa: E402
from std_msgs.msg import Float64MultiArray, String  # noqa: E402
from std_srvs.srv import Trigger  # noqa: E402
from trajectory_msgs.msg import JointTrajectory  # noqa: E402
from visualization_msgs.msg import MarkerArray  # noqa: E402

from mhc_ros import control_logic as cl  # noqa: E402
from mhc_ros import controller_node  # noqa: E402
from mhc_ros import conversions as conv  # noqa: E402
from mhc_ros.sim_bridge_node import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS  # noqa: E402
from mhc_ros.system import TRACE_TOPIC, instruction_sha  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HOME = np.array([0.0, -0.785, 0.0, -2.356, 0.0, 1.571, 0.785, 0.02, 0.02])
PERIOD = 0.05
VMAX, AMAX = 1.5, 8.0
KNOWN_WORDS = {"pick", "the", "red", "cube", "place", "in", "bin"}


class FakeRuntime:
    """Follows docs/contracts.md § Inference runtime; ``chunk(joint_history)`` decides the action chunk."""

    backend = "fake"
    joint_history_length = 3

    def __init__(self):
        self.calls = 0
        self.instructions: list[str] = []
        self.chunk = lambda history: np.tile(np.r_[history[-1, :7] + 0.1, 0.04], (4, 1))

    def encode_instruction(self, text):
        self.instructions.append(text)
        words = text.lower().split()
        return SimpleNamespace(num_words=len(words), num_unknown=sum(w not in KNOWN_WORDS for w in words))

    def step(self, image, encoding, joint_history):
        assert image.dtype == np.uint8 and image.ndim == 3 and encoding in ("rgb8", "bgr8", "mono8")
        assert joint_history.shape == (self.joint_history_length, 18) and joint_history.dtype == np.float32
        self.calls += 1
        motion = np.linspace(0, 0.1, 5)[:, None, None] * np.ones((5, 7, 3))
        return SimpleNamespace(action_chunk=np.asarray(self.chunk(joint_history), np.float32), motion=motion,
                               motion_present=np.array([1, 0, 0, 0, 0, 1, 1], float),
                               plan=[("pick", "red_cube"), ("place", "bin")], phase=1)


class Probe:
    """Feeds camera images and joint states at 50 Hz; records the controller's outputs (receipt times)."""

    def __init__(self, context):
        self.node = rclpy.create_node("probe", context=context)
        self.joints = HOME.copy()
        self.feed_image = self.feed_joints = True
        self.trajectories: list[tuple[float, np.ndarray]] = []
        self.grippers: list[float] = []
        self.plans: list[dict] = []
        self.markers: list[MarkerArray] = []
        self.diagnostics: dict[str, str] = {}
        self.pub_image = self.node.create_publisher(Image, "/camera/image_raw", SENSOR_QOS)
        self.pub_joints = self.node.create_publisher(JointState, "/joint_states", RELIABLE_QOS)
        self.pub_instruction = self.node.create_publisher(String, "/mhc/instruction", LATCHED_QOS)
        self.stop = self.node.create_client(Trigger, "/mhc/stop")
        self.resume = self.node.create_client(Trigger, "/mhc/resume")
        self.node.create_subscription(JointTrajectory, "/arm_controller/joint_trajectory", self._on_trajectory,
                                      RELIABLE_QOS)
        self.node.create_subscription(Float64MultiArray, "/gripper_controller/commands",
                                      lambda m: self.grippers.append(m.data[0]), RELIABLE_QOS)
        self.node.create_subscription(String, "/mhc/plan", lambda m: self.plans.append(json.loads(m.data)), 10)
        self.node.create_subscription(MarkerArray, "/mhc/predicted_motion", self.markers.append, 10)
        self.node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.image = conv.image_msg(np.full((24, 32, 3), 128, np.uint8))
        self.node.create_timer(0.02, self._feed)

    def _feed(self):
        if self.feed_image:
            self.pub_image.publish(self.image)
        if self.feed_joints:
            self.pub_joints.publish(conv.joint_state_msg(conv.JOINT_NAMES, self.joints, np.zeros(9)))

    def _on_trajectory(self, msg):
        assert list(msg.joint_names) == list(conv.ARM_JOINTS) and len(msg.points) == 1
        assert conv.time_to_seconds(msg.points[0].time_from_start) == pytest.approx(PERIOD)
        self.trajectories.append((time.monotonic(), np.array(msg.points[0].positions)))

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.startswith("mhc_controller"):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def instruct(self, text):
        self.pub_instruction.publish(String(data=text))


@pytest.fixture
def checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"fake")
    return path


def _start(monkeypatch, checkpoint, runtime=None, **overrides):
    runtime = runtime or FakeRuntime()
    loads = []

    def load_runtime(path, backend="auto", engine_dir=None, device=None, threads=2, compile_module=False):
        loads.append((path, backend, engine_dir, device, threads))
        if isinstance(runtime, Exception):
            raise runtime
        return runtime

    monkeypatch.setattr(controller_node, "load_runtime", load_runtime)
    context = rclpy.Context()
    rclpy.init(context=context)
    parameters = {"checkpoint_path": str(checkpoint), "diagnostics_period_s": 0.2, "visualization_rate_hz": 5.0,
                  **overrides}
    node = controller_node.ControllerNode(
        context=context, parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
    return context, node, runtime, loads


@pytest.fixture
def graph(monkeypatch, checkpoint):
    yield from _graph(monkeypatch, checkpoint)


@pytest.fixture
def lockstep_graph(monkeypatch, checkpoint):
    yield from _graph(monkeypatch, checkpoint, lockstep=True)


def _graph(monkeypatch, checkpoint, **overrides):
    context, node, runtime, _loads = _start(monkeypatch, checkpoint, **overrides)
    probe = Probe(context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe.node)

    spin_until = spin_until_function(executor, poll_s=0.01, default_timeout_s=10.0)
    spin_for = spin_for_function(executor)

    def call(client):
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(Trigger.Request())
        spin_until(future.done)
        return future.result()

    yield SimpleNamespace(node=node, probe=probe, runtime=runtime, spin_until=spin_until, spin_for=spin_for,
                          call=call)
    executor.shutdown()
    probe.node.destroy_node()
    node.close()
    context.try_shutdown()


def _is_hold(positions, joints=HOME):
    return np.allclose(positions, joints[:7], atol=1e-9)


def test_a_new_instructions_history_starts_after_it(graph):
    """The joint state measured before an instruction belongs to the previous task: the new task's first
    model tick has only the states measured after the instruction in its history."""
    g = graph
    trace = []
    g.probe.node.create_subscription(String, TRACE_TOPIC, lambda m: trace.append(json.loads(m.data)), RELIABLE_QOS)
    g.spin_until(lambda: g.node.joints is not None)
    g.probe.feed_joints = False
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.node.instruction is not None)
    g.spin_for(0.15)  # ticks before any new joint state (and before the watchdog's timeout): hold, no model
    assert g.runtime.calls == 0 and g.node.dropped["inference_error"] == 0
    g.probe.feed_joints = True
    g.spin_until(lambda: any(t["source"] == "tick" and t["mode"] == "ok" for t in trace))
    first = next(t for t in trace if t["source"] == "tick" and t["mode"] == "ok")
    assert first["history"] == 1 and first["pushed"] is True


def test_lockstep_acts_once_per_joint_state_and_announces_instructions(lockstep_graph):
    """In lockstep a late simulation step is waited for: one model tick per new joint state, none on a repeat;
    an accepted instruction is announced on the trace at once and waits for the next joint state."""
    g = lockstep_graph
    trace = []
    g.probe.node.create_subscription(String, TRACE_TOPIC, lambda m: trace.append(json.loads(m.data)), RELIABLE_QOS)
    g.probe.feed_joints = False
    stamp = [1.0]

    def joint_state():
        g.probe.pub_joints.publish(conv.joint_state_msg(conv.JOINT_NAMES, g.probe.joints, np.zeros(9), stamp[0]))

    joint_state()
    g.spin_until(lambda: g.node.joints is not None)
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: any(t["source"] == "instruction" for t in trace))
    announced = next(t for t in trace if t["source"] == "instruction")
    assert announced["instruction_sha"] == instruction_sha("pick the red cube") and announced["history"] == 0
    g.spin_for(0.3)  # six control periods on the joint state from before the instruction: no tick acts on it
    assert g.runtime.calls == 0 and not [t for t in trace if t["source"] == "tick"]
    for step in range(1, 4):
        stamp[0] += PERIOD
        joint_state()
        g.spin_until(lambda step=step: g.runtime.calls == step)
        g.spin_for(0.2)  # the simulation is late: no second tick on the same joint state
        assert g.runtime.calls == step
    ticks = [t for t in trace if t["source"] == "tick"]
    assert [t["tick"] for t in ticks] == [0, 1, 2] and [t["history"] for t in ticks] == [1, 2, 3]
    g.probe.feed_image = False  # the camera stops: the watchdog still holds the arm, lockstep or not
    g.spin_until(lambda: g.node.mode == cl.STALE, timeout_s=2.0)


def test_commands_at_the_control_rate_from_the_measured_state(graph):
    g = graph
    # No instruction yet: the arm holds its measured position.
    g.spin_until(lambda: len(g.probe.trajectories) >= 3)
    assert all(_is_hold(p) for _, p in g.probe.trajectories) and g.runtime.calls == 0
    assert g.node.mode == cl.NO_INSTRUCTION

    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.runtime.calls >= 1)
    first = len(g.probe.trajectories)
    g.spin_until(lambda: len(g.probe.trajectories) >= first + 41, timeout_s=5.0)
    times = np.array([t for t, _ in g.probe.trajectories[first:]])
    rate = (len(times) - 1) / (times[-1] - times[0])
    assert rate == pytest.approx(20.0, rel=0.1), rate
    commands = np.stack([p for _, p in g.probe.trajectories[first - 1:]])
    # First model command starts at the measured state (at most a·dt² away) and moves no faster than vmax.
    assert np.abs(commands[1] - HOME[:7]).max() <= AMAX * PERIOD**2 + 1e-9
    assert np.abs(np.diff(commands, axis=0)).max() <= VMAX * PERIOD + 1e-9
    assert commands[-1][0] == pytest.approx(HOME[0] + 0.1, abs=1e-6)  # the model's target reached
    assert g.probe.grippers and g.probe.grippers[-1] == pytest.approx(0.04)
    g.spin_until(lambda: g.probe.plans and g.probe.markers and g.probe.diagnostics.get("safety_state") == "ok")
    assert g.probe.plans[-1] == {"plan": [["pick", "red_cube"], ["place", "bin"]], "phase": 1}
    markers = g.probe.markers[-1].markers
    assert len(markers) == 7 and [len(m.points) for m in markers] == [5, 0, 0, 0, 0, 5, 5]
    d = g.probe.diagnostics
    assert d["backend"] == "fake" and float(d["inference_p99_ms"]) >= float(d["inference_p50_ms"]) >= 0.0
    assert float(d["tick_rate_hz"]) == pytest.approx(20.0, rel=0.15)
    assert g.runtime.instructions == ["pick the red cube"]


def test_stale_camera_holds_within_the_timeout(graph):
    g = graph
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.runtime.calls >= 5)
    g.probe.feed_image = False
    cut = time.monotonic()
    g.spin_until(lambda: g.node.mode == cl.STALE, timeout_s=2.0)
    assert time.monotonic() - cut <= 0.3 + 2 * PERIOD + 0.05
    held = g.node.hold_position.copy()
    calls = g.runtime.calls
    g.spin_for(0.3)
    recent = [p for t, p in g.probe.trajectories if t > cut + 0.45]
    assert recent and all(np.allclose(p, held) for p in recent) and g.runtime.calls == calls
    g.spin_until(lambda: g.probe.diagnostics.get("safety_state") == "stale")
    g.probe.feed_image = True
    g.spin_until(lambda: g.node.mode == cl.OK and g.runtime.calls > calls, timeout_s=2.0)


def test_stop_holds_until_resume(graph):
    g = graph
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.runtime.calls >= 3)
    assert g.call(g.probe.stop).success
    calls, count = g.runtime.calls, len(g.probe.trajectories)
    g.spin_until(lambda: len(g.probe.trajectories) >= count + 8)
    assert g.node.mode == cl.STOPPED and g.runtime.calls == calls
    assert all(_is_hold(p) for _, p in g.probe.trajectories[count:])
    assert g.call(g.probe.resume).success
    g.spin_until(lambda: g.runtime.calls > calls + 2 and g.node.mode == cl.OK)


def test_limits_clamp_out_of_range_model_output(graph):
    g = graph
    g.runtime.chunk = lambda history: np.tile([10.0, -10.0, 10.0, 10.0, -10.0, 10.0, 10.0, 1.0], (4, 1))
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.runtime.calls >= 50, timeout_s=5.0)
    commands = np.stack([p for _, p in g.probe.trajectories])
    lower, upper = np.array(cl.PANDA_LOWER) + 0.05, np.array(cl.PANDA_UPPER) - 0.05
    assert np.all(commands >= lower - 1e-9) and np.all(commands <= upper + 1e-9)
    assert np.abs(np.diff(commands, axis=0)).max() <= VMAX * PERIOD + 1e-9
    assert commands[-1][3] == pytest.approx(-0.05)  # panda_joint4 clamped at its upper limit minus the margin
    assert max(g.probe.grippers) == pytest.approx(cl.GRIPPER_MAX_WIDTH)


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_invalid_model_output_holds_and_is_counted(graph, bad):
    g = graph
    g.runtime.chunk = lambda history: np.full((4, 8), bad)
    g.probe.instruct("pick the red cube")
    g.spin_until(lambda: g.node.dropped["output_nan"] >= 5)
    assert g.node.mode == cl.NAN and all(_is_hold(p) for _, p in g.probe.trajectories)
    assert not g.probe.grippers
    g.spin_until(lambda: g.probe.diagnostics.get("safety_state") == "nan"
                 and int(g.probe.diagnostics.get("dropped_output_nan", 0)) >= 5)


def test_malformed_inputs_are_dropped_counted_and_the_arm_holds(graph):
    g, probe = graph, graph.probe
    g.spin_until(lambda: len(probe.trajectories) >= 2)
    # Instructions: 1 MB, only unknown words, empty. None reaches the model; the arm keeps holding.
    for text in ("pick " * 200_000, "flurb zorp quux", "   "):
        probe.instruct(text)
        g.spin_for(0.1)
    g.spin_until(lambda: sum(g.node.dropped[r] for r in ("instruction_too_long", "instruction_unknown_words",
                                                          "instruction_empty")) == 3)
    assert g.runtime.calls == 0 and g.node.mode == cl.NO_INSTRUCTION

    probe.instruct("pick the red cube")
    g.spin_until(lambda: g.runtime.calls >= 1)
    # Camera: only malformed images from now on → dropped, the camera goes stale, the arm holds.
    probe.feed_image = False
    wrong_encoding = conv.image_msg(np.zeros((4, 4, 3), np.uint8))
    wrong_encoding.encoding = "yuv422"
    short = conv.image_msg(np.zeros((4, 4, 3), np.uint8))
    short.step = 5
    truncated = conv.image_msg(np.zeros((4, 4, 3), np.uint8))
    truncated.data = truncated.data[:20]
    empty = Image(encoding="rgb8")
    for msg in (wrong_encoding, short, truncated, empty):
        probe.pub_image.publish(msg)
        g.spin_for(0.03)
    g.spin_until(lambda: g.node.mode == cl.STALE)
    g.spin_until(lambda: g.node.dropped["image_encoding"] == 1 and g.node.dropped["image_size"] == 2
                 and g.node.dropped["image_empty"] == 1)
    probe.feed_image = True
    g.spin_until(lambda: g.node.mode == cl.OK)

    # Joint states: only malformed ones from now on → dropped, stale, the arm holds where it was measured.
    probe.feed_joints = False
    nan = conv.joint_state_msg(conv.JOINT_NAMES, np.r_[HOME[:8], math.nan], np.zeros(9))
    missing = conv.joint_state_msg(conv.JOINT_NAMES[:8], HOME[:8], np.zeros(8))
    unknown = conv.joint_state_msg([f"wrist{i}" for i in range(9)], HOME, np.zeros(9))
    mismatch = conv.joint_state_msg(conv.JOINT_NAMES, HOME, np.zeros(9))
    mismatch.position = list(HOME[:5])
    far = conv.joint_state_msg(conv.JOINT_NAMES, HOME + 1.0, np.full(9, math.inf))
    for msg in (nan, missing, unknown, mismatch, far):
        probe.pub_joints.publish(msg)
        g.spin_for(0.03)
    g.spin_until(lambda: g.node.mode == cl.STALE)
    g.spin_until(lambda: g.node.dropped["joint_nan"] == 2 and g.node.dropped["joint_missing"] == 2
                 and g.node.dropped["joint_length"] == 1)
    count = len(probe.trajectories)
    g.spin_until(lambda: len(probe.trajectories) >= count + 4)
    assert all(np.allclose(p, g.node.hold_position) for _, p in probe.trajectories[count:])
    assert np.abs(g.node.hold_position - HOME[:7]).max() < 0.2  # never the 'far' state

    g.spin_until(lambda: int(probe.diagnostics.get("dropped_total", 0)) == 12
                 and probe.diagnostics.get("dropped_instruction_too_long") == "1")
    probe.feed_joints = True  # and the node still runs
    calls = g.runtime.calls
    g.spin_until(lambda: g.node.mode == cl.OK and g.runtime.calls > calls)


@pytest.mark.parametrize("overrides, error, message", [
    ({"backend": "tensorflow"}, None, "backend 'tensorflow' unknown"),
    ({"checkpoint_path": "/no/such/model.pt"}, None, "checkpoint_path '/no/such/model.pt' does not exist"),
    ({"checkpoint_path": ""}, None, "checkpoint_path '' is empty"),
    ({"control_rate_hz": -5.0}, None, "control_rate_hz -5.0 must be"),
    ({"smoothing": "kalman"}, None, "smoothing 'kalman' unknown"),
    ({"backend": "tensorrt"}, RuntimeError("engine model.engine was built for GPU 'NVIDIA A100', this is 'H200'"),
     "built for GPU 'NVIDIA A100'"),
])
def test_bad_parameters_fail_configure_naming_the_value(monkeypatch, checkpoint, overrides, error, message):
    context, node, _runtime, loads = _start(monkeypatch, checkpoint, runtime=error, **overrides)
    try:
        assert node.runtime is None and message in node.configure_error
        assert node._state_machine.current_state[1] == "unconfigured"
        assert bool(loads) == (error is not None)  # parameters are checked before loading anything
    finally:
        node.destroy_node()
        context.try_shutdown()


def test_failed_configure_exits_the_process_with_one_message(tmp_path):
    env = {**os.environ, "RCUTILS_LOGGING_USE_STDOUT": "0"}
    result = subprocess.run([sys.executable, "-m", "mhc_ros.controller_node", "--ros-args", "-p",
                             f"checkpoint_path:={tmp_path / 'missing.pt'}"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    errors = [line for line in (result.stdout + result.stderr).splitlines() if "configure failed" in line]
    assert len(errors) == 1 and "missing.pt' does not exist" in errors[0], result.stderr
    assert "Traceback" not in result.stderr


FAKE_PROCESS = """
import sys, types, numpy as np
from mhc_ros import controller_node
runtime = types.SimpleNamespace(backend="fake", joint_history_length=2, encode_instruction=lambda text: None,
                                step=lambda image, encoding, history: None)
controller_node.load_runtime = lambda *args, **kwargs: runtime
controller_node.main(sys.argv[1:])
"""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_exits_cleanly(checkpoint, sig):
    process = subprocess.Popen([sys.executable, "-c", FAKE_PROCESS, "--ros-args", "-p",
                                f"checkpoint_path:={checkpoint}"], cwd=ROOT, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:
            if "active" in line:
                break
        process.send_signal(sig)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
    assert "Traceback" not in process.stdout.read()


@pytest.fixture
def tiny_checkpoint(tmp_path) -> str:
    """A randomly initialised `tiny` policy saved as a real checkpoint (safetensors + JSON)."""
    from mhc_model.checkpoint import save_checkpoint
    from mhc_model.config import preset
    from mhc_model.latency import random_policy

    return str(save_checkpoint(tmp_path / "tiny", random_policy(preset("tiny")).eval()))


def test_sigterm_exits_cleanly_with_a_real_runtime(tiny_checkpoint):
    process = subprocess.Popen([sys.executable, "-m", "mhc_ros.controller_node", "--ros-args", "-p",
                                f"checkpoint_path:={tiny_checkpoint}", "-p", "backend:=torch"],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        for line in process.stdout:
            if "active" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
