"""Speed and separation monitoring (ISO/TS 15066, clause 5.5.4), pure numpy.

Sp = Sh + Sr + Ss + C + Zd + Zr
Sh = v_h * (T_r + T_s)   human motion while the robot reacts and stops
Sr = v_r * T_r           robot motion during its reaction time
Ss = v_r^2 / (2 a)       robot stopping distance at deceleration a (T_s = v_r / a)
C, Zd, Zr                intrusion distance, human and robot position uncertainty
"""

from __future__ import annotations

import math

import numpy as np

from qrobot.safety.limits import SSMParams


def protective_distance(p: SSMParams, robot_speed, decel: float):  # float or array in, same out
    """Sp for a robot moving at `robot_speed` (m/s, scalar or array) that brakes at `decel`."""
    if not decel > 0:
        return math.inf
    v = abs(robot_speed)
    ts = v / decel
    sh = p.human_speed * (p.reaction_time + ts)
    sr = v * p.reaction_time
    ss = v * v / (2 * decel)
    return sh + sr + ss + p.intrusion_distance + p.human_uncertainty + p.robot_uncertainty


def max_safe_speed(p: SSMParams, separation: float, decel: float, v_cap: float, band: float = 0.0) -> float:
    """The largest speed v <= v_cap with Sp(v) + band * v / v_cap <= separation (0 if none).

    The band term is the warning band: the robot keeps a buffer that grows with its
    speed, so it slows down smoothly before it would have to stop.
    Sp(v) = v^2/(2a) + v (T_r + v_h/a) + Sp(0): solve the quadratic.
    """
    if not math.isfinite(separation):
        return v_cap if separation == math.inf else 0.0
    if not (math.isfinite(decel) and decel > 0):
        return 0.0
    base = protective_distance(p, 0.0, decel)
    room = separation - base
    if room <= 0:
        return 0.0
    a2 = 0.5 / decel
    b = p.reaction_time + p.human_speed / decel + (band / v_cap if v_cap > 0 else 0.0)
    v = (-b + math.sqrt(b * b + 4 * a2 * room)) / (2 * a2)
    return float(min(max(v, 0.0), v_cap))


def lookahead(p: SSMParams, robot_speed: float) -> float:
    """How much the separation can shrink before the next decision takes effect:
    a discrete-time supervisor must act on the separation one reaction time ahead."""
    return (p.human_speed + abs(robot_speed)) * p.reaction_time


class SeparationMonitor:
    """The protective-stop state machine over ISO/TS 15066 separations: stop when any
    person is inside Sp, resume only after the area has been clear for `clear_hold_time`;
    otherwise the largest speed toward each person that keeps Sp (with the warning band).
    A sensor dropout is a protective stop too."""

    def __init__(self, params: SSMParams, dt: float) -> None:
        self.p, self.dt = params, dt
        self.reset()

    def reset(self) -> None:
        self.protective = False
        self.clear_since: float | None = None
        self.protective_time = 0.0

    def dropout(self) -> bool:
        """Call when the people report is missing or unbelievable; True on its onset."""
        onset = not self.protective
        self.protective, self.clear_since = True, None
        self.protective_time += self.dt
        return onset

    def allowed(
        self,
        pts: np.ndarray,
        radii: np.ndarray,
        xy: np.ndarray,
        radius: float,
        vel: tuple[float, float],
        direction: tuple[float, float],
        decel: float,
        v_cap: float,
        now: float,
    ) -> tuple[float | None, str]:
        """(speed allowed along `direction`, or None for a protective stop; event: "" |
        "protective_stop" | "resume"). Directed SSM: Sr and Ss use the robot's speed toward
        each person, Sh always counts; separations are taken one reaction time ahead."""
        p = self.p
        if not p.enabled or len(pts) == 0:
            if self.protective and p.enabled:
                speed, event = self._hold_clear(now)
                return (None, event) if speed is None else (v_cap, event)
            return v_cap, ""
        x0, y0, vx, vy = float(xy[0]), float(xy[1]), float(vel[0]), float(vel[1])
        dx, dy = float(direction[0]), float(direction[1])
        ahead = lookahead(p, math.hypot(vx, vy))
        sp0 = protective_distance(p, 0.0, decel)
        near = []  # (separation, Sp for the robot's closing speed, closing share of the command)
        for (px, py), r in zip(pts.tolist(), radii.tolist()):
            rx, ry = px - x0, py - y0
            d = max(math.hypot(rx, ry), 1e-9)
            ux, uy = rx / d, ry / d
            near.append(
                (d - radius - r - ahead, protective_distance(p, max(ux * vx + uy * vy, 0.0), decel), ux * dx + uy * dy)
            )
        if self.protective:
            if all(sep > sp0 for sep, _, _ in near):
                speed, event = self._hold_clear(now)
                if speed is None:
                    return None, ""
            else:
                self.clear_since = None
                self.protective_time += self.dt
                return None, ""
        else:
            event = ""
            worst = min(near, key=lambda n: n[0] - n[1])
            if worst[0] < worst[1]:
                self.protective, self.clear_since = True, None
                self.protective_time += self.dt
                return None, f"protective_stop:separation {worst[0]:.2f} m < Sp {worst[1]:.2f} m"
        allowed = v_cap
        for sep, _, c in near:
            if c > 1e-6:  # this command closes in on that person
                allowed = min(allowed, max_safe_speed(p, sep, decel, v_cap, p.warning_band) / c)
        return allowed, event

    def _hold_clear(self, now: float) -> tuple[float | None, str]:
        self.clear_since = now if self.clear_since is None else self.clear_since
        if now - self.clear_since < self.p.clear_hold_time - 1e-9:
            self.protective_time += self.dt
            return None, ""
        self.protective = False
        return math.inf, f"resume:area clear for {self.p.clear_hold_time} s"
