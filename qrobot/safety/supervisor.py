"""The supervisor: the only road from a policy action to a robot command.

Pure numpy and total: `filter` never raises. Anything it cannot vouch for becomes a
`Stop` carrying a controlled-stop (IEC 60204-1 category 1) command; every intervention
is an `Event`.

Order of checks each control period:
  robot state (every field typed, finite, plausible; time advancing) -> fault: latched e-stop
  command (real numbers, right shape, finite)    -> reject: brake
  watchdog (no valid command within the deadline,
  or a longer gap between two valid ones)        -> latched e-stop
  e-stop latched                                   -> brake, then hold
  re-arm after an operator release (neutral command first)
  people (a declared source; a dropout)            -> protective stop
  robot rules (arm: Cartesian, workspace, SSM, Jacobian resolution, joint-space plan; base: speed, SSM,
  foresight, acceleration, bounds/keep-out)        -> SafeCommand (a plan for one period)
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np

from qrobot.safety import arm_rules, base_rules, trajectory
from qrobot.safety.command import CommandCheck, CommandSeal, SafeCommand, Stop
from qrobot.safety.inputs import beyond_limits, fields, read_action, read_people, read_robot_state, real_array
from qrobot.safety.limits import ArmLimits, BaseLimits, Limits
from qrobot.safety.ssm import SeparationMonitor


class Kinematics(Protocol):
    """What the supervisor needs from an arm backend (queries, not actuation)."""

    def jacobian(self, q: np.ndarray) -> np.ndarray: ...


class Foresight(Protocol):
    """A predictor of where an action leads (the world model): the largest forward-speed
    scale in [0, 1] it judges collision-free, and the collision probability at that scale."""

    def speed_scale(self, action: np.ndarray) -> tuple[float, float]: ...


_DIM = {"panda": 5, "diffbot": 3}
JACOBIAN_MAX = 100.0
FINGER_OPEN = 0.04
PeopleSource = Literal["sensor", "none"]


def as_people_source(value: object) -> PeopleSource | None:
    """A declared people source ("sensor" or "none"); anything else is None (undeclared:
    the supervisor refuses motion). For declarations that arrive as plain strings."""
    if value == "sensor":
        return "sensor"
    if value == "none":
        return "none"
    return None


class Event(NamedTuple):
    """One intervention: when, which rule, what came in, what went out, why (immutable)."""

    time: float
    rule: str
    raw: Any
    issued: Any
    reason: str
    severity: str = "warning"  # info | warning | error | critical


@dataclass
class OperatorKey:
    """The operator channel. Hand it to the person (runner, GUI, bridge console),
    never to the policy: the supervisor keeps only its hash."""

    secret: bytes = field(default_factory=lambda: os.urandom(32), repr=False)


class Supervisor:
    """Checks every action for one robot against a limits profile.

    Args:
        people: where people positions come from: "sensor" (every state carries `people`
            and `people_radius`; a dropout is a protective stop) or "none" (declared: no
            person can be present). Without either declaration motion is refused.
        clock: a monotonic clock (real robots) the watchdog reads besides the state's time.
    """

    def __init__(
        self,
        limits: Limits,
        action_scale: tuple[float, ...],
        kinematics: Kinematics | None = None,
        operator: OperatorKey | None = None,
        foresight: Foresight | None = None,
        people: PeopleSource | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._limits = limits
        self._dim = _DIM[limits.robot]
        self._scale = np.asarray(action_scale, dtype=np.float64)
        self._kinematics = kinematics
        self._foresight = foresight
        self._people = as_people_source(people)
        self._clock = clock
        self._fields = fields(limits)
        key = operator or OperatorKey()  # no key given: nobody can release this latch
        self._key_hash = hashlib.sha256(key.secret).digest()
        self._secret = os.urandom(32)
        self._seal = CommandSeal(self._secret)
        part: ArmLimits | BaseLimits = limits.arm if limits.robot == "panda" else limits.base
        self._rates = arm_rules.brake_rates(limits.arm) if limits.robot == "panda" else base_rules.rates(limits.base)
        self._ssm = SeparationMonitor(part.ssm, limits.control_dt)
        self._latched: str | None = None
        self._needs_rearm = False
        self._estops = 0
        self._events: list[Event] = []
        self.reset()

    # ------------------------------------------------------------ read-only
    @property
    def limits(self) -> Limits:
        return self._limits

    @property
    def robot(self) -> str:
        return self._limits.robot

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def latched(self) -> str | None:
        """Why the e-stop is latched, or None."""
        return self._latched

    @property
    def needs_rearm(self) -> bool:
        return self._needs_rearm

    @property
    def protective(self) -> bool:
        return self._ssm.protective

    @property
    def people_source(self) -> str | None:
        return self._people

    @property
    def events(self) -> tuple[Event, ...]:
        return tuple(self._events)

    @property
    def last_action(self) -> np.ndarray | None:
        """The validated read-only copy of the last action (None if it was refused)."""
        return self._action

    def bind(self, backend: Any) -> None:
        """Make `backend` accept commands from this supervisor only (once per backend)."""
        backend._bind(CommandCheck(self._secret), self._rates)

    # --------------------------------------------------------------- episode
    def reset(self) -> None:
        """New episode: clears history and events. A latched e-stop stays latched: only
        the operator key releases it (`reset_estop`)."""
        self._events.clear()
        self._ssm.reset()
        self._last_time: float | None = None
        self._last_valid: float | None = None
        self._last_valid_clock: float | None = None
        self._grip = FINGER_OPEN
        self._done = 0.0  # base: the policy's validated "I am at the goal" flag (not motion)
        self._action: np.ndarray | None = None
        self._raw: Any = None
        self._refused_logged = False
        self._estops = 0

    # ------------------------------------------------------------- operator
    def estop(self, reason: str = "operator e-stop", time: float | None = None) -> None:
        """Latch the e-stop (API call, GUI key, watchdog or fault)."""
        if self._latched is None:
            self._latched = str(reason)[:200]
            self._estops += 1
            self._event(time, "estop", None, None, self._latched, "critical")

    def reset_estop(self, key: Any, time: float | None = None, rearm: bool = True, note: str = "") -> bool:
        """Release the latch: only with the operator key. With `rearm` (mid-episode) motion
        needs a fresh neutral command first, so a release never restarts motion; between
        episodes, in a newly built world, the key holder may skip that."""
        secret = getattr(key, "secret", None)
        if not isinstance(secret, bytes) or not hmac.compare_digest(hashlib.sha256(secret).digest(), self._key_hash):
            self._event(time, "reset_refused", None, None, "e-stop reset without the operator key", "error")
            return False
        if self._latched is not None:
            self._event(
                time,
                "reset",
                None,
                None,
                f"operator released e-stop ({self._latched}){': ' + note if note else ''}",
                "warning",
            )
        self._latched = None
        self._needs_rearm = bool(rearm)
        return True

    # ---------------------------------------------------------------- events
    def _event(
        self, time: float | None, rule: str, raw: Any, issued: Any, reason: str, severity: str = "warning"
    ) -> None:
        t = (
            float(time)
            if time is not None and type(time) in (int, float) and math.isfinite(time)
            else (self._last_time if self._last_time is not None else 0.0)
        )
        if raw is not None and raw is self._raw and self._action is not None:
            summary: Any = tuple(self._action.tolist())  # already validated: no second look at the raw object
        else:
            summary = _summary(raw)
        if isinstance(issued, list):
            issued = tuple(issued)  # events are handed out: immutable all the way down
        self._events.append(Event(t, rule, summary, issued, reason, severity))

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self._events:
            out[e.rule] = out.get(e.rule, 0) + 1
        out["interventions"] = float(len(self._events))
        out["estops"] = float(self._estops)
        out["protective_stop_time"] = round(self._ssm.protective_time, 6)
        return out

    # ---------------------------------------------------------------- filter
    def filter(self, action: Any, state: Any) -> SafeCommand | Stop:
        """The one gate. `action=None` means no command arrived this period."""
        try:
            return self._filter(action, state)
        except Exception as exc:  # total: a supervisor bug must stop the robot, not crash
            self.estop(f"supervisor fault: {type(exc).__name__}: {exc}")
            return Stop(f"supervisor fault: {type(exc).__name__}")

    def _filter(self, action: Any, state: Any) -> SafeCommand | Stop:
        self._action, self._raw = None, action
        st, why = read_robot_state(state, self._fields)
        if st is None:
            self.estop(f"sensor fault: {why}")
            return Stop(f"sensor fault: {why}")  # untrusted state: the backend brakes on its own
        now = float(st["time"])
        if self._last_time is not None and not now > self._last_time:
            self.estop(f"sensor fault: stale data (timestamp advanced {now - self._last_time:.3g} s)")
            return self._brake(st, self._latched or "stale data")
        self._last_time = now
        runaway = beyond_limits(st, self._limits)
        if runaway:
            self.estop(f"fault: {runaway}", now)
            return self._brake(st, self._latched or runaway)
        clock = self._read_clock()
        if clock is not None and not math.isfinite(clock):
            self.estop("watchdog: the monotonic clock cannot be read", now)
            return self._brake(st, self._latched or "no clock")
        if self._last_valid is None:
            self._last_valid, self._last_valid_clock = now, clock
        arr, why = read_action(action, self._dim)
        deadline = self._limits.watchdog_periods * self._limits.control_dt
        gap = max(
            now - self._last_valid,
            clock - self._last_valid_clock if clock is not None and self._last_valid_clock is not None else 0.0,
        )
        if arr is None:
            if gap >= deadline - 1e-9:
                self.estop(f"watchdog: no valid command for {gap:.3f} s", now)
            elif action is not None:
                self._event(now, "reject", action, None, why, "error")
            return self._brake(st, self._latched or "invalid command")
        self._action = arr
        if gap > deadline + 1e-9:
            self.estop(f"watchdog: {gap:.3f} s between valid commands (deadline {deadline:.3f} s)", now)
        self._last_valid, self._last_valid_clock = now, clock
        if self.robot == "diffbot":
            self._done = 1.0 if arr[2] > 0.5 else 0.0
        if self._latched is not None:
            return self._brake(st, f"e-stop latched: {self._latched}")
        if self._needs_rearm:
            motion = arr[:2] if self.robot == "diffbot" else arr[:4]
            if np.all(np.abs(motion) <= 1e-3):
                self._needs_rearm = False
                self._event(now, "rearm", action, None, "neutral command after reset: motion enabled", "info")
            else:
                self._event(now, "reject", action, None, "after a reset, send a neutral command first", "warning")
            return self._brake(st, "awaiting a fresh neutral command")
        people = self._sensed_people(state, now, action)
        if people is None:
            return self._brake(st, "protective stop: no trustworthy people report")
        if max(map(abs, arr.tolist())) > 1.0:
            clipped = np.clip(arr, -1.0, 1.0)
            self._event(now, "clamp", action, clipped.tolist(), "action outside [-1, 1]", "info")
        else:
            clipped = arr
        if self.robot == "panda":
            return self._arm(clipped, st, people, now, action)
        return self._base(clipped, st, people, now, action)

    def _read_clock(self) -> float | None:
        if self._clock is None:
            return None
        try:
            value = real_array(self._clock(), ())
        except Exception:
            value = None
        if value is None:
            return math.inf  # a broken clock cannot vouch for freshness: the watchdog fires
        return float(value)

    def _sensed_people(self, state: dict, now: float, raw: Any) -> tuple[np.ndarray, np.ndarray] | None:
        """The people report (empty where none can be present), or None: stop."""
        if self._people is None:
            if not self._refused_logged:
                self._refused_logged = True
                self._event(
                    now,
                    "no_people_source",
                    raw,
                    None,
                    "motion refused: the robot neither senses people nor declares that none can be present",
                    "error",
                )
            return None
        report = read_people(state)
        if report is None and (self._people == "sensor" or "people" in state or "people_radius" in state):
            if self._ssm.dropout():
                self._event(
                    now, "protective_stop", raw, None, "people report missing or unbelievable (sensor dropout)", "error"
                )
            return None
        return report if report is not None else (np.zeros((0, 2)), np.zeros(0))

    # ---------------------------------------------------------------- brakes
    def _issue(self, values: np.ndarray) -> SafeCommand:
        return self._seal.issue(self.robot, values)

    def _brake(self, st: dict, reason: str) -> Stop:
        """The hardest stop the acceleration limits allow, from what the robot executes."""
        v0 = st["cmd_vel"]
        v1 = trajectory.brake_step(v0, self._rates, self._limits.control_dt)
        if self.robot == "diffbot":
            return Stop(reason, self._issue(np.array([v1[0], v1[1], self._done, v0[0], v0[1]])))
        return Stop(reason, self._issue(np.concatenate([st["joint_pos"], v0, v1, [self._grip]])))

    # ------------------------------------------------------------------- arm
    def _arm(
        self, a: np.ndarray, st: dict, people: tuple[np.ndarray, np.ndarray], now: float, raw: Any
    ) -> SafeCommand | Stop:
        lim, dt = self._limits.arm, self._limits.control_dt
        ee, q, v0 = st["ee_pos"], st["joint_pos"], st["cmd_vel"]
        d, dyaw, hits = arm_rules.limit_ee_step(a[:3] * self._scale[0], float(a[3] * self._scale[1]), lim, dt)
        d, h = arm_rules.limit_workspace(ee, d, lim)
        hits += h
        norm = max(math.sqrt(float(d @ d)), 1e-12)
        vel = st["ee_lin_vel"]
        allowed, event = self._ssm.allowed(
            *people, ee[:2], 0.1, (vel[0], vel[1]), (d[0] / norm, d[1] / norm), lim.ee_decel, lim.ee_speed_max, now
        )
        self._ssm_event(event, now, raw)
        if allowed is None:
            return self._brake(st, "protective stop: person inside Sp")
        if norm / dt > allowed + 1e-12:
            d = d * (allowed * dt / norm)
            hits.append("slowdown")
        self._grip = FINGER_OPEN if a[4] > 0 else 0.0
        if self._kinematics is None:
            return self._brake(st, "no kinematics for this arm")
        jac = self._jacobian_at(q)
        if jac is None:
            self._event(now, "reject", raw, None, "no finite Jacobian", "error")
            return self._brake(st, "no finite Jacobian")
        v_des = arm_rules.resolve(jac, q, st["ee_orn"], d, float(st["ee_yaw"]) + dyaw, lim, dt)
        v1, h = arm_rules.plan(q, v0, v_des, jac, ee, lim, dt, self._jacobian_at)
        hits += h
        issued = np.concatenate([q, v0, v1, [self._grip]])
        if hits:
            listed = issued.tolist()
            for rule in hits:
                self._event(now, rule, raw, listed, f"{rule.replace('_', ' ')} limit", "info")
        return self._issue(issued)

    def _jacobian_at(self, q: np.ndarray) -> np.ndarray | None:
        """The arm's Jacobian at joints q, checked like any input (None: cannot vouch)."""
        kinematics = self._kinematics
        if kinematics is None:
            return None
        try:
            # a Jacobian entry is metres or radians per radian: beyond JACOBIAN_MAX is a broken model
            return real_array(
                np.asarray(kinematics.jacobian(q.copy())),
                (6, 7),
                JACOBIAN_MAX,
            )  # (a copy: a model that writes into q cannot change the plan's start)
        except Exception:
            return None

    def _ssm_event(self, event: str, now: float, raw: Any) -> None:
        if event:
            rule, reason = event.split(":", 1)
            self._event(now, rule, raw, None, reason, "error" if rule == "protective_stop" else "info")

    # ------------------------------------------------------------------ base
    def _base(
        self, a: np.ndarray, st: dict, people: tuple[np.ndarray, np.ndarray], now: float, raw: Any
    ) -> SafeCommand | Stop:
        lim, dt = self._limits.base, self._limits.control_dt
        v, w, hits = base_rules.limit_speed(float(a[0] * self._scale[0]), float(a[1] * self._scale[1]), lim, dt)
        pose, v0 = st["base_pose"], st["cmd_vel"]
        c, s = math.cos(pose[2]), math.sin(pose[2])
        speed = float(st["base_vel"][0])
        sign = math.copysign(1.0, v) if v else 0.0
        allowed, event = self._ssm.allowed(
            *people, pose, lim.radius, (c * speed, s * speed), (c * sign, s * sign), lim.v_acc, lim.v_max, now
        )
        self._ssm_event(event, now, raw)
        if allowed is None:
            return self._brake(st, "protective stop: person inside Sp")
        if abs(v) > allowed + 1e-12:
            v = math.copysign(allowed, v)
            hits.append("slowdown")
        if self._foresight is not None and v != 0.0:
            v = self._foresee(a, v, now, raw)
        v, w, h = base_rules.limit_accel(v, w, v0, lim, dt)
        hits += h
        cmd, h = base_rules.limit_region(pose, v0, np.array([v, w]), lim, dt)
        hits += h
        listed = [float(cmd[0]), float(cmd[1]), self._done, float(v0[0]), float(v0[1])]
        for rule in hits:
            self._event(now, rule, raw, listed, f"{rule.replace('_', ' ')} limit", "info")
        return self._issue(np.array(listed))

    def _foresee(self, a: np.ndarray, v: float, now: float, raw: Any) -> float:
        """Slow or stop forward motion the world model predicts will collide; a predictor
        that fails or answers nonsense stops forward motion (the safe side)."""
        try:
            scale, p = self._foresight.speed_scale(a.copy())  # type: ignore[union-attr]
            scale, p = float(scale), float(p)
            ok = math.isfinite(scale) and math.isfinite(p) and 0.0 <= scale <= 1.0
        except Exception as exc:  # an advisory component must not take the supervisor down
            ok, why = False, f"{type(exc).__name__}: {exc}"[:120]
        else:
            why = f"answered scale={scale!r}, p={p!r}"
        if not ok:
            self._event(now, "foresight_fault", raw, None, f"foresight failed ({why}): forward motion stopped", "error")
            return 0.0
        if scale < 1.0:
            self._event(
                now,
                "foresight",
                raw,
                None,
                f"predicted collision ahead: forward speed x {scale:g} (p={p:.2f} at that speed)",
                "warning",
            )
        return v * scale


def _summary(action: Any) -> Any:
    """A small, loggable copy of whatever the policy sent (never raises)."""
    try:
        arr, _ = read_action(action, int(np.size(action)) if isinstance(action, (list, tuple, np.ndarray)) else 0)
        if arr is not None and arr.size <= 16:
            return tuple(arr.tolist())
        return repr(action)[:80]
    except Exception:
        return f"<{type(action).__name__}>"
