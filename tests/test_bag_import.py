"""``mhc collect --from-bags``: any rosbag2 episode (topics renamable) → training shards that mhc_model.data loads."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rosbags.rosbag2 import Reader, Writer

from mhc_ros.bag_import import BagError, parse_topic_map, read_streams
from mhc_ros.cli import main

GOLDEN = Path(__file__).resolve().parent / "artifacts" / "golden"
SHARD_KEYS = {"images", "joint_positions", "joint_velocities", "actions", "ee_positions", "object_positions",
              "object_velocities", "object_present", "phase", "sim_time"}


def _renamed_copy(src: Path, dst: Path, renames: dict[str, str], drop: tuple[str, ...] = ()) -> Path:
    """A copy of bag ``src`` with topics renamed (as a user's robot would name them)."""
    with Reader(src) as reader, Writer(dst, version=9) as writer:
        conns = {}
        for conn in reader.connections:
            if conn.topic in drop:
                continue
            conns[conn.id] = writer.add_connection(renames.get(conn.topic, conn.topic), conn.msgtype,
                                                   msgdef=conn.msgdef.data, rihs01=conn.digest,
                                                   offered_qos_profiles=conn.ext.offered_qos_profiles)
        for conn, t_ns, raw in reader.messages():
            if conn.id in conns:
                writer.write(conns[conn.id], t_ns, raw)
    return dst


def test_from_bags_with_topic_map_writes_loadable_shards(tmp_path, capsys):
    bags = tmp_path / "robot_bags"
    bags.mkdir()
    _renamed_copy(GOLDEN / "reach_000000", bags / "run1", {"/camera/image_raw": "/cam/color",
                                                          "/joint_states": "/arm/joint_states"},
                  drop=("/mhc/instruction", "/sim/object_poses", "/sim/ee_pose"))
    shutil.copytree(GOLDEN / "pick_place_000001", bags / "run2")
    out = tmp_path / "data"
    assert main(["collect", "--from-bags", str(bags), "--out", str(out), "--instruction", "touch the red cube",
                 "--topic-map", "image=/cam/color,joints=/arm/joint_states"]) == 2  # run2 lacks /cam/color
    assert "'/cam/color'" in capsys.readouterr().err
    shutil.rmtree(bags / "run2")
    assert main(["collect", "--from-bags", str(bags), "--out", str(out), "--instruction", "touch the red cube",
                 "--topic-map", "image=/cam/color,joints=/arm/joint_states"]) == 0
    with np.load(out / "shards" / "bag_000000.npz", allow_pickle=False) as shard:
        assert set(shard.files) == SHARD_KEYS
        assert shard["images"].shape == (40, 48, 48, 3) and shard["actions"].shape == (40, 8)
        assert not shard["object_present"].any() and not shard["phase"].any()
        golden = json.loads((GOLDEN / "reach_000000.expected.json").read_text())["commands"]
        np.testing.assert_allclose(shard["actions"][:, :7], golden["arm"], atol=1e-6)
    meta = json.loads((out / "shards" / "bag_000000.json").read_text())
    assert meta["plan"] == [] and meta["instruction"] == "touch the red cube" and len(meta["joint_names"]) == 9

    from mhc_model.config import preset
    from mhc_model.data import ShardDataset, build_vocabularies, list_shards, load_episode

    episodes = [load_episode(p) for p in list_shards(out)]
    dataset = ShardDataset(episodes, preset("tiny"), *build_vocabularies(episodes))
    batch = dataset.batch(np.arange(4))
    assert len(dataset) == 40 and batch


def test_default_topics_of_our_bags(tmp_path):
    streams = read_streams(GOLDEN / "pick_place_000001")
    assert len(streams.image) == len(streams.trajectory) == len(streams.gripper) == 40
    assert streams.instruction and streams.image[0][1].shape == (48, 48, 3)


def test_bad_topic_map_names_the_entry():
    with pytest.raises(BagError, match="'cam=/x'"):
        parse_topic_map("cam=/x")
