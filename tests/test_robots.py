"""Robot backends on a real PyBullet world: they move as their supervisor plans, and only then."""

from __future__ import annotations

import numpy as np
import pytest

import qrobot.safety.command as command
from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import PandaArm
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.conformance import SubstepProbe
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import Supervisor
from qrobot.sim import Sim


class ArmRig:
    def __init__(self) -> None:
        self.sim = Sim()
        self.sim.add_shape("table", "box", [0.6, 0.6, 0.05], [1, 1, 1, 1], pos=[0.35, 0, -0.05])
        self.robot = PandaArm(self.sim)
        self.sup = Supervisor(default_limits("panda", self.sim.dt), (0.025, 0.25), kinematics=self.robot, people="none")
        self.sup.bind(self.robot)

    def step(self, action: np.ndarray) -> object:
        cmd = self.sup.filter(action, dict(self.robot.state(), time=self.sim.time))
        self.robot._apply(cmd)
        self.sim.step()
        return cmd


@pytest.fixture()
def rig() -> ArmRig:
    r = ArmRig()
    for _ in range(3):
        r.step(np.array([0, 0, 0, 0, 1.0]))
    yield r
    r.sim.close()


def test_panda_follows_end_effector_deltas(rig: ArmRig) -> None:
    for axis, sign in ((0, 1.0), (1, 1.0), (2, -1.0)):
        for _ in range(4):  # come to rest first: what the last axis still carries is not this one's
            rig.step(np.array([0.0, 0.0, 0.0, 0.0, 1.0]))
        start = rig.robot.state()["ee_pos"]
        a = np.zeros(5)
        a[axis], a[4] = sign, 1.0
        for _ in range(6):
            rig.step(a)
        moved = rig.robot.state()["ee_pos"] - start
        # the velocity ramps from rest (half a period of lag), then moves at 0.96 x 0.25 m/s
        assert 0.65 * 6 * 0.025 < sign * moved[axis] <= 6 * 0.025 + 1e-3
        assert np.abs(np.delete(moved, axis)).max() < 0.01


def test_panda_yaw_and_gripper(rig: ArmRig) -> None:
    yaw0 = rig.robot.state()["ee_yaw"]
    for _ in range(3):
        rig.step(np.array([0, 0, 0, 1.0, -1.0]))
    st = rig.robot.state()
    assert 0.1 < st["ee_yaw"] - yaw0 <= 3 * 0.15 + 0.01  # 1.5 rad/s angular limit
    assert st["gripper_width"] < 0.005  # closed on nothing


def test_backends_refuse_forged_foreign_replayed_and_stale_commands(rig: ArmRig) -> None:
    assert not hasattr(command, "mint")  # nothing importable mints commands
    q = rig.robot.state()["joint_pos"]
    plan = np.concatenate([q, np.zeros(7), np.full(7, 1.0), [0.04]])
    forged = [
        SafeCommand("panda", plan),
        SafeCommand("panda", plan, 10**6, b"\0" * 32),
        np.array(plan),
        Stop("forged brake", SafeCommand("panda", plan)),
    ]
    other = ArmRig()  # a second supervisor (say, one a policy built with loose limits)
    foreign = other.sup.filter(np.array([1.0, 0, 0, 0, 1]), dict(rig.robot.state(), time=rig.sim.time))
    assert isinstance(foreign, SafeCommand)
    for bad in [*forged, foreign]:
        with pytest.raises(PermissionError):
            rig.robot._apply(bad)  # type: ignore[arg-type]
    fresh = rig.sup.filter(np.array([1.0, 0, 0, 0, 1]), dict(rig.robot.state(), time=rig.sim.time))
    rig.robot._apply(fresh)
    with pytest.raises(PermissionError):
        rig.robot._apply(fresh)  # replayed
    rig.sim.step()
    later = rig.sup.filter(np.array([1.0, 0, 0, 0, 1]), dict(rig.robot.state(), time=rig.sim.time))
    rig.sim.step()  # the world moved on: that plan no longer starts where the arm is
    with pytest.raises(PermissionError):
        rig.robot._apply(later)
    with pytest.raises(PermissionError):
        other.sup.bind(rig.robot)  # bound once
    other.sim.close()


def test_a_plan_that_runs_out_brakes_within_the_acceleration_limits(rig: ArmRig) -> None:
    probe = SubstepProbe(rig.robot, rig.sup.limits)
    for _ in range(5):
        rig.step(np.array([1.0, 0, 0, 0, 1]))
    assert np.linalg.norm(rig.robot.state()["ee_lin_vel"]) > 0.15
    for _ in range(3):  # physics goes on, nobody plans: the arm stops on its own
        rig.sim.step()
    assert np.abs(rig.robot.state()["joint_vel"]).max() < 5e-3
    assert probe.ratios()["joint acceleration (25 ms)"] <= 1.01  # a controlled stop, not a halt
    rig.robot._apply(Stop("no brake command"))  # keeps braking / holding on its own plan
    rig.sim.step()
    assert np.abs(rig.robot.state()["joint_vel"]).max() < 5e-3


def test_diffbot_drives_and_turns() -> None:
    sim = Sim()
    sim.add_shape("floor", "box", [5, 5, 0.05], [1, 1, 1, 1], pos=[0, 0, -0.05])
    base = DiffDriveBase(sim)
    base._reset(0.0, 0.0, 0.0)
    sup = Supervisor(default_limits("diffbot", sim.dt), (0.5, 1.2), people="none")
    sup.bind(base)

    def step(a: list[float] | None) -> object:
        cmd = sup.filter(None if a is None else np.array(a), dict(base.state(), time=sim.time))
        base._apply(cmd)
        sim.step()
        return cmd

    for _ in range(10):
        step([1.0, 0.0, 0.0])
    st = base.state()
    assert st["base_pose"][0] == pytest.approx(0.42, abs=0.03)  # ramps at 1.5 m/s^2 to 0.5 m/s
    assert abs(st["base_pose"][1]) < 0.05
    assert st["base_vel"][0] == pytest.approx(0.5, rel=0.05)
    for _ in range(10):
        step([0.0, 1.0, 0.0])
    assert base.state()["base_vel"][1] == pytest.approx(1.2, rel=0.05)
    for _ in range(6):
        base._apply(Stop("test"))  # no brake command: the plan runs out and brakes
        sim.step()
    assert np.abs(base.state()["base_vel"]).max() < 0.02
    with pytest.raises(PermissionError):
        base._apply(SafeCommand("diffbot", np.zeros(5)))
    sim.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_arm_tracks_its_plan_within_half_the_margins(seed: int) -> None:
    """The supervisor plans JOINT_MARGIN / BOX_MARGIN inside the limits so that tracking
    error cannot carry the arm past them: the real arm, driven hard (saturated commands,
    then stops) through a real supervisor, must lead its plan by at most half of that."""
    from qrobot.safety.arm_rules import BOX_MARGIN, JOINT_MARGIN
    from qrobot.safety.supervisor import OperatorKey

    sim = Sim()
    arm = PandaArm(sim)
    key = OperatorKey()
    sup = Supervisor(default_limits("panda", sim.dt), (0.025, 0.25), kinematics=arm, operator=key, people="none")
    sup.bind(arm)
    rng = np.random.default_rng(seed)
    lead = ee_error = 0.0
    try:
        for k in range(300):
            action = np.sign(rng.uniform(-1, 1, 5)) if k % 20 < 14 else np.zeros(5)
            arm._apply(sup.filter(action, dict(arm.state(), time=sim.time)))
            sim.step()
            if sup.latched:
                sup.reset_estop(key, rearm=False)
            q = np.asarray(arm.state()["joint_pos"])
            q_plan, _ = arm._plan_at(sim.time)
            start = arm._plan[1]
            lead = max(lead, float(((q - q_plan) * np.sign(q_plan - start)).max()))
            ee_error = max(ee_error, float(np.abs(arm.jacobian(q)[:3] @ (q - q_plan)).max()))
    finally:
        sim.close()
    assert lead <= JOINT_MARGIN / 2 and ee_error <= BOX_MARGIN / 2, (lead, ee_error)
