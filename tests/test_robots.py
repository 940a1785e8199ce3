"""Robot backends on a real PyBullet world: they move as the supervisor commands, and only then."""

from __future__ import annotations

import numpy as np
import pytest

from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import PandaArm
from qrobot.safety.command import SafeCommand, Stop, mint
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import Supervisor
from qrobot.sim import Sim


class ArmRig:
    def __init__(self) -> None:
        self.sim = Sim()
        self.sim.add_shape("table", "box", [0.6, 0.6, 0.05], [1, 1, 1, 1], pos=[0.35, 0, -0.05])
        self.robot = PandaArm(self.sim)
        self.sup = Supervisor(default_limits("panda", self.sim.dt), (0.025, 0.25), kinematics=self.robot)

    def step(self, action: np.ndarray) -> None:
        cmd = self.sup.filter(action, dict(self.robot.state(), time=self.sim.time))
        self.robot.apply(cmd)
        self.sim.step()


@pytest.fixture()
def rig() -> ArmRig:
    r = ArmRig()
    for _ in range(3):
        r.step(np.array([0, 0, 0, 0, 1.0]))
    yield r
    r.sim.close()


def test_panda_follows_end_effector_deltas(rig: ArmRig) -> None:
    for axis, sign in ((0, 1.0), (1, 1.0), (2, -1.0)):
        start = rig.robot.state()["ee_pos"]
        a = np.zeros(5)
        a[axis], a[4] = sign, 1.0
        for _ in range(6):
            rig.step(a)
        moved = rig.robot.state()["ee_pos"] - start
        # measured-pose deltas lag a little behind; the direction is exact
        assert 0.7 * 6 * 0.025 < sign * moved[axis] <= 6 * 0.025 + 1e-3
        assert np.abs(np.delete(moved, axis)).max() < 0.01


def test_panda_yaw_and_gripper(rig: ArmRig) -> None:
    yaw0 = rig.robot.state()["ee_yaw"]
    for _ in range(3):
        rig.step(np.array([0, 0, 0, 1.0, -1.0]))
    st = rig.robot.state()
    assert 0.1 < st["ee_yaw"] - yaw0 <= 3 * 0.15 + 0.01  # 1.5 rad/s angular limit
    assert st["gripper_width"] < 0.005  # closed on nothing


def test_backends_refuse_commands_the_supervisor_did_not_issue(rig: ArmRig) -> None:
    q = rig.robot.state()["joint_pos"]
    forged = SafeCommand("panda", np.array([*(q + 0.3), 0.04, *([1.0] * 7)]))  # built without the supervisor
    with pytest.raises(PermissionError):
        rig.robot.apply(forged)
    with pytest.raises(PermissionError):
        rig.robot.apply(np.array([*(q + 0.3), 0.04]))  # type: ignore[arg-type]
    with pytest.raises(PermissionError):
        rig.robot.apply(mint("diffbot", np.zeros(3)))  # issued for another robot
    with pytest.raises(PermissionError):
        rig.robot.apply(Stop("forged brake", SafeCommand("panda", np.array([*(q + 0.3), 0.04, *([1.0] * 7)]))))
    rig.robot.apply(Stop("no brake command: hold"))
    rig.sim.step()
    np.testing.assert_allclose(rig.robot.state()["joint_pos"], q, atol=2e-3)


def test_diffbot_drives_and_turns() -> None:
    sim = Sim()
    sim.add_shape("floor", "box", [5, 5, 0.05], [1, 1, 1, 1], pos=[0, 0, -0.05])
    base = DiffDriveBase(sim)
    base.reset(0.0, 0.0, 0.0)
    sup = Supervisor(default_limits("diffbot", sim.dt), (0.5, 1.2))

    def step(a: list[float]) -> None:
        base.apply(sup.filter(np.array(a), dict(base.state(), time=sim.time)))
        sim.step()

    for _ in range(10):
        step([1.0, 0.0, 0.0])
    st = base.state()
    assert st["base_pose"][0] == pytest.approx(0.42, abs=0.05)  # ramps at 1.5 m/s^2 to 0.5 m/s
    assert abs(st["base_pose"][1]) < 0.05
    assert st["base_vel"][0] == pytest.approx(0.5, rel=0.1)
    for _ in range(10):
        step([0.0, 1.0, 0.0])
    assert base.state()["base_vel"][1] == pytest.approx(1.2, rel=0.15)
    for _ in range(10):
        base.apply(Stop("test"))
        sim.step()
    assert np.abs(base.state()["base_vel"]).max() < 0.02
    with pytest.raises(PermissionError):
        base.apply(SafeCommand("diffbot", np.zeros(3)))
    sim.close()
