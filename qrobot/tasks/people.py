"""Moving people: kinematic capsules walking closed waypoint loops."""

from __future__ import annotations

import numpy as np

from qrobot.scenario import Person
from qrobot.sim import Sim

HEIGHT = 1.7


class Walker:
    """One person: position is a pure function of time (plus a per-episode phase)."""

    def __init__(self, sim: Sim, name: str, cfg: Person) -> None:
        self.sim, self.name, self.cfg = sim, name, cfg
        pts = np.asarray(cfg.waypoints, dtype=float)
        self.loop = np.vstack([pts, pts[:1]])
        seg = np.linalg.norm(np.diff(self.loop, axis=0), axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(seg)])
        self.phase = 0.0
        cyl = HEIGHT - 2 * cfg.radius
        sim.add_shape(name, "capsule", [cfg.radius, cyl], [0.95, 0.55, 0.35, 1.0])
        self.position = self.loop[0].copy()
        self.velocity = np.zeros(2)

    def reset(self, rng: np.random.Generator) -> None:
        self.phase = float(rng.uniform(0, self.cum[-1])) if self.cfg.random_phase else 0.0
        self.move(0.0)

    def _at(self, s: float) -> np.ndarray:
        s = s % self.cum[-1] if self.cum[-1] > 0 else 0.0
        k = int(np.clip(np.searchsorted(self.cum, s, side="right") - 1, 0, len(self.cum) - 2))
        seg = self.cum[k + 1] - self.cum[k]
        t = (s - self.cum[k]) / seg if seg > 0 else 0.0
        return self.loop[k] + t * (self.loop[k + 1] - self.loop[k])

    def move(self, time: float) -> None:
        s = self.phase + self.cfg.speed * time
        new = self._at(s)
        self.velocity = (self._at(s + 0.05 * self.cfg.speed) - new) / 0.05
        self.position = new
        self.sim.set_pose(self.name, [new[0], new[1], HEIGHT / 2])
