"""What every robot backend shares: it is bound to one supervisor, whose sealed plans it
alone accepts, and it brakes at that supervisor's rates (never above its own) when a plan
runs out."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from qrobot.safety.command import CommandCheck


class BoundBackend:
    """Mixin: `_check` (the supervisor's seal check), `_rates` (braking), `_plan`."""

    MAX_RATES: np.ndarray  # the robot's own braking capability (per plan component)
    _plan: tuple
    _uid: int

    _sim: Any

    @property
    def sim(self) -> Any:
        """The world this robot lives in (read-only)."""
        return self._sim

    @property
    def uid(self) -> int:
        """The robot's body in the world (read-only: every motor call addresses it)."""
        return self._uid

    def _init_binding(self) -> None:
        self._check: CommandCheck | None = None
        self._rates = self.MAX_RATES.copy()

    def _bind(self, check: CommandCheck, rates: np.ndarray) -> None:
        """Accept commands from one supervisor only; brake at its rates when a plan runs out."""
        if self._check is not None:
            raise PermissionError(f"this {type(self).__name__} is already bound to a supervisor")
        self._check, self._rates = check, np.minimum(np.asarray(rates, dtype=np.float64), self.MAX_RATES)

    def _pair(self, check: CommandCheck, rates: np.ndarray) -> None:
        """A robot process pairs with the agent that connected to it: from now on only that
        agent's supervisor's plans are accepted (the previous binding is dropped)."""
        self._check, self._rates = check, np.minimum(np.asarray(rates, dtype=np.float64), self.MAX_RATES)

    def _snapshot(self) -> tuple:
        """The plan and replay guard, to undo a look-ahead rollout (with the world's state)."""
        return self._plan, copy.copy(self._check)

    def _restore(self, snap: tuple) -> None:
        self._plan, self._check = snap
