"""Arm rules, pure numpy: Cartesian speed and workspace, then joint position
(soft and hard), velocity and acceleration limits. Each returns the limited value
and the names of the rules that changed it."""

from __future__ import annotations

import numpy as np

from qrobot.safety.limits import ArmLimits


def limit_ee_step(d: np.ndarray, dyaw: float, lim: ArmLimits, dt: float) -> tuple[np.ndarray, float, list[str]]:
    """Cap the end-effector displacement and yaw change per control step."""
    hit = []
    cap = min(lim.ee_speed_max * dt, lim.ee_step_max)
    n = float(np.linalg.norm(d))
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
    lo, hi = np.asarray(lim.workspace_low), np.asarray(lim.workspace_high)
    out = d.copy()
    for i in range(3):
        if out[i] > 0:
            out[i] = min(out[i], max(hi[i] - ee[i], 0.0))
        elif out[i] < 0:
            out[i] = max(out[i], min(lo[i] - ee[i], 0.0))
    return out, (["workspace"] if not np.array_equal(out, d) else [])


def limit_joints(q: np.ndarray, dq: np.ndarray, prev_vel: np.ndarray, lim: ArmLimits,
                 dt: float) -> tuple[np.ndarray, list[str]]:
    """Limit a joint step dq (rad per control step) from measured positions q."""
    hit = []
    vmax = np.asarray(lim.joint_vel_max)
    amax = np.asarray(lim.joint_acc_max)
    lower, upper = np.asarray(lim.joint_lower), np.asarray(lim.joint_upper)
    # velocity: scale the whole step so the direction in joint space is kept
    ratio = np.abs(dq) / (vmax * dt)
    if ratio.max() > 1.0:
        dq = dq / ratio.max()
        hit.append("joint_velocity")
    # acceleration relative to the previous commanded velocity
    lo_a = (prev_vel - amax * dt) * dt
    hi_a = (prev_vel + amax * dt) * dt
    clipped = np.clip(dq, lo_a, hi_a)
    if not np.array_equal(clipped, dq):
        dq = clipped
        hit.append("joint_acceleration")
    # position: toward a limit, the step shrinks inside the soft margin and ends at the
    # hard limit; beyond a limit (start in violation) only motion back is allowed.
    room_up = upper - q
    room_down = q - lower
    m = max(lim.soft_margin, 1e-6)
    cap_up = np.maximum(room_up, 0.0) * np.clip(room_up / m, 0.0, 1.0)
    cap_down = np.maximum(room_down, 0.0) * np.clip(room_down / m, 0.0, 1.0)
    limited = np.clip(dq, -cap_down, cap_up)
    if not np.array_equal(limited, dq):
        dq = limited
        hit.append("joint_position")
    return dq, hit


def brake_joints(prev_vel: np.ndarray, lim: ArmLimits, dt: float) -> np.ndarray:
    """Next commanded joint velocity of a controlled stop: decelerate within limits."""
    amax = np.asarray(lim.joint_acc_max)
    return np.sign(prev_vel) * np.maximum(np.abs(prev_vel) - amax * dt, 0.0)
