"""The agent's decisions, pure: state machine, lease, expiring command buffer, operator
heartbeat, deadlines and the e-stop latch. No network, no robot: every call gets the
robot clock's `now`, so every transition is testable one by one.

    DISCONNECTED -> IDLE -> ENABLED -> RUNNING <-> HOLD
    any -> ESTOPPED (latched on disk: a console reset, then a fresh enable)
    any -> FAULT (the adapter failed: a console reset once it is back)

`tick(now)` says what to do this loop: an action for the supervisor (RUNNING), a neutral
action (ENABLED, HOLD: brake and hold within limits) or None (do not command: the
adapter stops and the robot's own watchdog holds it). Never "repeat the last command":
an empty or expired buffer is a hold.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from enum import Enum

import numpy as np

from qrobot.bridge.latch import Latch
from qrobot.bridge.messages import (
    VERSION,
    Command,
    Entry,
    Lease,
    LeaseGrant,
    Operator,
    Proposal,
    Request,
    digest,
    entry_values,
)


class State(str, Enum):
    DISCONNECTED = "DISCONNECTED"
    IDLE = "IDLE"
    ENABLED = "ENABLED"
    RUNNING = "RUNNING"
    HOLD = "HOLD"
    ESTOPPED = "ESTOPPED"
    FAULT = "FAULT"


@dataclass(frozen=True)
class Timing:
    """Seconds. `deadline`: longest gap between two accepted commands before a hold;
    `horizon`: furthest expiry a chunk may carry; `max_skew`: clock uncertainty that
    still allows enabling."""

    loop: float = 0.02
    deadline: float = 0.2
    operator_timeout: float = 0.25
    lease_stale: float = 0.5
    horizon: float = 0.5
    max_skew: float = 0.02


MOVING = (State.ENABLED, State.RUNNING, State.HOLD)
CLOCK_DRIFT = 1e-4  # s/s: 100 ppm, a conservative bound for two computers' crystal clocks


class AgentCore:
    """Args:
    dim: action size the robot's supervisor takes.
    latch: the on-disk e-stop latch (a set latch on start means ESTOPPED).
    people: the robot's profile has a people source or declares none can be present.
    approval: commands need the operator's approval of the policy's proposed task
        ({instruction, scenario, speed scale}), bound to the lease, for `approval_ttl` s.
    """

    def __init__(
        self,
        dim: int,
        latch: Latch,
        timing: Timing = Timing(),
        people: bool = True,
        approval: bool = False,
        approval_ttl: float = 600.0,
        motion: tuple[tuple[int, ...], ...] | None = None,
    ) -> None:
        self.dim, self.timing, self._latch, self._people = dim, timing, latch, people
        # the action's motion groups, each capped as a vector at the approved speed share (the
        # arm's translation is one group: capping its axes one by one would allow sqrt(3) x)
        self._motion = motion if motion is not None else tuple((i,) for i in range(dim - 1))
        self.approval_required, self._approval_ttl = approval, approval_ttl
        self._proposal: tuple[str, Proposal] | None = None  # (digest, proposal) awaiting the console
        self._approved: tuple[str, Proposal, float] | None = None  # (digest, proposal, expiry)
        self._state = State.ESTOPPED if latch.reason else State.DISCONNECTED
        self._adapter = False
        self._lease: tuple[str, int, bytes] | None = None  # id, epoch, nonce
        self._lease_holder = ""
        self._epoch = 0
        self._retained = -1e9
        self._seq = -1
        self._last_command = -1e9
        self._buffer: list[Entry] = []
        self._challenge = int.from_bytes(os.urandom(4), "big") % 2**31
        self._operator_seen = -1e9
        self._deadman = False
        self._skew: float | None = None
        self._skew_at = 0.0
        self.audit: list[tuple[float, str, str]] = []
        self.executing = -1.0  # expiry of the entry the last tick returned

    # ----------------------------------------------------------------- queries
    @property
    def state(self) -> State:
        return self._state

    @property
    def challenge(self) -> int:
        """What the operator's next heartbeat must answer (its value plus one)."""
        return self._challenge

    @property
    def latched(self) -> str | None:
        return self._latch.reason

    @property
    def connected(self) -> bool:
        return self._adapter

    @property
    def epoch(self) -> int:
        return self._epoch

    @property
    def holder(self) -> str:
        return self._lease_holder

    def refusals(self, now: float, n: int = 5) -> list[str]:
        """The last `n` rejected messages and refused requests, newest last, with their age."""
        out = [(t, d) for t, kind, d in self.audit[-200:] if kind == "reject" or kind.endswith("_refused")]
        return [f"{now - t:.1f} s: {d}"[:200] for t, d in out[-n:]]

    def ages(self, now: float) -> tuple[float, float]:
        """Seconds since the last accepted operator heartbeat and the last lease retain."""
        return float(now - self._operator_seen), float(now - self._retained)

    def approval(self, now: float) -> str:
        """For the status: "" (not required), "approved <digest>: <task>", "pending ..." or "none"."""
        if not self.approval_required:
            return ""
        if self._proposal is not None:  # what awaits the operator is shown first
            return f"pending {self._proposal[0]}: {_task(self._proposal[1])}"
        if self._approved is not None and self._approval_holds(now):
            return f"approved {self._approved[0]}: {_task(self._approved[1])}"
        return "none"

    def _approval_holds(self, now: float) -> bool:
        if self._approved is None or self._lease is None:
            return False
        _, p, expires = self._approved
        return (p.lease, p.epoch) == self._lease[:2] and now < expires

    def _log(self, now: float, kind: str, detail: str) -> None:
        self.audit.append((float(now), kind, detail))

    def _go(self, now: float, state: State, why: str) -> None:
        if state != self._state:
            self._log(now, "state", f"{self._state.value} -> {state.value}: {why}")
            self._state = state

    # ----------------------------------------------------------------- robot side
    def adapter(self, connected: bool, now: float, fault: str = "") -> None:
        """The robot adapter's health: connected and streaming state, or not."""
        self._adapter = bool(connected)
        if fault:
            self._buffer.clear()
            self._go(now, State.FAULT, f"adapter fault: {fault}")
        elif not connected and self._state not in (State.ESTOPPED, State.FAULT):
            self._buffer.clear()
            self._go(now, State.DISCONNECTED, "adapter lost")
        elif connected and self._state == State.DISCONNECTED:
            self._go(now, State.IDLE, "adapter connected")

    def clock(self, skew: float | None, now: float) -> None:
        """Uncertainty of the policy's clock offset (None: unknown), measured at `now` (the
        agent time of the round the offset comes from). It ages: two clocks drift apart, so
        the uncertainty grows by CLOCK_DRIFT per second from then on."""
        self._skew = None if skew is None or not skew == skew else abs(float(skew))
        self._skew_at = float(now)

    def skew(self, now: float) -> float | None:
        """The clock offset's uncertainty now (aged since its probe); None if unknown."""
        if self._skew is None:
            return None
        return self._skew + CLOCK_DRIFT * max(0.0, now - self._skew_at)

    # ----------------------------------------------------------------- lease
    def lease(self, msg: Lease, role: str, now: float) -> LeaseGrant:
        def refuse(why: str) -> LeaseGrant:
            self._log(now, "lease_refused", f"{role} {msg.op}: {why}")
            return LeaseGrant(version=VERSION, ok=False, reason=why)

        # a policy's lease goes stale without retains; a console's is held until it returns it
        stale = self._lease_holder == "policy" and now - self._retained > self.timing.lease_stale
        if msg.op == "take":
            if role != "console":
                return refuse("only the console may take the lease")
            return self._grant(now, "console", "taken by the console")
        if (
            role == "console"
            and msg.op == "return"
            and self._lease_holder == "console"
            and self._lease is not None
            and (msg.lease, msg.epoch) == self._lease[:2]
        ):
            self._lease, self._lease_holder = None, ""
            self._log(now, "lease", "returned by the console")
            return LeaseGrant(version=VERSION, ok=True)
        if role != "policy":
            return refuse(f"role {role!r} cannot {msg.op} a lease")
        if msg.op == "acquire":
            if self._lease is not None and not stale:
                return refuse(f"held by {self._lease_holder}")
            return self._grant(now, "policy", "acquired")
        if self._lease is None or (msg.lease, msg.epoch) != self._lease[:2] or self._lease_holder != "policy":
            return refuse("not the current lease")
        if msg.op == "retain":
            if stale:
                return refuse("stale: acquire again")
            self._retained = now
            return LeaseGrant(version=VERSION, ok=True, lease=msg.lease, epoch=msg.epoch, nonce=self._lease[2])
        self._lease, self._lease_holder = None, ""  # return
        self._buffer.clear()
        self._log(now, "lease", "returned")
        return LeaseGrant(version=VERSION, ok=True)

    def _grant(self, now: float, holder: str, why: str) -> LeaseGrant:
        self._epoch += 1
        self._lease = (uuid.uuid4().hex, self._epoch, os.urandom(16))
        self._lease_holder, self._retained, self._seq = holder, now, -1
        self._buffer.clear()  # nothing queued under an old lease survives it
        self._log(now, "lease", f"{why}: epoch {self._epoch}")
        return LeaseGrant(version=VERSION, ok=True, lease=self._lease[0], epoch=self._epoch, nonce=self._lease[2])

    def episode(self, lease: str, epoch: int, role: str, now: float) -> str:
        """May the lease holder start a new episode of a simulated world now? "" if so (the
        buffer is cleared: nothing planned for the old world runs in the new one)."""
        if role != "policy":
            why = f"role {role!r} cannot start an episode"
        elif self._lease is None or self._lease_holder != "policy" or (lease, epoch) != self._lease[:2]:
            why = "not the current lease"
        elif now - self._retained > self.timing.lease_stale:
            why = "lease stale"
        elif self._state not in (State.IDLE, State.ENABLED, State.HOLD):
            why = f"not in {self._state.value}: the robot must be idle or holding"
        else:
            self._buffer.clear()
            self._approved = self._proposal = None  # a new world's task needs its own approval
            self._log(now, "episode", "new episode")
            return ""
        self._log(now, "episode_refused", why)
        return why

    def propose(self, msg: Proposal, role: str, now: float) -> str:
        """The lease holder's task for the operator to approve; "" if it now awaits approval."""
        if not self.approval_required:
            why = "this agent does not require approval"
        elif role != "policy":
            why = f"role {role!r} cannot propose a task"
        elif self._lease is None or self._lease_holder != "policy" or (msg.lease, msg.epoch) != self._lease[:2]:
            why = "not the current lease"
        else:
            self._proposal, self._approved = (digest(msg), msg), None  # a new task: the old approval ends
            self._log(now, "proposal", f"{self._proposal[0]}: {_task(msg)}")
            return ""
        self._log(now, "proposal_refused", why)
        return why

    def _approve(self, shown: str, now: float) -> tuple[bool, str]:
        """The console approves the proposal whose digest it showed the operator."""
        if not self.approval_required:
            return False, "approval is not required by this agent"
        if self._proposal is None or self._proposal[0] != shown:
            why = "no pending proposal with that digest"
        elif self._lease is None or (self._proposal[1].lease, self._proposal[1].epoch) != self._lease[:2]:
            why = "the proposal's lease has ended"
        else:
            d, p = self._proposal
            self._approved, self._proposal = (d, p, now + self._approval_ttl), None
            self._log(now, "approval", f"{d} approved for {self._approval_ttl:g} s")
            return True, ""
        self._log(now, "approval_refused", why)
        return False, why

    # ----------------------------------------------------------------- operator
    def operator(self, msg: Operator, role: str, now: float) -> str:
        """A heartbeat from the console; "" if accepted, else why not."""
        if role != "console":
            why = f"operator heartbeat from role {role!r}"
        elif msg.answer != self._challenge + 1:  # only the latest: a recording never answers it
            why = "wrong challenge answer"
        else:
            self._operator_seen, self._deadman = now, bool(msg.deadman)
            self._challenge = (self._challenge + 1) % 2**31  # a recorded heartbeat cannot be replayed
            return ""
        self._log(now, "operator_refused", why)
        return why

    def _operator_ok(self, now: float) -> str:
        if now - self._operator_seen > self.timing.operator_timeout:
            return "operator heartbeat lost"
        return "" if self._deadman else "dead-man released"

    # ----------------------------------------------------------------- requests
    def request(self, msg: Request, role: str, now: float) -> tuple[bool, str]:
        if msg.op == "estop":  # anyone may stop the robot
            self.estop(f"{role} e-stop{': ' + msg.detail if msg.detail else ''}", now)
            return True, ""
        if role != "console":
            self._log(now, "request_refused", f"{role} may not {msg.op}")
            return False, f"only the console may {msg.op}"
        if msg.op == "reset":
            return self._reset(now)
        if msg.op == "enable":
            return self._enable(now)
        return self._approve(msg.detail, now)

    def estop(self, reason: str, now: float) -> None:
        self._buffer.clear()  # the stop first, whatever the disk does
        self._go(now, State.ESTOPPED, reason)
        self._latch.set(reason)  # then on disk (survives a restart), then reported as latched
        if not self._latch.saved:
            self._log(now, "latch", "the e-stop latch could not be written to disk: reset refused until it can")

    def _reset(self, now: float) -> tuple[bool, str]:
        if self._state not in (State.ESTOPPED, State.FAULT):
            return False, f"nothing to reset in {self._state.value}"
        if not self._adapter:
            return False, "the robot adapter is not connected"
        if not self._latch.clear():
            self._log(now, "reset_refused", "the e-stop latch file cannot be written")
            return False, "the e-stop latch file cannot be written: fix the disk, then reset"
        self._buffer.clear()
        self._go(now, State.IDLE, "console reset: enable again to move")
        return True, ""

    def _enable(self, now: float) -> tuple[bool, str]:
        skew = self.skew(now)
        why = (
            ("" if self._state == State.IDLE else f"cannot enable from {self._state.value}")
            or ("" if self._people else "the robot profile neither senses people nor declares none present")
            or (
                "clock offset unknown"
                if skew is None
                else ""
                if skew <= self.timing.max_skew
                else f"clock skew {skew * 1e3:.0f} ms > {self.timing.max_skew * 1e3:.0f} ms (aged since the last probe)"
            )
            or self._operator_ok(now)
        )
        if why:
            self._log(now, "enable_refused", why)
            return False, why
        self._buffer.clear()  # the first motion is planned from the measured state, never an old set-point
        self._go(now, State.ENABLED, "console enable")
        return True, ""

    # ----------------------------------------------------------------- commands
    def command(self, msg: Command, role: str, now: float) -> tuple[bool, str]:
        why = self._refuse(msg, role, now)
        if why:
            self._log(now, "reject", why)
            return False, why
        self._seq, self._last_command = msg.seq, now
        self._buffer = list(msg.entries)  # the newest chunk supersedes: no queue to burst out
        return True, ""

    def _refuse(self, msg: Command, role: str, now: float) -> str:
        if role != "policy":
            return f"command from role {role!r}"
        if self._lease is None or self._lease_holder != "policy":
            return "no policy lease"
        lease, epoch, nonce = self._lease
        if (msg.lease, msg.epoch) != (lease, epoch):
            return "stale lease"
        if msg.nonce != nonce:
            return "wrong session nonce"
        if now - self._retained > self.timing.lease_stale:
            return "lease stale"
        if msg.seq <= self._seq:
            return f"sequence {msg.seq} not after {self._seq}"
        if self.approval_required and not self._approval_holds(now):
            return "no operator approval for this lease's task (or it expired)"
        skew = self.skew(now)
        if skew is None or skew > self.timing.max_skew:  # expiries stamped on a clock the agent no longer knows
            return "clock offset unknown or stale: probe the clock again"
        last = -1e18
        for e in msg.entries:
            if not e.expires > last:
                return "entry expiries must increase"
            last = e.expires
            values = entry_values(e)
            if values.shape != (self.dim,):
                return f"action of {values.size} values != {self.dim}"
            if np.abs(values).max() > 1.0:
                return "action beyond the supervisor's range [-1, 1]"
        if last - now > self.timing.horizon + 1e-9:
            return f"chunk horizon {last - now:.3f} s > {self.timing.horizon} s"
        return ""

    def clear(self, now: float, why: str) -> None:
        """Drop every buffered entry (the agent's new world: nothing for the old one runs)."""
        if self._buffer:
            self._log(now, "cleared", why)
        self._buffer.clear()

    # ----------------------------------------------------------------- the loop
    def next_deadline(self) -> float:
        """The robot-clock time of the next deadline that could end motion (inf: none), so
        the loop wakes for it instead of at its next 20 ms tick."""
        if self._state not in MOVING:
            return float("inf")
        t = [self._operator_seen + self.timing.operator_timeout]
        if self._buffer:
            t += [
                self._buffer[0].expires,
                self._last_command + self.timing.deadline,
                self._retained + self.timing.lease_stale,
            ]
            if self.approval_required and self._approved is not None:
                t.append(self._approved[2])
        return min(t) + 1e-4

    def tick(self, now: float) -> np.ndarray | None:
        """What the supervisor gets this loop: an action, a neutral one (hold), or None."""
        if self._latch.reason is not None:
            self._go(now, State.ESTOPPED, self._latch.reason)
            return None
        if self._state in (State.DISCONNECTED, State.IDLE, State.FAULT, State.ESTOPPED):
            return None
        why = self._operator_ok(now)
        if why:  # no resume without a new enable
            self._buffer.clear()
            self._go(now, State.IDLE, why)
            return None
        self._buffer = [e for e in self._buffer if e.expires > now]
        if self._buffer and now - self._last_command > self.timing.deadline:
            self._buffer.clear()
            self._log(now, "deadline", f"no command for {now - self._last_command:.3f} s")
        if self._buffer and now - self._retained > self.timing.lease_stale:
            self._buffer.clear()
            self._log(now, "lease", "stale: holding")
        if self._buffer and self.approval_required and not self._approval_holds(now):
            self._buffer.clear()
            self._log(now, "approval", "expired: holding")
        if self._buffer:
            self._go(now, State.RUNNING, "fresh command")
            self.executing = self._buffer[0].expires  # (measured by the fault suite: never in the past)
            action = entry_values(self._buffer[0])
            if self._approved is not None and self.approval_required:  # motion capped at the approved share
                cap = self._approved[1].speed_scale
                for group in self._motion:  # (stop / gripper values are not motion: left as they are)
                    norm = float(np.linalg.norm(action[list(group)]))
                    if norm > cap:
                        action[list(group)] *= cap / norm
            return action
        if self._state == State.RUNNING:
            self._go(now, State.HOLD, "no unexpired command")
        return np.zeros(self.dim)


def _task(p: Proposal) -> str:
    """A proposal as a console shows it: labelled fields, quoted and escaped."""
    return f"instruction={p.instruction!r} scenario={p.scenario!r} speed={p.speed_scale:g}"
