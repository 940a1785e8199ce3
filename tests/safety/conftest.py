"""Shared rigs for the safety tests: real PyBullet robots behind a real supervisor."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pytest

from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import PandaArm
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor
from qrobot.sim import Sim


class Rig:
    """One robot in a DIRECT world, its supervisor, and an operator key."""

    def __init__(self, robot: str) -> None:
        self.sim = Sim()
        self.sim.add_shape("ground", "box", [6, 6, 0.05], [1, 1, 1, 1], pos=[0, 0, -0.05])
        self.key = OperatorKey()
        lim = default_limits(robot, self.sim.dt)
        if robot == "panda":
            self.robot = PandaArm(self.sim)
            self.sup = Supervisor(lim, (0.025, 0.25), kinematics=self.robot, operator=self.key)
        else:
            self.robot = DiffDriveBase(self.sim)
            self.robot.reset(0.0, 0.0, 0.0)
            self.sup = Supervisor(lim, (0.5, 1.2), operator=self.key)
        self.limits = lim

    def state(self, **extra: object) -> dict:
        return dict(self.robot.state(), time=self.sim.time, **extra)

    def step(self, action: object, **extra: object) -> object:
        cmd = self.sup.filter(action, self.state(**extra))
        self.robot.apply(cmd)
        self.sim.step()
        return cmd

    def speed(self) -> float:
        st = self.robot.state()
        return float(np.linalg.norm(st["ee_lin_vel"])) if "ee_lin_vel" in st else abs(float(st["base_vel"][0]))


@pytest.fixture()
def arm() -> Iterator[Rig]:
    rig = Rig("panda")
    yield rig
    rig.sim.close()


@pytest.fixture()
def base() -> Iterator[Rig]:
    rig = Rig("diffbot")
    yield rig
    rig.sim.close()
