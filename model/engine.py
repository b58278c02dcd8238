"""``mhc build-engine``: TensorRT engines next to the exported ONNX files, each with a JSON record.

For every ``<profile>.onnx`` listed in ``manifest.json`` it writes ``<profile>.engine`` (serialized with
``trt.Builder`` / ``trt.OnnxParser`` / ``builder.build_serialized_network``) and ``<profile>.engine.json``
recording the ONNX sha256, the TensorRT version and the GPU name. An engine is only used when its record
matches the ONNX file beside it, the installed TensorRT and the current GPU (the Isaac ROS rule:
engines are specific to a GPU and TensorRT version); ``--force-engine-update`` rebuilds regardless.

Not executed here: TensorRT cannot be installed on the development machines (no GPU), so the build and load
paths are written against TensorRT's documented Python API and only their record checks are tested.
Where ``tensorrt`` is missing the verb exits 2 with one line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mhc_model.export import file_sha256, read_manifest

TRT_MISSING = "TensorRT backend unavailable: the 'tensorrt' Python module is not installed"
WORKSPACE_BYTES = 1 << 30


def import_tensorrt() -> Any:
    """``import tensorrt`` or ``ImportError`` with :data:`TRT_MISSING`."""
    try:
        import tensorrt as trt
    except ImportError:
        raise ImportError(TRT_MISSING) from None
    return trt


def gpu_name(device: int = 0) -> str:
    """Name of CUDA device ``device`` as torch reports it (``NVIDIA H200``, ``Orin``)."""
    import torch

    if not torch.cuda.is_available():
        return "no-cuda-device"
    return torch.cuda.get_device_name(device)


def engine_paths(onnx_dir: str | Path, profile: str) -> tuple[Path, Path, Path]:
    """``(<profile>.onnx, <profile>.engine, <profile>.engine.json)`` in ``onnx_dir``."""
    d = Path(onnx_dir)
    return d / f"{profile}.onnx", d / f"{profile}.engine", d / f"{profile}.engine.json"


def record_problem(record: dict[str, Any], engine: Path, onnx_sha256: str, trt_version: str | None,
                   gpu: str | None) -> str | None:
    """One line naming why ``engine`` (with ``record``) must not be used, or None when it matches.

    ``trt_version`` / ``gpu`` None skip that comparison (checked later, once TensorRT is imported).
    """
    if record.get("onnx_sha256") != onnx_sha256:
        return (f"engine '{engine}' was built from another ONNX file (recorded sha256 "
                f"{str(record.get('onnx_sha256'))[:12]}…, ONNX beside it {onnx_sha256[:12]}…); rebuild with "
                "mhc build-engine --force-engine-update")
    if trt_version is not None and record.get("tensorrt_version") != trt_version:
        return (f"engine '{engine}' was built with TensorRT {record.get('tensorrt_version')}, installed is "
                f"{trt_version}; rebuild with mhc build-engine --force-engine-update")
    if gpu is not None and record.get("gpu_name") != gpu:
        return (f"engine '{engine}' was built for GPU '{record.get('gpu_name')}', this GPU is '{gpu}'; rebuild "
                "with mhc build-engine --force-engine-update")
    return None


def engine_problem(onnx_dir: str | Path, profile: str, trt_version: str | None = None,
                   gpu: str | None = None, need_tensorrt: bool = True) -> str | None:
    """Why the ``profile`` engine in ``onnx_dir`` cannot be used here (one line), or None.

    Order: files present → record matches the ONNX sha256 → ``tensorrt`` importable → TensorRT version and GPU.
    """
    onnx_path, engine, record_path = engine_paths(onnx_dir, profile)
    for path in (onnx_path, engine, record_path):
        if not path.is_file():
            return f"'{path}' does not exist (run: mhc export, then mhc build-engine --onnx {onnx_dir})"
    try:
        record = json.loads(record_path.read_text())
    except ValueError:
        return f"engine record '{record_path}' is not JSON"
    problem = record_problem(record, engine, file_sha256(onnx_path), None, None)
    if problem or not need_tensorrt:
        return problem
    if trt_version is None:
        try:
            trt_version = import_tensorrt().__version__
        except ImportError as exc:
            return str(exc)
    return record_problem(record, engine, record["onnx_sha256"], trt_version, gpu or gpu_name())


def build_engine(onnx_path: Path, engine_path: Path, fp16: bool = True) -> dict[str, Any]:
    """Parse ``onnx_path`` with ``trt.OnnxParser``, build and serialize; returns the record written beside it."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH"):  # TensorRT 8.x; implicit in 10.x
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse '{onnx_path}': {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from '{onnx_path}'")
    engine_path.write_bytes(bytes(serialized))
    record = {"onnx_file": onnx_path.name, "onnx_sha256": file_sha256(onnx_path), "engine_file": engine_path.name,
              "tensorrt_version": trt.__version__, "gpu_name": gpu_name(), "fp16": fp16}
    engine_path.with_name(engine_path.name + ".json").write_text(json.dumps(record, indent=2, sort_keys=True))
    return record


def build_engines(onnx_dir: str | Path, fp16: bool = True, force: bool = False) -> dict[str, str]:
    """Build (or keep, when their records match) the engines of every profile in ``onnx_dir``.

    Returns ``{profile: "built" | "kept"}``.
    """
    manifest = read_manifest(onnx_dir)
    trt = import_tensorrt()
    result = {}
    for profile in manifest["profiles"]:
        onnx_path, engine, _ = engine_paths(onnx_dir, profile)
        if not force and engine_problem(onnx_dir, profile, trt.__version__, gpu_name()) is None:
            result[profile] = "kept"
            continue
        build_engine(onnx_path, engine, fp16=fp16)
        result[profile] = "built"
    return result


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mhc build-engine``."""
    parser.add_argument("--onnx", default="trt_engines", help="folder written by mhc export (default: trt_engines)")
    parser.add_argument("--fp16", action="store_true", help="enable FP16 kernels (enable_fp16)")
    parser.add_argument("--force-engine-update", action="store_true",
                        help="rebuild even when an engine's record matches (force_engine_update)")
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        result = build_engines(args.onnx, fp16=args.fp16, force=args.force_engine_update)
    except (ImportError, FileNotFoundError, ValueError, RuntimeError) as exc:
        print(f"mhc build-engine: error: {exc}", file=sys.stderr)
        return 2
    for profile, what in result.items():
        print(f"{engine_paths(args.onnx, profile)[1]}: {what}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="mhc build-engine", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
