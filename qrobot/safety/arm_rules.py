"""Arm rules, pure numpy: Cartesian speed and workspace, then joint position
(soft and hard), velocity and acceleration limits. Each returns the limited value
and the names of the rules that changed it."""

from __future__ import annotations

import math

import numpy as np

from qrobot.safety.limits import ArmLimits


def limit_ee_step(d: np.ndarray, dyaw: float, lim: ArmLimits, dt: float) -> tuple[np.ndarray, float, list[str]]:
    """Cap the end-effector displacement and yaw change per control step."""
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


def limit_joints(q: np.ndarray, dq: np.ndarray, prev_vel: np.ndarray, lim: ArmLimits,
                 dt: float, jacobian: np.ndarray | None = None) -> tuple[np.ndarray, list[str]]:
    """Limit a joint step dq (rad per control step) from measured positions q.

    With the (6, 7) Jacobian at q, the end-effector speed the step implies is capped
    too: an IK solution that swings the arm through a new configuration must not
    move the gripper faster than the Cartesian limit.
    """
    hit = []
    vmax, amax, lower, upper = lim.vmax, lim.amax, lim.lower, lim.upper
    # velocity: scale the whole step so the direction in joint space is kept
    worst = float((np.abs(dq) / (vmax * dt)).max())
    if worst > 1.0:
        dq = dq / worst
        hit.append("joint_velocity")
    if jacobian is not None:
        dq, h = _limit_cartesian(dq, jacobian, lim, dt)
        hit += h
    # acceleration relative to the previous commanded velocity
    lo_a = (prev_vel - amax * dt) * dt
    hi_a = (prev_vel + amax * dt) * dt
    if (dq < lo_a).any() or (dq > hi_a).any():
        dq = np.minimum(np.maximum(dq, lo_a), hi_a)
        hit.append("joint_acceleration")
    # position: toward a limit, the step shrinks inside the soft margin and ends at the
    # hard limit; beyond a limit (start in violation) only motion back is allowed.
    room_up = upper - q
    room_down = q - lower
    m = max(lim.soft_margin, 1e-6)
    cap_up = np.maximum(room_up, 0.0) * np.minimum(np.maximum(room_up / m, 0.0), 1.0)
    cap_down = np.maximum(room_down, 0.0) * np.minimum(np.maximum(room_down / m, 0.0), 1.0)
    if (dq > cap_up).any() or (dq < -cap_down).any():
        dq = np.minimum(np.maximum(dq, -cap_down), cap_up)
        hit.append("joint_position")
    return dq, hit


def _limit_cartesian(dq: np.ndarray, jac: np.ndarray, lim: ArmLimits, dt: float) -> tuple[np.ndarray, list[str]]:
    v = jac @ dq
    lin = math.sqrt(float(v[:3] @ v[:3]))
    ang = math.sqrt(float(v[3:] @ v[3:]))
    cap = min(lim.ee_speed_max * dt, lim.ee_step_max)
    scale = min(1.0, cap / lin if lin > 0 else 1.0, lim.ee_ang_speed_max * dt / ang if ang > 0 else 1.0)
    if scale < 1.0:
        return dq * scale, ["ee_speed_joint_space"]
    return dq, []


def limit_workspace_joint_space(ee: np.ndarray, dq: np.ndarray, jac: np.ndarray,
                                lim: ArmLimits) -> tuple[np.ndarray, list[str]]:
    """After joint limiting the arm may not follow the IK path (a joint at its limit,
    others compensating): predict the gripper's step with the Jacobian and shorten dq
    so it does not leave the workspace box (or go further out of it)."""
    step = (jac[:3] @ dq).tolist()
    lo, hi, p = lim.workspace_low, lim.workspace_high, ee.tolist()
    scale = 1.0
    for i in range(3):
        if step[i] > 1e-12:
            scale = min(scale, max(hi[i] - p[i], 0.0) / step[i])
        elif step[i] < -1e-12:
            scale = min(scale, max(p[i] - lo[i], 0.0) / -step[i])
    if scale < 1.0:
        return dq * max(scale, 0.0), ["workspace_joint_space"]
    return dq, []


def brake_joints(prev_vel: np.ndarray, lim: ArmLimits, dt: float) -> np.ndarray:
    """Next commanded joint velocity of a controlled stop: decelerate within limits."""
    amax = lim.amax
    return np.sign(prev_vel) * np.maximum(np.abs(prev_vel) - amax * dt, 0.0)
