"""Scripted experts. They read ground truth from the env's privileged channel
(`env.unwrapped.privileged_state`), never from observations."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from qrobot.robots.diffbot import MAX_V, MAX_W
from qrobot.robots.panda import MAX_STEP, MAX_YAW_STEP
from qrobot.sim import yaw_of
from qrobot.tasks.grid import OccupancyGrid

Privileged = Callable[[], dict[str, Any]]


def _free_mask(grid: OccupancyGrid, clearance: int) -> np.ndarray:
    mask = np.zeros_like(grid.blocked)
    cells = grid.free_cells(clearance)
    mask[cells[:, 0], cells[:, 1]] = True
    return mask


def _wrap(a: float) -> float:
    return float(np.arctan2(np.sin(a), np.cos(a)))


def _arm_action(ee: np.ndarray, target: np.ndarray, yaw_err: float, grip: float) -> np.ndarray:
    d = np.clip((target - ee) / MAX_STEP, -1.0, 1.0)
    return np.array([*d, np.clip(yaw_err / MAX_YAW_STEP, -1, 1), grip], dtype=np.float32)


class ReachExpert:
    name = "expert"
    needs_images = False

    def __init__(self, privileged: Privileged) -> None:
        self.privileged = privileged

    def reset(self, instruction: str) -> None:
        pass

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        p = self.privileged()
        return _arm_action(p["robot"]["ee_pos"], p["target"], 0.0, 1.0)


class PickPlaceExpert:
    """Approach, descend, grasp, lift, carry, lower, release (PickPlace and Stack)."""

    name = "expert"
    needs_images = False
    LIFT_Z = 0.14

    def __init__(self, privileged: Privileged) -> None:
        self.privileged = privileged
        self.phase = "approach"
        self.timer = 0

    def reset(self, instruction: str) -> None:
        self.phase, self.timer = "approach", 0

    def _goto(self, phase: str) -> None:
        self.phase, self.timer = phase, 0

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        p = self.privileged()
        r = p["robot"]
        ee, ee_yaw = r["ee_pos"], r["ee_yaw"]
        obj, orn = p["target_pose"]
        place = p["place_point"]
        obj_yaw = yaw_of(orn)
        yaw_err = min((_wrap(obj_yaw + k * np.pi / 2 - ee_yaw) for k in range(4)), key=abs)
        self.timer += 1
        held = np.linalg.norm(obj - ee) < 0.03 and r["gripper_width"] > 0.02
        if self.phase == "approach":
            target = np.array([obj[0], obj[1], obj[2] + 0.1])
            if np.linalg.norm(target[:2] - ee[:2]) < 0.008 and abs(target[2] - ee[2]) < 0.03 and abs(yaw_err) < 0.05:
                self._goto("descend")
            return _arm_action(ee, target, yaw_err, 1.0)
        if self.phase == "descend":
            target = np.array([obj[0], obj[1], obj[2] - 0.004])
            if abs(target[2] - ee[2]) < 0.006 or self.timer > 20:
                self._goto("grasp")
            return _arm_action(ee, target, yaw_err, 1.0)
        if self.phase == "grasp":
            if self.timer >= 4:
                self._goto("lift")
            return _arm_action(ee, ee, 0.0, -1.0)
        if self.phase in ("lift", "carry", "lower") and not held and self.timer > 2:
            self._goto("approach")  # dropped it: start over
            return _arm_action(ee, ee, 0.0, 1.0)
        if self.phase == "lift":
            target = np.array([ee[0], ee[1], self.LIFT_Z])
            if ee[2] > self.LIFT_Z - 0.02:
                self._goto("carry")
            return _arm_action(ee, target, 0.0, -1.0)
        if self.phase == "carry":
            target = np.array([place[0], place[1], self.LIFT_Z])
            if np.linalg.norm(target[:2] - ee[:2]) < 0.006:
                self._goto("lower")
            return _arm_action(ee, target, 0.0, -1.0)
        if self.phase == "lower":
            target = np.array([place[0], place[1], place[2] + 0.006])
            if abs(obj[2] - target[2]) < 0.006 or self.timer > 25:
                self._goto("release")
            return _arm_action(ee, target, 0.0, -1.0)
        if self.phase == "release":
            if self.timer >= 4:
                self._goto("retreat")
            return _arm_action(ee, ee, 0.0, 1.0)
        # retreat: straight up, gripper open
        return _arm_action(ee, np.array([ee[0], ee[1], self.LIFT_Z + 0.05]), 0.0, 1.0)


class NavExpert:
    """Plans on the occupancy grid, follows the path with pure pursuit, yields to
    people ahead, and calls stop inside the goal region.

    ObjectNav: first it turns left in place until the named landmark is in front of it and
    in sight. A camera policy cannot know which way to turn for a landmark it does not see;
    an expert that turned the shorter way (privileged) taught it both ways at once, and
    the regressed waypoints averaged to standing still."""

    name = "expert"
    needs_images = False
    LOOKAHEAD = 0.6
    SEEN_ANGLE = 0.6  # rad off the heading: inside the scenes' 90 deg front camera, with margin
    SEARCH_TURN = 2 * np.pi + 0.5  # rad: a landmark not seen within one turn is out of sight (go anyway)

    def __init__(self, privileged: Privileged) -> None:
        self.privileged = privileged
        self.reset("")

    def reset(self, instruction: str) -> None:
        self.path: np.ndarray | None = None
        self.history: list[np.ndarray] = []
        self.reverse = 0
        self.searched = 0.0  # rad turned while searching; inf once the landmark was seen
        self.last_yaw: float | None = None

    def _searching(self, p: dict, xy: np.ndarray, yaw: float) -> bool:
        """ObjectNav's search: True while the landmark has not yet been in view."""
        if "landmark_xy" not in p or self.searched == np.inf:
            return False
        to = p["landmark_xy"] - xy
        in_view = abs(_wrap(np.arctan2(to[1], to[0]) - yaw)) < self.SEEN_ANGLE and p["landmark_in_sight"]
        if in_view or self.searched > self.SEARCH_TURN:
            self.searched = np.inf
            return False
        if self.last_yaw is not None:
            self.searched += abs(_wrap(yaw - self.last_yaw))
        self.last_yaw = yaw
        return True

    def _plan(self, p: dict, xy: np.ndarray) -> None:
        """Plan with 0.1 m more clearance than the task's grid (pure pursuit cuts corners);
        fall back to the task's grid where that closes the way."""
        grid = p["grid"]
        wide = OccupancyGrid(~_free_mask(grid, 1), grid.origin, grid.res)
        for g in (wide, grid):
            goals = {c for c in p["goal_cells"] if g.free(c)}
            cells = g.astar(g.nearest_free(g.cell(xy)), goals) if goals else None
            if cells is not None:
                end = p["goal_xy"] if "goal_xy" in p else g.center(cells[-1])
                self.path = g.smooth(cells, xy, end)
                return
        self.path = np.array([xy, xy])

    def _planned(self) -> np.ndarray:
        """The current path (act plans one before it follows it)."""
        assert self.path is not None
        return self.path

    def _lookahead(self, xy: np.ndarray) -> tuple[np.ndarray, float]:
        path = self._planned()
        seg_d = [self._point_seg(xy, path[i], path[i + 1]) for i in range(len(path) - 1)]
        k = int(np.argmin(seg_d))
        remaining = self.LOOKAHEAD
        point = xy
        for i in range(k, len(path) - 1):
            a = xy if i == k else path[i]
            seg = float(np.linalg.norm(path[i + 1] - a))
            if seg >= remaining:
                point = a + (path[i + 1] - a) * remaining / max(seg, 1e-9)
                break
            remaining -= seg
            point = path[i + 1]
        return point, float(seg_d[k])

    @staticmethod
    def _point_seg(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        ab = b - a
        t = np.clip(np.dot(x - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0)
        return float(np.linalg.norm(x - (a + t * ab)))

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        p = self.privileged()
        x, y, yaw = p["robot"]["base_pose"]
        xy = np.array([x, y])
        grid = p["grid"]
        if grid.cell(xy) in p["goal_cells"] and ("goal_xy" not in p or np.linalg.norm(p["goal_xy"] - xy) < 0.1):
            return np.array([0.0, 0.0, 1.0], dtype=np.float32)
        if self._searching(p, xy, yaw):
            return np.array([0.0, 1.0, 0.0], dtype=np.float32)
        self.history.append(xy)
        if self.reverse > 0:  # recovering from being stuck against something
            self.reverse -= 1
            if self.reverse == 0:
                self._plan(p, xy)
            return np.array([-0.4, 0.0, 0.0], dtype=np.float32)
        if len(self.history) > 25 and np.linalg.norm(self.history[-1] - self.history[-25]) < 0.05:
            self.history = []
            self.reverse = 6
            return np.array([-0.4, 0.0, 0.0], dtype=np.float32)
        if self.path is None:
            self._plan(p, xy)
        point, off = self._lookahead(xy)
        if off > 0.4:
            self._plan(p, xy)
            point, off = self._lookahead(xy)
        d = point - xy
        alpha = _wrap(np.arctan2(d[1], d[0]) - yaw)
        dist_end = float(np.linalg.norm(self._planned()[-1] - xy))
        v = MAX_V * max(np.cos(alpha), 0.0) ** 2 * min(1.0, 0.3 + dist_end / 0.8) if abs(alpha) < 1.0 else 0.0
        w = np.clip(2.0 * alpha, -MAX_W, MAX_W)
        heading = np.array([np.cos(yaw), np.sin(yaw)])
        for pos, vel, radius in p["people"]:
            rel = pos + 0.8 * vel - xy
            if np.linalg.norm(rel) - radius - p["robot_radius"] < 0.9 and np.dot(rel, heading) > 0:
                v = 0.0
                w = w if abs(w) > 0.1 else 0.15 * np.sign(alpha or 1.0)  # keep turning: waiting is not stopping
        return np.array([v / MAX_V, w / MAX_W, 0.0], dtype=np.float32)
