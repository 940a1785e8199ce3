"""The link between the agent and the robot it drives, on the robot's computer: what a
vendor's real-time interface carries (UR's RTDE, libfranka), as length-prefixed msgpack
frames over a local TCP socket. The robot streams its state once per control period and
expects a plan for that period within its watchdog window; without one it brakes by
itself. At connection the agent pairs: the robot then executes only plans sealed by that
agent's supervisor (the same seal as in-process, `qrobot.safety.command`).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import select
import socket
import struct
import threading
from pathlib import Path

import msgspec
import numpy as np

LINK_VERSION = 1
MAX_FRAME = 8 << 20  # two 128 px cameras with depth are about 0.3 MB
_LEN = struct.Struct("<I")


class _Frame(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    version: int


class Hello(_Frame, frozen=True, tag="hello"):
    """Robot -> agent on connection: what it is and its period."""

    robot: str
    scenario: str
    control_dt: float
    watchdog: float
    people: str  # "sensor": states carry people; "none": the robot declares nobody can be present
    nonce: bytes = b""  # this connection's pairing challenge
    resettable: bool = False  # a simulated world: the agent may ask for a new episode (`Reset`)
    observations: bool = False  # it streams what the policy sees (`Observation`, once per period)


class Pair(_Frame, frozen=True, tag="pair"):
    """Agent -> robot: the supervisor's command secret and its braking rates, with proof
    that the agent holds the robot's pairing token (HMAC of the connection's nonce)."""

    secret: bytes
    rates: list[float]
    proof: bytes = b""


class RobotState(_Frame, frozen=True, tag="state"):
    """Robot -> agent at the start of period `period`: every field float64, with shapes."""

    period: int
    time: float
    fields: dict[str, bytes]
    shapes: dict[str, list[int]]
    watchdog_brakes: int = 0
    rejected: int = 0
    episode: int = 0  # a simulated world's episode: a new one restarts its clock


class Plan(_Frame, frozen=True, tag="plan"):
    """Agent -> robot: the sealed plan for `period` and the action it came from."""

    period: int
    seq: int
    values: bytes
    seal: bytes
    action: bytes = b""


class Halt(_Frame, frozen=True, tag="halt"):
    """Agent -> robot, any time: brake now from the current motion (a protective stop the
    robot executes itself; the next period's plan starts from the braking state)."""

    reason: str


class Observation(_Frame, frozen=True, tag="observation"):
    """Robot -> agent after each period's physics: what the policy sees, already encoded
    as a `qrobot.bridge.messages.Observation` (the agent forwards it untouched)."""

    period: int
    data: bytes


class Reset(_Frame, frozen=True, tag="reset"):
    """Agent -> a simulated robot, only while it is not moving: a new episode of its
    scenario with this seed (applied between periods)."""

    seed: int


Frame = Hello | Pair | RobotState | Plan | Halt | Observation | Reset
_decoder = msgspec.msgpack.Decoder(Frame)
_encoder = msgspec.msgpack.Encoder()


def proof(token: bytes, nonce: bytes) -> bytes:
    return hmac.new(token, b"qrobot-pair\0" + nonce, hashlib.sha256).digest()


def load_token(path: Path) -> bytes:
    """The pairing token shared by the robot process and its agent (a file only they can
    read); made, 0600, if missing."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    token = bytes.fromhex(path.read_text().strip())
    if len(token) < 16:
        raise ValueError(f"{path}: a pairing token of at least 16 bytes (hex) is needed")
    return token


def pack_state(state: dict) -> tuple[dict[str, bytes], dict[str, list[int]]]:
    fields, shapes = {}, {}
    for key, value in state.items():
        arr = np.asarray(value, dtype="<f8")  # (ascontiguousarray would turn a scalar into shape (1,))
        fields[key], shapes[key] = arr.tobytes(), list(arr.shape)
    return fields, shapes


def unpack_state(msg: RobotState) -> dict:
    """The state dict the supervisor reads (scalars as floats, arrays read-only)."""
    out: dict = {"time": float(msg.time)}
    for key, raw in msg.fields.items():
        shape = tuple(msg.shapes.get(key, ()))
        arr = np.frombuffer(raw, "<f8").reshape(shape) if shape else None
        out[key] = arr if arr is not None else float(np.frombuffer(raw, "<f8")[0])
    return out


class Link:
    """One framed connection. `send` writes a whole frame; `recv(timeout)` returns the next
    decoded frame, None on timeout; raises ConnectionError when the peer is gone or talks
    nonsense (the caller treats both the same way: no link)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()  # (appending to bytes would copy a large frame once per chunk)
        self._send_lock = threading.Lock()

    def send(self, frame: Frame) -> None:
        data = _encoder.encode(frame)
        try:
            with self._send_lock:  # callbacks (a halt) and the loop (plans) share the socket
                self.sock.sendall(_LEN.pack(len(data)) + data)
        except OSError as exc:
            raise ConnectionError(str(exc)) from exc

    def recv(self, timeout: float) -> Frame | None:
        frame = self._take()
        if frame is not None:
            return frame
        ready, _, _ = select.select([self.sock], [], [], max(timeout, 0.0))
        if not ready:
            return None
        try:
            chunk = self.sock.recv(65536)
        except OSError as exc:
            raise ConnectionError(str(exc)) from exc
        if not chunk:
            raise ConnectionError("peer closed the link")
        self._buf += chunk
        return self._take()

    def _take(self) -> Frame | None:
        if len(self._buf) < 4:
            return None
        (size,) = _LEN.unpack_from(self._buf)
        if size > MAX_FRAME:
            raise ConnectionError(f"frame of {size} bytes")
        if len(self._buf) < 4 + size:
            return None
        data = bytes(self._buf[4 : 4 + size])
        del self._buf[: 4 + size]
        try:
            frame = _decoder.decode(data)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ConnectionError(f"not a link frame: {exc}") from exc
        if frame.version != LINK_VERSION:
            raise ConnectionError(f"link version {frame.version} != {LINK_VERSION}")
        return frame

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
