"""``mhc bringup sim``: the simulated system as separate ROS 2 processes, for machines without ``ros2 launch``.

Starts the nodes of :func:`mhc_ros.system.sim_system` (the same description ``launch/sim.launch.py``
uses) as ``python -m MODULE --ros-args ...`` processes on their own ``ROS_DOMAIN_ID``, localhost
discovery and Fast DDS's ``LARGE_DATA`` transport (no lost camera frames). Episodes are requested on
``/sim/episode_request`` from this process's own node and followed on ``/sim/episode_status``.
Every child is shut down (SIGINT, then SIGTERM, then SIGKILL) on exit, on Ctrl-C, on SIGTERM and
when any child dies unexpectedly (named in the error, exit status 1).

``--task`` takes a comma-separated list (episode i runs ``tasks[i % len(tasks)]`` with seed ``seed + i``).
``--bag DIR`` records the run with ``mhc record`` as one more child (the first episode is requested only once
the recorder subscribes to every topic; SIGINT finalises the bag like the other children); ``--video PATH``
renders the bag afterwards (:mod:`mhc_ros.bag_video`). With ``--policy mhc`` each episode line carries the
controller's inference latency p50/p99 from its ``/diagnostics``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

from mhc_ros.cli_args import UsageError, known_task, non_negative_int, positive_int
from mhc_ros.episode_client import EpisodeClient
from mhc_ros.processes import (
    ChildDied,
    Interrupted,
    ProcessGroup,
    choose_domain_id,
    environment,
    ros_environment,
    signals_recorded,
)
from mhc_ros.system import CONTROLLER_TOPICS, POLICIES, NodeDescription, robot_system, sim_system

STARTUP_TIMEOUT_S = 60.0   # wall time for all nodes to appear on the graph
DEFAULT_EPISODE_TIMEOUT_S = 120.0
LATENCY_WAIT_S = 1.5       # after an episode: wait this long for the controller's next /diagnostics (1 s period)
BAG_FLUSH_S = 0.5          # after the last episode: time for the recorder to receive the last messages

RECORDER = "mhc_recorder"  # the recorder child's name (its log: LOG_DIR/mhc_recorder.log)
# Topics --bag records (docs/contracts.md): what the bridge publishes (no /sim/ee_pose: bags only), the
# controller's commands, the episode requests and statuses, /diagnostics of both nodes ...
BAG_TOPICS = ("/clock", CONTROLLER_TOPICS["image_topic"], CONTROLLER_TOPICS["joint_states_topic"],
              CONTROLLER_TOPICS["instruction_topic"], CONTROLLER_TOPICS["trajectory_topic"],
              CONTROLLER_TOPICS["gripper_topic"], "/sim/object_poses", "/sim/episode_request",
              "/sim/episode_status", "/diagnostics")
# ... and for the mHC controller its predicted motion (MarkerArray), plan and tick trace.
MHC_BAG_TOPICS = ("/mhc/predicted_motion", "/mhc/plan", "/mhc/controller_tick")


def _wait(condition, timeout_s: float, group: ProcessGroup, client: EpisodeClient, stop: list[int]) -> bool:
    """Spin until ``condition()`` is true (True) or ``timeout_s`` passes (False); raise on child death/signal."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stop:
            raise Interrupted(stop[0])
        group.check()
        client.spin_once(0.05)
        if condition():
            return True
    return False


def task_list(text: str | Sequence[str]) -> list[str]:
    """Tasks of ``text`` (``"reach"``, ``"reach,push"`` or a sequence of names), each checked like ``--task``.

    Raises ``argparse.ArgumentTypeError`` naming an unknown or empty entry.
    """
    names = text.split(",") if isinstance(text, str) else list(text)
    names = [str(name).strip() for name in names]
    if not names or any(not name for name in names):
        raise argparse.ArgumentTypeError(f"task list '{text if isinstance(text, str) else ','.join(names)}' "
                                         "has an empty entry (expected NAME[,NAME...])")
    return [known_task(name) for name in names]


def prepare_bag_dir(path: str | Path) -> Path:
    """``path`` ready for a new bag: absent (its parent created) or an empty folder (removed, since the recorder
    never writes into an existing one). Raises :class:`UsageError` naming an existing non-empty ``path``."""
    path = Path(path)
    if path.exists() or path.is_symlink():
        if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
            raise UsageError(f"--bag '{path}' already exists and is not an empty folder (a bag is never overwritten)")
        path.rmdir()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"--bag '{path}': cannot create its folder ({err.strerror or err})") from None
    return path


def recorder_command(bag: Path, topics: Sequence[str]) -> list[str]:
    """``mhc record`` of ``topics`` into ``bag`` (every topic required: it waits for the nodes to come up)."""
    return [sys.executable, "-m", "mhc_ros.cli", "record", "--out", str(bag), "--wait", f"{STARTUP_TIMEOUT_S:g}",
            "--topics", *topics]


def bringup_sim(policy: str = "expert", task: str | Sequence[str] = "reach", episodes: int = 1, seed: int = 0,
                timeout_s: float = DEFAULT_EPISODE_TIMEOUT_S, realtime_factor: float = 1.0,
                image_width: int = 96, image_height: int = 96, domain_id: int | None = None,
                log_dir: Path | None = None, out: TextIO = sys.stdout, checkpoint_path: str | None = None,
                backend: str = "onnxruntime", bag: str | Path | None = None,
                video: str | Path | None = None,
                instructions: Sequence[str | None] | None = None) -> dict[str, Any]:
    """Run ``episodes`` episodes (seeds ``seed``, ``seed + 1``, ...) across processes.

    ``task``: one task, a comma-separated list or a sequence; episode i runs ``tasks[i % len(tasks)]``.
    ``instructions``: per episode, an instruction replacing the episode's own (None keeps it).
    ``bag``: record the run into this new rosbag2 folder (:data:`BAG_TOPICS`, plus :data:`MHC_BAG_TOPICS` for
    the mHC controller); ``video``: afterwards render that bag (a temporary one without ``bag``) as a GIF.
    Prints one line per episode (with the controller's inference latency p50/p99 for policy ``mhc``) and a
    summary to ``out``; returns ``{"policy", "task", "tasks", "domain_id", "episodes": [per-episode dicts],
    "successes", "success_rate", "wall_s", "exit_codes", "pids", "error", "interrupted", "log_dir", "bag",
    "bag_topics", "video", "video_frames"}``. ``timeout_s`` is each episode's wall-time limit (s).
    Raises :class:`UsageError` for an unknown task or an existing non-empty ``bag`` before starting anything.
    """
    try:
        tasks = task_list(task)
    except argparse.ArgumentTypeError as err:
        raise UsageError(str(err)) from None
    if instructions is not None and len(instructions) != episodes:
        raise UsageError(f"{len(instructions)} instructions given for {episodes} episodes")
    task_text = task if isinstance(task, str) else ",".join(tasks)
    nodes = bringup_nodes(policy, tasks[0], seed, realtime_factor, image_width, image_height, checkpoint_path,
                          backend)
    temp_bag = None
    if bag is not None:
        bag_dir: Path | None = prepare_bag_dir(bag)
    elif video is not None:
        temp_bag = Path(tempfile.mkdtemp(prefix="mhc_bringup_bag_"))
        bag_dir = temp_bag / "bag"
    else:
        bag_dir = None
    bag_topics = (*BAG_TOPICS, *(MHC_BAG_TOPICS if policy == "mhc" else ())) if bag_dir is not None else ()
    domain_id = choose_domain_id(domain_id)
    env = ros_environment(domain_id)
    keep_logs = log_dir is not None
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="mhc_bringup_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"policy": policy, "task": task_text, "tasks": tasks, "domain_id": domain_id,
                              "episodes": [], "error": None, "interrupted": None, "log_dir": str(log_dir),
                              "bag": None, "bag_topics": None, "video": None, "video_frames": None}
    start = time.monotonic()
    group = ProcessGroup(log_dir, env)
    client: EpisodeClient | None = None
    stop: list[int] = []
    names = [n.name for n in nodes] + ([RECORDER] if bag_dir is not None else [])
    try:
        with signals_recorded(stop), environment(env):
            for node in nodes:
                group.start(node)
            if bag_dir is not None:
                group.start_command(RECORDER, recorder_command(bag_dir, bag_topics))
            client = EpisodeClient(domain_id, status_readers=2 if policy == "expert" else 1,
                                   recorded_topics=bag_topics)
            if not _wait(client.ready, STARTUP_TIMEOUT_S, group, client, stop):
                raise ChildDied(f"nodes {names} not connected after {STARTUP_TIMEOUT_S:.0f} s (logs in {log_dir})")
            for index in range(episodes):
                episode_task = tasks[index % len(tasks)]
                instruction = instructions[index] if instructions is not None else None
                episode = _run_episode(client, group, stop, episode_task, seed + index, timeout_s,
                                       latency=policy == "mhc", instruction=instruction)
                result["episodes"].append(episode)
                print(episode_line(index, episodes, episode), file=out, flush=True)
            if bag_dir is not None:  # let the recorder receive the last messages before it is stopped
                _wait(lambda: False, BAG_FLUSH_S, group, client, stop)
    except ChildDied as err:
        result["error"] = str(err)
    except Interrupted as err:
        result["interrupted"] = err.signum
    finally:
        if client is not None:
            client.close()
        result["exit_codes"] = group.shutdown()
        result["pids"] = {name: process.pid for name, process in group.processes.items()}
    try:
        bad_exits = {name: code for name, code in result["exit_codes"].items() if code != 0}
        if bad_exits and result["error"] is None and result["interrupted"] is None:
            result["error"] = f"nodes exited with non-zero status on shutdown: {bad_exits} (logs in {log_dir})"
        successes = sum(e["success"] for e in result["episodes"])
        result.update(successes=successes, success_rate=successes / episodes if episodes else 0.0,
                      wall_s=time.monotonic() - start)
        print(f"{successes}/{episodes} episodes succeeded ({task_text}, policy {policy}) in {result['wall_s']:.1f} s "
              f"across {len(nodes)} processes (ROS_DOMAIN_ID={domain_id})", file=out, flush=True)
        if bag_dir is not None:
            _finish_bag(result, bag_dir, group, out, keep=temp_bag is None)
            if video is not None and result["interrupted"] is None and result["bag_topics"] is not None:
                _render_video(result, bag_dir, Path(video), out)
    finally:
        if temp_bag is not None:
            shutil.rmtree(temp_bag, ignore_errors=True)
    if result["error"] is None and result["interrupted"] is None and not keep_logs:
        shutil.rmtree(log_dir, ignore_errors=True)
        result["log_dir"] = None
    return result


def episode_line(index: int, episodes: int, episode: dict[str, Any]) -> str:
    """``episode 2/4 push seed=7: success steps=.. rejected=.. wall=..s [latency p50=..ms p99=..ms]``."""
    outcome = "success" if episode["success"] else \
        ("timeout" if episode["timed_out"] else f"failure ({episode['failure'] or 'max_steps'})")
    line = (f"episode {index + 1}/{episodes} {episode['task']} seed={episode['seed']}: {outcome} "
            f"steps={episode['steps']} rejected={episode['rejected_commands']} wall={episode['wall_s']:.1f}s")
    if episode.get("latency_p50_ms") is not None:
        line += f" latency p50={episode['latency_p50_ms']:.1f}ms p99={episode['latency_p99_ms']:.1f}ms"
    elif "latency_p50_ms" in episode:  # the mHC controller reported no inference yet
        line += " latency n/a"
    return line


def _finish_bag(result: dict[str, Any], bag_dir: Path, group: ProcessGroup, out: TextIO, keep: bool) -> None:
    """After shutdown: the recorder's bag must be complete (metadata written); its topics and counts into ``result``."""
    from mhc_ros.bags import bag_summary

    try:
        summary = bag_summary(bag_dir) if (bag_dir / "metadata.yaml").is_file() else None
    except Exception as err:  # an unreadable bag is this run's error, not a crash
        summary, reason = None, f"unreadable ({type(err).__name__}: {err})"
    else:
        reason = "not written"
    if summary is None:
        if result["error"] is None and result["interrupted"] is None:
            result["error"] = (f"bag '{bag_dir}' {reason}; last lines of {group.log_dir / (RECORDER + '.log')}:\n"
                               f"{group.tail(RECORDER)}")
        return
    result["bag_topics"] = {topic: info["count"] for topic, info in summary.items()}
    total = sum(result["bag_topics"].values())
    if keep:
        result["bag"] = str(bag_dir)
        print(f"bag: {bag_dir} ({total} messages on {len(summary)} topics)", file=out, flush=True)


def _render_video(result: dict[str, Any], bag_dir: Path, video: Path, out: TextIO) -> None:
    """Render ``bag_dir`` to the GIF ``video``; a failure becomes the run's error."""
    from mhc_ros.bag_import import BagError
    from mhc_ros.bag_video import render_bag

    try:
        rendered = render_bag(bag_dir, video)
    except (BagError, OSError, ValueError) as err:
        if result["error"] is None:
            result["error"] = f"video '{video}' not written: {err}"
        return
    result["video"], result["video_frames"] = str(rendered["path"]), rendered["frames"]
    print(f"video: {rendered['path']} ({rendered['frames']} frames, {rendered['motion_frames']} with predicted "
          "motion)", file=out, flush=True)


def bringup_nodes(policy: str, task: str, seed: int, realtime_factor: float, image_width: int,
                  image_height: int, checkpoint_path: str | None = None,
                  backend: str = "onnxruntime") -> list[NodeDescription]:
    """The node list bringup starts: ``sim_system`` without the bridge's own first episode (bringup requests each)."""
    return sim_system(policy=policy, task=task, seed=seed, image_width=image_width, image_height=image_height,
                      realtime_factor=realtime_factor, auto_start=False, checkpoint_path=checkpoint_path,
                      backend=backend)


def _run_episode(client: EpisodeClient, group: ProcessGroup, stop: list[int], task: str, seed: int,
                 timeout_s: float, latency: bool = False, instruction: str | None = None) -> dict[str, Any]:
    """One requested episode. ``latency``: add the controller's inference p50/p99 (ms) as its next
    ``/diagnostics`` after the episode reports them (a rolling window of its last 1000 inferences), and how
    many of its ticks acted on an already used joint state or held the arm (``EpisodeClient``)."""
    start = time.monotonic()
    request_id = client.request(task, seed, instruction)

    def finished() -> bool:
        status = client.status
        return status is not None and status.get("request_id") == request_id and status["done"]

    completed = _wait(finished, timeout_s, group, client, stop)
    status = client.status if client.status and client.status.get("request_id") == request_id else {}
    episode = {"task": task, "seed": seed, "success": bool(completed and status.get("success")),
               "timed_out": not completed, "steps": status.get("step", 0), "failure": status.get("failure"),
               "rejected_commands": status.get("rejected_commands", 0), "episode_id": status.get("episode_id"),
               "stale_commands": status.get("stale_commands", 0),
               "uncommanded_steps": status.get("uncommanded_steps", 0),
               "wall_s": time.monotonic() - start}
    if latency:
        ended = time.monotonic()
        _wait(lambda: client.latency_time >= ended, LATENCY_WAIT_S, group, client, stop)
        p50, p99 = client.latency if client.latency is not None else (None, None)
        start_time = status.get("start_time", 0.0)
        episode.update(latency_p50_ms=p50, latency_p99_ms=p99,
                       ticks_on_old_joint_state=client.ticks_on_old_joint_state(start_time),
                       hold_ticks=client.hold_ticks(start_time),
                       ticks_on_other_image=client.ticks_on_other_image(start_time))
    return episode


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``mhc bringup sim``."""
    parser.add_argument("--policy", default="expert",
                        help="controller: 'expert' (scripted expert) or 'mhc' (mhc_controller with --checkpoint)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="mHC checkpoint for --policy mhc")
    parser.add_argument("--backend", default="onnxruntime",
                        help="inference backend of the mhc_controller (auto, torch, onnxruntime, tensorrt)")
    parser.add_argument("--task", type=task_list, default="reach",
                        help="task of every episode, or a comma-separated list run in turn: episode i runs task "
                             "i mod N (default reach)")
    parser.add_argument("--episodes", type=positive_int, default=1, help="number of episodes (default 1)")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the first episode (default 0)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_EPISODE_TIMEOUT_S,
                        help=f"wall-time limit of one episode, s (default {DEFAULT_EPISODE_TIMEOUT_S:.0f})")
    parser.add_argument("--realtime-factor", type=float, default=1.0,
                        help="simulation speed vs wall clock; 0 = as fast as the controller answers (default 1)")
    parser.add_argument("--image-width", type=positive_int, default=96, help="camera width, pixels (default 96)")
    parser.add_argument("--image-height", type=positive_int, default=96, help="camera height, pixels (default 96)")
    parser.add_argument("--domain-id", type=non_negative_int, default=None,
                        help="ROS_DOMAIN_ID (default: $ROS_DOMAIN_ID, else random in 1..101)")
    parser.add_argument("--log-dir", type=Path, default=None,
                        help="keep each node's log here (default: a temporary folder, kept only on error)")
    parser.add_argument("--json", type=Path, default=None, help="also write the result dict as JSON here")
    parser.add_argument("--allow-failures", action="store_true",
                        help="exit 0 when the run completed even if episodes failed (a demo); errors still exit 1")
    parser.add_argument("--bag", type=Path, default=None,
                        help="record the run into this new rosbag2 folder (camera, joint states, commands, "
                             "episode status, /diagnostics and the mHC controller's predicted motion, plan, trace)")
    parser.add_argument("--video", type=Path, default=None,
                        help="afterwards render the run's camera frames with the predicted motion as this GIF "
                             "(from --bag, else from a temporary bag)")


def run(args: argparse.Namespace) -> int:
    """``mhc bringup sim``: 0 when every episode succeeded, 1 otherwise, 2 on bad input, 128+N on signal N."""
    if args.policy not in POLICIES:
        raise UsageError(f"policy '{args.policy}' not available (expected one of {', '.join(POLICIES)})")
    if args.policy == "mhc" and (args.checkpoint is None or not args.checkpoint.exists()):
        raise UsageError(f"--policy mhc needs an existing --checkpoint (got '{args.checkpoint}')")
    for name in ("timeout", "realtime_factor"):
        value = getattr(args, name)
        if not value >= 0.0 or value == float("inf") or (name == "timeout" and value == 0.0):
            raise UsageError(f"--{name.replace('_', '-')} {value} must be a finite number "
                             f"{'> 0' if name == 'timeout' else '>= 0'}")
    if args.domain_id is not None and args.domain_id > 232:
        raise UsageError(f"--domain-id {args.domain_id} out of range (0..232)")
    if args.video is not None and args.video.suffix.lower() != ".gif":
        raise UsageError(f"--video '{args.video}' must name a .gif file")
    result = bringup_sim(policy=args.policy, task=args.task, episodes=args.episodes, seed=args.seed,
                         timeout_s=args.timeout, realtime_factor=args.realtime_factor,
                         image_width=args.image_width, image_height=args.image_height,
                         domain_id=args.domain_id, log_dir=args.log_dir,
                         checkpoint_path=None if args.checkpoint is None else str(args.checkpoint.resolve()),
                         backend=args.backend, bag=args.bag, video=args.video)
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))
    if result["interrupted"] is not None:
        print(f"mhc bringup sim: interrupted by {signal.Signals(result['interrupted']).name}; all nodes stopped",
              file=sys.stderr)
        return 128 + int(result["interrupted"])
    if result["error"] is not None:
        print(f"mhc bringup sim: error: {result['error']}", file=sys.stderr)
        return 1
    return 0 if result["successes"] == args.episodes or args.allow_failures else 1


# ------------------------------------------------------------------------------------ bringup robot


def bringup_robot(checkpoint_path: str | None = None, backend: str | None = None, engine_dir: str | None = None,
                  control_rate_hz: float | None = None, params_file: str | None = None,
                  topics: dict[str, str] | None = None, domain_id: int | None = None,
                  log_dir: Path | None = None, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the nodes of :func:`mhc_ros.system.robot_system` as processes until SIGINT/SIGTERM or a child dies.

    The robot's own drivers are on the same ``ROS_DOMAIN_ID`` (default ``$ROS_DOMAIN_ID``) and network, so
    unlike ``bringup sim`` discovery is not limited to localhost. Returns ``{"domain_id", "error",
    "interrupted", "exit_codes", "pids", "log_dir", "wall_s"}``.
    """
    nodes = robot_system(checkpoint_path=checkpoint_path, backend=backend, engine_dir=engine_dir,
                         control_rate_hz=control_rate_hz, params_file=params_file, topics=topics)
    domain_id = choose_domain_id(domain_id)
    env = {"ROS_DOMAIN_ID": str(domain_id), "FASTDDS_BUILTIN_TRANSPORTS": "LARGE_DATA", "PYTHONUNBUFFERED": "1"}
    log_dir = Path(log_dir) if log_dir is not None else Path(tempfile.mkdtemp(prefix="mhc_bringup_robot_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"domain_id": domain_id, "error": None, "interrupted": None, "log_dir": str(log_dir)}
    start = time.monotonic()
    group = ProcessGroup(log_dir, env)
    stop: list[int] = []
    try:
        with signals_recorded(stop):
            for node in nodes:
                group.start(node)
            print(f"started {', '.join(n.name for n in nodes)} (ROS_DOMAIN_ID={domain_id}, logs in {log_dir}); "
                  "Ctrl-C stops", file=out, flush=True)
            while not stop:
                group.check()
                time.sleep(0.1)
            result["interrupted"] = stop[0]
    except ChildDied as err:
        result["error"] = str(err)
    finally:
        result["exit_codes"] = group.shutdown()
        result["pids"] = {name: process.pid for name, process in group.processes.items()}
    bad_exits = {name: code for name, code in result["exit_codes"].items() if code != 0}
    if bad_exits and result["error"] is None:
        result["error"] = f"nodes exited with non-zero status on shutdown: {bad_exits} (logs in {log_dir})"
    result["wall_s"] = time.monotonic() - start
    return result


def configure_robot_parser(parser: argparse.ArgumentParser) -> None:
    """Options of ``mhc bringup robot``."""
    parser.add_argument("--checkpoint", default=None, help="mHC checkpoint (parameter checkpoint_path)")
    parser.add_argument("--backend", default=None, choices=("auto", "torch", "onnxruntime", "tensorrt"),
                        help="inference backend (default: the params file's, else auto)")
    parser.add_argument("--engine-dir", default=None, help="folder of ONNX models / TensorRT engines")
    parser.add_argument("--control-rate", type=float, default=None, help="control rate, Hz (default 20)")
    parser.add_argument("--params-file", default=None, help="controller parameters YAML (config/controller.yaml)")
    for name, default in CONTROLLER_TOPICS.items():
        parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                            help=f"remap {default} to this topic")
    parser.add_argument("--domain-id", type=non_negative_int, default=None,
                        help="ROS_DOMAIN_ID of the robot (default: $ROS_DOMAIN_ID, else random in 1..101)")
    parser.add_argument("--log-dir", type=Path, default=None, help="each node's log (default: a temporary folder)")


def run_robot(args: argparse.Namespace) -> int:
    """``mhc bringup robot``: 0 after a clean shutdown on Ctrl-C/SIGTERM, 1 when a node died, 2 on bad input."""
    if args.control_rate is not None and not 0.0 < args.control_rate < float("inf"):
        raise UsageError(f"--control-rate {args.control_rate} must be a finite number > 0")
    if args.params_file is not None and not Path(args.params_file).is_file():
        raise UsageError(f"--params-file '{args.params_file}' does not exist")
    if args.domain_id is not None and args.domain_id > 232:
        raise UsageError(f"--domain-id {args.domain_id} out of range (0..232)")
    topics = {name: getattr(args, name) for name in CONTROLLER_TOPICS if getattr(args, name)}
    result = bringup_robot(checkpoint_path=args.checkpoint, backend=args.backend, engine_dir=args.engine_dir,
                           control_rate_hz=args.control_rate,
                           params_file=str(Path(args.params_file).resolve()) if args.params_file else None,
                           topics=topics, domain_id=args.domain_id, log_dir=args.log_dir)
    if result["error"] is not None:
        print(f"mhc bringup robot: error: {result['error']}", file=sys.stderr)
        return 1
    print(f"mhc bringup robot: stopped by {signal.Signals(result['interrupted']).name}; all nodes exited cleanly",
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m mhc_ros.bringup [sim] --task T ...`` (as ``mhc bringup sim``) or ``... robot --checkpoint C ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["robot"]:
        parser = argparse.ArgumentParser(prog="mhc bringup robot", description=bringup_robot.__doc__.splitlines()[0])
        configure_robot_parser(parser)
        try:
            return run_robot(parser.parse_args(argv[1:]))
        except UsageError as err:
            print(f"mhc bringup robot: error: {err}", file=sys.stderr)
            return 2
    if argv[:1] == ["sim"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="mhc bringup sim", description=__doc__.splitlines()[0])
    configure_parser(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except UsageError as err:
        print(f"mhc bringup sim: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
