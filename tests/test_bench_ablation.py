"""bench/ablation.py: seed-block parsing and the mHC-vs-dense table (means, difference, margin)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "ablation.py"
spec = importlib.util.spec_from_file_location("bench_ablation", SCRIPT)
ablation = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ablation)


def test_task_seeds_parse_and_bad_items_are_named():
    assert ablation.parse_task_seeds(["push=1000000,1000050", "reach=7"]) == {"push": [1000000, 1000050],
                                                                           "reach": [7]}
    for bad in ["pish=1", "push", "push=", "push=1,x"]:
        with pytest.raises(ValueError, match=bad.split("=")[0]):
            ablation.parse_task_seeds([bad])


def test_table_pools_seed_blocks_and_judges_the_margin(tmp_path):
    paths = {}
    for name in ["m1", "m2", "d1", "d2"]:
        paths[name] = tmp_path / f"{name}.safetensors"
        paths[name].write_bytes(name.encode())
    rates = {  # (checkpoint, task) → success per seed block
        ("m1", "push"): [0.80, 0.90], ("m2", "push"): [0.80, 0.80],
        ("d1", "push"): [0.90, 0.90], ("d2", "push"): [0.90, 0.90],
        ("m1", "reach"): [1.0], ("m2", "reach"): [0.96], ("d1", "reach"): [1.0], ("d2", "reach"): [1.0],
    }
    seeds = {"push": [1, 51], "reach": [1]}
    results = {(paths[n], t, s): {"success_rate": r}
               for (n, t), rs in rates.items() for s, r in zip(seeds[t], rs, strict=True)}
    groups = {"mhc": [paths["m1"], paths["m2"]], "dense": [paths["d1"], paths["d2"]]}
    doc = ablation.table(groups, ["push", "reach"], seeds, 50, results, margin=5.0)
    push = doc["tasks"]["push"]
    assert push["mhc"]["per_checkpoint"][str(paths["m1"])] == pytest.approx(0.85)
    assert push["mhc"]["mean"] == pytest.approx(0.825) and push["dense"]["mean"] == pytest.approx(0.90)
    assert push["difference_points"] == pytest.approx(-7.5) and push["within_margin"] is False
    reach = doc["tasks"]["reach"]
    assert reach["difference_points"] == pytest.approx(-2.0) and reach["within_margin"] is True
    assert doc["checkpoints"][str(paths["d2"])]["group"] == "dense"
