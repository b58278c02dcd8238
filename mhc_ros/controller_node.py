"""``mhc_controller``: the learned mHC policy as a ROS 2 lifecycle node.

``on_configure`` validates the parameters and loads the inference runtime (``mhc_model.runtime``,
through :func:`load_runtime`, the one hook tests replace); ``on_activate`` starts the control timer.
Each tick: latest ``/camera/image_raw`` + joint history → ``runtime.step`` → action chunk → blended
across chunks → position/velocity/acceleration limits → ``/arm_controller/joint_trajectory`` (one point,
one control period ahead) + ``/gripper_controller/commands``; then ``/mhc/controller_tick`` (JSON trace of the
tick: which image / joint state it used, its mode, see :meth:`ControllerNode._publish_trace`; what lets
``mhc replay`` reproduce a live-recorded bag exactly). ``/mhc/predicted_motion`` (MarkerArray) and
``/mhc/plan`` (JSON) follow at a lower rate; ``/diagnostics`` carries latency, counts and the safety state.

Safety (on by default; logic in :mod:`mhc_ros.control_logic`): stale image or joint state, a
``/mhc/stop`` request, an invalid model output or no valid instruction → the arm *holds* (its
measured positions when the hold began are commanded; the gripper keeps its last command).
Malformed inputs are dropped and counted by reason, never reach the model. With ``autostart``
(default) the node configures and activates itself, so ``ros2 run`` works without a lifecycle manager.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import Node as LifecycleNode
from rclpy.lifecycle import State, TransitionCallbackReturn
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import ColorRGBA, Float64MultiArray, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory
from visualization_msgs.msg import Marker, MarkerArray

from mhc_ros import control_logic as cl
from mhc_ros import conversions as conv
from mhc_ros.controller_core import ControllerCore
from mhc_ros.ros_env import run_node
from mhc_ros.sim_bridge_node import LATCHED_QOS, RELIABLE_QOS, SENSOR_QOS
from mhc_ros.system import TRACE_TOPIC, instruction_sha, stamp_seconds

NODE_NAME = "mhc_controller"
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")

# name -> (default, description); every one is a ROS parameter of the node (see config/controller.yaml).
PARAMETERS: dict[str, tuple[Any, str]] = {
    "autostart": (True, "configure and activate at start-up (no lifecycle manager needed)"),
    "checkpoint_path": ("", "mHC checkpoint (file or folder) given to mhc_model.runtime.load_runtime"),
    "backend": ("auto", "inference backend: auto, torch, onnxruntime, tensorrt"),
    "engine_dir": ("", "folder of exported ONNX models / TensorRT engines; empty = next to the checkpoint"),
    "device": ("", "inference device (e.g. cuda:0, cpu); empty = the runtime's choice"),
    "inference_threads": (2, "CPU threads of the inference runtime (>= 1)"),
    "torch_compile": (False, "CUDA torch backend: torch.compile the steps before capturing CUDA graphs"),
    "control_rate_hz": (20.0, "control rate (Hz); each trajectory point is one period ahead"),
    "lockstep": (False, "the simulation steps when a command arrives (sim bridge realtime_factor 0): act only on "
                        "a joint state newer than the last one acted on (a late step is waited for, not acted on "
                        "twice); a new instruction waits for the next joint state"),
    "arm_joint_names": (list(cl.ARM_JOINTS), "the 7 arm joints, in model order"),
    "finger_joint_names": (list(cl.FINGER_JOINTS), "the 2 finger joints, in model order"),
    "joint_lower_limits": (list(cl.PANDA_LOWER), "arm position lower limits (rad), 7 values (Panda URDF)"),
    "joint_upper_limits": (list(cl.PANDA_UPPER), "arm position upper limits (rad), 7 values (Panda URDF)"),
    "joint_limit_margin": (0.05, "commands stay this far inside the position limits (rad)"),
    "max_joint_velocity": (1.5, "arm joint speed limit of commands (rad/s)"),
    "max_joint_acceleration": (8.0, "arm joint acceleration limit of commands (rad/s^2)"),
    "gripper_max_width": (cl.GRIPPER_MAX_WIDTH, "gripper width commands are clamped to [0, this] (m)"),
    "stale_timeout_s": (0.3, "hold when no valid image or joint state arrived for this long (s)"),
    "smoothing": ("ensemble", "blending of consecutive action chunks: ensemble, crossfade, none"),
    "ensemble_decay": (0.01, "temporal ensembling weight exp(-decay*i), i=0 the oldest chunk"),
    "crossfade_ticks": (3, "crossfade: control periods to fade from the previous chunk to the new one"),
    "visualization_rate_hz": (2.0, "rate of /mhc/predicted_motion and /mhc/plan (Hz); 0 = off"),
    "max_instruction_bytes": (4096, "longer instructions are rejected (bytes, UTF-8)"),
    "marker_frame_id": ("world", "frame of the predicted-motion markers (robot base frame)"),
    "diagnostics_period_s": (1.0, "period of /diagnostics (s)"),
    "warn_period_s": (5.0, "minimum time between two repeated warnings (s)"),
}


def load_runtime(checkpoint_path: str, backend: str = "auto", engine_dir: str | None = None,
                 device: str | None = None, threads: int = 2, compile_module: bool = False) -> Any:
    """The inference runtime (contract: ``docs/contracts.md`` § Inference runtime).

    The node calls this module-level function (tests replace it). Raises the runtime's
    ``RuntimeLoadError`` (one line naming the bad value) or ``ImportError`` when none is installed.
    """
    from mhc_model.runtime import load_runtime as load

    return load(checkpoint_path, backend=backend, engine_dir=engine_dir, device=device, threads=threads,
                compile_module=compile_module)


def _stamp_pair(stamp: Any) -> list[int]:
    return [int(stamp.sec), int(stamp.nanosec)]


def parameter_problem(p: dict[str, Any]) -> str | None:
    """The first invalid parameter of ``p`` as one line naming the value, or None when all are valid."""
    arm, fingers = list(p["arm_joint_names"]), list(p["finger_joint_names"])
    checks = [
        (p["backend"] in BACKENDS, f"backend '{p['backend']}' unknown (expected one of {', '.join(BACKENDS)})"),
        (bool(p["checkpoint_path"]), "checkpoint_path '' is empty (set it to an mHC checkpoint)"),
        (bool(p["checkpoint_path"]) and Path(p["checkpoint_path"]).expanduser().exists(),
         f"checkpoint_path '{p['checkpoint_path']}' does not exist"),
        (not p["engine_dir"] or Path(p["engine_dir"]).expanduser().is_dir(),
         f"engine_dir '{p['engine_dir']}' is not a folder"),
        (math.isfinite(p["control_rate_hz"]) and 0.0 < p["control_rate_hz"] <= 1000.0,
         f"control_rate_hz {p['control_rate_hz']} must be in (0, 1000]"),
        (len(arm) == 7 and len(set(arm)) == 7, f"arm_joint_names {arm} must be 7 distinct names"),
        (len(fingers) == 2 and not set(fingers) & set(arm), f"finger_joint_names {fingers} must be 2 other names"),
        (len(p["joint_lower_limits"]) == 7, f"joint_lower_limits {list(p['joint_lower_limits'])} needs 7 values"),
        (len(p["joint_upper_limits"]) == 7, f"joint_upper_limits {list(p['joint_upper_limits'])} needs 7 values"),
        (0.0 <= p["joint_limit_margin"] < 0.5, f"joint_limit_margin {p['joint_limit_margin']} must be in [0, 0.5) rad"),
        (0.0 < p["max_joint_velocity"] < math.inf, f"max_joint_velocity {p['max_joint_velocity']} must be > 0"),
        (0.0 < p["max_joint_acceleration"] < math.inf,
         f"max_joint_acceleration {p['max_joint_acceleration']} must be > 0"),
        (0.0 < p["gripper_max_width"] < 1.0, f"gripper_max_width {p['gripper_max_width']} must be in (0, 1) m"),
        (0.0 < p["stale_timeout_s"] < math.inf, f"stale_timeout_s {p['stale_timeout_s']} must be > 0"),
        (p["smoothing"] in cl.SMOOTHING_MODES,
         f"smoothing '{p['smoothing']}' unknown (expected one of {', '.join(cl.SMOOTHING_MODES)})"),
        (math.isfinite(p["ensemble_decay"]), f"ensemble_decay {p['ensemble_decay']} must be finite"),
        (p["crossfade_ticks"] >= 1, f"crossfade_ticks {p['crossfade_ticks']} must be >= 1"),
        (0.0 <= p["visualization_rate_hz"] <= 100.0,
         f"visualization_rate_hz {p['visualization_rate_hz']} must be in [0, 100]"),
        (p["max_instruction_bytes"] >= 1, f"max_instruction_bytes {p['max_instruction_bytes']} must be >= 1"),
        (p["inference_threads"] >= 1, f"inference_threads {p['inference_threads']} must be >= 1"),
        (p["diagnostics_period_s"] > 0.0, f"diagnostics_period_s {p['diagnostics_period_s']} must be > 0"),
    ]
    return next((message for ok, message in checks if not ok), None)


class ControllerNode(LifecycleNode):
    """The mHC controller; see the module docstring for topics, safety and lifecycle."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        from rcl_interfaces.msg import ParameterDescriptor

        for name, (default, description) in PARAMETERS.items():
            self.declare_parameter(name, default, ParameterDescriptor(description=description))
        self.steady = Clock(clock_type=ClockType.STEADY_TIME)
        self.runtime: Any = None
        self.configure_error: str | None = None
        self._handles: list[Any] = []   # subscriptions, services, timers made in on_configure
        self.control_timer: Any = None
        self.visual_timer: Any = None
        if self.get_parameter("autostart").value:
            self.trigger_configure()
            if self.runtime is not None:
                self.trigger_activate()

    # ----------------------------------------------------------------------------------- lifecycle
    def on_configure(self, state: State) -> TransitionCallbackReturn:
        p = {name: self.get_parameter(name).value for name in PARAMETERS}
        problem = parameter_problem(p)
        if problem is None:
            try:
                self.runtime = load_runtime(str(Path(p["checkpoint_path"]).expanduser()), backend=p["backend"],
                                            engine_dir=p["engine_dir"] or None, device=p["device"] or None,
                                            threads=int(p["inference_threads"]),
                                            compile_module=bool(p["torch_compile"]))
                history_length = int(self.runtime.joint_history_length)
                if history_length < 1:
                    raise ValueError(f"runtime joint_history_length {history_length} must be >= 1")
            except ImportError as err:
                problem = f"inference runtime not available for backend '{p['backend']}': {err}"
            except Exception as err:  # RuntimeLoadError and whatever a broken checkpoint raises: one line
                problem = str(err).splitlines()[0] if str(err) else type(err).__name__
        if problem is not None:
            self.configure_error = problem
            self.runtime = None
            self.get_logger().error(f"configure failed: {problem}")
            return TransitionCallbackReturn.FAILURE
        self.configure_error = None
        self.p = p
        self.period = 1.0 / float(p["control_rate_hz"])
        self.joint_names = tuple(p["arm_joint_names"]) + tuple(p["finger_joint_names"])
        self.backend = str(getattr(self.runtime, "backend", p["backend"]))
        # The per-tick arithmetic lives in ControllerCore, shared with RuntimePolicy and ``mhc replay``.
        self.core = ControllerCore(history_length, p)
        self.watchdog = cl.Watchdog(("image", "joint_states"), float(p["stale_timeout_s"]))
        self.inference_latency = cl.LatencyStats()
        self.tick_latency = cl.LatencyStats()
        self.tick_interval = cl.LatencyStats(window=200)
        self.dropped: Counter[str] = Counter()
        self._reset_state()

        self.pub_trajectory = self.create_lifecycle_publisher(JointTrajectory, "/arm_controller/joint_trajectory",
                                                              RELIABLE_QOS)
        self.pub_gripper = self.create_lifecycle_publisher(Float64MultiArray, "/gripper_controller/commands",
                                                           RELIABLE_QOS)
        self.pub_motion = self.create_lifecycle_publisher(MarkerArray, "/mhc/predicted_motion", 10)
        self.pub_plan = self.create_lifecycle_publisher(String, "/mhc/plan", 10)
        self.pub_trace = self.create_lifecycle_publisher(String, TRACE_TOPIC, RELIABLE_QOS)
        self.pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._handles = [
            self.create_subscription(Image, "/camera/image_raw", self._on_image, SENSOR_QOS),
            self.create_subscription(JointState, "/joint_states", self._on_joint_states, RELIABLE_QOS),
            self.create_subscription(String, "/mhc/instruction", self._on_instruction, LATCHED_QOS),
            self.create_service(Trigger, "/mhc/stop", self._on_stop),
            self.create_service(Trigger, "/mhc/resume", self._on_resume),
            self.create_timer(float(p["diagnostics_period_s"]), self.publish_diagnostics, clock=self.steady),
        ]
        self.get_logger().info(f"configured: backend {self.backend}, {p['control_rate_hz']} Hz, "
                               f"joint history {history_length}, smoothing {p['smoothing']}")
        return super().on_configure(state)

    def _reset_state(self) -> None:
        self.image: np.ndarray | None = None
        self.image_stamp: list[int] | None = None   # header stamp [sec, nanosec] of self.image
        self.joints: tuple[np.ndarray, np.ndarray] | None = None
        self.joint_stamp: list[int] | None = None   # header stamp of self.joints
        self.joint_count = 0  # joint states accepted since configure (identifies them, stamped or not)
        # the joint state that must not enter the history: the one measured before the current instruction
        # (it belongs to the previous task) and, in lockstep, the one the last tick already pushed
        self.used_joint_count = 0
        self.instruction: str | None = None
        self.instruction_sha: str | None = None
        self.tick_count = 0                          # control ticks since configure (the trace's "tick")
        self._trace: dict[str, Any] = {}
        self.stopped = False
        self.mode = cl.NO_INSTRUCTION
        self.hold_position: np.ndarray | None = None  # latched when a hold begins; None while the model drives
        self._restart_model = True
        self.last_tick_start: float | None = None
        self.last_output: Any = None
        self.last_fault = ""
        self.commands = 0
        self.holds = 0
        self.core.clear()
        self.watchdog.reset()

    def on_activate(self, state: State) -> TransitionCallbackReturn:
        # The first command after activation starts from the measured state (limiter reset on the first tick).
        self.hold_position = None
        self.mode = cl.NO_INSTRUCTION
        self._restart_model = True
        self.control_timer = self.create_timer(self.period, self._on_tick, clock=self.steady)
        rate = float(self.p["visualization_rate_hz"])
        self.visual_timer = self.create_timer(1.0 / rate, self._publish_visuals, clock=self.steady) if rate else None
        self.get_logger().info("active")
        return super().on_activate(state)

    def on_deactivate(self, state: State) -> TransitionCallbackReturn:
        self._destroy_timers()
        return super().on_deactivate(state)

    def on_cleanup(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_cleanup(state)

    def on_shutdown(self, state: State) -> TransitionCallbackReturn:
        self._release()
        return super().on_shutdown(state)

    def _destroy_timers(self) -> None:
        for timer in (self.control_timer, self.visual_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self.control_timer = self.visual_timer = None

    def _release(self) -> None:
        self._destroy_timers()
        from rclpy.service import Service
        from rclpy.subscription import Subscription

        for handle in self._handles:
            if isinstance(handle, Subscription):
                self.destroy_subscription(handle)
            elif isinstance(handle, Service):
                self.destroy_service(handle)
            else:
                self.destroy_timer(handle)
        self._handles = []
        for name in ("pub_trajectory", "pub_gripper", "pub_motion", "pub_plan", "pub_trace"):
            publisher = getattr(self, name, None)
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
                setattr(self, name, None)
        if getattr(self, "pub_diagnostics", None) is not None:
            self.destroy_publisher(self.pub_diagnostics)
            self.pub_diagnostics = None
        close = getattr(self.runtime, "close", None)
        if callable(close):
            close()
        self.runtime = None

    # -------------------------------------------------------------------------------------- inputs
    def _drop(self, err: cl.InputRejected) -> None:
        self.dropped[err.reason] += 1
        self.last_fault = f"{err.reason}: {err}"
        self.get_logger().warning(f"dropped input ({err.reason}): {err}",
                                  throttle_duration_sec=float(self.p["warn_period_s"]))

    def _now(self) -> float:
        return time.monotonic()

    def _on_image(self, msg: Image) -> None:
        try:
            self.image = conv.image_from_msg(msg)  # RGB (H, W, 3) uint8
        except cl.InputRejected as fault:
            self._drop(fault)
            return
        self.image_stamp = _stamp_pair(msg.header.stamp)
        self.watchdog.feed("image", self._now())

    def _on_joint_states(self, msg: JointState) -> None:
        fault = cl.joint_state_fault(msg.name, msg.position, msg.velocity, self.joint_names)
        if fault is None:
            try:
                positions, velocities = conv.joint_arrays(msg.name, msg.position, msg.velocity, self.joint_names)
            except ValueError as err:
                fault = cl.InputRejected("joint_length", str(err))
            else:
                if not cl.all_finite(positions, velocities):
                    fault = cl.InputRejected("joint_nan", "JointState has NaN/inf positions or velocities")
        if fault is not None:
            self._drop(fault)
            return
        self.joints = (positions, velocities)
        self.joint_stamp = _stamp_pair(msg.header.stamp)
        self.joint_count += 1
        self.watchdog.feed("joint_states", self._now())

    def _on_instruction(self, msg: String) -> None:
        # Any new instruction replaces the current one; a rejected one leaves none (hold): the operator's
        # latest intent is not what the old instruction said.
        self.instruction = self.instruction_sha = None
        fault = cl.instruction_fault(msg.data, int(self.p["max_instruction_bytes"]))
        if fault is None:
            try:
                encoding = self.runtime.encode_instruction(msg.data)
            except Exception as err:  # the runtime's tokeniser refused it: count, never crash
                fault = cl.InputRejected("instruction_rejected", f"instruction refused by the runtime: {err}")
            else:
                words = getattr(encoding, "num_words", None)
                unknown = getattr(encoding, "num_unknown", None)
                if words is not None and unknown is not None and unknown >= words:
                    fault = cl.InputRejected("instruction_unknown_words",
                                             f"no word of instruction {msg.data[:80]!r} is known to the model")
        if fault is not None:
            self._drop(fault)
            return
        self.instruction = msg.data
        self.instruction_sha = instruction_sha(msg.data)
        self.core.clear()  # a new task: joint states from before it are not its history
        self.used_joint_count = self.joint_count  # the new task's history starts at the next joint state
        self._restart_model = True
        self.get_logger().info(f"instruction: '{msg.data}'")
        if self.control_timer is not None:  # active: announce it (a lockstep bridge waits for this)
            self._trace = {}
            self._publish_trace("instruction")

    def _on_stop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self.stopped = True
        if self.control_timer is not None:
            self._trace = {}
            self._hold(cl.STOPPED)
            self._publish_trace("stop")
        response.success, response.message = True, "stopped: holding position until /mhc/resume"
        self.get_logger().warning("stop requested: holding position")
        return response

    def _on_resume(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        was_stopped, self.stopped = self.stopped, False
        response.success = True
        response.message = "resumed" if was_stopped else "was not stopped"
        self.get_logger().info("resume requested")
        return response

    # -------------------------------------------------------------------------------------- control
    def _hold(self, mode: str) -> None:
        """Command the measured arm positions latched when this hold began (the gripper keeps its command)."""
        self.mode = mode
        self._restart_model = True
        if self.hold_position is None:
            if self.joints is None:
                return  # nothing measured yet: nothing safe to command
            self.hold_position = self.joints[0][:7].copy()
        self.holds += 1
        msg = conv.joint_trajectory_msg(self.hold_position, self.period, self._stamp(), self.joint_names[:7])
        self._trace["command_stamp"] = _stamp_pair(msg.header.stamp)
        self.pub_trajectory.publish(msg)

    def _stamp(self) -> float:
        """A command's stamp: now; in lockstep never before the joint state it answers (under sim time the
        /clock message can be handled after a newer joint state, and a stamp from before an episode's reset
        makes the simulation ignore the command). Not on a robot: a driver's clock ahead of ours would
        stamp commands in the future, which trajectory controllers execute late."""
        now = self.get_clock().now().nanoseconds * 1e-9
        if not self.p["lockstep"] or self.joint_stamp is None:
            return now
        return max(now, stamp_seconds(self.joint_stamp))

    def _on_tick(self) -> None:
        start = self._now()
        if self._awaiting_joint_state(start):
            return  # lockstep: no new observation yet; not a tick (no trace, no command, no history)
        if self.last_tick_start is not None:
            self.tick_interval.add(start - self.last_tick_start)
        self.last_tick_start = start
        self._trace = {}
        try:
            self._control(start)
        finally:
            self.tick_latency.add(self._now() - start)
            self._publish_trace("tick")
            self.tick_count += 1

    def _awaiting_joint_state(self, now: float) -> bool:
        """Lockstep only: whether this tick would act on the joint state the last one used (holds still run)."""
        return (bool(self.p["lockstep"]) and self.joints is not None and self.joint_count == self.used_joint_count
                and not self.stopped and not self.watchdog.stale(now))

    def _publish_trace(self, source: str) -> None:
        """``/mhc/controller_tick``: what this tick (``source`` "tick") or a ``/mhc/stop`` hold ("stop") used, or
        an accepted instruction ("instruction": the instruction the next ticks follow, announced at once).

        JSON ``{"tick", "source", "mode", "image_stamp", "joint_state_stamp", "instruction_sha", "history",
        "pushed", "restart", "command_stamp"}``: stamps are ``[sec, nanosec]`` of the header of the image /
        joint state held at that moment and of the arm command published (null when none); ``pushed`` whether
        this tick pushed that joint state into the history (not the state measured before the instruction,
        nor, in lockstep, one already pushed); ``history`` the joint history's fill after it; ``restart``
        whether the core restarted from the measured state on this tick.
        """
        if getattr(self, "pub_trace", None) is None:
            return
        trace = {"tick": self.tick_count, "source": source, "mode": self.mode, "image_stamp": self.image_stamp,
                 "joint_state_stamp": self.joint_stamp, "instruction_sha": self.instruction_sha,
                 "history": len(self.core.history.samples), "pushed": bool(self._trace.get("pushed", False)),
                 "restart": bool(self._trace.get("restart", False)),
                 "command_stamp": self._trace.get("command_stamp")}
        self.pub_trace.publish(String(data=json.dumps(trace)))

    def _control(self, now: float) -> None:
        if self.joints is not None and self.joint_count != self.used_joint_count:
            self.core.push_joints(*self.joints)
            self._trace["pushed"] = True
            if self.p["lockstep"]:
                self.used_joint_count = self.joint_count
        mode = cl.decide_mode(self.stopped, self.watchdog.stale(now), self.instruction is not None)
        if mode == cl.OK and not self.core.history.samples:
            mode = cl.STALE  # a new instruction and no joint state measured since: nothing to act on yet
        if mode != cl.OK:
            self._hold(mode)
            return
        positions = self.joints[0]
        if self._restart_model:  # after activation or a hold: start from the measured state, forget old chunks
            self.core.restart(positions)
            self._restart_model = False
            self._trace["restart"] = True
        begin = self._now()
        try:
            out = self.runtime.step(self.image, "rgb8", self.core.joint_history())
            command = self.core.command(out.action_chunk)
        except cl.InputRejected as err:
            self._invalid_output(err)
            return
        except Exception as err:  # a failing backend must not take the node (and the arm) down
            self._invalid_output(cl.InputRejected("inference_error", f"{type(err).__name__}: {err}"))
            return
        finally:
            latency = self._now() - begin
            self.inference_latency.add(latency)
            if latency > self.period:
                self.get_logger().warning(
                    f"inference took {latency * 1e3:.1f} ms, longer than the control period {self.period * 1e3:.1f} ms",
                    throttle_duration_sec=float(self.p["warn_period_s"]))
        self.last_output = out
        arm, width = command.arm, command.gripper
        self.mode = cl.OK
        self.hold_position = None
        self.commands += 1
        # Gripper first: a simulation in lockstep steps when the arm trajectory arrives.
        self.pub_gripper.publish(conv.gripper_msg(width))
        msg = conv.joint_trajectory_msg(arm, self.period, self._stamp(), self.joint_names[:7])
        self._trace["command_stamp"] = _stamp_pair(msg.header.stamp)
        self.pub_trajectory.publish(msg)

    def _invalid_output(self, err: cl.InputRejected) -> None:
        self.dropped[err.reason] += 1
        self.last_fault = f"{err.reason}: {err}"
        self.get_logger().error(f"model output rejected, holding: {err}",
                                throttle_duration_sec=float(self.p["warn_period_s"]))
        self._hold(cl.NAN)

    # ------------------------------------------------------------------------------------- outputs
    def _publish_visuals(self) -> None:
        out = self.last_output
        if out is None or self.mode != cl.OK:
            return
        paths = cl.motion_paths(getattr(out, "motion", None), getattr(out, "motion_present", None))
        if paths is not None:
            self.pub_motion.publish(self._markers(paths))
        plan = [[str(skill), str(target)] for skill, target in (getattr(out, "plan", None) or [])]
        self.pub_plan.publish(String(data=json.dumps({"plan": plan, "phase": int(getattr(out, "phase", 0))})))

    def _markers(self, paths: cl.MotionPaths) -> MarkerArray:
        stamp = self.get_clock().now().to_msg()
        markers = MarkerArray()
        for slot, name in enumerate(cl.MOTION_SLOTS[: paths.points.shape[1]]):
            marker = Marker(ns=f"{cl.MOTION_MARKER_NAMESPACE}{name}", id=slot, type=Marker.LINE_STRIP)
            marker.header.frame_id, marker.header.stamp = str(self.p["marker_frame_id"]), stamp
            if paths.shown[slot]:
                marker.action = Marker.ADD
                marker.scale.x = 0.005
                r, g, b = cl.MOTION_SLOT_COLOURS[slot]
                marker.color = ColorRGBA(r=r, g=g, b=b, a=1.0)
                marker.pose.orientation.w = 1.0
                marker.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in paths.points[:, slot]]
            else:
                marker.action = Marker.DELETE
            markers.markers.append(marker)
        return markers

    def diagnostic_values(self) -> dict[str, str]:
        """Key/values of the node's ``/diagnostics`` status (latencies in ms)."""
        inf50, inf99 = self.inference_latency.percentiles_ms()
        tick50, tick99 = self.tick_latency.percentiles_ms()
        (interval50,) = self.tick_interval.percentiles_ms((50.0,))
        values = {
            "safety_state": self.mode, "backend": self.backend, "stopped": self.stopped,
            "instruction": self.instruction or "", "control_rate_hz": self.p["control_rate_hz"],
            "tick_rate_hz": f"{1e3 / interval50:.2f}" if interval50 > 0 else "nan",
            "inference_p50_ms": f"{inf50:.2f}", "inference_p99_ms": f"{inf99:.2f}",
            "tick_p50_ms": f"{tick50:.2f}", "tick_p99_ms": f"{tick99:.2f}",
            "commands": self.commands, "holds": self.holds, "dropped_total": sum(self.dropped.values()),
            "last_fault": self.last_fault,
        }
        values.update({f"dropped_{reason}": count for reason, count in sorted(self.dropped.items())})
        return {key: str(value) for key, value in values.items()}

    def publish_diagnostics(self) -> None:
        if self.pub_diagnostics is None:
            return
        level = {cl.OK: DiagnosticStatus.OK, cl.NAN: DiagnosticStatus.ERROR}.get(self.mode, DiagnosticStatus.WARN)
        status = DiagnosticStatus(level=level, name=f"{self.get_name()}: control", hardware_id=self.backend,
                                  message=self.mode,
                                  values=[KeyValue(key=k, value=v) for k, v in self.diagnostic_values().items()])
        msg = DiagnosticArray(status=[status])
        msg.header.stamp = self.get_clock().now().to_msg()
        self.pub_diagnostics.publish(msg)

    def close(self) -> None:
        """Release the runtime and the node's handles."""
        self._release()
        self.destroy_node()


def make_node(**kwargs: Any) -> ControllerNode:
    """The node; with ``autostart`` a failed configure exits the process with status 1 (message logged)."""
    node = ControllerNode(**kwargs)
    if node.get_parameter("autostart").value and node.configure_error is not None:
        node.destroy_node()
        raise SystemExit(1)
    return node


def main(args: list[str] | None = None) -> None:
    """Console script ``mhc_controller``; exits with status 0 on Ctrl-C and SIGTERM (``ros_env.run_node``)."""
    run_node(make_node, args)


if __name__ == "__main__":
    main()
