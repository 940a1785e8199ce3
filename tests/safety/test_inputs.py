"""What the supervisor reads: every robot-state field required, typed and range-checked
(a fault latches), a people report required where people can be (a dropout is a
protective stop), and only real numeric actions (anything else is a controlled stop with
an event) — field by field, type by type, through the public gym API too."""

from __future__ import annotations

import datetime
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import qrobot.envs  # noqa: F401  (registers the ids)
import torch
from qrobot.envs.core import QRobotEnv

from qrobot.runner import run_episode
from qrobot.safety.command import SafeCommand, Stop
from qrobot.safety.inputs import fields, read_action
from qrobot.safety.limits import default_limits

from .conftest import Rig

ARM_STATE_FIELDS = sorted(fields(default_limits("panda", 0.1)))
BASE_STATE_FIELDS = sorted(fields(default_limits("diffbot", 0.1)))
BAD_VALUES = {
    "missing": None,
    "nan": np.nan,
    "inf": np.inf,
    "string": "1.0",
    "bool": True,
    "wrong shape": np.zeros(11),
    "huge": 1e12,
    "object": object(),
}


def _bad(state: dict, key: str, how: str) -> dict:
    out = dict(state)
    if how == "missing":
        del out[key]
    elif how in ("nan", "inf", "huge"):
        arr = np.array(out[key], dtype=float)
        arr.reshape(-1)[0] = BAD_VALUES[how]
        out[key] = arr if arr.ndim else float(arr)
    elif how == "string":
        out[key] = np.array(out[key], dtype=float).astype(str)
    elif how == "bool":
        out[key] = np.ones(np.shape(out[key]), dtype=bool) if np.ndim(out[key]) else True
    else:
        out[key] = BAD_VALUES[how]
    return out


@pytest.mark.parametrize("robot", ["panda", "diffbot"])
def test_every_robot_state_field_is_required_typed_and_range_checked(robot: str) -> None:
    rig = Rig(robot)
    keys = (ARM_STATE_FIELDS if robot == "panda" else BASE_STATE_FIELDS) + ["time"]
    action = np.array([1.0, 0, 0, 0, 1]) if robot == "panda" else np.array([1.0, 0, 0])
    for key in keys:
        for how in BAD_VALUES:
            rig.sup.reset_estop(rig.key, rearm=False)
            rig.sup.reset()
            assert isinstance(rig.sup.filter(action, rig.state()), SafeCommand)
            rig.sim.step()
            out = rig.sup.filter(action, _bad(rig.state(), key, how))
            assert isinstance(out, Stop) and rig.sup.latched, (key, how)
            assert "sensor fault" in rig.sup.latched and key in rig.sup.latched, (key, how, rig.sup.latched)
            rig.sim.step()
    rig.sim.close()


def test_a_nan_end_effector_velocity_near_a_person_stops_the_arm() -> None:
    rig = Rig("panda", people="sensor")
    person = {"people": np.array([[0.9, 0.0]]), "people_radius": 0.25}
    for _ in range(3):
        rig.step(np.array([1.0, 0, 0, 0, 1]), **person)
    st = rig.state(**person)
    st["ee_lin_vel"] = np.array([np.nan, 0.0, 0.0])
    out = rig.sup.filter(np.array([1.0, 0, 0, 0, 1]), st)
    assert isinstance(out, Stop) and "ee_lin_vel" in rig.sup.latched
    rig.sim.close()


PEOPLE_REPORTS = {
    "missing": {},
    "radius missing": {"people": np.array([[5.0, 5.0]])},
    "negative radius": {"people": np.array([[5.0, 5.0]]), "people_radius": -10.0},
    "absurd radius": {"people": np.array([[5.0, 5.0]]), "people_radius": 50.0},
    "radius as string": {"people": np.array([[5.0, 5.0]]), "people_radius": "0.25"},
    "nan position": {"people": np.array([[np.nan, 5.0]]), "people_radius": 0.25},
    "odd shape": {"people": np.array([[5.0, 5.0, 1.0]]), "people_radius": 0.25},
    "radii count": {"people": np.array([[5.0, 5.0]]), "people_radius": np.array([0.25, 0.25])},
    "as a list": {"people": [[5.0, 5.0]], "people_radius": 0.25},
}


@pytest.mark.parametrize("report", sorted(PEOPLE_REPORTS))
def test_a_people_dropout_is_a_protective_stop_not_nobody_there(report: str) -> None:
    rig = Rig("diffbot", people="sensor")
    good = {"people": np.array([[5.0, 5.0]]), "people_radius": 0.25}
    for _ in range(5):
        assert isinstance(rig.step(np.array([1.0, 0, 0]), **good), SafeCommand)
    outs = [rig.step(np.array([1.0, 0, 0]), **PEOPLE_REPORTS[report]) for _ in range(8)]
    assert all(isinstance(o, Stop) for o in outs) and not rig.sup.latched and rig.sup.protective
    assert rig.speed() < 0.01  # a controlled stop, then at rest
    assert [e.rule for e in rig.sup.events].count("protective_stop") == 1
    resumed = [rig.step(np.array([1.0, 0, 0]), **good) for _ in range(12)]  # back, and clear for 1 s
    assert isinstance(resumed[-1], SafeCommand) and isinstance(resumed[0], Stop)
    rig.sim.close()


def test_without_a_people_source_motion_is_refused() -> None:
    rig = Rig("diffbot", people=None)
    outs = [rig.step(np.array([1.0, 0, 0])) for _ in range(5)]
    assert all(isinstance(o, Stop) for o in outs) and rig.speed() < 1e-3
    assert [e.rule for e in rig.sup.events] == ["no_people_source"]
    declared = Rig("diffbot", people="none")  # "nobody can be here", yet a report arrives: it counts
    st = declared.state(people=np.array([[0.5, 0.0]]), people_radius=0.25)
    assert isinstance(declared.sup.filter(np.array([1.0, 0, 0]), st), Stop) and declared.sup.protective
    rig.sim.close()
    declared.sim.close()


def test_a_scenario_without_a_people_declaration_does_not_move(tmp_path: Any) -> None:
    from qrobot.scenario import load_scenario, scenario_dir

    text = (
        (scenario_dir() / "objectnav.toml").read_text().replace('people = "none"', "")
    )  # (no `extends`: nothing inherited declares people)
    path = tmp_path / "undeclared.toml"
    path.write_text(text)
    env = QRobotEnv(load_scenario(path), images=False)
    env.reset(seed=0)
    start = env.robot.state()["base_pose"].copy()
    for _ in range(10):
        env.step(np.array([1.0, 0.0, 0.0]))
    assert np.linalg.norm(env.robot.state()["base_pose"][:2] - start[:2]) < 1e-3
    assert env.supervisor.counts()["no_people_source"] == 1
    env.close()


ODD_ACTIONS = {
    "int beyond float": [10**400, 0, 0],
    "numeric strings": ["0.9", "0", "0"],
    "bytes": b"\x01\x02\x03",
    "bools": [True, False, True],
    "bool array": np.array([True, False, True]),
    "datetime64": np.array(["2026-01-01"] * 3, dtype="datetime64[D]"),
    "datetimes": [datetime.datetime(2026, 1, 1)] * 3,
    "timedelta64": np.array([1, 2, 3], dtype="timedelta64[s]"),
    "structured": np.zeros(3, dtype=[("v", "f8")]),
    "masked": np.ma.masked_array([0.5, 0.0, 0.0], mask=[0, 1, 0]),
    "object array": np.array([0.5, 0.0, 0.0], dtype=object),
    "complex": np.array([0.5 + 1j, 0, 0]),
    "nested": [[0.5], [0.0], [0.0]],
    "none inside": [0.5, None, 0.0],
    "bool tensor": torch.tensor([True, False, True]),
    "complex tensor": torch.tensor([0.5 + 1j, 0, 0]),
    "matrix": np.zeros((1, 3)),
}


@pytest.mark.parametrize("kind", sorted(ODD_ACTIONS))
def test_odd_actions_are_a_controlled_stop_with_an_event_through_gym(kind: str) -> None:
    env = gym.make("qrobot/PointNav-v0", images=False)
    env.reset(seed=0)
    for _ in range(8):
        env.step(np.array([1.0, 0.0, 0.0]))
    speed = env.unwrapped.robot.state()["base_vel"][0]
    _, _, _, _, info = env.step(ODD_ACTIONS[kind])  # never raises
    sup = env.unwrapped.supervisor
    assert isinstance(env.unwrapped.last_command, Stop) and sup.last_action is None
    assert sup.events[-1].rule == "reject" and sup.events[-1].severity == "error", kind
    assert env.unwrapped.robot.state()["base_vel"][0] < speed  # braking, within limits
    assert info["safety"]["reject"] == 1
    env.close()


def test_real_numeric_actions_of_any_flavour_are_accepted_as_copies() -> None:
    grad = torch.tensor([0.4, 0.0, 0.0], requires_grad=True)
    for action in (
        [0.4, 0, 0],
        (0.4, 0.0, 0.0),
        np.array([0.4, 0, 0], np.float16),
        np.array([1, 0, 0], np.int8),
        [np.float32(0.4), np.int64(0), 0],
        grad,
        grad.double(),
        torch.tensor([1, 0, 0]),
    ):
        arr, why = read_action(action, 3)
        assert arr is not None and why == "" and not arr.flags.writeable, (action, why)
        assert arr.dtype == np.float64 and arr.shape == (3,)
    env = QRobotEnv("pointnav", images=False)
    env.reset(seed=0)
    env.step([10**30, 0, 0])  # a Python int beyond 64 bits: a number, clamped, never a crash
    assert env.supervisor.events[0].rule == "clamp" and env.supervisor.last_action[0] == 1e30
    env.step(grad * 2)  # a tensor that requires grad: detached, then used
    assert env.supervisor.last_action[0] == pytest.approx(0.8) and grad.grad is None
    env.close()


def test_the_task_sees_the_validated_copy_not_the_raw_object() -> None:
    class Shifty(list):
        """A list whose contents change after the supervisor looked at it."""

        def __iter__(self):
            self.calls = getattr(self, "calls", 0) + 1
            return iter([0.0, 0.0, 0.0] if self.calls > 1 else [1.0, 0.0, 1.0])

    env = QRobotEnv("pointnav", images=False)
    env.reset(seed=0)
    env.step(Shifty([1.0, 0.0, 1.0]))
    assert env.supervisor.last_action is None  # a list subclass is not a plain list: refused
    assert not env.task.called_stop
    env.step(np.array([0.0, 0.0, 0.9]))
    assert env.task.called_stop  # the validated stop flag reached the task
    env.close()


def test_an_env_error_ends_only_that_episode_with_a_complete_recording(tmp_path: Any) -> None:
    from qrobot.record import EpisodeRecorder
    from qrobot.record.readback import summarize_rrd

    env = QRobotEnv("pointnav", images=False)

    class Breaks:
        name = "breaks"
        broke = False

        def reset(self, instruction: str) -> None:
            self.n = 0

        def act(self, obs: dict) -> np.ndarray:
            self.n += 1
            if self.n == 4 and not Breaks.broke:
                Breaks.broke = True
                env.task._before_physics = None  # the world breaks mid-episode (a bug, not the policy)
            return np.array([1.0, 0.0, 0.0])

    rec = EpisodeRecorder(tmp_path / "ep.rrd", "pointnav", "ep-env-error")
    r = run_episode(env, Breaks(), 0, 0, rec)
    assert r.end_reason == "env_error" and "TypeError" in r.error
    s = summarize_rrd(tmp_path / "ep.rrd")
    assert s["complete"] and "end_reason: env_error" in s["result"]
    r2 = run_episode(env, Breaks(), 1, 1)
    assert r2.end_reason != "env_error"
    env.close()


def test_a_nan_hides_nowhere() -> None:
    """Python's max() skips NaN when it is not first: every position and container."""
    from qrobot.safety.inputs import read_people, real_array

    for i in range(3):
        vals = [0.5, -1e308, 2.0]
        vals[i] = float("nan")
        for container in (list, np.array):
            assert real_array(container(vals), (3,)) is None
            assert read_action(container(vals), 3)[0] is None
        assert read_people({"people": np.array([vals[:2], [1.0, 1.0]]), "people_radius": 0.25}) is None
        assert real_array(np.array(vals + [np.inf])[1:], (3,)) is None
