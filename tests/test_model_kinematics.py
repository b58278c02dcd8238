"""The model's fixed forward-kinematics layer against the simulation's Panda, and how it joins a model."""

import numpy as np
import pybullet
import torch
from mhc_model.checkpoint import init_from, save_checkpoint
from mhc_model.config import preset
from mhc_model.flops import example_inputs
from mhc_model.kinematics import PandaForwardKinematics
from mhc_model.latency import random_policy
from mhc_sim import TabletopWorld, WorldConfig, make_expert


def test_hand_pose_matches_the_simulated_arm():
    """Joint positions of an expert pick-and-place → the world's own grasp-target pose, within 0.1 mm."""
    fk = PandaForwardKinematics()
    with TabletopWorld(WorldConfig(render=False)) as world:
        obs = world.reset("pick_place", 3)
        expert = make_expert(world.episode)
        heights = []
        for _ in range(60):
            pose = fk(torch.as_tensor(obs.joint_positions[:7], dtype=torch.float32)).numpy()
            rotation = np.asarray(pybullet.getMatrixFromQuaternion(obs.ee_orientation)).reshape(3, 3)
            np.testing.assert_allclose(pose[9:], obs.ee_position, atol=1e-4)
            np.testing.assert_allclose(pose[:9].reshape(3, 3), rotation, atol=1e-4)
            heights.append(obs.ee_position[2])
            obs = world.step(expert.act(obs))
    assert max(heights) - min(heights) > 0.1  # the hand went down to the cube: not one pose checked 60 times


def test_batched_over_history():
    fk = PandaForwardKinematics()
    q = torch.randn(3, 4, 7)
    np.testing.assert_allclose(fk(q)[1, 2].numpy(), fk(q[1, 2]).numpy(), atol=1e-6)


def test_turning_pose_features_on_keeps_the_checkpoints_function(tmp_path):
    """``init_from`` into a config with ``ee_pose_features``: the new projection starts at zero, same outputs."""
    old = random_policy(preset("tiny").replace(ee_pose_features=False))
    save_checkpoint(tmp_path / "old.safetensors", old)
    new = init_from(tmp_path / "old.safetensors", preset("tiny"), [])
    assert new.config.ee_pose_features and not old.config.ee_pose_features
    model = new.model.eval()
    inputs = example_inputs(new.config)
    with torch.no_grad():
        before, after = old.model(**inputs, profile="full"), model(**inputs, profile="full")
        assert all(torch.equal(before[k], after[k]) for k in before)
        model.phys_tokens.pose_proj.weight.normal_()  # and once trained, the hand pose moves the output
        moved = model(**inputs, profile="full")
    assert not torch.allclose(moved["action_chunk"], before["action_chunk"])
