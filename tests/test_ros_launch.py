"""``launch/sim.launch.py`` builds the same node list as ``mhc bringup`` (with stand-in launch modules).

``launch``/``launch_ros`` are not installable here, so minimal fakes that record their arguments are
put in ``sys.modules`` while the launch file is loaded.
"""

import importlib.util
import sys
import types
from pathlib import Path

import pytest

from mhc_ros.bringup import bringup_nodes

LAUNCH_FILE = Path(__file__).resolve().parents[1] / "launch" / "sim.launch.py"


class _Recorded:
    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class LaunchConfiguration:
    def __init__(self, name):
        self.name = name

    def perform(self, context):
        return context.launch_configurations[self.name]


class Context:
    def __init__(self, configurations):
        self.launch_configurations = configurations


def _load_launch_file(monkeypatch, path: Path):
    fakes = {
        "launch": types.ModuleType("launch"), "launch.actions": types.ModuleType("launch.actions"),
        "launch.substitutions": types.ModuleType("launch.substitutions"),
        "launch_ros": types.ModuleType("launch_ros"), "launch_ros.actions": types.ModuleType("launch_ros.actions"),
    }
    fakes["launch"].LaunchDescription = type("LaunchDescription", (_Recorded,), {})
    fakes["launch.actions"].DeclareLaunchArgument = type("DeclareLaunchArgument", (_Recorded,), {})
    fakes["launch.actions"].OpaqueFunction = type("OpaqueFunction", (_Recorded,), {})
    fakes["launch.substitutions"].LaunchConfiguration = LaunchConfiguration
    fakes["launch_ros.actions"].Node = type("Node", (_Recorded,), {})
    for name, module in fakes.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def launch_module(monkeypatch):
    return _load_launch_file(monkeypatch, LAUNCH_FILE)


def _nodes(module, **overrides):
    description = module.generate_launch_description()
    (entities,) = description.args
    arguments = [e for e in entities if type(e).__name__ == "DeclareLaunchArgument"]
    (opaque,) = [e for e in entities if type(e).__name__ == "OpaqueFunction"]
    configurations = {a.args[0]: a.kwargs["default_value"] for a in arguments}
    configurations.update(overrides)
    return arguments, opaque.kwargs["function"](Context(configurations))


def test_every_launch_argument_has_a_description(launch_module):
    arguments, _ = _nodes(launch_module)
    assert {a.args[0] for a in arguments} >= {"policy", "task", "seed", "realtime_factor", "auto_start"}
    assert all(len(a.kwargs["description"]) > 10 for a in arguments)


def test_launch_builds_the_same_nodes_as_bringup(launch_module):
    _, nodes = _nodes(launch_module, task="pick_place", seed="3", realtime_factor="0.0", auto_start="false")
    expected = bringup_nodes(policy="expert", task="pick_place", seed=3, realtime_factor=0.0, image_width=96,
                             image_height=96)
    assert len(nodes) == len(expected)
    for node, description in zip(nodes, expected, strict=True):
        assert node.kwargs["package"] == description.package
        assert node.kwargs["executable"] == description.executable
        assert node.kwargs["name"] == description.name
        assert node.kwargs["parameters"] == [description.parameters]
        assert node.kwargs["remappings"] == list(description.remappings)
        # same values and types as the `-p key:=value` literals bringup passes
        for key, value in description.parameters.items():
            assert type(node.kwargs["parameters"][0][key]) is type(value), key


def test_launch_rejects_unknown_policy(launch_module):
    with pytest.raises(ValueError, match="policy 'magic' not available"):
        _nodes(launch_module, policy="magic")


def test_robot_launch_builds_the_same_node_as_bringup_robot(monkeypatch):
    from mhc_ros.system import robot_system

    module = _load_launch_file(monkeypatch, LAUNCH_FILE.with_name("robot.launch.py"))
    arguments, nodes = _nodes(module, checkpoint_path="/models/mhc_s.safetensors", backend="onnxruntime",
                              image_topic="/wrist/image_raw")
    assert all(len(a.kwargs["description"]) > 10 for a in arguments)
    (node,) = nodes
    (expected,) = robot_system(checkpoint_path="/models/mhc_s.safetensors", backend="onnxruntime",
                               params_file=module.ARGUMENTS["params_file"][0],
                               topics={"image_topic": "/wrist/image_raw"})
    assert (node.kwargs["package"], node.kwargs["executable"], node.kwargs["name"]) == (
        expected.package, expected.executable, expected.name)
    assert node.kwargs["parameters"] == [expected.params_file, expected.parameters]
    assert node.kwargs["remappings"] == list(expected.remappings)
