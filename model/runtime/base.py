"""What every inference backend shares: checkpoint resolution, tokenising, image preprocessing,
output decoding and the per-instruction cache.

A backend subclasses :class:`Runtime` and implements two calls on batch-1 numpy arrays:
``_run_instruct(ids, mask) -> (cache_k, cache_v)`` and ``_run_control(inputs, cache_k, cache_v) ->
{output name: array}``, ``inputs`` the ``control`` profile's other inputs by name
(``mhc_model.export.profile_inputs``). Shapes (batch 1):

- ``instruction_ids (1, L) int32``, ``instruction_mask (1, L) float32`` (1 = word);
- ``image (1, 3·F, S, S) float32`` RGB in [0, 1], the F frames of ``mhc_model.frames`` stacked;
  ``joint_history (1, Hj, 18) float32``; with the config's ``instruction_age``, ``instruction_age (1, 1)
  float32``, the ticks since the instruction (0 at its first ``step``);
- ``cache_k``, ``cache_v`` ``(n_layers, 1, h_s, L, head_dim) float32``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from mhc_model.config import JOINT_STATE_DIM, MHCConfig
from mhc_model.frames import FrameStack
from mhc_model.tokenizers import UNK, LabelVocabulary, Vocabulary, preprocess_image, split_words

LOG = logging.getLogger("mhc_model.runtime")
BACKENDS: tuple[str, ...] = ("auto", "torch", "torch-cuda-graph", "onnxruntime", "tensorrt")


class RuntimeLoadError(RuntimeError):
    """A runtime could not be built; the message is one line naming the bad value."""


@dataclass(frozen=True)
class InstructionEncoding:
    """What the tokenizer made of an instruction (the node rejects one made of unknown words only)."""

    text: str
    num_words: int  # words in the text (before truncation)
    num_unknown: int  # of those, words not in the vocabulary (→ <unk>)
    num_tokens: int  # tokens fed to the model, <bos> included, ≤ max_instruction_len
    truncated: bool  # True when words were cut at max_instruction_len


@dataclass
class StepOutput:
    """One control step's outputs (batch dimension removed).

    ``action_chunk (K, 8)``: 7 arm joint targets (rad) + gripper width (m), K future control periods.
    ``motion (H, 7, 3)``: future positions (m, world frame) of the 6 object slots + end effector.
    ``motion_present (7,)``: sigmoid probabilities that each slot is present.
    ``plan``: ``[(skill, target), ...]`` (``<none>`` slots dropped); ``phase``: index into the plan.
    """

    action_chunk: np.ndarray
    motion: np.ndarray
    motion_present: np.ndarray
    plan: list[tuple[str, str]]
    phase: int
    raw: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class PolicySpec:
    """Everything a backend needs besides the weights: config and vocabularies."""

    config: MHCConfig
    vocabulary: Vocabulary
    skills: LabelVocabulary
    targets: LabelVocabulary

    @classmethod
    def from_policy(cls, policy: Any) -> PolicySpec:
        return cls(policy.config, policy.vocabulary, policy.skills, policy.targets)

    @classmethod
    def from_checkpoint(cls, path: Path) -> PolicySpec:
        from mhc_model.checkpoint import read_metadata

        meta = read_metadata(path)
        return cls(MHCConfig.from_json(meta["config"]), Vocabulary.from_json(meta["vocabulary"]),
                   LabelVocabulary.from_json(meta["skills"]), LabelVocabulary.from_json(meta["targets"]))


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a folder holding ``best``/``last``.safetensors (also under ``checkpoints/``)."""
    p = Path(path).expanduser()
    if p.is_dir():
        for candidate in ("best.safetensors", "last.safetensors", "checkpoints/best.safetensors",
                          "checkpoints/last.safetensors"):
            if (p / candidate).is_file():
                return p / candidate
        found = sorted(f for f in p.glob("*.safetensors") if not f.name.endswith(".train.safetensors"))
        if len(found) == 1:
            return found[0]
        raise RuntimeLoadError(f"checkpoint folder '{path}' holds no single *.safetensors checkpoint")
    if not p.is_file():
        raise RuntimeLoadError(f"checkpoint '{path}' does not exist")
    return p


def checked_manifest(directory: str | Path, checkpoint: Path, what: str, rerun: str) -> dict[str, Any]:
    """The export manifest of ``directory``, checked to come from ``checkpoint`` (its sha256).

    ``what`` names the files ("ONNX files", "engines") and ``rerun`` the fix in the one-line
    :class:`RuntimeLoadError` raised for a missing manifest or another checkpoint's.
    """
    from mhc_model.export import file_sha256, read_manifest

    try:
        manifest = read_manifest(directory)
    except (FileNotFoundError, ValueError) as exc:
        raise RuntimeLoadError(str(exc)) from None
    recorded = manifest.get("checkpoint_sha256")
    if recorded is not None and recorded != file_sha256(checkpoint):
        raise RuntimeLoadError(f"{what} in '{directory}' were exported from another checkpoint than "
                               f"'{checkpoint}' (sha256 {recorded[:12]}…); {rerun}")
    return manifest


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class Runtime:
    """Batch-1 inference with the instruction cached between steps (``docs/contracts.md``).

    The camera frames of earlier steps that the config asks for (``image_history``,
    ``instruction_frame``) are kept here: each ``step`` adds its image, ``encode_instruction`` starts over.
    """

    backend = "base"

    def __init__(self, spec: PolicySpec):
        self.spec = spec
        self.config = spec.config
        self._cache: tuple[np.ndarray, np.ndarray] | None = None
        self._mask: np.ndarray | None = None
        self.encoding: InstructionEncoding | None = None
        self.frames = FrameStack(spec.config)

    # what subclasses implement -----------------------------------------------------------------
    def _run_instruct(self, ids: np.ndarray, mask: np.ndarray) -> tuple[Any, Any]:
        raise NotImplementedError

    def _run_control(self, inputs: dict[str, np.ndarray], cache_k: Any, cache_v: Any) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def close(self) -> None:
        """Release backend resources (sessions, engines, CUDA graphs)."""
        self._cache = None

    # public interface ----------------------------------------------------------------------------
    @property
    def joint_history_length(self) -> int:
        """Hj: past joint states (positions + velocities) ``step`` wants, oldest first."""
        return self.config.joint_history

    def tokenize(self, text: str) -> tuple[np.ndarray, np.ndarray, InstructionEncoding]:
        """``text`` → ``ids (1, L) int32``, ``mask (1, L) float32`` and its :class:`InstructionEncoding`."""
        if not isinstance(text, str):
            raise ValueError(f"instruction must be a str, got {type(text).__name__}")
        L = self.config.max_instruction_len
        ids, mask = self.spec.vocabulary.encode(text, L)
        words = split_words(text)
        unk = self.spec.vocabulary.index[UNK]
        unknown = sum(1 for w in words if self.spec.vocabulary.index.get(w, unk) == unk)
        enc = InstructionEncoding(text=text, num_words=len(words), num_unknown=unknown,
                                  num_tokens=int(mask.sum()), truncated=len(words) + 1 > L)
        return ids[None].astype(np.int32), mask[None].astype(np.float32), enc

    def encode_instruction(self, text: str) -> InstructionEncoding:
        """Tokenise and run the ``instruct`` profile once; the cache is used until the next call."""
        ids, mask, enc = self.tokenize(text)
        self._cache = self._run_instruct(ids, mask)
        self._mask = mask
        self.encoding = enc
        self.frames.clear()
        return enc

    def preprocess(self, image: np.ndarray, encoding: str, joint_history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Any-size uint8 image → ``(1, 3, S, S) float32``; ``joint_history (Hj, 18)`` → ``(1, Hj, 18)``."""
        img = preprocess_image(image, encoding, self.config.image_size).numpy()[None]
        joints = np.asarray(joint_history, dtype=np.float32)
        expected = (self.config.joint_history, JOINT_STATE_DIM)
        if joints.shape != expected:
            raise ValueError(f"joint_history shape {joints.shape} != {expected}")
        if not np.all(np.isfinite(joints)):
            raise ValueError("joint_history holds NaN or inf")
        return np.ascontiguousarray(img, dtype=np.float32), joints[None]

    def step(self, image: np.ndarray, encoding: str, joint_history: np.ndarray) -> StepOutput:
        """One control step: ``control`` profile on the cached instruction and the frames since it
        (see :class:`StepOutput`)."""
        if self._cache is None or self._mask is None:
            raise RuntimeError("no instruction: call encode_instruction(text) before step()")
        img, joints = self.preprocess(image, encoding, joint_history)
        stacked = self.frames.push(img[0])[None]  # (1, 3·F, S, S)
        inputs = {"instruction_mask": self._mask, "image": stacked, "joint_history": joints}
        if self.config.instruction_age:
            inputs["instruction_age"] = np.full((1, 1), self.frames.ticks - 1, dtype=np.float32)
        out = self._run_control(inputs, *self._cache)
        return self.decode(out)

    def decode(self, out: dict[str, np.ndarray]) -> StepOutput:
        """Batch-1 output arrays → :class:`StepOutput`."""
        skills = out["plan_skill_logits"][0].argmax(-1)
        targets = out["plan_target_logits"][0].argmax(-1)
        plan = [(self.spec.skills.name(int(s)), self.spec.targets.name(int(t)))
                for s, t in zip(skills, targets, strict=True) if int(s) != 0]
        return StepOutput(
            action_chunk=np.asarray(out["action_chunk"][0], dtype=np.float32),
            motion=np.asarray(out["motion"][0], dtype=np.float32),
            motion_present=sigmoid(np.asarray(out["motion_present_logits"][0], dtype=np.float32)),
            plan=plan,
            phase=int(out["phase_logits"][0].argmax()),
            raw=out,
        )
