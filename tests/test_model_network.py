"""mHC network: shapes, profile equivalence, counted FLOPs, export-friendly ops, policy interface."""

import numpy as np
import pytest
import torch
from mhc_model.config import preset
from mhc_model.flops import count_flops, example_inputs
from mhc_model.mhc import MHC
from mhc_model.policy import MHCPolicy
from mhc_model.tokenizers import LabelVocabulary, Vocabulary
from torch.utils._python_dispatch import TorchDispatchMode


def _model(name="tiny", seed=0, **changes):
    torch.manual_seed(seed)
    return MHC(preset(name).replace(**changes)).eval()


@pytest.mark.parametrize("name", ["tiny", "dense_tiny"])
def test_output_shapes(name):
    model = _model(name)
    c = model.cfg
    x = example_inputs(c, batch=3)
    out = model(**x)
    assert out["action_chunk"].shape == (3, c.action_chunk, 8)
    assert out["motion"].shape == (3, c.motion_horizon, 7, 3)
    assert out["motion_present_logits"].shape == (3, 7)
    assert out["plan_skill_logits"].shape == (3, c.plan_slots, c.num_skills)
    assert out["plan_target_logits"].shape == (3, c.plan_slots, c.num_targets)
    assert out["phase_logits"].shape == (3, c.plan_slots)
    k, v = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
    assert k.shape == (c.n_layers, 3, c.shared_heads, c.max_instruction_len, c.head_dim) == v.shape


@pytest.mark.parametrize("name", ["tiny", "dense_tiny"])
def test_control_with_cached_instruction_equals_full(name):
    model = _model(name, seed=3)
    x = example_inputs(model.cfg, batch=4, seed=5)
    x["instruction_mask"][1, 3:] = False  # different padding per item
    with torch.no_grad():
        full = model(**x, profile="full")
        cache_k, cache_v = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
        control = model(None, x["instruction_mask"], x["image"], x["joint_history"], profile="control",
                        cache_k=cache_k, cache_v=cache_v)
    for key in full:
        assert torch.allclose(full[key], control[key], atol=1e-5, rtol=0), key


def test_control_never_touches_the_linguistic_head_group():
    model = _model("tiny")
    x = example_inputs(model.cfg, batch=2, seed=1)
    with torch.no_grad():
        cache = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
        control = dict(instruction_mask=x["instruction_mask"], image=x["image"], joint_history=x["joint_history"],
                       profile="control", cache_k=cache[0], cache_v=cache[1])
        before_control, before_full = model(**control), model(**x)
        for block in model.blocks:  # only the linguistic tokens may read these weights
            block.attn.groups["linguistic"].qkv.weight.add_(0.5)
            block.attn.groups["linguistic"].proj.weight.add_(0.5)
        after_control, after_full = model(**control), model(**x)
    for key in before_control:
        assert torch.equal(before_control[key], after_control[key]), key
    assert not torch.allclose(before_full["action_chunk"], after_full["action_chunk"])
    assert count_flops(model, "control") < count_flops(model, "full")


def _per_group_attention(attn, segments, ling_bias):
    """Reference: each head group attends inside its domain, the shared heads across (prefix mask), one
    softmax per group — what :class:`DomainGroupedAttention` computes as one masked attention."""
    def heads(x, w, n):
        B, T, _ = x.shape
        return (x @ w.T).view(B, T, 3, n, -1).permute(2, 0, 3, 1, 4)

    def softmax_attend(q, k, v, bias=0.0):
        return ((q @ k.transpose(-2, -1)) / q.shape[-1] ** 0.5 + bias).softmax(-1) @ v

    def merge(o, w):
        B, n, T, hs = o.shape
        return o.transpose(1, 2).reshape(B, T, n * hs) @ w.T

    hg, hs_ = attn.group_heads, attn.n_heads - attn.group_heads
    out = {}
    for dom, x in segments.items():
        q, k, v = heads(x, attn.groups[dom].qkv.weight, hg)
        out[dom] = merge(softmax_attend(q, k, v, ling_bias if dom == "linguistic" else 0.0),
                         attn.groups[dom].proj.weight)
    q, k, v = heads(torch.cat(list(segments.values()), 1), attn.shared.qkv.weight, hs_)
    L = segments["linguistic"].shape[1]
    o_ling = softmax_attend(q[:, :, :L], k[:, :, :L], v[:, :, :L], ling_bias)
    bias = torch.cat([ling_bias, torch.zeros(*ling_bias.shape[:3], k.shape[2] - L)], -1)
    o_rest = softmax_attend(q[:, :, L:], k, v, bias)
    shared = merge(torch.cat([o_ling, o_rest], 2), attn.shared.proj.weight)
    return torch.cat(list(out.values()), 1) + shared


def test_one_masked_attention_equals_attention_per_head_group():
    model = _model("tiny", seed=2)
    c = model.cfg
    torch.manual_seed(4)
    sizes = model.segment_lengths("full")
    segments = {dom: torch.randn(2, n, c.d_model) for dom, n in sizes.items()}
    mask = torch.ones(2, c.max_instruction_len)
    mask[1, 5:] = 0.0
    ling_bias = model.padding_bias(mask)
    attn = model.blocks[0].attn
    with torch.no_grad():
        fused, (k, _) = attn(torch.cat(list(segments.values()), 1), sizes, model.attention_bias(sizes, ling_bias), None)
        reference = _per_group_attention(attn, segments, ling_bias)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    assert k.shape == (2, c.shared_heads, c.max_instruction_len, c.head_dim)


@pytest.mark.parametrize("name", ["tiny", "dense_tiny"])
def test_last_block_on_the_query_tokens_only_changes_nothing(name):
    """At inference the last block computes just the query tokens the heads read; training computes all."""
    model = _model(name, seed=5)
    x = example_inputs(model.cfg, batch=2, seed=6)
    with torch.no_grad():
        pruned = model(**x)
        every_token, _ = model(**x, return_routing=True)  # routing needs every token: nothing pruned
    for key in pruned:
        torch.testing.assert_close(pruned[key], every_token[key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("experts", "k"), [(4, 1), (4, 2), (8, 2), (8, 4)])
def test_topk_computes_only_k_experts(experts, k):
    model = _model("tiny", experts_per_domain=experts, top_k=k)
    c = model.cfg
    _, per_module = count_flops(model, "full", by_module=True)
    every_token = c.max_instruction_len + c.n_patches + c.n_physical_tokens
    for i in range(c.n_layers):  # the last block runs on the query tokens only
        tokens = c.n_query_tokens if i == c.n_layers - 1 else every_token
        expected = 2 * tokens * k * (2 * c.d_model * c.expert_hidden)  # two matmuls per chosen expert
        assert per_module[f"MHC.blocks.{i}.ffn.experts"] == expected  # independent of E


def test_shared_only_blocks_run_the_shared_expert_alone():
    """``shared_only_layers``: those blocks neither route nor gather experts; the rest are unchanged."""
    model = _model("tiny", seed=2, shared_only_layers=1)
    assert not any(k.startswith("blocks.0.ffn.") and ".shared." not in k for k in model.state_dict())
    x = example_inputs(model.cfg, batch=2, seed=4)
    with torch.no_grad():
        out, routings = model(**x, return_routing=True)
        cache_k, cache_v = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
        control = model(None, x["instruction_mask"], x["image"], x["joint_history"], profile="control",
                        cache_k=cache_k, cache_v=cache_v)
    assert routings[0] is None and all(r is not None for r in routings[1:])
    for key in out:
        torch.testing.assert_close(control[key], out[key], rtol=0, atol=1e-5)
    _, per_module = count_flops(model, "full", by_module=True)
    assert "MHC.blocks.0.ffn.experts" not in per_module and per_module["MHC.blocks.1.ffn.experts"] > 0


def test_control_flops_at_most_0_6_of_dense_baseline():
    s, dense = _model("s"), _model("dense_s")
    control = count_flops(s, "control")
    assert control <= 0.6 * count_flops(dense, "full")
    assert control <= 0.6 * count_flops(dense, "control")


class _OpRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(str(func.overloadpacket.__name__))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("profile", ["full", "instruct", "control"])
def test_forward_has_no_data_dependent_ops(profile):
    model = _model("tiny")
    x = example_inputs(model.cfg, batch=2)
    k, v = model.encode_instruction(x["instruction_ids"], x["instruction_mask"])
    with torch.no_grad(), _OpRecorder() as rec:
        model(**x, profile=profile, cache_k=k, cache_v=v)
    forbidden = {"nonzero", "masked_select", "_local_scalar_dense", "masked_scatter", "index_put", "unique"}
    assert not rec.ops & forbidden, rec.ops & forbidden
    assert "topk" in rec.ops


def _policy():
    torch.manual_seed(0)
    vocab = Vocabulary.build(["pick up the red cube"])
    return MHCPolicy(preset("tiny"), vocab, LabelVocabulary.build(["reach", "grasp"]),
                     LabelVocabulary.build(["red_cube", "bin"])).eval()


def test_policy_interface_queue_and_cache():
    policy = _policy()
    c = policy.config
    batch = policy.make_batch("pick up the red cube", np.zeros((48, 64, 3), np.uint8),
                              np.zeros((c.joint_history, 18), np.float32), encoding="bgr8")
    chunk = policy.predict_action_chunk(batch)
    assert chunk.shape == (1, c.action_chunk, 8)
    cache = policy._cache[2]
    actions = [policy.select_action(batch) for _ in range(c.n_action_steps)]
    assert all(a.shape == (1, 8) for a in actions)
    assert torch.allclose(torch.stack(actions, 1), chunk[:, : c.n_action_steps])
    assert policy._cache[2] is cache  # instruction encoded once
    policy.reset()
    assert policy._cache is None and not policy._queue
    plan = policy.decode_plan(policy.predict(batch))
    assert set(plan[0]) == {"plan", "phase"}
