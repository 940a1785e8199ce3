"""Scenario overrides may only tighten the robot's profile, key by key; loosening needs the
loud test-only profile, which every summary, run.json and recording shows; safety metrics
are measured against the reference profile whatever the scenario says."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from qrobot.cli import main
from qrobot.errors import ScenarioError
from qrobot.safety.limits import TIGHTEN, override_keys
from qrobot.scenario import load_scenario, scenario_dir, scenario_limits


def _profile_value(robot: str, key: str) -> object:
    sc = load_scenario("reach" if robot == "panda" else "pointnav")
    _, ref = scenario_limits(sc)
    part = ref.arm if robot == "panda" else ref.base
    obj: object = part
    for name in key.split("."):
        obj = getattr(obj, name)
    return obj


def _shift(key: str, value: object, loosen: bool) -> object:
    direction, (lo, hi) = TIGHTEN[key]
    up = (direction == "le") == loosen  # loosening an upper bound raises it, a lower one drops it
    if isinstance(value, tuple):
        return [float(x) + (0.05 if up else -0.05) for x in value]
    factor = 2.0 if up else 0.5
    return float(min(max(value * factor, lo), hi))  # type: ignore[operator]


def _write(tmp_path: Path, robot: str, extra: str) -> Path:
    base = "reach" if robot == "panda" else "pointnav"
    path = tmp_path / f"{base}_over.toml"
    path.write_text((scenario_dir() / f"{base}.toml").read_text() + extra)
    return path


def _toml(value: object) -> str:
    return json.dumps(value)


KEYS = [(robot, key) for robot in ("panda", "diffbot") for key in override_keys(robot) if key != "keep_out"]


@pytest.mark.parametrize("robot,key", KEYS)
def test_every_key_may_tighten_but_not_loosen(tmp_path: Path, robot: str, key: str) -> None:
    profile = _profile_value(robot, key)
    tight = _write(tmp_path, robot, f'\n[limits]\noverrides = {{ "{key}" = {_toml(_shift(key, profile, False))} }}\n')
    sc = load_scenario(tight)  # accepted
    assert scenario_limits(sc)[0] != scenario_limits(sc)[1]
    loose = _write(tmp_path, robot, f'\n[limits]\noverrides = {{ "{key}" = {_toml(_shift(key, profile, True))} }}\n')
    with pytest.raises(ScenarioError) as info:
        load_scenario(loose)
    msg = str(info.value)
    assert msg.startswith(f"{loose}: limits.overrides.{key}: would loosen") and "\n" not in msg
    assert "profile" in msg and "requested" in msg


def test_keep_out_zones_may_only_be_added(tmp_path: Path) -> None:
    sc = load_scenario(_write(tmp_path, "diffbot", "\n[limits]\noverrides = { keep_out = [[1.0, -1.0, 2.0, 1.0]] }\n"))
    assert scenario_limits(sc)[0].base.keep_out == ((1.0, -1.0, 2.0, 1.0),)
    for bad, needle in (
        ("[[2.0, -1.0, 1.0, 1.0]]", "xmin < xmax"),
        ("[[0, 0, 1]]", "must be a list of"),
        ("[[0, 0, 1, 1e9]]", "must be a list of"),
    ):
        with pytest.raises(ScenarioError, match=needle):
            load_scenario(_write(tmp_path, "diffbot", f"\n[limits]\noverrides = {{ keep_out = {bad} }}\n"))


@pytest.mark.parametrize(
    "extra,needle",
    [
        ("overrides = { v_max = 100.0 }", "would loosen the robot's profile (profile 0.5, requested 100)"),
        ('overrides = { "ssm.human_speed" = 0.0, "ssm.reaction_time" = 0.0 }', "would loosen"),
        ("overrides = { bounds_low = [-50.0, -50.0] }", "would loosen"),  # wider than the room
        ("overrides = { v_max = 1e9 }", "must be a finite number in"),
        ("overrides = { v_max = 0.0 }", "must be a finite number in"),
        ("overrides = { v_max = true }", "must be a finite number"),
        ("overrides = { bounds_low = [1.0, 1.0], bounds_high = [0.5, 2.0] }", "must be below"),
    ],
)
def test_loosening_and_absurd_values_are_refused_in_one_line(tmp_path: Path, extra: str, needle: str) -> None:
    path = _write(tmp_path, "diffbot", f"\n[limits]\n{extra}\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert needle in str(info.value) and str(info.value).startswith(str(path)), str(info.value)


def test_the_loud_test_only_profile_loosens_and_is_shown_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = _write(tmp_path, "diffbot", '\n[limits]\nprofile = "test-only-loosen"\noverrides = { v_max = 0.8 }\n')
    sc = load_scenario(path)
    assert scenario_limits(sc)[0].base.v_max == 0.8 and scenario_limits(sc)[1].base.v_max == 0.5
    runs = tmp_path / "runs"
    assert main(["run", str(path), "--episodes", "1", "--runs-dir", str(runs)]) == 0
    out = capsys.readouterr().out
    assert "LIMITS PROFILE test-only-loosen" in out
    run_json = json.loads(next(runs.glob("*/run.json")).read_text())
    assert run_json["limits_profile"] == "test-only-loosen" and run_json["limits_overrides"] == {"v_max": 0.8}
    from qrobot.record.readback import summarize_rrd

    rrd = next(runs.glob("*/*/*.rrd"))
    assert "limits_profile: test-only-loosen" in summarize_rrd(rrd)["result"]


def test_intrusions_are_measured_against_the_reference_profile() -> None:
    from qrobot.envs.core import QRobotEnv

    sc = load_scenario("pointnav_people")
    sc = sc.model_copy(
        update={
            "limits": sc.limits.model_copy(
                update={
                    "profile": "test-only-loosen",
                    "overrides": {
                        "ssm.human_speed": 0.0,
                        "ssm.reaction_time": 0.0,
                        "ssm.intrusion_distance": 0.0,
                        "ssm.human_uncertainty": 0.0,
                        "ssm.robot_uncertainty": 0.0,
                        "ssm.warning_band": 0.0,
                    },
                }
            )
        }
    )
    env = QRobotEnv(sc, images=False)
    ref = env.reference_limits.base.ssm
    assert env.limits.base.ssm.human_speed == 0.0 and ref.human_speed == 1.6
    env.reset(seed=0)
    xy = env.robot.state()["base_pose"][:2]
    for _ in range(200):  # drive at whoever is nearest: zeroed SSM lets it, the metric still sees it
        if env.task.metrics()["intrusions"] > 0:
            break
        target = min(
            (p for p, _, _ in env.unwrapped.privileged_state()["people"]), key=lambda p: np.linalg.norm(p - xy)
        )
        pose = env.robot.state()["base_pose"]
        heading = np.arctan2(*(target - pose[:2])[::-1]) - pose[2]
        env.step(np.array([1.0, np.clip(np.arctan2(np.sin(heading), np.cos(heading)), -1, 1), 0.0]))
        xy = pose[:2]
    assert env.task.metrics()["intrusions"] > 0
    env.close()


def test_a_slower_noisier_people_sensor_widens_the_separation() -> None:
    """The sensor is part of the scenario file: a laggy or noisy one may not shrink the
    margins the profile assumes (reaction time >= latency + one period, Z_d >= 2.5 sigma)."""
    sc = load_scenario("pointnav_people")
    base_limits, _ = scenario_limits(sc)
    assert base_limits.base.ssm.reaction_time == pytest.approx(0.2)  # the default sensor changes nothing
    assert base_limits.base.ssm.human_uncertainty == pytest.approx(0.05)
    laggy = sc.model_copy(
        update={"sensing": sc.sensing.model_copy(update={"people_latency": 0.8, "people_noise": 0.3})}
    )
    effective, reference = scenario_limits(laggy)
    for lim in (effective, reference):  # enforced and measured against alike
        assert lim.base.ssm.reaction_time == pytest.approx(0.9)
        assert lim.base.ssm.human_uncertainty == pytest.approx(0.75)
    from qrobot.safety.ssm import protective_distance

    assert (
        protective_distance(effective.base.ssm, 0.5, effective.base.v_acc)
        > protective_distance(base_limits.base.ssm, 0.5, base_limits.base.v_acc) + 1.5
    )


def test_people_faster_than_the_profile_assumes_widen_the_separation() -> None:
    """A scenario whose people walk faster than v_h = 1.6 m/s (ISO 13855) is measured and
    enforced with their speed; the simulated sensor delay is whole periods, never less
    than declared, and the reaction time covers it."""
    sc = load_scenario("pointnav_people")
    fast = sc.model_copy(update={"people": [p.model_copy(update={"speed": 2.5}) for p in sc.people]})
    effective, reference = scenario_limits(fast)
    assert effective.base.ssm.human_speed == reference.base.ssm.human_speed == 2.5
    slow_hz = sc.model_copy(
        update={"control_hz": 1.0, "sensing": sc.sensing.model_copy(update={"people_latency": 0.6})}
    )
    effective, _ = scenario_limits(slow_hz)
    assert effective.base.ssm.reaction_time == pytest.approx(2.0)  # 0.6 s arrives 1 s late, + 1 period


def test_keep_out_zones_are_never_a_start_or_a_goal() -> None:
    """Zones a scenario adds (a tightening) are blocked on the nav task's grid too: no
    episode starts inside one, and no goal or planned path lies in one."""
    from qrobot.envs.core import QRobotEnv

    from qrobot.safety.base_rules import violation

    sc = load_scenario("pointnav")
    zone = [1.0, -4.0, 4.0, 4.0]  # the east part of the room
    sc = sc.model_copy(update={"limits": sc.limits.model_copy(update={"overrides": {"keep_out": [zone]}})})
    env = QRobotEnv(sc, images=False)
    for seed in range(20):
        env.reset(seed=seed)
        x, y, _ = env.robot_state()["base_pose"]
        assert violation(x, y, env.limits.base) <= 0.0, seed
        goal = env.privileged_state()["goal_xy"]
        assert not (zone[0] - 0.29 < goal[0] < zone[2] + 0.29), (seed, goal)
    env.close()
