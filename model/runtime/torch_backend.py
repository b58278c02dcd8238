"""PyTorch backend: eager on CPU; on CUDA the profiles run as captured CUDA graphs.

CUDA graphs (``torch.cuda.CUDAGraph``): each profile (``instruct``, ``control``) is warmed up on a side
stream, then captured once with static input buffers; a step copies the new image / joint history into
those buffers and replays the graph — no Python dispatch or kernel-launch overhead per layer. Precision
``fp32`` (default), ``bf16`` or ``fp16`` (autocast inside the captured graph).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from mhc_model.export import OUTPUTS, ProfileGraph, example_inputs, profile_inputs
from mhc_model.runtime.base import PolicySpec, Runtime, RuntimeLoadError
from torch import nn

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast_context(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Autocast for ``bf16``/``fp16`` on CUDA; a no-op for ``fp32``."""
    if precision not in PRECISIONS:
        raise RuntimeLoadError(f"precision '{precision}' unknown ({', '.join(PRECISIONS)})")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class GraphedProfile:
    """A ``ProfileGraph`` captured in a CUDA graph with static inputs; ``__call__`` copies in and replays.

    The returned output tensors are the graph's static outputs: they are overwritten by the next replay.
    """

    def __init__(self, module: nn.Module, example: Sequence[torch.Tensor], precision: str = "fp32",
                 warmup: int = 3, compile_module: bool = False):
        device = example[0].device
        if device.type != "cuda":
            raise RuntimeLoadError(f"CUDA graphs need a CUDA device, got '{device}'")
        if compile_module:
            # Inductor fuses the many small elementwise kernels of a batch-1 step; the graph then
            # replays fewer launches (the step is launch-bound on large GPUs).
            module = torch.compile(module, dynamic=False, fullgraph=True)
            warmup = max(warmup, 3)
        self.inputs = tuple(t.detach().clone() for t in example)  # static input buffers
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), torch.no_grad(), autocast_context(device, precision):
            for _ in range(warmup):  # lazy init, cuBLAS handles, autotuning: outside the capture
                module(*self.inputs)
        torch.cuda.current_stream(device).wait_stream(side)
        torch.cuda.synchronize(device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.no_grad(), autocast_context(device, precision), torch.cuda.graph(self.graph):
            self.outputs: tuple[torch.Tensor, ...] = module(*self.inputs)

    def __call__(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        for dst, src in zip(self.inputs, inputs, strict=True):
            if src is not dst:
                dst.copy_(src, non_blocking=True)
        self.graph.replay()
        return self.outputs


class TorchRuntime(Runtime):
    """``MHCPolicy`` in PyTorch: eager on CPU (``threads`` intra-op threads), CUDA graphs on CUDA."""

    def __init__(self, policy: Any, device: str = "cpu", threads: int = 2, precision: str = "fp32",
                 cuda_graph: bool = True, compile_module: bool = False):
        super().__init__(PolicySpec.from_policy(policy))
        try:
            self.device = torch.device(device)
        except RuntimeError:
            raise RuntimeLoadError(f"device '{device}' is not a torch device") from None
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeLoadError(f"device '{device}' asked for, but CUDA is not available")
        if precision != "fp32" and self.device.type != "cuda":
            raise RuntimeLoadError(f"precision '{precision}' needs a CUDA device (got '{device}')")
        if self.device.type == "cpu":
            torch.set_num_threads(threads)  # process-wide: the runtime owns the inference threads
        self.precision = precision
        self.model = policy.model.to(self.device).eval()
        self.profiles = {p: ProfileGraph(self.model, p) for p in ("instruct", "control")}
        self.graphs: dict[str, GraphedProfile] = {}
        if self.device.type == "cuda" and cuda_graph:
            for profile in ("instruct", "control"):
                self.graphs[profile] = GraphedProfile(self.profiles[profile], example_inputs(self.model, profile),
                                                      precision, compile_module=compile_module)
            self.backend = "torch-cuda-graph"
        else:
            self.backend = "torch"

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(array)).to(self.device, non_blocking=False)

    def _call(self, profile: str, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if profile in self.graphs:
            return self.graphs[profile](*inputs)
        with torch.inference_mode(), autocast_context(self.device, self.precision):
            return self.profiles[profile](*inputs)

    def _run_instruct(self, ids: np.ndarray, mask: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        cache_k, cache_v = self._call("instruct", self._tensor(ids), self._tensor(mask))
        return cache_k.float().clone(), cache_v.float().clone()  # graph outputs are overwritten by a replay

    def _run_control(self, inputs: dict[str, np.ndarray], cache_k: torch.Tensor,
                     cache_v: torch.Tensor) -> dict[str, np.ndarray]:
        named = {**{n: self._tensor(a) for n, a in inputs.items()}, "cache_k": cache_k, "cache_v": cache_v}
        outs = self._call("control", *(named[n] for n in profile_inputs(self.config, "control")))
        return {name: t.float().cpu().numpy() for name, t in zip(OUTPUTS["control"], outs, strict=True)}

    def close(self) -> None:
        super().close()
        self.graphs.clear()


__all__ = ["GraphedProfile", "TorchRuntime", "autocast_context"]
