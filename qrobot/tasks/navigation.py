"""Navigation tasks for the mobile base: PointNav and ObjectNav (Habitat semantics).

Success: the agent stops (explicit stop action, or chooses to stand still for
`stop_at_rest_steps` steps) within `success_distance` of the goal.
SPL = S * d0 / max(d0, p): d0 is the geodesic start-goal distance on the
occupancy grid (A* then string-pulling), p the summed Euclidean step lengths.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from qrobot.errors import ScenarioError
from qrobot.robots.diffbot import RADIUS
from qrobot.safety.command import SafeCommand, Stop
from qrobot.scenario import ObjectNavTask, PointNavTask, Scenario
from qrobot.sim import Sim
from qrobot.tasks.base import StateFn, Task, jitter_color
from qrobot.tasks.grid import OccupancyGrid
from qrobot.tasks.people import Walker

WALL_T = 0.1
# landmark kind -> (footprint sx, sy; height; shape)
LANDMARKS = {
    "pillar": (0.4, 0.4, 1.2, "cylinder"),
    "cabinet": (0.7, 0.45, 1.0, "box"),
    "crate": (0.55, 0.55, 0.6, "box"),
}
PlaceFn = Callable[[float, float, float], None]


class _NavTask(Task):
    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn, place_robot: PlaceFn) -> None:
        super().__init__(sim, scenario, robot_state)
        self._place_robot = place_robot
        room = self._scenario.room
        assert room is not None  # the schema requires it for nav tasks
        self.room = room
        sx, sy = room.size
        sim.add_shape("floor", "box", [sx / 2 + 1, sy / 2 + 1, 0.05], [0.62, 0.6, 0.55, 1], pos=[0, 0, -0.05])
        h = WALL_T / 2  # walls stand just outside the room so its free area is exactly size
        walls = [
            (0, sy / 2 + h, sx + 2 * WALL_T, WALL_T),
            (0, -sy / 2 - h, sx + 2 * WALL_T, WALL_T),
            (sx / 2 + h, 0, WALL_T, sy),
            (-sx / 2 - h, 0, WALL_T, sy),
        ]
        self.obstacle_names: list[str] = []
        for i, (cx, cy, wx, wy) in enumerate(walls):
            self._add_box(f"wall{i}", cx, cy, wx, wy, 0.8, "white")
        self.fixed_boxes = [(o.center[0], o.center[1], o.size[0], o.size[1]) for o in room.obstacles]
        for i, o in enumerate(room.obstacles):
            self._add_box(f"obstacle{i}", o.center[0], o.center[1], o.size[0], o.size[1], o.height, o.color)
        # Random obstacles keep one size each (drawn once, seed 0); resets move them.
        self.pool = [f"random_obstacle{i}" for i in range(room.random_obstacles)]
        lo_size, hi_size = room.random_obstacle_size
        sizes = np.random.default_rng(0).uniform(lo_size, hi_size, size=(len(self.pool), 2))
        self.pool_sizes = [(float(a), float(b)) for a, b in sizes]
        for name, (wx, wy) in zip(self.pool, self.pool_sizes):
            self._add_box(name, 0.0, 0.0, wx, wy, 0.6, "brown")
        self.random_boxes: list[tuple[float, float, float, float]] = []
        self._walkers = [Walker(sim, f"person{i}", p) for i, p in enumerate(self._scenario.people)]
        self.grid: OccupancyGrid | None = None
        self._stop_cells: set[tuple[int, int]] = set()
        self.d0 = 0.0
        # Sp(robot speed) from the supervisor's profile, set by the env: measures intrusions.
        self._protective_distance: Callable[[float], float] | None = None
        # The supervisor's keep-out zones, set by the env: no start, goal or planned path in them.
        self._keep_out: list[tuple[float, float, float, float]] = []
        self._reset_episode_stats()

    @property
    def intrusions(self) -> int:
        """Control steps spent driving toward a person inside Sp this episode (read-only)."""
        return self._intrusions

    @property
    def min_person_clearance(self) -> float:
        return self._min_person_clearance

    def _add_box(self, name: str, cx: float, cy: float, wx: float, wy: float, h: float, color: str) -> None:
        self._sim.add_shape(
            name, "box", [wx / 2, wy / 2, h / 2], jitter_color(color, np.random.default_rng(0), 0), pos=[cx, cy, h / 2]
        )
        self.obstacle_names.append(name)

    def _reset_episode_stats(self) -> None:
        self.path_length = 0.0
        self.called_stop = False
        self.rest_steps = 0
        self._min_person_clearance = float("inf")
        self._last_xy: np.ndarray | None = None
        self._chose_rest = False
        self._person_hits: set[str] = set()
        self._intrusions = 0
        self._commanded_speed = 0.0

    # ---------------------------------------------------------------- reset
    def _place_random_obstacles(self, rng: np.random.Generator) -> None:
        sx, sy = self.room.size
        self.random_boxes = []
        for name, (wx, wy) in zip(self.pool, self.pool_sizes):
            c = rng.uniform([-sx / 2 + 1, -sy / 2 + 1], [sx / 2 - 1, sy / 2 - 1])
            self.random_boxes.append((float(c[0]), float(c[1]), wx, wy))
            self._sim._set_pose(name, [c[0], c[1], 0.3])

    def _place_landmarks(self, rng: np.random.Generator) -> None:
        """ObjectNav puts its landmarks before the grid is built."""

    def _extra_boxes(self) -> list[tuple[float, float, float, float]]:
        return []

    def _choose_goal(self, rng: np.random.Generator) -> None:
        raise NotImplementedError

    def _goal_cells(self, margin: float) -> set[tuple[int, int]]:
        """Free cells from which stopping counts as success (shrunk by `margin`)."""
        raise NotImplementedError

    def _grid(self) -> OccupancyGrid:
        """The layout's grid: built by _reset before it chooses a goal or goal cells."""
        assert self.grid is not None
        return self.grid

    def _reset(self, rng: np.random.Generator) -> None:
        super()._reset(rng)
        self._reset_episode_stats()
        for w in self._walkers:
            w.reset(rng)
        lag = math.ceil(self._scenario.sensing.people_latency / self._sim.dt - 1e-9)  # whole periods, never less
        self._seen: deque[np.ndarray] = deque([self._true_people()] * (lag + 1), maxlen=lag + 1)
        self._sense_rng = np.random.default_rng(int(rng.integers(2**62)))
        self._sense()
        lo, hi = cast("PointNavTask | ObjectNavTask", self._scenario.task).geodesic_range  # a nav task's
        for _ in range(200):
            self._place_random_obstacles(rng)
            self._place_landmarks(rng)
            boxes = self.fixed_boxes + self.random_boxes + self._extra_boxes() + self._keep_out
            self.grid = OccupancyGrid.from_boxes((self.room.size[0], self.room.size[1]), boxes, RADIUS + 0.05)
            self._choose_goal(rng)
            roomy = self.grid.free_cells(clearance=2)  # start 0.2 m clear of inflated obstacles
            if len(roomy) == 0:
                continue
            start = self.grid.center(tuple(roomy[int(rng.integers(len(roomy)))]))
            if any(np.linalg.norm(start - w.position) < 1.5 for w in self._walkers):
                continue
            cells = self.grid.astar(self.grid.cell(start), self._goal_cells(0.0))
            if cells is None:
                continue
            goal = self.goal_point()
            end = goal if goal is not None else self.grid.center(cells[-1])
            pts = self.grid.smooth(cells, start, end)
            d0 = float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
            if lo <= d0 <= hi:
                self.d0 = d0
                self._place_robot(float(start[0]), float(start[1]), float(rng.uniform(-np.pi, np.pi)))
                self._stop_cells = self._goal_cells(0.1)  # fixed for the episode
                return
        raise ScenarioError(
            f"{self._scenario.path or self._scenario.name}: task.geodesic_range: no start/goal "
            f"pair {lo}..{hi} m apart found in 200 layouts; widen the range or the room"
        )

    def goal_point(self) -> np.ndarray | None:
        return None

    # ------------------------------------------------------------- stepping
    def _before_physics(self, command: SafeCommand | Stop, raw: Any = None) -> None:
        issued = command.brake if isinstance(command, Stop) else command
        if isinstance(issued, SafeCommand) and issued.values[2] > 0.5:
            self.called_stop = True  # declaring "done" is not motion: honoured during a stop too
        try:
            r = np.asarray(raw, dtype=float)
            self._chose_rest = bool(r.shape == (3,) and np.all(np.abs(r[:2]) < 0.05))
        except (TypeError, ValueError):
            self._chose_rest = False
        xy = self.robot_state()["base_pose"][:2]
        for w in self._walkers:
            w.step(self._sim.dt, xy, RADIUS + w.cfg.radius + 0.1)
        self._commanded_speed = abs(float(issued.values[0])) if isinstance(issued, SafeCommand) else 0.0
        # People are teleported each control period and the solver pushes the robot
        # clear within it, so look for overlap right after the move as well.
        self._person_hits = {w.name for w in self._walkers if self._sim.near("robot", w.name, 0.01)}

    def _after_physics(self) -> None:
        super()._after_physics()
        st = self.robot_state()
        xy = st["base_pose"][:2]
        if self._last_xy is not None:
            self.path_length += float(np.linalg.norm(xy - self._last_xy))
        self._last_xy = xy.copy()
        at_rest = abs(st["base_vel"][0]) < 0.03 and abs(st["base_vel"][1]) < 0.05
        self.rest_steps = self.rest_steps + 1 if (at_rest and self._chose_rest) else 0
        clearance = float("inf")
        heading = np.array([np.cos(st["base_pose"][2]), np.sin(st["base_pose"][2])])
        vel = heading * float(st["base_vel"][0])
        intruded = False
        for w in self._walkers:
            rel = w.position - xy
            dist = float(np.linalg.norm(rel))
            gap = dist - RADIUS - w.cfg.radius
            clearance = min(clearance, gap)
            toward = max(float(rel @ vel) / max(dist, 1e-9), 0.0)  # closing speed on this person
            if (
                self._protective_distance is not None
                and toward > 0.05
                and self._commanded_speed > 0.05
                and gap < self._protective_distance(toward)
            ):
                intruded = True  # driving (not pushed) toward a person inside Sp
        self._min_person_clearance = min(self._min_person_clearance, clearance)
        self._intrusions += int(intruded)
        if self._walkers:
            self._seen.append(self._true_people())
        self._sense()

    def _true_people(self) -> np.ndarray:
        pts = np.array([w.position for w in self._walkers]).reshape(-1, 2)
        pts.setflags(write=False)  # kept for the sensor's latency and handed out: nobody edits it
        return pts

    def _sense(self) -> None:
        """One sensor reading per control period: `people_latency` old, with noise."""
        noise = self._scenario.sensing.people_noise
        seen = self._seen[0]
        if noise > 0 and seen.size:
            seen = seen + self._sense_rng.normal(0.0, noise, seen.shape)
        radii = np.array([w.cfg.radius for w in self._walkers])
        for arr in (seen, radii):
            arr.setflags(write=False)
        self._reading = (seen, radii)

    def sensed_people(self) -> tuple[np.ndarray, np.ndarray]:
        """People positions and radii as the sensor last reported them (a pure query)."""
        return self._reading

    def _obstacle_contacts(self) -> set[str]:
        touching = {n for n in self._sim.contacts_of("robot") if n != "floor"}
        return touching | self._person_hits | {w.name for w in self._walkers if self._sim.near("robot", w.name, 0.01)}

    # -------------------------------------------------------------- queries
    def distance_to_goal(self) -> float:
        raise NotImplementedError

    def stopped(self) -> bool:
        n = self._scenario.stop_at_rest_steps
        return self.called_stop or (n > 0 and self.rest_steps >= n)

    def terminated(self) -> bool:
        return self.stopped()

    def success(self) -> bool:
        return self.stopped() and self.distance_to_goal() <= self._scenario.task.success_distance

    def metrics(self) -> dict:
        s = float(self.success())
        out = super().metrics() | {
            "spl": s * self.d0 / max(self.d0, self.path_length, 1e-9),
            "path_length": self.path_length,
            "geodesic": self.d0,
            "distance_to_goal": self.distance_to_goal(),
        }
        if self._walkers:
            out["min_person_clearance"] = self._min_person_clearance
            out["intrusions"] = float(self._intrusions)
        return out

    def privileged(self) -> dict:
        return {
            "grid": self.grid,
            "goal_cells": self._stop_cells,
            "people": [(w.position.copy(), w.velocity.copy(), w.cfg.radius) for w in self._walkers],
            "robot_radius": RADIUS,
        }


class PointNav(_NavTask):
    """Reach a point given by a relative goal vector (rho, phi), then stop."""

    goal_dim = 2

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn, place_robot: PlaceFn) -> None:
        super().__init__(sim, scenario, robot_state, place_robot)
        self.cfg = cast(PointNavTask, self._scenario.task)  # the env builds PointNav for kind "pointnav" only
        sim.add_shape("goal_marker", "cylinder", [0.12, 0.005], [0.1, 0.9, 0.3, 1.0], collide=False)
        self.goal_xy = np.zeros(2)

    def _reset(self, rng: np.random.Generator) -> None:
        super()._reset(rng)
        # drawn after the scene: with one phrasing (as before) the draw took nothing from
        # rng, so a seed's scene is the one it made then
        self.instruction = self._instruction(rng)

    def _choose_goal(self, rng: np.random.Generator) -> None:
        grid = self._grid()
        free = grid.free_cells()
        self.goal_xy = grid.center(tuple(free[int(rng.integers(len(free)))]))
        self._sim._set_pose("goal_marker", [self.goal_xy[0], self.goal_xy[1], 0.003])

    def goal_point(self) -> np.ndarray | None:
        return self.goal_xy

    def _goal_cells(self, margin: float) -> set[tuple[int, int]]:
        return {self._grid().cell(self.goal_xy)}

    def goal(self) -> np.ndarray:
        pose = self.robot_state()["base_pose"]
        d = self.goal_xy - pose[:2]
        phi = np.arctan2(d[1], d[0]) - pose[2]
        return np.array([np.linalg.norm(d), np.arctan2(np.sin(phi), np.cos(phi))], dtype=np.float32)

    def distance_to_goal(self) -> float:
        return float(np.linalg.norm(self.robot_state()["base_pose"][:2] - self.goal_xy))

    def privileged(self) -> dict:
        return super().privileged() | {"goal_xy": self.goal_xy.copy()}


class ObjectNav(_NavTask):
    """Go to the coloured landmark the instruction names, then stop within reach of it."""

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn, place_robot: PlaceFn) -> None:
        super().__init__(sim, scenario, robot_state, place_robot)
        self.cfg = cast(ObjectNavTask, self._scenario.task)  # the env builds ObjectNav for kind "objectnav" only
        lm = self.cfg.landmarks
        self.landmarks = [f"landmark{i}" for i in range(lm.count)]
        self.kinds = [lm.kinds[i % len(lm.kinds)] for i in range(lm.count)]
        for name, kind in zip(self.landmarks, self.kinds):
            fx, fy, h, shape = LANDMARKS[kind]
            size = [fx / 2, h] if shape == "cylinder" else [fx / 2, fy / 2, h / 2]
            sim.add_shape(name, shape, size, [1, 1, 1, 1])
        self.lm_xy = {n: np.zeros(2) for n in self.landmarks}
        self.colors: dict[str, str] = {}
        self.target = self.landmarks[0]

    def _place_landmarks(self, rng: np.random.Generator) -> None:
        sx, sy = self.room.size
        placed: list[np.ndarray] = []
        blocked = self.fixed_boxes + self.random_boxes + self._keep_out
        for _ in range(5000):
            if len(placed) == len(self.landmarks):
                break
            p = rng.uniform([-sx / 2 + 0.8, -sy / 2 + 0.8], [sx / 2 - 0.8, sy / 2 - 0.8])
            if all(np.linalg.norm(p - q) > 1.6 for q in placed) and all(
                abs(p[0] - b[0]) > b[2] / 2 + 0.6 or abs(p[1] - b[1]) > b[3] / 2 + 0.6 for b in blocked
            ):
                placed.append(p)
        else:
            raise ScenarioError(
                f"{self._scenario.path or self._scenario.name}: task.landmarks.count: room too "
                f"small for {len(self.landmarks)} landmarks among its obstacles"
            )
        palette = list(dict.fromkeys(self.cfg.landmarks.colors))
        for name, kind, p, color in zip(self.landmarks, self.kinds, placed, rng.permutation(palette)):
            h = LANDMARKS[kind][2]
            self.lm_xy[name] = p
            self.colors[name] = str(color)
            self._sim._set_pose(name, [p[0], p[1], h / 2])
            self._sim._set_color(name, jitter_color(str(color), rng, self._scenario.randomize.color_jitter))

    def _choose_goal(self, rng: np.random.Generator) -> None:
        self.target = self.landmarks[int(rng.integers(len(self.landmarks)))]
        kind = self.kinds[self.landmarks.index(self.target)]
        self.instruction = self._instruction(rng, landmark=(self.colors[self.target], kind))

    def _extra_boxes(self) -> list[tuple[float, float, float, float]]:
        return [(*self.lm_xy[n], LANDMARKS[k][0], LANDMARKS[k][1]) for n, k in zip(self.landmarks, self.kinds)]

    def _surface_distance(self, xy: np.ndarray) -> np.ndarray:
        """Distance from points (N, 2) to the target landmark's footprint."""
        fx, fy, _, shape = LANDMARKS[self.kinds[self.landmarks.index(self.target)]]
        d = np.abs(np.atleast_2d(xy) - self.lm_xy[self.target])
        if shape == "cylinder":
            return np.maximum(np.linalg.norm(d, axis=1) - fx / 2, 0.0)
        return np.linalg.norm(np.maximum(d - [fx / 2, fy / 2], 0.0), axis=1)

    def _goal_cells(self, margin: float) -> set[tuple[int, int]]:
        grid = self._grid()
        free = grid.free_cells()
        near = self._surface_distance(grid.origin + grid.res * free) <= self.cfg.success_distance - margin
        return {(int(a), int(b)) for a, b in free[near]}

    def distance_to_goal(self) -> float:
        return float(self._surface_distance(self.robot_state()["base_pose"][:2])[0])

    def privileged(self) -> dict:
        return super().privileged() | {
            "landmark_xy": self.lm_xy[self.target].copy(),
            "landmark_in_sight": self._in_sight(),
        }

    def _in_sight(self) -> bool:
        """Whether nothing stands between the robot (at camera height, just outside its own
        body) and the target landmark's axis: the expert's 'seen it' for its search turn."""
        xy, goal = self.robot_state()["base_pose"][:2], self.lm_xy[self.target]
        to = goal - xy
        start = xy + to / max(float(np.linalg.norm(to)), 1e-9) * (RADIUS + 0.05)
        height = min(LANDMARKS[self.kinds[self.landmarks.index(self.target)]][2] / 2, 0.35)
        return self._sim.first_hit([*start, 0.35], [*goal, height]) == self.target
