"""The supervisor: the only road from a policy action to a robot command.

Pure numpy and total: `filter` never raises. Anything it cannot vouch for
becomes a `Stop` carrying a controlled-stop (IEC 60204-1 category 1) command;
every intervention is an `Event`.

Order of checks each control period:
  sensors (finite, timestamp advancing, dt > 0)  -> fault: latched e-stop
  watchdog (valid command within the deadline)     -> latched e-stop
  e-stop latched                                   -> brake, then hold
  command (type, shape, finite)                    -> reject: brake
  re-arm after an operator reset (neutral command first)
  robot rules (arm: Cartesian, workspace, SSM, IK, joints; base: speed, SSM,
  bounds/keep-out, acceleration)                   -> SafeCommand
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

import numpy as np

from qrobot.safety import arm_rules, base_rules
from qrobot.safety.command import SafeCommand, Stop, mint
from qrobot.safety.limits import Limits
from qrobot.safety.ssm import lookahead, max_safe_speed, protective_distance

class Kinematics(Protocol):
    """What the supervisor needs from an arm backend (queries, not actuation)."""

    def ik(self, target: np.ndarray, yaw: float) -> np.ndarray: ...

    def jacobian(self, q: np.ndarray) -> np.ndarray: ...


class Foresight(Protocol):
    """A predictor of where an action leads (the world model): the largest forward-speed
    scale in [0, 1] it judges collision-free, and the collision probability at that scale."""

    def speed_scale(self, action: np.ndarray) -> tuple[float, float]: ...

_SENSORS = {"panda": ("joint_pos", "joint_vel", "ee_pos", "ee_yaw"), "diffbot": ("base_pose", "base_vel")}
_DIM = {"panda": 5, "diffbot": 3}
FINGER_OPEN = 0.04


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


def _finite(x: Any) -> bool:
    """All finite (a sum overflowing to inf is treated as non-finite: the safe side)."""
    if isinstance(x, float):
        return math.isfinite(x)
    try:
        arr = x if isinstance(x, np.ndarray) and x.dtype == np.float64 else np.asarray(x, dtype=np.float64)
        return math.isfinite(float(arr.sum()))
    except (TypeError, ValueError, OverflowError):
        return False


class Supervisor:
    """Checks every action for one robot against a limits profile."""

    def __init__(self, limits: Limits, action_scale: tuple[float, ...],
                 kinematics: Kinematics | None = None, operator: OperatorKey | None = None,
                 foresight: Foresight | None = None) -> None:
        self.limits = limits
        self.robot = limits.robot
        self.dim = _DIM[self.robot]
        self.scale = np.asarray(action_scale, dtype=np.float64)
        self.kinematics = kinematics
        self.foresight = foresight
        key = operator or OperatorKey()  # no key given: nobody can reset this latch
        self._key_hash = hashlib.sha256(key.secret).digest()
        self.events: list[Event] = []
        self.reset()

    # --------------------------------------------------------------- episode
    def reset(self) -> None:
        """New episode (a new simulated world): clears latches, history and events."""
        self.events.clear()
        self.latched: str | None = None
        self.needs_rearm = False
        self.protective = False
        self._clear_since: float | None = None
        self._last_time: float | None = None
        self._last_valid: float | None = None
        self._prev = np.zeros(7 if self.robot == "panda" else 2)  # commanded velocity
        self._grip = FINGER_OPEN
        self._done = 0.0  # base: the policy's validated "I am at the goal" flag (not motion)
        self.protective_time = 0.0
        self.estops = 0

    # ------------------------------------------------------------- operator
    def estop(self, reason: str = "operator e-stop", time: float | None = None) -> None:
        """Latch the e-stop (API call, GUI key, watchdog or fault)."""
        if self.latched is None:
            self.latched = reason
            self.estops += 1
            self._event(time, "estop", None, None, reason, "critical")

    def reset_estop(self, key: Any, time: float | None = None) -> bool:
        """Release the latch: only with the operator key, and motion needs a fresh
        neutral command afterwards (a release never restarts motion)."""
        secret = getattr(key, "secret", None)
        if not isinstance(secret, bytes) or not hmac.compare_digest(
                hashlib.sha256(secret).digest(), self._key_hash):
            self._event(time, "reset_refused", None, None, "e-stop reset without the operator key", "error")
            return False
        if self.latched is not None:
            self._event(time, "reset", None, None, f"operator released e-stop ({self.latched})", "warning")
        self.latched = None
        self.needs_rearm = True
        return True

    # ---------------------------------------------------------------- events
    def _event(self, time: float | None, rule: str, raw: Any, issued: Any, reason: str,
               severity: str = "warning") -> None:
        t = float(time) if isinstance(time, (int, float)) and math.isfinite(time) else \
            (self._last_time if self._last_time is not None else 0.0)
        self.events.append(Event(t, rule, _summary(raw), issued, reason, severity))

    def counts(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in self.events:
            out[e.rule] = out.get(e.rule, 0) + 1
        out["interventions"] = float(len(self.events))
        out["estops"] = float(self.estops)
        out["protective_stop_time"] = round(self.protective_time, 6)
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
        dt = self.limits.control_dt
        fault = self._sensor_fault(state)
        if fault:
            self.estop(fault)
            return self._brake(state if isinstance(state, dict) else {}, fault)
        now = float(state["time"])
        if self._last_valid is None:
            self._last_valid = now
        raw = action  # summarised only if an event needs it
        arr = self._validate(action)
        self._done = 0.0
        if arr is None:
            if now - self._last_valid >= self.limits.watchdog_periods * dt - 1e-9:
                self.estop(f"watchdog: no valid command for {now - self._last_valid:.3f} s")
            elif action is not None:
                self._event(now, "reject", raw, None, _why_invalid(action, self.dim), "error")
            return self._brake(state, self.latched or "invalid command")
        self._last_valid = now
        if self.robot == "diffbot":
            self._done = 1.0 if arr[2] > 0.5 else 0.0
        if self.latched is not None:
            return self._brake(state, f"e-stop latched: {self.latched}")
        if self.needs_rearm:
            motion = arr[:2] if self.robot == "diffbot" else arr[:4]
            if np.all(np.abs(motion) <= 1e-3):
                self.needs_rearm = False
                self._event(now, "rearm", raw, None, "neutral command after reset: motion enabled", "info")
            else:
                self._event(now, "reject", raw, None, "after a reset, send a neutral command first", "warning")
            return self._brake(state, "awaiting a fresh neutral command")
        if np.abs(arr).max() > 1.0:
            clipped = np.clip(arr, -1.0, 1.0)
            self._event(now, "clamp", raw, clipped.tolist(), "action outside [-1, 1]", "info")
        else:
            clipped = arr
        if self.robot == "panda":
            return self._arm(clipped, state, now, raw)
        return self._base(clipped, state, now, raw)

    def _sensor_fault(self, state: Any) -> str | None:
        if not isinstance(state, dict):
            return "sensor fault: no robot state"
        for key in (*_SENSORS[self.robot], "time"):
            if key not in state or not _finite(state[key]):
                return f"sensor fault: {key} missing or non-finite"
        if "people" in state and not _finite(state["people"]):
            return "sensor fault: people positions non-finite"
        now = float(state["time"])
        if self._last_time is not None:
            step = now - self._last_time
            if not step > 0:
                return f"sensor fault: stale data (timestamp advanced {step:.3g} s)"
        self._last_time = now
        return None

    def _validate(self, action: Any) -> np.ndarray | None:
        if action is None or isinstance(action, (str, bytes, dict)) or np.iscomplexobj(action):
            return None
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            return None
        if arr.shape != (self.dim,) or not np.all(np.isfinite(arr)):
            return None
        return arr

    # ---------------------------------------------------------------- brakes
    def _brake(self, state: dict, reason: str) -> Stop:
        dt = self.limits.control_dt
        if self.robot == "diffbot":
            self._prev = base_rules.brake_base(self._prev, self.limits.base, dt)
            return Stop(reason, mint(self.robot, np.array([*self._prev, self._done])))
        self._prev = arm_rules.brake_joints(self._prev, self.limits.arm, dt)
        q = state.get("joint_pos")
        if not _finite(q) or np.shape(q) != (7,):
            return Stop(reason)  # no trustworthy joint state: the backend holds where it is
        return Stop(reason, mint(self.robot, self._arm_values(np.asarray(q, dtype=np.float64), self._prev * dt)))

    def _arm_values(self, q: np.ndarray, dq: np.ndarray) -> np.ndarray:
        """[7 joint targets, finger width, 7 joint speed caps]: the motors may not go
        faster than this step needs, so the measured speed stays within the limits."""
        cap = np.minimum(np.abs(dq) / self.limits.control_dt + 0.005, self.limits.arm.joint_vel_max)
        return np.concatenate([q + dq, [self._grip], cap])

    # ------------------------------------------------------------------- SSM
    def _ssm(self, state: dict, xy: Any, radius: float, vel: Any, direction: Any,
             decel: float, v_cap: float, now: float, raw: Any) -> float | None:
        """Speed allowed along `direction` near people, or None for a protective stop.

        Directed SSM: Sr and Ss use the robot's speed toward each person; Sh (a person
        closing at 1.6 m/s) always counts. Separations are taken one reaction time ahead.
        """
        p = (self.limits.arm if self.robot == "panda" else self.limits.base).ssm
        people = state.get("people")
        if not p.enabled or people is None or np.size(people) == 0:
            return v_cap
        pts = np.asarray(people, dtype=np.float64).reshape(-1, 2).tolist()  # a few people: plain floats
        r = state.get("people_radius", 0.25)
        radii = [float(r)] * len(pts) if np.ndim(r) == 0 else np.asarray(r, dtype=np.float64).reshape(-1).tolist()
        if len(radii) != len(pts) or not all(map(math.isfinite, radii)):
            radii = [0.6] * len(pts)  # inconsistent sensor report: assume large people
        x0, y0, vx, vy = float(xy[0]), float(xy[1]), float(vel[0]), float(vel[1])
        dx, dy = float(direction[0]), float(direction[1])
        ahead = lookahead(p, math.hypot(vx, vy))
        sp0 = protective_distance(p, 0.0, decel)
        near = []  # (separation, Sp for the robot's closing speed, closing share of the command)
        for (px, py), r in zip(pts, radii):
            rx, ry = px - x0, py - y0
            d = max(math.hypot(rx, ry), 1e-9)
            ux, uy = rx / d, ry / d
            near.append((d - radius - r - ahead, protective_distance(p, max(ux * vx + uy * vy, 0.0), decel),
                         ux * dx + uy * dy))
        if self.protective:
            if all(sep > sp0 for sep, _, _ in near):
                self._clear_since = now if self._clear_since is None else self._clear_since
                if now - self._clear_since < p.clear_hold_time - 1e-9:
                    self.protective_time += self.limits.control_dt
                    return None
                self.protective = False
                self._event(now, "resume", raw, None, f"area clear for {p.clear_hold_time} s", "info")
            else:
                self._clear_since = None
                self.protective_time += self.limits.control_dt
                return None
        else:
            worst = min(near, key=lambda n: n[0] - n[1])
            if worst[0] < worst[1]:
                self.protective = True
                self._clear_since = None
                self._event(now, "protective_stop", raw, None,
                            f"separation {worst[0]:.2f} m < Sp {worst[1]:.2f} m", "error")
                self.protective_time += self.limits.control_dt
                return None
        allowed = v_cap
        for sep, _, c in near:
            if c > 1e-6:  # this command closes in on that person
                allowed = min(allowed, max_safe_speed(p, sep, decel, v_cap, p.warning_band) / c)
        return allowed

    # ------------------------------------------------------------------- arm
    def _arm(self, a: np.ndarray, state: dict, now: float, raw: Any) -> SafeCommand | Stop:
        lim, dt = self.limits.arm, self.limits.control_dt
        ee = np.asarray(state["ee_pos"], dtype=np.float64)
        d, dyaw, hits = arm_rules.limit_ee_step(a[:3] * self.scale[0], float(a[3] * self.scale[1]), lim, dt)
        d, h = arm_rules.limit_workspace(ee, d, lim)
        hits += h
        norm = max(math.sqrt(float(d @ d)), 1e-12)
        if "people" in state:
            vel = np.asarray(state.get("ee_lin_vel", np.zeros(3)), dtype=np.float64)
            allowed = self._ssm(state, ee[:2], 0.1, vel[:2], d[:2] / norm, lim.ee_decel, lim.ee_speed_max,
                                now, raw)
            if allowed is None:
                return self._brake(state, "protective stop: person inside Sp")
            if norm / dt > allowed + 1e-12:
                d = d * (allowed * dt / norm)
                hits.append("slowdown")
        self._grip = FINGER_OPEN if a[4] > 0 else 0.0
        q = np.asarray(state["joint_pos"], dtype=np.float64)
        if self.kinematics is None:
            return self._brake(state, "no kinematics for this arm")
        target = self.kinematics.ik(ee + d, float(state["ee_yaw"]) + dyaw)
        jac = self.kinematics.jacobian(q)
        if not _finite(target) or np.shape(target) != (7,) or not _finite(jac) or np.shape(jac) != (6, 7):
            self._event(now, "reject", raw, None, "no finite IK solution", "error")
            return self._brake(state, "no finite IK solution")
        jac = np.asarray(jac, dtype=np.float64)
        dq, h = arm_rules.limit_joints(q, np.asarray(target, dtype=np.float64) - q, self._prev, lim, dt, jac)
        hits += h
        dq, h = arm_rules.limit_workspace_joint_space(ee, dq, jac, lim)
        hits += h
        self._prev = dq / dt
        issued = self._arm_values(q, dq)
        if hits:
            listed = issued.tolist()
            for rule in hits:
                self._event(now, rule, raw, listed, f"{rule.replace('_', ' ')} limit", "info")
        return mint(self.robot, issued)

    # ------------------------------------------------------------------ base
    def _base(self, a: np.ndarray, state: dict, now: float, raw: Any) -> SafeCommand | Stop:
        lim, dt = self.limits.base, self.limits.control_dt
        v, w, hits = base_rules.limit_speed(float(a[0] * self.scale[0]), float(a[1] * self.scale[1]), lim, dt)
        pose = np.asarray(state["base_pose"], dtype=np.float64)
        c, s = math.cos(pose[2]), math.sin(pose[2])
        speed = float(state["base_vel"][0])
        sign = math.copysign(1.0, v) if v else 0.0
        allowed = self._ssm(state, pose, lim.radius, (c * speed, s * speed), (c * sign, s * sign),
                            lim.v_acc, lim.v_max, now, raw)
        if allowed is None:
            return self._brake(state, "protective stop: person inside Sp")
        if abs(v) > allowed + 1e-12:
            v = math.copysign(allowed, v)
            hits.append("slowdown")
        if self.foresight is not None and v != 0.0:
            v = self._foresee(a, v, now, raw)
        v, h = base_rules.limit_region(pose, v, lim, dt)
        hits += h
        v, w, h = base_rules.limit_accel(v, w, self._prev, lim, dt)
        hits += h
        self._prev = np.array([v, w])
        issued = np.array([v, w, self._done])
        for rule in hits:
            self._event(now, rule, raw, issued.tolist(), f"{rule.replace('_', ' ')} limit", "info")
        return mint(self.robot, issued)

    def _foresee(self, a: np.ndarray, v: float, now: float, raw: Any) -> float:
        """Slow or stop forward motion the world model predicts will collide; a predictor
        that fails or answers nonsense stops forward motion (the safe side)."""
        try:
            scale, p = self.foresight.speed_scale(a)  # type: ignore[union-attr]
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
            self._event(now, "foresight", raw, None,
                        f"predicted collision ahead: forward speed x {scale:g} (p={p:.2f} at that speed)", "warning")
        return v * scale


def _summary(action: Any) -> Any:
    """A small, loggable copy of whatever the policy sent."""
    if np.iscomplexobj(action):
        return repr(action)[:80]
    try:
        arr = np.asarray(action, dtype=np.float64)
        if arr.size <= 16:
            return arr.tolist()
    except (TypeError, ValueError, OverflowError):
        pass
    return repr(action)[:80]


def _why_invalid(action: Any, dim: int) -> str:
    if isinstance(action, (str, bytes, dict)):
        return f"action of type {type(action).__name__} is not a numeric array"
    try:
        arr = np.asarray(action, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return f"action of type {type(action).__name__} is not numeric"
    if np.iscomplexobj(action):
        return "complex-valued action"
    if arr.shape != (dim,):
        return f"action shape {arr.shape} != ({dim},)"
    return "non-finite action"
