"""Fault injection against the whole bridge: the simulated robot process, the agent (its
loop, supervisor and Zenoh service with mutual TLS and the access list), a console and a
policy on their own Zenoh sessions. Each trial drives the base at full speed, injects one
fault and measures, on the wall clock, (a) fault -> the agent's stop at the adapter (its
Halt; for faults the robot must catch itself, its watchdog's first plan-less period) and
(b) fault -> measured speed below 1e-3 (the robot process's per-period log).

The link shim sits where the policy's encoded commands enter its Zenoh publisher: it
drops, delays, reorders, duplicates and replays whole messages (TLS would reject altered
bytes on the wire, so tampering is injected as authenticated-but-malformed messages).
Used by benchmarks/bridge_faults.py (N trials per fault) and tests/bridge/test_faults.py.
"""

from __future__ import annotations

import heapq
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.latch import Latch
from qrobot.bridge.messages import VERSION, ClockProbe, Command, Entry, Lease, Request, actions, decode, encode
from qrobot.bridge.robot_link import load_token
from qrobot.bridge.service import AgentService, ConsoleClient, PolicyClient, _ask
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.bridge.transport import config, keys
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor, as_people_source

CIRCLE = np.array([1.0, 1.0, -1.0])  # full speed on a 0.42 m circle: the trials never reach a wall
REST = 1e-3
ROOM = 'extends = "pointnav"\n[room]\nrandom_obstacles = 0\nobstacles = []\n'
ROOM_SEED = 29  # starts 1.05 m from the room's centre: the circle stays clear of the walls


# the same room seen by two 128 px cameras (front and back), for the streaming measurement
TWO_CAMERAS = ROOM + "".join(
    f'[[cameras]]\nname = "{n}"\nmount = "base"\nfov = 90.0\neye = [{x}, 0.0, 0.35]\ntarget = [{t}, 0.0, 0.25]\n'
    for n, x, t in (("front", 0.2, 1.2), ("back", -0.2, -1.2))
)


def room(tmp: Path, text: str = ROOM) -> str:
    """An empty 8 m room to drive in (a scenario file: data, not a new class)."""
    path = tmp / "bridge_room.toml"
    path.write_text(text)
    return str(path)


def _die_with_parent() -> None:
    """In a child: SIGTERM when the parent dies (Linux), so a killed suite leaves no robot."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_die_with_parent,
    )


class Shim:
    """Between the policy's encoder and its publisher: drop with probability `loss`, delay
    by `delay` +- `jitter` seconds (a scheduler thread keeps order by due time, so jitter
    reorders), or drop everything (`cut`)."""

    def __init__(self, put: Callable[[bytes], None], seed: int) -> None:
        self.put, self.rng = put, random.Random(seed)
        self.loss = self.delay = self.jitter = 0.0
        self.cut = False
        self.sent: list[bytes] = []
        self._heap: list[tuple[float, int, bytes]] = []
        self._count = itertools.count()
        self._cv = threading.Condition()
        self._stop = False
        threading.Thread(target=self._run, daemon=True).start()

    def clear(self) -> None:
        self.loss = self.delay = self.jitter = 0.0
        self.cut = False

    def __call__(self, data: bytes) -> None:
        self.sent.append(data)
        if self.cut or self.rng.random() < self.loss:
            return
        wait = max(0.0, self.delay + self.rng.uniform(-self.jitter, self.jitter))
        if wait == 0.0:
            self.put(data)
            return
        with self._cv:
            heapq.heappush(self._heap, (time.monotonic() + wait, next(self._count), data))
            self._cv.notify()

    def _run(self) -> None:
        with self._cv:
            while not self._stop:
                if not self._heap:
                    self._cv.wait(0.1)
                    continue
                due = self._heap[0][0] - time.monotonic()
                if due > 0:
                    self._cv.wait(due)
                    continue
                _, _, data = heapq.heappop(self._heap)
                self.put(data)

    def close(self) -> None:
        self._stop = True


class Rig:
    """Robot process + agent + console + policy, kept up across trials."""

    def __init__(
        self,
        tmp: Path,
        seed: int = 0,
        scenario: str = ROOM,
        observations: bool = False,
        robot: str = "sim",
        franka: str = "127.0.0.1",
    ) -> None:
        """`robot`: "sim" (the simulated base in an empty room) or "franka" (the Franka host,
        `qrobot robot-franka`, in front of franky-sim running at `franka`, FR3 profile)."""
        self.tmp = tmp
        self.setup_retries = 0  # trial setups started again (the rig was not at speed in time)
        certs.init(tmp / "keys")
        certs.init(tmp / "other")  # a foreign authority
        self.log = tmp / "robot.jsonl"
        flags = ["--log", str(self.log), "--token-file", str(tmp / "robot.token")]
        if robot == "franka":
            self.robot = _spawn(["-m", "qrobot.bridge.franka", "--franka", franka, *flags])
        else:
            where = [room(tmp, scenario), "--seed", str(ROOM_SEED)]
            self.robot = _spawn(["-m", "qrobot.bridge.robot_sim", *where, *flags] + (["--observations"] * observations))
        port = int(self.robot.stdout.readline().rsplit(":", 1)[1])  # type: ignore[union-attr]
        self.adapter = SimAdapter(port, load_token(tmp / "robot.token"))
        self.key = OperatorKey()
        self.latch = tmp / "estop.json"
        if robot == "franka":
            from qrobot.bridge.cli import robot_supervisor

            sup = robot_supervisor(self.adapter, self.key, "fr3")
            self.core = AgentCore(5, Latch(self.latch), Timing(), people=True, motion=((0, 1, 2), (3,)))
            self.dim, self.at_speed = 5, 0.2  # the hand's collaborative 0.25 m/s, approached
        else:
            sup = Supervisor(
                default_limits("diffbot", self.adapter.hello.control_dt),
                (0.5, 1.2),
                operator=self.key,
                people=as_people_source(self.adapter.hello.people),
            )
            self.core = AgentCore(3, Latch(self.latch), Timing(), people=True)
            self.dim, self.at_speed = 3, 0.45
        self.agent = Agent(self.adapter, sup, self.core, self.key)
        self.wall0 = time.time() - time.monotonic()  # agent clock -> wall clock
        self.stop = threading.Event()
        threading.Thread(target=self.agent.run, args=(self.stop,), daemon=True).start()
        with __import__("socket").socket() as s:
            s.bind(("127.0.0.1", 0))
            self.endpoint = f"tls/127.0.0.1:{s.getsockname()[1]}"
        self.sessions = [zenoh.open(config("agent", tmp / "keys", listen=self.endpoint, robot="r1"))]
        self.service = AgentService(self.agent, self.sessions[0], "r1")
        self.sessions += [zenoh.open(config(r, tmp / "keys", connect=self.endpoint)) for r in ("console", "policy")]
        self.console, self.policy = ConsoleClient(self.sessions[1], "r1"), PolicyClient(self.sessions[2], "r1")
        self.shim = Shim(self.policy.wire, seed)
        self.policy.wire = self.shim
        self.driving = threading.Event()
        self.chunk_periods = 3
        threading.Thread(target=self._drive, daemon=True).start()
        _wait(lambda: self.console.watch.status is not None and self.policy.watch.status is not None, 10.0)

    def chunk(self, n: int = 3) -> np.ndarray:
        """`n` periods of full-speed motion on a circle (the base's turn; the hand's direction
        turning at 2 rad/s: a 12.5 cm circle), so the trials never reach a wall or a limit."""
        if self.dim == 3:
            return np.stack([CIRCLE] * n)
        a = 2.0 * (time.monotonic() + 0.1 * np.arange(n))
        return np.stack([np.cos(a), np.sin(a), np.zeros(n), np.zeros(n), np.ones(n)], axis=1)

    def _drive(self) -> None:
        while not self.stop.is_set():
            if self.driving.is_set() and self.policy.grant is not None:
                self.policy.send(self.chunk(self.chunk_periods))
            time.sleep(0.1)

    # ------------------------------------------------------------ trials
    def ready(self, attempts: int = 3) -> None:
        """Back to driving at full speed before a trial. On a loaded machine an operator
        heartbeat can arrive late and the agent (rightly) stops; the setup then starts
        again, counted in `setup_retries` (reported beside the table), up to `attempts`."""
        for attempt in range(attempts):
            try:
                self._ready_once()
                return
            except RuntimeError:
                if attempt == attempts - 1:
                    raise
                self.setup_retries += 1
                self.driving.clear()
                time.sleep(0.5)

    def start(self, act: Callable[[], Any] = lambda: None) -> float:
        """Ready, then `act` (the fault) at a wall time when the agent is known to be driving:
        checked under the agent's lock, so a stop that a late heartbeat caused just before
        the fault is a setup retry, never a trial that measured no halt."""
        for _ in range(5):
            self.ready()
            end = time.monotonic() + 1.0
            while time.monotonic() < end:  # (a loaded machine can leave one tick without a fresh entry)
                with self.agent._lock:
                    if self.agent._moving and self.core.state == State.RUNNING:
                        t = time.time()
                        act()
                        return t
                time.sleep(0.005)
            self.setup_retries += 1
        raise RuntimeError(f"not driving at the fault: {self.core.state}, {self.core.audit[-3:]}")

    def _ready_once(self) -> None:
        self.driving.clear()
        self.chunk_periods = 3
        self.shim.clear()
        self.policy.silent.clear()
        self.console.deadman.set()
        if self.core.state in (State.ESTOPPED, State.FAULT):
            self.console.request("reset")
            _wait(lambda: self.core.state == State.IDLE, 2.0)
        self.policy.sync()
        if self.policy._thread is None:
            self.policy.acquire()  # the first lease starts the 10 Hz retains
        _wait(self._leased, 2.0)  # a stale lease (a silent trial) is acquired anew; a live one is kept
        _wait(lambda: self.core._operator_ok(self.agent.clock()) == "", 2.0)
        if self.core.state == State.HOLD or self.core.state == State.RUNNING:
            pass
        elif not _wait(lambda: self._enable(), 3.0):
            raise RuntimeError(f"could not enable: {self.core.audit[-3:]}")
        self.driving.set()
        if not _wait(lambda: self.speed() > self.at_speed, 6.0):
            raise RuntimeError(f"not at speed: {self.core.state}, {self.core.audit[-3:]}")

    def _leased(self) -> bool:
        g, lease = self.policy.grant, self.core._lease
        fresh = (
            g is not None
            and lease is not None
            and lease[:2] == (g.lease, g.epoch)
            and self.agent.clock() - self.core._retained < 0.3
        )
        if not fresh:
            self._reacquire()
            time.sleep(0.05)
        return fresh

    def _reacquire(self) -> None:
        reply = _ask(self.policy.session, self.policy.k["lease"], Lease(version=VERSION, op="acquire"))
        if getattr(reply, "ok", False):
            self.policy.grant = reply

    def _enable(self) -> bool:
        if self.core.state != State.IDLE:
            return self.core.state in (State.ENABLED, State.RUNNING)
        self.console.request("enable")
        time.sleep(0.1)
        return self.core.state in (State.ENABLED, State.RUNNING)

    def periods(self) -> list[dict]:
        return [r for r in map(json.loads, self.log.read_text().splitlines()) if "how" in r]  # (not halts)

    def speed(self) -> float:
        rows = self.periods()
        return rows[-1]["speed"] if rows else 0.0

    def halt_after(self, wall: float) -> float | None:
        for t, _ in list(self.agent.halts):
            if t + self.wall0 >= wall:
                return t + self.wall0 - wall
        return None

    def rest_after(self, wall: float, settle: float = 1.0) -> float | None:
        """Seconds from `wall` until the speed is below 1e-3 for good (None: not within `settle`)."""
        time.sleep(settle)
        rows = [r for r in self.periods() if r["wall"] >= wall]
        for i, r in enumerate(rows):
            if all(x["speed"] < REST for x in rows[i:]):
                return r["wall"] - wall - 0.1 if i else 0.0  # (a record is written as its period ends)
        return None

    def expired_executed(self, since: float) -> int:
        return sum(1 for t, expiry in list(self.agent.executed) if t + self.wall0 >= since and t > expiry)

    def close(self) -> None:
        self.stop.set()
        self.shim.close()
        self.console.close()
        self.policy.close()
        self.service.close()
        for s in self.sessions[::-1]:
            s.close()
        self.adapter.close()
        self.robot.send_signal(signal.SIGTERM)
        self.robot.wait(10)


def _wait(cond: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


# ------------------------------------------------------------------ faults
def link_cut(rig: Rig) -> dict[str, Any]:
    def cut() -> None:
        rig.shim.cut = True
        rig.policy.silent.set()

    t = rig.start(cut)
    _wait(lambda: rig.halt_after(t) is not None, 1.0)
    return {"stop": rig.halt_after(t), "rest": rig.rest_after(t), "bound": 0.22}


def delay_300ms(rig: Rig) -> dict[str, Any]:
    """Every chunk arrives after all its entries expired. The chunks are 0.2 s long here:
    a 0.3 s chunk delayed 0.3 s ends within the clock-sync error (up to `max_skew`, 20 ms)
    of its arrival, so its last entry could still be valid for a tick and rightly move the
    arm, which is not the fault this row is about."""

    def late() -> None:
        rig.chunk_periods = 2
        rig.shim.delay = 0.3

    t = rig.start(late)
    rest = rig.rest_after(t, 1.5)
    return {"stop": rig.halt_after(t), "rest": rest, "expired": rig.expired_executed(t), "bound": 0.22}


def jitter(rig: Rig, seconds: float = 3.0) -> dict[str, Any]:
    rig.ready()
    t = time.time()
    rig.shim.delay, rig.shim.jitter = 0.05, 0.04
    n0 = rig.agent.plans
    time.sleep(seconds)
    holds = sum(1 for h, why in list(rig.agent.halts) if h + rig.wall0 >= t)
    return {"holds": holds, "cycles": rig.agent.plans - n0, "expired": rig.expired_executed(t)}


def loss_then_recovery(rig: Rig, seconds: float = 3.0) -> dict[str, Any]:
    rig.ready()
    t = time.time()
    rig.shim.loss = 0.3
    time.sleep(seconds)
    rig.shim.loss = 0.0
    back = time.time()
    time.sleep(1.0)
    limit = 0.5 if rig.dim == 3 else 0.25  # the base's speed, the hand's collaborative speed
    burst = max((r["speed"] for r in rig.periods() if r["wall"] >= back), default=0.0) / limit
    return {"expired": rig.expired_executed(t), "speed_after_recovery": burst}


def replay(rig: Rig) -> dict[str, Any]:
    """Reordered, replayed after 1 s, and replayed across a new lease: none accepted."""
    rig.ready()
    rig.driving.clear()
    time.sleep(0.2)  # every original has arrived: what arrives from now on is a replay
    old = list(rig.shim.sent[-5:])
    ids = {(c.lease, c.epoch, c.seq) for c in (decode(d)[0] for d in old) if isinstance(c, Command)}
    start = rig.agent.clock()
    rejects0 = sum(1 for _, kind, _ in rig.core.audit if kind == "reject")

    def burst(datas: list[bytes]) -> None:
        for data in datas:
            rig.policy._pub.put(data)
            time.sleep(0.02)  # (back to back, some would be dropped under congestion, not tested)

    burst(old[::-1])  # out of order and stale
    time.sleep(1.0)
    burst(old)  # after 1 s
    g = rig.policy.grant  # a reconnect: the lease is returned and acquired anew, old commands replayed
    assert g is not None
    _ask(rig.policy.session, rig.policy.k["lease"], Lease(version=VERSION, op="return", lease=g.lease, epoch=g.epoch))
    rig._reacquire()
    burst(old)
    time.sleep(0.3)
    accepted = sum(1 for t, *key in list(rig.agent.accepted) if t >= start and tuple(key) in ids)
    return {
        "sent": 3 * len(old),
        "accepted": accepted,
        "rejected": sum(1 for _, kind, _ in rig.core.audit if kind == "reject") - rejects0,
    }


def forbidden(rig: Rig) -> dict[str, Any]:
    """A foreign authority's console, and the policy certificate, try reset / take / enable."""
    rig.ready()
    before = len(rig.core.audit)
    rogue = zenoh.open(config("console", rig.tmp / "other", connect=rig.endpoint))
    k = keys("r1")
    for session in (rogue, rig.sessions[2]):
        for op in ("reset", "enable"):
            list(
                session.get(
                    k["request"],
                    payload=encode(Request(version=VERSION, op=op)),
                    timeout=0.3,
                )
            )
        list(session.get(k["take"], payload=encode(Lease(version=VERSION, op="take")), timeout=0.3))
        session.put(k["operator"], b"x")
    time.sleep(0.3)
    rogue.close()
    arrived = [a for a in rig.core.audit[before:] if a[1] in ("request_refused", "lease", "operator_refused")]
    return {"tried": 8, "accepted": len(arrived), "state": rig.core.state.value}


def operator_lost(rig: Rig, release: bool) -> dict[str, Any]:
    # release: the dead-man lets go; else the console's heartbeats stop altogether
    t = rig.start(rig.console.deadman.clear if release else rig.console._stop.set)
    _wait(lambda: rig.halt_after(t) is not None, 1.0)
    out = {"stop": rig.halt_after(t), "rest": rig.rest_after(t), "bound": 0.27}
    if not release:
        rig.console._stop.clear()
        rig.console._thread = threading.Thread(target=rig.console._beat, daemon=True)
        rig.console._thread.start()
    time.sleep(0.3)
    out["resumed"] = rig.core.state in (State.ENABLED, State.RUNNING)  # must be False: a new enable is needed
    return out


def estop(rig: Rig) -> dict[str, Any]:
    t = rig.start()  # (a request waits for the agent's reply: never sent under its lock)
    rig.console.request("estop", key="estop")
    _wait(lambda: rig.core.latched is not None, 1.0)
    latched = next(
        (
            a[0] + rig.wall0 - t
            for a in rig.core.audit
            if a[1] == "state" and "ESTOPPED" in a[2] and a[0] + rig.wall0 >= t
        ),
        None,
    )
    survives = AgentCore(3, Latch(rig.latch)).state == State.ESTOPPED
    return {
        "stop": rig.halt_after(t),
        "latched": latched,
        "rest": rig.rest_after(t),
        "survives": survives,
        "bound": 0.02,
    }


def malformed(rig: Rig) -> dict[str, Any]:
    rig.ready()
    g = rig.policy.grant
    assert g is not None
    bad = [
        encode(
            Command(
                version=VERSION,
                lease=g.lease,
                epoch=g.epoch,
                seq=10**9,
                nonce=g.nonce,
                entries=[Entry(expires=1e9, action=actions(np.r_[np.nan, np.zeros(rig.dim - 1)]))],
            )
        ),
        encode(
            Command(
                version=VERSION,
                lease=g.lease,
                epoch=g.epoch,
                seq=10**9 + 1,
                nonce=g.nonce,
                entries=[Entry(expires=float("inf"), action=actions(rig.chunk(1)[0]))],
            )
        ),
        encode(
            Command(
                version=VERSION,
                lease=g.lease,
                epoch=g.epoch,
                seq=10**9 + 2,
                nonce=g.nonce,
                entries=[Entry(expires=rig.policy.agent_now() + 0.1, action=actions(np.full(rig.dim, 5.0)))],
            )
        ),
        encode(
            Command(
                version=VERSION + 1,
                lease=g.lease,
                epoch=g.epoch,
                seq=10**9 + 3,
                nonce=g.nonce,
                entries=[Entry(expires=1.0, action=actions(rig.chunk(1)[0]))],
            )
        ),
        b"\x00" * 70_000,
        b"\x93\x01\x02",
        b"not msgpack",
    ]
    before = sum(1 for a in rig.core.audit if a[1] == "reject")
    for data in bad:
        rig.policy._pub.put(data)
        time.sleep(0.05)  # (commands are dropped, not queued, under congestion)
    time.sleep(0.3)
    return {
        "sent": len(bad),
        "rejected": sum(1 for a in rig.core.audit if a[1] == "reject") - before,
        "accepted": int(rig.core._seq >= 10**9),
    }


def clock_skew(rig: Rig, skew: float) -> dict[str, Any]:
    """A policy whose clock relation is uncertain by `skew` (a 2 x skew round trip): enable
    is refused; commands stamped `skew` off are refused (beyond the horizon) or expired."""
    rig.ready()
    rig.console.deadman.clear()
    _wait(lambda: rig.core.state == State.IDLE, 1.0)
    rig.console.deadman.set()
    rig.policy.silent.set()  # no fresh probe corrects it
    time.sleep(0.25)
    now = time.monotonic()
    probe = ClockProbe(
        version=VERSION, sent=now, prev_sent=now - 2 * skew, prev_agent=rig.agent._last_clock_reply, prev_received=now
    )
    _ask(rig.policy.session, rig.policy.k["clock"], probe)
    rig.console.request("enable")
    time.sleep(0.2)
    refused = rig.core.state == State.IDLE
    rig.policy.silent.clear()
    return {"enable_refused": refused}


def policy_dies_mid_chunk(rig: Rig) -> dict[str, Any]:
    rig.ready()
    rig.driving.clear()
    time.sleep(0.05)
    t = time.time()
    rig.policy.send(rig.chunk(5))  # 0.5 s of entries, then nothing
    last = rig.agent.clock()
    rig.policy.silent.set()
    time.sleep(1.0)
    ran = [w for w, _ in rig.agent.executed if w >= last]
    return {"executed_for": (max(ran) - last) if ran else 0.0, "rest": rig.rest_after(t, 0.5)}


def policy_killed(rig: Rig) -> dict[str, Any]:
    """A policy process of its own (its own Zenoh session and certificate) drives, and is
    SIGKILLed: the deadline halts the robot; the lease goes stale."""
    rig.ready()
    rig.driving.clear()
    rig.policy.silent.set()
    g = rig.policy.grant
    assert g is not None
    _ask(rig.policy.session, rig.policy.k["lease"], Lease(version=VERSION, op="return", lease=g.lease, epoch=g.epoch))
    proc = _spawn(["-c", _POLICY, str(rig.tmp / "keys"), rig.endpoint, ",".join(map(str, rig.chunk(1)[0]))])
    try:
        said: list[str] = []
        threading.Thread(target=lambda: said.append(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]

        def driving() -> bool:  # (on a loaded machine the agent may have stopped meanwhile: enable again)
            if rig.core.state == State.IDLE:
                rig._enable()
            return bool(said) and rig.speed() > rig.at_speed

        if not _wait(driving, 10.0):  # bounded: a policy that never drives fails the trial, never hangs it
            raise RuntimeError(f"the policy process did not drive: {said!r}, {rig.core.audit[-3:]}")
        os.kill(proc.pid, signal.SIGKILL)
        t = time.time()
        _wait(lambda: rig.agent.clock() - rig.core._retained > rig.core.timing.lease_stale, 2.0)
        stale = time.time() - t
        _wait(lambda: rig.halt_after(t) is not None, 1.0)
        return {"stop": rig.halt_after(t), "stale": stale, "rest": rig.rest_after(t)}
    finally:
        proc.kill()
        proc.wait(5)
        rig.policy.silent.clear()


_POLICY = """
import sys, time, numpy as np, zenoh
from qrobot.bridge.service import PolicyClient
from qrobot.bridge.transport import config
session = zenoh.open(config("policy", sys.argv[1], connect=sys.argv[2]))
client = PolicyClient(session, "r1")
while client.watch.status is None:
    time.sleep(0.02)
client.sync()
client.acquire()
said = False
action = np.array([float(x) for x in sys.argv[3].split(",")])
while True:
    client.send(np.stack([action] * 3))
    if not said and client.watch.status.state == "RUNNING":
        print("driving", flush=True)
        said = True
    time.sleep(0.1)
"""


def round_trip(rig: Rig, n: int = 200) -> list[float]:
    """Seconds per request/reply between the policy and the agent (a clock probe: the same
    sessions, TLS link and agent lock as a command), while the base drives."""
    rig.ready()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        _ask(rig.policy.session, rig.policy.k["clock"], ClockProbe(version=VERSION, sent=time.monotonic()))
        out.append(time.perf_counter() - t)
        time.sleep(0.005)
    return out


def agent_killed(tmp: Path) -> dict[str, Any]:
    """The agent as its own process, SIGKILLed at full speed: the robot's watchdog."""
    log = tmp / "kill.jsonl"
    token = tmp / "kill.token"
    robot = _spawn(
        [
            "-m",
            "qrobot.bridge.robot_sim",
            room(tmp),
            "--seed",
            str(ROOM_SEED),
            "--log",
            str(log),
            "--token-file",
            str(token),
        ]
    )
    port = robot.stdout.readline().rsplit(":", 1)[1].strip()  # type: ignore[union-attr]
    driver = _spawn(["-c", _DRIVER, port, str(token)])
    try:
        driver.stdout.readline()  # type: ignore[union-attr]
        os.kill(driver.pid, signal.SIGKILL)
        t = time.time()
        time.sleep(1.2)
        rows = [r for r in map(json.loads, log.read_text().splitlines()) if "how" in r]
        after = [r for r in rows if r["wall"] >= t]
        first = next(r for r in after if r["how"] == "watchdog")
        rest = next(r for i, r in enumerate(after) if all(x["speed"] < REST for x in after[i:]))
        return {"watchdog": first["wall"] - t - 0.1, "rest": rest["wall"] - t - 0.1, "bound": 0.1}
    finally:
        driver.kill()
        robot.send_signal(signal.SIGTERM)
        robot.wait(10)


_DRIVER = """
import sys, numpy as np
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import Supervisor
from pathlib import Path
from qrobot.bridge.robot_link import load_token
a = SimAdapter(int(sys.argv[1]), load_token(Path(sys.argv[2])))
s = Supervisor(default_limits(a.robot, a.hello.control_dt), (0.5, 1.2), people=a.hello.people)
s.bind(a)
said = False
while True:
    st = a.state()
    if st is None:
        continue
    a.send(s.filter(np.array([1.0, 1.0, -1.0]), st), s.last_action)
    if not said and st["base_vel"][0] > 0.45:
        print("moving", flush=True)
        said = True
"""
