"""MHCConfig validation, presets and JSON round trip."""

import argparse
from pathlib import Path

import pytest
import torch
from mhc_model import train as train_cli
from mhc_model.config import PRESETS, MHCConfig, load_config, preset
from mhc_model.mhc import MHC, count_parameters


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"d_model": -4}, "d_model"),
        ({"n_layers": 0}, "n_layers"),
        ({"experts_per_domain": 4, "top_k": 5}, "top_k"),
        ({"expert_hidden": -1}, "expert_hidden"),
        ({"balance": "magic"}, "balance"),
        ({"patch_size": 12}, "patch_size"),
        ({"image_size": 100}, "image_size"),
        ({"z_loss_coef": -1.0}, "z_loss_coef"),
        ({"n_action_steps": 99}, "n_action_steps"),
        ({"n_layers": 2, "shared_only_layers": 2}, "shared_only_layers"),  # no block would route
        ({"shared_only_layers": 1, "shared_expert_hidden": 0}, "shared_only_layers"),
        ({"shared_only_layers": 1, "dense": True}, "shared_only_layers"),
        ({"shared_only_layers": -1}, "shared_only_layers"),
    ],
)
def test_bad_values_name_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        MHCConfig(**changes)


def test_unknown_profile_is_named():
    model = MHC(preset("tiny"))
    with pytest.raises(ValueError, match="profile 'turbo' unknown"):
        model(torch.zeros(1, 12, dtype=torch.long), torch.ones(1, 12), profile="turbo")


def test_unknown_preset_and_json_round_trip(tmp_path):
    with pytest.raises(ValueError, match="'xl'"):
        load_config("xl")
    cfg = preset("s")
    path = tmp_path / "c.json"
    path.write_text(cfg.to_json())
    assert load_config(str(path)) == cfg
    assert MHCConfig.from_json(cfg.to_json()) == cfg
    with pytest.raises(ValueError, match="bogus"):
        MHCConfig.from_dict({**cfg.to_dict(), "bogus": 1})


def test_presets_sizes():
    n_s = count_parameters(MHC(preset("s")))
    assert n_s <= 10_000_000, n_s
    dense = preset("dense_s")
    s = preset("s")
    assert dense.dense and dense.d_model == s.d_model and dense.n_layers == s.n_layers
    assert dense.shared_heads == 3 * s.heads_per_domain + s.shared_heads


RECIPE_CONFIGS = {  # recipe config → (preset it varies, the fields it changes); 96 px ran before the hand pose
    "finetune_96px/s.json": ("s", {"image_size", "ee_pose_features", "instruction_frame", "top_k", "expert_hidden"}),
    "finetune_96px/dense_s.json": ("dense_s", {"image_size", "ee_pose_features", "instruction_frame"}),
    "two_experts/s.json": ("s", {"instruction_frame", "top_k", "expert_hidden"}),  # preset s until the ninth run
    "two_experts/dense_s.json": ("dense_s", {"instruction_frame"}),
    "sweep/s_dropout.json": ("s", {"dropout", "instruction_frame", "top_k", "expert_hidden"}),
    "sweep/s_top3.json": ("s", {"instruction_frame", "top_k", "expert_hidden"}),
    "sweep/s_h15.json": ("s", {"heads_per_domain", "shared_heads", "top_k", "expert_hidden"}),
    "sweep/s_k1h32.json": ("s", set()),  # the ninth run's name for preset s
    "sweep/s_frames.json": ("s", {"image_history", "image_stride", "top_k", "expert_hidden"}),
    "sweep/dense_s_frames.json": ("dense_s", {"image_history", "image_stride"}),
    "sweep/s_iframe.json": ("s", {"top_k", "expert_hidden"}),
    "sweep/dense_s_iframe.json": ("dense_s", set()),
    "sweep/s_nocrop.json": ("s", {"crop_augment"}),
    "sweep/dense_s_nocrop.json": ("dense_s", {"crop_augment"}),
    "sweep/s_age.json": ("s", {"instruction_age"}),
    "sweep/dense_s_age.json": ("dense_s", {"instruction_age"}),
    "sweep/s_shared2.json": ("s", {"instruction_age", "shared_only_layers"}),
    "sweep/s_3blocks.json": ("s", {"instruction_age", "n_layers", "shared_only_layers"}),
    "sweep/s_shared3.json": ("s", {"instruction_age", "shared_only_layers"}),
    "sweep/s_3blocks_shared2.json": ("s", {"instruction_age", "n_layers", "shared_only_layers"}),
}


@pytest.mark.parametrize("name", sorted(RECIPE_CONFIGS))
def test_recipe_configs_change_only_what_they_say(name):
    recipes = Path(__file__).resolve().parents[1] / "model" / "recipes"
    assert sorted(str(p.relative_to(recipes)) for p in recipes.glob("*/*.json")) == sorted(RECIPE_CONFIGS)
    base, fields = RECIPE_CONFIGS[name]
    cfg, ref = load_config(str(recipes / name)).to_dict(), preset(base).to_dict()
    changed = {k for k in ref if cfg[k] != ref[k]} - {"name"}
    assert changed == fields, (name, changed)


RUN_TABLES = sorted((Path(__file__).resolve().parents[1] / "model" / "recipes" / "tables").glob("*.tsv"))


@pytest.mark.parametrize("table", RUN_TABLES, ids=lambda p: p.name)
def test_recipe_run_tables_name_real_configs(table):
    """Each line of a `h200_runs.sh` table: name config gpu steps lr seed [init [train options]]; the config
    must load and the train options parse."""
    rows = [line.split() for line in table.read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert rows, f"{table.name}: no runs"
    names = [row[0] for row in rows]
    assert len(set(names)) == len(names), f"{table.name}: duplicate run names {names}"
    for row in rows:
        assert len(row) >= 6, f"{table.name}: {row} is not `name config gpu steps lr seed [init [options]]`"
        config, gpu, steps, lr, seed = row[1:6]
        load_config(config if config in PRESETS else str(table.parents[1] / config))
        assert int(gpu) >= 0 and int(steps) > 0 and float(lr) > 0 and int(seed) >= 0, row
        if len(row) >= 7:
            assert row[6].startswith("$") or Path(row[6]).suffix == ".safetensors", row
            parser = train_cli.configure_parser(argparse.ArgumentParser())
            parser.parse_args(["--config", config, "--data", "D", "--out", "O", "--init", row[6], *row[7:]])
