"""Commands that reach actuators, and the seal that binds them to one supervisor.

A `SafeCommand` is a plan for one control period. Each supervisor holds a random secret
and seals every command it issues (a keyed BLAKE2b MAC over robot, sequence number and values); a robot
backend bound to that supervisor checks the seal and accepts each sequence number at most
once and in order. A command built anywhere else, issued by another supervisor, or
replayed, is refused.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class SafeCommand:
    """A command the supervisor checked. `values` is read-only; `seq` orders commands."""

    robot: str
    values: np.ndarray
    seq: int = -1
    seal: bytes = field(default=b"", repr=False, compare=False)

    def __post_init__(self) -> None:
        arr = np.array(self.values, dtype=np.float64, copy=True)  # the caller's array is not ours
        arr.setflags(write=False)
        object.__setattr__(self, "values", arr)


@dataclass(frozen=True)
class Stop:
    """The supervisor refused the action. `brake` is the controlled-stop command
    (decelerate within limits, then hold); without one the backend holds in place."""

    reason: str
    brake: SafeCommand | None = None


def _tag(secret: bytes, robot: str, seq: int, values: np.ndarray) -> bytes:
    msg = robot.encode() + b"\0" + int(seq).to_bytes(8, "big", signed=True) + values.tobytes()
    return hashlib.blake2b(msg, key=secret, digest_size=32).digest()  # keyed BLAKE2b is a MAC (RFC 7693)


class CommandSeal:
    """The supervisor's side: issues sealed commands. Never handed to a policy."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._seq = 0

    def issue(self, robot: str, values: np.ndarray) -> SafeCommand:
        self._seq += 1
        cmd = SafeCommand(robot, values, self._seq)  # copies the values, read-only
        object.__setattr__(cmd, "seal", _tag(self._secret, robot, self._seq, cmd.values))
        return cmd


class CommandCheck:
    """The backend's side: accepts a command only if its seal is valid for the bound
    supervisor, it is for this robot, finite, of the right size, and newer than the last
    command accepted (no replay, no reordering)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._last = 0

    def accept(self, cmd: object, robot: str, size: int) -> bool:
        if not isinstance(cmd, SafeCommand) or type(cmd.values) is not np.ndarray:
            return False
        vals = cmd.values
        if (
            cmd.robot != robot
            or vals.shape != (size,)
            or vals.dtype != np.float64
            or not np.all(np.isfinite(vals))
            or not isinstance(cmd.seq, int)
            or cmd.seq <= self._last
        ):
            return False
        if not isinstance(cmd.seal, bytes) or not hmac.compare_digest(
            cmd.seal, _tag(self._secret, robot, cmd.seq, vals)
        ):
            return False
        self._last = cmd.seq
        return True
