"""Robot backends on a real PyBullet world: they move as commanded, and only then."""

from __future__ import annotations

import numpy as np
import pytest

from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import PandaArm
from qrobot.safety.command import SafeCommand, Stop, mint
from qrobot.sim import Sim


@pytest.fixture()
def arm() -> PandaArm:
    sim = Sim()
    sim.add_shape("table", "box", [0.6, 0.6, 0.05], [1, 1, 1, 1], pos=[0.35, 0, -0.05])
    robot = PandaArm(sim)
    for _ in range(3):
        robot.apply(mint("panda", np.array([0, 0, 0, 0, 1.0])))
        sim.step()
    yield robot
    sim.close()


def test_panda_follows_end_effector_deltas(arm: PandaArm) -> None:
    for axis in range(3):
        start = arm.state()["ee_pos"]
        a = np.zeros(5)
        a[axis], a[4] = 1.0 if axis < 2 else -1.0, 1.0
        for _ in range(4):
            arm.apply(mint("panda", a))
            arm.sim.step()
        moved = arm.state()["ee_pos"] - start
        expected = np.zeros(3)
        expected[axis] = 4 * arm.max_step * a[axis]
        np.testing.assert_allclose(moved, expected, atol=0.01)


def test_panda_yaw_and_gripper(arm: PandaArm) -> None:
    yaw0 = arm.state()["ee_yaw"]
    for _ in range(3):
        arm.apply(mint("panda", np.array([0, 0, 0, 1.0, -1.0])))
        arm.sim.step()
    st = arm.state()
    assert st["ee_yaw"] - yaw0 == pytest.approx(3 * arm.max_yaw_step, abs=0.05)
    assert st["gripper_width"] < 0.005  # closed on nothing


def test_backends_refuse_commands_the_supervisor_did_not_issue(arm: PandaArm) -> None:
    forged = SafeCommand("panda", np.array([1.0, 0, 0, 0, 1.0]))  # no supervisor mint
    before = arm.state()["joint_pos"]
    with pytest.raises(PermissionError):
        arm.apply(forged)
    with pytest.raises(PermissionError):
        arm.apply(np.array([1.0, 0, 0, 0, 1.0]))  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        arm.apply(mint("diffbot", np.zeros(3)))  # issued for another robot
    arm.apply(Stop("test"))
    arm.sim.step()
    np.testing.assert_allclose(arm.state()["joint_pos"], before, atol=2e-3)


def test_diffbot_drives_and_turns() -> None:
    sim = Sim()
    sim.add_shape("floor", "box", [5, 5, 0.05], [1, 1, 1, 1], pos=[0, 0, -0.05])
    base = DiffDriveBase(sim)
    base.reset(0.0, 0.0, 0.0)
    for _ in range(10):
        base.apply(mint("diffbot", np.array([1.0, 0.0, 0.0])))
        sim.step()
    st = base.state()
    assert st["base_pose"][0] == pytest.approx(0.45, abs=0.08)  # ~0.5 m/s after spin-up
    assert abs(st["base_pose"][1]) < 0.05
    assert st["base_vel"][0] == pytest.approx(base.max_v, rel=0.1)
    for _ in range(5):
        base.apply(mint("diffbot", np.array([0.0, 1.0, 0.0])))
        sim.step()
    assert base.state()["base_vel"][1] == pytest.approx(base.max_w, rel=0.15)
    for _ in range(10):
        base.apply(Stop("test"))
        sim.step()
    assert np.abs(base.state()["base_vel"]).max() < 0.02
    with pytest.raises(PermissionError):
        base.apply(SafeCommand("diffbot", np.zeros(3)))
    sim.close()
