"""Earlier camera frames and the ticks since the instruction as inputs: the same in training and at run
time, export, and the runtime's reset."""

import numpy as np
import onnx
import pytest
import torch
from mhc_model import export
from mhc_model.checkpoint import init_from, load_policy, save_checkpoint
from mhc_model.config import MHCConfig, preset
from mhc_model.data import ShardDataset, augment_images, build_vocabularies, list_shards, load_episode
from mhc_model.frames import FrameStack, frame_ticks
from mhc_model.latency import random_policy
from mhc_model.runtime import load_runtime
from mhc_model.synthetic import write_synthetic_shards
from mhc_model.tokenizers import preprocess_image

FRAMES = dict(image_history=2, image_stride=2, instruction_frame=True)
INSTRUCTION = "pick up the red cube and put it in the bin"


def _cfg() -> MHCConfig:
    return preset("tiny").replace(**FRAMES)


def test_frame_ticks_repeat_the_first_frame_before_the_start():
    ticks = frame_ticks(_cfg(), np.arange(5))
    assert ticks.tolist() == [[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 3], [0, 2, 4]]
    single = frame_ticks(preset("tiny"), np.arange(3))
    assert single.tolist() == [[0], [1], [2]]
    history = frame_ticks(preset("tiny").replace(image_history=3, image_stride=1), np.array([0, 5]))
    assert history.tolist() == [[0, 0, 0], [3, 4, 5]]


def test_config_fields_are_validated_and_default_to_one_frame():
    cfg = _cfg()
    assert (cfg.n_frames, cfg.frame_lag) == (3, 2)
    assert preset("tiny").n_frames == 1
    assert (preset("s").n_frames, preset("s").frame_lag) == (2, 0)  # the instruction's first frame + now
    old = preset("tiny").to_dict()
    for key in FRAMES:
        old.pop(key)
    assert MHCConfig.from_dict(old).n_frames == 1  # a checkpoint written before these fields
    with pytest.raises(ValueError, match="image_history=0"):
        preset("tiny").replace(image_history=0)
    with pytest.raises(ValueError, match="image_stride=-1"):
        preset("tiny").replace(image_stride=-1)
    with pytest.raises(ValueError, match="instruction_frame=1"):
        preset("tiny").replace(instruction_frame=1)


def test_run_time_frames_are_the_training_frames(tmp_path):
    cfg = _cfg()
    write_synthetic_shards(tmp_path, episodes=2, steps=12, image_size=48)
    episodes = [load_episode(p) for p in list_shards(tmp_path)]
    dataset = ShardDataset(episodes, cfg, *build_vocabularies(episodes))
    steps = len(episodes[0].arrays["actions"])
    batch = dataset.batch(torch.arange(steps))  # the first episode's samples, in order
    assert batch["image"].shape == (steps, 3 * cfg.n_frames, cfg.image_size, cfg.image_size)
    stack = FrameStack(cfg)
    for t in range(steps):
        frame = preprocess_image(episodes[0].arrays["images"][t], "rgb8", cfg.image_size).numpy()
        stacked = stack.push(frame)
        assert np.abs(stacked - batch["image"][t].numpy()).max() <= 1 / 255 + 1e-6, t  # uint8 storage
    stack.clear()
    first = stack.push(np.zeros((3, 4, 4), np.float32))
    assert first.shape == (9, 4, 4) and stack.ticks == 1


def test_augmentation_treats_the_frames_of_a_sample_alike():
    g = torch.Generator().manual_seed(0)
    frame = torch.rand(4, 3, 16, 16, generator=g)
    out = augment_images(torch.cat([frame, frame, frame], dim=1), g)
    assert torch.allclose(out[:, :3], out[:, 3:6]) and torch.allclose(out[:, :3], out[:, 6:])
    assert not torch.allclose(out[0, :3], out[1, :3])  # but samples differ


def test_augmentation_without_crop_keeps_every_pixel_in_place():
    g = torch.Generator().manual_seed(0)
    image = torch.zeros(2, 3, 16, 16)
    image[:, :, 5, 9] = 1.0  # one bright pixel
    out = augment_images(image, g, max_shift=0.0, max_zoom=0.0, jitter=0.0)
    assert torch.equal(out, image)
    jittered = augment_images(image, g, max_shift=0.0, max_zoom=0.0)
    assert all(jittered[b].amax(0).flatten().argmax() == 5 * 16 + 9 for b in range(2))  # colour only
    cropped = augment_images(image.repeat(8, 1, 1, 1), g, jitter=0.0)
    assert not torch.equal(cropped, image.repeat(8, 1, 1, 1))  # the default crop moves it


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("frames") / "tiny", random_policy(_cfg(), seed=4))


def test_export_takes_the_stacked_frames_and_stays_static(checkpoint, tmp_path):
    out = tmp_path / "onnx"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(out), "--no-verify"]) == 0
    model = onnx.load(str(out / "control.onnx"))
    image = next(i for i in model.graph.input if i.name == "image")
    cfg = _cfg()
    assert [d.dim_value for d in image.type.tensor_type.shape.dim] == [1, 9, cfg.image_size, cfg.image_size]
    assert export.graph_problems(model) == []


def test_runtime_keeps_frames_per_instruction_and_matches_the_policy(checkpoint):
    rng = np.random.default_rng(0)
    cfg = _cfg()
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    joints = rng.normal(0, 0.3, (cfg.joint_history, 18)).astype(np.float32)
    runtime = load_runtime(checkpoint, backend="torch", device="cpu", threads=1)
    runtime.encode_instruction(INSTRUCTION)
    outs = [runtime.step(image, "rgb8", joints).action_chunk for image in images]
    policy, _ = load_policy(checkpoint)
    # tick 3 sees the instruction frame (tick 0), tick 1 and tick 3
    ref = policy.predict(policy.make_batch(INSTRUCTION, [images[0], images[1], images[3]], joints))
    assert np.abs(outs[3] - ref["action_chunk"][0].numpy()).max() <= 1e-5
    assert not np.allclose(outs[3], runtime.step(images[3], "rgb8", joints).action_chunk)  # other frames now
    runtime.encode_instruction(INSTRUCTION)  # a new task starts over: its first tick is its instruction frame
    assert np.allclose(runtime.step(images[0], "rgb8", joints).action_chunk, outs[0], atol=1e-6)
    with pytest.raises(ValueError, match="2 images given, the config takes 3 frames"):
        policy.make_batch(INSTRUCTION, images[:2], joints)
    runtime.close()


AGE = dict(FRAMES, instruction_age=True)


def _age_policy(seed: int = 5):
    """A tiny policy that takes the ticks since the instruction, with a non-zero ``age_proj`` (it starts at
    zero, which would hide a wrong age)."""
    policy = random_policy(preset("tiny").replace(**AGE), seed=seed)
    with torch.no_grad():
        policy.model.vis_tokens.age_proj.weight.normal_(0.0, 1.0)
    return policy


def test_instruction_age_is_a_training_input_counted_from_the_shard_start(tmp_path):
    cfg = preset("tiny").replace(**AGE)
    old = preset("tiny").to_dict()
    del old["instruction_age"]
    assert MHCConfig.from_dict(old).instruction_age is False  # a checkpoint written before the field
    with pytest.raises(ValueError, match="instruction_age='yes'"):
        preset("tiny").replace(instruction_age="yes")
    write_synthetic_shards(tmp_path, episodes=2, steps=12, image_size=48)
    episodes = [load_episode(p) for p in list_shards(tmp_path)]
    dataset = ShardDataset(episodes, cfg, *build_vocabularies(episodes))
    steps = [len(e.arrays["actions"]) for e in episodes]
    batch = dataset.batch(torch.arange(sum(steps)))
    expected = [t for n in steps for t in range(n)]
    assert batch["instruction_age"].shape == (sum(steps), 1)
    assert batch["instruction_age"][:, 0].tolist() == expected


def test_the_model_needs_the_age_and_it_changes_the_output():
    policy = _age_policy()
    batch = policy.make_batch(INSTRUCTION, np.zeros((40, 40, 3), np.uint8), np.zeros((2, 18), np.float32),
                              instruction_age=3)
    with pytest.raises(ValueError, match="needs instruction_age"):
        policy.model(batch["instruction_ids"], batch["instruction_mask"], batch["image"], batch["joint_history"])
    later = dict(batch, instruction_age=batch["instruction_age"] + 10)
    assert not torch.allclose(policy.predict(batch)["motion"], policy.predict(later)["motion"])
    fresh = random_policy(preset("tiny").replace(**AGE), seed=5)  # age_proj starts at zero: no effect yet
    assert torch.equal(fresh.predict(batch)["motion"], fresh.predict(later)["motion"])
    with pytest.raises(ValueError, match="instruction_age -1"):
        policy.make_batch(INSTRUCTION, np.zeros((40, 40, 3), np.uint8), np.zeros((2, 18), np.float32),
                          instruction_age=-1)


def test_a_checkpoint_without_the_age_fine_tunes_into_one_with_it(tmp_path):
    """``init_from`` may turn ``instruction_age`` on: its projection starts at zero, same function."""
    old = random_policy(preset("tiny").replace(**FRAMES), seed=2)
    new = init_from(save_checkpoint(tmp_path / "old", old), preset("tiny").replace(**AGE), [])
    new.model.eval()
    batch = old.make_batch(INSTRUCTION, np.zeros((40, 40, 3), np.uint8), np.zeros((2, 18), np.float32))
    before = old.predict(batch)
    after = new.predict(dict(batch, instruction_age=torch.full((1, 1), 7.0)))
    assert new.config.instruction_age and all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_runtimes_feed_the_ticks_since_the_instruction(backend, tmp_path):
    path = save_checkpoint(tmp_path / "age", _age_policy())
    if backend == "onnxruntime":
        model = onnx.load(str(_exported(path, tmp_path) / "control.onnx"))
        assert [i.name for i in model.graph.input][2:4] == ["joint_history", "instruction_age"]
        assert export.graph_problems(model) == []
    rng = np.random.default_rng(1)
    cfg = preset("tiny").replace(**AGE)
    images = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(4)]
    joints = rng.normal(0, 0.3, (cfg.joint_history, 18)).astype(np.float32)
    runtime = load_runtime(path, backend=backend, device="cpu", threads=1)
    runtime.encode_instruction(INSTRUCTION)
    outs = [runtime.step(image, "rgb8", joints).motion for image in images]
    policy, _ = load_policy(path)
    ref = policy.predict(policy.make_batch(INSTRUCTION, [images[0], images[1], images[3]], joints, instruction_age=3))
    assert np.abs(outs[3] - ref["motion"][0].numpy()).max() <= 1e-5
    wrong = policy.predict(policy.make_batch(INSTRUCTION, [images[0], images[1], images[3]], joints, instruction_age=2))
    assert np.abs(outs[3] - wrong["motion"][0].numpy()).max() > 1e-4
    runtime.encode_instruction(INSTRUCTION)  # a new task counts from 0 again
    assert np.allclose(runtime.step(images[0], "rgb8", joints).motion, outs[0], atol=1e-6)
    runtime.close()


def _exported(checkpoint, tmp_path):
    out = tmp_path / "onnx"
    assert export.main(["--checkpoint", str(checkpoint), "--out", str(out), "--no-verify"]) == 0
    return out
