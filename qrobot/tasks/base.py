"""The task contract shared by manipulation and navigation tasks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import numpy as np

from qrobot.palette import COLORS
from qrobot.safety.command import SafeCommand, Stop
from qrobot.scenario import Phrasing, Scenario, render
from qrobot.sim import Sim

StateFn = Callable[[], dict]


def jitter_color(name: str, rng: np.random.Generator, amount: float) -> list[float]:
    """A palette colour, optionally perturbed (domain randomisation)."""
    rgba = np.array(COLORS[name])
    if amount > 0:
        rgba[:3] = np.clip(rgba[:3] + rng.uniform(-amount, amount, 3), 0.0, 1.0)
    return rgba.tolist()


class Task:
    """Builds its props once, then per episode: reset(rng), observe via goal(),
    reward(), success(), metrics(). Gets the robot's state as a callable, not the robot."""

    goal_dim = 0  # size of the `goal` observation, 0 = none

    def __init__(self, sim: Sim, scenario: Scenario, robot_state: StateFn) -> None:
        self._sim = sim
        self._scenario = scenario.model_copy(deep=True)  # private: public objects can be mutated
        self._robot_state = robot_state
        self.instruction = ""
        self.phrasing: Phrasing = "seen"  # "held-out": the env was built with phrasing="held-out"
        self._steps = 0
        self._collisions = 0
        self._touching: set[str] = set()
        self._memo: dict[str, Any] = {}
        self._memo_version = -1

    @property
    def sim(self) -> Sim:
        return self._sim

    def robot_state(self) -> dict:
        """The robot's state this step (the env's read-only copy)."""
        return self._robot_state()

    @property
    def scenario(self) -> Scenario:
        """A copy of the scenario this task was built from (changing it changes nothing)."""
        return self._scenario.model_copy(deep=True)

    @property
    def steps(self) -> int:
        """Control steps this episode (read-only)."""
        return self._steps

    @property
    def collisions(self) -> int:
        """Contact onsets with obstacles and people this episode (read-only)."""
        return self._collisions

    def _once(self, key: str, fn: Callable[[], Any]) -> Any:
        """Compute fn() once per physics state (reward, success, metrics all ask)."""
        if self._memo_version != self._sim.version:
            self._memo, self._memo_version = {}, self._sim.version
        if key not in self._memo:
            self._memo[key] = fn()
        return self._memo[key]

    # lifecycle ---------------------------------------------------------------
    def _reset(self, rng: np.random.Generator) -> None:
        self._steps = 0
        self._collisions = 0
        self._touching = set()
        if self._scenario.randomize.light:
            d = rng.normal(size=3)
            d[2] = abs(d[2]) + 1.0
            self._sim._set_light(d.tolist())

    def _instruction(self, rng: np.random.Generator, **slots: tuple[str, str]) -> str:
        """This episode's sentence. The template is drawn from the training phrasings with the
        scene's generator whatever the phrasing, so a seed makes the same scene either way; with
        phrasing "held-out" the one said is then drawn from the held-out phrasings on a stream
        of its own (a jumped copy of the generator: `rng` does not advance)."""
        task = self._scenario.task
        template = str(rng.choice(task.instructions))
        if self.phrasing == "held-out":
            bits = cast("np.random.PCG64", rng.bit_generator)  # gymnasium's np_random (any with jumped())
            template = str(np.random.Generator(bits.jumped()).choice(task.held_out_instructions))
        return render(template, **slots)

    def _before_physics(self, command: SafeCommand | Stop, raw: Any = None) -> None:
        """Called with the issued command (and the policy's raw action) before physics."""

    def _after_physics(self) -> None:
        self._steps += 1
        touching = self._obstacle_contacts()
        self._collisions += len(touching - self._touching)  # count contact onsets
        self._touching = touching

    def _obstacle_contacts(self) -> set[str]:
        return set()

    @property
    def touching(self) -> frozenset[str]:
        """Bodies (other than the floor) the robot touches after the last step."""
        return frozenset(self._touching)

    # queries -----------------------------------------------------------------
    def goal(self) -> np.ndarray:
        return np.zeros(0, dtype=np.float32)

    def success(self) -> bool:
        raise NotImplementedError

    def terminated(self) -> bool:
        return self.success()

    def reward(self) -> float:
        """panda-gym's sparse reward: 0 on success, -1 otherwise."""
        return 0.0 if self.success() else -1.0

    def metrics(self) -> dict[str, float]:
        return {"success": float(self.success()), "steps": float(self.steps), "collisions": float(self.collisions)}

    def privileged(self) -> dict:
        """Ground truth for scripted experts only; never part of an observation."""
        return {}
