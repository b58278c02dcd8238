"""``MHCPolicy``: the mHC network plus its vocabularies, with the LeRobot-style policy interface.

- ``forward(batch) -> (loss, loss_dict)`` for training (profile ``full``);
- ``predict_action_chunk(batch) -> (B, K, 8)`` (profile ``control`` with the cached instruction);
- ``select_action(batch) -> (B, 8)`` serves ``n_action_steps`` actions of each chunk from a queue;
- ``reset()`` clears the queue and the instruction cache (call at each episode start).

Batch keys: ``instruction_ids (B, L)``, ``instruction_mask (B, L)``, ``image (B, 3·F, S, S)`` in [0, 1],
``joint_history (B, Hj, 18)``; training labels: ``action``, ``motion``, ``motion_present``,
``plan_skill``, ``plan_target``, ``phase`` (see ``losses.head_losses``).
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np
import torch
from mhc_model.config import MHCConfig
from mhc_model.losses import distill_loss, head_losses, routing_losses
from mhc_model.mhc import MHC
from mhc_model.tokenizers import LabelVocabulary, Vocabulary, preprocess_image
from torch import nn

INPUT_KEYS = ("instruction_ids", "instruction_mask", "image", "joint_history")


class MHCPolicy(nn.Module):
    def __init__(
        self,
        config: MHCConfig,
        vocabulary: Vocabulary,
        skills: LabelVocabulary,
        targets: LabelVocabulary,
    ):
        super().__init__()
        for what, vocab, size in [("vocabulary", vocabulary, config.vocab_size),
                                  ("skills", skills, config.num_skills),
                                  ("targets", targets, config.num_targets)]:
            if len(vocab) > size:
                raise ValueError(f"{what} has {len(vocab)} entries, more than the config allows ({size})")
        self.config = config
        self.vocabulary, self.skills, self.targets = vocabulary, skills, targets
        self.model = MHC(config)
        self._queue: deque[torch.Tensor] = deque()
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    # training ------------------------------------------------------------------------------------
    def run_full(self, batch: dict[str, torch.Tensor], return_routing: bool = False) -> Any:
        """The ``full`` profile on a dataset batch: its ``INPUT_KEYS`` and, for a config that takes it, its
        ``instruction_age``. Returns the outputs dict (with ``return_routing``: and the per-layer routing)."""
        return self.model(*(batch[k] for k in INPUT_KEYS), profile="full", return_routing=return_routing,
                          instruction_age=batch.get("instruction_age"))

    def forward(self, batch: dict[str, torch.Tensor],
                distill_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (weighted heads + routing terms) and a dict of detached float terms. With a teacher's
        actions in the batch (``teacher_action_norm``), ``distill_weight`` × :func:`losses.distill_loss` too."""
        outputs, routings = self.run_full(batch, return_routing=True)
        return self.loss_terms(outputs, routings, batch, distill_weight)

    def loss_terms(self, outputs: dict[str, torch.Tensor], routings: list, batch: dict[str, torch.Tensor],
                   distill_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
        """:meth:`forward`'s losses from a :meth:`run_full` with routing already made on ``batch``."""
        cfg = self.config
        heads = head_losses(outputs, batch, cfg, self.model.heads.action_norm, self.model.heads.position_norm)
        task = sum(cfg.loss_weights.get(k, 0.0) * v for k, v in heads.items())
        if "teacher_action_norm" in batch:
            heads["distill"] = distill_loss(outputs, batch)
            task = task + distill_weight * heads["distill"]
        B = batch["image"].shape[0]
        modality = self.model.modality_labels("full").to(batch["image"].device).repeat(B)  # (B·T,)
        aux = routing_losses(routings, modality, cfg)
        loss = task + sum(aux.values()) if aux else task
        terms = {"loss": loss, "loss_task": task, **{f"loss_{k}": v for k, v in heads.items()},
                 **{f"aux_{k}": v for k, v in aux.items()}}
        values = torch.stack([v.detach().float() for v in terms.values()]).tolist()  # one device→host copy
        return loss, dict(zip(terms, values, strict=True))

    # inference -----------------------------------------------------------------------------------
    def reset(self) -> None:
        self._queue.clear()
        self._cache = None

    def tokenize(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.vocabulary.encode_batch(instructions, self.config.max_instruction_len)

    def make_batch(
        self, instruction: str, image: np.ndarray | list[np.ndarray], joint_history: np.ndarray,
        encoding: str = "rgb8", instruction_age: int = 0,
    ) -> dict[str, torch.Tensor]:
        """One observation → a batch of 1: any-size uint8 image (rgb8/bgr8/mono8) or the config's
        ``n_frames`` images oldest first (one image: a task's first tick, every frame is it),
        ``joint_history (Hj, 18)``, ``instruction_age``: ticks since the instruction's first tick."""
        ids, mask = self.tokenize([instruction])
        device = next(self.parameters()).device
        n = self.config.n_frames
        frames = image if isinstance(image, list) else [image] * n
        if len(frames) != n:
            raise ValueError(f"{len(frames)} images given, the config takes {n} frames")
        size = self.config.image_size
        image_t = torch.cat([preprocess_image(f, encoding, size) for f in frames])[None]  # (1, 3·n, S, S)
        joints = torch.as_tensor(np.asarray(joint_history, dtype=np.float32))[None]
        if joints.shape[1:] != (self.config.joint_history, 18):
            raise ValueError(f"joint_history shape {tuple(joints.shape[1:])} != ({self.config.joint_history}, 18)")
        if instruction_age < 0:
            raise ValueError(f"instruction_age {instruction_age} must be >= 0")
        return {"instruction_ids": ids.to(device), "instruction_mask": mask.to(device),
                "image": image_t.to(device), "joint_history": joints.to(device),
                "instruction_age": torch.tensor([[float(instruction_age)]], device=device)}

    def _instruction_cache(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-layer instruction K/V; recomputed only when the instruction ids or mask change."""
        ids, mask = batch["instruction_ids"], batch["instruction_mask"]
        c = self._cache
        if c is None or c[0].shape != ids.shape or not torch.equal(c[0], ids) or not torch.equal(c[1], mask):
            cache_k, cache_v = self.model.encode_instruction(ids, mask)
            self._cache = (ids.clone(), mask.clone(), cache_k, cache_v)
        return self._cache[2], self._cache[3]

    @torch.no_grad()
    def predict(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """All outputs (action chunk, motion, plan, phase) via ``control`` with the cached instruction."""
        cache_k, cache_v = self._instruction_cache(batch)
        return self.model(None, batch["instruction_mask"], batch["image"], batch["joint_history"],
                          profile="control", cache_k=cache_k, cache_v=cache_v,
                          instruction_age=batch.get("instruction_age"))

    @torch.no_grad()
    def predict_action_chunk(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, K, 8)``: K future actions (7 joint targets rad + gripper width m)."""
        return self.predict(batch)["action_chunk"]

    @torch.no_grad()
    def select_action(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``(B, 8)``: next action; predicts a new chunk when the first ``n_action_steps`` are used up."""
        if not self._queue:
            chunk = self.predict_action_chunk(batch)  # (B, K, 8)
            self._queue.extend(chunk[:, : self.config.n_action_steps].transpose(0, 1))
        return self._queue.popleft()

    def decode_plan(self, outputs: dict[str, torch.Tensor]) -> list[dict]:
        """Per batch item: ``{"plan": [[skill, target], ...], "phase": int}`` (``<none>`` slots dropped)."""
        skills = outputs["plan_skill_logits"].argmax(-1).cpu().numpy()
        targets = outputs["plan_target_logits"].argmax(-1).cpu().numpy()
        phases = outputs["phase_logits"].argmax(-1).cpu().numpy()
        result = []
        for s_row, t_row, phase in zip(skills, targets, phases, strict=True):
            plan = [[self.skills.name(int(s)), self.targets.name(int(t))] for s, t in zip(s_row, t_row, strict=True)
                    if int(s) != 0]
            result.append({"plan": plan, "phase": int(phase)})
        return result
