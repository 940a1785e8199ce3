"""The agent's side of the robot link (`qrobot.bridge.robot_link`) to a robot process
(`qrobot.bridge.robot_sim`, or a vendor driver speaking the same frames). The supervisor
binds to it exactly as to an in-process backend (`Supervisor.bind`): binding pairs the
robot with that supervisor's command seal."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

import numpy as np

from qrobot.bridge.robot_link import (
    LINK_VERSION,
    Hello,
    Link,
    Observation,
    Pair,
    Plan,
    Reset,
    RobotState,
    proof,
    unpack_state,
)
from qrobot.safety.command import CommandCheck, SafeCommand, Stop


class SimAdapter:
    def __init__(self, port: int, token: bytes, host: str = "127.0.0.1", timeout: float = 5.0) -> None:
        self._token = token
        self.link = Link(socket.create_connection((host, port), timeout=timeout))
        self.link.sock.settimeout(None)
        hello = self.link.recv(timeout)
        if not isinstance(hello, Hello):
            self.link.close()
            raise ConnectionError(f"the robot did not introduce itself (got {type(hello).__name__})")
        self.hello = hello
        self.period = -1
        self.last: RobotState | None = None
        self.on_observation: Callable[[bytes], None] = lambda data: None  # the service forwards them
        self.observations = 0

    @property
    def robot(self) -> str:
        return self.hello.robot

    def _bind(self, check: CommandCheck, rates: np.ndarray) -> None:
        """Called by `Supervisor.bind`: the robot will execute that supervisor's plans only."""
        self.link.send(
            Pair(
                version=LINK_VERSION,
                secret=check._secret,
                rates=[float(r) for r in np.asarray(rates, dtype=np.float64)],
                proof=proof(self._token, self.hello.nonce),
            )
        )

    def state(self, timeout: float = 1.0) -> dict | None:
        """The robot's state at the start of its current period (None: none came in time)."""
        deadline = time.monotonic() + timeout
        while True:
            frame = self.link.recv(deadline - time.monotonic())
            if frame is None:
                return None
            if isinstance(frame, RobotState):
                self.period, self.last = frame.period, frame
                return unpack_state(frame)
            if isinstance(frame, Observation):
                self.observations += 1
                self.on_observation(frame.data)

    def send(self, command: SafeCommand | Stop, action: np.ndarray | None = None) -> bool:
        """Send this period's plan (a Stop's brake; a Stop without one sends nothing: the
        robot's watchdog brakes it). False if there was nothing to send."""
        cmd = command.brake if isinstance(command, Stop) else command
        if cmd is None:
            return False
        act = b"" if action is None else np.ascontiguousarray(action, dtype="<f4").tobytes()
        self.link.send(
            Plan(
                version=LINK_VERSION,
                period=self.period,
                seq=int(cmd.seq),
                values=np.ascontiguousarray(cmd.values, dtype="<f8").tobytes(),
                seal=cmd.seal,
                action=act,
            )
        )
        return True

    def reset(self, seed: int) -> None:
        """A new episode of a simulated robot's scenario (the caller checks it is at rest)."""
        self.link.send(Reset(version=LINK_VERSION, seed=int(seed)))

    def close(self) -> None:
        self.link.close()
