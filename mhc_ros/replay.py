"""``mhc replay``: a recorded bag as a regression test of the controller, or played back on a live graph.

Check mode (default): the bag's recorded inputs — camera image, joint states, instruction — are fed
through the ``mhc_controller``'s own per-tick core (:class:`mhc_ros.controller_core.ControllerCore`)
with the inference runtime of ``--checkpoint``, deterministically: no wall clock, one tick per
recorded arm command (its bag time). When the bag holds the node's tick trace (``/mhc/controller_tick``,
see :func:`read_trace`) each tick uses exactly the image, joint state and instruction the node used and
holds where the node held; without it (e.g. the golden bags, written by the core itself) each tick sees
the latest image, joint state and instruction recorded at or before it. The commands produced are compared
with the golden ones — ``BAG.expected.json`` beside the bag when it exists (``--update`` writes it),
else the commands recorded in the bag — joint by joint (max/mean |deviation|, first time beyond
``--tolerance``). Exit 0 within tolerance, 1 on a regression, 2 on bad input (nothing written).

Play mode (``--play``): republish every recorded message on its topic, with the recorded QoS and
timing scaled by ``--rate``, like ``ros2 bag play``.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mhc_ros import control_logic as cl
from mhc_ros.bag_import import JOINT_NAMES, BagError, Streams, latest_before, parse_topic_map, read_streams
from mhc_ros.cli_args import UsageError, controller_parameters
from mhc_ros.controller_core import CORE_DEFAULTS, ControllerCore
from mhc_ros.system import TRACE_TOPIC, instruction_sha

EXPECTED_SUFFIX = ".expected.json"
DEFAULT_TOLERANCE = 1e-3  # rad (arm) and m (gripper)
COMMAND_NAMES = (*JOINT_NAMES[:7], "gripper")


def expected_path(bag: Path) -> Path:
    """Where the golden commands of ``bag`` live: ``<bag directory>.expected.json`` beside it."""
    bag = Path(bag)
    return bag.parent / f"{bag.name}{EXPECTED_SUFFIX}"


@dataclass
class Commands:
    """Commands per tick: ``times_s (T,)`` from the first tick, ``arm (T, 7)`` rad, ``gripper (T,)`` m (NaN = none)."""

    times_s: np.ndarray
    arm: np.ndarray
    gripper: np.ndarray

    def to_json(self) -> dict:
        return {"times_s": self.times_s.tolist(), "arm": self.arm.tolist(),
                "gripper": [None if np.isnan(g) else float(g) for g in self.gripper]}

    @classmethod
    def from_json(cls, data: Mapping) -> Commands:
        return cls(np.asarray(data["times_s"], float), np.asarray(data["arm"], float).reshape(-1, 7),
                   np.array([np.nan if g is None else g for g in data["gripper"]], float))


def recorded_commands(streams: Streams) -> Commands:
    """The arm commands of the bag and, per arm command, the gripper command published just before it."""
    ticks = np.array([t for t, _ in streams.trajectory], dtype=np.int64)
    gripper = np.full(len(ticks), np.nan)
    previous = -1
    for k, i in enumerate(latest_before(streams.gripper, ticks)):
        if i > previous:  # a gripper command since the last tick: the node sends it right before the arm's
            gripper[k] = streams.gripper[i][1]
        previous = max(previous, i)
    return Commands((ticks - ticks[0]) * 1e-9, np.stack([a for _, a in streams.trajectory]), gripper)


def recorded_holds(streams: Streams) -> np.ndarray:
    """``(T,)`` bool: recorded ticks on which the node held (an arm command without a gripper command before it).

    The node's hold decisions depend on wall-clock freshness (its watchdog) and on ``/mhc/stop``, which a
    bag does not carry; the recorded commands show them, so replay holds on the same ticks. A bag without
    a gripper topic has no such marks (no holds taken from it).
    """
    if not streams.gripper:
        return np.zeros(len(streams.trajectory), bool)
    return np.isnan(recorded_commands(streams).gripper)


def run_controller(streams: Streams, runtime: Any, parameters: Mapping[str, Any],
                   holds: np.ndarray | None = None) -> Commands:
    """What the node commands at each recorded tick, from the recorded inputs only (no clock).

    A tick marked in ``holds`` (see :func:`recorded_holds`) or without an image, a joint state or an
    instruction yet holds: it commands the measured arm positions latched when the hold began (no gripper
    command), as the node does; the next model tick restarts the core from the measured state. A new
    instruction restarts the core too.
    """
    ticks = np.array([t for t, _ in streams.trajectory], dtype=np.int64)
    holds = np.zeros(len(ticks), bool) if holds is None else holds
    core = ControllerCore(int(runtime.joint_history_length), parameters)
    image_i = list(latest_before(streams.image, ticks))
    joint_i = list(latest_before(streams.joints, ticks))
    instruction_i = list(latest_before(streams.instruction, ticks)) if streams.instruction else [-1] * len(ticks)
    arm, gripper = np.zeros((len(ticks), 7)), np.full(len(ticks), np.nan)
    encoded, restart, hold = -1, True, None
    for k in range(len(ticks)):
        joints = streams.joints[joint_i[k]][1] if joint_i[k] >= 0 else None
        if joints is not None:
            core.push_joints(*joints)
        if instruction_i[k] != encoded and instruction_i[k] >= 0:
            runtime.encode_instruction(streams.instruction[instruction_i[k]][1])
            encoded, restart = instruction_i[k], True
        if joints is None or image_i[k] < 0 or encoded < 0 or holds[k]:
            restart = True
            if hold is None and joints is not None:
                hold = joints[0][:7].copy()
            arm[k] = np.nan if hold is None else hold
            continue
        if restart:
            core.restart(joints[0])
            restart, hold = False, None
        out = runtime.step(streams.image[image_i[k]][1], "rgb8", core.joint_history())
        command = core.command(out.action_chunk)
        arm[k], gripper[k] = command.arm, command.gripper
    return Commands((ticks - ticks[0]) * 1e-9, arm, gripper)


@dataclass
class Trace:
    """The node's tick trace of a bag, with the header stamps that tie it to the recorded messages.

    ``entries``: the ``/mhc/controller_tick`` JSON objects in recorded order; ``image`` / ``joints``:
    header stamp ``(sec, nanosec)`` → index into ``Streams.image`` / ``Streams.joints``; ``command``:
    header stamp of each recorded arm command (``Streams.trajectory`` order).
    """

    entries: list[dict]
    image: dict[tuple[int, int], int]
    joints: dict[tuple[int, int], int]
    command: list[tuple[int, int]]


def _stamp_key(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def read_trace(bag: Path, streams: Streams) -> Trace | None:
    """The ``/mhc/controller_tick`` trace of ``bag`` (published by the ``mhc_controller`` every tick), or None.

    Raises :class:`BagError` for a trace message that is not the node's JSON.
    """
    from rosbags.rosbag2 import Reader

    from mhc_ros.bags import TYPESTORE

    keys = {streams.topics["image"]: "image", streams.topics["joints"]: "joints",
            streams.topics["trajectory"]: "command", TRACE_TOPIC: "trace"}
    found: dict[str, list[tuple[int, Any]]] = {key: [] for key in keys.values()}
    try:
        with Reader(bag) as reader:
            connections = [c for c in reader.connections if c.topic in keys]
            if not any(c.topic == TRACE_TOPIC and c.msgtype == "std_msgs/msg/String" for c in connections):
                return None
            for conn, t_ns, raw in reader.messages(connections=connections):
                msg = TYPESTORE.deserialize_cdr(raw, conn.msgtype)
                key = keys[conn.topic]
                value = json.loads(msg.data) if key == "trace" else (msg.header.stamp.sec, msg.header.stamp.nanosec)
                found[key].append((int(t_ns), value))
    except ValueError as err:
        raise BagError(f"'{TRACE_TOPIC}' in bag '{bag}' is not the controller's JSON trace: {err}") from None
    for items in found.values():
        items.sort(key=lambda item: item[0])  # the order of read_streams (same stable sort)
    entries = [entry for _, entry in found["trace"]]
    if any(not isinstance(e, dict) or "mode" not in e or "tick" not in e for e in entries):
        raise BagError(f"'{TRACE_TOPIC}' in bag '{bag}' is not the controller's JSON trace")
    return Trace(entries=entries,
                 image={stamp: i for i, (_, stamp) in enumerate(found["image"])},
                 joints={stamp: i for i, (_, stamp) in enumerate(found["joints"])},
                 command=[stamp for _, stamp in found["command"]])


def run_traced(streams: Streams, trace: Trace, runtime: Any,
               parameters: Mapping[str, Any]) -> tuple[Commands, np.ndarray, np.ndarray]:
    """Replay the node's ticks as its trace records them; returns ``(commands, verified, model_tick)``.

    Each traced tick pushes the joint state it names into the history (after clearing the core where the
    trace shows the node did, for a new instruction), encodes the instruction it names,
    and — where the node drove (mode ``ok``) — runs the runtime on the image it names; elsewhere it holds
    as the node did. Its command lands on the recorded arm command with the same header stamp. Ticks are
    compared (``verified``) from the first restart of the core once the joint history is fully known
    (the trace starts at the node's first push, or ``joint_history_length`` pushes were traced);
    ``model_tick``: recorded commands the model produced (a gripper command came with them).
    Raises :class:`BagError` when a followed tick names an input the bag lacks.
    """
    ticks = np.array([t for t, _ in streams.trajectory], dtype=np.int64)
    length = int(runtime.joint_history_length)
    core = ControllerCore(length, parameters)
    # recorded arm commands by header stamp, in order: under sim time several commands can share a stamp
    # (holds while the simulation waits), so each traced command takes the next one with its stamp
    command_index: dict[tuple[int, int], deque[int]] = defaultdict(deque)
    for k, stamp in enumerate(trace.command):
        command_index[stamp].append(k)
    instructions = {instruction_sha(text): text for _, text in streams.instruction}
    arm, gripper = np.full((len(ticks), 7), np.nan), np.full(len(ticks), np.nan)
    verified, model_tick = np.zeros(len(ticks), bool), np.zeros(len(ticks), bool)
    pushes, history_known, synced, encoded, hold, previous_tick = 0, False, False, None, None, None
    for entry in trace.entries:
        tick, source = entry["tick"], entry.get("source", "tick")
        if source == "instruction":
            continue  # an announcement, not a tick: the next tick names the instruction it follows
        where = f"tick {tick} of '{TRACE_TOPIC}' in bag '{streams.path}'"
        if source == "tick":
            if previous_tick is not None and tick != previous_tick + 1:
                if synced:
                    raise BagError(f"{where}: ticks {previous_tick + 1}..{tick - 1} missing from the trace")
                pushes, history_known = 0, False
            previous_tick = tick
        joint_stamp = _stamp_key(entry.get("joint_state_stamp"))
        joints = None
        if joint_stamp is not None:
            j = trace.joints.get(joint_stamp)
            if j is None:
                if synced:
                    raise BagError(f"{where}: joint state stamped {joint_stamp} is not in the bag")
                pushes, history_known = 0, False
            else:
                joints = streams.joints[j][1]
                if source == "tick" and entry.get("pushed", True):  # traces before "pushed" pushed every tick
                    if entry.get("history") == 1 and core.history.samples:
                        # the node cleared its core for a new instruction before this tick; only the history
                        # matters here (chunks and tick restart on its next model tick anyway), and clearing
                        # just it stays exact when the history holds one sample and fills to 1 every tick
                        core.history.clear()
                        pushes = 0
                    core.push_joints(*joints)
                    pushes += 1
                    history_known = history_known or pushes >= length or entry.get("history") == pushes
        sha = entry.get("instruction_sha")
        if sha is not None and sha != encoded and sha in instructions:
            runtime.encode_instruction(instructions[sha])
            encoded = sha
        queue = command_index.get(_stamp_key(entry.get("command_stamp")) or (-1, -1))
        k = queue.popleft() if queue else None
        if entry["mode"] != "ok":
            if hold is None and joints is not None:
                hold = joints[0][:7].copy()
            if synced and k is not None:
                arm[k], verified[k] = (np.nan if hold is None else hold), True
            continue
        hold = None
        synced = synced or (bool(entry.get("restart")) and history_known and joints is not None)
        if not synced:
            continue
        if sha != encoded:
            raise BagError(f"{where}: instruction {sha} is not in the bag")
        i = trace.image.get(_stamp_key(entry.get("image_stamp")) or (-1, -1))
        if i is None:
            raise BagError(f"{where}: image stamped {entry.get('image_stamp')} is not in the bag")
        if entry.get("restart"):
            core.restart(joints[0])
        out = runtime.step(streams.image[i][1], "rgb8", core.joint_history())
        try:
            command = core.command(out.action_chunk)
        except cl.InputRejected:
            command = None  # the node drove on this tick: a rejected chunk here is a regression (NaN vs command)
        if k is not None:
            verified[k] = model_tick[k] = True
            if command is not None:
                arm[k], gripper[k] = command.arm, command.gripper
    return Commands((ticks - ticks[0]) * 1e-9, arm, gripper), verified, model_tick


def traced_commands(streams: Streams, model_tick: np.ndarray, period_s: float) -> Commands:
    """The recorded commands of a traced bag: each model tick's gripper command is the one received nearest
    its arm command (within half a control period; the recorder may receive the two in either order)."""
    recorded = recorded_commands(streams)
    ticks = np.array([t for t, _ in streams.trajectory], dtype=np.int64)
    stamps = np.array([t for t, _ in streams.gripper], dtype=np.int64)
    gripper = np.full(len(ticks), np.nan)
    if len(stamps):
        for k in np.flatnonzero(model_tick):
            n = int(np.argmin(np.abs(stamps - ticks[k])))
            if abs(int(stamps[n]) - int(ticks[k])) * 1e-9 < period_s / 2:
                gripper[k] = streams.gripper[n][1]
    return Commands(recorded.times_s, recorded.arm, gripper)


def compare(produced: Commands, expected: Commands, tolerance: float, verified: np.ndarray | None = None) -> dict:
    """Per-command deviations: ``{name: {max_abs, mean_abs, first_divergence_s}}`` + ``passed``.

    ``verified (T,)`` bool: the ticks to compare (default all); the others are counted as ``skipped``.
    """
    if len(produced.arm) != len(expected.arm):
        return {"passed": False, "ticks": len(produced.arm),
                "error": f"{len(produced.arm)} ticks produced, {len(expected.arm)} expected"}
    verified = np.ones(len(produced.arm), bool) if verified is None else np.asarray(verified, bool)
    columns = np.column_stack([produced.arm, produced.gripper])
    golden = np.column_stack([expected.arm, expected.gripper])
    report: dict[str, Any] = {"ticks": len(columns), "tolerance": tolerance, "commands": {}}
    if not verified.all():
        report["skipped"] = int((~verified).sum())
        if not verified.any():
            return {**report, "passed": False, "error": "no recorded command could be matched to a replayable tick"}
    passed = True
    for j, name in enumerate(COMMAND_NAMES):
        a, b = columns[:, j], golden[:, j]
        both = ~np.isnan(a) & ~np.isnan(b) & verified
        mismatch = (np.isnan(a) != np.isnan(b)) & verified  # one side commanded, the other did not
        deviation = np.where(both, np.abs(a - b), 0.0)
        deviation[mismatch] = np.inf
        beyond = np.flatnonzero(deviation > tolerance)
        compared = deviation[both]
        report["commands"][name] = {
            "max_abs": float(deviation.max()) if len(deviation) else 0.0,
            "mean_abs": float(compared.mean()) if compared.size else 0.0,
            "first_divergence_s": float(produced.times_s[beyond[0]]) if beyond.size else None,
        }
        passed &= not beyond.size
    report["passed"] = bool(passed)
    return report


def format_report(bag: Path, report: dict) -> str:
    skipped = (f" ({report['skipped']} before the trace could be followed, not compared)"
               if report.get("skipped") else "")
    traced = ", traced" if report.get("traced") else ""
    lines = [f"replay {bag}: {report['ticks']} ticks{skipped}{traced}, tolerance {report.get('tolerance', 0):g}"]
    if "error" in report:
        return "\n".join([*lines, f"  REGRESSION: {report['error']}"])
    lines.append(f"  {'command':<14}{'max |dev|':>12}{'mean |dev|':>12}  first divergence")
    for name, row in report["commands"].items():
        first = "-" if row["first_divergence_s"] is None else f"{row['first_divergence_s']:.3f} s"
        lines.append(f"  {name:<14}{row['max_abs']:>12.3e}{row['mean_abs']:>12.3e}  {first}")
    lines.append("  PASSED" if report["passed"] else "  REGRESSION: deviation beyond tolerance")
    return "\n".join(lines)


def replay(bag: Path, checkpoint: Path, backend: str = "torch", tolerance: float = DEFAULT_TOLERANCE,
           topic_map: Mapping[str, str] | None = None, params: Mapping[str, Any] | None = None,
           update: bool = False, threads: int = 1, return_payload: bool = False) -> dict | tuple[dict, dict]:
    """Replay one bag through the controller core; returns the report (see :func:`compare`).

    Controller parameters: :data:`CORE_DEFAULTS` ← the golden file's ``controller`` ← ``params``.
    With ``update``, writes the golden file (produced commands, parameters, checkpoint hash) instead of failing.
    Raises :class:`BagError` for an unusable bag or golden file, ``RuntimeLoadError`` for the checkpoint.
    """
    from mhc_model.runtime import load_runtime

    bag = Path(bag)
    streams = read_streams(bag, topic_map)
    golden_file = expected_path(bag)
    golden: dict[str, Any] = {}
    if golden_file.is_file():
        try:
            golden = json.loads(golden_file.read_text())
            expected = Commands.from_json(golden["commands"])
        except (ValueError, KeyError, TypeError) as err:
            raise BagError(f"golden file '{golden_file}' unreadable: {err}") from None
    parameters = {**CORE_DEFAULTS, **golden.get("controller", {}), **(params or {})}
    try:
        ControllerCore(1, parameters)
    except (ValueError, TypeError) as err:
        raise UsageError(f"controller parameters invalid: {err}") from None
    trace = read_trace(bag, streams)
    runtime = load_runtime(str(checkpoint), backend=backend, device="cpu" if backend == "torch" else None,
                           threads=threads)
    verified = None
    try:
        if trace is not None:
            produced, verified, model_tick = run_traced(streams, trace, runtime, parameters)
        else:
            produced = run_controller(streams, runtime, parameters, recorded_holds(streams))
    finally:
        close = getattr(runtime, "close", None)
        if callable(close):
            close()
    if not golden:
        expected = (recorded_commands(streams) if trace is None
                    else traced_commands(streams, model_tick, 1.0 / float(parameters["control_rate_hz"])))
    report = compare(produced, expected, tolerance, verified)
    report["traced"] = trace is not None
    report.update({"bag": str(bag), "golden": str(golden_file) if golden else "recorded commands",
                   "backend": getattr(runtime, "backend", backend), "controller": parameters})
    from mhc_model.export import file_sha256
    from mhc_model.runtime.base import resolve_checkpoint

    payload = {"bag": bag.name, "checkpoint_sha256": file_sha256(resolve_checkpoint(checkpoint)),
               "backend": report["backend"], "controller": parameters, "commands": produced.to_json()}
    if update:
        write_golden(golden_file, payload)
        report["updated"] = str(golden_file)
    return (report, payload) if return_payload else report


def write_golden(path: Path, payload: dict) -> None:
    """Write a golden file atomically (a crash leaves the old one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------- CLI


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories to replay")
    parser.add_argument("--checkpoint", type=Path, default=None, help="mHC checkpoint (required unless --play)")
    parser.add_argument("--backend", default="torch", help="inference backend (default torch: deterministic CPU)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help=f"largest allowed |deviation| per command, rad / m (default {DEFAULT_TOLERANCE:g})")
    parser.add_argument("--report", type=Path, default=None, help="write the per-bag reports as JSON here")
    parser.add_argument("--update", action="store_true", help="rewrite the golden files BAG.expected.json")
    parser.add_argument("--topic-map", default=None, help="rename input topics: image=/cam,joints=/js,...")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="override a controller parameter (e.g. ensemble_decay=0.1)")
    parser.add_argument("--play", action="store_true", help="publish the bag on its topics instead of checking")
    parser.add_argument("--rate", type=float, default=1.0, help="--play speed vs recorded (default 1)")
    parser.add_argument("--delay", type=float, default=3.0,
                        help="--play: wait up to this long (s) for subscribers before the first message (default 3)")


def run(args: argparse.Namespace) -> int:
    from mhc_model.runtime import RuntimeLoadError

    if not (np.isfinite(args.rate) and args.rate > 0):
        raise UsageError(f"--rate {args.rate} must be a finite number > 0")
    if not (np.isfinite(args.delay) and args.delay >= 0):
        raise UsageError(f"--delay {args.delay} must be a finite number >= 0")
    if not (np.isfinite(args.tolerance) and args.tolerance >= 0):
        raise UsageError(f"--tolerance {args.tolerance} must be a finite number >= 0")
    try:
        if args.play:
            from mhc_ros.bag_player import play

            return max(play(bag, args.rate, delay_s=args.delay) for bag in args.bags)
        if args.checkpoint is None:
            raise UsageError("--checkpoint is required (or --play)")
        topic_map = parse_topic_map(args.topic_map)
        params = controller_parameters(args.param)
        reports, updates = [], []
        for bag in args.bags:
            report, payload = replay(bag, args.checkpoint, args.backend, args.tolerance, topic_map, params,
                                     return_payload=True)
            print(format_report(bag, report))
            reports.append(report)
            updates.append((expected_path(bag), payload))
    except (BagError, RuntimeLoadError) as err:
        raise UsageError(str(err)) from None
    if args.update:  # only once every bag replayed: a bad bag never leaves half the golden files rewritten
        for path, payload in updates:
            write_golden(path, payload)
            print(f"updated {path}")
    if args.report is not None:
        args.report.write_text(json.dumps(reports, indent=1))
    if args.update:
        return 0
    return 0 if all(r["passed"] for r in reports) else 1
