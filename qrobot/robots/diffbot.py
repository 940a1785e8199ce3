"""Differential-drive base backend: (v, omega) velocity control on two wheels.

Action (normalised to [-1, 1]): v, omega, stop (> 0.5 means "I am at the goal").
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from qrobot.safety.command import SafeCommand, Stop
from qrobot.sim import Sim, pybullet

WHEELS = [0, 1]  # left, right
WHEEL_RADIUS = 0.08
TRACK = 0.40
WHEEL_FORCE = 40.0
RADIUS = 0.29  # footprint circle used for planning and clearance
MAX_V, MAX_W = 0.5, 1.2  # m/s and rad/s at |action| = 1


class DiffDriveBase:
    """A small two-wheeled base; `apply` takes only supervisor-issued commands."""

    name = "diffbot"
    action_dim = 3
    proprio_dim = 2
    radius = RADIUS

    def __init__(self, sim: Sim, max_v: float = MAX_V, max_w: float = MAX_W) -> None:
        self.sim = sim
        urdf = str(resources.files("qrobot") / "assets" / "diffbot.urdf")
        self.uid = sim.load_urdf("robot", urdf, (0, 0, 0.0))
        self.max_v, self.max_w = max_v, max_w
        c = sim.client
        for link in (2, 3):  # casters slide freely
            c.changeDynamics(self.uid, link, lateralFriction=0.0, rollingFriction=0.0,
                             spinningFriction=0.0)
        for link in WHEELS:
            c.changeDynamics(self.uid, link, lateralFriction=1.5)

    def reset(self, x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> None:
        """Episode reset: place the base (between episodes only)."""
        c = self.sim.client
        self.sim.version += 1
        orn = pybullet.getQuaternionFromEuler([0, 0, yaw])
        c.resetBasePositionAndOrientation(self.uid, [x, y, 0.0], orn)
        c.resetBaseVelocity(self.uid, [0, 0, 0], [0, 0, 0])
        for j in WHEELS:
            c.resetJointState(self.uid, j, 0.0, 0.0)
        self._drive(0.0, 0.0)

    def _drive(self, v: float, w: float) -> None:
        left = (v - w * TRACK / 2) / WHEEL_RADIUS
        right = (v + w * TRACK / 2) / WHEEL_RADIUS
        self.sim.client.setJointMotorControlArray(
            self.uid, WHEELS, pybullet.VELOCITY_CONTROL, targetVelocities=[left, right],
            forces=[WHEEL_FORCE, WHEEL_FORCE])

    def state(self) -> dict[str, np.ndarray | float]:
        c = self.sim.client
        pos, orn = c.getBasePositionAndOrientation(self.uid)
        lin, ang = c.getBaseVelocity(self.uid)
        yaw = pybullet.getEulerFromQuaternion(orn)[2]
        heading = np.array([np.cos(yaw), np.sin(yaw)])
        return {
            "base_pose": np.array([pos[0], pos[1], yaw]),
            "base_vel": np.array([float(np.dot(lin[:2], heading)), ang[2]]),
            "base_lin_vel": np.asarray(lin),
        }

    def proprio(self, state: dict) -> np.ndarray:
        return np.asarray(state["base_vel"], dtype=np.float32)

    def apply(self, cmd: SafeCommand | Stop) -> None:
        """Drive the wheels at a supervisor-issued (v m/s, omega rad/s). A Stop executes
        its controlled-stop command, or commands zero wheel speed."""
        if isinstance(cmd, Stop):
            if cmd.brake is None:
                self._drive(0.0, 0.0)
                return
            cmd = cmd.brake
        if not isinstance(cmd, SafeCommand) or not cmd.issued_by_supervisor or cmd.robot != self.name \
                or cmd.values.shape != (3,):
            raise PermissionError("DiffDriveBase.apply accepts only commands issued by the supervisor")
        self._drive(float(cmd.values[0]), float(cmd.values[1]))
