"""E-stop latch, operator-only reset, no restart on release; watchdog and sensor faults."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv

from qrobot.runner import run_episode
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


def test_supervisor_reset_never_releases_a_latch(base: Rig) -> None:
    _drive_up(base)
    base.sup.estop("test")
    base.sup.reset()  # what a policy holding the supervisor could call mid-episode
    assert base.sup.latched == "test"
    for _ in range(10):
        assert isinstance(base.step(FORWARD), Stop)
    assert base.speed() < 0.01
    with pytest.raises(AttributeError):
        base.sup.latched = None  # type: ignore[misc]  # read-only, not a switch


def test_env_with_an_operator_key_keeps_the_latch_across_env_reset() -> None:
    key = OperatorKey()
    env = QRobotEnv("pointnav", images=False, operator=key)
    env.reset(seed=0)
    env.supervisor.estop("operator button")
    _, _, _, trunc, info = env.step(FORWARD)
    assert trunc and info["estop"]
    env.reset(seed=1)  # a new world, but the latch is the operator's to release
    _, _, _, trunc, info = env.step(FORWARD)
    assert trunc and "operator button" in info["estop"] and env.robot.state()["base_vel"][0] < 0.01
    assert env.supervisor.reset_estop(key, env.sim.time, rearm=False)
    env.close()
    plain = QRobotEnv("pointnav", images=False)  # plain gym.make: each new world starts unlatched
    plain.reset(seed=0)
    plain.supervisor.estop("watchdog")
    plain.reset(seed=1)
    assert plain.supervisor.latched is None
    assert [e.rule for e in plain.supervisor.events] == ["reset"] and "new world" in plain.supervisor.events[0].reason
    _, _, _, trunc, _ = plain.step(FORWARD)
    assert not trunc
    plain.close()


def test_the_runner_releases_between_episodes_as_a_logged_operator_action() -> None:
    key = OperatorKey()
    env = QRobotEnv("pointnav", images=False, operator=key)

    class Once:
        name = "once"

        def reset(self, instruction: str) -> None:
            pass

        def act(self, obs: dict) -> None:
            return None  # silence: the watchdog latches

    first = run_episode(env, Once(), 0, 0, operator=key)
    assert first.end_reason == "estop" and env.supervisor.latched
    second = run_episode(env, Once(), 1, 1, operator=key)
    assert second.end_reason == "estop" and second.safety["reset"] == 1
    released = next(e for e in env.supervisor.events if e.rule == "reset")
    assert "between episodes" in released.reason
    env.close()


PUBLIC_QUERIES = ("robot_state", "supervisor_state", "privileged_state")
ACTUATING = (
    "client",
    "apply",
    "stepSimulation",
    "mint",
    "reset_world",
    "restore_state",
    "place_robot",
    "setJointMotorControl2",
    "resetBasePositionAndOrientation",
    "filter",
    "bind",
)  # the supervisor's levers: a policy sees its view only


def _public_reach(root: object) -> list[tuple[str, object]]:
    """Every object reachable from `root` through public names (attributes, properties,
    the env's query methods' results, container items)."""
    seen, out, todo = set(), [], [("env", root, 0)]
    while todo:
        path, obj, depth = todo.pop()
        if id(obj) in seen or depth > 5 or isinstance(obj, (str, bytes, int, float, np.ndarray, type)):
            continue
        seen.add(id(obj))
        out.append((path, obj))
        if isinstance(obj, dict):
            kids = [(f"{path}[{k!r}]", v) for k, v in obj.items()]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            kids = [(f"{path}[{i}]", v) for i, v in enumerate(obj)]
        else:
            kids = []
            for name in dir(obj):
                if name.startswith("_") or not obj.__class__.__module__.startswith(("qrobot", "envs", "policies")):
                    continue
                try:
                    value = getattr(obj, name)
                except Exception:
                    continue
                if name in PUBLIC_QUERIES and callable(value):
                    value = value()
                if not callable(value) or name in PUBLIC_QUERIES:
                    kids.append((f"{path}.{name}", value))
        todo += [(p, v, depth + 1) for p, v in kids]
    return out


def test_no_public_name_reaches_the_operator_key_or_an_actuator() -> None:
    for operator in (OperatorKey(), None):
        for scenario in ("pointnav_people", "reach"):
            env = QRobotEnv(scenario, images=False, operator=operator)
            env.reset(seed=0)
            env.step(env.action_space.sample())
            for path, obj in _public_reach(env):
                assert not isinstance(obj, OperatorKey), f"operator key reachable at {path}"
                exposed = [a for a in ACTUATING if hasattr(obj, a)]
                assert not exposed, f"{path} exposes {exposed}"
            env.close()


def _sup(robot: str = "diffbot", **kw: object) -> Supervisor:
    return Supervisor(default_limits(robot, 0.1), (0.5, 1.2), people="none", **kw)


def _state(t: float, **kw: object) -> dict:
    return {"base_pose": np.zeros(3), "base_vel": np.zeros(2), "cmd_vel": np.zeros(2), "time": t, **kw}


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


def test_a_gap_between_valid_commands_is_a_watchdog_fault() -> None:
    sup = _sup()
    assert isinstance(sup.filter(FORWARD, _state(0.0)), SafeCommand)
    out = sup.filter(FORWARD, _state(10.0))  # valid, but after 10 s of silence
    assert isinstance(out, Stop) and "watchdog" in sup.latched and "between valid commands" in sup.latched
    assert isinstance(sup.filter(NEUTRAL, _state(10.1)), Stop)  # re-armed only by the operator
    ok = _sup()
    for k in range(30):  # one period apart: never a fault
        assert isinstance(ok.filter(FORWARD, _state(0.1 * k)), SafeCommand)


def test_the_watchdog_reads_a_monotonic_clock_on_real_robots() -> None:
    now = [100.0]
    sup = _sup(clock=lambda: now[0])
    assert isinstance(sup.filter(FORWARD, _state(0.0)), SafeCommand)
    now[0] += 0.1
    assert isinstance(sup.filter(FORWARD, _state(0.1)), SafeCommand)
    now[0] += 5.0  # the state's clock says 0.1 s passed, the wall clock says 5 s
    assert isinstance(sup.filter(FORWARD, _state(0.2)), Stop) and "watchdog" in sup.latched
    broken = _sup(clock=lambda: "soon")
    assert isinstance(broken.filter(FORWARD, _state(0.0)), Stop) and "clock" in broken.latched
    real = _sup(clock=time.monotonic)
    real.filter(FORWARD, _state(0.0))
    time.sleep(0.3)  # longer than the 0.2 s deadline: the fault does not depend on timing luck
    assert isinstance(real.filter(FORWARD, _state(0.1)), Stop) and "watchdog" in real.latched


@pytest.mark.parametrize(
    "second,why",
    [
        (_state(0.0), "stale"),  # timestamp did not advance
        (_state(-0.1), "time"),  # dt < 0 (and a negative time)
        (_state(float("nan")), "time"),  # non-finite time
        (_state(float("inf")), "time"),
        (_state(0.1, base_pose=np.array([np.nan, 0, 0])), "base_pose"),
        (_state(0.1, base_vel=np.array([0, np.inf])), "base_vel"),
        ({"time": 0.1}, "base_pose"),  # missing keys
        (_state(0.1, cmd_vel=None), "cmd_vel"),
        (_state(0.1, cmd_vel=np.array([3.0, 0.0])), "cmd_vel"),  # beyond what the profile allows
        (_state(0.1, base_pose=np.zeros(2)), "base_pose"),  # wrong shape
        (_state(0.1, base_pose=np.array([1e9, 0.0, 0.0])), "base_pose"),  # implausible
        (_state(0.1, base_pose=np.array(["0", "0", "0"])), "base_pose"),  # strings
        (_state(0.1, base_pose=np.array([True, False, True])), "base_pose"),
        ({**_state(0.1), "time": "0.1"}, "time"),  # a numeric string is not a time
        ({**_state(0.1), "time": True}, "time"),
        ({**_state(0.1), "time": np.datetime64("2026-01-01")}, "time"),
        ("not a dict", "no robot state"),
    ],
)
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


def test_a_policy_cannot_restart_the_supervisors_episode_midway() -> None:
    """A new supervisor episode clears the separation monitor's hold timer and the
    watchdog's timing: only the env does that, in a new world. The view a policy gets has
    verdicts and the e-stop, not `reset`/`filter`/`bind`, and cannot be rebound."""
    env = QRobotEnv("pointnav_people", images=False)
    env.reset(seed=0)
    view = env.unwrapped.supervisor
    for lever in ("reset", "filter", "bind"):
        assert not hasattr(view, lever), lever
    with pytest.raises(AttributeError):
        view.latched = None  # type: ignore[misc]
    view.estop("policy asked to stop")  # stopping is always allowed
    assert view.latched == "policy asked to stop" and view.counts()["estops"] == 1
    assert not view.reset_estop(object()) and view.latched  # releasing is not
    env.close()


def test_a_policy_that_resets_the_env_midway_ends_its_episode_with_the_record_kept() -> None:
    """env.reset() is the gym API, so a policy holding the env can call it: the runner
    notices the new world, ends the episode as `policy_reset_env` (never a success),
    keeps the metrics reported before the reset and latches; with the operator key the
    latch survives the reset the policy made."""
    env = QRobotEnv("pointnav_people", images=False, operator=(key := OperatorKey()))

    class Resets:
        def reset(self, instruction: str) -> None:
            self.n = 0

        def act(self, obs: dict) -> np.ndarray:
            self.n += 1
            if self.n == 12:
                env.reset(seed=99)  # a fresh world: counters and distances would restart
            return np.array([1.0, 0.0, 0.0])

    r = run_episode(env, Resets(), 0, 0, operator=key)
    assert r.end_reason == "policy_reset_env" and not r.success and r.steps == 11
    assert r.metrics["path_length"] > 0.3  # the record of the 11 real steps, not the new world's
    assert env.supervisor.latched and "reset the env" in env.supervisor.latched
    env.close()


def test_a_robot_moving_faster_than_its_limits_is_a_latched_fault() -> None:
    """Pushed by a person, thrown by an impact, a drive out of control: every plan stays
    within the speed limits, so motion beyond them (by 10 %) is motion nobody commanded."""
    sup = _sup()
    assert isinstance(
        sup.filter(FORWARD, _state(0.0, base_vel=np.array([0.5, 1.1]), cmd_vel=np.array([0.2, 0.0]))), SafeCommand
    )  # deflected: fine
    assert isinstance(
        sup.filter(FORWARD, _state(0.05, base_vel=np.array([0.3, 1.64]), cmd_vel=np.array([0.3, 0.0]))), SafeCommand
    )  # spun by a bump
    assert sup.latched is None
    out = sup.filter(FORWARD, _state(0.1, base_vel=np.array([0.9, 0.0]), cmd_vel=np.array([0.2, 0.0])))
    assert isinstance(out, Stop) and "base moving at" in sup.latched
    arm = Supervisor(default_limits("panda", 0.1), (0.025, 0.25), people="none")
    st = Rig("panda").state()
    st["joint_vel"] = np.array([0, 0, 0, 0, 0, 3.0, 0])  # joint 6 thrown by an impact (limit 2.61)
    assert isinstance(arm.filter(np.zeros(5), st), Stop) and "joint 6" in arm.latched


def test_a_person_who_runs_into_the_base_latches_it() -> None:
    from qrobot.scenario import load_scenario

    sc = load_scenario("pointnav_people")
    blind = [p.model_copy(update={"yield_to_robot": False, "speed": 2.0}) for p in sc.people]
    env = QRobotEnv(sc.model_copy(update={"people": blind}), images=False)
    latched = []
    for seed in range(6):
        env.reset(seed=seed)
        for _ in range(150):
            _, _, term, trunc, info = env.step(np.array([0.0, 0.0, -1.0]))  # standing still, waiting
            if info["estop"] or term or trunc:
                break
        latched.append(info["estop"])
    assert any("base moving at" in why for why in latched), latched  # shoved: nobody commanded that
    env.close()
