"""Imperfect base policies: where collisions come from (world-model data, foresight tests).

`NoisyExpert` follows the scripted expert but now and then drifts: it holds a random
forward-biased command for a while (a distracted driver), plus Gaussian noise.
`WanderPolicy` holds random forward-biased commands for random spans (no goal at all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def _drift_action(rng: np.random.Generator) -> np.ndarray:
    """A random command biased forward: mostly driving, sometimes turning hard."""
    return np.array([rng.uniform(-0.3, 1.0), rng.uniform(-0.8, 0.8), 0.0], np.float32)


class WanderPolicy:
    """Random persistent commands: each held for 5-20 steps."""

    name = "wander"
    needs_images = False

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.action = np.zeros(3, np.float32)
        self.left = 0

    def reset(self, instruction: str) -> None:
        self.left = 0

    def seed_episode(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if self.left <= 0:
            self.action, self.left = _drift_action(self.rng), int(self.rng.integers(5, 21))
        self.left -= 1
        return self.action.copy()


class NoisyExpert:
    """The expert, with a drift of 5-25 held random steps starting with probability
    `drift` per step, and Gaussian noise of std `noise` on (v, w)."""

    name = "noisy-expert"
    needs_images = False

    def __init__(self, expert: Any, seed: int = 0, drift: float = 0.04, noise: float = 0.15) -> None:
        self.expert = expert
        self.rng = np.random.default_rng(seed)
        self.drift, self.noise = drift, noise
        self.held = np.zeros(3, np.float32)
        self.left = 0

    def reset(self, instruction: str) -> None:
        self.expert.reset(instruction)
        self.left = 0

    def seed_episode(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        action = np.asarray(self.expert.act(obs), np.float32).copy()  # keeps the expert's state current
        if self.left <= 0 and self.rng.random() < self.drift:
            self.held, self.left = _drift_action(self.rng), int(self.rng.integers(5, 26))
        if self.left > 0:
            self.left -= 1
            action = self.held.copy()
        action[:2] += self.rng.normal(0.0, self.noise, 2).astype(np.float32)
        return np.clip(action, -1.0, 1.0)


def make_noisy(kind: str, expert_factory: Callable[[], Any], seed: int) -> Any:
    """'noisy-expert' or 'wander' for a base robot."""
    return NoisyExpert(expert_factory(), seed) if kind == "noisy-expert" else WanderPolicy(seed)
