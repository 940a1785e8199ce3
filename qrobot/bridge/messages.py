"""Every message between policy, console and agent: versioned schemas of plain fields
and raw little-endian float32 arrays, encoded with msgpack by msgspec (no pickle).

`decode` is total: bytes that are not exactly one known message of this version, or
that carry a non-finite or oversized number, come back as (None, why).
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec
import numpy as np

VERSION = 1
MAX_ENTRIES = 64  # entries per command chunk
MAX_ACTION = 32  # floats per entry
MAX_BYTES = 64 * 1024  # whole message the agent accepts
MAX_OBSERVATION = 8 << 20  # what a policy accepts from the agent (camera frames)
ARRAY_DTYPES = ("uint8", "float32")


class _Msg(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    version: int


class Entry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One action, valid until `expires` on the robot's clock (seconds)."""

    expires: float
    action: bytes  # float32, little-endian


class Command(_Msg, frozen=True, tag="command"):
    """A chunk of expiring entries from the lease holder."""

    lease: str
    epoch: int
    seq: int
    nonce: bytes
    entries: list[Entry]


class Lease(_Msg, frozen=True, tag="lease"):
    """acquire / retain / return (policy role); take (console role only)."""

    op: Literal["acquire", "retain", "return", "take"]
    lease: str = ""
    epoch: int = 0


class LeaseGrant(_Msg, frozen=True, tag="lease_grant"):
    ok: bool
    lease: str = ""
    epoch: int = 0
    nonce: bytes = b""
    reason: str = ""


class Operator(_Msg, frozen=True, tag="operator"):
    """The operator's heartbeat: the dead-man state and the answer to the agent's
    latest challenge (its value plus one)."""

    deadman: bool
    answer: int


class Request(_Msg, frozen=True, tag="request"):
    """Console actions: enable, reset (the e-stop latch), estop, approve."""

    op: Literal["enable", "reset", "estop", "approve"]
    detail: str = ""


class ClockProbe(_Msg, frozen=True, tag="clock"):
    """Clock offset estimation, Spot-style: the client's send time, and its previous round
    (send, the agent's time in the reply, receive: all but the agent's on the client's
    clock), from which the agent learns the offset's uncertainty (half the round trip).
    The agent replies with its own time in `agent_time`."""

    sent: float
    agent_time: float = 0.0
    prev_sent: float = 0.0
    prev_agent: float = 0.0
    prev_received: float = 0.0


class Status(_Msg, frozen=True, tag="status"):
    """What the agent publishes at 20 Hz: its state, the challenge the operator's next
    heartbeat answers, the lease epoch, the e-stop reason, and the robot's last state."""

    state: str
    challenge: int
    epoch: int
    latched: str
    time: float
    robot: dict[str, bytes] = {}
    shapes: dict[str, list[int]] = {}
    approval: str = ""  # "" (not required), "pending <digest>: <task>", "approved <digest>" or "none"
    safety: dict[str, float] = {}  # the agent's supervisor counts this episode (interventions by rule, ...)
    holder: str = ""  # who holds the lease: "policy", "console" or ""
    ages: dict[str, float] = {}  # seconds since the operator's last heartbeat and the lease's last retain
    rejects: list[str] = []  # the last refusals, newest last ("<age> s: <why>"), for the operator


class Episode(_Msg, frozen=True, tag="episode"):
    """Policy -> agent of a simulated robot, under its lease and while the robot is not
    moving: a new episode of the robot's scenario with this seed (the reply is a Reply)."""

    lease: str
    epoch: int
    seed: int


class Proposal(_Msg, frozen=True, tag="proposal"):
    """Policy -> an agent that requires operator approval: the task it is about to run,
    bound to its lease. The console approves it by its digest (`digest`), so what the
    operator saw is what was approved; motion is capped at `speed_scale` of the limits."""

    lease: str
    epoch: int
    instruction: str
    scenario: str
    speed_scale: float


def digest(p: Proposal) -> str:
    """What a console shows and returns to approve exactly this proposal."""
    import hashlib

    fields = f"{p.lease}\0{p.epoch}\0{p.instruction}\0{p.scenario}\0{p.speed_scale!r}"
    return hashlib.sha256(fields.encode()).hexdigest()


class Reply(_Msg, frozen=True, tag="reply"):
    """The agent's answer to a query that is not about the lease or the clock."""

    ok: bool
    reason: str = ""


class Observation(_Msg, frozen=True, tag="observation"):
    """Robot -> policy (through the agent), once per control period after its physics:
    what a policy may see (camera images, proprioception, the goal vector, the
    instruction) and the task's own account (reward, success, end, metrics). Arrays are
    raw little-endian bytes with their shape and dtype (uint8 or float32). `period` counts
    the robot's observations (one more each, across episodes)."""

    robot: str
    scenario: str
    episode: int
    seed: int
    period: int
    step: int
    time: float
    instruction: str
    arrays: dict[str, bytes]
    shapes: dict[str, list[int]]
    dtypes: dict[str, str]
    reward: float = 0.0
    success: bool = False
    terminated: bool = False
    truncated: bool = False
    metrics: dict[str, float] = {}
    control_dt: float = 0.1


Message = (
    Command | Lease | LeaseGrant | Operator | Request | ClockProbe | Status | Episode | Proposal | Reply | Observation
)
_decoder = msgspec.msgpack.Decoder(Message)
_encoder = msgspec.msgpack.Encoder()


def encode(msg: Message) -> bytes:
    return _encoder.encode(msg)


def actions(values: np.ndarray) -> bytes:
    """An action as the wire carries it."""
    return np.ascontiguousarray(values, dtype="<f4").tobytes()


def decode(data: object, limit: int = MAX_BYTES) -> tuple[Message | None, str]:
    """(message, "") or (None, why it was refused). Never raises."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return None, f"not bytes ({type(data).__name__})"
    if len(data) > limit:
        return None, f"message of {len(data)} bytes > {limit}"
    try:
        msg = _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, f"not a known message: {exc}"[:200]
    if msg.version != VERSION:
        return None, f"schema version {msg.version} != {VERSION}"
    why = _check(msg)
    return (None, why) if why else (msg, "")


def _check(msg: Message) -> str:
    floats = [
        getattr(msg, name, 0.0)
        for name in ("sent", "agent_time", "prev_sent", "prev_agent", "prev_received", "time", "speed_scale")
    ]
    if isinstance(msg, Proposal) and not (
        0.0 < msg.speed_scale <= 1.0
        and len(msg.instruction) <= 256
        and len(msg.scenario) <= 128
        and msg.instruction.isprintable()
        and msg.scenario.isprintable()
    ):
        return "a proposal needs 0 < speed_scale <= 1 and a printable instruction and scenario (256, 128 characters)"
    if isinstance(msg, Episode) and not 0 <= msg.seed < 2**32:
        return f"episode seed {msg.seed} outside 0..2**32-1"
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
    if isinstance(msg, Observation):
        why = _check_arrays(msg)
        if why:
            return why
        floats += [msg.reward, msg.control_dt, *msg.metrics.values()]
    if not all(math.isfinite(f) for f in floats):
        return "non-finite time"
    return ""


def _check_arrays(msg: Observation) -> str:
    for name, raw in msg.arrays.items():
        dtype, shape = msg.dtypes.get(name), msg.shapes.get(name)
        if dtype not in ARRAY_DTYPES or shape is None or len(shape) > 4 or any(not 0 <= n <= 8192 for n in shape):
            return (
                f"array {name!r}: dtype {dtype!r} or shape {shape!r} not accepted (uint8/float32, <= 4 dims of <= 8192)"
            )
        if math.prod(shape) * np.dtype(dtype).itemsize != len(raw):
            return f"array {name!r}: {len(raw)} bytes do not fill shape {shape}"
    return ""


def pack_arrays(arrays: dict[str, np.ndarray]) -> tuple[dict[str, bytes], dict[str, list[int]], dict[str, str]]:
    """Arrays as an Observation carries them (uint8 stays uint8, anything else float32)."""
    raw, shapes, dtypes = {}, {}, {}
    for name, value in arrays.items():
        a = np.asarray(value)
        a = np.ascontiguousarray(a, dtype="|u1" if a.dtype == np.uint8 else "<f4")
        raw[name], shapes[name], dtypes[name] = a.tobytes(), list(a.shape), str(a.dtype)
    return raw, shapes, dtypes


def unpack_arrays(msg: Observation) -> dict[str, np.ndarray]:
    """A checked Observation's arrays (read-only views of the message's bytes)."""
    return {
        name: np.frombuffer(raw, "|u1" if msg.dtypes[name] == "uint8" else "<f4").reshape(msg.shapes[name])
        for name, raw in msg.arrays.items()
    }


def entry_values(entry: Entry) -> np.ndarray:
    return np.frombuffer(entry.action, "<f4").astype(np.float64)
