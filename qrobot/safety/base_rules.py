"""Mobile-base rules, pure numpy: speed, per-step distance, acceleration, map bounds and
keep-out zones. A period ramps (v, w) from what the base is executing to the issued
values (qrobot.safety.trajectory); the region rule looks at where the base comes to rest
if it is stopped after this period. Motion that worsens a violation is refused; motion
out of one is allowed."""

from __future__ import annotations

import math

import numpy as np

from qrobot.safety import trajectory
from qrobot.safety.limits import BaseLimits

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
    """How deep (m) the footprint (grown by `margin`) is outside the map bounds or inside a
    keep-out zone (scalar twin of `depths`, for one point)."""
    r = lim.radius + margin
    (lx, ly), (hx, hy) = lim.bounds_low, lim.bounds_high
    depth = max(lx + r - x, ly + r - y, x - (hx - r), y - (hy - r), 0.0)
    for x0, y0, x1, y1 in lim.keep_out:
        depth = max(depth, min(x - (x0 - r), (x1 + r) - x, y - (y0 - r), (y1 + r) - y))
    return depth


def depths(x: np.ndarray, y: np.ndarray, lim: BaseLimits, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per point: (depth outside the map bounds, depth inside the deepest keep-out zone),
    each >= 0 where the footprint grown by `margin` is clear."""
    r = lim.radius + margin
    (lx, ly), (hx, hy) = lim.bounds_low, lim.bounds_high
    out = np.maximum(np.maximum(lx + r - x, ly + r - y), np.maximum(x - (hx - r), y - (hy - r)))
    out = np.maximum(out, 0.0)
    inside = np.zeros_like(x)
    for x0, y0, x1, y1 in lim.keep_out:
        d = np.minimum(np.minimum(x - (x0 - r), (x1 + r) - x), np.minimum(y - (y0 - r), (y1 + r) - y))
        inside = np.maximum(inside, d)
    return out, inside


# Samples of the path until rest: the ramp (this period) and the brake after it. A stop
# from 0.5 m/s covers at most ~0.2 m, so samples lie a few cm apart; REGION_MARGIN covers that.
RAMP_SAMPLES, BRAKE_SAMPLES = 4, 8
# Plans tried between the hardest brake and the requested one. Acceleration limits keep
# that range within 2 * v_acc * dt (0.3 m/s by default): 1/32 of it is about 1 cm/s.
CANDIDATES = 32
_RAMP = ((np.arange(RAMP_SAMPLES) + 0.5) / RAMP_SAMPLES)[None, None, :]
_BRAKE = 1.0 - ((np.arange(BRAKE_SAMPLES) + 0.5) / BRAKE_SAMPLES)[None, None, :]
_SCALES = np.linspace(1.0, 0.0, CANDIDATES + 1)[:-1]  # requested plan first; scale 0 (the brake) needs no check


def paths(
    pose: np.ndarray, v0: np.ndarray, v1: np.ndarray, lim: BaseLimits, dt: float
) -> tuple[np.ndarray, np.ndarray]:
    """World (x, y) of points along the unicycle path of each plan in v1 (k, 2): this
    period's ramp from v0, then n periods of proportional braking until rest (midpoint
    rule on (v, w), which are linear in time within each part). Shapes (k, samples)."""
    v1 = np.atleast_2d(v1)
    n = np.ceil((np.abs(v1) / rates(lim)).max(axis=1) / dt - 1e-9)  # braking periods per plan
    end, start = v1[:, :, None], v0[:, None]
    d = np.concatenate(
        [
            (start + (end - start) * _RAMP) * (dt / RAMP_SAMPLES),  # (k, [v, w], samples) * h
            end * (_BRAKE * (dt / BRAKE_SAMPLES)) * n[:, None, None],
        ],
        axis=2,
    )
    turn = d[:, 1]
    heading = np.cumsum(turn, axis=1)
    heading -= 0.5 * turn
    heading += float(pose[2])
    xy = np.cumsum(d[:, 0] * np.exp(1j * heading), axis=1)  # complex plane: one exp, one cumsum
    return float(pose[0]) + xy.real, float(pose[1]) + xy.imag


def limit_region(
    pose: np.ndarray, v0: np.ndarray, v1: np.ndarray, lim: BaseLimits, dt: float
) -> tuple[np.ndarray, list[str]]:
    """The largest plan between the hardest allowed brake and v1 whose path until rest
    enters no forbidden region (or, already inside one, goes no deeper)."""
    x, y = float(pose[0]), float(pose[1])
    now = violation(x, y, lim, REGION_MARGIN)
    n = math.ceil(trajectory.brake_time(v1, rates(lim)) / dt - 1e-9)
    reach_bound = (abs(float(v0[0])) + abs(float(v1[0])) * (1 + n)) * dt / 2 + 1e-6  # path length until rest
    if now <= 0.0 and violation(x, y, lim, reach_bound + REGION_MARGIN) <= 0.0:
        return v1, []  # nothing forbidden within any reachable distance: no path needed
    brake = trajectory.brake_step(v0, rates(lim), dt)  # the hardest stop allowed: always permitted
    px, py = paths(pose, v0, brake + _SCALES[:, None] * (v1 - brake), lim, dt)
    walls, zones = depths(px, py, lim, REGION_MARGIN)
    worst_walls, worst = walls.max(axis=1), np.maximum(walls, zones).max(axis=1)
    ok = (worst <= 0.0) | (worst < now - 1e-9)
    if ok[0]:
        return v1, []
    scale = float(_SCALES[ok.argmax()]) if ok.any() else 0.0
    walls_ok = worst_walls[0] <= 0.0 or worst_walls[0] < now - 1e-9
    return brake + scale * (v1 - brake), ["keep_out" if lim.keep_out and walls_ok else "bounds"]
