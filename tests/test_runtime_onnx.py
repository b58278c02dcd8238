"""mhc_model.runtime ONNX Runtime backend: parity with the torch runtime, auto choice, stale exports."""

import numpy as np
import pytest
from mhc_model.checkpoint import save_checkpoint
from mhc_model.config import preset
from mhc_model.export import export_onnx
from mhc_model.latency import random_policy
from mhc_model.runtime import RuntimeLoadError, load_runtime

pytest.importorskip("onnxruntime")
INSTRUCTION = "put the blue cube in the bin"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    root = tmp_path_factory.mktemp("ort")
    policy = random_policy(preset("tiny"), seed=9)
    ckpt = save_checkpoint(root / "tiny", policy)
    export_onnx(policy, root / "onnx", checkpoint=ckpt)
    return ckpt, root / "onnx"


def test_onnxruntime_step_matches_torch(exported):
    ckpt, onnx_dir = exported
    ort_rt = load_runtime(ckpt, backend="onnxruntime", engine_dir=onnx_dir, threads=2)
    torch_rt = load_runtime(ckpt, backend="torch", device="cpu")
    assert ort_rt.backend == "onnxruntime"
    assert ort_rt.joint_history_length == torch_rt.joint_history_length
    rng = np.random.default_rng(4)
    for text in (INSTRUCTION, "move the ball left"):
        for rt in (ort_rt, torch_rt):
            rt.encode_instruction(text)
        for _ in range(2):
            image = rng.integers(0, 256, (72, 100, 3), dtype=np.uint8)
            history = rng.normal(0, 0.5, (torch_rt.joint_history_length, 18)).astype(np.float32)
            a, b = ort_rt.step(image, "rgb8", history), torch_rt.step(image, "rgb8", history)
            for name in ("action_chunk", "motion", "motion_present"):
                assert np.abs(getattr(a, name) - getattr(b, name)).max() <= 1e-4, name
            assert a.plan == b.plan and a.phase == b.phase
    ort_rt.close()


def test_auto_on_cpu_picks_onnxruntime_when_exported(exported):
    ckpt, onnx_dir = exported
    assert load_runtime(ckpt, backend="auto", engine_dir=onnx_dir, device="cpu").backend == "onnxruntime"


def test_export_of_another_checkpoint_is_refused(exported, tmp_path):
    _, onnx_dir = exported
    other = save_checkpoint(tmp_path / "other", random_policy(preset("tiny"), seed=10))
    with pytest.raises(RuntimeLoadError, match="another checkpoint") as err:
        load_runtime(other, backend="onnxruntime", engine_dir=onnx_dir)
    assert "\n" not in str(err.value)


def test_onnxruntime_without_engine_dir_exports_on_the_fly(exported):
    ckpt, _ = exported
    rt = load_runtime(ckpt, backend="onnxruntime")
    rt.encode_instruction(INSTRUCTION)
    out = rt.step(np.zeros((32, 32, 3), np.uint8), "rgb8", np.zeros((rt.joint_history_length, 18), np.float32))
    assert out.action_chunk.shape == (rt.config.action_chunk, 8)
    rt.close()


def test_engine_dir_without_manifest_is_refused(exported, tmp_path):
    ckpt, _ = exported
    with pytest.raises(RuntimeLoadError, match=r"manifest\.json"):
        load_runtime(ckpt, backend="onnxruntime", engine_dir=tmp_path)
