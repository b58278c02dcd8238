"""Losses: per-head supervised losses and the routing terms (soft clustering, balance, z-loss).

Routing terms, per MoE layer (coefficients in ``MHCConfig``):
- clustering: cross-entropy of the task router against the token modality, with soft targets
  (label smoothing ``router_label_smoothing``).
- mutual information (ModuleFormer form, shifted to be ≥ 0): per domain over its routed tokens,
  ``log E − H(mean_x p(e|x)) + mean_x H(p(e|x))`` — balanced load, decisive tokens.
- balance (Switch): ``E · Σ_i f_i · P_i`` per domain (1.0 when balanced), if ``balance`` ∈ {loss, both}.
- z-loss (ST-MoE): ``mean(logsumexp(logits)²)`` of both routers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mhc_model.config import DOMAINS, MHCConfig
from mhc_model.mhc import Routing


def _entropy(p: torch.Tensor) -> torch.Tensor:
    return -(p * p.clamp_min(1e-9).log()).sum(-1)


def routing_losses(
    routings: list[Routing | None], modality: torch.Tensor, cfg: MHCConfig
) -> dict[str, torch.Tensor]:
    """``modality (N,)`` domain label of every token (token-major, same order as the routing tensors).

    Returns the weighted terms ``clustering``, ``mutual_info``, ``balance``, ``z_loss`` (means over layers).
    """
    layers = [r for r in routings if r is not None]
    zero = modality.new_zeros((), dtype=torch.float32)
    if not layers:
        return {}
    E, n_dom = cfg.experts_per_domain, len(DOMAINS)
    totals = {"clustering": zero, "mutual_info": zero, "balance": zero, "z_loss": zero}
    for r in layers:
        dom_logits = r.domain_logits.float()
        exp_logits = r.expert_logits.float()
        totals["clustering"] = totals["clustering"] + F.cross_entropy(
            dom_logits, modality, label_smoothing=cfg.router_label_smoothing
        )
        totals["z_loss"] = totals["z_loss"] + dom_logits.logsumexp(-1).square().mean() + exp_logits.logsumexp(
            -1
        ).square().mean()
        p = exp_logits.softmax(-1)  # (N, E)
        member = F.one_hot(r.domain_idx, n_dom).float()  # (N, 3) tokens routed to each domain
        count = member.sum(0)  # (3,)
        present = (count > 0).float()
        n_present = present.sum().clamp_min(1.0)
        p_mean = (member.t() @ p) / count.clamp_min(1.0)[:, None]  # (3, E)
        h_cond = (member.t() @ _entropy(p)[:, None]).squeeze(-1) / count.clamp_min(1.0)  # (3,)
        mi = (math.log(E) - _entropy(p_mean) + h_cond) * present
        totals["mutual_info"] = totals["mutual_info"] + mi.sum() / n_present
        if cfg.balance in ("loss", "both"):
            chosen = F.one_hot(r.expert_idx, E).float().sum(1)  # (N, E) 1 per chosen expert
            f = (member.t() @ chosen) / (count.clamp_min(1.0)[:, None] * cfg.top_k)  # (3, E)
            totals["balance"] = totals["balance"] + ((E * (f * p_mean).sum(-1)) * present).sum() / n_present
    n = len(layers)
    return {
        "clustering": cfg.clustering_coef * totals["clustering"] / n,
        "mutual_info": cfg.mutual_info_coef * totals["mutual_info"] / n,
        "balance": cfg.balance_coef * totals["balance"] / n,
        "z_loss": cfg.z_loss_coef * totals["z_loss"] / n,
    }


def imitated_mean(per_sample: torch.Tensor, imitate: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``per_sample (B,)`` over the imitated samples (``imitate (B,)``: 0 for a motion-only sample;
    None: all of them)."""
    weight = torch.ones_like(per_sample) if imitate is None else imitate.float()
    return (per_sample * weight).sum() / weight.sum().clamp_min(1.0)


def head_losses(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor], cfg: MHCConfig,
                action_norm, position_norm) -> dict[str, torch.Tensor]:
    """Supervised losses (unweighted). Labels in ``batch``: ``action (B, K, 8)``, ``motion (B, H, 7, 3)``,
    ``motion_present (B, 7) bool``, ``plan_skill``/``plan_target (B, P) int64``, ``phase (B,) int64``,
    optionally ``imitate (B,)``: 0 for a sample whose motion is learned but whose action, plan and phase are
    not (their losses average over the other samples). Regression targets are normalised with the
    model's own normalisers."""
    B = batch["action"].shape[0]
    imitate = batch.get("imitate")
    action_err = F.mse_loss(outputs["action_norm"], action_norm.normalize(batch["action"]), reduction="none")
    action = imitated_mean(action_err.flatten(1).mean(1), imitate)
    present = batch["motion_present"].float()  # (B, 7)
    err = (outputs["motion_norm"] - position_norm.normalize(batch["motion"])).square().mean(-1)  # (B, H, 7)
    motion = (err * present[:, None, :]).sum() / (present.sum() * err.shape[1]).clamp_min(1.0)
    presence = F.binary_cross_entropy_with_logits(outputs["motion_present_logits"], present)
    plan_err = 0.5 * (
        F.cross_entropy(outputs["plan_skill_logits"].flatten(0, 1), batch["plan_skill"].flatten(), reduction="none")
        + F.cross_entropy(outputs["plan_target_logits"].flatten(0, 1), batch["plan_target"].flatten(),
                          reduction="none")
    )
    plan = imitated_mean(plan_err.view(B, -1).mean(1), imitate)
    phase = imitated_mean(F.cross_entropy(outputs["phase_logits"], batch["phase"], reduction="none"), imitate)
    return {"action": action, "motion": motion, "presence": presence, "plan": plan, "phase": phase}


def distill_loss(outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Distillation: squared distance of the normalised action chunk to a teacher's on the same inputs
    (``batch["teacher_action_norm"] (B, K, 8)``), averaged over the imitated samples like the action loss."""
    err = (outputs["action_norm"] - batch["teacher_action_norm"].to(outputs["action_norm"].dtype)).square()
    return imitated_mean(err.flatten(1).mean(1), batch.get("imitate"))
