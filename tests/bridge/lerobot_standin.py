"""A stand-in LeRobot arm: exactly the interface of `lerobot.robots.robot.Robot` (0.4.4:
`observation_features`, `action_features`, `is_connected`, `is_calibrated`,
`connect(calibrate=True)`, `calibrate()`, `configure()`, `get_observation()`,
`send_action(action)` returning the action sent, `disconnect()`) over a real PyBullet
Panda in its own DIRECT world: the 7 joints and the fingers under position control,
stepped to the wall clock (or an injected clock) whenever the arm is read or commanded,
as a servo bus moves between reads. Positions in degrees (LeRobot's arm motors with
`use_degrees`), the gripper 0 (closed) .. 100 (open); cameras omitted.

`scripts/lerobot_check.py` wraps the same `PandaSim` in a real LeRobot `Robot` subclass.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qrobot.robots.panda import ARM_FORCES, ARM_JOINTS, FINGER_FORCE, FINGER_OPEN, FINGERS, HOME, MAX_JOINT_VEL
from qrobot.sim import PHYSICS_HZ, Sim, pybullet

MOTORS = tuple(f"joint{i}" for i in range(1, 8))
GAIN = 0.3  # PyBullet's position gain: a 0.1 rad step settles in about 0.1 s, like a servo's


class PandaSim:
    """The physics: a fixed-base Panda at HOME, its motors holding position targets."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, start: np.ndarray = HOME) -> None:
        self._clock, self._lock = clock, threading.Lock()
        self.sim = Sim()
        self.uid = self.sim.load_urdf("robot", "franka_panda/panda.urdf", fixed=True)
        c = self.sim._client
        for j, q in zip(ARM_JOINTS, start):
            c.resetJointState(self.uid, j, float(q), 0.0)
        for j in FINGERS:
            c.resetJointState(self.uid, j, FINGER_OPEN, 0.0)
        self.target = np.array(start, dtype=np.float64)
        self.width = 2 * FINGER_OPEN
        self._apply()
        self._t = clock()

    def _apply(self) -> None:
        c = self.sim._client
        for j, q, f, v in zip(ARM_JOINTS, self.target.tolist(), ARM_FORCES, MAX_JOINT_VEL.tolist()):
            c.setJointMotorControl2(
                self.uid, j, pybullet.POSITION_CONTROL, targetPosition=q, force=f, maxVelocity=v, positionGain=GAIN
            )
        half = self.width / 2
        c.setJointMotorControlArray(
            self.uid, FINGERS, pybullet.POSITION_CONTROL, targetPositions=[half, half], forces=[FINGER_FORCE] * 2
        )

    def _advance(self) -> None:
        """Step the physics up to now (at most one second at a time: a stalled caller)."""
        n = int((self._clock() - self._t) * PHYSICS_HZ)
        for _ in range(min(n, PHYSICS_HZ)):
            self.sim._client.stepSimulation()
        self._t = self._clock() if n > PHYSICS_HZ else self._t + max(n, 0) / PHYSICS_HZ

    def read(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Joint positions (rad), joint velocities (rad/s), finger opening (m), now."""
        with self._lock:
            self._advance()
            js = self.sim._client.getJointStates(self.uid, ARM_JOINTS + FINGERS)
        return np.array([s[0] for s in js[:7]]), np.array([s[1] for s in js[:7]]), js[7][0] + js[8][0]

    def command(self, target: np.ndarray, width: float) -> None:
        with self._lock:
            self._advance()
            self.target, self.width = np.array(target, dtype=np.float64), float(width)
            self._apply()

    def close(self) -> None:
        self.sim.close()


class StandInPanda:
    """LeRobot's `Robot` interface over `PandaSim` (motors joint1..joint7, gripper)."""

    name = "qrobot_panda_standin"

    def __init__(
        self, gripper: bool = True, velocities: bool = False, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.motors = MOTORS + (("gripper",) if gripper else ())
        self.velocities, self._clock = velocities, clock
        self.physics: PandaSim | None = None
        self.actions: list[dict[str, float]] = []  # every action sent, as sent

    @property
    def observation_features(self) -> dict[str, Any]:
        vel = {f"{m}.vel": float for m in MOTORS} if self.velocities else {}
        return {**{f"{m}.pos": float for m in self.motors}, **vel}

    @property
    def action_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.motors}

    @property
    def is_connected(self) -> bool:
        return self.physics is not None

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        if self.physics is not None:
            raise RuntimeError(f"{self.name} is already connected")
        self.physics = PandaSim(self._clock)

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def _connected(self) -> PandaSim:
        if self.physics is None:
            raise RuntimeError(f"{self.name} is not connected")  # (LeRobot: DeviceNotConnectedError)
        return self.physics

    def get_observation(self) -> dict[str, float]:
        q, dq, width = self._connected().read()
        obs = {f"{m}.pos": math.degrees(v) for m, v in zip(MOTORS, q.tolist())}
        if "gripper" in self.motors:
            obs["gripper.pos"] = 100.0 * width / (2 * FINGER_OPEN)
        if self.velocities:
            obs.update({f"{m}.vel": math.degrees(v) for m, v in zip(MOTORS, dq.tolist())})
        return obs

    def send_action(self, action: dict[str, float]) -> dict[str, float]:
        """Position targets (a motor left out keeps its target), as LeRobot's followers do."""
        physics = self._connected()
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items() if k.endswith(".pos")}
        target = np.array([math.radians(goal[m]) if m in goal else physics.target[i] for i, m in enumerate(MOTORS)])
        width = physics.width
        if "gripper" in goal and "gripper" in self.motors:
            width = 2 * FINGER_OPEN * min(max(goal["gripper"], 0.0), 100.0) / 100.0
        physics.command(target, width)
        sent = {f"{m}.pos": v for m, v in goal.items()}
        self.actions.append(sent)
        return sent

    def disconnect(self) -> None:
        self._connected().close()
        self.physics = None
