"""The policy contract and trivial baselines."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
from gymnasium import spaces


class Policy(Protocol):
    """reset(instruction) at episode start; act(obs) -> one action per control step.
    A policy with randomness of its own may add `seed_episode(seed)`: a benchmark calls it
    before each episode, so that an episode's result depends only on its seed."""

    name: str
    needs_images: bool

    def reset(self, instruction: str) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


class RandomPolicy:
    """Uniform random actions (seeded)."""

    name = "random"
    needs_images = False

    def __init__(self, action_space: spaces.Box, seed: int = 0) -> None:
        self.space = action_space
        self.rng = np.random.default_rng(seed)

    def reset(self, instruction: str) -> None:
        pass

    def seed_episode(self, seed: int) -> None:
        """Randomness from the episode's seed: the same actions whichever worker runs it."""
        self.rng = np.random.default_rng(seed)

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.rng.uniform(self.space.low, self.space.high).astype(np.float32)


class HoldPolicy:
    """Commands no motion (gripper open): a do-nothing baseline."""

    name = "hold"
    needs_images = False

    def __init__(self, action_space: spaces.Box) -> None:
        self.action = np.zeros(action_space.shape, np.float32)
        if action_space.shape == (5,):
            self.action[4] = 1.0

    def reset(self, instruction: str) -> None:
        pass

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        return self.action.copy()
