"""Bad input to load_runtime / mhc build-engine: one-line errors naming the value; TensorRT record checks.

TensorRT itself is not installed on these machines: tests that need it skip with that reason.
"""

import importlib.util
import json

import pytest
from mhc_model import engine
from mhc_model.checkpoint import save_checkpoint
from mhc_model.config import preset
from mhc_model.export import export_onnx, file_sha256
from mhc_model.latency import random_policy
from mhc_model.runtime import RuntimeLoadError, load_runtime

HAS_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("trt")
    policy = random_policy(preset("tiny"), seed=2)
    ckpt = save_checkpoint(root / "tiny", policy)
    export_onnx(policy, root / "engines", checkpoint=ckpt)
    return ckpt, root / "engines"


def _one_line(err, *needles):
    text = str(err.value)
    assert "\n" not in text
    for needle in needles:
        assert needle in text, text


def test_unknown_backend(exported):
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(exported[0], backend="openvino")
    _one_line(err, "'openvino'", "onnxruntime")


def test_missing_checkpoint(tmp_path):
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(tmp_path / "nope.safetensors")
    _one_line(err, "nope.safetensors")


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not safetensors")
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(bad, backend="torch", device="cpu")
    _one_line(err, "bad.safetensors")


def test_engine_dir_not_a_folder(exported, tmp_path):
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(exported[0], engine_dir=tmp_path / "none")
    _one_line(err, "none")


def _fake_engines(onnx_dir, **record):
    for profile in ("instruct", "control"):
        onnx_path, engine_path, record_path = engine.engine_paths(onnx_dir, profile)
        engine_path.write_bytes(b"serialized engine")
        rec = {"onnx_sha256": file_sha256(onnx_path), "tensorrt_version": "10.3.0", "gpu_name": "Orin"}
        rec.update(record)
        record_path.write_text(json.dumps(rec))


def test_engine_for_another_onnx_is_refused(exported):
    ckpt, onnx_dir = exported
    _fake_engines(onnx_dir, onnx_sha256="0" * 64)
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(ckpt, backend="tensorrt", engine_dir=onnx_dir)
    _one_line(err, "instruct.engine", "another ONNX", "--force-engine-update")


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_tensorrt_missing_is_a_load_error(exported):
    ckpt, onnx_dir = exported
    _fake_engines(onnx_dir)
    with pytest.raises(RuntimeLoadError) as err:
        load_runtime(ckpt, backend="tensorrt", engine_dir=onnx_dir)
    _one_line(err, "TensorRT backend unavailable", "'tensorrt'")
    # auto falls back (no CUDA here: torch CPU or ONNX Runtime)
    assert load_runtime(ckpt, backend="auto", engine_dir=onnx_dir, device="cpu").backend in ("onnxruntime", "torch")


def test_record_for_another_gpu_or_tensorrt_version(tmp_path):
    record = {"onnx_sha256": "a" * 64, "tensorrt_version": "10.3.0", "gpu_name": "Orin"}
    eng = tmp_path / "control.engine"
    assert engine.record_problem(record, eng, "a" * 64, "10.3.0", "Orin") is None
    gpu = engine.record_problem(record, eng, "a" * 64, "10.3.0", "NVIDIA H100 80GB HBM3")
    assert "control.engine" in gpu and "'Orin'" in gpu and "H100" in gpu and "\n" not in gpu
    version = engine.record_problem(record, eng, "a" * 64, "10.8.0", "Orin")
    assert "10.3.0" in version and "10.8.0" in version
    onnx = engine.record_problem(record, eng, "b" * 64, "10.3.0", "Orin")
    assert "another ONNX" in onnx


@pytest.mark.skipif(HAS_TRT, reason="tensorrt is installed here")
def test_build_engine_without_tensorrt_exits_2(exported, capsys):
    assert engine.main(["--onnx", str(exported[1]), "--fp16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "TensorRT backend unavailable" in err and "\n" not in err


@pytest.mark.skipif(not HAS_TRT, reason="TensorRT is not installed (it needs an NVIDIA GPU machine, e.g. Jetson)")
def test_tensorrt_engine_matches_onnxruntime(exported):  # pragma: no cover - not executed here
    import numpy as np

    ckpt, onnx_dir = exported
    assert engine.main(["--onnx", str(onnx_dir), "--force-engine-update"]) == 0
    trt_rt = load_runtime(ckpt, backend="tensorrt", engine_dir=onnx_dir)
    ort_rt = load_runtime(ckpt, backend="onnxruntime", engine_dir=onnx_dir)
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    history = np.zeros((trt_rt.joint_history_length, 18), np.float32)
    for rt in (trt_rt, ort_rt):
        rt.encode_instruction("pick up the red cube")
    a, b = trt_rt.step(image, "rgb8", history), ort_rt.step(image, "rgb8", history)
    assert np.abs(a.action_chunk - b.action_chunk).max() <= 1e-3
