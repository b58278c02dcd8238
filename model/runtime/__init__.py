"""Inference runtimes of the mHC policy (contract: ``docs/contracts.md`` § Inference runtime).

``load_runtime(checkpoint, backend="auto", engine_dir=None, device=None, threads=2)`` returns a runtime
with ``backend``, ``joint_history_length``, ``encode_instruction(text)``, ``step(image, encoding,
joint_history) -> StepOutput`` and ``close()``. Backends:

- ``torch``: PyTorch eager on CPU; on a CUDA device the ``control`` step is captured in a CUDA graph
  (reported as ``torch-cuda-graph``; ``torch-cuda-graph`` may be asked for by name);
- ``onnxruntime``: the exported ONNX graphs on ONNX Runtime's CPU execution provider;
- ``tensorrt``: serialized TensorRT engines (``mhc build-engine``). Not executed here: TensorRT cannot be
  installed on the development machines, so that path is written against the documented API only;
- ``auto``: TensorRT engine present and loadable → CUDA torch (graphs) → ONNX Runtime CPU when
  ``engine_dir`` holds exported ONNX files → torch CPU. The choice is logged (logger ``mhc_model.runtime``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from mhc_model.runtime.base import (
    BACKENDS,
    LOG,
    InstructionEncoding,
    PolicySpec,
    Runtime,
    RuntimeLoadError,
    StepOutput,
    resolve_checkpoint,
)

__all__ = ["BACKENDS", "InstructionEncoding", "Runtime", "RuntimeLoadError", "StepOutput", "load_runtime"]


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_onnx(engine_dir: str | None) -> bool:
    return engine_dir is not None and (Path(engine_dir) / "manifest.json").is_file()


def _load_policy(path: Path, device: str) -> object:
    from mhc_model.checkpoint import load_policy

    try:
        policy, _ = load_policy(path, map_location="cpu")
    except ValueError as exc:
        raise RuntimeLoadError(str(exc).splitlines()[0]) from None
    return policy.to(device).eval()


def load_runtime(checkpoint_path: str | Path, backend: str = "auto", engine_dir: str | Path | None = None,
                 device: str | None = None, threads: int = 2, precision: str = "fp32",
                 compile_module: bool = False) -> Runtime:
    """Build the runtime for ``checkpoint_path`` (file or run folder) on ``backend``.

    ``engine_dir``: folder of ``mhc export`` ONNX files / ``mhc build-engine`` engines; ``device``: torch device
    (``cpu``, ``cuda:0``; None = CUDA if available); ``threads``: CPU intra-op threads (torch CPU, ONNX Runtime);
    ``precision``: ``fp32`` | ``bf16`` | ``fp16`` for the CUDA torch backend; ``compile_module``: CUDA torch
    backend, ``torch.compile`` each profile before capturing its CUDA graph (fewer kernels; needs Triton,
    slower start). Raises :class:`RuntimeLoadError`
    (one line naming the bad value) for an unknown backend, a missing checkpoint or a mismatched engine.
    """
    if backend not in BACKENDS:
        raise RuntimeLoadError(f"backend '{backend}' unknown (expected one of {', '.join(BACKENDS)})")
    if not isinstance(threads, int) or threads < 1:
        raise RuntimeLoadError(f"threads {threads!r} must be an integer >= 1")
    path = resolve_checkpoint(checkpoint_path)
    engine = None if engine_dir in (None, "") else str(Path(engine_dir).expanduser())
    if engine is not None and not Path(engine).is_dir():
        raise RuntimeLoadError(f"engine_dir '{engine_dir}' is not a folder")

    if backend == "auto":
        backend = _choose(engine, device)
    if backend == "tensorrt":
        from mhc_model.runtime.tensorrt_backend import TensorRTRuntime

        if engine is None:
            raise RuntimeLoadError("backend 'tensorrt' needs engine_dir (run: mhc export, then mhc build-engine)")
        return TensorRTRuntime.load(engine, PolicySpec.from_checkpoint(path), path, device=device or "cuda:0")
    if backend == "onnxruntime":
        from mhc_model.runtime.onnx_backend import OnnxRuntime

        return OnnxRuntime.load(path, engine, threads=threads)
    from mhc_model.runtime.torch_backend import TorchRuntime

    dev = device or ("cuda:0" if _cuda_available() else "cpu")
    if backend == "torch-cuda-graph" and not dev.startswith("cuda"):
        raise RuntimeLoadError(f"backend 'torch-cuda-graph' needs a CUDA device, got device '{dev}'")
    policy = _load_policy(path, dev)
    return TorchRuntime(policy, device=dev, threads=threads, precision=precision, compile_module=compile_module)


def _choose(engine_dir: str | None, device: str | None) -> str:
    """The ``auto`` order: TensorRT engine → CUDA torch → ONNX Runtime (if ONNX files) → torch CPU."""
    reasons = []
    if engine_dir is not None and (device is None or device.startswith("cuda")):
        from mhc_model.engine import engine_problem

        problem = engine_problem(engine_dir, "control")
        if problem is None:
            LOG.info("runtime backend: tensorrt (engines in %s)", engine_dir)
            return "tensorrt"
        reasons.append(f"tensorrt: {problem}")
    if (device is None or device.startswith("cuda")) and _cuda_available():
        LOG.info("runtime backend: torch on CUDA with CUDA graphs (%s)", "; ".join(reasons) or "no engine_dir")
        return "torch"
    if device is None or device == "cpu":
        if _has_onnx(engine_dir) and importlib.util.find_spec("onnxruntime") is not None:
            LOG.info("runtime backend: onnxruntime CPU (%s)", engine_dir)
            return "onnxruntime"
        reasons.append("onnxruntime: no ONNX manifest in engine_dir or onnxruntime missing")
    LOG.info("runtime backend: torch (%s)", "; ".join(reasons) or "default")
    return "torch"
