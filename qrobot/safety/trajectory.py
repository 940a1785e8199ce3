"""The motion a command describes, between control ticks, pure numpy.

A command plans one control period of length T: the velocity (joint or base) ramps
linearly from v0, where the previous plan ended, to v1. Accelerations are therefore
(v1 - v0) / T at every instant, and every velocity on the way is a convex combination
of v0 and v1, so any limit that holds for both (a speed box, a Jacobian norm) holds
throughout. If no new plan arrives when the period ends, the robot brakes on its own:
every component decelerates proportionally (the path is kept) at the braking rates,
so it stops after tb = max_i |v1_i| / a_i. Supervisor and backends use these same
functions: what the supervisor checks is what the motors are asked to do.
"""

from __future__ import annotations

import math

import numpy as np


def brake_time(v: np.ndarray, rates: np.ndarray) -> float:
    """Seconds a proportional brake at `rates` (per component, > 0) takes to stop from v."""
    return max(map(lambda a, r: abs(a) / r, v.tolist(), rates.tolist()), default=0.0)  # few elements: no ufuncs


def at(v0: np.ndarray, v1: np.ndarray, period: float, rates: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """(displacement, velocity) t seconds after the plan started: the ramp, then the brake."""
    t = max(t, 0.0)
    if t <= period:
        return v0 * t + (v1 - v0) * (t * t / (2 * period)), v0 + (v1 - v0) * (t / period)
    ramp = (v0 + v1) * (period / 2)
    tb = brake_time(v1, rates)
    s = t - period
    if tb <= 0.0 or s >= tb:
        return ramp + v1 * (tb / 2), np.zeros_like(v1)
    return ramp + v1 * (s - s * s / (2 * tb)), v1 * (1 - s / tb)


def brake_step(v: np.ndarray, rates: np.ndarray, period: float) -> np.ndarray:
    """End velocity of one period of the supervisor's controlled stop (proportional)."""
    tb = brake_time(v, rates)
    return v * max(0.0, 1.0 - period / tb) if tb > 0 else np.zeros_like(v)


def stopping_displacement(v0: np.ndarray, v1: np.ndarray, rates: np.ndarray, period: float) -> np.ndarray:
    """Displacement from now until rest: this period's ramp, then a stop issued one period
    at a time (n = ceil(tb / T) periods of proportional braking cover v1 * n T / 2)."""
    n = math.ceil(brake_time(v1, rates) / period - 1e-9)
    return (v0 + v1) * (period / 2) + v1 * (n * period / 2)
