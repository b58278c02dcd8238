"""Instruction vocabulary and image preprocessing."""

import numpy as np
import pytest
import torch
from mhc_model.tokenizers import LabelVocabulary, Vocabulary, preprocess_image


def test_vocabulary_unknown_truncation_round_trip():
    vocab = Vocabulary.build(["Pick up the red cube", "put it in the bin"])
    ids, mask = vocab.encode("pick up the PURPLE cube", max_len=8)
    assert ids[0] == vocab.index["<bos>"]
    assert ids[4] == vocab.index["<unk>"]
    assert mask.sum() == 6 and ids[6:].tolist() == [0, 0]
    ids, mask = vocab.encode("the " * 50, max_len=8)
    assert mask.all() and len(ids) == 8
    assert Vocabulary.from_json(vocab.to_json()).words == vocab.words
    labels = LabelVocabulary.build(["grasp", "reach"])
    assert labels.id("grasp") == 1 and labels.id("fly") == 0 and labels.name(0) == "<none>"


@pytest.mark.parametrize("shape", [(48, 64), (480, 640), (96, 96), (31, 17)])
def test_images_any_resolution_and_encoding(shape):
    rgb = np.random.default_rng(0).integers(0, 256, (*shape, 3), dtype=np.uint8)
    a = preprocess_image(rgb, "rgb8", 32)
    b = preprocess_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8", 32)
    assert a.shape == (3, 32, 32) and a.dtype == torch.float32
    assert torch.allclose(a, b)
    mono = preprocess_image(rgb[:, :, 0], "mono8", 32)
    assert mono.shape == (3, 32, 32) and torch.equal(mono[0], mono[2])
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0


def test_bad_encoding_is_named():
    with pytest.raises(ValueError, match="'yuv422' not supported"):
        preprocess_image(np.zeros((4, 4, 3), np.uint8), "yuv422", 8)
