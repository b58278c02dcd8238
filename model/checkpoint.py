"""Checkpoints: ``safetensors`` weights with the config and vocabularies as JSON metadata. No pickle.

A checkpoint ``NAME.safetensors`` rebuilds its policy alone (config, vocabularies in the header
metadata); ``NAME.json`` beside it holds the same metadata for people and tools. Training state
for resume (optimizer moments, step) is a second safetensors file ``NAME.train.safetensors``.
Loading uses ``safetensors.torch.load_file`` only — never ``torch.load`` — so a file from an
untrusted path cannot execute code; a file that is not safetensors is rejected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mhc_model.config import MHCConfig
from mhc_model.policy import MHCPolicy
from mhc_model.tokenizers import LabelVocabulary, Vocabulary, split_words
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

FORMAT = "mhc-checkpoint-v1"


def _metadata(policy: MHCPolicy, extra: dict[str, Any] | None) -> dict[str, str]:
    meta = {
        "format": FORMAT,
        "config": policy.config.to_json(),
        "vocabulary": policy.vocabulary.to_json(),
        "skills": policy.skills.to_json(),
        "targets": policy.targets.to_json(),
    }
    if extra:
        meta["extra"] = json.dumps(extra, sort_keys=True)
    return meta


def save_checkpoint(path: str | Path, policy: MHCPolicy, extra: dict[str, Any] | None = None) -> Path:
    """Write ``path`` (``.safetensors`` added if missing) and the JSON beside it; returns the weights path."""
    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_name(path.name + ".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(policy, extra)
    state = {k: v.detach().contiguous().cpu() for k, v in policy.model.state_dict().items()}
    tmp = path.with_name(path.name + ".tmp")
    save_file(state, str(tmp), metadata=meta)
    tmp.replace(path)
    json_meta = {k: json.loads(v) if k != "format" else v for k, v in meta.items()}
    path.with_suffix(".json").write_text(json.dumps(json_meta, indent=2, sort_keys=True))
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """Header metadata of a checkpoint; raises ``ValueError`` naming the path if it is not one of ours."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"checkpoint {str(path)!r} has format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def load_policy(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[MHCPolicy, dict[str, Any]]:
    """Rebuild the policy from a checkpoint file alone; returns ``(policy, extra)`` (extra: training info)."""
    meta = read_metadata(path)
    policy = MHCPolicy(
        MHCConfig.from_json(meta["config"]),
        Vocabulary.from_json(meta["vocabulary"]),
        LabelVocabulary.from_json(meta["skills"]),
        LabelVocabulary.from_json(meta["targets"]),
    )
    state = load_file(str(path), device=str(map_location))
    policy.model.load_state_dict(state, strict=True)
    policy.to(map_location)
    return policy, json.loads(meta.get("extra", "{}"))


# config flags that add an input through a projection that starts at zero (tokenizers.zero_linear)
ZERO_START_INPUTS = ("ee_pose_features", "instruction_age")
# config fields that add an output head with fresh weights (trained after the trunk: mhc_model.ball_motion)
ADDED_HEADS = ("ball_keypoints",)


def init_from(path: str | Path, config: MHCConfig, instructions: list[str],
              keep_blocks: Sequence[int] | None = None) -> MHCPolicy:
    """A policy of ``config`` with the weights, vocabularies and normalisers of checkpoint ``path``
    (fine-tuning). Only ``image_size`` (and ``name``) may differ from the checkpoint's config: the
    visual position embeddings are resized bilinearly to the new patch grid; the inputs of
    ``ZERO_START_INPUTS`` may be turned on: their projections start at zero, so the fine-tune starts
    from the checkpoint's function; the heads of ``ADDED_HEADS`` may be added (fresh weights, the
    rest of the outputs unchanged); ``shared_only_layers`` may grow (those blocks keep their shared
    expert and drop their routers and routed experts); and ``dropout`` may change (training only, no
    weights). ``keep_blocks``: the checkpoint's blocks that become the new model's, in order (default:
    all of them); with it ``n_layers`` may shrink, and ``shared_only_layers`` may take any value under
    which no new routed block comes from a shared-only one. Raises if a training ``instructions`` word is
    outside the checkpoint's vocabulary (it would read as ``<unk>``).
    """
    source, _ = load_policy(path)
    old = source.config
    blocks = kept_blocks(path, old, config, keep_blocks)
    differ = sorted(k for k, v in config.to_dict().items()
                    if k not in ("name", "image_size", "dropout", "vocab_size", "num_skills", "num_targets",
                                 "n_layers", "shared_only_layers", *ADDED_HEADS)
                    and v != old.to_dict()[k] and not (k in ZERO_START_INPUTS and v))
    if differ:
        raise ValueError(f"--init {str(path)!r}: config differs from the checkpoint's in {differ} (only "
                         f"image_size and dropout may change, {' / '.join(ZERO_START_INPUTS)} be turned on, "
                         f"{' / '.join(ADDED_HEADS)} be set, shared_only_layers grow and blocks be dropped)")
    unknown = sorted({w for text in instructions for w in split_words(text)} - set(source.vocabulary.words))
    if unknown:
        raise ValueError(f"--init {str(path)!r}: instruction words {unknown[:5]} are not in its vocabulary")
    config = config.replace(vocab_size=old.vocab_size, num_skills=old.num_skills, num_targets=old.num_targets)
    policy = MHCPolicy(config, source.vocabulary, source.skills, source.targets)
    fresh = policy.model.state_dict()
    state = {}
    for key, value in source.model.state_dict().items():
        if key.startswith("ball_motion.") and config.ball_keypoints != old.ball_keypoints:
            continue
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{blocks.get(int(index))}.{rest}"
            if key not in fresh:  # a dropped block, or the routing of a block that became shared-only
                continue
        state[key] = value.float() if value.is_floating_point() else value
    pos = state["vis_tokens.pos"]  # (n_old, d) → (n_new, d) over the square patch grid
    side_old, side_new = math.isqrt(pos.shape[0]), config.image_size // config.patch_size
    grid = pos.T.reshape(1, -1, side_old, side_old)
    grid = F.interpolate(grid, size=(side_new, side_new), mode="bilinear", align_corners=False)
    state["vis_tokens.pos"] = grid.reshape(-1, side_new * side_new).T.contiguous()
    policy.model.load_state_dict({**{k: v for k, v in fresh.items() if k not in state}, **state}, strict=True)
    return policy


def kept_blocks(path: str | Path, old: MHCConfig, new: MHCConfig, keep: Sequence[int] | None) -> dict[int, int]:
    """Source block → new block index for ``init_from``; raises when the blocks do not fit ``new``."""
    keep = list(range(old.n_layers)) if keep is None else list(keep)
    where = f"--init {str(path)!r}"
    if len(keep) != new.n_layers:
        raise ValueError(f"{where}: keeping blocks {keep} gives {len(keep)} blocks, the config has "
                         f"n_layers={new.n_layers}")
    if sorted(set(keep)) != keep or not all(0 <= j < old.n_layers for j in keep):
        raise ValueError(f"{where}: blocks to keep {keep} must be increasing indices of the checkpoint's "
                         f"{old.n_layers} blocks")
    routed_from_shared = [j for i, j in enumerate(keep) if i >= new.shared_only_layers and j < old.shared_only_layers]
    if routed_from_shared:
        raise ValueError(f"{where}: shared_only_layers={new.shared_only_layers} would route in the checkpoint's "
                         f"blocks {routed_from_shared}, which have no routed experts (shared_only_layers="
                         f"{old.shared_only_layers})")
    return {j: i for i, j in enumerate(keep)}


def save_optimizer(path: str | Path, optimizer: torch.optim.Optimizer, extra: dict[str, Any]) -> None:
    """Optimizer tensors as safetensors; scalar state (steps, hyper-parameters) as JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    state = optimizer.state_dict()
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value) and value.dim() > 0:
                tensors[f"{pid}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{key}"] = float(value)
    meta = {"param_groups": json.dumps(state["param_groups"]), "scalars": json.dumps(scalars),
            "extra": json.dumps(extra)}
    tmp = Path(str(path) + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(path)


def load_optimizer(path: str | Path, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore ``optimizer`` from ``save_optimizer``'s file; returns its ``extra`` dict."""
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    tensors = load_file(str(path))
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in json.loads(meta["scalars"]).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = torch.tensor(value)
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return json.loads(meta["extra"])


def save_half_precision(src: str | Path, dst: str | Path) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with float32 tensors stored as float16 (half the bytes).

    The metadata (config, vocabularies) is kept; ``load_policy`` casts the weights back into the
    float32 model, so a shipped fp16 file loads like any other.
    """
    meta = read_metadata(src)
    tensors = {k: v.half() if v.dtype == torch.float32 else v for k, v in load_file(str(src)).items()}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(dst), metadata=meta)
    return dst


if __name__ == "__main__":  # python -m mhc_model.checkpoint SRC DST: write an fp16 copy (no ROS needed)
    import sys

    save_half_precision(sys.argv[1], sys.argv[2])
