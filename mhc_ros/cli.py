"""mhc: one command line for collecting data, training, evaluating and bringing up the stack.

Each verb lives in its own module exposing ``configure_parser(parser)`` and ``run(args) -> int``; the
module is imported only when its verb runs, so ``mhc collect`` does not pay for importing torch.
Bad input is reported as one line naming the value, with exit status 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# verb -> (module, its parser-configuring function, its run function, one-line help).
VERBS: dict[str, tuple[str, str, str, str]] = {
    "collect": ("mhc_ros.collect", "configure_parser", "run",
                "record scripted-expert episodes as rosbag2 bags and training shards"),
    "train": ("mhc_model.train", "configure_parser", "run",
              "train an mHC model on collected shards (CPU, GPU, or torchrun DDP)"),
    "eval": ("mhc_ros.evaluate", "configure_parser", "run",
             "closed-loop evaluation in the simulation (directly, or over ROS 2 with --ros)"),
    "bringup sim": ("mhc_ros.bringup", "configure_parser", "run",
                    "start the simulated system as ROS 2 processes and run episodes"),
    "bringup robot": ("mhc_ros.bringup", "configure_robot_parser", "run_robot",
                      "start the mhc_controller node for a real robot (runs until Ctrl-C)"),
    "record": ("mhc_ros.record", "configure_parser", "run",
               "record live topics to a rosbag2 bag (MCAP, QoS metadata) from raw subscriptions"),
    "replay": ("mhc_ros.replay", "configure_parser", "run",
               "replay bags through the controller and compare its commands (or --play them on a live graph)"),
    "video": ("mhc_ros.bag_video", "configure_parser", "run",
              "render a bag's camera frames with the predicted motion drawn on them as a GIF"),
    "export": ("mhc_model.export", "configure_parser", "run",
               "export a checkpoint to one static-shape ONNX graph per domain profile"),
    "build-engine": ("mhc_model.engine", "configure_parser", "run",
                     "build TensorRT engines next to exported ONNX graphs (on the target GPU)"),
    "bench flops": ("mhc_model.flops", "configure_parser", "run",
                    "count FLOPs per sample for each preset and domain profile"),
    "bench latency": ("mhc_model.latency", "configure_parser", "run",
                      "batch-1 latency p50/p99 per backend, preset and domain profile"),
}


class _Parser(argparse.ArgumentParser):
    """Argparse whose errors are one line, ``mhc <verb>: error: ...``, exit 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _lazy_configure(verb: tuple[str, str, str, str], parser: argparse.ArgumentParser) -> None:
    module_name, configure_name, run_name, _ = verb
    module = importlib.import_module(module_name)
    getattr(module, configure_name)(parser)
    parser.set_defaults(_run=getattr(module, run_name))


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The full parser; only the verb named in ``argv`` has its module imported."""
    parser = _Parser(prog="mhc", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=_Parser)
    groups: dict[str, argparse._SubParsersAction] = {}
    for verb, spec in VERBS.items():
        words, help_text = verb.split(), spec[3]
        if len(words) == 1:
            sub = verbs.add_parser(words[0], help=help_text, description=help_text)
        else:
            if words[0] not in groups:
                group_parser = verbs.add_parser(words[0], help=f"{words[0]} commands")
                groups[words[0]] = group_parser.add_subparsers(dest=f"{words[0]}_verb", required=True,
                                                               parser_class=_Parser)
            sub = groups[words[0]].add_parser(words[1], help=help_text, description=help_text)
        if argv[: len(words)] == words:
            _lazy_configure(spec, sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mhc_ros.cli_args import UsageError

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"mhc {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mhc {args.verb}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
