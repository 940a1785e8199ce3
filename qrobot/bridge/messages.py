"""Every message between policy, console and agent: versioned schemas of plain fields
and raw little-endian float32 arrays, encoded with msgpack by msgspec (no pickle).

`decode` is total: bytes that are not exactly one known message of this version, or
that carry a non-finite or oversized number, come back as (None, why).
"""

from __future__ import annotations

import math
from typing import Literal, Union

import msgspec
import numpy as np

VERSION = 1
MAX_ENTRIES = 64           # entries per command chunk
MAX_ACTION = 32            # floats per entry
MAX_BYTES = 64 * 1024      # whole message


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    version: int


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One action, valid until `expires` on the robot's clock (seconds)."""

    expires: float
    action: bytes  # float32, little-endian


class Command(_Msg, tag="command"):
    """A chunk of expiring entries from the lease holder."""

    lease: str
    epoch: int
    seq: int
    nonce: bytes
    entries: list[Entry]


class Lease(_Msg, tag="lease"):
    """acquire / retain / return (policy role); take (console role only)."""

    op: Literal["acquire", "retain", "return", "take"]
    lease: str = ""
    epoch: int = 0


class LeaseGrant(_Msg, tag="lease_grant"):
    ok: bool
    lease: str = ""
    epoch: int = 0
    nonce: bytes = b""
    reason: str = ""


class Operator(_Msg, tag="operator"):
    """The operator's heartbeat: the dead-man state and the answer to the agent's
    latest challenge (its value plus one)."""

    deadman: bool
    answer: int


class Request(_Msg, tag="request"):
    """Console actions: enable, reset (the e-stop latch), estop, approve."""

    op: Literal["enable", "reset", "estop", "approve"]
    detail: str = ""


class ClockProbe(_Msg, tag="clock"):
    """Clock offset estimation, Spot-style: the client's send time, and its previous round
    (send, the agent's time in the reply, receive: all but the agent's on the client's
    clock), from which the agent learns the offset's uncertainty (half the round trip).
    The agent replies with its own time in `agent_time`."""

    sent: float
    agent_time: float = 0.0
    prev_sent: float = 0.0
    prev_agent: float = 0.0
    prev_received: float = 0.0


class Status(_Msg, tag="status"):
    """What the agent publishes at 20 Hz: its state, the challenge the operator's next
    heartbeat answers, the lease epoch, the e-stop reason, and the robot's last state."""

    state: str
    challenge: int
    epoch: int
    latched: str
    time: float
    robot: dict[str, bytes] = {}
    shapes: dict[str, list[int]] = {}


Message = Union[Command, Lease, LeaseGrant, Operator, Request, ClockProbe, Status]
_decoder = msgspec.msgpack.Decoder(Message)
_encoder = msgspec.msgpack.Encoder()


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def actions(values: np.ndarray) -> bytes:
    """An action as the wire carries it."""
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def decode(data: object) -> tuple[Message | None, str]:
    """(message, "") or (None, why it was refused). Never raises."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None, f"not bytes ({type(data).__name__})"
    if len(data) > MAX_BYTES:
        return None, f"message of {len(data)} bytes > {MAX_BYTES}"
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, f"not a known message: {exc}"[:200]
    if msg.version != VERSION:
        return None, f"schema version {msg.version} != {VERSION}"
    why = _check(msg)
    return (None, why) if why else (msg, "")


def _check(msg: Message) -> str:
    floats = [getattr(msg, name, 0.0) for name in ("sent", "agent_time", "prev_sent", "prev_agent", "prev_received",
                                                      "time")]
    if isinstance(msg, Command):
        if not 0 < len(msg.entries) <= MAX_ENTRIES:
            return f"{len(msg.entries)} entries (1..{MAX_ENTRIES} accepted)"
        for e in msg.entries:
            if len(e.action) % 4 or not 0 < len(e.action) // 4 <= MAX_ACTION:
                return f"action of {len(e.action)} bytes is not 1..{MAX_ACTION} float32"
            values = np.frombuffer(e.action, "<f4")
            if not np.all(np.isfinite(values)):
                return "non-finite action value"
            floats.append(e.expires)
        if msg.seq < 0 or msg.epoch < 0:
            return "negative sequence or epoch"
    if not all(math.isfinite(f) for f in floats):
        return "non-finite time"
    return ""


def entry_values(entry: Entry) -> np.ndarray:
    return np.frombuffer(entry.action, "<f4").astype(np.float64)
