"""mhc_model.runtime torch backend: the contract's interface, input handling, CUDA-graph parity."""

import numpy as np
import pytest
import torch
from mhc_model.checkpoint import save_checkpoint
from mhc_model.config import preset
from mhc_model.latency import random_policy
from mhc_model.runtime import RuntimeLoadError, StepOutput, load_runtime
from mhc_model.runtime.torch_backend import TorchRuntime

INSTRUCTION = "pick up the red cube and put it in the bin"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("rt") / "tiny", random_policy(preset("tiny"), seed=5))


@pytest.fixture(scope="module")
def runtime(checkpoint):
    rt = load_runtime(checkpoint, backend="torch", device="cpu", threads=2)
    yield rt
    rt.close()


def _observation(cfg, seed=0, size=(48, 64)):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    history = rng.normal(0, 0.3, (cfg.joint_history, 18)).astype(np.float32)
    return image, history


def test_interface_shapes(runtime):
    cfg = runtime.config
    assert runtime.backend == "torch"
    assert runtime.joint_history_length == cfg.joint_history
    enc = runtime.encode_instruction(INSTRUCTION)
    assert (enc.num_words, enc.num_unknown) == (11, 0)
    image, history = _observation(cfg)
    out = runtime.step(image, "rgb8", history)
    assert isinstance(out, StepOutput)
    assert out.action_chunk.shape == (cfg.action_chunk, 8) and out.action_chunk.dtype == np.float32
    assert out.motion.shape == (cfg.motion_horizon, 7, 3)
    assert out.motion_present.shape == (7,) and np.all((out.motion_present >= 0) & (out.motion_present <= 1))
    assert isinstance(out.plan, list) and all(len(p) == 2 for p in out.plan)
    assert isinstance(out.phase, int) and 0 <= out.phase < cfg.plan_slots


def test_step_matches_policy_predict(checkpoint, runtime):
    from mhc_model.checkpoint import load_policy

    policy, _ = load_policy(checkpoint)
    image, history = _observation(runtime.config, seed=1, size=(120, 90))
    runtime.encode_instruction(INSTRUCTION)
    out = runtime.step(image, "rgb8", history)
    ref = policy.predict(policy.make_batch(INSTRUCTION, image, history))
    assert np.abs(out.action_chunk - ref["action_chunk"][0].numpy()).max() <= 1e-5
    assert np.abs(out.motion - ref["motion"][0].numpy()).max() <= 1e-5
    plan = policy.decode_plan(ref)[0]
    assert [list(p) for p in out.plan] == plan["plan"] and out.phase == plan["phase"]


def test_encodings_and_any_resolution(runtime):
    runtime.encode_instruction(INSTRUCTION)
    image, history = _observation(runtime.config, seed=2, size=(30, 41))
    rgb = runtime.step(image, "rgb8", history).action_chunk
    bgr = runtime.step(np.ascontiguousarray(image[:, :, ::-1]), "bgr8", history).action_chunk
    assert np.allclose(rgb, bgr, atol=1e-6)
    grey = np.full((30, 41), 128, np.uint8)
    assert runtime.step(grey, "mono8", history).action_chunk.shape == rgb.shape
    with pytest.raises(ValueError, match="yuv422"):
        runtime.step(image, "yuv422", history)
    with pytest.raises(ValueError, match="joint_history shape"):
        runtime.step(image, "rgb8", history[:1])


def test_instruction_counts_unknown_and_truncates(runtime):
    enc = runtime.encode_instruction("florp blarg zzz")
    assert enc.num_words == 3 and enc.num_unknown == 3  # the node rejects it: unknown >= words
    long = " ".join(["red cube"] * 200)
    enc = runtime.encode_instruction(long)
    assert enc.truncated and enc.num_tokens == runtime.config.max_instruction_len
    assert enc.num_words == 400 and enc.num_unknown == 0


def test_step_needs_an_instruction(checkpoint):
    rt = load_runtime(checkpoint, backend="torch", device="cpu")
    image, history = _observation(rt.config)
    with pytest.raises(RuntimeError, match="encode_instruction"):
        rt.step(image, "rgb8", history)


def test_auto_without_engines_on_cpu_is_torch(checkpoint):
    assert load_runtime(checkpoint, backend="auto", device="cpu").backend == "torch"


def test_folder_checkpoint(checkpoint, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "best.safetensors").write_bytes(checkpoint.read_bytes())
    assert load_runtime(tmp_path, backend="torch", device="cpu").joint_history_length >= 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none on this machine)")
@pytest.mark.parametrize("preset_name", ["tiny", "s"])
def test_cuda_graph_matches_eager(preset_name):
    from mhc_model.export import OUTPUTS, ProfileGraph, example_inputs
    from mhc_model.runtime.torch_backend import GraphedProfile

    policy = random_policy(preset(preset_name), seed=7)
    model = policy.model.cuda().eval()
    for profile in ("instruct", "control", "full"):
        graph = ProfileGraph(model, profile)
        graphed = GraphedProfile(graph, example_inputs(model, profile, seed=0))
        for seed in (1, 2):  # inputs different from the capture example
            inputs = example_inputs(model, profile, seed=seed)
            with torch.no_grad():
                ref = graph(*inputs)
            got = graphed(*inputs)
            diff = max(float((g - r).abs().max()) for g, r in zip(got, ref, strict=True))
            print(f"cuda-graph vs eager {preset_name}/{profile} seed {seed}: max abs diff {diff:.3e}")
            assert diff <= 1e-4, (profile, OUTPUTS[profile])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU (none on this machine)")
def test_cuda_runtime_uses_graphs(checkpoint):
    rt = load_runtime(checkpoint, backend="torch", device="cuda:0")
    assert rt.backend == "torch-cuda-graph"
    cpu = load_runtime(checkpoint, backend="torch", device="cpu")
    image, history = _observation(rt.config, seed=3)
    for r in (rt, cpu):
        r.encode_instruction(INSTRUCTION)
    diff = np.abs(rt.step(image, "rgb8", history).action_chunk - cpu.step(image, "rgb8", history).action_chunk).max()
    assert diff <= 1e-4
    bf16 = TorchRuntime(random_policy(preset("tiny")), device="cuda:0", precision="bf16")
    bf16.encode_instruction(INSTRUCTION)
    assert np.all(np.isfinite(bf16.step(image, "rgb8", history).action_chunk))


def test_cuda_graph_without_cuda_is_refused(checkpoint):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(RuntimeLoadError, match="cpu"):
        load_runtime(checkpoint, backend="torch-cuda-graph", device="cpu")
