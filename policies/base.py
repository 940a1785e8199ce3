"""The policy contract and trivial baselines."""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any, Protocol

import numpy as np
from gymnasium import spaces


class Policy(Protocol):
    """reset(instruction) at episode start; act(obs) -> one action per control step.
    A policy with randomness of its own may add `seed_episode(seed)`: a benchmark calls it
    before each episode, so that an episode's result depends only on its seed.

    A policy that can serve several episodes with one forward pass may add
    `act_batch(observations, clients) -> actions` (see BatchPolicy)."""

    name: str
    needs_images: bool

    def reset(self, instruction: str) -> None: ...

    def act(self, obs: dict[str, Any]) -> np.ndarray: ...


class BatchPolicy(Policy, Protocol):
    """The optional batched part of the protocol (`qrobot bench --policy-gpus`: a policy
    actor serves the episodes of several env workers at once). observations[i] belongs to
    the episode of clients[i] (any hashable id, one per env worker); each client keeps its
    own episode state (instruction, action queue, noise generator, ...), begun by
    `reset(instruction, client=c)` and re-seeded by `seed_episode(seed, client=c)`. The
    plain `reset(instruction)` / `act(obs)` drive the client None. A client's actions equal
    those `act` gives for the same episode within float32 tolerance (batched matrix
    products add up in another order), and thresholded choices (gripper, stop) are equal."""

    def reset(self, instruction: str, client: Hashable = None) -> None: ...

    def seed_episode(self, seed: int, client: Hashable = None) -> None: ...

    def act_batch(self, observations: Sequence[dict[str, Any]], clients: Sequence[Hashable]) -> list[np.ndarray]: ...


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
