"""Shared rigs for the safety tests: real PyBullet robots behind a real supervisor."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from qrobot.robots.diffbot import DiffDriveBase
from qrobot.robots.panda import PandaArm
from qrobot.safety.limits import Limits, default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor
from qrobot.sim import Sim


class Rig:
    """One robot in a DIRECT world, its supervisor (bound to it), and an operator key.
    `people`: the supervisor's declared people source ("none": nobody can be present)."""

    def __init__(self, robot: str, limits: Limits | None = None, people: str | None = "none") -> None:
        self.sim = Sim()
        self.sim.add_shape("ground", "box", [6, 6, 0.05], [1, 1, 1, 1], pos=[0, 0, -0.05])
        self.key = OperatorKey()
        lim = limits or default_limits(robot, self.sim.dt)
        if robot == "panda":
            self.robot = PandaArm(self.sim)
            self.sup = Supervisor(lim, (0.025, 0.25), kinematics=self.robot, operator=self.key, people=people)
        else:
            self.robot = DiffDriveBase(self.sim)
            self.robot._reset(0.0, 0.0, 0.0)
            self.sup = Supervisor(lim, (0.5, 1.2), operator=self.key, people=people)
        self.sup.bind(self.robot)
        self.limits = lim

    def state(self, **extra: object) -> dict:
        return dict(self.robot.state(), time=self.sim.time, **extra)

    def step(self, action: object, **extra: object) -> object:
        cmd = self.sup.filter(action, self.state(**extra))
        self.robot._apply(cmd)
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
