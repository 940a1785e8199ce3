"""E-stop latch, operator-only reset, no restart on release; watchdog and sensor faults."""

from __future__ import annotations

import numpy as np
import pytest

from qrobot.runner import run_episode
from qrobot.envs.core import QRobotEnv
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor

from .conftest import Rig

FORWARD = np.array([1.0, 0.0, 0.0])
NEUTRAL = np.zeros(3)


def _drive_up(base: Rig, steps: int = 15) -> None:
    for _ in range(steps):
        base.step(FORWARD)
    assert base.speed() == pytest.approx(0.5, abs=0.02)


def test_estop_latches_brakes_within_limits_and_holds(base: Rig) -> None:
    _drive_up(base)
    base.sup.estop("test button", base.sim.time)
    speeds = [base.speed()]
    for _ in range(20):  # the policy keeps commanding full speed
        out = base.step(FORWARD)
        assert isinstance(out, Stop) and "e-stop" in out.reason
        speeds.append(base.speed())
    decel = -np.diff(speeds) / base.sim.dt
    assert speeds[1] < speeds[0]  # braking begins within one control period
    assert decel.max() <= base.limits.base.v_acc * 1.15  # category 1: a controlled stop
    assert speeds[-1] < 0.01 and base.sup.latched == "test button"
    assert base.sup.counts()["estop"] == 1


def test_reset_needs_the_operator_key_and_never_restarts_motion(base: Rig) -> None:
    _drive_up(base)
    base.sup.estop("test")
    for _ in range(8):
        base.step(FORWARD)
    assert not base.sup.reset_estop(OperatorKey())  # a forged key
    assert not base.sup.reset_estop(None)
    assert base.sup.latched and base.sup.counts()["reset_refused"] == 2
    assert base.sup.reset_estop(base.key)
    assert base.sup.latched is None
    for _ in range(5):  # the stale command keeps coming: still no motion
        assert isinstance(base.step(FORWARD), Stop)
    assert base.speed() < 0.01
    assert isinstance(base.step(NEUTRAL), Stop)  # a fresh neutral command re-arms
    out = base.step(FORWARD)
    assert isinstance(out, SafeCommand) and out.values[0] > 0
    rules = [e.rule for e in base.sup.events]
    assert "reset" in rules and "rearm" in rules


def test_policy_cannot_reach_the_operator_key() -> None:
    env = QRobotEnv("pointnav", images=False, operator=OperatorKey())
    seen: list[object] = []

    def walk(obj: object, depth: int = 0) -> None:
        if depth > 4 or id(obj) in {id(s) for s in seen}:
            return
        seen.append(obj)
        if isinstance(obj, OperatorKey):
            raise AssertionError("operator key reachable from the env")
        for v in (vars(obj).values() if hasattr(obj, "__dict__") else
                  obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else []):
            walk(v, depth + 1)

    walk(env)  # everything a policy holding the env could reach by attributes
    env.close()


def _sup(robot: str = "diffbot") -> Supervisor:
    return Supervisor(default_limits(robot, 0.1), (0.5, 1.2))


def _state(t: float, **kw: object) -> dict:
    return {"base_pose": np.zeros(3), "base_vel": np.zeros(2), "time": t, **kw}


def test_watchdog_latches_after_two_periods_without_a_valid_command() -> None:
    sup = _sup()
    assert isinstance(sup.filter(FORWARD, _state(0.0)), SafeCommand)
    assert isinstance(sup.filter(None, _state(0.1)), Stop) and sup.latched is None
    assert isinstance(sup.filter(None, _state(0.2)), Stop) and "watchdog" in sup.latched
    assert isinstance(sup.filter(FORWARD, _state(0.3)), Stop)  # latched: valid commands don't help
    sup2 = _sup()
    for k in range(10):  # invalid commands count as no command
        sup2.filter([np.nan, 0, 0], _state(0.1 * k))
    assert "watchdog" in sup2.latched


@pytest.mark.parametrize("second,why", [
    (_state(0.0), "stale"),                     # timestamp did not advance
    (_state(-0.1), "stale"),                    # dt < 0
    (_state(float("nan")), "time"),             # non-finite time
    (_state(float("inf")), "time"),
    (_state(0.1, base_pose=np.array([np.nan, 0, 0])), "base_pose"),
    (_state(0.1, base_vel=np.array([0, np.inf])), "base_vel"),
    (_state(0.1, people=np.array([[np.nan, 1.0]])), "people"),
    ({"time": 0.1}, "base_pose"),               # missing keys
    ("not a dict", "no robot state"),
])
def test_sensor_faults_latch_the_estop(second: object, why: str) -> None:
    sup = _sup()
    assert isinstance(sup.filter(FORWARD, _state(0.0)), SafeCommand)
    out = sup.filter(FORWARD, second)
    assert isinstance(out, Stop) and sup.latched and why in sup.latched
    assert sup.events[-1].rule == "estop" and sup.events[-1].severity == "critical"


def test_policy_exception_ends_the_episode_with_an_estop_and_the_run_goes_on() -> None:
    class Crashy:
        name = "crashy"

        def reset(self, instruction: str) -> None:
            self.n = 0

        def act(self, obs: dict) -> np.ndarray:
            self.n += 1
            if self.n == 5:
                raise ValueError("model diverged")
            return np.array([1.0, 0.0, 0.0], np.float32)

    env = QRobotEnv("pointnav", images=False)
    pol = Crashy()
    r = run_episode(env, pol, 0, 0)
    assert r.end_reason == "policy_error" and "model diverged" in r.error
    assert r.safety["estops"] == 1
    r2 = run_episode(env, pol, 1, 1)  # next episode: a fresh world, fresh supervisor state
    assert r2.end_reason == "policy_error" and r2.steps == r.steps == 5  # 4 + 1 braking

    class Silent(Crashy):
        def act(self, obs: dict) -> None:  # a policy that stops answering
            return None

    r3 = run_episode(env, Silent(), 2, 2)
    assert r3.end_reason == "estop" and "watchdog" in r3.error and r3.steps == 3  # t = 0, 0.1, 0.2
    env.close()
