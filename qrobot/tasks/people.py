"""Moving people: kinematic capsules walking closed waypoint loops.

People who `yield_to_robot` step around the robot rather than into it (as people do);
others walk their loop regardless (to test what a robot does when it is run into).
"""

from __future__ import annotations

import numpy as np

from qrobot.scenario import Person
from qrobot.sim import Sim

HEIGHT = 1.7


class Walker:
    """One person walking a closed loop at constant speed, from a per-episode phase."""

    def __init__(self, sim: Sim, name: str, cfg: Person) -> None:
        self.sim, self.name, self.cfg = sim, name, cfg
        pts = np.asarray(cfg.waypoints, dtype=float)
        self.loop = np.vstack([pts, pts[:1]])
        seg = np.linalg.norm(np.diff(self.loop, axis=0), axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.phase = 0.0
        self.s = 0.0  # arc length walked along the loop
        cyl = HEIGHT - 2 * cfg.radius
        sim.add_shape(name, "capsule", [cfg.radius, cyl], [0.95, 0.55, 0.35, 1.0])
        self.position = self.loop[0].copy()
        self.velocity = np.zeros(2)

    def reset(self, rng: np.random.Generator) -> None:
        self.phase = float(rng.uniform(0, self.cum[-1])) if self.cfg.random_phase else 0.0
        self.s = self.phase
        self._place(self.s, 0.0)

    def _at(self, s: float) -> np.ndarray:
        s = s % self.cum[-1] if self.cum[-1] > 0 else 0.0
        k = int(np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.cum) - 2))
        seg = self.cum[k + 1] - self.cum[k]
        t = (s - self.cum[k]) / seg if seg > 0 else 0.0
        return self.loop[k] + t * (self.loop[k + 1] - self.loop[k])

    def step(self, dt: float, robot_xy: np.ndarray | None = None, keep_away: float = 0.0) -> None:
        """Walk dt seconds along the loop; a yielding person detours round the robot,
        staying `keep_away` metres from its centre."""
        self.s += self.cfg.speed * dt
        new = self._at(self.s)
        if self.cfg.yield_to_robot and robot_xy is not None:
            off = new - robot_xy
            dist = float(np.linalg.norm(off))
            if dist < keep_away:
                off = off / dist if dist > 1e-9 else np.array([0.0, 1.0])
                new = robot_xy + off * keep_away
        self.velocity = (new - self.position) / dt if dt > 0 else np.zeros(2)
        self.position = new
        self.sim._set_pose(self.name, [new[0], new[1], HEIGHT / 2])

    def _place(self, s: float, speed: float) -> None:
        self.s = s
        self.position = self._at(s)
        self.velocity = np.zeros(2)
        self.sim._set_pose(self.name, [self.position[0], self.position[1], HEIGHT / 2])
