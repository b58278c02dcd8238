"""``mhc export``: one static-shape ONNX graph per domain profile, plus a JSON manifest.

Profiles exported (batch 1, static shapes, opset ≥ 17; names are the graph's tensor names):

- ``instruct``: ``instruction_ids (1, L) int32``, ``instruction_mask (1, L) float32`` (1 = word)
  → ``cache_k``, ``cache_v`` ``(n_layers, 1, h_s, L, head_dim) float32`` (run once per instruction);
- ``control``: ``instruction_mask``, ``image (1, 3·F, S, S) float32`` RGB in [0, 1] (F frames, ``mhc_model.frames``),
  ``joint_history (1, Hj, 18) float32``, ``cache_k``, ``cache_v`` → the head outputs (every step);
- ``full`` (``--full``): ``instruction_ids``, ``instruction_mask``, ``image``, ``joint_history`` → heads.

A config with ``instruction_age`` adds ``instruction_age (1, 1) float32`` (ticks since the instruction's
first tick) after ``joint_history`` in ``control`` and ``full`` (:func:`profile_inputs`).

Head outputs: ``action_chunk (1, K, 8)`` rad/m, ``motion (1, H, 7, 3)`` m, ``motion_present_logits (1, 7)``,
``plan_skill_logits (1, P, n_skills)``, ``plan_target_logits (1, P, n_targets)``, ``phase_logits (1, P)``.

Every graph is checked by :func:`graph_problems` (static shapes after ONNX shape inference, constant TopK k,
no data-dependent ops, every op in TensorRT's ONNX parser support list) before the manifest is written.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from mhc_model.config import PROFILES, MHCConfig
from mhc_model.mhc import MHC
from torch import nn

MANIFEST = "manifest.json"
FORMAT = "mhc-onnx-v1"
DEFAULT_OPSET = 17
HEAD_OUTPUTS = ("action_chunk", "motion", "motion_present_logits", "plan_skill_logits", "plan_target_logits",
                "phase_logits")
INPUTS: dict[str, tuple[str, ...]] = {
    "instruct": ("instruction_ids", "instruction_mask"),
    "control": ("instruction_mask", "image", "joint_history", "cache_k", "cache_v"),
    "full": ("instruction_ids", "instruction_mask", "image", "joint_history"),
}
OUTPUTS: dict[str, tuple[str, ...]] = {"instruct": ("cache_k", "cache_v"), "control": HEAD_OUTPUTS,
                                       "full": HEAD_OUTPUTS}


def profile_inputs(cfg: MHCConfig, profile: str) -> tuple[str, ...]:
    """The graph input names of ``profile`` for ``cfg``, in order: :data:`INPUTS`, plus
    ``instruction_age`` after ``joint_history`` when the config takes it."""
    names = INPUTS[profile]
    if cfg.instruction_age and "joint_history" in names:
        at = names.index("joint_history") + 1
        names = (*names[:at], "instruction_age", *names[at:])
    return names

# ONNX operators the TensorRT ONNX parser supports (subset relevant here), from onnx-tensorrt
# docs/operators.md ("Supported ONNX Operators", TensorRT 10.x, opset 9-20): the ops marked "Y".
# TopK: "K input must be an initializer"; Slice/Squeeze/Unsqueeze: axes must be constant.
TENSORRT_ONNX_OPS: frozenset[str] = frozenset({
    "Abs", "Add", "And", "ArgMax", "ArgMin", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip",
    "Concat", "Constant", "ConstantOfShape", "Conv", "ConvTranspose", "Cos", "CumSum", "Div", "Einsum", "Elu",
    "Equal", "Erf", "Exp", "Expand", "Flatten", "Floor", "Gather", "GatherElements", "GatherND", "Gelu", "Gemm",
    "GlobalAveragePool", "Greater", "GreaterOrEqual", "GroupNormalization", "HardSigmoid", "Identity",
    "InstanceNormalization", "LayerNormalization", "LeakyRelu", "Less", "LessOrEqual", "Log", "LogSoftmax",
    "MatMul", "Max", "MaxPool", "Mean", "Min", "Mul", "Neg", "Not", "Or", "Pad", "Pow", "PRelu", "Range",
    "Reciprocal", "ReduceL2", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSum", "Relu",
    "Reshape", "Resize", "Shape", "Sigmoid", "Sign", "Sin", "Size", "Slice", "Softmax", "Softplus", "Split",
    "Sqrt", "Squeeze", "Sub", "Sum", "Tanh", "Tile", "TopK", "Transpose", "Unsqueeze", "Where", "Xor",
})
# Ops whose output shape depends on data, or control flow: never allowed in an exported profile.
FORBIDDEN_OPS: frozenset[str] = frozenset({
    "NonZero", "Loop", "If", "Scan", "Unique", "Compress", "NonMaxSuppression", "SequenceAt",
    "SequenceConstruct", "SplitToSequence", "ConcatFromSequence",
})


class ProfileGraph(nn.Module):
    """``MHC`` run as one profile with positional tensor inputs ``profile_inputs(cfg, profile)`` → tuple
    ``OUTPUTS[profile]``.

    The unit that is exported to ONNX, captured in a CUDA graph and timed by ``mhc bench latency``.
    """

    def __init__(self, model: MHC, profile: str):
        super().__init__()
        if profile not in PROFILES:
            raise ValueError(f"profile {profile!r} unknown ({', '.join(PROFILES)})")
        self.model, self.profile = model, profile

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        named = dict(zip(profile_inputs(self.model.cfg, self.profile), inputs, strict=True))
        ids = named.get("instruction_ids")
        out = self.model(
            None if ids is None else ids.long(), named["instruction_mask"], named.get("image"),
            named.get("joint_history"), profile=self.profile, cache_k=named.get("cache_k"),
            cache_v=named.get("cache_v"), instruction_age=named.get("instruction_age"),
        )
        return tuple(out[name] for name in OUTPUTS[self.profile])


def input_specs(cfg: MHCConfig, profile: str) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    """Batch-1 ``{name: (shape, dtype)}`` of the profile's inputs."""
    L, S = cfg.max_instruction_len, cfg.image_size
    heads = cfg.shared_heads
    cache = ((cfg.n_layers, 1, heads, L, cfg.head_dim), torch.float32)
    every = {
        "instruction_ids": ((1, L), torch.int32),
        "instruction_mask": ((1, L), torch.float32),
        "image": ((1, 3 * cfg.n_frames, S, S), torch.float32),
        "joint_history": ((1, cfg.joint_history, 18), torch.float32),
        "instruction_age": ((1, 1), torch.float32),
        "cache_k": cache,
        "cache_v": cache,
    }
    return {name: every[name] for name in profile_inputs(cfg, profile)}


@torch.no_grad()
def example_inputs(model: MHC, profile: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random valid batch-1 inputs of ``profile`` (the cache comes from ``instruct`` on the same instruction)."""
    cfg = model.cfg
    g = torch.Generator().manual_seed(seed)
    L = cfg.max_instruction_len
    n_words = 2 + int(torch.randint(0, L - 1, (1,), generator=g))
    mask = torch.zeros(1, L)
    mask[:, :n_words] = 1.0
    ids = (torch.randint(3, cfg.vocab_size, (1, L), generator=g) * mask).to(torch.int32)
    ids[:, 0] = 2  # <bos>
    device = next(model.parameters()).device
    named = {"instruction_ids": ids, "instruction_mask": mask,
             "image": torch.rand(1, 3 * cfg.n_frames, cfg.image_size, cfg.image_size, generator=g),
             "joint_history": torch.randn(1, cfg.joint_history, 18, generator=g),
             "instruction_age": torch.randint(0, 64, (1, 1), generator=g).float()}
    named = {k: v.to(device) for k, v in named.items()}
    if profile == "control":
        named["cache_k"], named["cache_v"] = ProfileGraph(model, "instruct")(ids.to(device), mask.to(device))
    return tuple(named[name] for name in profile_inputs(cfg, profile))


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def graph_problems(model_proto: Any) -> list[str]:
    """Why an ONNX graph breaks the export contract (empty list = fine).

    Checks, after ``onnx.shape_inference.infer_shapes``: every input/output/value_info shape is fully
    static; every TopK's k is an initializer or a ``Constant``; no data-dependent/control-flow op; every op
    type in :data:`TENSORRT_ONNX_OPS`.
    """
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model_proto, strict_mode=True, data_prop=True)
    graph = inferred.graph
    problems: list[str] = []
    for kind, infos in (("input", graph.input), ("output", graph.output), ("value_info", graph.value_info)):
        for info in infos:
            if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
                problems.append(f"{kind} {info.name!r} has no inferred shape")
                continue
            dims = info.type.tensor_type.shape.dim
            if any(d.HasField("dim_param") or not d.HasField("dim_value") or d.dim_value <= 0 for d in dims):
                problems.append(f"{kind} {info.name!r} has a non-static shape {[str(d).strip() for d in dims]}")
    constants = {init.name for init in graph.initializer}
    constants |= {out for node in graph.node if node.op_type == "Constant" for out in node.output}
    for node in graph.node:
        if node.op_type in FORBIDDEN_OPS:
            problems.append(f"node {node.name!r}: op {node.op_type} is data-dependent or control flow")
        elif node.op_type not in TENSORRT_ONNX_OPS:
            problems.append(f"node {node.name!r}: op {node.op_type} not in TensorRT's ONNX support list")
        if node.op_type == "TopK" and (len(node.input) < 2 or node.input[1] not in constants):
            problems.append(f"node {node.name!r}: TopK k is not a constant")
    return problems


@torch.no_grad()
def export_profile(model: MHC, profile: str, path: Path, opset: int = DEFAULT_OPSET) -> None:
    """Trace ``ProfileGraph(model, profile)`` on CPU in eval mode and write ``path``."""
    graph = ProfileGraph(model, profile).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python scalars: shapes are static by design
        torch.onnx.export(graph, example_inputs(model, profile), str(path), dynamo=False, opset_version=opset,
                          input_names=list(profile_inputs(model.cfg, profile)), output_names=list(OUTPUTS[profile]),
                          do_constant_folding=True)


def _tensor_entries(names: tuple[str, ...], shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> list:
    return [{"name": n, "shape": list(shapes[n]), "dtype": dtypes[n]} for n in names]


def export_onnx(policy: Any, out_dir: str | Path, profiles: tuple[str, ...] = ("instruct", "control"),
                opset: int = DEFAULT_OPSET, checkpoint: str | Path | None = None) -> dict[str, Any]:
    """Export ``policy`` (an ``MHCPolicy``) to ``out_dir/<profile>.onnx`` + ``manifest.json``; returns the manifest.

    Raises ``ValueError`` naming the graph and the first problems if a graph breaks the export contract.
    """
    import onnx

    if opset < 17:
        raise ValueError(f"opset {opset} < 17 (LayerNormalization needs 17)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = policy.model.cpu().eval()
    cfg = model.cfg
    manifest: dict[str, Any] = {
        "format": FORMAT, "preset": cfg.name, "opset": opset, "batch": 1, "torch_version": torch.__version__,
        "checkpoint": None if checkpoint is None else str(checkpoint),
        "checkpoint_sha256": None if checkpoint is None else file_sha256(checkpoint),
        "config": cfg.to_dict(), "vocabulary": policy.vocabulary.words, "skills": policy.skills.names,
        "targets": policy.targets.names, "profiles": {},
    }
    for profile in profiles:
        path = out / f"{profile}.onnx"
        export_profile(model, profile, path, opset)
        proto = onnx.load(str(path))
        problems = graph_problems(proto)
        if problems:
            raise ValueError(f"{path}: {len(problems)} export-contract problem(s): {'; '.join(problems[:3])}")
        with torch.no_grad():
            ins = example_inputs(model, profile)
            outs = ProfileGraph(model, profile)(*ins)
        names = profile_inputs(cfg, profile)
        tensors = dict(zip(names + OUTPUTS[profile], ins + outs, strict=True))
        shapes = {n: tuple(t.shape) for n, t in tensors.items()}
        dtypes = {n: str(t.dtype).removeprefix("torch.") for n, t in tensors.items()}
        manifest["profiles"][profile] = {
            "file": path.name, "sha256": file_sha256(path),
            "inputs": _tensor_entries(names, shapes, dtypes),
            "outputs": _tensor_entries(OUTPUTS[profile], shapes, dtypes),
            "op_types": sorted({n.op_type for n in proto.graph.node}),
        }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(onnx_dir: str | Path) -> dict[str, Any]:
    """``onnx_dir/manifest.json``; raises ``FileNotFoundError``/``ValueError`` naming the folder."""
    path = Path(onnx_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"'{onnx_dir}' has no {MANIFEST} (run: mhc export --checkpoint C --out {onnx_dir})")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{path} has format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def configure_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Arguments of ``mhc export``."""
    parser.add_argument("--checkpoint", required=True, help="mHC checkpoint (.safetensors or a run folder)")
    parser.add_argument("--out", default="trt_engines", help="output folder (default: trt_engines)")
    parser.add_argument("--full", action="store_true", help="also export the 'full' profile")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= 17, default {DEFAULT_OPSET})")
    parser.add_argument("--no-verify", action="store_true",
                        help="skip the ONNX Runtime vs PyTorch parity check on fresh inputs")
    return parser


def verify_parity(policy: Any, out_dir: str | Path, profiles: tuple[str, ...], seed: int = 1234) -> dict[str, float]:
    """Max |ONNX Runtime − PyTorch| per profile on inputs different from the export example (seed ≠ 0)."""
    import onnxruntime as ort

    model = policy.model.cpu().eval()
    result = {}
    for profile in profiles:
        session = ort.InferenceSession(str(Path(out_dir) / f"{profile}.onnx"), providers=["CPUExecutionProvider"])
        ins = example_inputs(model, profile, seed=seed)
        with torch.no_grad():
            ref = ProfileGraph(model, profile)(*ins)
        feed = {n: t.numpy() for n, t in zip(profile_inputs(model.cfg, profile), ins, strict=True)}
        got = session.run(list(OUTPUTS[profile]), feed)
        result[profile] = max(float((torch.from_numpy(g) - r).abs().max()) for g, r in zip(got, ref, strict=True))
    return result


def run(args: argparse.Namespace) -> int:
    from mhc_model.checkpoint import load_policy
    from mhc_model.runtime import RuntimeLoadError
    from mhc_model.runtime.base import resolve_checkpoint

    profiles = ("instruct", "control", "full") if args.full else ("instruct", "control")
    try:
        path = resolve_checkpoint(args.checkpoint)
        policy, _ = load_policy(path)
        manifest = export_onnx(policy, args.out, profiles, args.opset, checkpoint=path)
    except (RuntimeLoadError, ValueError, ImportError) as exc:
        print(f"mhc export: error: {exc}", file=sys.stderr)
        return 2
    for entry in manifest["profiles"].values():
        print(f"{Path(args.out) / entry['file']}  inputs {[i['name'] for i in entry['inputs']]}")
    if not args.no_verify:
        try:
            for profile, diff in verify_parity(policy, args.out, profiles).items():
                print(f"parity {profile}: max |onnxruntime - torch| = {diff:.2e}")
        except ImportError:
            print("parity check skipped: onnxruntime is not installed")
    print(f"manifest: {Path(args.out) / MANIFEST}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure_parser(argparse.ArgumentParser(prog="mhc export", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
