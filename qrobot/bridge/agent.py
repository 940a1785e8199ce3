"""The agent: the process on the robot's computer that owns the robot link, its own
supervisor (the robot's limits profile: the last line of defence), every deadline, the
lease and the e-stop latch (`AgentCore`). Policies and consoles only send messages.

Two paths run into it:
- `handle` (any thread: the transport's callbacks): one message, decoded totally, applied
  to the core under a lock. A message that stops motion (e-stop, lease taken, dead-man
  released) halts the robot at once: the robot brakes itself from its current motion,
  between physics substeps, without waiting for the next period.
- `step` (the loop, every `timing.loop` seconds): the core's deadlines (operator
  heartbeat, command deadline, entry expiry, lease staleness), halting on any that fires,
  and, once per robot period, the plan: the core's action (RUNNING) or a neutral one
  (ENABLED, HOLD) through the supervisor; in other states no plan, so the robot's own
  watchdog brakes and holds it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from qrobot.bridge.agent_core import MOVING, AgentCore, State
from qrobot.bridge.messages import (
    VERSION,
    ClockProbe,
    Command,
    Episode,
    Lease,
    Operator,
    Proposal,
    Reply,
    Request,
    Status,
    decode,
    encode,
)
from qrobot.bridge.robot_link import LINK_VERSION, Halt
from qrobot.safety.supervisor import OperatorKey, Supervisor

CLOCK_MEMORY = 60.0  # s: clock replies the agent remembers, so a policy may report its tightest round


class Agent:
    def __init__(
        self,
        adapter: Any,
        supervisor: Supervisor,
        core: AgentCore,
        key: OperatorKey,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.adapter, self.supervisor, self.core, self.clock = adapter, supervisor, core, clock
        self._key = key
        self._lock = threading.Lock()
        self._moving = False  # the last plan sent could move the robot
        self._period = -1
        self._episode: int | None = None  # a simulated robot's episode: a new world restarts the clock
        self._awaiting: tuple[int, float] | None = None  # (episode, since): a reset was sent, its world not seen yet
        self.plans = 0
        self.executed: list[tuple[float, float]] = []
        self.accepted: list[tuple[float, str, int, int]] = []  # (when, lease, epoch, seq) of accepted commands
        self._last_clock_reply = -1.0
        self._clock_replies: dict[float, None] = {}  # reply times of the last CLOCK_MEMORY s, oldest first
        self.halts: list[tuple[float, str]] = []  # (agent time, why)
        self._journal: list[dict[str, Any]] = []  # for the session record (`drain`)
        self._audited = 0
        self._brakes: int | None = None  # the robot's watchdog brakes, as last reported
        self._planned = -2  # the robot period of this agent's last plan
        supervisor.bind(adapter)
        core.adapter(True, clock())

    # ------------------------------------------------------------ messages
    def handle(self, data: bytes, role: str) -> bytes | None:
        """One inbound message from `role` (the transport knows it from the key expression
        the access list lets that certificate use). Returns a reply for queries."""
        msg, why = decode(data)
        now = self.clock()
        with self._lock:
            try:
                return self._handle(msg, why, role, now)
            except Exception as exc:  # a defect here must stop the robot, never leave it running
                self._fault(now, exc)
                return None

    def _fault(self, now: float, exc: BaseException) -> None:
        """With the lock: an unexpected error in the agent latches an e-stop and halts."""
        self.core.estop(f"fault: agent error {type(exc).__name__}: {exc}"[:200], now)
        self._halt(now, "agent fault")

    def _handle(self, msg: Any, why: str, role: str, now: float) -> bytes | None:
        if msg is None:
            self.core._log(now, "reject", f"{role}: {why}")
            return None
        reply: bytes | None = None
        before = self.core.state
        if isinstance(msg, Command):
            if self._awaiting is not None:
                self.core._log(now, "reject", f"{role}: a new episode is starting: commands wait for its first state")
            elif self.core.command(msg, role, now)[0]:
                self.accepted.append((now, msg.lease, msg.epoch, msg.seq))
                self._journal.append({"t": now, "kind": "command", "seq": msg.seq, "entries": len(msg.entries)})
        elif isinstance(msg, Lease):
            reply = encode(self.core.lease(msg, role, now))
        elif isinstance(msg, Operator):
            self.core.operator(msg, role, now)
        elif isinstance(msg, Request):
            ok, why = self.core.request(msg, role, now)
            if ok and msg.op == "reset":
                # no re-arm by a neutral command: here the reset leaves the agent IDLE, and only a
                # fresh enable with the dead-man held moves it again (re-arming as well would refuse
                # every command of a policy that keeps driving, and the robot would never resume)
                self.supervisor.reset_estop(self._key, rearm=False, note=f"{role} reset")
            reply = encode(Reply(version=VERSION, ok=ok, reason=why))
        elif isinstance(msg, ClockProbe):
            reply = self._clock_probe(msg, role, now)
        elif isinstance(msg, Proposal):
            why = (
                f"the robot runs {self.adapter.hello.scenario!r}, not {msg.scenario!r}"
                if msg.scenario != self.adapter.hello.scenario
                else self.core.propose(msg, role, now)
            )
            reply = encode(Reply(version=VERSION, ok=not why, reason=why))
        elif isinstance(msg, Episode):
            reply = encode(self._new_episode(msg, role, now))
        else:  # a message the agent sends, never takes (status, observation, reply, grant)
            self.core._log(now, "reject", f"{role}: a {type(msg).__name__} is not accepted by the agent")
        self.core.tick(now)  # the message's consequences now (a take, a released dead-man), not next loop
        self._after(before, now)
        return reply

    def _clock_probe(self, msg: ClockProbe, role: str, now: float) -> bytes:
        """Reply with the agent's time; a probe reporting the round of this agent's last
        reply sets the offset's uncertainty (half that round trip) for enabling."""
        rtt = msg.prev_received - msg.prev_sent
        # the round the policy's offset comes from: one of this agent's recent replies (the
        # policy keeps its tightest round, aged; a reply it never got cannot be reported)
        if role == "policy" and msg.prev_agent in self._clock_replies:
            self.core.clock(rtt / 2 if 0.0 <= rtt <= 10.0 else None, msg.prev_agent)  # nonsense: unknown
        self._last_clock_reply = now
        self._clock_replies[now] = None
        while self._clock_replies and next(iter(self._clock_replies)) < now - CLOCK_MEMORY:
            del self._clock_replies[next(iter(self._clock_replies))]
        return encode(ClockProbe(version=VERSION, sent=msg.sent, agent_time=now))

    def _new_episode(self, msg: Episode, role: str, now: float) -> Reply:
        """A new episode of a simulated world, for the lease holder, with the robot at rest."""
        if not getattr(self.adapter.hello, "resettable", False):
            why = "this robot is not a simulation: episodes are reset by people"
        elif self._awaiting is not None:
            why = "a new episode is already starting"
        elif not self._at_rest():
            why = "the robot is still moving"
        else:
            why = self.core.episode(msg.lease, msg.epoch, role, now)  # (logs its own refusals)
            if not why:
                self.adapter.reset(msg.seed)  # (the robot applies it at rest, between periods)
                self._journal.append({"t": now, "kind": "reset", "seed": int(msg.seed), "period": self.adapter.period})
                self._awaiting = (int(getattr(self.adapter.last, "episode", 0)) + 1, now)
                return Reply(version=VERSION, ok=True)
            return Reply(version=VERSION, ok=False, reason=why)
        self.core._log(now, "episode_refused", why)
        return Reply(version=VERSION, ok=False, reason=why)

    def _at_rest(self, tol: float = 1e-2) -> bool:
        if self._moving:  # the last plan could move it, whatever the last state says
            return False
        last = self.adapter.last
        if last is None:
            return False
        speeds = [
            np.frombuffer(last.fields[k], "<f8") for k in ("base_vel", "ee_lin_vel", "joint_vel") if k in last.fields
        ]
        return bool(speeds) and all(float(np.abs(v).max(initial=0.0)) < tol for v in speeds)

    def status(self) -> bytes:
        """The agent's status for the transport to publish (the robot's last state with it)."""
        with self._lock:
            last, now = self.adapter.last, self.clock()
            return encode(
                Status(
                    version=VERSION,
                    state=self.core.state.value,
                    challenge=self.core.challenge,
                    epoch=self.core.epoch,
                    latched=self.core.latched or "",
                    time=self.clock(),
                    robot=dict(last.fields) if last is not None else {},
                    shapes=dict(last.shapes) if last is not None else {},
                    approval=self.core.approval(self.clock()),
                    safety=self.supervisor.counts(),
                    holder=self.core.holder,
                    ages=dict(zip(("operator", "lease"), self.core.ages(now))),
                    rejects=self.core.refusals(now),
                )
            )

    def _after(self, before: State, now: float) -> None:
        """With the lock: a transition that ends motion halts the robot now."""
        state = self.core.state
        if state == State.ENABLED and before != State.ENABLED:
            self.supervisor.reset()  # a new run: no gap since the last plan counts against it
        if self._moving and state not in (State.RUNNING,):
            self._halt(now, f"{before.value} -> {state.value}" if state != before else "hold")

    def _halt(self, now: float, why: str) -> None:
        self._moving = False
        self.halts.append((now, why))
        self._journal.append({"t": now, "kind": "halt", "why": why, "period": self.adapter.period})
        try:
            self.adapter.link.send(Halt(version=LINK_VERSION, reason=why[:120]))
        except ConnectionError:
            self.core.adapter(False, now)

    # ------------------------------------------------------------ the loop
    def step(self, timeout: float | None = None) -> None:
        """One loop: deadlines, then this robot period's plan if its state has come."""
        wait = self.core.timing.loop if timeout is None else timeout
        with self._lock:  # wake for the next deadline, not only at the loop's tick
            wait = max(0.0, min(wait, self.core.next_deadline() - self.clock()))
        try:
            st = self.adapter.state(wait)
        except ConnectionError:
            with self._lock:
                self.core.adapter(False, self.clock())
                self._moving = False
            time.sleep(self.core.timing.loop)  # a dead link answers at once: do not spin on it
            return
        now = self.clock()
        with self._lock:
            try:
                self._plan(st, now)
            except ConnectionError:
                self.core.adapter(False, now)
                self._moving = False
            except Exception as exc:  # a defect here must stop the robot, never leave it running
                self._fault(now, exc)

    def _plan(self, st: dict | None, now: float) -> None:
        """With the lock: the deadlines, then this period's plan."""
        before = self.core.state
        action = self.core.tick(now)
        latched = self.supervisor.latched
        if latched and self.core.state != State.ESTOPPED:
            self.core.estop(f"supervisor: {latched}", now)  # a fault the supervisor latched
            action = None
        self._after(before, now)
        if st is None or self.adapter.period == self._period:
            return
        self._period = self.adapter.period
        self._missed(now)
        self._new_world_seen(getattr(self.adapter.last, "episode", None), now)
        if action is None or self.core.state not in MOVING:
            return  # no plan: the robot's watchdog brakes and holds it
        operator_age, lease_age = self.core.ages(now)
        self._journal.append(
            {
                "t": now,
                "kind": "plan",
                "period": self.adapter.period,
                "episode": self._episode,
                "state": self.core.state.value,
                "action": [float(a) for a in action],
                "speed": _speed(st),
                "operator_age": operator_age,
                "lease_age": lease_age,
            }
        )
        out = self.supervisor.filter(action, st)
        self.adapter.send(out, self.supervisor.last_action)
        self.plans += 1
        self._planned = self._period
        if self.core.state == State.RUNNING:
            self.executed.append((now, self.core.executing))  # (when, the entry's expiry)
        self._moving = self.core.state == State.RUNNING and bool(np.any(action != 0.0))

    def _missed(self, now: float) -> None:
        """The robot counts the periods its watchdog braked: one more right after a period
        this agent planned means that plan came too late (or was refused), so the record
        says so and a replay brakes there too."""
        brakes = int(getattr(self.adapter.last, "watchdog_brakes", 0))
        if self._brakes is not None and brakes > self._brakes and self._planned == self._period - 1:
            self._journal.append({"t": now, "kind": "missed", "period": self._planned})
        self._brakes = brakes

    def _new_world_seen(self, episode: int | None, now: float) -> None:
        """The world we asked for has come: its clock restarts, and nothing commanded for the
        old one runs in it. An episode change nobody asked for resets nothing (the clock's
        jump then faults the supervisor)."""
        awaiting = self._awaiting
        if awaiting is not None and episode == awaiting[0]:
            self.supervisor.reset()
            self.core.clear(now, "new episode: commands for the old world dropped")
            self._awaiting = None
        elif awaiting is not None and now - awaiting[1] > 5.0:
            self.core._log(now, "episode_refused", "the robot did not start the new episode within 5 s")
            self._awaiting = None
        self._episode = episode

    def presence(self, role: str, alive: bool) -> None:
        """A peer's liveliness token came or went (Zenoh's 10 s transport lease): logged for
        the operator, never acted on (the deadlines stop the robot long before)."""
        with self._lock:
            self.core._log(self.clock(), "presence", f"{role[:20]} {'present' if alive else 'gone'}")

    def rebind(self, adapter: Any) -> None:
        """A new link to the robot (after the old one dropped): paired with this agent's
        supervisor anew; the robot is IDLE until an operator enables it again."""
        with self._lock:
            adapter.on_observation = getattr(self.adapter, "on_observation", adapter.on_observation)
            self.adapter, self._period, self._episode, self._awaiting, self._moving = adapter, -1, None, None, False
            self._brakes, self._planned = None, -2
            self.supervisor.bind(adapter)
            self.supervisor.reset()
            self.core.adapter(True, self.clock())

    def drain(self) -> list[dict[str, Any]]:
        """The session's records since the last drain (the core's audit and the agent's own),
        in time order, for `qrobot.bridge.audit.SessionAudit`."""
        with self._lock:
            new = [{"t": t, "kind": kind, "detail": detail} for t, kind, detail in self.core.audit[self._audited :]]
            self._audited = len(self.core.audit)
            new += self._journal
            self._journal = []
        return sorted(new, key=lambda r: r["t"])

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.step()


def _speed(state: dict) -> float:
    """The robot's measured speed (m/s): the base's forward speed or the grasp point's."""
    if "ee_lin_vel" in state:
        return float(np.linalg.norm(state["ee_lin_vel"]))
    return abs(float(np.asarray(state.get("base_vel", [0.0]))[0]))
