"""ONNX Runtime backend (CPU execution provider) on the graphs written by ``mhc export``.

``instruct.onnx`` runs once per instruction; ``control.onnx`` every step with the cache as inputs.
Sessions use ``threads`` intra-op threads, one inter-op thread, sequential execution and all graph
optimisations (``ORT_ENABLE_ALL``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from mhc_model.export import OUTPUTS, export_onnx, read_manifest
from mhc_model.runtime.base import LOG, PolicySpec, Runtime, RuntimeLoadError, checked_manifest
from mhc_model.tokenizers import LabelVocabulary, Vocabulary


def make_session(path: str | Path, threads: int = 2) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU EP with ``threads`` intra-op threads."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeLoadError("ONNX Runtime backend unavailable: the 'onnxruntime' Python module is not installed") \
            from None
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class OnnxRuntime(Runtime):
    """Runs ``instruct``/``control`` ONNX graphs from ``onnx_dir`` (with its ``manifest.json``)."""

    backend = "onnxruntime"

    def __init__(self, spec: PolicySpec, onnx_dir: str | Path, threads: int = 2):
        super().__init__(spec)
        manifest = read_manifest(onnx_dir)
        missing = [p for p in ("instruct", "control") if p not in manifest["profiles"]]
        if missing:
            raise RuntimeLoadError(f"engine_dir '{onnx_dir}' has no ONNX graph for profile(s) {missing}")
        self.onnx_dir, self.manifest = Path(onnx_dir), manifest
        self.sessions = {p: make_session(self.onnx_dir / manifest["profiles"][p]["file"], threads)
                         for p in ("instruct", "control")}
        self._tmp: tempfile.TemporaryDirectory | None = None

    @classmethod
    def from_manifest(cls, onnx_dir: str | Path, threads: int = 2) -> OnnxRuntime:
        """Runtime from an export folder alone (config and vocabularies are in its manifest)."""
        from mhc_model.config import MHCConfig

        m = read_manifest(onnx_dir)
        spec = PolicySpec(MHCConfig.from_dict(m["config"]), Vocabulary(m["vocabulary"]),
                          LabelVocabulary(m["skills"]), LabelVocabulary(m["targets"]))
        return cls(spec, onnx_dir, threads)

    @classmethod
    def load(cls, checkpoint: Path, onnx_dir: str | None, threads: int = 2) -> OnnxRuntime:
        """From a checkpoint and its export folder; without a folder, export to a temporary one first.

        A manifest recorded for another checkpoint (sha256) raises :class:`RuntimeLoadError`.
        """
        spec = PolicySpec.from_checkpoint(checkpoint)
        tmp = None
        if onnx_dir is None:
            from mhc_model.checkpoint import load_policy

            tmp = tempfile.TemporaryDirectory(prefix="mhc_onnx_")
            LOG.info("no engine_dir: exporting %s to %s", checkpoint, tmp.name)
            export_onnx(load_policy(checkpoint)[0], tmp.name, checkpoint=checkpoint)
            onnx_dir = tmp.name
        checked_manifest(onnx_dir, checkpoint, "ONNX files", "re-run mhc export")
        runtime = cls(spec, onnx_dir, threads)
        runtime._tmp = tmp
        return runtime

    def run_profile(self, profile: str, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        """One session run of ``profile``: ``feed`` maps its graph input names to arrays."""
        return self.sessions[profile].run(list(OUTPUTS[profile]), feed)

    def _run_instruct(self, ids: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        cache_k, cache_v = self.run_profile("instruct", {"instruction_ids": ids, "instruction_mask": mask})
        return cache_k, cache_v

    def _run_control(self, inputs: dict[str, np.ndarray], cache_k: np.ndarray,
                     cache_v: np.ndarray) -> dict[str, np.ndarray]:
        outs = self.run_profile("control", {**inputs, "cache_k": cache_k, "cache_v": cache_v})
        return dict(zip(OUTPUTS["control"], outs, strict=True))

    def close(self) -> None:
        super().close()
        self.sessions.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
