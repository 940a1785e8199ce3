"""Mobile-base rules, pure numpy: speed, per-step distance, acceleration, map bounds and
keep-out zones. A period ramps (v, w) from what the base is executing to the issued
values (qrobot.safety.trajectory); the region rule looks at where the base comes to rest
if it is stopped after this period. Motion that worsens a violation is refused; motion
out of one is allowed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qrobot.safety import trajectory
from qrobot.safety.limits import BaseLimits

BISECTIONS = 10
# Plans keep the footprint this much further out of forbidden regions (m): wheel slip and
# the motors' tracking lag move the real base off the unicycle path by a few millimetres
# (measured at every substep by benchmarks/limit_conformance.py).
REGION_MARGIN = 0.01


def rates(lim: BaseLimits) -> np.ndarray:
    """Braking and acceleration rates of (v, w)."""
    return np.array([lim.v_acc, lim.w_acc])


def limit_speed(v: float, w: float, lim: BaseLimits, dt: float) -> tuple[float, float, list[str]]:
    hit = []
    vcap = min(lim.v_max, lim.step_max / dt)
    if abs(v) > vcap:
        v = math.copysign(vcap, v)
        hit.append("base_speed")
    if abs(w) > lim.w_max:
        w = math.copysign(lim.w_max, w)
        hit.append("base_angular_speed")
    return v, w, hit


def limit_accel(v: float, w: float, prev: np.ndarray, lim: BaseLimits, dt: float) -> tuple[float, float, list[str]]:
    pv, pw = float(prev[0]), float(prev[1])
    nv = min(max(v, pv - lim.v_acc * dt), pv + lim.v_acc * dt)
    nw = min(max(w, pw - lim.w_acc * dt), pw + lim.w_acc * dt)
    return nv, nw, (["base_acceleration"] if (nv, nw) != (v, w) else [])


def violation(x: float, y: float, lim: BaseLimits, margin: float = 0.0) -> float:
    """How deep (m) the footprint (grown by `margin`) is outside the map bounds or inside a keep-out zone."""
    r = lim.radius + margin
    (lx, ly), (hx, hy) = lim.bounds_low, lim.bounds_high
    depth = max(lx + r - x, ly + r - y, x - (hx - r), y - (hy - r), 0.0)
    for x0, y0, x1, y1 in lim.keep_out:
        depth = max(depth, min(x - (x0 - r), (x1 + r) - x, y - (y0 - r), (y1 + r) - y))
    return depth


PATH_SAMPLES = 12


def path(pose: np.ndarray, v0: np.ndarray, v1: np.ndarray, lim: BaseLimits, dt: float) -> list[tuple[float, float]]:
    """Points of the unicycle path of this period's ramp and of the stop after it (the
    period's plan, then n periods of proportional braking), in world coordinates."""
    tb = trajectory.brake_time(v1, rates(lim))
    n = math.ceil(tb / dt - 1e-9)
    t_end = dt * (1 + n)
    x, y, th = float(pose[0]), float(pose[1]), float(pose[2])
    a0, a1 = (float(v0[0]), float(v0[1])), (float(v1[0]), float(v1[1]))
    out, h, t = [], t_end / PATH_SAMPLES, 0.0
    for _ in range(PATH_SAMPLES):  # midpoint rule on (v, w) that are piecewise linear in t
        tm = t + h / 2
        if tm <= dt:
            f = tm / dt
            v, w = a0[0] + (a1[0] - a0[0]) * f, a0[1] + (a1[1] - a0[1]) * f
        else:
            f = max(0.0, 1.0 - (tm - dt) / (n * dt)) if n else 0.0
            v, w = a1[0] * f, a1[1] * f
        th_mid = th + w * h / 2
        x, y, th = x + v * h * math.cos(th_mid), y + v * h * math.sin(th_mid), th + w * h
        out.append((x, y))
        t += h
    return out


def limit_region(pose: np.ndarray, v0: np.ndarray, v1: np.ndarray, lim: BaseLimits,
                 dt: float) -> tuple[np.ndarray, list[str]]:
    """Shorten (v, w) so that no point of the path until rest enters (or goes deeper into)
    a forbidden region."""
    x, y = float(pose[0]), float(pose[1])
    now = violation(x, y, lim, REGION_MARGIN)
    n = math.ceil(trajectory.brake_time(v1, rates(lim)) / dt - 1e-9)
    reach_bound = (abs(float(v0[0])) + abs(float(v1[0])) * (1 + n)) * dt / 2 + 1e-6  # path length until rest
    if now <= 0.0 and violation(x, y, lim, reach_bound + REGION_MARGIN) <= 0.0:
        return v1, []  # nothing forbidden within any reachable distance: no path needed

    def ok(cmd: np.ndarray, region: BaseLimits = lim) -> bool:
        worst = max(violation(px, py, region, REGION_MARGIN) for px, py in path(pose, v0, cmd, lim, dt))
        return worst <= 0.0 or worst < now - 1e-9

    if ok(v1):
        return v1, []
    brake = trajectory.brake_step(v0, rates(lim), dt)  # the hardest stop allowed
    lo, hi = 0.0, 1.0
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(brake + mid * (v1 - brake)) else (lo, mid)
    in_bounds = ok(brake + hi * (v1 - brake), dataclasses.replace(lim, keep_out=()))
    return brake + lo * (v1 - brake), ["keep_out" if lim.keep_out and in_bounds else "bounds"]
