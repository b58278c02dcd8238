"""Soft clustering + balance terms prevent expert collapse on a synthetic task that collapses without them."""

import math

import pytest
import torch
from mhc_model.config import preset
from mhc_model.losses import routing_losses
from mhc_model.metrics import RoutingStats
from mhc_model.mhc import HierarchicalMoE


def _train_moe(steps: int = 150, tokens: int = 128, **changes) -> dict:
    """One MoE layer on tokens of 3 modalities sharing a strong common component (a collapse trap:
    every token first prefers the same experts, and the chosen experts get all the gradient)."""
    torch.manual_seed(0)
    cfg = preset("tiny").replace(experts_per_domain=8, top_k=2, **changes)
    moe = HierarchicalMoE(cfg)
    d = cfg.d_model
    g = torch.Generator().manual_seed(1)
    centres = torch.randn(3, d, generator=g) * 2.0
    common = torch.randn(d, generator=g) * 3.0
    target_map = torch.randn(d, d, generator=g) / math.sqrt(d)

    def sample(n):
        modality = torch.randint(0, 3, (n,), generator=g)
        x = common + centres[modality] + torch.randn(n, d, generator=g)
        return x[None], modality, torch.tanh(x @ target_map)[None]

    opt = torch.optim.Adam(moe.parameters(), lr=3e-3)
    for _ in range(steps):
        x, modality, y = sample(tokens)
        out, routing = moe(x)
        loss = (out - y).square().mean() + sum(routing_losses([routing], modality, cfg).values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if cfg.balance in ("bias", "both"):
            moe.update_bias(cfg.bias_update_rate)
        moe.load_accum.zero_()
    moe.eval()
    stats = RoutingStats(1, cfg.experts_per_domain)
    with torch.no_grad():
        x, modality, _ = sample(2048)
        _, routing = moe(x)
        stats.update([routing], modality)
    return stats.summary()


def test_balance_terms_prevent_collapse():
    collapsed = _train_moe(balance="none", mutual_info_coef=0.0, clustering_coef=0.0)
    balanced = _train_moe()  # defaults: soft clustering + mutual information + bias & balance loss
    print(f"\nwithout terms: entropy {collapsed['expert_entropy_min']:.3f} "
          f"dead {collapsed['dead_expert_pct_max']:.1f}% MaxVio {collapsed['expert_maxvio_mean']:.2f}")
    print(f"with terms:    entropy {balanced['expert_entropy_min']:.3f} dead {balanced['dead_expert_pct_max']:.1f}% "
          f"MaxVio {balanced['expert_maxvio_mean']:.2f} routing acc {balanced['routing_accuracy_mean']:.3f}")
    assert collapsed["expert_entropy_min"] < 0.6 and collapsed["dead_expert_pct_max"] > 25.0
    assert balanced["expert_entropy_min"] >= 0.9
    assert balanced["dead_expert_pct_max"] == 0.0
    assert balanced["routing_accuracy_mean"] > 0.99


@pytest.mark.parametrize("k", [1, 2])
def test_grouped_training_path_matches_gathered_path(k):
    """Training runs each expert once on its (padded) tokens, export uses the packed layout; same maths
    (outputs, gradients) as inference."""
    from mhc_model.mhc import ExpertBank

    torch.manual_seed(0)
    bank = ExpertBank(12, 32, 16)
    with torch.no_grad():  # non-zero biases: the packed layout carries them in its matrices
        bank.b1.normal_()
        bank.b2.normal_()
    x = torch.randn(300, 32, requires_grad=True)
    idx, weight = torch.randint(0, 12, (300, k)), torch.rand(300, k)
    outputs, grads = [], []
    for path in (bank.gathered, bank.grouped, bank.packed):
        y = path(x, idx, weight)
        outputs.append(y)
        grads.append(torch.autograd.grad(y.square().sum(), [x, bank.w1, bank.b1, bank.w2, bank.b2]))
    for output, grad in zip(outputs[1:], grads[1:], strict=True):
        torch.testing.assert_close(output, outputs[0], rtol=1e-5, atol=1e-5)
        for a, b in zip(grad, grads[0], strict=True):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_single_expert_weight_is_its_score_so_the_gate_learns_from_the_task():
    """At top_k 1 the chosen expert is weighted by its own score (renormalised it would be a constant 1)."""
    torch.manual_seed(0)
    moe = HierarchicalMoE(preset("tiny").replace(top_k=1))
    x = torch.randn(2, 5, moe.router.gate.in_features)
    out, routing = moe(x)
    out.square().sum().backward()  # the task output alone, no routing losses
    assert moe.expert_gate.weight.grad is not None and moe.expert_gate.weight.grad.abs().sum() > 0
    flat = x.reshape(10, -1)
    scores = routing.expert_logits.softmax(-1).gather(1, routing.expert_idx)  # (N, 1)
    domain_gate = moe.router(flat)[0].softmax(-1).gather(1, routing.domain_idx[:, None])
    idx = routing.domain_idx[:, None] * moe.n_experts + routing.expert_idx
    expected = moe.experts.gathered(flat, idx, scores * domain_gate) + moe.shared(flat)
    torch.testing.assert_close(out.reshape(10, -1), expected)


def test_routing_stats_leave_out_blocks_without_routing():
    """A shared-only block (``cfg.shared_only_layers``) has no routing: its row is left out, not NaN."""
    torch.manual_seed(0)
    cfg = preset("tiny")
    moe = HierarchicalMoE(cfg).eval()
    modality = torch.randint(0, 3, (64,))
    with torch.no_grad():
        _, routing = moe(torch.randn(1, 64, cfg.d_model))
    alone, behind_a_shared_only_block = RoutingStats(1, cfg.experts_per_domain), RoutingStats(2, cfg.experts_per_domain)
    alone.update([routing], modality)
    behind_a_shared_only_block.update([None, routing], modality)
    assert behind_a_shared_only_block.summary() == {**alone.summary(), "routed_layers": [1]}
    assert alone.summary()["routed_layers"] == [0] and RoutingStats(1, 4).summary() == {}
