"""Mobile-base rules, pure numpy: speed, per-step distance, acceleration, map
bounds and keep-out zones. Motion that worsens a violation is refused; motion out
of one is allowed."""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from qrobot.safety.limits import BaseLimits


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


def violation(x: float, y: float, lim: BaseLimits) -> float:
    """How deep (m) the footprint is outside the map bounds or inside a keep-out zone."""
    r = lim.radius
    (lx, ly), (hx, hy) = lim.bounds_low, lim.bounds_high
    depth = max(lx + r - x, ly + r - y, x - (hx - r), y - (hy - r), 0.0)
    for x0, y0, x1, y1 in lim.keep_out:
        depth = max(depth, min(x - (x0 - r), (x1 + r) - x, y - (y0 - r), (y1 + r) - y))
    return depth


def limit_region(pose: np.ndarray, v: float, lim: BaseLimits, dt: float) -> tuple[float, list[str]]:
    """Scale v so the stopping point does not enter (or go deeper into) a forbidden region."""
    x, y, yaw = float(pose[0]), float(pose[1]), float(pose[2])
    c, s = math.cos(yaw), math.sin(yaw)
    now = violation(x, y, lim)

    def ok(speed: float) -> bool:
        reach = speed * dt + math.copysign(speed * speed / (2 * lim.v_acc), speed)
        after = violation(x + c * reach, y + s * reach, lim)
        return after <= 0.0 or after < now - 1e-9

    if ok(v):
        return v, []
    lo, hi = 0.0, 1.0  # largest safe fraction of v (0 is always allowed: standing still)
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(v * mid) else (lo, mid)
    bounded = dataclasses.replace(lim, keep_out=())
    reach = v * hi * dt + math.copysign((v * hi) ** 2 / (2 * lim.v_acc), v)
    in_bounds = violation(x + c * reach, y + s * reach, bounded) <= 0.0
    return v * lo, ["keep_out" if lim.keep_out and in_bounds else "bounds"]


def brake_base(prev: np.ndarray, lim: BaseLimits, dt: float) -> np.ndarray:
    """Next (v, w) of a controlled stop: decelerate within limits to zero."""
    dec = np.array([lim.v_acc, lim.w_acc]) * dt
    return np.sign(prev) * np.maximum(np.abs(prev) - dec, 0.0)
