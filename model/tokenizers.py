"""Inputs → tokens: instruction vocabulary, image preprocessing, normalisers, token embedders.

Everything that maps raw robot data to model inputs is here; the statistics of the
normalisers are buffers, so they are saved in the checkpoint and exported with the module.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from mhc_model.config import JOINT_STATE_DIM, MHCConfig
from mhc_model.kinematics import ARM_JOINTS, POSE_FEATURES, PandaForwardKinematics
from torch import nn

PAD, UNK, BOS = "<pad>", "<unk>", "<bos>"
NONE = "<none>"
IMAGE_ENCODINGS = ("rgb8", "bgr8", "mono8")
_WORD = re.compile(r"[a-z0-9]+")


def split_words(text: str) -> list[str]:
    """Lower-case alphanumeric words: ``"Put the RED cube, left!"`` → ``[put, the, red, cube, left]``."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """Instruction words → ids. ``<pad>``=0, ``<unk>``=1, ``<bos>``=2; built from data, saved as JSON."""

    def __init__(self, words: Sequence[str]):
        if list(words[:3]) != [PAD, UNK, BOS]:
            raise ValueError(f"Vocabulary must start with {[PAD, UNK, BOS]}, got {list(words[:3])}")
        self.words = list(words)
        self.index = {w: i for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1) -> Vocabulary:
        """Vocabulary of every word seen ``min_count`` times, sorted for reproducibility."""
        counts = Counter(w for text in texts for w in split_words(text))
        return cls([PAD, UNK, BOS, *sorted(w for w, c in counts.items() if c >= min_count)])

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (max_len,) int64, mask (max_len,) bool)``: ``<bos>`` + words, truncated, padded."""
        ids = [self.index[BOS]] + [self.index.get(w, self.index[UNK]) for w in split_words(text)]
        ids = ids[:max_len]
        out = np.zeros(max_len, dtype=np.int64)
        out[: len(ids)] = ids
        mask = np.zeros(max_len, dtype=bool)
        mask[: len(ids)] = True
        return out, mask

    def encode_batch(self, texts: Sequence[str], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids (B, max_len) int64, mask (B, max_len) bool)``."""
        pairs = [self.encode(t, max_len) for t in texts]
        return (torch.from_numpy(np.stack([p[0] for p in pairs])),
                torch.from_numpy(np.stack([p[1] for p in pairs])))

    def to_json(self) -> str:
        return json.dumps(self.words)

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        return cls(json.loads(text))


class LabelVocabulary:
    """Names → class ids with ``<none>``=0 (plan skills and plan targets); unknown names → ``<none>``."""

    def __init__(self, names: Sequence[str]):
        if not names or names[0] != NONE:
            raise ValueError(f"LabelVocabulary must start with {NONE!r}")
        self.names = list(names)
        self.index = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def build(cls, names: Iterable[str]) -> LabelVocabulary:
        return cls([NONE, *sorted(set(names) - {NONE})])

    def __len__(self) -> int:
        return len(self.names)

    def id(self, name: str) -> int:
        return self.index.get(name, 0)

    def name(self, idx: int) -> str:
        return self.names[idx] if 0 <= idx < len(self.names) else NONE

    def to_json(self) -> str:
        return json.dumps(self.names)

    @classmethod
    def from_json(cls, text: str) -> LabelVocabulary:
        return cls(json.loads(text))


def image_to_tensor(image: np.ndarray, encoding: str = "rgb8") -> torch.Tensor:
    """uint8 ``(H, W, 3)`` rgb8/bgr8 or ``(H, W)``/``(H, W, 1)`` mono8 → float ``(3, H, W)`` RGB in [0, 1]."""
    if encoding not in IMAGE_ENCODINGS:
        raise ValueError(f"Image encoding {encoding!r} not supported ({', '.join(IMAGE_ENCODINGS)})")
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise ValueError(f"Image dtype {array.dtype} not supported (uint8)")
    if encoding == "mono8":
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim != 2:
            raise ValueError(f"mono8 image shape {array.shape} not supported ((H, W) or (H, W, 1))")
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"{encoding} image shape {array.shape} not supported ((H, W, 3))")
    elif encoding == "bgr8":
        array = array[:, :, ::-1]
    tensor = torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)  # (3, H, W)
    return tensor.float() / 255.0


def resize_images(images: torch.Tensor, size: int) -> torch.Tensor:
    """``(B, 3, H, W)`` float → ``(B, 3, size, size)``; centre-crops to a square, then area/bilinear resize."""
    _, _, h, w = images.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    images = images[:, :, top : top + side, left : left + side]
    if side == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)


def preprocess_image(image: np.ndarray, encoding: str, size: int) -> torch.Tensor:
    """Any-resolution uint8 rgb8/bgr8/mono8 image → model input ``(3, size, size)`` float in [0, 1]."""
    return resize_images(image_to_tensor(image, encoding)[None], size)[0]


class Normalizer(nn.Module):
    """``(x − mean) / std`` with statistics stored as buffers (saved and exported with the model)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def set_stats(self, mean: torch.Tensor | np.ndarray, std: torch.Tensor | np.ndarray, min_std: float = 1e-3):
        self.mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.std.copy_(torch.as_tensor(std, dtype=torch.float32).clamp_min(min_std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class LinguisticTokenizer(nn.Module):
    """``instruction_ids (B, L)`` → linguistic tokens ``(B, L, d)``."""

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.max_instruction_len, cfg.d_model))

    def forward(self, instruction_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(instruction_ids) + self.pos  # (B, L, d)


AGE_FEATURES = 3


def zero_linear(in_features: int, out_features: int) -> nn.Linear:
    """A linear layer that starts at zero and keeps that through ``MHC``'s init: an added input that
    changes nothing until trained (a fine-tune from a model without it starts unchanged)."""
    layer = nn.Linear(in_features, out_features)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    layer._keep_init = True
    return layer


def age_features(age: torch.Tensor) -> torch.Tensor:
    """``age (B, 1)`` ticks since the instruction → ``(B, 3)``: a/64, log(1+a)/log(65), 1/(1+a)."""
    age = age.float().clamp(min=0.0)
    return torch.cat([age / 64.0, torch.log1p(age) / math.log(65.0), 1.0 / (1.0 + age)], dim=-1)


class VisualTokenizer(nn.Module):
    """``image (B, 3·F, S, S)`` in [0, 1] (F = ``cfg.n_frames`` RGB frames stacked, oldest first) →
    normalised → conv stem → patch tokens ``(B, (S/p)², d)``. The first convolution sees every frame
    of a patch at once, so motion between frames is in the tokens without adding any. With
    ``cfg.instruction_age`` every patch token also gets the ticks since the instruction
    (:func:`age_features`) through ``age_proj``, which starts at zero."""

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        channels = 3 * cfg.n_frames
        self.norm = Normalizer(channels)
        self.norm.set_stats(torch.tensor([0.485, 0.456, 0.406]).repeat(cfg.n_frames),
                            torch.tensor([0.229, 0.224, 0.225]).repeat(cfg.n_frames))
        layers: list[nn.Module] = [nn.Conv2d(channels, cfg.stem_channels, kernel_size=4, stride=4), nn.GELU()]
        channels, stride = cfg.stem_channels, 4
        while stride < cfg.patch_size:
            out = min(channels * 2, cfg.d_model)
            layers += [nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1), nn.GELU()]
            channels, stride = out, stride * 2
        layers.append(nn.Conv2d(channels, cfg.d_model, kernel_size=1))
        self.stem = nn.Sequential(*layers)
        self.pos = nn.Parameter(torch.zeros(cfg.n_patches, cfg.d_model))
        self.age_proj = zero_linear(AGE_FEATURES, cfg.d_model) if cfg.instruction_age else None

    def forward(self, image: torch.Tensor, age: torch.Tensor | None = None) -> torch.Tensor:
        """``age (B, 1)``: ticks since the instruction, needed with ``cfg.instruction_age``."""
        x = (image - self.norm.mean[:, None, None]) / self.norm.std[:, None, None]
        x = self.stem(x)  # (B, d, S/p, S/p)
        tokens = x.flatten(2).transpose(1, 2) + self.pos  # (B, N_patches, d)
        if self.age_proj is not None:
            tokens = tokens + self.age_proj(age_features(age))[:, None, :]
        return tokens


class PhysicalTokenizer(nn.Module):
    """``joint_history (B, Hj, 18)`` (positions rad|m, velocities) → physical tokens + learned queries.

    Returns ``(B, Hj + Q, d)``: one token per past joint state, then the Q output query tokens. With
    ``cfg.ee_pose_features`` each joint-state token also gets the hand pose of that state (fixed forward
    kinematics, :class:`PandaForwardKinematics`) through ``pose_proj``, which starts at zero.
    """

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.norm = Normalizer(JOINT_STATE_DIM)
        self.proj = nn.Linear(JOINT_STATE_DIM, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(cfg.joint_history, cfg.d_model))
        self.queries = nn.Parameter(torch.randn(cfg.n_query_tokens, cfg.d_model) * 0.02)
        self.kinematics = PandaForwardKinematics() if cfg.ee_pose_features else None
        if self.kinematics is not None:
            self.pose_proj = zero_linear(POSE_FEATURES, cfg.d_model)

    def forward(self, joint_history: torch.Tensor) -> torch.Tensor:
        joints = self.proj(self.norm.normalize(joint_history)) + self.pos  # (B, Hj, d)
        if self.kinematics is not None:
            joints = joints + self.pose_proj(self.kinematics(joint_history[..., :ARM_JOINTS]))
        queries = self.queries + torch.zeros_like(joints[:, :1, :1])  # (B, Q, d) by broadcasting (static in ONNX)
        return torch.cat([joints, queries], dim=1)  # (B, Hj + Q, d)
