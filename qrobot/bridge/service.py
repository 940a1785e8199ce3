"""The agent on Zenoh, and the two clients that talk to it.

`AgentService` declares, on the agent's session (mutual TLS, default-deny access list:
`transport.config(..., robot=...)`), a subscriber per inbound key and a queryable per
query key; the role of a message is the one the access list lets use that key. It
publishes the agent's `Status` at 20 Hz. `PolicyClient` (a `RemoteRobot`'s wire) leases,
syncs its clock, retains the lease and sends expiring command chunks; `ConsoleClient`
beats the operator heartbeat (answering the latest challenge, with the dead-man state)
and sends enable / reset / e-stop. Commands travel at real-time priority, express,
dropped under congestion (a late command is worthless); status at data priority.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import zenoh

from qrobot.bridge.agent import CLOCK_MEMORY, Agent
from qrobot.bridge.agent_core import CLOCK_DRIFT
from qrobot.bridge.messages import (
    VERSION,
    ClockProbe,
    Command,
    Entry,
    Episode,
    Lease,
    LeaseGrant,
    Operator,
    Proposal,
    Reply,
    Request,
    Status,
    actions,
    decode,
    encode,
)
from qrobot.bridge.transport import keys

KEEP_OFFSET = CLOCK_MEMORY / 2  # s: an offset older than this is replaced (the agent still knows its round)


class AgentService:
    def __init__(self, agent: Agent, session: zenoh.Session, robot: str, rate: float = 20.0) -> None:
        self.agent, self.session = agent, session
        k = keys(robot)
        self._decls: list[Any] = []
        for key, role in (("command", "policy"), ("operator", "console"), ("estop", "any")):
            self._decls.append(session.declare_subscriber(k[key], self._put(role)))
        for key, role in (
            ("lease", "policy"),
            ("take", "console"),
            ("clock", "policy"),
            ("episode", "policy"),
            ("propose", "policy"),
            ("request", "console"),
        ):
            self._decls.append(session.declare_queryable(k[key], self._query(role)))
        self._status = session.declare_publisher(
            k["state"], congestion_control=zenoh.CongestionControl.DROP, priority=zenoh.Priority.DATA
        )
        # camera frames: lowest priority, dropped under congestion, never ahead of commands
        self._frames = session.declare_publisher(
            k["observation"], congestion_control=zenoh.CongestionControl.DROP, priority=zenoh.Priority.DATA_LOW
        )
        agent.adapter.on_observation = self._frames.put
        # presence (who is connected), logged for the operator; never a reason to stop or move
        self._alive = session.liveliness().declare_token(k["alive_agent"])
        self._presence = session.liveliness().declare_subscriber(k["alive"], self._seen, history=True)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish, args=(1.0 / rate,), daemon=True)
        self._thread.start()

    def _put(self, role: str) -> Callable[[zenoh.Sample], None]:
        def on(sample: zenoh.Sample) -> None:
            self.agent.handle(sample.payload.to_bytes(), role)

        return on

    def _query(self, role: str) -> Callable[[zenoh.Query], None]:
        def on(query: zenoh.Query) -> None:
            data = query.payload.to_bytes() if query.payload is not None else b""
            reply = self.agent.handle(data, role)
            if reply is not None:
                query.reply(query.key_expr, reply)

        return on

    def _seen(self, sample: zenoh.Sample) -> None:
        who = str(sample.key_expr).rsplit("/", 1)[-1]
        if who != "agent":
            self.agent.presence(who, sample.kind == zenoh.SampleKind.PUT)

    def _publish(self, period: float) -> None:
        while not self._stop.wait(period):
            self._status.put(self.agent.status())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.agent.adapter.on_observation = lambda data: None
        self._presence.undeclare()
        self._alive.undeclare()
        for d in self._decls:
            d.undeclare()
        self._status.undeclare()
        self._frames.undeclare()


def _ask(session: zenoh.Session, key: str, msg: Any, timeout: float = 1.0) -> Any:
    for reply in session.get(key, payload=encode(msg), timeout=timeout):
        if reply.ok is not None:
            out, _ = decode(reply.ok.payload.to_bytes())
            return out
    return None


class _Watcher:
    """The latest agent status (what both clients read: the challenge, the state)."""

    def __init__(self, session: zenoh.Session, robot: str) -> None:
        self.status: Status | None = None
        self.received = 0.0
        self._sub = session.declare_subscriber(keys(robot)["state"], self._on)

    def _on(self, sample: zenoh.Sample) -> None:
        msg, _ = decode(sample.payload.to_bytes())
        if isinstance(msg, Status):
            self.status, self.received = msg, time.monotonic()

    def robot_state(self) -> dict[str, np.ndarray]:
        st = self.status
        if st is None:
            return {}
        return {k: np.frombuffer(v, "<f8").reshape(tuple(st.shapes.get(k, []))) for k, v in st.robot.items()}


class ConsoleClient:
    """A minimal operator console: heartbeats answering each challenge, with the dead-man
    state (`beat=False`: a one-shot request that leaves another console's dead-man alone)."""

    def __init__(self, session: zenoh.Session, robot: str, beat: bool = True) -> None:
        self.session, self.k = session, keys(robot)
        self.watch = _Watcher(session, robot)
        self._alive = session.liveliness().declare_token(self.k["alive_console"])  # presence only
        self.deadman = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)
        if beat:
            self._thread.start()

    def _beat(self) -> None:
        answered = None
        while not self._stop.wait(0.01):
            st = self.watch.status
            if (
                st is not None and st.challenge != answered
            ):  # each challenge is answered once (the next status brings a new one)
                answered = st.challenge
                self.session.put(
                    self.k["operator"],
                    encode(Operator(version=VERSION, deadman=self.deadman.is_set(), answer=st.challenge + 1)),
                    priority=zenoh.Priority.REAL_TIME,
                    express=True,
                )

    def request(self, op: str, key: str = "request", detail: str = "") -> Reply | None:
        """enable / reset / approve: a query, answered with the agent's Reply (ok, or why
        not). An e-stop (key "estop") is a put at real-time priority: nothing waits on it."""
        msg = Request(version=VERSION, op=op, detail=detail)  # type: ignore[arg-type]
        if key == "estop":
            self.session.put(
                self.k["estop"],
                encode(msg),
                priority=zenoh.Priority.REAL_TIME,
                express=True,
                congestion_control=zenoh.CongestionControl.BLOCK,  # never dropped under congestion
            )
            return None
        reply = _ask(self.session, self.k[key], msg)
        return reply if isinstance(reply, Reply) else Reply(version=VERSION, ok=False, reason="no answer")

    def pending(self) -> tuple[str, str] | None:
        """The (digest, task) of a proposal awaiting approval, as the status shows it."""
        st = self.watch.status
        if st is None or not st.approval.startswith("pending "):
            return None
        d, _, task = st.approval[len("pending ") :].partition(": ")
        return d, task

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        self._alive.undeclare()


class PolicyClient:
    """The policy's wire to one agent: lease, clock sync, retain at 10 Hz, command chunks."""

    def __init__(self, session: zenoh.Session, robot: str) -> None:
        self.session, self.k = session, keys(robot)
        self.watch = _Watcher(session, robot)
        self._alive = session.liveliness().declare_token(self.k["alive_policy"])  # presence only
        self.grant: LeaseGrant | None = None
        self.offset: float | None = None  # agent clock - this clock
        # the round the offset comes from (sent, agent_time, received, half its round trip):
        # each probe reports it, so the agent knows the uncertainty of the offset in use
        self._prev = (0.0, 0.0, 0.0)
        self._half_rtt = float("inf")
        self._seq = 0
        self._pub = session.declare_publisher(
            self.k["command"],
            congestion_control=zenoh.CongestionControl.DROP,
            priority=zenoh.Priority.REAL_TIME,
            express=True,
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._syncer: threading.Thread | None = None
        self._sync_lock = threading.Lock()
        self.silent = threading.Event()  # set: no retains (a cut link; the fault suite sets it)
        self.wire: Callable[[bytes], None] = self._pub.put  # where encoded commands go (a fault shim may wrap it)

    def sync(self, rounds: int = 5) -> float:
        """Clock offset to the agent (NTP-style, the tightest of `rounds` round trips); each
        probe also reports the previous round, so the agent knows the uncertainty."""
        with self._sync_lock:  # one probe at a time: each reports the previous round, so rounds must not interleave
            return self._sync(rounds)

    def _sync(self, rounds: int) -> float:
        """A round replaces the offset in use only if it is tighter than that offset's
        uncertainty aged by clock drift (or the offset is older than KEEP_OFFSET): a probe
        slowed by a loaded machine never makes a good offset worse."""
        answered = False
        for _ in range(rounds):
            sent = time.monotonic()
            reply = _ask(
                self.session,
                self.k["clock"],
                ClockProbe(
                    version=VERSION,
                    sent=sent,
                    prev_sent=self._prev[0],
                    prev_agent=self._prev[1],
                    prev_received=self._prev[2],
                ),
            )
            received = time.monotonic()
            if not isinstance(reply, ClockProbe):
                continue
            answered = True
            half = (received - sent) / 2
            age = received - self._prev[2]
            if self.offset is None or age > KEEP_OFFSET or half <= self._half_rtt + CLOCK_DRIFT * age:
                self._prev, self._half_rtt = (sent, reply.agent_time, received), half
                self.offset = reply.agent_time - (sent + received) / 2
        if not answered:
            raise ConnectionError("the agent did not answer clock probes")
        return self._half_rtt + CLOCK_DRIFT * (time.monotonic() - self._prev[2])

    def acquire(self) -> LeaseGrant:
        reply = _ask(self.session, self.k["lease"], Lease(version=VERSION, op="acquire"))
        if not isinstance(reply, LeaseGrant) or not reply.ok:
            raise PermissionError(f"lease refused: {getattr(reply, 'reason', 'no answer')}")
        self.grant = reply
        if self._thread is None:  # (a second acquire, after the lease went stale, reuses them)
            self._thread = threading.Thread(target=self._retain, daemon=True)
            self._thread.start()
            self._syncer = threading.Thread(target=self._sync_loop, daemon=True)
            self._syncer.start()
        return reply

    def _retain(self) -> None:
        while not self._stop.wait(0.1):
            g = self.grant
            if g is not None and not self.silent.is_set():
                _ask(
                    self.session,
                    self.k["lease"],
                    Lease(version=VERSION, op="retain", lease=g.lease, epoch=g.epoch),
                    timeout=0.3,
                )

    def _sync_loop(self) -> None:
        """Clock probes at 10 Hz on their own thread (a slow probe never delays a retain):
        they keep the agent's view of the offset's uncertainty fresh."""
        while not self._stop.wait(0.1):
            if not self.silent.is_set():
                try:
                    self.sync(1)
                except ConnectionError:
                    pass  # no agent answering: the lease goes stale there, which is the point

    def episode(self, seed: int) -> Reply:
        """Ask for a new episode of a simulated robot's world (the robot must be at rest)."""
        g = self.grant
        if g is None:
            raise RuntimeError("acquire() first")
        reply = _ask(self.session, self.k["episode"], Episode(version=VERSION, lease=g.lease, epoch=g.epoch, seed=seed))
        return reply if isinstance(reply, Reply) else Reply(version=VERSION, ok=False, reason="no answer")

    def propose(self, instruction: str, scenario: str, speed_scale: float = 1.0) -> Reply:
        """Propose the task for the operator's approval (agents started with --require-approval)."""
        g = self.grant
        if g is None:
            raise RuntimeError("acquire() first")
        reply = _ask(
            self.session,
            self.k["propose"],
            Proposal(
                version=VERSION,
                lease=g.lease,
                epoch=g.epoch,
                instruction=instruction,
                scenario=scenario,
                speed_scale=float(speed_scale),
            ),
        )
        return reply if isinstance(reply, Reply) else Reply(version=VERSION, ok=False, reason="no answer")

    def agent_now(self) -> float:
        if self.offset is None:
            raise RuntimeError("sync() first")
        return time.monotonic() + self.offset

    def send(self, chunk: np.ndarray, period: float = 0.1, lead: float = 0.0) -> None:
        """Entries for the next len(chunk) periods, each expiring at the end of its own
        (`lead` seconds later: a command sent just after a period began still covers the
        next one's start)."""
        g = self.grant
        if g is None:
            raise RuntimeError("acquire() first")
        now = self.agent_now() + lead
        self._seq += 1
        entries = [Entry(expires=now + period * (i + 1), action=actions(a)) for i, a in enumerate(np.atleast_2d(chunk))]
        self.wire(
            encode(
                Command(version=VERSION, lease=g.lease, epoch=g.epoch, seq=self._seq, nonce=g.nonce, entries=entries)
            )
        )

    def close(self) -> None:
        self._stop.set()
        for thread in (self._thread, self._syncer):
            if thread is not None:
                thread.join(2)
        self._pub.undeclare()
        self._alive.undeclare()
