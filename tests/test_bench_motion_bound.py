"""bench/motion_bound.py: the frames and tick counts each ball-only network sees, its output, its schedule."""

import importlib.util
import itertools
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "motion_bound.py"
spec = importlib.util.spec_from_file_location("bench_motion_bound", SCRIPT)
motion_bound = importlib.util.module_from_spec(spec)
spec.loader.exec_module(motion_bound)

S = motion_bound.IMAGE_SIZE


def _frames(n: int) -> torch.Tensor:
    """``n`` frames whose pixels all hold their own index, so a picked frame names itself."""
    return torch.arange(n, dtype=torch.uint8)[:, None, None, None].expand(n, 3, S, S).contiguous()


@pytest.mark.parametrize(("variant", "expected", "age"), [
    ("current", [[13], [4]], [0, 0]),
    ("pair_age", [[12, 13], [3, 4]], [3, 4]),
    ("instruction_noage", [[10, 13], [0, 4]], [0, 0]),
    ("instruction", [[10, 13], [0, 4]], [3, 4]),
    ("instruction_stride8", [[10, 10, 13], [0, 0, 4]], [0, 0]),  # t − 8 before the first frame: the first
])
def test_each_variant_sees_its_frames_and_only_some_see_the_ticks(variant, expected, age):
    frames = _frames(20)
    now, first = torch.tensor([13, 4]), torch.tensor([10, 0])  # two episodes: starting at frame 10 and 0
    images, ages = motion_bound._inputs(frames, now, first, variant, crop=False, generator=None)
    assert images.shape == (2, len(expected[0]), 3, S, S)
    picked = (images[:, :, 0, 0, 0] * 255).round().long().tolist()
    assert picked == expected
    assert ages.tolist() == age


def test_augmentation_without_crop_moves_no_pixel():
    frames = torch.zeros(2, 3, S, S, dtype=torch.uint8)
    frames[1, :, 20, 30] = 255  # one bright pixel in the current frame
    g = torch.Generator().manual_seed(0)
    images, _ = motion_bound._inputs(frames, torch.tensor([1]), torch.tensor([0]), "current", False, g)
    assert images[0, 0].amax(0).flatten().argmax() == 20 * S + 30


def test_network_predicts_the_horizon_for_any_number_of_frames():
    for n_frames in (1, 3):
        net = motion_bound._model(n_frames, keypoints=4)
        out = net(torch.rand(2, n_frames, 3, S, S), torch.tensor([0.0, 5.0]))
        assert out.shape == (2, motion_bound.HORIZON, 3)


def test_scored_ticks_and_schedule():
    assert motion_bound.scored_ticks(12, motion_bound.HORIZON).tolist() == [1, 2, 3]  # t + 8 must be in the episode
    assert motion_bound.scored_ticks(9, motion_bound.HORIZON).tolist() == []
    steps = 100
    factors = [motion_bound.lr_factor(s, steps) for s in range(steps)]
    assert factors[0] == pytest.approx(0.2) and max(factors) == pytest.approx(factors[4])  # 5 warm-up steps
    assert factors[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(factors[4:]))
