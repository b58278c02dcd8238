"""Training on shards in the `mhc collect` format: split, overfit, checkpoints, resume, CLI errors."""

import argparse
import json
import pickle
import time

import numpy as np
import pytest
import torch
from mhc_model import flops as flops_cli
from mhc_model import train as train_cli
from mhc_model.checkpoint import init_from, load_policy, save_checkpoint
from mhc_model.config import preset
from mhc_model.data import (
    ShardDataset,
    build_vocabularies,
    drop_words,
    list_shards,
    load_episode,
    sample_repeats,
    split_episodes,
)
from mhc_model.flops import example_inputs
from mhc_model.losses import head_losses
from mhc_model.policy import INPUT_KEYS, MHCPolicy


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A small real dataset: `mhc collect` of four expert episodes (reach and push) in the simulation."""
    from mhc_ros.collect import configure_parser, run

    out = tmp_path_factory.mktemp("data")
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    args = parser.parse_args(["--task", "reach,push", "--episodes", "2", "--out", str(out),
                              "--workers", "2", "--no-bags", "--image-width", "48", "--image-height", "48"])
    assert run(args) == 0
    return out


def _args(data, out, *extra):
    parser = train_cli.configure_parser(argparse.ArgumentParser())
    return parser.parse_args(["--config", "tiny", "--data", str(data), "--out", str(out), "--no-progress",
                              "--threads", "2", *extra])


def test_split_is_by_episode_and_deterministic():
    names = [f"ep{i}" for i in range(10)]
    train, val = split_episodes(names, 0.2, seed=1)
    assert len(val) == 2 and not set(train) & set(val) and sorted(train + val) == sorted(names)
    assert split_episodes(names, 0.2, seed=1) == (train, val)


@pytest.fixture(scope="module")
def overfit_run(shards, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    start = time.perf_counter()
    args = _args(shards, out, "--steps", "150", "--batch-size", "16", "--lr", "3e-3", "--warmup", "10",
                 "--val-every", "75", "--val-fraction", "0", "--no-augment", "--seed", "3")
    summary = train_cli.train(args)
    return out, summary, time.perf_counter() - start


def test_tiny_overfits_small_dataset(overfit_run):
    out, summary, seconds = overfit_run
    first, last = summary["first_train"]["loss_task"], summary["last_val"]["loss_task"]
    print(f"\noverfit: task loss {first:.4f} -> {last:.5f} ({first / last:.1f}x) in {seconds:.1f} s")
    assert first / last >= 10.0
    assert seconds < 60.0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in records if r["split"] == "val"][-1]
    for key in ("loss_action", "loss_motion", "loss_plan", "loss_phase", "routing_accuracy", "expert_maxvio",
                "expert_entropy", "dead_expert_pct", "flops_control", "flops_dense_control"):
        assert key in val, key
    assert len(val["routing_accuracy"]) == 2
    assert (out / "curves.png").stat().st_size > 0
    assert (out / "checkpoints" / "last.safetensors").is_file()


def test_checkpoint_round_trip_is_exact(overfit_run, tmp_path):
    out, _, _ = overfit_run
    policy, extra = load_policy(out / "checkpoints" / "last.safetensors")
    assert extra["step"] == 150
    path = save_checkpoint(tmp_path / "copy", policy.eval())
    again, _ = load_policy(path)
    again.eval()
    a, b = policy.model.state_dict(), again.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert again.vocabulary.words == policy.vocabulary.words and again.config == policy.config
    x = example_inputs(policy.config, batch=2)
    with torch.no_grad():
        ya, yb = policy.model(**x), again.model(**x)
    assert all(torch.equal(ya[k], yb[k]) for k in ya)
    assert json.loads(path.with_suffix(".json").read_text())["config"]["name"] == "tiny"


class _Bomb:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path(__import__('os').environ['MHC_BOMB']).write_text('x')",))


def test_untrusted_checkpoint_is_never_unpickled(tmp_path, monkeypatch, overfit_run):
    marker = tmp_path / "exploded"
    monkeypatch.setenv("MHC_BOMB", str(marker))
    for name in ("evil.safetensors", "evil.pt"):
        path = tmp_path / name
        path.write_bytes(pickle.dumps(_Bomb()))
        with pytest.raises(ValueError, match="not a readable safetensors file"):
            load_policy(path)
    assert not marker.exists()

    def refuse(*a, **k):
        raise AssertionError("unpickling called")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    load_policy(overfit_run[0] / "checkpoints" / "last.safetensors")  # a real one loads without pickle


def test_resume_continues_from_last(shards, tmp_path):
    base = ["--steps", "4", "--batch-size", "8", "--val-every", "2", "--val-batches", "1", "--no-flops"]
    assert train_cli.run(_args(shards, tmp_path, *base)) == 0
    args = _args(shards, tmp_path, "--resume", *base)
    args.steps = 6
    summary = train_cli.train(args)
    assert summary["steps"] == 6
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps[-1] == 6 and 2 in steps


def test_reproducible_with_seed(shards, tmp_path):
    base = ["--steps", "3", "--batch-size", "8", "--val-every", "3", "--val-batches", "1", "--no-flops", "--seed", "7"]
    s1 = train_cli.train(_args(shards, tmp_path / "a", *base))
    s2 = train_cli.train(_args(shards, tmp_path / "b", *base))
    assert s1["last_val"]["loss"] == s2["last_val"]["loss"]


@pytest.mark.parametrize(("flag", "value", "named"), [("--steps", "-5", "--steps"), ("--config", "huge", "huge"),
                                                      ("--batch-size", "0", "--batch-size"),
                                                      ("--word-dropout", "1.5", "--word-dropout=1.5"),
                                                      ("--recovery-repeats", "0", "--recovery-repeats=0")])
def test_cli_bad_values_exit_2(shards, tmp_path, capsys, flag, value, named):
    args = _args(shards, tmp_path, flag, value)
    assert train_cli.run(args) == 2
    err = capsys.readouterr().err
    assert named in err and err.count("\n") == 1


def test_missing_data_exit_2(tmp_path, capsys):
    assert train_cli.run(_args(tmp_path / "nothing", tmp_path / "out")) == 2
    assert "no shards" in capsys.readouterr().err
    with pytest.raises(ValueError):
        list_shards(tmp_path)


def test_bench_flops_json(capsys):
    args = flops_cli.configure_parser(argparse.ArgumentParser()).parse_args(["--preset", "tiny", "--json"])
    assert flops_cli.run(args) == 0
    rows = json.loads(capsys.readouterr().out)["flops"]
    assert {(r["preset"], r["profile"]) for r in rows} == {("tiny", p) for p in ("full", "instruct", "control")}
    control = next(r for r in rows if r["profile"] == "control")
    assert control["ratio_vs_dense_full"] <= 0.6
    bad = flops_cli.configure_parser(argparse.ArgumentParser()).parse_args(["--preset", "xxl"])
    assert flops_cli.run(bad) == 2


def test_masked_steps_are_context_not_samples(shards):
    """train_mask False (a scripted deliberate mistake) keeps the step as history/future, never as a sample."""
    episodes = [load_episode(p) for p in list_shards(shards)]
    T = len(episodes[0].arrays["actions"])
    mask = np.arange(T) >= T // 2
    episodes[0].arrays["train_mask"] = episodes[0].arrays["motion_mask"] = mask  # as `mhc collect` writes a miss
    cfg = preset("tiny")
    vocab, skills, targets = build_vocabularies(episodes)
    ds = ShardDataset(episodes, cfg, vocab, skills, targets)
    frames = sum(len(e.arrays["actions"]) for e in episodes)
    assert len(ds) == frames - T // 2
    first = ds.batch(torch.arange(1))
    assert first["imitate"].tolist() == [1.0]
    assert torch.equal(first["action"][0, 0], torch.from_numpy(episodes[0].arrays["actions"][T // 2]))
    # its history still reaches back into the masked steps
    assert torch.equal(first["joint_history"][0, 0, :9],
                       torch.from_numpy(episodes[0].arrays["joint_positions"][T // 2 - cfg.joint_history + 1]))
    episodes[0].arrays["train_mask"] = episodes[0].arrays["motion_mask"] = np.zeros(T, bool)
    with pytest.raises(ValueError, match="masked out"):
        ShardDataset(episodes[:1], cfg, vocab, skills, targets)


def test_motion_only_steps_teach_motion_not_actions(shards):
    """motion_mask without train_mask (a late start: the ball rolling past a still arm) makes the step a
    sample with ``imitate`` 0: its motion error counts, its action, plan and phase errors do not."""
    episodes = [load_episode(p) for p in list_shards(shards)]
    T = len(episodes[0].arrays["actions"])
    episodes[0].arrays["train_mask"] = np.arange(T) >= T // 2
    episodes[0].arrays["motion_mask"] = np.ones(T, bool)
    cfg = preset("tiny")
    vocab, skills, targets = build_vocabularies(episodes)
    ds = ShardDataset(episodes, cfg, vocab, skills, targets)
    assert len(ds) == sum(len(e.arrays["actions"]) for e in episodes)  # every step is a sample once
    batch = ds.batch(torch.arange(T))
    assert batch["imitate"].tolist() == [0.0] * (T // 2) + [1.0] * (T - T // 2)

    policy = MHCPolicy(cfg, vocab, skills, targets).eval()
    with torch.no_grad():
        outputs = policy.model(*(batch[k] for k in INPUT_KEYS), profile="full")
    norms = (policy.model.heads.action_norm, policy.model.heads.position_norm)
    base = head_losses(outputs, batch, cfg, *norms)
    wrong = dict(batch, action=batch["action"] + (1.0 - batch["imitate"])[:, None, None] * 5.0,
                 phase=torch.where(batch["imitate"] > 0, batch["phase"], (batch["phase"] + 1) % cfg.plan_slots))
    moved = dict(batch, motion=batch["motion"] + (1.0 - batch["imitate"])[:, None, None, None] * 0.5)
    changed = head_losses(outputs, wrong, cfg, *norms)
    for name in ("action", "phase", "motion"):  # labels of the motion-only samples ignored
        assert torch.allclose(changed[name], base[name]), name
    assert head_losses(outputs, moved, cfg, *norms)["motion"] > base["motion"] + 1e-3  # but not their motion
    everything = head_losses(outputs, dict(wrong, imitate=torch.ones(T)), cfg, *norms)
    assert everything["action"] > base["action"] + 1e-3


def test_recovery_steps_are_sampled_repeatedly(shards):
    """The steps right after a masked stretch (the recovery) appear ``recovery_repeats`` times per epoch."""
    mask = np.array([1, 0, 0, 1, 1, 1, 0, 1, 1], bool)
    assert sample_repeats(mask, 3, window=2).tolist() == [1, 0, 0, 3, 3, 1, 0, 3, 3]
    assert sample_repeats(np.ones(5, bool), 4).tolist() == [1] * 5  # no mistake, no recovery
    episodes = [load_episode(p) for p in list_shards(shards)]
    T = len(episodes[0].arrays["actions"])
    episodes[0].arrays["train_mask"] = episodes[0].arrays["motion_mask"] = np.arange(T) >= 10
    cfg = preset("tiny")
    vocab, skills, targets = build_vocabularies(episodes)
    once = ShardDataset(episodes, cfg, vocab, skills, targets)
    thrice = ShardDataset(episodes, cfg, vocab, skills, targets, recovery_repeats=3)
    recovery = min(T - 10, 50)
    assert len(thrice) == len(once) + 2 * recovery
    first = thrice.batch(torch.arange(3))  # step 10 three times
    assert all(torch.equal(first["action"][i, 0], torch.from_numpy(episodes[0].arrays["actions"][10]))
               for i in range(3))
    with pytest.raises(ValueError, match="recovery_repeats"):
        ShardDataset(episodes, cfg, vocab, skills, targets, recovery_repeats=0)


def test_word_dropout_replaces_words_only():
    from mhc_model.tokenizers import Vocabulary

    vocab = Vocabulary.build(["put the red cube in the bin"])
    ids, _ = vocab.encode_batch(["put the red cube in the bin"] * 200, 12)
    gen = torch.Generator().manual_seed(0)
    assert torch.equal(drop_words(ids, gen, 0.0, vocab), ids)
    dropped = drop_words(ids, gen, 0.3, vocab)
    unk, changed = vocab.index["<unk>"], dropped != ids
    assert torch.all(dropped[changed] == unk)
    assert torch.equal(dropped[:, 0], ids[:, 0]) and torch.equal(dropped[:, 8:], ids[:, 8:])  # <bos>, padding kept
    assert 0.2 < changed[:, 1:8].float().mean() < 0.4


def test_init_fine_tunes_at_another_image_size(overfit_run, shards, tmp_path):
    source = overfit_run[0] / "checkpoints" / "last.safetensors"
    old, _ = load_policy(source)
    new = init_from(source, preset("tiny").replace(image_size=48), [old.vocabulary.words[3]])  # 4×4 → 6×6
    assert new.config.image_size == 48 and new.vocabulary.words == old.vocabulary.words
    assert new.model.vis_tokens.pos.shape == (36, old.config.d_model)
    old_state, new_state = old.model.state_dict(), new.model.state_dict()
    assert all(torch.equal(old_state[k], new_state[k]) for k in old_state if k != "vis_tokens.pos")
    # bilinear resize: the corner patches keep their embedding's neighbourhood, the mean is kept
    assert torch.allclose(new.model.vis_tokens.pos.mean(0), old.model.vis_tokens.pos.mean(0), atol=0.05)
    with pytest.raises(ValueError, match="not in its vocabulary"):
        init_from(source, preset("tiny"), ["fly to the moon"])
    regularised = init_from(source, preset("tiny").replace(dropout=0.1), [])  # dropout: training only
    assert regularised.config.dropout == 0.1
    assert all(torch.equal(old_state[k], v) for k, v in regularised.model.state_dict().items())
    bigger = tmp_path / "tiny48.json"  # and through `mhc train --init`
    bigger.write_text(new.config.to_json())
    args = _args(shards, tmp_path / "ft", "--steps", "1", "--batch-size", "4", "--val-every", "1",
                 "--val-batches", "1", "--no-flops", "--init", str(source))
    args.config = str(bigger)
    train_cli.train(args)
    assert load_policy(tmp_path / "ft" / "checkpoints" / "last.safetensors")[0].config.image_size == 48


def test_init_into_shared_only_blocks_drops_just_their_routed_experts(overfit_run, tmp_path):
    """Growing ``shared_only_layers`` from a checkpoint: the same function as that checkpoint with those
    blocks' routed experts silenced, every other weight kept."""
    source = overfit_run[0] / "checkpoints" / "last.safetensors"
    old, _ = load_policy(source)
    new = init_from(source, old.config.replace(shared_only_layers=1), [])
    old_state = old.model.state_dict()
    assert all(torch.equal(old_state[k], v) for k, v in new.model.state_dict().items())
    with torch.no_grad():
        old.model.blocks[0].ffn.experts.w2.zero_()
        old.model.blocks[0].ffn.experts.b2.zero_()
        x = example_inputs(old.config, batch=2, seed=1)
        expected, got = old.model.eval()(**x), new.model.eval()(**x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6)
    shared_only = save_checkpoint(tmp_path / "shared_only", new)
    with pytest.raises(ValueError, match="shared_only_layers"):  # back would need experts from nowhere
        init_from(shared_only, old.config, [])



def test_init_keeps_chosen_blocks(tmp_path):
    """``keep_blocks``: the new model is the checkpoint with the other blocks taken out, weights untouched;
    a routed block cannot come from a shared-only one, nor a block list that does not fit the config."""
    from mhc_model.latency import random_policy

    old = random_policy(preset("tiny").replace(n_layers=3), seed=3)
    source = save_checkpoint(tmp_path / "three", old)
    config = old.config.replace(n_layers=2)
    new = init_from(source, config, [], keep_blocks=[0, 2])
    old_state = old.model.state_dict()
    for key, value in new.model.state_dict().items():
        was = key.replace("blocks.1.", "blocks.2.", 1) if key.startswith("blocks.1.") else key
        assert torch.equal(old_state[was], value), key
    with torch.no_grad():
        x = example_inputs(old.config, batch=2, seed=1)
        got = new.model.eval()(**x)
        old.model.blocks = torch.nn.ModuleList([old.model.blocks[0], old.model.blocks[2]])
        expected = old.model.eval()(**x)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=0)
    shared_first = save_checkpoint(tmp_path / "shared_first", init_from(
        source, old.config.replace(shared_only_layers=1), []))
    with pytest.raises(ValueError, match=r"blocks \[0\], which have no routed experts"):
        init_from(shared_first, config, [], keep_blocks=[0, 2])
    assert init_from(shared_first, config.replace(shared_only_layers=1), [], keep_blocks=[0, 2])
    with pytest.raises(ValueError, match="gives 3 blocks, the config has n_layers=2"):
        init_from(source, config, [], keep_blocks=[0, 1, 2])
    with pytest.raises(ValueError, match="increasing indices"):
        init_from(source, config, [], keep_blocks=[2, 0])
    with pytest.raises(ValueError, match="n_layers=2"):  # dropping blocks needs the list
        init_from(source, config, [])


def test_distillation_from_a_teacher(overfit_run, shards, tmp_path):
    """``--distill-from``: a student started from its teacher begins at zero distillation loss, the term is
    logged and trained, kept across ``--resume``; a teacher that reads other token ids is refused."""
    teacher = overfit_run[0] / "checkpoints" / "last.safetensors"
    out = tmp_path / "student"
    args = _args(shards, out, "--steps", "4", "--batch-size", "8", "--val-every", "2", "--val-batches", "1",
                 "--no-flops", "--no-augment", "--init", str(teacher), "--distill-from", str(teacher),
                 "--distill-weight", "2")
    summary = train_cli.train(args)
    assert summary["first_train"]["loss_distill"] < 1e-8
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all("loss_distill" in r for r in records if r["split"] == "train")
    saved = json.loads((out / "checkpoints" / "last.json").read_text())["extra"]
    assert saved["distill_from"] == str(teacher) and saved["distill_weight"] == 2.0
    resumed = train_cli.train(_args(shards, out, "--steps", "6", "--batch-size", "8", "--val-every", "2",
                                    "--val-batches", "1", "--no-flops", "--resume"))
    assert resumed["steps"] == 6 and "loss_distill" in resumed["first_train"]
    other = save_checkpoint(tmp_path / "other", MHCPolicy(preset("tiny"), *_other_vocabularies()))
    with pytest.raises(ValueError, match="vocabulary differs"):
        train_cli.train(_args(shards, tmp_path / "refused", "--steps", "1", "--init", str(teacher),
                              "--distill-from", str(other)))


def _other_vocabularies():
    from mhc_model.tokenizers import LabelVocabulary, Vocabulary

    return (Vocabulary.build(["a different vocabulary"]), LabelVocabulary.build(["reach"]),
            LabelVocabulary.build(["ball"]))


def test_init_refuses_other_architectures(overfit_run, shards, tmp_path, capsys):
    wider = tmp_path / "wide.json"
    wider.write_text(preset("tiny").replace(d_model=96).to_json())
    args = _args(shards, tmp_path / "ft", "--init", str(overfit_run[0] / "checkpoints" / "last.safetensors"))
    args.config = str(wider)
    assert train_cli.run(args) == 2
    assert "d_model" in capsys.readouterr().err
    args = _args(shards, tmp_path / "ft", "--init", "x.safetensors", "--resume")
    assert train_cli.run(args) == 2
    assert "--init and --resume" in capsys.readouterr().err
    args = _args(shards, tmp_path / "ft", "--init-blocks", "0,2")
    assert train_cli.run(args) == 2
    assert "--init-blocks needs --init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _args(shards, tmp_path / "ft", "--init-blocks", "0,two")


def _torchrun(n: int, shards, out, per_process_batch: int) -> dict:
    """`mhc train` under torchrun with ``n`` CPU processes (gloo); returns the step-1 validation record."""
    import subprocess
    import sys

    logs = out.parent / f"logs_{out.name}"  # each rank's stdout/stderr, shown if the run fails
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
               "--log-dir", str(logs), "--redirects", "3", "-m", "mhc_model.train", "--config", "tiny",
               "--data", str(shards), "--out", str(out),
               "--steps", "1", "--val-every", "1", "--val-batches", "1", "--batch-size", str(per_process_batch),
               "--lr", "0", "--no-augment", "--no-progress", "--no-flops", "--threads", "1", "--device", "cpu"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    ranks = "".join(f"\n--- {f}\n{f.read_text()[-1500:]}" for f in sorted(logs.rglob("stderr.log")))
    assert result.returncode == 0, result.stderr[-1500:] + ranks
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return next(r for r in records if r["split"] == "val")


def test_ddp_two_processes_validate_like_one(shards, tmp_path):
    """Same global batch on 1 and 2 processes: one checkpoint (rank 0), and the validation covers the same
    samples (global batch), so with lr 0 the two runs report the same validation loss."""
    one = _torchrun(1, shards, tmp_path / "n1", 8)
    two = _torchrun(2, shards, tmp_path / "n2", 4)
    assert two["loss"] == pytest.approx(one["loss"], rel=1e-5)
    assert json.loads((tmp_path / "n2" / "config.json").read_text())["world_size"] == 2
    assert load_policy(tmp_path / "n2" / "checkpoints" / "last.safetensors")[1]["step"] == 1
