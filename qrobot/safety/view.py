"""What a policy may see of the supervisor: its verdicts, not its levers.

The env hands out this view instead of the `Supervisor` itself. It reads (limits, latch,
events, counts, the validated last action) and it can only make things safer (`estop`)
or, with the operator key, release a latch. It cannot filter commands, start a new
episode (which clears the separation monitor's hold timer and the watchdog's timing) or
rebind a backend: those stay with the env that owns the supervisor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qrobot.safety.limits import Limits
from qrobot.safety.supervisor import Event, Supervisor


class SupervisorView:
    __slots__ = ("_sup",)
    _sup: Supervisor  # set once, in __init__ (the view has no setter)

    def __init__(self, supervisor: Supervisor) -> None:
        object.__setattr__(self, "_sup", supervisor)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"the supervisor's view is read-only ({name!r})")

    @property
    def limits(self) -> Limits:
        return self._sup.limits

    @property
    def robot(self) -> str:
        return self._sup.robot

    @property
    def dim(self) -> int:
        return self._sup.dim

    @property
    def latched(self) -> str | None:
        return self._sup.latched

    @property
    def needs_rearm(self) -> bool:
        return self._sup.needs_rearm

    @property
    def protective(self) -> bool:
        return self._sup.protective

    @property
    def people_source(self) -> str | None:
        return self._sup.people_source

    @property
    def events(self) -> tuple[Event, ...]:
        return self._sup.events

    @property
    def last_action(self) -> np.ndarray | None:
        return self._sup.last_action

    def counts(self) -> dict[str, float]:
        return self._sup.counts()

    def estop(self, reason: str = "operator e-stop", time: float | None = None) -> None:
        """Latch the e-stop (anyone may stop the robot)."""
        self._sup.estop(reason, time)

    def reset_estop(self, key: Any, time: float | None = None, rearm: bool = True, note: str = "") -> bool:
        """Release the latch: only with the operator key (see Supervisor.reset_estop)."""
        return self._sup.reset_estop(key, time, rearm, note)
