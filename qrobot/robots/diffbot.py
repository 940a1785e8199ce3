"""Differential-drive base backend: (v, omega) velocity control on two wheels.

Action (normalised to [-1, 1]): v, omega, stop (> 0.5 means "I am at the goal").
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from qrobot.robots.bound import BoundBackend
from qrobot.safety import trajectory
from qrobot.safety.command import SafeCommand, Stop
from qrobot.sim import Sim, pybullet

WHEELS = [0, 1]  # left, right
WHEEL_RADIUS = 0.08
TRACK = 0.40
WHEEL_FORCE = 40.0
RADIUS = 0.29  # footprint circle used for planning and clearance
MAX_V, MAX_W = 0.5, 1.2  # m/s and rad/s at |action| = 1
BRAKE = np.array([1.5, 4.0])  # m/s^2 and rad/s^2 when a plan runs out
BRAKE.setflags(write=False)  # reachable from the env (robot.MAX_RATES): nobody may change it
COMMAND_SIZE = 5  # v1, w1, done, v0, w0: see qrobot.safety.trajectory


class DiffDriveBase(BoundBackend):
    """A small two-wheeled base driven by one-period (v, w) ramps that only its bound
    supervisor issues; wheel speeds follow the ramp at every physics substep, and the
    base brakes on its own when a plan runs out."""

    MAX_RATES = BRAKE
    name = "diffbot"
    action_dim = 3
    action_names = ("v", "omega", "stop")

    @staticmethod
    def command_series(values: np.ndarray) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """An issued command (v1, w1, done, v0, w0) as series a person reads, one unit each:
        the speeds the ramp reaches at the end of the period."""
        return {
            "linear speed (m/s)": (("v",), np.asarray(values[0:1], float)),
            "turn rate (rad/s)": (("omega",), np.asarray(values[1:2], float)),
        }

    proprio_dim = 2
    radius = RADIUS

    def __init__(self, sim: Sim, max_v: float = MAX_V, max_w: float = MAX_W) -> None:
        self._sim = sim
        urdf = str(resources.files("qrobot") / "assets" / "diffbot.urdf")
        self._uid = sim.load_urdf("robot", urdf, (0, 0, 0.0))
        self.max_v, self.max_w = max_v, max_w
        c = sim._client
        self._init_binding()
        self._plan = (sim.time, np.zeros(2), np.zeros(2))
        sim._on_substep(self._track)
        for link in (2, 3):  # casters slide freely
            c.changeDynamics(self.uid, link, lateralFriction=0.0, rollingFriction=0.0, spinningFriction=0.0)
        for link in WHEELS:
            c.changeDynamics(self.uid, link, lateralFriction=1.5)

    def _reset(self, x: float = 0.0, y: float = 0.0, yaw: float = 0.0) -> None:
        """Episode reset: place the base (between episodes only)."""
        c = self._sim._client
        self._sim.version += 1
        orn = pybullet.getQuaternionFromEuler([0, 0, yaw])
        c.resetBasePositionAndOrientation(self.uid, [x, y, 0.0], orn)
        c.resetBaseVelocity(self.uid, [0, 0, 0], [0, 0, 0])
        for j in WHEELS:
            c.resetJointState(self.uid, j, 0.0, 0.0)
        self._plan = (self._sim.time, np.zeros(2), np.zeros(2))
        self._drive(0.0, 0.0)

    def _halt(self, t: float) -> None:
        """Brake from the motion at t on, as if the plan had ended there (see PandaArm._halt)."""
        v = self._plan_at(t)
        self._plan = (t - self._sim.dt, v, v)

    def _plan_at(self, t: float) -> np.ndarray:
        t0, v0, v1 = self._plan
        return trajectory.at(v0, v1, self._sim.dt, self._rates, t - t0)[1]

    def _track(self, t: float) -> None:
        """Substep hook: wheel speeds for the plan's (v, w) at t."""
        v, w = self._plan_at(t)
        self._drive(float(v), float(w))

    def _drive(self, v: float, w: float) -> None:
        left = (v - w * TRACK / 2) / WHEEL_RADIUS
        right = (v + w * TRACK / 2) / WHEEL_RADIUS
        self._sim._client.setJointMotorControlArray(
            self.uid,
            WHEELS,
            pybullet.VELOCITY_CONTROL,
            targetVelocities=[left, right],
            forces=[WHEEL_FORCE, WHEEL_FORCE],
        )

    def state(self) -> dict[str, np.ndarray | float]:
        """Measured pose and velocities, plus `cmd_vel`: the (v, w) the current plan asks for now."""
        c = self._sim._client
        pos, orn = c.getBasePositionAndOrientation(self.uid)
        lin, ang = c.getBaseVelocity(self.uid)
        yaw = pybullet.getEulerFromQuaternion(orn)[2]
        heading = np.array([np.cos(yaw), np.sin(yaw)])
        return {
            "base_pose": np.array([pos[0], pos[1], yaw]),
            "base_vel": np.array([float(np.dot(lin[:2], heading)), ang[2]]),
            "base_lin_vel": np.asarray(lin),
            "cmd_vel": self._plan_at(self._sim.time),
        }

    def proprio(self, state: dict) -> np.ndarray:
        return np.asarray(state["base_vel"], dtype=np.float32)

    def _apply(self, cmd: SafeCommand | Stop) -> None:
        """Execute a plan from the bound supervisor: ramp (v, w) from v0, w0 to v1, w1 over
        the period. A Stop executes its controlled-stop plan; without one the current plan
        runs out and the base brakes on its own. Forged, foreign, replayed or stale plans
        are refused."""
        if isinstance(cmd, Stop):
            if cmd.brake is None:
                return
            cmd = cmd.brake
        if self._check is None or not self._check.accept(cmd, self.name, COMMAND_SIZE):
            raise PermissionError("DiffDriveBase accepts only fresh commands from the supervisor bound to it")
        vals = cmd.values
        v0, v1 = vals[3:5].copy(), vals[0:2].copy()
        if np.max(np.abs(v0 - self._plan_at(self._sim.time))) > 1e-6:
            raise PermissionError("DiffDriveBase refused a plan that does not start at its current speed")
        self._plan = (self._sim.time, v0, v1)
