"""TensorRT backend: serialized engines from ``mhc build-engine``, tensors bound explicitly by name.

Not executed here: TensorRT cannot be installed on the development machines, so this path follows
TensorRT's documented Python API (``trt.Runtime``, ``deserialize_cuda_engine``,
``create_execution_context``, ``set_tensor_address``, ``execute_async_v3``) and is untested. Where
``import tensorrt`` fails, loading raises :class:`RuntimeLoadError` with
"TensorRT backend unavailable: the 'tensorrt' Python module is not installed".

Buffers are torch CUDA tensors (no pycuda). The ``instruct`` engine's ``cache_k``/``cache_v`` outputs are
the very buffers bound as the ``control`` engine's inputs, so a new instruction costs no copy. Engines
are usually built with FP16 kernels (``--fp16``); I/O stays float32 / int32 as exported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mhc_model.engine import TRT_MISSING, engine_paths, engine_problem, import_tensorrt
from mhc_model.export import OUTPUTS, profile_inputs
from mhc_model.runtime.base import PolicySpec, Runtime, RuntimeLoadError, checked_manifest

TORCH_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT32": "int32", "INT64": "int64", "BOOL": "bool"}


class EngineProfile:
    """One deserialized engine with its execution context and name → buffer bindings."""

    def __init__(self, trt: Any, runtime: Any, engine_path: Path, profile: str, inputs: tuple[str, ...],
                 device: Any, shared: dict[str, Any]):
        import torch

        self.profile = profile
        self.engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeLoadError(f"engine '{engine_path}' could not be deserialized by this TensorRT")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        expected = set(inputs) | set(OUTPUTS[profile])
        if set(names) != expected:
            raise RuntimeLoadError(f"engine '{engine_path}' tensors {sorted(names)} != exported {sorted(expected)}")
        self.buffers: dict[str, torch.Tensor] = {}
        for name in names:
            shape = tuple(self.engine.get_tensor_shape(name))
            dtype = getattr(torch, TORCH_DTYPES[self.engine.get_tensor_dtype(name).name])
            buf = shared.get(name)
            if buf is None or tuple(buf.shape) != shape or buf.dtype != dtype:
                buf = torch.empty(shape, dtype=dtype, device=device)
                shared[name] = buf
            self.buffers[name] = buf
            self.context.set_tensor_address(name, buf.data_ptr())  # explicit name → address binding

    def execute(self, stream: Any) -> None:
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execute_async_v3 failed for profile '{self.profile}'")


class TensorRTRuntime(Runtime):
    """``instruct`` + ``control`` TensorRT engines on one CUDA device."""

    backend = "tensorrt"

    def __init__(self, spec: PolicySpec, engine_dir: str | Path, device: str = "cuda:0"):
        super().__init__(spec)
        trt = import_tensorrt()
        import torch

        self.device = torch.device(device)
        self.stream = torch.cuda.Stream(self.device)
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.trt_runtime = trt.Runtime(self.logger)
        shared: dict[str, Any] = {}  # instruct's cache outputs are control's cache inputs
        self.engines = {p: EngineProfile(trt, self.trt_runtime, engine_paths(engine_dir, p)[1], p,
                                       profile_inputs(spec.config, p), self.device, shared)
                        for p in ("instruct", "control")}

    @classmethod
    def load(cls, engine_dir: str, spec: PolicySpec, checkpoint: Path, device: str = "cuda:0") -> TensorRTRuntime:
        """Check the engine records first (one-line :class:`RuntimeLoadError` naming the engine), then load."""
        checked_manifest(engine_dir, checkpoint, "engines", "re-run mhc export and mhc build-engine")
        for profile in ("instruct", "control"):
            problem = engine_problem(engine_dir, profile, need_tensorrt=False)  # ONNX sha256: no TensorRT needed
            if problem is not None:
                raise RuntimeLoadError(problem)
        try:
            trt = import_tensorrt()
        except ImportError:
            raise RuntimeLoadError(TRT_MISSING) from None
        for profile in ("instruct", "control"):
            problem = engine_problem(engine_dir, profile, trt_version=trt.__version__)
            if problem is not None:
                raise RuntimeLoadError(problem)
        return cls(spec, engine_dir, device)

    def _run(self, profile: str, inputs: dict[str, np.ndarray]) -> dict[str, Any]:
        import torch

        engine = self.engines[profile]
        with torch.cuda.stream(self.stream):
            for name, array in inputs.items():
                engine.buffers[name].copy_(torch.from_numpy(np.ascontiguousarray(array)), non_blocking=True)
            engine.execute(self.stream)
        self.stream.synchronize()
        return {name: engine.buffers[name] for name in OUTPUTS[profile]}

    def _run_instruct(self, ids: np.ndarray, mask: np.ndarray) -> tuple[Any, Any]:
        out = self._run("instruct", {"instruction_ids": ids, "instruction_mask": mask})
        return out["cache_k"], out["cache_v"]  # already bound as control's inputs

    def _run_control(self, inputs: dict[str, np.ndarray], cache_k: Any, cache_v: Any) -> dict[str, np.ndarray]:
        out = self._run("control", inputs)  # the cache is already bound: instruct's outputs
        return {name: t.float().cpu().numpy() for name, t in out.items()}

    def close(self) -> None:
        super().close()
        self.engines.clear()
