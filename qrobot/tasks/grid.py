"""Occupancy grid, A* and any-angle smoothing: geodesic distances for SPL and plans."""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

SQRT2 = float(np.sqrt(2.0))
_MOVES = [
    (1, 0, 1.0),
    (-1, 0, 1.0),
    (0, 1, 1.0),
    (0, -1, 1.0),
    (1, 1, SQRT2),
    (1, -1, SQRT2),
    (-1, 1, SQRT2),
    (-1, -1, SQRT2),
]


@dataclass
class OccupancyGrid:
    """A boolean grid over [-sx/2, sx/2] x [-sy/2, sy/2]; True = blocked."""

    blocked: np.ndarray  # (nx, ny)
    origin: np.ndarray  # world (x, y) of cell (0, 0)'s centre
    res: float

    @classmethod
    def from_boxes(
        cls, size: tuple[float, float], boxes: list[tuple[float, float, float, float]], inflate: float, res: float = 0.1
    ) -> OccupancyGrid:
        """boxes: (cx, cy, sx, sy) full extents; every box and the walls grow by `inflate`."""
        nx, ny = round(size[0] / res), round(size[1] / res)
        origin = np.array([-size[0] / 2 + res / 2, -size[1] / 2 + res / 2])
        xs = origin[0] + res * np.arange(nx)
        ys = origin[1] + res * np.arange(ny)
        gx, gy = np.meshgrid(xs, ys, indexing="ij")
        blocked = (np.abs(gx) > size[0] / 2 - inflate) | (np.abs(gy) > size[1] / 2 - inflate)
        for cx, cy, sx, sy in boxes:
            blocked |= (np.abs(gx - cx) < sx / 2 + inflate) & (np.abs(gy - cy) < sy / 2 + inflate)
        return cls(blocked, origin, res)

    def cell(self, xy: np.ndarray) -> tuple[int, int]:
        i, j = np.round((np.asarray(xy[:2]) - self.origin) / self.res).astype(int)
        return int(np.clip(i, 0, self.blocked.shape[0] - 1)), int(np.clip(j, 0, self.blocked.shape[1] - 1))

    def center(self, cell: tuple[int, int]) -> np.ndarray:
        return self.origin + self.res * np.asarray(cell, dtype=float)

    def free(self, cell: tuple[int, int]) -> bool:
        return not self.blocked[cell]

    def free_cells(self, clearance: int = 0) -> np.ndarray:
        """Free cells, optionally at least `clearance` cells away from any blocked one."""
        blocked = self.blocked
        for _ in range(clearance):
            grown = blocked.copy()
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    grown |= np.roll(np.roll(blocked, dx, 0), dy, 1)
            blocked = grown
        return np.argwhere(~blocked)

    def nearest_free(self, cell: tuple[int, int]) -> tuple[int, int]:
        if self.free(cell):
            return cell
        free = self.free_cells()
        k = int(np.argmin(np.sum((free - np.asarray(cell)) ** 2, axis=1)))
        return int(free[k][0]), int(free[k][1])

    def line_of_sight(self, a: np.ndarray, b: np.ndarray) -> bool:
        """True if the straight segment a-b (world coords) crosses no blocked cell."""
        n = int(np.ceil(np.linalg.norm(b - a) / (self.res * 0.5))) + 1
        for t in np.linspace(0.0, 1.0, n):
            if self.blocked[self.cell(a + t * (b - a))]:
                return False
        return True

    def astar(self, start: tuple[int, int], goals: set[tuple[int, int]]) -> list[tuple[int, int]] | None:
        """8-connected A* (no corner cutting) from start to the nearest of `goals`."""
        if not goals:
            return None
        garr = np.array(sorted(goals), dtype=float)

        def h(c: tuple[int, int]) -> float:
            d = np.abs(garr - c)
            return float(np.min(d.max(1) + (SQRT2 - 1) * d.min(1)))

        nx, ny = self.blocked.shape
        came: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
        cost = {start: 0.0}
        heap = [(h(start), 0.0, start)]
        while heap:
            _, g, cur = heapq.heappop(heap)
            if cur in goals:
                path = [cur]
                prev = came[cur]
                while prev is not None:
                    path.append(prev)
                    prev = came[prev]
                return path[::-1]
            if g > cost[cur]:
                continue
            for di, dj, step in _MOVES:
                nb = (cur[0] + di, cur[1] + dj)
                if not (0 <= nb[0] < nx and 0 <= nb[1] < ny) or self.blocked[nb]:
                    continue
                if di and dj and (self.blocked[cur[0] + di, cur[1]] or self.blocked[cur[0], cur[1] + dj]):
                    continue
                ng = g + step
                if ng < cost.get(nb, np.inf):
                    cost[nb] = ng
                    came[nb] = cur
                    heapq.heappush(heap, (ng + h(nb), ng, nb))
        return None

    def smooth(self, cells: list[tuple[int, int]], start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """String-pull a cell path into world waypoints (any-angle shortcut)."""
        pts = [np.asarray(start[:2], float)] + [self.center(c) for c in cells[1:-1]] + [np.asarray(end[:2], float)]
        out = [pts[0]]
        i = 0
        while i < len(pts) - 1:
            j = len(pts) - 1
            while j > i + 1 and not self.line_of_sight(pts[i], pts[j]):
                j -= 1
            out.append(pts[j])
            i = j
        return np.array(out)

    def plan(self, start: np.ndarray, goal: np.ndarray, goal_radius: float = 0.0) -> tuple[np.ndarray, float] | None:
        """Shortest smoothed path from start to within goal_radius of goal: (waypoints, length)."""
        s = self.nearest_free(self.cell(start))
        if goal_radius <= 0.0:
            goals = {self.nearest_free(self.cell(goal))}
            end = np.asarray(goal[:2], float)
        else:
            free = self.free_cells()
            centres = self.origin + self.res * free
            near = np.linalg.norm(centres - np.asarray(goal[:2]), axis=1) <= goal_radius
            goals = {(int(a), int(b)) for a, b in free[near]}
            end = None
        cells = self.astar(s, goals)
        if cells is None:
            return None
        pts = self.smooth(cells, np.asarray(start[:2], float), end if end is not None else self.center(cells[-1]))
        return pts, float(np.sum(np.linalg.norm(np.diff(pts, axis=0), axis=1)))
