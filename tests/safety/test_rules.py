"""Rules one by one: start in violation, soft/hard joint limits, workspace, base
bounds and keep-out zones, limits overrides from scenario files, events."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qrobot.errors import ScenarioError
from qrobot.safety import arm_rules, base_rules, trajectory
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.limits import ArmLimits, BaseLimits, apply_overrides, default_limits
from qrobot.safety.supervisor import Supervisor
from qrobot.scenario import load_scenario, scenario_dir

ARM = ArmLimits()
DT = 0.1


NO_JAC = np.zeros((6, 7))  # isolates the joint rules (no Cartesian coupling)
EE = np.array([0.5, 0.0, 0.3])


def _plan(q: np.ndarray, v0: np.ndarray, v_des: np.ndarray) -> tuple[np.ndarray, list[str]]:
    return arm_rules.plan(q, v0, v_des, NO_JAC, EE, ARM, DT)


def _rest_after(q: np.ndarray, v0: np.ndarray, v1: np.ndarray) -> np.ndarray:
    return q + trajectory.stopping_displacement(v0, v1, ARM.amax, DT)


def test_joint_soft_limit_slows_then_hard_limit_stops() -> None:
    upper = np.asarray(ARM.joint_upper)
    push, moving = np.full(7, 2.0), np.full(7, 0.3)  # toward the upper limits, faster than allowed
    far = np.asarray(ARM.joint_lower) + 1.0
    v_far, _ = _plan(far, moving, push)
    mid = upper - ARM.soft_margin / 2  # inside the soft zone
    v_mid, hit = _plan(mid, moving, push)
    assert np.all(v_mid < v_far) and "joint_position" in hit
    assert np.all(_rest_after(mid, moving, v_mid) <= upper + 1e-9)  # stops before the limit
    v_at, _ = _plan(upper.copy(), np.zeros(7), push)
    assert np.all(v_at <= 0)  # at the hard limit: no further


def test_plan_keeps_speed_acceleration_and_cartesian_limits() -> None:
    rng = np.random.default_rng(0)
    jac = rng.normal(0, 0.3, (6, 7))
    q = (np.asarray(ARM.joint_lower) + np.asarray(ARM.joint_upper)) / 2
    for _ in range(200):
        v0 = rng.uniform(-0.3, 0.3, 7)
        v1, _ = arm_rules.plan(q, v0, rng.uniform(-5, 5, 7), jac, EE, ARM, DT)
        assert np.all(np.abs(v1) <= ARM.vmax + 1e-12)
        assert np.all(np.abs(v1 - v0) <= ARM.amax * DT + 1e-12)
        lin, ang = np.linalg.norm(jac[:3] @ v1), np.linalg.norm(jac[3:] @ v1)
        # within the limit whenever v0 was (the ramp between them then is too)
        if np.linalg.norm(jac[:3] @ v0) <= ARM.ee_speed_max and np.linalg.norm(jac[3:] @ v0) <= ARM.ee_ang_speed_max:
            assert lin <= ARM.ee_speed_max + 1e-9 and ang <= ARM.ee_ang_speed_max + 1e-9


def test_cartesian_caps_hold_under_the_jacobian_where_the_period_ends() -> None:
    """Near a folded elbow the Jacobian turns by several % in one period: a plan capped
    only at its start began the next period 4 % over the EE speed limit (pick_place)."""
    rng = np.random.default_rng(1)
    q = (np.asarray(ARM.joint_lower) + np.asarray(ARM.joint_upper)) / 2
    caps = (0.96 * min(ARM.ee_speed_max, ARM.ee_step_max / DT), 0.96 * ARM.ee_ang_speed_max)
    shortened = 0
    for _ in range(300):
        jac = rng.normal(0, 0.3, (6, 7))
        jac_end = jac * rng.uniform(0.9, 1.3, (6, 7))  # where the period ends
        v0 = rng.uniform(-0.2, 0.2, 7)
        v1, hit = arm_rules.plan(q, v0, rng.uniform(-5, 5, 7), jac, EE, ARM, DT, lambda q_end, j=jac_end: j)
        brake = trajectory.brake_step(v0, ARM.amax, DT)
        for rows, cap in ((slice(0, 3), caps[0]), (slice(3, 6), caps[1])):
            if np.linalg.norm(jac_end[rows] @ brake) <= cap:  # feasible at all: then it holds
                assert np.linalg.norm(jac_end[rows] @ v1) <= cap + 1e-9
        assert np.all(np.abs(v1 - v0) <= ARM.amax * DT + 1e-12)  # still within the acceleration limits
        shortened += "ee_speed_joint_space" in hit
    assert shortened > 30  # the end Jacobian did bind
    no_answer, hit = arm_rules.plan(q, np.full(7, 0.2), np.ones(7), NO_JAC, EE, ARM, DT, lambda q_end: None)
    assert "no_jacobian" in hit and np.allclose(no_answer, trajectory.brake_step(np.full(7, 0.2), ARM.amax, DT))


def test_start_in_violation_only_moves_back_toward_the_safe_set() -> None:
    beyond = np.asarray(ARM.joint_upper) + 0.05
    out, hit = _plan(beyond, np.zeros(7), np.full(7, 0.5))
    assert np.all(out <= 0) and "joint_position" in hit
    back, _ = _plan(beyond, np.zeros(7), np.full(7, -0.5))
    assert np.all(back < 0)
    # outside the workspace box: back toward it by the depth at least (a sag is not kept)
    ee = np.array([0.5, 0.0, 0.7])  # 0.1 m above the 0.6 m ceiling
    for asked in (0.02, 0.0, -0.02):
        d, hit = arm_rules.limit_workspace(ee, np.array([0.01, 0.0, asked]), ARM)
        assert d[2] == pytest.approx(-0.1) and d[0] == 0.01 and hit == ["workspace"]
    d, hit = arm_rules.limit_workspace(ee, np.array([0.0, 0.0, -0.2]), ARM)
    assert d[2] == -0.2 and hit == []  # further inward is the policy's choice


def _region(pose: np.ndarray, v: float, lim: BaseLimits, v0: float | None = None) -> tuple[float, list[str]]:
    out, hit = base_rules.limit_region(pose, np.array([v if v0 is None else v0, 0.0]), np.array([v, 0.0]), lim, DT)
    return float(out[0]), hit


def test_base_bounds_and_keep_out_zones() -> None:
    lim = BaseLimits(bounds_low=(-2.0, -2.0), bounds_high=(2.0, 2.0), keep_out=((0.5, -0.5, 1.0, 0.5),))
    facing_wall = np.array([1.6, 1.0, 0.0])  # 0.4 m from the +x bound, radius 0.29
    v, hit = _region(facing_wall, 0.5, lim)
    assert v < 0.5 and hit == ["bounds"]
    v_back, hit = _region(facing_wall, -0.5, lim)
    assert v_back == -0.5 and hit == []
    facing_zone = np.array([0.1, 0.0, 0.0])  # keep-out box starts at x = 0.5 - 0.29 radius
    v, hit = _region(facing_zone, 0.5, lim)
    assert v < 0.5 and hit == ["keep_out"]
    beside = np.array([0.6, -0.8, 0.0])  # alongside the zone: straight on is fine...
    out, hit = base_rules.limit_region(beside, np.array([0.5, 0.0]), np.array([0.5, 0.0]), lim, DT)
    assert out[0] == 0.5 and hit == []
    out, hit = base_rules.limit_region(beside, np.array([0.5, 1.2]), np.array([0.5, 1.2]), lim, DT)
    assert out[0] < 0.5 and hit == ["keep_out"]  # ...a left turn would sweep into it
    inside = np.array([0.9, 0.0, 0.0])  # started inside the zone: may drive out (nearest face)...
    v, _ = _region(inside, 0.5, lim)
    assert v == 0.5
    v, _ = _region(inside, -0.5, lim, v0=0.0)  # ...but not deeper in
    assert v == 0.0


def test_base_keeps_out_in_simulation() -> None:
    from qrobot.envs.core import QRobotEnv

    sc = load_scenario("pointnav")
    sc = sc.model_copy(
        update={
            "room": sc.room.model_copy(update={"obstacles": [], "random_obstacles": 0}),
            "limits": sc.limits.model_copy(update={"overrides": {"keep_out": [[0.6, -4.0, 4.0, 4.0]]}}),
        }
    )
    env = QRobotEnv(sc, images=False)
    env.reset(seed=0)
    env.robot._reset(-1.0, 0.0, 0.0)  # facing the zone (test-only placement)
    for _ in range(60):
        env.step(np.array([1.0, 0.0, 0.0], np.float32))
    x = env.robot.state()["base_pose"][0]
    assert x + 0.29 <= 0.6 + 0.02 and x > -0.5  # drove up to the zone, not into it
    assert env.supervisor.counts()["keep_out"] > 0
    env.close()


def test_overrides_apply_and_bad_ones_are_one_line_errors(tmp_path: Path) -> None:
    lim = apply_overrides(default_limits("diffbot", DT), {"v_max": 0.3, "ssm.warning_band": 1.0})
    assert lim.base.v_max == 0.3 and lim.base.ssm.warning_band == 1.0
    text = (scenario_dir() / "pointnav.toml").read_text()
    cases = {
        "[limits]\noverrides = { v_maxx = 0.3 }\n": "limits.overrides.v_maxx: unknown limit for robot 'diffbot'; accepted:",
        "[limits]\noverrides = { v_max = -1.0 }\n": "limits.overrides.v_max: must be a finite number in [1e-06, 1000]",
        '[limits]\noverrides = { "ssm.enabled" = false }\n': "limits.overrides.ssm.enabled: unknown limit",
        "[limits]\noverrides = { keep_out = [[0, 0, 1]] }\n": "limits.overrides.keep_out: must be a list of",
        '[limits]\nprofile = "fast"\n': "limits.profile: Input should be 'default', 'test-only-no-ssm' or",
    }
    for extra, needle in cases.items():
        path = tmp_path / "s.toml"
        path.write_text(text + extra)
        with pytest.raises(ScenarioError) as info:
            load_scenario(path)
        assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_every_intervention_is_a_structured_event_and_counted_in_info() -> None:
    from qrobot.envs.core import QRobotEnv

    env = QRobotEnv("pointnav", images=False)
    env.reset(seed=0)
    env.step(np.array([5.0, 0.0, 0.0], np.float32))  # clamp + acceleration
    env.step(np.array([np.nan, 0.0, 0.0], np.float32))  # reject
    env.step(np.array([0.0, 0.0, 0.0], np.float32))  # valid again (feeds the watchdog)
    _, _, _, _, info = env.step("forward")  # reject (not numeric)
    rules = [e.rule for e in env.supervisor.events]
    assert rules.count("reject") == 2 and "clamp" in rules and "base_acceleration" in rules
    e = next(e for e in env.supervisor.events if e.rule == "clamp")
    assert e.raw == (5.0, 0.0, 0.0) and e.issued == (1.0, 0.0, 0.0) and e.reason and e.time == 0.0
    rej = [e for e in env.supervisor.events if e.rule == "reject"]
    assert rej[0].issued is None and "non-finite" in rej[0].reason and rej[0].severity == "error"
    assert info["safety"]["reject"] == 2 and info["safety"]["interventions"] == len(env.supervisor.events)
    env.close()


def test_supervisor_has_no_off_switch() -> None:
    sup = Supervisor(default_limits("diffbot", DT), (0.5, 1.2), people="none")
    assert not [a for a in vars(sup) if "enable" in a or "bypass" in a or "disable" in a]
    out = sup.filter(
        [1.0, 0.0, 0.0], {"base_pose": np.zeros(3), "base_vel": np.zeros(2), "cmd_vel": np.zeros(2), "time": 0.0}
    )
    assert isinstance(out, SafeCommand) and out.values[0] == pytest.approx(0.15)  # accel-limited start
    assert isinstance(sup.filter([1.0, 0, 0], {"time": 0.1}), Stop)
