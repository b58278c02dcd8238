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


def test_skipped_head_groups_cost_no_flops():
    model = _model("tiny")
    full_total, full_mod = count_flops(model, "full", by_module=True)
    ctrl_total, ctrl_mod = count_flops(model, "control", by_module=True)

    def group(counts, i, dom):  # projections of one head group (its only weights)
        return sum(counts.get(f"MHC.blocks.{i}.attn.groups.{dom}.{m}", 0) for m in ("qkv", "proj"))

    for i in range(model.cfg.n_layers):
        assert group(full_mod, i, "linguistic") > 0
        assert group(ctrl_mod, i, "linguistic") == 0  # never called in `control`
        for dom in ("visual", "physical"):
            assert group(ctrl_mod, i, dom) == group(full_mod, i, dom) > 0
    assert ctrl_mod.get("MHC.ling_tokens", 0) == 0
    assert ctrl_total < full_total


@pytest.mark.parametrize(("experts", "k"), [(4, 1), (4, 2), (8, 2), (8, 4)])
def test_topk_computes_only_k_experts(experts, k):
    model = _model("tiny", experts_per_domain=experts, top_k=k)
    c = model.cfg
    _, per_module = count_flops(model, "full", by_module=True)
    tokens = c.max_instruction_len + c.n_patches + c.n_physical_tokens
    expected = 2 * tokens * k * (2 * c.d_model * c.expert_hidden)  # two matmuls per chosen expert
    for i in range(c.n_layers):
        assert per_module[f"MHC.blocks.{i}.ffn.experts"] == expected  # independent of E


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
