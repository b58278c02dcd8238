"""mhc export: static, TensorRT-compatible ONNX graphs per profile, a manifest, and ONNX Runtime parity."""

import json

import numpy as np
import onnx
import pytest
import torch
from mhc_model import export
from mhc_model.checkpoint import save_checkpoint
from mhc_model.config import preset
from mhc_model.export import INPUTS, OUTPUTS, ProfileGraph, example_inputs, graph_problems
from mhc_model.latency import random_policy
from onnx import TensorProto, helper

ort = pytest.importorskip("onnxruntime")
PROFILES = ("instruct", "control", "full")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    policy = random_policy(preset("tiny"), seed=3)
    ckpt = save_checkpoint(root / "tiny", policy)
    out = root / "onnx"
    assert export.main(["--checkpoint", str(ckpt), "--out", str(out), "--full", "--no-verify"]) == 0
    return policy, ckpt, out


def _static(info):
    dims = info.type.tensor_type.shape.dim
    return all(d.HasField("dim_value") and d.dim_value > 0 for d in dims)


@pytest.mark.parametrize("profile", PROFILES)
def test_graph_is_static_with_constant_topk_and_tensorrt_ops(exported, profile):
    _, _, out = exported
    model = onnx.load(str(out / f"{profile}.onnx"))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    g = inferred.graph
    assert [i.name for i in g.input] == list(INPUTS[profile])
    assert [o.name for o in g.output] == list(OUTPUTS[profile])
    for info in [*g.input, *g.output, *g.value_info]:
        assert _static(info), f"{info.name} has a non-static shape"
    assert len(g.value_info) > 20  # shape inference reached the inner tensors
    constants = {i.name for i in g.initializer} | {o for n in g.node if n.op_type == "Constant" for o in n.output}
    topks = [n for n in g.node if n.op_type == "TopK"]
    # one per MoE layer (instruct: the last layer's FFN feeds no cache, so the exporter drops it)
    assert len(topks) == preset("tiny").n_layers - (profile == "instruct")
    assert all(n.input[1] in constants for n in topks)
    ops = {n.op_type for n in g.node}
    assert not ops & {"NonZero", "Loop", "If", "Scan", "Unique", "Compress"}
    assert ops <= export.TENSORRT_ONNX_OPS, ops - export.TENSORRT_ONNX_OPS
    assert graph_problems(model) == []


def test_graph_problems_catches_contract_breaks():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    k = helper.make_tensor_value_info("k", TensorProto.INT64, [1])
    nz = helper.make_tensor_value_info("nz", TensorProto.INT64, None)
    v = helper.make_tensor_value_info("v", TensorProto.FLOAT, None)
    i = helper.make_tensor_value_info("i", TensorProto.INT64, None)
    graph = helper.make_graph([helper.make_node("NonZero", ["x"], ["nz"]),
                               helper.make_node("TopK", ["x", "k"], ["v", "i"])], "bad", [x, k], [nz, v, i])
    problems = " | ".join(graph_problems(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])))
    assert "non-static shape" in problems
    assert "NonZero is data-dependent" in problems
    assert "TopK k is not a constant" in problems


def test_manifest_records_names_shapes_and_checkpoint(exported):
    policy, ckpt, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    cfg = policy.config
    assert manifest["preset"] == "tiny" and manifest["opset"] >= 17 and manifest["batch"] == 1
    assert manifest["checkpoint_sha256"] == export.file_sha256(ckpt)
    control = manifest["profiles"]["control"]
    assert control["sha256"] == export.file_sha256(out / "control.onnx")
    shapes = {t["name"]: (t["shape"], t["dtype"]) for t in control["inputs"] + control["outputs"]}
    assert shapes["image"] == ([1, 3, cfg.image_size, cfg.image_size], "float32")
    assert shapes["cache_k"] == ([cfg.n_layers, 1, cfg.shared_heads, cfg.max_instruction_len, cfg.head_dim],
                                 "float32")
    assert shapes["action_chunk"] == ([1, cfg.action_chunk, 8], "float32")
    instruct = {t["name"]: t["dtype"] for t in manifest["profiles"]["instruct"]["inputs"]}
    assert instruct == {"instruction_ids": "int32", "instruction_mask": "float32"}


@pytest.mark.parametrize("profile", PROFILES)
def test_onnxruntime_matches_torch_on_new_inputs(exported, profile):
    policy, _, out = exported
    session = ort.InferenceSession(str(out / f"{profile}.onnx"), providers=["CPUExecutionProvider"])
    graph = ProfileGraph(policy.model, profile)
    for seed in (11, 12):  # the export example used seed 0
        inputs = example_inputs(policy.model, profile, seed=seed)
        with torch.no_grad():
            ref = graph(*inputs)
        got = session.run(list(OUTPUTS[profile]), {n: t.numpy() for n, t in zip(INPUTS[profile], inputs, strict=True)})
        for name, g, r in zip(OUTPUTS[profile], got, ref, strict=True):
            assert g.shape == tuple(r.shape)
            assert np.abs(g - r.numpy()).max() <= 1e-4, name


def test_export_cli_bad_checkpoint_is_one_line(tmp_path, capsys):
    assert export.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.safetensors" in err and "\n" not in err
