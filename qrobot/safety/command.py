"""Commands that reach actuators. Only the supervisor can mint them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Held by the supervisor module; robot backends check for it. A command built
# anywhere else fails that check and is refused.
_MINT = object()


@dataclass(frozen=True)
class SafeCommand:
    """A command the supervisor checked. `values` is read-only."""

    robot: str
    values: np.ndarray
    _mint: object = field(repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        arr = np.array(self.values, dtype=np.float64, copy=True)
        arr.setflags(write=False)
        object.__setattr__(self, "values", arr)

    @property
    def issued_by_supervisor(self) -> bool:
        return self._mint is _MINT and bool(np.all(np.isfinite(self.values)))


@dataclass(frozen=True)
class Stop:
    """The supervisor refused the action. `brake` is the controlled-stop command
    (decelerate within limits, then hold); without one the backend holds in place."""

    reason: str
    brake: SafeCommand | None = None


def mint(robot: str, values: np.ndarray) -> SafeCommand:
    """Supervisor-only constructor (see qrobot.safety.supervisor)."""
    return SafeCommand(robot, values, _MINT)
