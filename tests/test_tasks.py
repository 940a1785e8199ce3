"""Task semantics on real worlds: success rules, SPL, collisions, people, geodesics."""

from __future__ import annotations

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv

from qrobot.scenario import Person, load_scenario
from qrobot.tasks.grid import OccupancyGrid

HOLD_ARM = np.array([0, 0, 0, 0, 1.0], np.float32)
STOP = np.array([0, 0, 1.0], np.float32)
STILL = np.zeros(3, np.float32)


def test_geodesic_on_grid() -> None:
    empty = OccupancyGrid.from_boxes((6.0, 6.0), [], inflate=0.3)
    _pts, length = empty.plan(np.array([-2.0, -2.0]), np.array([2.0, 1.0]))
    assert length == pytest.approx(5.0, rel=0.02)  # any-angle smoothing ~ straight line
    walled = OccupancyGrid.from_boxes((6.0, 6.0), [(0.0, -0.5, 0.2, 5.0)], inflate=0.3)
    _, detour = walled.plan(np.array([-2.0, -2.0]), np.array([2.0, -2.0]))
    assert detour > 4.0 + 2 * 1.9  # must go round the wall's top end at y = 2.0 (+inflation)
    closed = OccupancyGrid.from_boxes((6.0, 6.0), [(0.0, 0.0, 0.2, 6.0)], inflate=0.3)
    assert closed.plan(np.array([-2.0, 0.0]), np.array([2.0, 0.0])) is None


def _nav_env(name: str = "pointnav", **update: object) -> QRobotEnv:
    sc = load_scenario(name)
    if update:
        sc = sc.model_copy(update=update)
    return QRobotEnv(sc, images=False)


def test_pointnav_stop_at_goal_succeeds_with_spl() -> None:
    env = _nav_env()
    env.reset(seed=4)
    gx, gy = env.task.goal_xy
    env.robot._reset(gx + 0.1, gy, 0.0)  # teleport next to the goal (test only)
    _, reward, term, _, info = env.step(STOP)
    m = info["metrics"]
    assert term and info["success"] and reward == 0.0
    assert m["spl"] == pytest.approx(m["geodesic"] / max(m["geodesic"], m["path_length"]))
    assert m["spl"] == 1.0  # teleported: path length ~0 < d0
    env.close()


def test_pointnav_stop_far_from_goal_fails() -> None:
    env = _nav_env()
    obs, _ = env.reset(seed=5)
    assert obs["goal"][0] > 1.0
    _, reward, term, _, info = env.step(STOP)
    assert term and not info["success"] and reward == -1.0 and info["metrics"]["spl"] == 0.0
    env.close()


def test_standing_still_for_n_steps_counts_as_stop() -> None:
    env = _nav_env(stop_at_rest_steps=5)
    env.reset(seed=4)
    gx, gy = env.task.goal_xy
    env.robot._reset(gx, gy, 0.0)
    terms = [env.step(STILL)[2] for _ in range(5)]
    assert terms == [False] * 4 + [True] and env.task.success()
    env.close()


def test_goal_vector_is_relative() -> None:
    env = _nav_env()
    env.reset(seed=4)
    gx, gy = env.task.goal_xy
    env.robot._reset(gx - 2.0, gy, 0.0)  # goal straight ahead, 2 m
    rho, phi = env.task.goal()
    assert rho == pytest.approx(2.0, abs=0.01) and phi == pytest.approx(0.0, abs=0.01)
    env.robot._reset(gx - 2.0, gy, np.pi / 2)  # facing +y: goal on the right
    assert env.task.goal()[1] == pytest.approx(-np.pi / 2, abs=0.01)
    env.close()


def test_person_walking_into_robot_is_a_collision() -> None:
    person = Person(waypoints=[[-3.0, 0.0], [3.0, 0.0]], speed=1.0, random_phase=False, yield_to_robot=False)
    env = _nav_env(people=[person])
    env.reset(seed=0)
    env.robot._reset(0.0, 0.0, 0.0)  # on the person's line, 3 m ahead of them
    for _ in range(40):
        env.step(STILL)
    m = env.task.metrics()
    assert m["collisions"] >= 1 and m["min_person_clearance"] < 0.0
    env.close()


def test_objectnav_success_is_distance_to_the_named_landmark() -> None:
    env = _nav_env("objectnav")
    obs, _ = env.reset(seed=2)
    t = env.task
    assert f"{t.colors[t.target]} {t.kinds[t.landmarks.index(t.target)]}" in obs["instruction"]
    cell = sorted(t._goal_cells(0.3))[0]
    x, y = t.grid.center(cell)
    env.robot._reset(x, y, 0.0)
    _, _, term, _, info = env.step(STOP)
    assert term and info["success"] and info["metrics"]["distance_to_goal"] <= 1.0
    env.close()


@pytest.mark.parametrize("name", ["pick_place", "stack"])
def test_placed_object_succeeds_only_when_it_is_the_named_one(name: str) -> None:
    env = QRobotEnv(name, images=False)
    obs, _ = env.reset(seed=1)
    t = env.task
    assert t.colors[t.target_name] in obs["instruction"].split()  # "red cube", "red block", ...
    other = next(c for c in t.cubes if c not in (t.target_name, getattr(t, "base_name", None)))
    env.sim._set_pose(other, t.target_point() + [0, 0, 0.002])
    _, reward, term, _, info = env.step(HOLD_ARM)
    assert not info["success"] and reward == -1.0
    assert t.moved_object() == f"{t.colors[other]} cube"
    env.reset(seed=1)
    env.sim._set_pose(t.target_name, t.target_point() + [0, 0, 0.002])
    _, reward, term, _, info = env.step(HOLD_ARM)
    assert term and info["success"] and reward == 0.0
    env.close()


def test_reach_success_threshold() -> None:
    env = QRobotEnv("reach", images=False)
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs["goal"], env.task.target, atol=1e-6)
    assert not env.task.success()
    env.close()
