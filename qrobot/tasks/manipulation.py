"""Tabletop tasks for the Panda: Reach, PickPlace, Stack.

The table top is the plane z = 0; the arm's base stands at the origin.
"""

from __future__ import annotations

from typing import cast

import numpy as np

from qrobot.errors import ScenarioError
from qrobot.scenario import PickPlaceTask, ReachTask, Scenario, StackTask
from qrobot.sim import Sim, pybullet
from qrobot.tasks.base import StateFn, Task, jitter_color

FINGER_LINKS = (9, 10)
BOWL_WALL = 0.035  # wall height (m)
BOWL_FLOOR = 0.006


def build_table(sim: Sim) -> None:
    sim.add_shape("table", "box", [0.6, 0.6, 0.05], [0.78, 0.66, 0.52, 1.0], pos=[0.35, 0.0, -0.05], friction=1.0)
    sim.add_shape("floor", "box", [3.0, 3.0, 0.01], [0.3, 0.3, 0.32, 1.0], pos=[0.35, 0, -0.8])


def sample_xy(
    rng: np.random.Generator,
    low: list[float],
    high: list[float],
    n: int,
    spacing: float,
    taken: list[np.ndarray] | None = None,
    taken_spacing: float = 0.0,
) -> list[np.ndarray]:
    """n points in the box [low, high] at least `spacing` apart (rejection sampling)."""
    out: list[np.ndarray] = []
    for _ in range(2000):
        p = rng.uniform(low[:2], high[:2])
        if all(np.linalg.norm(p - q) >= spacing for q in out) and all(
            np.linalg.norm(p - q) >= taken_spacing for q in (taken or [])
        ):
            out.append(p)
            if len(out) == n:
                return out
    raise ScenarioError(
        f"task.region: no placement of {n} objects {spacing:.2f} m apart found in 2000 draws; "
        "widen the region or lower the count"
    )


class Reach(Task):
    """Move the end effector within `success_distance` of a target point."""

    goal_dim = 3

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn) -> None:
        super().__init__(sim, scenario, robot_state)
        self.cfg = cast(ReachTask, self._scenario.task)  # the task registry builds Reach for kind "reach" only
        build_table(sim)
        sim.add_shape("target", "sphere", [0.02], [0.1, 0.9, 0.2, 0.6], collide=False)
        self.target = np.zeros(3)

    def _reset(self, rng: np.random.Generator) -> None:
        super()._reset(rng)
        self.target = rng.uniform(self.cfg.target_region.low, self.cfg.target_region.high)
        self._sim._set_pose("target", self.target.tolist())
        self.instruction = self._instruction(rng)

    def _distance(self) -> float:
        return float(np.linalg.norm(self.robot_state()["ee_pos"] - self.target))

    def goal(self) -> np.ndarray:
        return self.target.astype(np.float32)

    def success(self) -> bool:
        return self._distance() < self.cfg.success_distance

    def _obstacle_contacts(self) -> set[str]:
        return {"table"} if self._sim.contact_links("robot", "table") - set(FINGER_LINKS) else set()

    def metrics(self) -> dict:
        return super().metrics() | {"distance": self._distance()}

    def privileged(self) -> dict:
        return {"target": self.target.copy()}


class _Tabletop(Task):
    """Coloured cubes (and bowls) on the table; the instruction names them."""

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn) -> None:
        super().__init__(sim, scenario, robot_state)
        self.cfg = cast("PickPlaceTask | StackTask", self._scenario.task)  # kinds "pick_place", "stack"
        build_table(sim)
        objs = self.cfg.objects
        h = objs.size / 2
        self.cubes = [f"cube{i}" for i in range(objs.count)]
        for name in self.cubes:
            sim.add_shape(name, "box", [h, h, h], [1, 1, 1, 1], mass=objs.mass, friction=1.2)
        self.colors: dict[str, str] = {}
        self.start: dict[str, np.ndarray] = {}
        self.target_name = self.cubes[0]

    def _place_cubes(self, rng: np.random.Generator, xy: list[np.ndarray]) -> None:
        objs = self.cfg.objects
        palette = list(dict.fromkeys(objs.colors))
        for name, color, p in zip(self.cubes, rng.permutation(palette), xy):
            self.colors[name] = str(color)
            yaw = rng.uniform(-np.pi / 4, np.pi / 4)
            orn = pybullet.getQuaternionFromEuler([0, 0, yaw])
            self._sim._set_pose(name, [p[0], p[1], objs.size / 2], orn)
            self._sim._set_color(name, jitter_color(str(color), rng, self._scenario.randomize.color_jitter))
        self.start = {n: self._sim.pose(n)[0] for n in self.cubes}

    def _held(self, name: str) -> bool:
        return self._once(f"held:{name}", lambda: bool(self._sim.contact_links("robot", name) & set(FINGER_LINKS)))

    def _obstacle_contacts(self) -> set[str]:
        return {"table"} if self._sim.contact_links("robot", "table") - set(FINGER_LINKS) else set()

    def target_point(self) -> np.ndarray:
        raise NotImplementedError

    def _distance(self) -> float:
        return self._once(
            "distance", lambda: float(np.linalg.norm(self._sim.pose(self.target_name)[0] - self.target_point()))
        )

    def success(self) -> bool:
        return self._distance() < self.cfg.success_distance and not self._held(self.target_name)

    def moved_object(self) -> str:
        """The cube displaced most from its start pose (for instruction-following checks)."""
        shift = {n: float(np.linalg.norm(self._sim.pose(n)[0][:2] - self.start[n][:2])) for n in self.cubes}
        best = max(shift, key=shift.__getitem__)
        return f"{self.colors[best]} cube" if shift[best] > 0.02 else ""

    def metrics(self) -> dict:
        return super().metrics() | {"distance": self._distance()}

    def privileged(self) -> dict:
        poses = {n: self._sim.pose(n) for n in self.cubes}
        return {
            "target": self.target_name,
            "target_pose": poses[self.target_name],
            "place_point": self.target_point(),
            "cube_size": self.cfg.objects.size,
            "poses": poses,
            "colors": dict(self.colors),
        }


class PickPlace(_Tabletop):
    """Put the named cube into the named bowl; the other cubes are distractors."""

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn) -> None:
        super().__init__(sim, scenario, robot_state)
        self.cfg: PickPlaceTask
        s = self.cfg.receptacles.size / 2
        t = 0.006
        parts = [([s, s, BOWL_FLOOR / 2], [0, 0, BOWL_FLOOR / 2])]
        for sx, sy, ox, oy in ((t, s, s - t, 0), (t, s, -s + t, 0), (s, t, 0, s - t), (s, t, 0, -s + t)):
            parts.append(([sx, sy, BOWL_WALL / 2], [ox, oy, BOWL_WALL / 2]))
        self.bowls = [f"bowl{i}" for i in range(self.cfg.receptacles.count)]
        for name in self.bowls:
            sim.add_compound(name, parts, [1, 1, 1, 1])
        self.bowl_colors: dict[str, str] = {}
        self.target_bowl = self.bowls[0]

    def _reset(self, rng: np.random.Generator) -> None:
        super()._reset(rng)
        r, objs, rec = self.cfg.region, self.cfg.objects, self.cfg.receptacles
        bowl_xy = sample_xy(rng, r.low, r.high, rec.count, rec.size + 0.04)
        cube_xy = sample_xy(rng, r.low, r.high, objs.count, objs.min_spacing, bowl_xy, rec.size / 2 * 1.42 + objs.size)
        for name, color, p in zip(self.bowls, rng.permutation(list(dict.fromkeys(rec.colors))), bowl_xy):
            self.bowl_colors[name] = str(color)
            self._sim._set_pose(name, [p[0], p[1], 0.0])
            self._sim._set_color(name, jitter_color(str(color), rng, self._scenario.randomize.color_jitter))
        self._place_cubes(rng, cube_xy)
        self.target_name = self.cubes[int(rng.integers(len(self.cubes)))]
        self.target_bowl = self.bowls[int(rng.integers(len(self.bowls)))]
        self.instruction = self._instruction(
            rng, object=(self.colors[self.target_name], "cube"), receptacle=(self.bowl_colors[self.target_bowl], "bowl")
        )

    def target_point(self) -> np.ndarray:
        p = self._sim.pose(self.target_bowl)[0]
        return np.array([p[0], p[1], BOWL_FLOOR + self.cfg.objects.size / 2])

    def privileged(self) -> dict:
        return super().privileged() | {"receptacle": self.target_bowl}


class Stack(_Tabletop):
    """Put the named cube on top of another named cube."""

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn) -> None:
        super().__init__(sim, scenario, robot_state)
        self.cfg: StackTask
        self.base_name = self.cubes[1]

    def _reset(self, rng: np.random.Generator) -> None:
        super()._reset(rng)
        r, objs = self.cfg.region, self.cfg.objects
        self._place_cubes(rng, sample_xy(rng, r.low, r.high, objs.count, objs.min_spacing))
        pick, base = rng.choice(len(self.cubes), size=2, replace=False)
        self.target_name, self.base_name = self.cubes[int(pick)], self.cubes[int(base)]
        self.instruction = self._instruction(
            rng, object=(self.colors[self.target_name], "cube"), base=(self.colors[self.base_name], "cube")
        )

    def target_point(self) -> np.ndarray:
        return self._sim.pose(self.base_name)[0] + np.array([0, 0, self.cfg.objects.size])

    def privileged(self) -> dict:
        return super().privileged() | {"base": self.base_name}
