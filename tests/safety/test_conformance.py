"""Limit conformance in simulation: 10,000 control steps of a random (over-range)
policy per robot; measured joint positions/velocities, end-effector speed and base
speeds never exceed the limits (+ a small epsilon for integration)."""

from __future__ import annotations

import numpy as np

from .conftest import Rig

STEPS = 10_000


def test_arm_random_policy_respects_limits(arm: Rig) -> None:
    rng = np.random.default_rng(0)
    lim = arm.limits.arm
    lower, upper = np.asarray(lim.joint_lower), np.asarray(lim.joint_upper)
    vmax = np.asarray(lim.joint_vel_max)
    worst = {"joint_vel": 0.0, "ee_speed": 0.0, "below_lower": 0.0, "above_upper": 0.0, "outside_ws": 0.0}
    for _ in range(STEPS):
        arm.step(rng.uniform(-1.5, 1.5, 5))
        st = arm.robot.state()
        worst["joint_vel"] = max(worst["joint_vel"], float(np.max(np.abs(st["joint_vel"]) / vmax)))
        worst["ee_speed"] = max(worst["ee_speed"], float(np.linalg.norm(st["ee_lin_vel"])))
        worst["below_lower"] = max(worst["below_lower"], float(np.max(lower - st["joint_pos"])))
        worst["above_upper"] = max(worst["above_upper"], float(np.max(st["joint_pos"] - upper)))
        out = np.maximum(np.asarray(lim.workspace_low) - st["ee_pos"], st["ee_pos"] - np.asarray(lim.workspace_high))
        worst["outside_ws"] = max(worst["outside_ws"], float(np.max(out)))
    assert worst["joint_vel"] <= 1.0 + 0.02, worst
    assert worst["ee_speed"] <= lim.ee_speed_max + 0.01, worst
    assert worst["below_lower"] <= 0.01 and worst["above_upper"] <= 0.01, worst
    assert worst["outside_ws"] <= 0.01, worst
    assert arm.sup.counts().get("workspace", 0) > 0  # the random walk did push on the box


def test_base_random_policy_respects_limits(base: Rig) -> None:
    rng = np.random.default_rng(0)
    b = base.limits.base
    worst = {"v": 0.0, "w": 0.0, "dv": 0.0}
    prev_v = 0.0
    for _ in range(STEPS):
        base.step(rng.uniform(-1.5, 1.5, 3))
        v, w = base.robot.state()["base_vel"]
        worst["v"] = max(worst["v"], abs(float(v)))
        worst["w"] = max(worst["w"], abs(float(w)))
        worst["dv"] = max(worst["dv"], abs(float(v) - prev_v) / base.sim.dt)
        prev_v = float(v)
    assert worst["v"] <= b.v_max + 0.01 and worst["w"] <= b.w_max + 0.02, worst
    assert worst["dv"] <= b.v_acc * 1.1, worst  # acceleration, measured over a control period
