"""Pure conversions and system description: no ROS graph, no simulation."""

import array
import json
import math

import numpy as np
import pytest

from mhc_ros import conversions as conv
from mhc_ros.sim_bridge_node import episode_status, parse_episode_request
from mhc_ros.system import NodeDescription, parameter_literal, sim_system

LIMITS = {"panda_joint1": (-2.9671, 2.9671), "panda_joint2": (-1.8326, 1.8326), "panda_joint3": (-2.9671, 2.9671),
          "panda_joint4": (-3.1416, 0.0), "panda_joint5": (-2.9671, 2.9671), "panda_joint6": (-0.0873, 3.8223),
          "panda_joint7": (-2.9671, 2.9671)}
HOME = [0.0, -0.3, 0.0, -2.3, 0.0, 2.0, 0.785]


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_colour_image_round_trip(encoding):
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    msg = conv.image_msg(image, stamp_s=1.25, encoding=encoding)
    assert isinstance(msg.data, array.array)
    assert (msg.height, msg.width, msg.step, msg.encoding) == (5, 7, 21, encoding)
    assert conv.time_to_seconds(msg.header.stamp) == 1.25
    np.testing.assert_array_equal(conv.image_from_msg(msg), image)
    if encoding == "bgr8":
        assert bytes(msg.data)[:3] == bytes(image[0, 0, ::-1])


def test_mono_and_padded_rows_decode_to_rgb():
    mono = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = np.zeros((3, 6), np.uint8)
    padded[:, :4] = mono  # 2 bytes of row padding
    rgb = conv.image_from_buffer(padded.tobytes(), height=3, width=4, step=6, encoding="mono8")
    assert rgb.shape == (3, 4, 3)
    np.testing.assert_array_equal(rgb[:, :, 1], mono)
    msg = conv.image_msg(mono, encoding="mono8")
    np.testing.assert_array_equal(conv.image_from_msg(msg)[:, :, 0], mono)


def test_image_errors_name_the_value():
    with pytest.raises(ValueError, match="'yuv422' not supported"):
        conv.image_from_buffer(b"\0" * 8, 2, 2, 4, "yuv422")
    with pytest.raises(ValueError, match="3 bytes"):
        conv.image_from_buffer(b"\0" * 3, 2, 2, 6, "rgb8")
    with pytest.raises(ValueError, match="float32"):
        conv.image_msg(np.zeros((2, 2, 3), np.float32))


def test_joint_state_arrays_reorder_by_name():
    names = list(reversed(conv.JOINT_NAMES))
    positions = np.arange(9.0)
    msg = conv.joint_state_msg(names, positions, positions * 10, stamp_s=2.5)
    pos, vel = conv.joint_state_arrays(msg)
    np.testing.assert_array_equal(pos, positions[::-1])
    np.testing.assert_array_equal(vel, positions[::-1] * 10)
    pos, vel = conv.joint_arrays(names, positions, [])
    np.testing.assert_array_equal(vel, np.zeros(9))
    with pytest.raises(ValueError, match="lacks joint 'panda_finger_joint2'"):
        conv.joint_arrays(names[1:], positions[1:], [])


def _trajectory(names, *points, times=None):
    msg = conv.joint_trajectory_msg(points[0], 0.05, names=names)
    if len(points) > 1:
        from trajectory_msgs.msg import JointTrajectoryPoint

        msg.points = [JointTrajectoryPoint(positions=list(p)) for p in points]
        for point, t in zip(msg.points, times, strict=True):
            point.time_from_start.sec, point.time_from_start.nanosec = int(t), round((t % 1) * 1e9)
    return msg


def test_trajectory_target_first_point_and_interpolation():
    target = conv.trajectory_target(_trajectory(conv.ARM_JOINTS, HOME), LIMITS, 0.05)
    np.testing.assert_allclose(target, HOME)
    # names in another order are looked up by name
    order = [6, 5, 4, 3, 2, 1, 0]
    msg = _trajectory([conv.ARM_JOINTS[i] for i in order], [HOME[i] for i in order])
    np.testing.assert_allclose(conv.trajectory_target(msg, LIMITS, 0.05), HOME)
    a, b = np.array(HOME), np.array(HOME) + 0.1
    msg = _trajectory(conv.ARM_JOINTS, a, b, times=[0.0, 0.1])
    np.testing.assert_allclose(conv.trajectory_target(msg, LIMITS, 0.05), (a + b) / 2)
    np.testing.assert_allclose(conv.trajectory_target(msg, LIMITS, 1.0), b)


@pytest.mark.parametrize("names, point, reason", [
    ([*conv.ARM_JOINTS[:6], "elbow"], HOME, "unknown joint name 'elbow'"),
    (conv.ARM_JOINTS, [math.nan, *HOME[1:]], "'panda_joint1' position nan is not finite"),
    (conv.ARM_JOINTS, [*HOME[:6], math.inf], "'panda_joint7' position inf is not finite"),
    (conv.ARM_JOINTS, [*HOME[:3], 0.5, *HOME[4:]],
     r"'panda_joint4' position 0.5000 rad outside URDF limits \[-3.1416, 0.0000\]"),
    (conv.ARM_JOINTS[:6], HOME[:6], "missing joint 'panda_joint7'"),
    (conv.ARM_JOINTS, HOME[:6], "point 0 has 6 positions for 7 joint names"),
    ([*conv.ARM_JOINTS, "panda_joint1"], [*HOME, 0.0], "'panda_joint1' appears twice"),
])
def test_trajectory_rejections_name_the_bad_value(names, point, reason):
    msg = _trajectory(conv.ARM_JOINTS, HOME)
    msg.joint_names, msg.points[0].positions = list(names), [float(v) for v in point]
    with pytest.raises(conv.CommandRejected, match=reason):
        conv.trajectory_target(msg, LIMITS, 0.05)


def test_trajectory_without_points_is_rejected():
    msg = _trajectory(conv.ARM_JOINTS, HOME)
    msg.points = []
    with pytest.raises(conv.CommandRejected, match="no points"):
        conv.trajectory_target(msg, LIMITS, 0.05)


def test_gripper_width():
    assert conv.gripper_width(conv.gripper_msg(0.03).data) == pytest.approx(0.03)
    for data, reason in (([], "0 values"), ([0.01, 0.02], "2 values"), ([math.nan], "not finite"),
                         ([0.2], "0.2000 m outside")):
        with pytest.raises(conv.CommandRejected, match=reason):
            conv.gripper_width(data)


def test_pose_array_round_trip_and_velocity():
    positions = np.arange(18.0).reshape(6, 3) / 10
    orientations = np.tile([0.0, 0.0, 0.0, 1.0], (6, 1))
    msg = conv.pose_array_msg(positions, orientations, stamp_s=3.0)
    assert msg.header.frame_id == "world"
    pos, orn = conv.pose_array_arrays(msg)
    np.testing.assert_allclose(pos, positions)
    np.testing.assert_allclose(orn, orientations)
    np.testing.assert_allclose(conv.finite_difference_velocity(positions, positions + 0.1, 0.05), 2.0)
    np.testing.assert_array_equal(conv.finite_difference_velocity(None, positions, 0.05), 0.0)


def test_clock_and_time():
    assert conv.time_to_seconds(conv.clock_msg(12.345).clock) == pytest.approx(12.345)
    stamp = conv.seconds_to_time(0.9999999999)
    assert stamp.nanosec <= 999_999_999


def test_episode_request_validation():
    tasks = {"reach": None, "pick_place": None}
    assert parse_episode_request('{"task": "reach", "seed": 4}', tasks) == \
        {"task": "reach", "seed": 4, "request_id": None, "instruction": None}
    assert parse_episode_request('{"task": "reach", "seed": 4, "instruction": "reach the red block"}',
                                 tasks)["instruction"] == "reach the red block"
    for text, reason in (("not json", "not JSON"), ("[1]", "not a JSON object"),
                         ('{"task": "reach", "seed": 1, "instruction": ""}', "non-empty string"),
                         ('{"task": "reach", "seed": 1, "instruction": 7}', "non-empty string"),
                         ('{"task": "reach", "seed": 1, "instruction": "' + "a" * 1001 + '"}', "at most 1000"),
                         ('{"task": "fly", "seed": 1}', "unknown task 'fly'"),
                         ('{"task": "reach", "seed": -1}', "seed -1"),
                         ('{"task": "reach", "seed": 1.5}', "seed 1.5")):
        with pytest.raises(ValueError, match=reason):
            parse_episode_request(text, tasks)


def test_episode_status_fields():
    class Spec:
        task, seed, instruction = "reach", 3, "touch the red cube"

    status = episode_status(2, Spec, 10, False, None, False, 1, np.ones(6, bool), 5.0, 100, "abc")
    assert {"episode_id", "task", "seed", "instruction", "step", "success", "done",
            "rejected_commands"} <= set(json.loads(json.dumps(status)))


def test_parameter_literals_keep_their_types():
    assert parameter_literal(True) == "true"
    assert parameter_literal(3) == "3"
    assert parameter_literal(20.0) == "20.0"
    assert parameter_literal(1e-3) == "0.001"
    assert parameter_literal("1") == '"1"'
    with pytest.raises(TypeError, match="list"):
        parameter_literal([1])


def test_sim_system_describes_bridge_and_expert():
    nodes = sim_system(task="pick_place", seed=4, realtime_factor=0.0)
    assert [n.executable for n in nodes] == ["mhc_sim_bridge", "mhc_expert_controller"]
    bridge = nodes[0]
    assert bridge.parameters["task"] == "pick_place" and bridge.parameters["seed"] == 4
    args = bridge.ros_arguments()
    assert args[:3] == ["--ros-args", "-r", "__node:=mhc_sim_bridge"]
    assert 'task:="pick_place"' in args and "realtime_factor:=0.0" in args
    assert isinstance(bridge, NodeDescription) and bridge.command()[1:3] == ["-m", "mhc_ros.sim_bridge_node"]
    with pytest.raises(ValueError, match="policy 'magic' not available"):
        sim_system(policy="magic")
    with pytest.raises(ValueError, match="policy 'mhc' needs a checkpoint_path"):
        sim_system(policy="mhc")
    _, controller = sim_system(policy="mhc", checkpoint_path="/models/s.safetensors", backend="torch")
    assert (controller.executable, controller.module) == ("mhc_controller", "mhc_ros.controller_node")
    assert controller.parameters["checkpoint_path"] == "/models/s.safetensors"


def test_urdf_limits_match_the_simulation():
    import mhc_sim

    kinematics = mhc_sim.PandaKinematics()
    lower, upper = kinematics.joint_lower, kinematics.joint_upper
    kinematics.close()
    assert (lower[3], upper[3]) == pytest.approx(LIMITS["panda_joint4"])
    assert upper[7] == pytest.approx(0.04)


def test_episode_spec_is_regenerated_from_task_and_seed():
    """The expert controller rebuilds the bridge's EpisodeSpec from the status JSON's (task, seed) alone."""
    import mhc_sim
    from mhc_sim import episode_spec

    with mhc_sim.TabletopWorld(mhc_sim.WorldConfig(render=False)) as world:
        for task in mhc_sim.TASKS:
            for seed in (0, 7):
                world.reset(task, seed)
                assert episode_spec(task, seed) == world.episode
