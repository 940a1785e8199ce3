"""Franka Panda backend: joint position targets issued by the supervisor.

The policy's action (normalised to [-1, 1]: dx, dy, dz, dyaw, gripper > 0 open) is an
end-effector delta; the supervisor limits it, resolves it into joint velocities through
`jacobian`, limits the joints and issues a one-period joint plan. This module (with the other backends) is the only
place motors are commanded.
"""

from __future__ import annotations

import numpy as np

from qrobot.robots.bound import BoundBackend
from qrobot.safety import trajectory
from qrobot.safety.command import SafeCommand, Stop
from qrobot.sim import PHYSICS_HZ, Sim, pybullet

ARM_JOINTS = list(range(7))
FINGERS = [9, 10]
EE_LINK = 11
_ORIGIN, _ZEROS9, _ZEROS2 = [0.0, 0.0, 0.0], [0.0] * 9, [0.0] * 2
HAND_LINK = 8
HOME = np.array([0.0, 0.21, 0.0, -2.25, 0.0, 2.46, 0.785])  # gripper down, above the table
ARM_FORCES = [87.0] * 4 + [12.0] * 3
MAX_JOINT_VEL = np.array([2.175] * 4 + [2.61] * 3)  # Franka's published limits
MAX_JOINT_ACC = np.array([15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0])
for _const in (HOME, MAX_JOINT_VEL, MAX_JOINT_ACC):
    _const.setflags(write=False)  # reachable from the env (robot.MAX_RATES): nobody may change them
TRACK_GAIN = 0.02  # share of the position error corrected per substep (velocity feed-forward does the rest)
COMMAND_SIZE = 22  # q0 (7), v0 (7), v1 (7), finger width: see qrobot.safety.trajectory
FINGER_FORCE = 40.0
FINGER_OPEN = 0.04
MAX_STEP = 0.025  # m of end-effector motion per control step at |action| = 1
MAX_YAW_STEP = 0.25  # rad per control step at |action| = 1
HAND_BELOW_EE = 0.105  # m from the grasp point (EE_LINK) back up to the hand link (measured)


def hand_frame(ee_pos: np.ndarray, ee_yaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The hand link's position (..., 3) and rotation (..., 3, 3) from the proprio's grasp
    point and yaw (the gripper points down: roll pi, pitch 0), where wrist cameras hang."""
    c, s = np.cos(ee_yaw), np.sin(ee_yaw)
    zero, one = np.zeros_like(c), np.ones_like(c)
    rot = np.stack(
        [np.stack([c, s, zero], -1), np.stack([s, -c, zero], -1), np.stack([zero, zero, -one], -1)], -2
    )  # Rz(yaw) @ Rx(pi)
    return np.asarray(ee_pos) + rot @ np.array([0.0, 0.0, -HAND_BELOW_EE]), rot


class PandaArm(BoundBackend):
    """A fixed-base Panda driven by one-period joint plans that only its bound supervisor
    issues. Between control ticks, each physics substep tracks the plan's velocity ramp
    (velocity control plus a small position correction); when a plan runs out the arm
    brakes on its own."""

    MAX_RATES = MAX_JOINT_ACC
    name = "panda"
    action_dim = 5
    action_names = ("dx", "dy", "dz", "dyaw", "gripper")

    @staticmethod
    def command_series(values: np.ndarray) -> dict[str, tuple[tuple[str, ...], np.ndarray]]:
        """An issued command (q, v0, v1, gripper) as series a person reads, one unit each:
        the joint velocities at the end of the period, and the finger opening."""
        v1 = np.asarray(values[14:21], float)
        return {
            "joint velocity (rad/s)": (tuple(f"joint{i}" for i in range(1, 8)), v1),
            "gripper target (m)": (("opening",), np.asarray(values[21:22], float)),
        }

    proprio_dim = 13

    def __init__(
        self,
        sim: Sim,
        base_pos: tuple[float, float, float] = (0.0, 0.0, 0.0),
        max_step: float = MAX_STEP,
        max_yaw_step: float = MAX_YAW_STEP,
        workspace: tuple[tuple[float, float, float], tuple[float, float, float]] = (
            (0.15, -0.45, 0.015),
            (0.85, 0.45, 0.6),
        ),
    ) -> None:
        self._sim = sim
        self._uid = sim.load_urdf("robot", "franka_panda/panda.urdf", base_pos, fixed=True)
        self.max_step = max_step
        self.max_yaw_step = max_yaw_step
        self.workspace = np.array(workspace, dtype=np.float64)
        c = sim._client
        info = [c.getJointInfo(self.uid, j) for j in ARM_JOINTS]
        self.lower = np.array([i[8] for i in info])
        self.upper = np.array([i[9] for i in info])
        for arr in (self.workspace, self.lower, self.upper):
            arr.setflags(write=False)
        for link in FINGERS:
            c.changeDynamics(self.uid, link, lateralFriction=2.0, spinningFriction=0.01)
        self._init_binding()
        sim._on_substep(self._track)
        self._reset()

    # ------------------------------------------------------------------ reset
    def _reset(self) -> None:
        """Episode reset (between episodes only; motion during one goes via the supervisor)."""
        c = self._sim._client
        self._sim.version += 1
        for j, q in zip(ARM_JOINTS, HOME):
            c.resetJointState(self.uid, j, q, 0.0)
        for j in FINGERS:
            c.resetJointState(self.uid, j, FINGER_OPEN, 0.0)
        self._plan = (self._sim.time, HOME.copy(), np.zeros(7), np.zeros(7))
        self._fingers(FINGER_OPEN)

    def _fingers(self, width: float) -> None:
        self._sim._client.setJointMotorControlArray(
            self.uid,
            FINGERS,
            pybullet.POSITION_CONTROL,
            targetPositions=[width, width],
            forces=[FINGER_FORCE, FINGER_FORCE],
        )

    def _halt(self, t: float) -> None:
        """Brake from the motion at t on, as if the plan had ended there (a protective stop
        the robot executes itself: position and velocity stay continuous)."""
        q, v = self._plan_at(t)
        self._plan = (t - self._sim.dt, q - v * self._sim.dt, v, v)

    def _plan_at(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        t0, q0, v0, v1 = self._plan
        disp, vel = trajectory.at(v0, v1, self._sim.dt, self._rates, t - t0)
        return q0 + disp, vel

    def _track(self, t: float) -> None:
        """Substep hook (t: the substep's end): the plan's mean velocity over the substep,
        plus a share of the position error. The mean, not the velocity at t: while the plan
        accelerates, the end velocity held for a whole substep runs ahead of the plan by
        (v1 - v0) dt / (2 substeps) per period (2.8 mrad from rest to 1.34 rad/s), which
        carried a braking joint past its limit margin."""
        c = self._sim._client
        q = np.array([s[0] for s in c.getJointStates(self.uid, ARM_JOINTS)])
        q_ref, _ = self._plan_at(t - 1.0 / PHYSICS_HZ)
        q_next, _ = self._plan_at(t)
        vel = (q_next - q_ref) * PHYSICS_HZ
        cmd = np.clip(vel + TRACK_GAIN * (q_ref - q) * PHYSICS_HZ, -MAX_JOINT_VEL, MAX_JOINT_VEL)
        c.setJointMotorControlArray(
            self.uid, ARM_JOINTS, pybullet.VELOCITY_CONTROL, targetVelocities=cmd.tolist(), forces=ARM_FORCES
        )

    # ------------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray | float]:
        """Measured joints and gripper pose, plus `cmd_vel`: the joint velocity the current
        plan asks for now (where the next plan must start)."""
        c = self._sim._client
        js = c.getJointStates(self.uid, ARM_JOINTS + FINGERS)
        q = np.array([s[0] for s in js])
        dq = np.array([s[1] for s in js])
        # forward kinematics now: the cached link frame lags a substep unless a wrist camera
        # happened to render, and the state must not depend on that
        link = c.getLinkState(self.uid, EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1)
        pos, orn = np.asarray(link[4]), np.asarray(link[5])
        x_axis = np.asarray(c.getMatrixFromQuaternion(orn)).reshape(3, 3)[:, 0]
        return {
            "joint_pos": q[:7],
            "joint_vel": dq[:7],
            "ee_pos": pos,
            "ee_orn": orn,
            "ee_yaw": float(np.arctan2(x_axis[1], x_axis[0])),
            "ee_lin_vel": np.asarray(link[6]),
            "ee_ang_vel": np.asarray(link[7]),
            "gripper_width": float(q[7] + q[8]),
            "cmd_vel": self._plan_at(self._sim.time)[1],
        }

    def proprio(self, state: dict) -> np.ndarray:
        yaw = state["ee_yaw"]
        return np.concatenate(
            [state["ee_pos"], [np.cos(yaw), np.sin(yaw), state["gripper_width"]], state["joint_pos"]]
        ).astype(np.float32)

    # ------------------------------------------------------------ kinematics
    def jacobian(self, q: np.ndarray) -> np.ndarray:
        """(6, 7) end-effector Jacobian (linear rows, then angular) at joints q. A query."""
        # the fingers (movable joints 8, 9) come after the grasp point's chain: any value does
        lin, ang = self._sim._client.calculateJacobian(
            self.uid, EE_LINK, _ORIGIN, [float(x) for x in q] + _ZEROS2, _ZEROS9, _ZEROS9
        )
        return np.array(lin + ang)[:, :7]

    # ---------------------------------------------------------------- actuate
    def _apply(self, cmd: SafeCommand | Stop) -> None:
        """Execute a plan from the bound supervisor: [q0 (7), v0 (7), v1 (7), finger width].
        A Stop executes its controlled-stop plan; without one the current plan runs out
        and the arm brakes on its own. Forged, foreign, replayed or stale plans are refused."""
        if isinstance(cmd, Stop):
            if cmd.brake is None:
                return
            cmd = cmd.brake
        if self._check is None or not self._check.accept(cmd, self.name, COMMAND_SIZE):
            raise PermissionError("PandaArm accepts only fresh commands from the supervisor bound to it")
        vals = cmd.values
        q0, v0, v1, finger = vals[:7], vals[7:14], vals[14:21], float(vals[21])
        q_now = np.array([s[0] for s in self._sim._client.getJointStates(self.uid, ARM_JOINTS)])
        if np.max(np.abs(q0 - q_now)) > 1e-6 or np.max(np.abs(v0 - self._plan_at(self._sim.time)[1])) > 1e-6:
            raise PermissionError("PandaArm refused a plan that does not start where the arm is")
        self._plan = (self._sim.time, q0.copy(), v0.copy(), v1.copy())
        self._fingers(FINGER_OPEN if finger > 0.02 else 0.0)
