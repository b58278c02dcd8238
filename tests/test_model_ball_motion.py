"""The ball head (``cfg.ball_keypoints``): soft-argmax keypoints, the ball slot only, added after the trunk
without changing the actions, exported in the ``control`` graph, and its trainer."""

import numpy as np
import onnx
import pytest
import torch
from mhc_model import ball_motion, export
from mhc_model.checkpoint import init_from, load_policy, save_checkpoint
from mhc_model.config import BALL_SLOT, MOTION_SLOTS, preset
from mhc_model.latency import random_policy
from mhc_model.synthetic import write_synthetic_shards
from mhc_model.tokenizers import AGE_FEATURES

INSTRUCTION = "pick up the red cube and put it in the bin"
AGE = dict(instruction_frame=True, instruction_age=True)


def _cfg(keypoints: int = 0):
    return preset("tiny").replace(**AGE, ball_keypoints=keypoints)


def test_ball_slot_is_the_simulations():
    mhc_sim = pytest.importorskip("mhc_sim")
    assert mhc_sim.OBJECT_SLOTS.index("ball") == BALL_SLOT < MOTION_SLOTS


def test_config_names_what_the_head_needs():
    with pytest.raises(ValueError, match=r"ball_keypoints=4 .*instruction_age"):
        preset("tiny").replace(instruction_frame=True, ball_keypoints=4)
    with pytest.raises(ValueError, match="ball_keypoints=-1"):
        _cfg(-1)
    assert preset("s").ball_keypoints == 0  # checkpoints written before the field load without the head


def test_keypoint_finds_a_blob_at_sub_pixel_precision():
    """A heat map that is high on one colour puts the keypoint at that colour's centroid, x along columns."""
    head = ball_motion.BallMotionHead(_cfg(1))
    with torch.no_grad():  # heat = 4 · LeakyReLU(10 · (red − blue) + 3)
        first, second = head.heat[0], head.heat[2]
        first.weight.zero_(), first.bias.fill_(3.0), second.weight.zero_(), second.bias.zero_()
        first.weight[0, 0, 0, 0], first.weight[0, 2, 0, 0] = 10.0, -10.0
        second.weight[0, 0, 0, 0] = 4.0
    side = head.grid.shape[0] ** 0.5
    frame = torch.zeros(1, 3, int(side), int(side))
    frame[0, 0, 10:13, 20:24] = 1.0  # rows 10–12, columns 20–23: centre (21.5 + 0.5, 11 + 0.5) px
    points, seen = head.keypoints(frame)
    x, y = ((points[0, 0] + 1) / 2 * side).tolist()
    assert abs(x - 22.0) < 0.05 and abs(y - 11.5) < 0.05
    empty, unseen = head.keypoints(torch.zeros_like(frame))  # a flat frame: the image centre, less visible
    assert empty.abs().max() < 1e-5 and seen[0, 0] > unseen[0, 0] + 10


def test_added_head_changes_only_the_ball_slot(tmp_path):
    old = random_policy(_cfg(), seed=2)
    new = init_from(save_checkpoint(tmp_path / "old", old), _cfg(4), [])
    new.model.eval()
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (40, 40, 3), dtype=np.uint8) for _ in range(2)]
    batch = old.make_batch(INSTRUCTION, frames, np.zeros((2, 18), np.float32), instruction_age=6)
    before, after = old.predict(batch), new.predict(batch)
    others = [s for s in range(MOTION_SLOTS) if s != BALL_SLOT]
    assert torch.equal(before["action_chunk"], after["action_chunk"])
    assert torch.equal(before["motion"][:, :, others], after["motion"][:, :, others])
    assert not torch.allclose(before["motion"][:, :, BALL_SLOT], after["motion"][:, :, BALL_SLOT])
    ball = new.model.ball_motion(batch["image"], batch["instruction_age"])
    assert torch.allclose(after["motion"][:, :, BALL_SLOT], new.model.heads.position_norm.denormalize(ball))
    assert new.model.ball_motion.mlp[0].in_features == 8 * 4 + AGE_FEATURES


def test_control_graph_with_the_head_is_static_and_matches_torch(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    policy = random_policy(_cfg(4), seed=3)
    out = tmp_path / "onnx"
    assert export.main(["--checkpoint", str(save_checkpoint(tmp_path / "ball", policy)), "--out", str(out),
                        "--no-verify"]) == 0
    assert export.graph_problems(onnx.load(str(out / "control.onnx"))) == []
    session = ort.InferenceSession(str(out / "control.onnx"), providers=["CPUExecutionProvider"])
    names = export.profile_inputs(policy.config, "control")
    inputs = export.example_inputs(policy.model, "control", seed=7)
    with torch.no_grad():
        ref = export.ProfileGraph(policy.model, "control")(*inputs)
    got = session.run(list(export.OUTPUTS["control"]), {n: t.numpy() for n, t in zip(names, inputs, strict=True)})
    motion = export.OUTPUTS["control"].index("motion")
    assert np.abs(got[motion] - ref[motion].numpy()).max() <= 1e-4


def test_trainer_fits_the_head_and_keeps_the_rest(tmp_path):
    data = write_synthetic_shards(tmp_path / "data", episodes=6, steps=16, image_size=40, task="intercept")
    source = random_policy(_cfg(), seed=4)
    ckpt = save_checkpoint(tmp_path / "src", source)
    out = tmp_path / "ball.safetensors"
    assert ball_motion.main(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--keypoints", "2",
                             "--steps", "30", "--batch-size", "16", "--device", "cpu", "--log-every", "10"]) == 0
    trained, extra = load_policy(out)
    assert trained.config.ball_keypoints == 2 and extra["ball_motion"]["steps"] == 30
    assert extra["ball_motion"]["held_out_ade_m"] > 0
    kept = {k: v for k, v in trained.model.state_dict().items() if not k.startswith("ball_motion.")}
    assert all(torch.equal(v, source.model.state_dict()[k]) for k, v in kept.items())
    with pytest.raises(SystemExit):
        ball_motion.main(["--checkpoint", str(ckpt), "--data", str(data), "--out", str(out), "--keypoints", "0"])
    moved = tmp_path / "moved.safetensors"  # the trained head onto another trunk
    other = random_policy(_cfg(), seed=5)
    other_ckpt = save_checkpoint(tmp_path / "other", other)
    assert ball_motion.main(["--checkpoint", str(other_ckpt), "--data", str(data), "--out", str(moved),
                             "--keypoints", "2", "--head-from", str(out), "--device", "cpu"]) == 0
    grafted, grafted_extra = load_policy(moved)
    for k, v in grafted.model.state_dict().items():
        donor = trained if k.startswith("ball_motion.") else other
        assert torch.equal(v, donor.model.state_dict()[k]), k
    assert grafted_extra["ball_motion"]["held_out_ade_m"] == pytest.approx(extra["ball_motion"]["held_out_ade_m"])
    assert ball_motion.main(["--checkpoint", str(other_ckpt), "--data", str(data), "--out", str(moved),
                             "--keypoints", "3", "--head-from", str(out), "--device", "cpu"]) == 2
