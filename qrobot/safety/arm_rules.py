"""Arm rules, pure numpy. The Cartesian step a policy asks for is capped and kept in the
workspace; `resolve` turns it into a desired joint velocity through the Jacobian
(resolved-rate control, as MoveIt Servo and Franka's Cartesian velocity interface do:
no iterative IK on the control path); `plan` then chooses the velocity
v1 the period ramps to (see qrobot.safety.trajectory) so that, at every instant of the
period and of the stop that may follow it, joint speeds, joint accelerations, the
end-effector's linear and angular speed, the joint limits and the workspace box hold.
Each function returns the limited value and the names of the rules that changed it."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from qrobot.safety import trajectory
from qrobot.safety.limits import ArmLimits

CANDIDATES = 32  # plans tried per pass when the stop must come sooner; two passes: 1/1024
_SHARES = np.arange(CANDIDATES, 0, -1) / CANDIDATES  # largest first
# The plan keeps this share of each speed and acceleration limit: the Jacobian changes
# within a period and the motors track the ramp with a small lag (measured by
# benchmarks/limit_conformance.py at every physics substep).
PLAN_MARGIN = 0.96
# Plans keep this far inside the joint limits (rad) and the workspace box (m), so the motors'
# small tracking error cannot carry a measured position past them: twice the worst lead
# measured (tests/test_robots.py::test_the_arm_tracks_its_plan_within_half_the_margins).
JOINT_MARGIN, BOX_MARGIN = 0.005, 0.003


# Damped least squares (Wampler; Nakamura): the damping bounds joint speeds near a
# singularity, where the caps below then slow the whole motion.
DAMPING = 0.01
# Share of the distance to the rest posture taken per period in the null space (posture
# does not drift over long episodes; the end effector is not moved by it, to first order).
POSTURE_GAIN = 0.1
POSTURE_SPEED = 0.5  # rad/s: the pull never dominates the task's joint speeds
_DIAG = np.diag_indices(6)


def resolve(
    jac: np.ndarray, q: np.ndarray, orn: np.ndarray, d: np.ndarray, yaw: float, lim: ArmLimits, dt: float
) -> np.ndarray:
    """Joint velocity that moves the end effector by d over one period and turns it to point
    down at `yaw` from its measured orientation `orn` (unit quaternion x, y, z, w, world
    frame, as the Jacobian's angular rows), plus a null-space pull toward the rest posture.
    A joint the soft limits would clip is held at its cap and the task re-solved with the
    others (saturation in the null space, Flacco et al. 2012), so motion along a limit keeps
    its direction and the gripper its orientation."""
    x, y, z, w = orn.tolist()
    c, s = math.cos(yaw / 2), math.sin(yaw / 2)  # pointing down at yaw: (c, s, 0, 0)
    # error rotation, desired * conjugate(measured), world frame; the short way round
    ew, ex, ey, ez = c * x + s * y, c * w - s * z, c * z + s * w, s * x - c * y
    if ew < 0:
        ew, ex, ey, ez = -ew, -ex, -ey, -ez
    n = math.sqrt(ex * ex + ey * ey + ez * ez)
    k = 2 * math.atan2(n, ew) / n if n > 1e-12 else 2.0
    twist = np.array([d[0], d[1], d[2], k * ex, k * ey, k * ez]) / dt
    pull = np.clip((POSTURE_GAIN / dt) * (lim.rest - q), -POSTURE_SPEED, POSTURE_SPEED)
    jf, held, fixed, task = jac, None, None, twist
    for _ in range(4):  # each pass holds at least one more joint at its cap, or ends
        grammian = jf @ jf.T
        grammian[_DIAG] += DAMPING * DAMPING
        sol = np.linalg.solve(grammian, np.column_stack((task, jf)))  # (6, 8): task, projector
        v = jf.T @ (sol[:, 0] - sol[:, 1:] @ pull) + pull
        if held is not None:
            v = np.where(held, fixed, v)
        toward = np.where(v > 0, lim.upper - q, q - lim.lower) / max(lim.soft_margin, 1e-6)
        cap = lim.vmax * np.minimum(np.maximum(toward, 0.0), 1.0)
        over = np.abs(v) > cap + 1e-12
        if not over.any():
            break
        held = over if held is None else held | over
        fixed = np.where(over, np.copysign(cap, v), v) * held
        jf, pull, task = jac * ~held, pull * ~held, twist - jac @ fixed
    return v


def brake_rates(lim: ArmLimits) -> np.ndarray:
    """Deceleration of every stop the supervisor plans or binds the arm to (the motors
    track a ramp with a small lag: at the full limit, 1.5 % over it was measured)."""
    return PLAN_MARGIN * lim.amax


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
    """Per axis: motion out of the box stops at its face; already outside, the step goes
    back toward the box by the depth (what the policy asks notwithstanding): otherwise a
    tracking lag that lets the arm sag below the floor would be kept, period after period."""
    out = np.minimum(np.maximum(d, lim.ws_low - ee), lim.ws_high - ee)
    return out, (["workspace"] if (out != d).any() else [])


def _cap_speed(
    q: np.ndarray, v: np.ndarray, jac: np.ndarray, lim: ArmLimits, dt: float
) -> tuple[np.ndarray, list[str]]:
    """Joint speed (soft margin: slower toward a limit), then the end-effector's linear
    and angular speed through the Jacobian. Uniform scaling keeps the direction."""
    hit = []
    worst = float((np.abs(v) / lim.vmax).max())
    if worst > 1.0:
        v = v / worst
        hit.append("joint_velocity")
    toward = np.where(v > 0, lim.upper - q, q - lim.lower) / max(lim.soft_margin, 1e-6)
    cap = lim.vmax * np.minimum(np.maximum(toward, 0.0), 1.0)
    if (np.abs(v) > cap).any():
        v = np.minimum(np.maximum(v, -cap), cap)
        hit.append("joint_position")
    jv = jac @ v
    lin, ang = jv[:3], jv[3:]
    n_lin, n_ang = math.sqrt(float(lin @ lin)), math.sqrt(float(ang @ ang))
    v_cap = PLAN_MARGIN * min(lim.ee_speed_max, lim.ee_step_max / dt)
    w_cap = PLAN_MARGIN * lim.ee_ang_speed_max
    scale = min(1.0, v_cap / n_lin if n_lin > 0 else 1.0, w_cap / n_ang if n_ang > 0 else 1.0)
    if scale < 1.0:
        v = v * scale
        hit.append("ee_speed_joint_space")
    return v, hit


def _cap_end_speed(
    brake: np.ndarray, v1: np.ndarray, jac_end: np.ndarray, lim: ArmLimits, dt: float
) -> tuple[np.ndarray, list[str]]:
    """The same end-effector speed caps under the Jacobian where the period ends (it turns
    while the arm moves: near a folded elbow by several % per period). Shortens toward the
    hardest brake, the end the acceleration limits always allow: the largest l in [0, 1]
    with |J_end (b + l (v1 - b))| <= cap, one quadratic per cap."""
    step = v1 - brake
    share = 1.0
    for rows, cap in (
        (jac_end[:3], PLAN_MARGIN * min(lim.ee_speed_max, lim.ee_step_max / dt)),
        (jac_end[3:], PLAN_MARGIN * lim.ee_ang_speed_max),
    ):
        a, b = rows @ brake, rows @ step
        aa, ab, bb = float(a @ a), float(a @ b), float(b @ b)
        if aa + 2 * ab + bb <= cap * cap:
            continue  # the requested end is within this cap
        if aa >= cap * cap or bb <= 0.0:
            share = 0.0  # even the hardest brake is over: brake
            continue
        share = min(share, (-ab + math.sqrt(max(ab * ab - bb * (aa - cap * cap), 0.0))) / bb)
    if share >= 1.0:
        return v1, []
    return brake + max(share, 0.0) * step, ["ee_speed_joint_space"]


def _cap_acceleration(v0: np.ndarray, v1: np.ndarray, lim: ArmLimits, dt: float) -> tuple[np.ndarray, list[str]]:
    """Move toward v1 only as far as every joint's acceleration allows, on the segment
    from v0 (a convex combination keeps what holds for both ends)."""
    dv = v1 - v0
    worst = float((np.abs(dv) / lim.amax).max()) / (PLAN_MARGIN * dt)
    if worst > 1.0:
        return v0 + dv / worst, ["joint_acceleration"]
    return v1, []


class _Room:
    """Where the period plus the stop after it may end: inside the joint limits and the
    workspace box (less the margins), or, where already outside, no further out."""

    def __init__(self, q: np.ndarray, ee: np.ndarray, jac: np.ndarray, lim: ArmLimits, dt: float) -> None:
        self.q, self.ee, self.jlin, self.lim, self.dt = q, ee, jac[:3], lim, dt
        self.rates = brake_rates(lim)
        self.q_hi = np.maximum(lim.upper - JOINT_MARGIN, q)
        self.q_lo = np.minimum(lim.lower + JOINT_MARGIN, q)
        self.p_hi = np.maximum(lim.ws_high - BOX_MARGIN, ee)
        self.p_lo = np.minimum(lim.ws_low + BOX_MARGIN, ee)

    def check(self, v0: np.ndarray, v1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For each plan in v1 (k, 7): (joints stay within limits, EE stays in the box)."""
        dt = self.dt
        n = np.ceil((np.abs(v1) / self.rates).max(axis=1) / dt - 1e-9)  # braking periods (see trajectory)
        disp = (v0 + v1) * (dt / 2) + v1 * (n * (dt / 2))[:, None]
        qf = self.q + disp
        pf = self.ee + disp @ self.jlin.T
        return ~((qf > self.q_hi).any(axis=1) | (qf < self.q_lo).any(axis=1)), ~(
            (pf > self.p_hi).any(axis=1) | (pf < self.p_lo).any(axis=1)
        )

    def violations(self, v0: np.ndarray, v1: np.ndarray) -> list[str]:
        """The same test for one plan (cheaper than `check` on a batch of one)."""
        disp = trajectory.stopping_displacement(v0, v1, self.rates, self.dt)
        qf = self.q + disp
        out = []
        if (qf > self.q_hi).any() or (qf < self.q_lo).any():
            out.append("joint_position")
        pf = self.ee + self.jlin @ disp
        if (pf > self.p_hi).any() or (pf < self.p_lo).any():
            out.append("workspace_joint_space")
        return out


def plan(
    q: np.ndarray,
    v0: np.ndarray,
    v_des: np.ndarray,
    jac: np.ndarray,
    ee: np.ndarray,
    lim: ArmLimits,
    dt: float,
    jacobian_at: Callable[[np.ndarray], np.ndarray | None] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """The joint velocity v1 this period ramps to, from v0 (what the arm is executing).
    With `jacobian_at`, the end-effector speed caps also hold under the Jacobian where the
    period ends (None from it: no answer, brake)."""
    v, hits = _cap_speed(q, v_des, jac, lim, dt)
    v, h = _cap_acceleration(v0, v, lim, dt)
    hits += h
    # the hardest brake the acceleration limits allow (which the last period's plan kept
    # feasible): what the caps below shorten toward
    brake = trajectory.brake_step(v0, brake_rates(lim), dt)
    if jacobian_at is not None:
        jac_end = jacobian_at(q + (v0 + v) * (dt / 2))
        if jac_end is None:
            return brake, hits + ["no_jacobian"]
        v, h = _cap_end_speed(brake, v, jac_end, lim, dt)
        hits += h
        # where the end effector ends up, to second order: the mean of the two Jacobians
        jac = (jac + jac_end) * 0.5
    room = _Room(q, ee, jac, lim, dt)
    bad = room.violations(v0, v)
    if not bad:
        return v, hits
    # the largest safe share of the way from the brake, to 1/CANDIDATES^2
    lo, width = 0.0, 1.0
    for _ in range(2):
        shares = lo + width * _SHARES
        joints, box = room.check(v0, brake + shares[:, None] * (v - brake))
        ok = joints & box
        if ok.any():
            lo = float(shares[ok.argmax()])
        width /= CANDIDATES
    return brake + lo * (v - brake), hits + bad
