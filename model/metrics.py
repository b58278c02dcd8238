"""Routing metrics: accuracy of the task router against modality labels, expert load balance.

Accumulate with ``RoutingStats.update(routings, modality)`` over a validation pass, then
``summary()``: per routing block (``routed_layers``; shared-only blocks are left out) routing accuracy,
MaxVio ((max − mean) / mean load, averaged over the domains that received tokens), normalised entropy
of the load (H / log E) and the dead-expert share.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from mhc_model.config import DOMAINS
from mhc_model.mhc import Routing


class RoutingStats:
    def __init__(self, n_layers: int, experts_per_domain: int):
        self.E = experts_per_domain
        self.correct = torch.zeros(n_layers)
        self.tokens = torch.zeros(n_layers)
        self.load = torch.zeros(n_layers, len(DOMAINS), experts_per_domain)

    @torch.no_grad()
    def update(self, routings: list[Routing | None], modality: torch.Tensor) -> None:
        for i, r in enumerate(routings):
            if r is None:
                continue
            self.correct[i] += (r.domain_idx == modality).sum().cpu().float()
            self.tokens[i] += modality.numel()
            global_idx = r.domain_idx[:, None] * self.E + r.expert_idx  # (N, k)
            counts = F.one_hot(global_idx.reshape(-1), len(DOMAINS) * self.E).sum(0).cpu().float()
            self.load[i] += counts.view(len(DOMAINS), self.E)

    def summary(self) -> dict[str, float | list[float]]:
        routed = (self.tokens > 0).nonzero().flatten()
        if not len(routed):
            return {}
        acc = (self.correct[routed] / self.tokens[routed]).tolist()
        maxvio, entropy, dead = [], [], []
        for layer in self.load[routed]:  # (3, E)
            used = layer.sum(-1) > 0
            lv = layer[used]  # domains that received tokens
            mean = lv.mean(-1, keepdim=True)
            maxvio.append(float(((lv.max(-1).values - mean.squeeze(-1)) / mean.squeeze(-1)).mean()))
            p = lv / lv.sum(-1, keepdim=True)
            h = -(p * p.clamp_min(1e-12).log()).sum(-1) / math.log(self.E)
            entropy.append(float(h.mean()))
            dead.append(float((lv == 0).float().mean() * 100.0))
        return {
            "routed_layers": routed.tolist(),
            "routing_accuracy": acc,
            "routing_accuracy_mean": sum(acc) / len(acc),
            "expert_maxvio": maxvio,
            "expert_maxvio_mean": sum(maxvio) / len(maxvio),
            "expert_entropy": entropy,
            "expert_entropy_min": min(entropy),
            "dead_expert_pct": dead,
            "dead_expert_pct_max": max(dead),
        }
