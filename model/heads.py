"""Output heads on the physical query tokens: action chunk, motion prediction, plan and phase.

Query token layout (Q = K/s + 7 + 2): ``[K/s action queries | 7 motion slots | plan | phase]``; each
action query decodes s = ``action_steps_per_query`` consecutive steps, the plan query all P sub-goals.
Fewer query tokens is most of what makes the ``control`` step cheap at batch 1.
Action and position statistics are buffers (``Normalizer``), so outputs leave the module in
physical units: radians / metres for actions, metres (world frame) for positions.
"""

from __future__ import annotations

import torch
from mhc_model.config import ACTION_DIM, BALL_SLOT, MOTION_SLOTS, MHCConfig
from mhc_model.tokenizers import Normalizer
from torch import nn


class OutputHeads(nn.Module):
    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.d_model
        self.action = nn.Linear(d, cfg.action_steps_per_query * ACTION_DIM)
        self.motion = nn.Linear(d, cfg.motion_horizon * 3 + 1)  # H positions + presence logit per slot
        self.plan = nn.Linear(d, cfg.plan_slots * (cfg.num_skills + cfg.num_targets))
        self.phase = nn.Linear(d, cfg.plan_slots)
        self.action_norm = Normalizer(ACTION_DIM)
        self.position_norm = Normalizer(3)

    def forward(self, queries: torch.Tensor, ball: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``queries (B, Q, d)`` → output dict (see ``MHC``); ``ball (B, H, 3)``, normalised, replaces the
        ball slot's motion (``mhc_model.ball_motion``)."""
        c = self.cfg
        B = queries.shape[0]
        act_q, motion_q, plan_q, phase_q = queries.split([c.n_action_queries, MOTION_SLOTS, 1, 1], dim=1)
        action_norm = self.action(act_q).float().reshape(B, c.action_chunk, ACTION_DIM)  # (B, K, 8)
        motion_raw = self.motion(motion_q).float()  # (B, 7, H·3 + 1)
        motion_norm = motion_raw[..., :-1].reshape(B, MOTION_SLOTS, c.motion_horizon, 3).transpose(1, 2)  # (B, H, 7, 3)
        if ball is not None:
            motion_norm = torch.cat([motion_norm[:, :, :BALL_SLOT], ball[:, :, None].float(),
                                     motion_norm[:, :, BALL_SLOT + 1 :]], dim=2)
        plan = self.plan(plan_q[:, 0]).float().reshape(B, c.plan_slots, -1)  # (B, P, n_skills + n_targets)
        return {
            "action_chunk": self.action_norm.denormalize(action_norm),
            "action_norm": action_norm,
            "motion": self.position_norm.denormalize(motion_norm),
            "motion_norm": motion_norm,
            "motion_present_logits": motion_raw[..., -1],  # (B, 7)
            "plan_skill_logits": plan[..., : c.num_skills],  # (B, P, n_skills)
            "plan_target_logits": plan[..., c.num_skills :],  # (B, P, n_targets)
            "phase_logits": self.phase(phase_q[:, 0]).float(),  # (B, P)
        }
