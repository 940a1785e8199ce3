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


def max_safe_speed(p: SSMParams, separation: float, decel: float, v_cap: float,
                   band: float = 0.0) -> float:
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
