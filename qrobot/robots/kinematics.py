"""A Panda that only computes: its own PyBullet world (DIRECT, never stepped, never the
episode's), posed at given joints to read the hand's pose. Robot hosts for real arms use it
to give the supervisor the state it reads (the arm itself is measured, not simulated).
Setting joints here moves nothing: the one place outside the backends allowed to."""

from __future__ import annotations

import numpy as np

from qrobot.robots.panda import ARM_JOINTS, FINGERS, PandaArm
from qrobot.sim import Sim


class PandaModel:
    def __init__(self) -> None:
        self.arm = PandaArm(Sim())  # a world of its own

    def pose(self, q: np.ndarray, dq: np.ndarray | None = None, finger: float | None = None) -> dict:
        """PandaArm.state() with the model set to joints q (and velocities dq, finger opening)."""
        c, uid = self.arm.sim._client, self.arm.uid
        vel = np.zeros(len(ARM_JOINTS)) if dq is None else dq
        for j, qj, vj in zip(ARM_JOINTS, np.asarray(q, float).tolist(), np.asarray(vel, float).tolist()):
            c.resetJointState(uid, j, qj, vj)
        if finger is not None:
            for j in FINGERS:
                c.resetJointState(uid, j, float(finger), 0.0)
        return self.arm.state()

    def jacobian(self, q: np.ndarray) -> np.ndarray:
        return self.arm.jacobian(q)

    def close(self) -> None:
        self.arm.sim.close()
