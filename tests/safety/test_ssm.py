"""Speed and separation monitoring: the formula, the rule's states, and the
end-to-end property with people walking into the robot's path."""

from __future__ import annotations

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.runner import run_episode
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.limits import SSMParams, default_limits
from qrobot.safety.ssm import max_safe_speed, protective_distance
from qrobot.safety.supervisor import Supervisor
from qrobot.scenario import Limits, load_scenario

P = SSMParams()


def test_protective_distance_formula() -> None:
    # v_r = 0.5 m/s, a = 1.5 m/s^2: Ts = 1/3 s
    ts = 0.5 / 1.5
    expect = 1.6 * (0.2 + ts) + 0.5 * 0.2 + 0.25 / 3.0 + 0.1 + 0.05 + 0.02
    assert protective_distance(P, 0.5, 1.5) == pytest.approx(expect)
    assert protective_distance(P, 0.0, 1.5) == pytest.approx(1.6 * 0.2 + 0.17)
    v = max_safe_speed(P, 1.0, 1.5, 0.5)
    assert protective_distance(P, v, 1.5) == pytest.approx(1.0)
    assert max_safe_speed(P, 0.3, 1.5, 0.5) == 0.0 and max_safe_speed(P, 10.0, 1.5, 0.5) == 0.5
    vb = max_safe_speed(P, 1.0, 1.5, 0.5, band=0.6)  # the warning band keeps a speed-proportional buffer
    assert vb < v and protective_distance(P, vb, 1.5) + 0.6 * vb / 0.5 == pytest.approx(1.0)


def _state(t: float, person_x: float, v: float = 0.0) -> dict:
    return {
        "base_pose": np.zeros(3),
        "base_vel": np.array([v, 0.0]),
        "cmd_vel": np.array([v, 0.0]),
        "time": t,
        "people": np.array([[person_x, 0.0]]),
        "people_radius": np.array([0.25]),
    }


def test_slowdown_band_protective_stop_and_timed_resume() -> None:
    sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people="sensor")
    far = sup.filter([1.0, 0, 0], _state(0.0, 6.0))
    assert isinstance(far, SafeCommand) and far.values[0] > 0
    for k in range(1, 5):  # speed up to 0.5 m/s with the person far away
        sup.filter([1.0, 0, 0], _state(0.1 * k, 6.0, v=min(0.15 * k, 0.5)))
    band = sup.filter([1.0, 0, 0], _state(0.5, 2.4, v=0.5))  # inside the warning band
    assert isinstance(band, SafeCommand) and band.values[0] < 0.5 and sup.events[-1].rule == "slowdown"
    stop = sup.filter([1.0, 0, 0], _state(0.6, 1.2, v=0.4))  # inside Sp
    assert isinstance(stop, Stop) and sup.protective and sup.events[-1].rule == "protective_stop"
    # person leaves: still stopped until the area has been clear for clear_hold_time (1 s)
    outs = [sup.filter([1.0, 0, 0], _state(0.7 + 0.1 * k, 6.0)) for k in range(11)]
    assert all(isinstance(o, Stop) for o in outs[:-1]) and isinstance(outs[-1], SafeCommand)
    assert "resume" in [e.rule for e in sup.events[-2:]]
    assert sup.counts()["protective_stop_time"] == pytest.approx(1.1)
    sup.filter([-1.0, 0, 0], _state(1.8, 1.6))  # backing away from a near person is allowed
    away = sup.filter([-1.0, 0, 0], _state(1.9, 1.6))
    assert isinstance(away, SafeCommand) and away.values[0] < 0


def _intrusions(ssm: bool, episodes: int) -> tuple[float, float, float]:
    sc = load_scenario("pointnav_people")
    if not ssm:  # a test-only profile: the only way the rule goes off
        sc = sc.model_copy(update={"limits": Limits(profile="test-only-no-ssm")})
    env = QRobotEnv(sc, images=False)
    pol = make_policy("expert", env)
    rs = [run_episode(env, pol, k, 1000 + k) for k in range(episodes)]
    env.close()
    return (
        sum(r.metrics["intrusions"] for r in rs),
        float(np.mean([r.success for r in rs])),
        min(r.metrics["min_person_clearance"] for r in rs),
    )


def test_people_walking_into_the_path_zero_intrusions_only_with_ssm() -> None:
    on, success_on, _clearance_on = _intrusions(ssm=True, episodes=6)
    off, _, _ = _intrusions(ssm=False, episodes=6)
    assert on == 0 and success_on >= 5 / 6
    assert off > 0  # the same runs without the rule do intrude: the test can fail
