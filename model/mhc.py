"""The mHC (Mixture-of-Hierarchical-Components) transformer, from primitives to the full model.

Order (like nanoGPT): attention primitive → ``HeadGroup`` → ``DomainGroupedAttention`` →
``TaskRouter`` → ``ExpertBank`` → ``HierarchicalMoE`` / ``DenseFFN`` → ``Block`` → ``MHC``.

Tokens come in three segments with a known, static modality:
``[linguistic (L) | visual (N_patches) | physical (Hj joint states + Q output queries)]``.

Attention mask (the "prefix-by-domain" mask) — why ``control`` ≡ ``full``:
- Per-domain head groups attend only inside their own segment (linguistic→linguistic with the
  instruction padding mask, visual→visual, physical→physical). A group's weights are used only by
  its own domain's tokens, so a profile without that domain never touches them (sliced out).
- Shared heads: linguistic queries attend to linguistic keys only; visual and physical queries
  attend to ``[linguistic keys (padding-masked) | visual keys | physical keys]``.
  So linguistic tokens never depend on the camera or the joints: the instruction's per-layer
  shared-head keys/values (the *instruction cache*) are computed once by the ``instruct`` profile,
  and the ``control`` profile (visual + physical tokens) attends to that cache. Every per-token
  operation (norms, routers, experts) is row-independent, so ``control`` reproduces ``full``.

Export contract: static shapes, constant top-k, experts applied with gathered weights
(``w1[idx]`` + batched matmul), no ``nonzero``/boolean indexing/``.tolist()`` in any forward.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from mhc_model.ball_motion import BallMotionHead
from mhc_model.config import DOMAINS, PROFILES, MHCConfig
from mhc_model.heads import OutputHeads
from mhc_model.tokenizers import LinguisticTokenizer, PhysicalTokenizer, VisualTokenizer
from torch import nn

LING, VIS, PHYS = DOMAINS
MASK_VALUE = -1e4  # additive mask; finite so fp16 engines do not produce NaN


def check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} unknown ({', '.join(PROFILES)})")


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Softmax attention. ``q (B, h, Tq, hs)``, ``k, v (B, h, Tk, hs)``, ``bias (B, 1, 1, Tk)`` additive.

    On CPU it is written as explicit matmuls so ``torch.utils.flop_counter`` counts it.
    """
    if q.is_cuda:
        mask = None if bias is None else bias.to(q.dtype)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))  # (B, h, Tq, Tk)
    if bias is not None:
        scores = scores + bias
    return scores.softmax(dim=-1) @ v  # (B, h, Tq, hs)


class HeadGroup(nn.Module):
    """The weights of a group of ``n_heads`` attention heads: QKV ``(3·h·hs, d)`` and output ``(d, h·hs)``
    projections (applied by :class:`DomainGroupedAttention`, stacked with the other groups')."""

    def __init__(self, d_model: int, n_heads: int, head_dim: int):
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * n_heads * head_dim, bias=False)
        self.proj = nn.Linear(n_heads * head_dim, d_model, bias=False)


class DomainGroupedAttention(nn.Module):
    """Per-domain head groups (within-domain attention) + shared heads (cross-domain, prefix mask).

    Computed as one attention over all heads ``[group heads | shared heads]``: each domain's tokens are
    projected by their own group's weights stacked with the shared heads' (one matmul per domain, in and
    out), and the prefix-by-domain mask (:meth:`MHC.attention_bias`) confines each group head to its own
    domain. Masked scores are exactly 0 after the softmax, so this is the per-group computation with a
    third of the attention operators (what a batch-1 CPU step is spent on). A profile without a domain
    never touches that domain's group weights.
    In the dense baseline there are no domain groups: ``shared_heads`` covers all heads.
    """

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.groups = nn.ModuleDict()
        if not cfg.dense and cfg.heads_per_domain > 0:
            self.groups.update({dom: HeadGroup(cfg.d_model, cfg.heads_per_domain, cfg.head_dim) for dom in DOMAINS})
        self.shared = HeadGroup(cfg.d_model, cfg.shared_heads, cfg.head_dim)
        self.group_heads = cfg.heads_per_domain if self.groups else 0
        self.n_heads, self.head_dim = self.group_heads + cfg.shared_heads, cfg.head_dim

    def qkv_weight(self, dom: str) -> torch.Tensor:
        """``(3·H·hs, d)``: rows ``[q | k | v]``, each ``[domain group heads | shared heads]``."""
        shared = self.shared.qkv.weight
        if dom not in self.groups:
            return shared
        d = shared.shape[1]
        return torch.cat([self.groups[dom].qkv.weight.view(3, -1, d), shared.view(3, -1, d)], dim=1).view(-1, d)

    def proj_weight(self, dom: str) -> torch.Tensor:
        """``(d, H·hs)``: the domain group's output projection beside the shared heads' (their sum)."""
        if dom not in self.groups:
            return self.shared.proj.weight
        return torch.cat([self.groups[dom].proj.weight, self.shared.proj.weight], dim=1)

    def forward(
        self,
        x: torch.Tensor,
        sizes: dict[str, int],
        bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        rows: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """``x (B, T, d)``: the tokens of the domains ``sizes`` (domain → length, in sequence order);
        ``bias (B, H, T, T_keys)`` from :meth:`MHC.attention_bias`; ``cache``: the instruction's keys and
        values ``(k, v)`` each ``(B, H, L, hs)`` when the linguistic segment is absent (the group heads' are
        zeros, masked out: :meth:`MHC.instruction_keys`); ``rows``: compute the output of the last ``rows``
        tokens only (all of them: None). Returns ``(B, rows or T, d)`` and, when the linguistic segment is
        present, its shared heads' ``(k, v)`` each ``(B, h_s, L, hs)`` (the instruction cache).
        """
        B, T, _ = x.shape
        H, hs, hg = self.n_heads, self.head_dim, self.group_heads
        qkv = self.per_domain(x, sizes, self.qkv_weight)  # (B, T, 3·H·hs)
        q, k, v = qkv.view(B, T, 3 * H, hs).transpose(1, 2).split(H, dim=1)  # each (B, H, T, hs)
        if LING in sizes:
            kv = (k[:, hg:, : sizes[LING]], v[:, hg:, : sizes[LING]])
        elif cache is None:
            raise ValueError("profile 'control' needs the instruction cache (cache_k, cache_v)")
        else:
            kv = None
            k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
        if rows is not None:
            q, bias = q[:, :, T - rows :], bias[:, :, T - rows :]
        o = attend(q, k, v, bias)  # (B, H, Tq, hs)
        o = o.transpose(1, 2).reshape(B, o.shape[2], H * hs)
        return self.per_domain(o, _tail(sizes, rows), self.proj_weight), kv

    def per_domain(self, x: torch.Tensor, sizes: dict[str, int], weight: Callable[[str], torch.Tensor]) -> torch.Tensor:
        """``x (B, T, ·)`` through each domain's ``weight(dom)`` (one matmul when no domain has a group)."""
        if not self.groups:
            return F.linear(x, weight(next(iter(sizes))))
        parts = x.split(list(sizes.values()), dim=1)
        out = [F.linear(part, weight(dom)) for dom, part in zip(sizes, parts, strict=True)]
        return torch.cat(out, dim=1) if len(out) > 1 else out[0]


def _tail(sizes: dict[str, int], rows: int | None) -> dict[str, int]:
    """The domains (and their token counts) of the last ``rows`` tokens of a sequence of ``sizes``."""
    if rows is None:
        return dict(sizes)
    tail: dict[str, int] = {}
    for dom in reversed(list(sizes)):
        take = min(sizes[dom], rows - sum(tail.values()))
        if take > 0:
            tail[dom] = take
    return dict(reversed(tail.items()))


class TaskRouter(nn.Module):
    """Level-1 router: per token p(domain | token) over {linguistic, visual, physical}; argmax picks."""

    def __init__(self, d_model: int):
        super().__init__()
        self.gate = nn.Linear(d_model, len(DOMAINS), bias=False)
        nn.init.normal_(self.gate.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (N, d)`` → ``(logits (N, 3), domain_idx (N,) int64)``."""
        logits = self.gate(x)
        return logits, logits.argmax(dim=-1)


class ExpertBank(nn.Module):
    """All fine-grained experts (3 domains × E) as stacked weights; applies only the chosen ones.

    Each token's k experts are applied through gathered weights (``w1[idx]``, batched matmul), so the
    FLOPs are k experts per token, shapes are static and the graph exports to ONNX.
    """

    def __init__(self, n_experts: int, d_model: int, hidden: int):
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(n_experts, d_model, hidden) / math.sqrt(d_model))
        self.b1 = nn.Parameter(torch.zeros(n_experts, hidden))
        self.w2 = nn.Parameter(torch.randn(n_experts, hidden, d_model) / math.sqrt(hidden) * 0.5)
        self.b2 = nn.Parameter(torch.zeros(n_experts, d_model))

    def forward(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``x (N, d)``, ``idx (N, k)`` global expert ids, ``weight (N, k)`` → ``Σ_k weight · E_idx(x)`` ``(N, d)``."""
        if self.training:
            return self.grouped(x, idx, weight)
        if torch.onnx.is_in_onnx_export():
            return self.packed(x, idx, weight)
        return self.gathered(x, idx, weight)

    def grouped(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Training path, same maths as :meth:`gathered`: each expert runs once on its tokens.

        Assignments are sorted by expert into an ``(E, C, d)`` buffer padded to the busiest expert's
        count ``C``, then two batched matmuls: a handful of kernels per layer whatever E is (a loop
        over experts was launch-bound on the GPU), and no per-token weight copies (bandwidth-bound,
        with a backward that scatters one gradient copy per token). ``C`` is data-dependent (one
        host sync), which is why inference uses :meth:`gathered` and export :meth:`packed`.
        """
        N, k = idx.shape
        n_experts, d, _ = self.w1.shape
        flat = idx.reshape(N * k)  # (N·k,)
        order = flat.argsort()  # assignments grouped by expert
        expert = flat.index_select(0, order)  # (N·k,) expert of each sorted assignment
        token = order // k  # (N·k,) its token
        # (E,) assignments per expert; scatter_add, not bincount, whose CUDA kernel reads min/max on the host
        counts = flat.new_zeros(n_experts).scatter_add_(0, flat, torch.ones_like(flat))
        capacity = int(counts.max())  # the one host sync: the padded buffer's size
        starts = counts.cumsum(0) - counts
        slot = expert * capacity + torch.arange(N * k, device=x.device) - starts.index_select(0, expert)
        buf = x.new_zeros(n_experts * capacity, d).index_copy(0, slot, x.index_select(0, token))
        buf = buf.view(n_experts, capacity, d)  # (E, C, d), zero rows past each expert's count
        h = F.gelu(torch.baddbmm(self.b1[:, None, :].to(x.dtype), buf, self.w1.to(x.dtype)))  # (E, C, h)
        y = torch.baddbmm(self.b2[:, None, :].to(x.dtype), h, self.w2.to(x.dtype))  # (E, C, d)
        y = y.reshape(n_experts * capacity, d).index_select(0, slot)  # (N·k, d) in sorted order
        y = y * weight.reshape(N * k).index_select(0, order)[:, None].to(y.dtype)
        return torch.zeros_like(x).index_add(0, token, y.to(x.dtype))

    def gathered(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """PyTorch inference path (CPU, CUDA graphs): each token's k experts through gathered weights."""
        N, k = idx.shape
        _, d, hidden = self.w1.shape
        dtype = x.dtype  # under autocast cast the bank once, then gather (halves the gathered bytes)
        flat = idx.reshape(N * k)  # (N·k,)
        w1 = self.w1.to(dtype).index_select(0, flat).view(N, k, d, hidden)  # (N, k, d, h)
        w2 = self.w2.to(dtype).index_select(0, flat).view(N, k, hidden, d)  # (N, k, h, d)
        b1 = self.b1.to(dtype).index_select(0, flat).view(N, k, 1, hidden)
        b2 = self.b2.to(dtype).index_select(0, flat).view(N, k, 1, d)
        h = torch.matmul(x[:, None, None, :], w1) + b1  # (N, k, 1, h): x broadcast over the k experts
        y = torch.matmul(F.gelu(h), w2) + b2  # (N, k, 1, d)
        y = y.view(N, k, d) * weight.to(y.dtype)[:, :, None]  # (N, k, d)
        return y.sum(dim=1)

    def packed(self, x: torch.Tensor, idx: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """Export path, same maths as :meth:`gathered`, laid out for ONNX Runtime at batch 1 on a CPU.

        Each bias rides as its matrix's last column against a constant 1 appended to the input, so an
        expert is one gather per matrix, and the gathered matrix is the left operand of a matrix-vector
        product (a batched GEMM packs its right operand: the token, not the weights). The stacking is
        folded into constants at export; run eagerly it would restack the bank every call, and PyTorch's
        CPU kernels multiply this layout about 5× slower than :meth:`gathered`'s.
        """
        N, k = idx.shape
        d = x.shape[1]
        w1 = torch.cat([self.w1, self.b1[:, None, :]], dim=1).transpose(1, 2)  # (E, h, d + 1)
        w2 = torch.cat([self.w2, self.b2[:, None, :]], dim=1).transpose(1, 2)  # (E, d, h + 1)
        x1 = torch.cat([x, x.new_ones(N, 1)], dim=1).view(N, 1, d + 1, 1)  # broadcast over the k experts
        h = torch.matmul(w1[idx], x1)  # (N, k, h, 1)
        y = torch.matmul(w2[idx], torch.cat([F.gelu(h), h.new_ones(N, k, 1, 1)], dim=2)).view(N, k, d)
        if k == 1:  # one expert: its weighted output (two operators fewer per layer than the sum)
            return y.view(N, d) * weight
        return (y * weight[:, :, None]).sum(1)  # Σ_k weight · y


class MLP(nn.Module):
    def __init__(self, d_model: int, hidden: int):
        super().__init__()
        self.fc = nn.Linear(d_model, hidden)
        self.proj = nn.Linear(hidden, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Routing(NamedTuple):
    """One layer's routing decisions for the tokens of a forward (N = B·T, token-major)."""

    domain_logits: torch.Tensor  # (N, 3)
    domain_idx: torch.Tensor  # (N,) chosen domain
    expert_logits: torch.Tensor  # (N, E) sub-expert logits of the chosen domain
    expert_idx: torch.Tensor  # (N, k) chosen experts inside the chosen domain (local ids)


class HierarchicalMoE(nn.Module):
    """y = p(d*|x) · Σ_{j∈topk} g_j(x) · E_{d*,j}(x) + shared(x), d* = argmax task router.

    Level 2 picks top-k of the chosen domain's E experts on ``softmax(gate) + bias[d*]``; the bias
    (aux-loss-free balancing, DeepSeek-V3) only steers the choice, the weights use unbiased scores,
    renormalised over the k chosen when k > 1. At k = 1 the weight is the expert's own score (as in
    Switch Transformer): renormalised it would be 1 and the gate would get no gradient from the task.
    """

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.n_experts, self.top_k = cfg.experts_per_domain, cfg.top_k
        self.router = TaskRouter(cfg.d_model)
        self.expert_gate = nn.Linear(cfg.d_model, len(DOMAINS) * cfg.experts_per_domain, bias=False)
        nn.init.normal_(self.expert_gate.weight, std=0.02)
        self.experts = ExpertBank(len(DOMAINS) * cfg.experts_per_domain, cfg.d_model, cfg.expert_hidden)
        self.shared = MLP(cfg.d_model, cfg.shared_expert_hidden) if cfg.shared_expert_hidden > 0 else None
        self.register_buffer("expert_bias", torch.zeros(len(DOMAINS), cfg.experts_per_domain))
        # assignments per (domain, expert) counted in training, consumed by update_bias()
        self.register_buffer("load_accum", torch.zeros(len(DOMAINS) * cfg.experts_per_domain), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, Routing]:
        """``x (B, T, d)`` → ``(y (B, T, d), Routing)``."""
        B, T, d = x.shape
        E, k, n_dom = self.n_experts, self.top_k, len(DOMAINS)
        flat = x.reshape(B * T, d)  # (N, d)
        domain_logits, domain_idx = self.router(flat)  # (N, 3), (N,)
        domain_gate = domain_logits.float().softmax(-1).amax(-1, keepdim=True)  # (N, 1) p(d*|x)
        all_logits = self.expert_gate(flat).float()  # (N, 3·E), domain-major
        # the other domains' experts are masked out: a softmax over all 3·E logits is the chosen domain's
        # (exactly: exp(MASK_VALUE) is 0) and top-k picks global expert ids without gathering logits
        expert_domain = torch.arange(n_dom * E, device=x.device) // E  # (3·E,)
        off = torch.where(expert_domain == torch.arange(n_dom, device=x.device)[:, None], 0.0, MASK_VALUE)  # (3, 3·E)
        scores = (all_logits + off[domain_idx]).softmax(-1)  # (N, 3·E), 0 outside d*
        choice = scores + (off + self.expert_bias.view(-1))[domain_idx]  # the bias steers, masked likewise
        global_idx = choice.topk(k, dim=-1).indices  # (N, k)
        weight = scores.gather(1, global_idx)  # (N, k)
        if k > 1:  # renormalised over the chosen k; at k = 1 that would be a constant 1 (Switch keeps p)
            weight = weight / weight.sum(-1, keepdim=True)
        y = self.experts(flat, global_idx, weight * domain_gate)  # (N, d)
        if self.shared is not None:
            y = y + self.shared(flat)
        if self.training:
            with torch.no_grad():
                self.load_accum += F.one_hot(global_idx.reshape(-1), n_dom * E).sum(0).float()
        expert_logits = all_logits.view(B * T, n_dom, E).gather(1, domain_idx[:, None, None].expand(B * T, 1, E))
        local_idx = global_idx - domain_idx[:, None] * E
        return y.view(B, T, d), Routing(domain_logits, domain_idx, expert_logits.squeeze(1), local_idx)

    @torch.no_grad()
    def update_bias(self, rate: float) -> None:
        """Nudge each domain's expert biases by ±rate toward balanced load, then clear the counts."""
        load = self.load_accum.view(len(DOMAINS), self.n_experts)
        used = load.sum(-1, keepdim=True) > 0
        delta = torch.sign(load.mean(-1, keepdim=True) - load) * rate
        self.expert_bias += torch.where(used, delta, torch.zeros_like(delta))
        self.expert_bias -= self.expert_bias.mean(-1, keepdim=True)
        self.load_accum.zero_()


class SharedExpertFFN(nn.Module):
    """A block's FFN without routing (``cfg.shared_only_layers``): the shared expert alone."""

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.shared = MLP(cfg.d_model, cfg.shared_expert_hidden)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.shared(x), None


class DenseFFN(MLP):
    """Dense baseline FFN with the same (y, routing) interface."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        return super().forward(x), None


class Block(nn.Module):
    """Pre-norm transformer block: domain-grouped attention + hierarchical MoE FFN (the shared expert alone
    in the first ``cfg.shared_only_layers`` blocks; dense FFN in the dense baseline)."""

    def __init__(self, cfg: MHCConfig, index: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = DomainGroupedAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ffn: nn.Module
        if cfg.dense:
            self.ffn = DenseFFN(cfg.d_model, cfg.dense_ffn_hidden)
        elif index < cfg.shared_only_layers:
            self.ffn = SharedExpertFFN(cfg)
        else:
            self.ffn = HierarchicalMoE(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        sizes: dict[str, int],
        bias: torch.Tensor,
        cache: tuple[torch.Tensor, torch.Tensor] | None,
        rows: int | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None, Routing | None]:
        """``x (B, T, d)`` tokens of ``sizes``; ``rows``: only the last ``rows`` tokens' outputs (the rest
        only give keys and values). Returns ``(B, rows or T, d)``, the instruction's ``(k, v)``, routing."""
        attn, kv = self.attn(self.ln1(x), sizes, bias, cache, rows)
        if rows is not None:
            x = x[:, x.shape[1] - rows :]
        x = x + self.drop(attn)
        y, routing = self.ffn(self.ln2(x))
        return x + self.drop(y), kv, routing


class MHC(nn.Module):
    """The mHC transformer.

    Inputs (batch B): ``instruction_ids (B, L) int64``, ``instruction_mask (B, L)`` (1 = word),
    ``image (B, 3·F, S, S)`` float RGB in [0, 1], ``cfg.n_frames`` frames stacked oldest first (see
    ``tokenizers.preprocess_image``, ``mhc_model.frames``),
    ``joint_history (B, Hj, 18)`` positions then velocities of the 9 joints, oldest first,
    ``instruction_age (B, 1)`` ticks since the instruction's first tick (with ``cfg.instruction_age``).

    Profiles (``profile=``): ``full`` all tokens; ``instruct`` linguistic tokens only, returns the
    instruction cache ``cache_k, cache_v (n_layers, B, h_s, L, hs)``; ``control`` visual + physical
    tokens attending to that cache (linguistic head groups sliced out).

    Outputs (dict): ``action_chunk (B, K, 8)`` rad / m, ``motion (B, H, 7, 3)`` metres (world frame,
    6 object slots + end effector), ``motion_present_logits (B, 7)``, ``plan_skill_logits (B, P, n_skills)``,
    ``plan_target_logits (B, P, n_targets)``, ``phase_logits (B, P)``, plus normalised ``action_norm`` /
    ``motion_norm`` used by the losses.
    """

    def __init__(self, cfg: MHCConfig):
        super().__init__()
        self.cfg = cfg
        self.ling_tokens = LinguisticTokenizer(cfg)
        self.vis_tokens = VisualTokenizer(cfg)
        self.phys_tokens = PhysicalTokenizer(cfg)
        self.domain_embed = nn.Parameter(torch.randn(len(DOMAINS), cfg.d_model) * 0.02)
        self.blocks = nn.ModuleList([Block(cfg, i) for i in range(cfg.n_layers)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.heads = OutputHeads(cfg)
        self.ball_motion = BallMotionHead(cfg) if cfg.ball_keypoints else None
        self.apply(self._init_linear)

    @staticmethod
    def _init_linear(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)) and not getattr(module, "_keep_init", False):
            nn.init.normal_(module.weight, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

    def segment_lengths(self, profile: str) -> dict[str, int]:
        """Tokens per domain present in ``profile`` (in sequence order)."""
        check_profile(profile)
        c = self.cfg
        sizes = {LING: c.max_instruction_len, VIS: c.n_patches, PHYS: c.n_physical_tokens}
        if profile == "instruct":
            return {LING: sizes[LING]}
        if profile == "control":
            return {VIS: sizes[VIS], PHYS: sizes[PHYS]}
        return sizes

    def modality_labels(self, profile: str) -> torch.Tensor:
        """``(T,)`` int64 domain index of every token of ``profile``, in sequence order."""
        return torch.cat([
            torch.full((n,), DOMAINS.index(dom), dtype=torch.long) for dom, n in self.segment_lengths(profile).items()
        ])

    @staticmethod
    def padding_bias(instruction_mask: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` 1 = word → additive ``(B, 1, 1, L)``."""
        return (1.0 - instruction_mask.float())[:, None, None, :] * MASK_VALUE

    def instruction_keys(
        self, cache_k: torch.Tensor, cache_v: torch.Tensor
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per layer, the instruction cache ``(n_layers, B, h_s, L, hs)`` as keys/values of every head
        ``(B, H, L, hs)``: zeros for the group heads (masked out by the bias), prepended once for all layers."""
        hg = self.blocks[0].attn.group_heads
        n, B, _, L, hs = cache_k.shape
        pad = cache_k.new_zeros(n, B, hg, L, hs)
        k, v = torch.cat([pad, cache_k], dim=2), torch.cat([pad, cache_v], dim=2)
        return [(k[i], v[i]) for i in range(n)]

    def attention_bias(self, sizes: dict[str, int], ling_bias: torch.Tensor) -> torch.Tensor:
        """The prefix-by-domain mask of the query tokens ``sizes`` as an additive ``(B, H, T, T_keys)`` bias.

        Keys are the query tokens, after the instruction's when its segment is absent (``control``
        attends to the cache). Group heads: keys of the query's own domain; shared heads: linguistic
        queries → linguistic keys, the others → every key; ``ling_bias (B, 1, 1, L)`` masks the padding.
        """
        attn = self.blocks[0].attn
        key_sizes = sizes if LING in sizes else {LING: ling_bias.shape[-1], **sizes}
        device = ling_bias.device
        q_dom, k_dom = (torch.cat([torch.full((n,), DOMAINS.index(d), device=device) for d, n in s.items()])
                        for s in (sizes, key_sizes))
        ling = DOMAINS.index(LING)
        group = q_dom[:, None] == k_dom[None, :]  # (T, T_keys)
        shared = (q_dom[:, None] != ling) | (k_dom[None, :] == ling)
        allowed = torch.stack([group] * attn.group_heads + [shared] * (attn.n_heads - attn.group_heads))
        static = torch.zeros(allowed.shape, device=device).masked_fill(~allowed, MASK_VALUE)  # (H, T, T_keys)
        rest = static.shape[-1] - ling_bias.shape[-1]  # keys after the instruction's
        if rest:
            ling_bias = torch.cat([ling_bias, ling_bias.new_zeros(ling_bias.shape[0], 1, 1, rest)], dim=-1)
        return static[None] + ling_bias  # (B, H, T, T_keys)

    def forward(
        self,
        instruction_ids: torch.Tensor | None = None,
        instruction_mask: torch.Tensor | None = None,
        image: torch.Tensor | None = None,
        joint_history: torch.Tensor | None = None,
        profile: str = "full",
        cache_k: torch.Tensor | None = None,
        cache_v: torch.Tensor | None = None,
        return_routing: bool = False,
        instruction_age: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor] | tuple[dict[str, torch.Tensor], list[Routing]]:
        """Run ``profile``; see the class docstring for shapes. ``return_routing`` adds per-layer routing."""
        check_profile(profile)
        if instruction_mask is None:
            raise ValueError("instruction_mask is required (padding mask of the instruction)")
        segments: dict[str, torch.Tensor] = {}
        if profile in ("full", "instruct"):
            if instruction_ids is None:
                raise ValueError(f"profile {profile!r} needs instruction_ids")
            segments[LING] = self.ling_tokens(instruction_ids) + self.domain_embed[0]
        if profile in ("full", "control"):
            if image is None or joint_history is None:
                raise ValueError(f"profile {profile!r} needs image and joint_history")
            if self.cfg.instruction_age and instruction_age is None:
                raise ValueError(f"profile {profile!r} needs instruction_age (config instruction_age is on)")
            segments[VIS] = self.vis_tokens(image, instruction_age) + self.domain_embed[1]
            segments[PHYS] = self.phys_tokens(joint_history) + self.domain_embed[2]
        if profile == "control" and (cache_k is None or cache_v is None):
            raise ValueError("profile 'control' needs cache_k and cache_v from profile 'instruct'")
        sizes = {dom: x.shape[1] for dom, x in segments.items()}
        bias = self.attention_bias(sizes, self.padding_bias(instruction_mask))
        x = torch.cat(list(segments.values()), dim=1) if len(segments) > 1 else segments[LING]
        # the heads read the physical query tokens only: at inference the last block computes just those
        # (training keeps every token: the routing losses use all of them)
        rows = None if self.training or return_routing or profile == "instruct" else self.cfg.n_query_tokens
        caches = self.instruction_keys(cache_k, cache_v) if profile == "control" else [None] * len(self.blocks)
        keys, values, routings = [], [], []
        for i, (block, cache) in enumerate(zip(self.blocks, caches, strict=True)):
            x, kv, routing = block(x, sizes, bias, cache, rows if i == len(self.blocks) - 1 else None)
            if kv is not None:
                keys.append(kv[0])
                values.append(kv[1])
            routings.append(routing)
        if profile == "instruct":
            out = {"cache_k": torch.stack(keys), "cache_v": torch.stack(values)}  # (n_layers, B, h_s, L, hs)
        else:
            ball = None if self.ball_motion is None else self.ball_motion(image, instruction_age)
            out = self.heads(self.ln_f(x[:, x.shape[1] - self.cfg.n_query_tokens :]), ball)  # (B, Q, d) queries
        return (out, routings) if return_routing else out

    def encode_instruction(
        self, instruction_ids: torch.Tensor, instruction_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The ``instruct`` profile: ``(cache_k, cache_v)`` each ``(n_layers, B, h_s, L, hs)``."""
        out = self.forward(instruction_ids, instruction_mask, profile="instruct")
        return out["cache_k"], out["cache_v"]

    def moe_layers(self) -> list[HierarchicalMoE]:
        return [b.ffn for b in self.blocks if isinstance(b.ffn, HierarchicalMoE)]

    def update_balance_bias(self) -> None:
        """After an optimiser step: aux-loss-free bias update of every MoE layer (if configured)."""
        if self.cfg.balance in ("bias", "both"):
            for layer in self.moe_layers():
                layer.update_bias(self.cfg.bias_update_rate)
        else:
            for layer in self.moe_layers():
                layer.load_accum.zero_()


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
