"""The arm's Cartesian-to-joint resolution (`arm_rules.resolve`) on the real Panda's
Jacobian: it asks for the twist the step needs, turns the gripper back to pointing down
the short way, keeps joints a soft limit would clip at their cap without bending the
motion, and its posture pull does not move the end effector."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pybullet
import pytest

from qrobot.robots.panda import HOME
from qrobot.safety import arm_rules
from qrobot.safety.limits import ArmLimits, default_limits

from .conftest import Rig

ARM = ArmLimits()
ARM_LIMITS = default_limits("panda", 0.1)
DT = 0.1


@pytest.fixture(scope="module")
def panda() -> Rig:
    rig = Rig("panda")
    yield rig
    rig.sim.close()


def _configs(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Joint configurations well inside the limits (none in a soft zone)."""
    lo, hi = ARM.lower + 0.4, ARM.upper - 0.4
    return [rng.uniform(lo, hi) for _ in range(n)]


def _down(yaw: float) -> np.ndarray:
    return np.array(pybullet.getQuaternionFromEuler([math.pi, 0.0, yaw]))


def test_rest_posture_is_the_panda_home() -> None:
    np.testing.assert_array_equal(ARM.rest, HOME)


def test_the_resolved_velocity_produces_the_requested_twist(panda: Rig) -> None:
    rng = np.random.default_rng(11)
    worst, checked = 0.0, 0
    for q in _configs(rng, 300):
        jac = panda.robot.jacobian(q)
        if np.linalg.svd(jac, compute_uv=False)[-1] < 0.05:
            continue  # near a singularity the damping trades accuracy for bounded speeds
        yaw = rng.uniform(-3, 3)
        d = rng.uniform(-0.01, 0.01, 3)
        v = arm_rules.resolve(jac, q, _down(yaw), d, yaw, ARM, DT)
        if np.any(np.abs(v) > ARM.vmax):
            continue  # capped later by the plan
        twist = jac @ v * DT
        worst = max(worst, float(np.abs(twist[:3] - d).max()), float(np.abs(twist[3:]).max()))
        checked += 1
    assert checked > 100
    assert worst < 5e-4  # m per period (and rad): the posture pull and the damping leak little


def test_orientation_error_is_the_short_rotation_to_pointing_down() -> None:
    """Against PyBullet's own quaternion algebra, on random orientations: with an identity
    Jacobian the angular part of the answer is the error rotation vector per period."""
    rng = np.random.default_rng(12)
    jac = np.hstack([np.eye(6), np.zeros((6, 1))])
    lim = ArmLimits(soft_margin=0.0, joint_vel_max=(1e9,) * 7, joint_lower=(-1e3,) * 7, joint_upper=(1e3,) * 7)
    for _ in range(500):
        quat = rng.normal(size=4)
        quat /= np.linalg.norm(quat)
        yaw = rng.uniform(-4, 4)
        _, inv = pybullet.invertTransform([0, 0, 0], quat.tolist())
        _, err = pybullet.multiplyTransforms([0, 0, 0], _down(yaw).tolist(), [0, 0, 0], inv)
        axis, angle = pybullet.getAxisAngleFromQuaternion(err)
        angle = angle - 2 * math.pi if angle > math.pi else angle
        if abs(angle) > math.pi - 1e-3:
            continue  # half a turn: either way round is right
        v = arm_rules.resolve(jac, lim.rest, quat, np.zeros(3), yaw, lim, 1.0)
        np.testing.assert_allclose(v[3:6], np.asarray(axis) * angle, atol=1e-3)
        assert np.linalg.norm(v[3:6]) <= math.pi + 1e-9


def test_a_joint_at_its_soft_limit_is_held_and_the_motion_keeps_its_direction(panda: Rig) -> None:
    """Saturation in the null space: the joint a soft limit would clip is held at its cap;
    the other six still produce the requested step (a clipped joint would bend the path)."""
    rng = np.random.default_rng(13)
    held = bent = 0
    for q in _configs(rng, 300):
        j = int(rng.integers(7))
        q = q.copy()
        q[j] = ARM.upper[j] - 0.02 * ARM.soft_margin  # deep in the soft zone: cap 2 % of its speed
        jac = panda.robot.jacobian(q)
        yaw = rng.uniform(-3, 3)
        d = rng.uniform(-0.01, 0.01, 3)
        v = arm_rules.resolve(jac, q, _down(yaw), d, yaw, ARM, DT)  # (told it points down: a pure step)
        cap = ARM.vmax[j] * 0.02
        assert v[j] <= cap + 1e-9  # never faster toward the limit than the soft zone allows
        if v[j] < cap - 1e-9 or np.linalg.svd(np.delete(jac, j, axis=1), compute_uv=False)[-1] < 0.05:
            continue  # not held, or the six others are near a singularity
        held += 1
        moved = jac @ v * DT
        bent += float(np.abs(moved[:3] - d).max()) > 5e-4 or float(np.abs(moved[3:]).max()) > 5e-4
    assert held > 30 and bent == 0


def _orn(panda: Rig, q: np.ndarray) -> np.ndarray:
    c = panda.sim._client
    for j, x in enumerate(q):
        c.resetJointState(panda.robot.uid, j, float(x), 0.0)
    return np.asarray(c.getLinkState(panda.robot.uid, 11, computeForwardKinematics=1)[5])


def test_the_posture_pull_does_not_move_the_end_effector(panda: Rig) -> None:
    rng = np.random.default_rng(14)
    for q in _configs(rng, 100):
        jac = panda.robot.jacobian(q)
        if np.linalg.svd(jac, compute_uv=False)[-1] < 0.05:
            continue
        yaw, d = rng.uniform(-3, 3), rng.uniform(-0.01, 0.01, 3)
        orn = _orn(panda, q)
        pulled = arm_rules.resolve(jac, q, orn, d, yaw, ARM, DT)
        at_rest = arm_rules.resolve(jac, q, orn, d, yaw, dataclasses.replace(ARM, rest_posture=tuple(q)), DT)
        if np.abs(pulled).max() > ARM.vmax.min() * 0.9:
            continue  # the soft zones and speed caps act on both differently
        assert np.abs(pulled - at_rest).max() > 1e-3  # the pull does move the joints...
        np.testing.assert_allclose(jac @ pulled, jac @ at_rest, atol=5e-3)  # ...not the end effector (per s)


@pytest.mark.parametrize("value", [1e200, np.nan, np.inf, 101.0])
def test_an_implausible_jacobian_brakes_the_arm_without_a_fault(panda: Rig, value: float) -> None:
    """A kinematics model answering nonsense (overflowing, non-finite or implausibly large
    entries) is not vouched for: the step is refused and the arm brakes, nothing raises."""
    from qrobot.safety.command import Stop
    from qrobot.safety.supervisor import Supervisor

    class Broken:
        def jacobian(self, q: np.ndarray) -> np.ndarray:
            return np.full((6, 7), value)

    sup = Supervisor(ARM_LIMITS, (0.025, 0.25), kinematics=Broken(), people="none")
    state = dict(panda.robot.state(), time=1.0)
    out = sup.filter(np.array([1.0, 0.0, 0.0, 0.0, 1.0]), state)
    assert isinstance(out, Stop) and out.brake is not None and not sup.latched
    assert sup.events[-1].rule == "reject" and "Jacobian" in sup.events[-1].reason
