"""Arm rules, pure numpy. The Cartesian step a policy asks for is capped and kept in the
workspace; IK turns it into a desired joint velocity; `plan` then chooses the velocity
v1 the period ramps to (see qrobot.safety.trajectory) so that, at every instant of the
period and of the stop that may follow it, joint speeds, joint accelerations, the
end-effector's linear and angular speed, the joint limits and the workspace box hold.
Each function returns the limited value and the names of the rules that changed it."""

from __future__ import annotations

import math

import numpy as np

from qrobot.safety import trajectory
from qrobot.safety.limits import ArmLimits

BISECTIONS = 12
# The plan keeps this share of each speed and acceleration limit: the Jacobian changes
# within a period and the motors track the ramp with a small lag (measured by
# benchmarks/limit_conformance.py at every physics substep).
PLAN_MARGIN = 0.97


def limit_ee_step(d: np.ndarray, dyaw: float, lim: ArmLimits, dt: float) -> tuple[np.ndarray, float, list[str]]:
    """Cap the end-effector displacement and yaw change asked for one control period."""
    hit = []
    cap = min(lim.ee_speed_max * dt, lim.ee_step_max)
    n = math.sqrt(float(d @ d))
    if n > cap:
        d = d * (cap / n)
        hit.append("ee_speed")
    ycap = lim.ee_ang_speed_max * dt
    if abs(dyaw) > ycap:
        dyaw = float(np.sign(dyaw) * ycap)
        hit.append("ee_angular_speed")
    return d, dyaw, hit


def limit_workspace(ee: np.ndarray, d: np.ndarray, lim: ArmLimits) -> tuple[np.ndarray, list[str]]:
    """Per axis: motion out of the box stops at its face; already outside, only
    motion back toward the box is allowed."""
    out = np.minimum(np.maximum(d, np.minimum(lim.ws_low - ee, 0.0)), np.maximum(lim.ws_high - ee, 0.0))
    return out, (["workspace"] if (out != d).any() else [])


def _cap_speed(q: np.ndarray, v: np.ndarray, jac: np.ndarray, lim: ArmLimits, dt: float) -> tuple[np.ndarray, list[str]]:
    """Joint speed (soft margin: slower toward a limit), then the end-effector's linear
    and angular speed through the Jacobian. Uniform scaling keeps the direction."""
    hit = []
    worst = float(np.max(np.abs(v) / lim.vmax))
    if worst > 1.0:
        v = v / worst
        hit.append("joint_velocity")
    m = max(lim.soft_margin, 1e-6)
    toward = np.where(v > 0, lim.upper - q, q - lim.lower)
    cap = lim.vmax * np.clip(toward / m, 0.0, 1.0)
    if np.any(np.abs(v) > cap):
        v = np.clip(v, -cap, cap)
        hit.append("joint_position")
    lin, ang = jac[:3] @ v, jac[3:] @ v
    n_lin, n_ang = math.sqrt(float(lin @ lin)), math.sqrt(float(ang @ ang))
    v_cap = PLAN_MARGIN * min(lim.ee_speed_max, lim.ee_step_max / dt)
    w_cap = PLAN_MARGIN * lim.ee_ang_speed_max
    scale = min(1.0, v_cap / n_lin if n_lin > 0 else 1.0, w_cap / n_ang if n_ang > 0 else 1.0)
    if scale < 1.0:
        v = v * scale
        hit.append("ee_speed_joint_space")
    return v, hit


def _cap_acceleration(v0: np.ndarray, v1: np.ndarray, lim: ArmLimits, dt: float) -> tuple[np.ndarray, list[str]]:
    """Move toward v1 only as far as every joint's acceleration allows, on the segment
    from v0 (a convex combination keeps what holds for both ends)."""
    dv = v1 - v0
    worst = float(np.max(np.abs(dv) / (PLAN_MARGIN * lim.amax * dt)))
    if worst > 1.0:
        return v0 + dv / worst, ["joint_acceleration"]
    return v1, []


def _violations(q: np.ndarray, ee: np.ndarray, jac: np.ndarray, v0: np.ndarray, v1: np.ndarray,
                lim: ArmLimits, dt: float) -> list[str]:
    """Which position limits the period plus the stop after it would break (a limit
    already broken may not get worse)."""
    disp = trajectory.stopping_displacement(v0, v1, lim.amax, dt)
    qf = q + disp
    out = []
    if np.any(qf > np.maximum(lim.upper, q) + 1e-12) or np.any(qf < np.minimum(lim.lower, q) - 1e-12):
        out.append("joint_position")
    pf = ee + jac[:3] @ disp
    if np.any(pf > np.maximum(lim.ws_high, ee) + 1e-12) or np.any(pf < np.minimum(lim.ws_low, ee) - 1e-12):
        out.append("workspace_joint_space")
    return out


def plan(q: np.ndarray, v0: np.ndarray, v_des: np.ndarray, jac: np.ndarray, ee: np.ndarray,
         lim: ArmLimits, dt: float) -> tuple[np.ndarray, list[str]]:
    """The joint velocity v1 this period ramps to, from v0 (what the arm is executing)."""
    v, hits = _cap_speed(q, v_des, jac, lim, dt)
    v, h = _cap_acceleration(v0, v, lim, dt)
    hits += h
    bad = _violations(q, ee, jac, v0, v, lim, dt)
    if not bad:
        return v, hits
    # shorten toward the hardest brake the acceleration limits allow, which the last
    # period's plan kept feasible
    brake = trajectory.brake_step(v0, lim.amax, dt)
    lo, hi = 0.0, 1.0
    for _ in range(BISECTIONS):
        mid = (lo + hi) / 2
        if _violations(q, ee, jac, v0, brake + mid * (v - brake), lim, dt):
            hi = mid
        else:
            lo = mid
    return brake + lo * (v - brake), hits + bad
