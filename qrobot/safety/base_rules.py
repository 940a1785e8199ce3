"""Mobile-base rules, pure numpy: speed, per-step distance, acceleration, map
bounds and keep-out zones. Motion that worsens a violation is refused; motion out
of one is allowed."""

from __future__ import annotations

import numpy as np

from qrobot.safety.limits import BaseLimits


def limit_speed(v: float, w: float, lim: BaseLimits, dt: float) -> tuple[float, float, list[str]]:
    hit = []
    vcap = min(lim.v_max, lim.step_max / dt)
    if abs(v) > vcap:
        v = float(np.sign(v) * vcap)
        hit.append("base_speed")
    if abs(w) > lim.w_max:
        w = float(np.sign(w) * lim.w_max)
        hit.append("base_angular_speed")
    return v, w, hit


def limit_accel(v: float, w: float, prev: np.ndarray, lim: BaseLimits, dt: float) -> tuple[float, float, list[str]]:
    nv = float(np.clip(v, prev[0] - lim.v_acc * dt, prev[0] + lim.v_acc * dt))
    nw = float(np.clip(w, prev[1] - lim.w_acc * dt, prev[1] + lim.w_acc * dt))
    return nv, nw, (["base_acceleration"] if (nv, nw) != (v, w) else [])


def violation(xy: np.ndarray, lim: BaseLimits) -> float:
    """How deep (m) the footprint is outside the map bounds or inside a keep-out zone."""
    r = lim.radius
    lo = np.asarray(lim.bounds_low) + r
    hi = np.asarray(lim.bounds_high) - r
    depth = float(np.max(np.concatenate([lo - xy, xy - hi, [0.0]])))
    for x0, y0, x1, y1 in lim.keep_out:
        inside = min(xy[0] - (x0 - r), (x1 + r) - xy[0], xy[1] - (y0 - r), (y1 + r) - xy[1])
        depth = max(depth, inside)
    return depth


def limit_region(pose: np.ndarray, v: float, lim: BaseLimits, dt: float) -> tuple[float, list[str]]:
    """Scale v so the stopping point does not enter (or go deeper into) a forbidden region."""
    heading = np.array([np.cos(pose[2]), np.sin(pose[2])])
    now = violation(pose[:2], lim)

    def ok(speed: float) -> bool:
        reach = speed * dt + np.sign(speed) * speed * speed / (2 * lim.v_acc)
        after = violation(pose[:2] + heading * reach, lim)
        return after <= 0.0 or after < now - 1e-9

    if ok(v):
        return v, []
    lo, hi = 0.0, 1.0  # largest safe fraction of v (0 is always allowed: standing still)
    for _ in range(12):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ok(v * mid) else (lo, mid)
    return v * lo, ["keep_out" if lim.keep_out and now <= 0 and _in_bounds(pose, v * hi, lim, dt) else "bounds"]


def _in_bounds(pose: np.ndarray, v: float, lim: BaseLimits, dt: float) -> bool:
    heading = np.array([np.cos(pose[2]), np.sin(pose[2])])
    p = pose[:2] + heading * (v * dt + np.sign(v) * v * v / (2 * lim.v_acc))
    r = lim.radius
    return bool(np.all(p >= np.asarray(lim.bounds_low) + r) and np.all(p <= np.asarray(lim.bounds_high) - r))


def brake_base(prev: np.ndarray, lim: BaseLimits, dt: float) -> np.ndarray:
    """Next (v, w) of a controlled stop: decelerate within limits to zero."""
    dec = np.array([lim.v_acc, lim.w_acc]) * dt
    return np.sign(prev) * np.maximum(np.abs(prev) - dec, 0.0)
