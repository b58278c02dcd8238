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


def test_portable_models_export_no_onnxruntime_graphs(exported):
    _, _, out = exported
    manifest = json.loads((out / "manifest.json").read_text())
    assert not any("onnxruntime" in entry for entry in manifest["profiles"].values())
    assert not list(out.glob(f"*{export.ONNXRUNTIME_SUFFIX}"))


@pytest.fixture(scope="module")
def exported_fused(tmp_path_factory):
    """A tiny model with tanh-GELU experts (one and two per token), exported through the CLI; experts made
    large, so that the erf and tanh GELUs' difference shows in the outputs."""
    root = tmp_path_factory.mktemp("export_fused")
    out = {}
    for k in (1, 2):
        policy = random_policy(preset("tiny").replace(expert_activation="gelu_tanh", top_k=k), seed=4)
        with torch.no_grad():
            for layer in policy.model.moe_layers():
                layer.experts.w2.mul_(20.0)
                layer.experts.b1.normal_()
        ckpt = save_checkpoint(root / f"tiny_k{k}", policy)
        assert export.main(["--checkpoint", str(ckpt), "--out", str(root / f"k{k}"), "--full", "--no-verify"]) == 0
        out[k] = (policy, root / f"k{k}")
    return out


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.parametrize("profile", PROFILES)
def test_tanh_gelu_experts_get_an_onnxruntime_graph_with_its_moe_operator(exported_fused, k, profile):
    policy, out = exported_fused[k]
    entry = json.loads((out / "manifest.json").read_text())["profiles"][profile]
    fused_path = out / entry["onnxruntime"]["file"]
    assert entry["onnxruntime"]["file"] == f"{profile}{export.ONNXRUNTIME_SUFFIX}"
    assert entry["onnxruntime"]["sha256"] == export.file_sha256(fused_path)
    portable, fused = onnx.load(str(out / entry["file"])), onnx.load(str(fused_path))
    assert graph_problems(portable) == []  # TensorRT's graph is unchanged
    assert "MoE" in entry["onnxruntime"]["op_types"] and "MoE" not in entry["op_types"]
    assert any("MoE not in TensorRT's ONNX support list" in p for p in graph_problems(fused))
    assert graph_problems(fused, onnxruntime=True) == []
    assert len(fused.graph.node) < len(portable.graph.node)
    assert export.onnxruntime_file(entry) == fused_path.name and export.onnxruntime_file({"file": "x.onnx"}) == "x.onnx"

    session = ort.InferenceSession(str(fused_path), providers=["CPUExecutionProvider"])
    erf = random_policy(policy.config.replace(expert_activation="gelu"))
    erf.model.load_state_dict(policy.model.state_dict())
    inputs = example_inputs(policy.model, profile, seed=11)
    got = session.run(list(OUTPUTS[profile]), {n: t.numpy() for n, t in zip(INPUTS[profile], inputs, strict=True)})
    with torch.no_grad():
        ref, ref_erf = ProfileGraph(policy.model, profile)(*inputs), ProfileGraph(erf.model, profile)(*inputs)
    diff, diff_erf = (max(float(np.abs(g - r.numpy()).max()) for g, r in zip(got, refs, strict=True))
                      for refs in (ref, ref_erf))
    print(f"{profile}, k={k}: max |fused graph - model| {diff:.1e}, against erf-GELU experts {diff_erf:.1e}")
    assert diff <= 2e-6 and diff_erf > 10 * diff  # the test can fail: its model's GELU matters
    parity = export.verify_parity(policy, out, (profile,))
    assert set(parity) == {profile, f"{profile} (onnxruntime)"} and max(parity.values()) <= 1e-4


def test_export_cli_bad_checkpoint_is_one_line(tmp_path, capsys):
    assert export.main(["--checkpoint", str(tmp_path / "missing.safetensors"), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "missing.safetensors" in err and "\n" not in err
