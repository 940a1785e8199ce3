"""The supervisor: the only road from a policy action to a robot command.

Pure numpy. `filter` never raises: any action it cannot vouch for becomes a
`Stop` with a reason, and every intervention is an event.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from qrobot.safety.command import SafeCommand, Stop, mint


@dataclass(frozen=True)
class Event:
    """One intervention: when, which rule, what came in, what went out, why."""

    time: float
    rule: str
    raw: Any
    issued: Any
    reason: str
    severity: str = "warn"  # info | warn | error


@dataclass
class Supervisor:
    """Checks normalised actions for one robot before anything moves."""

    robot: str
    action_dim: int
    events: list[Event] = field(default_factory=list)

    def reset(self) -> None:
        self.events.clear()

    def _event(self, state: dict, rule: str, raw: Any, issued: Any, reason: str,
               severity: str = "warn") -> None:
        t = state.get("time", 0.0) if isinstance(state, dict) else 0.0
        self.events.append(Event(float(t), rule, raw, issued, reason, severity))

    def filter(self, action: Any, state: dict) -> SafeCommand | Stop:
        """Return a command the robot may execute, or a Stop."""
        try:
            arr = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError, OverflowError):
            stop = Stop("action is not numeric")
            self._event(state, "reject", repr(action)[:80], None, stop.reason, "error")
            return stop
        if arr.shape != (self.action_dim,):
            stop = Stop(f"action shape {arr.shape} != ({self.action_dim},)")
            self._event(state, "reject", repr(action)[:80], None, stop.reason, "error")
            return stop
        if not np.all(np.isfinite(arr)):
            stop = Stop("non-finite action")
            self._event(state, "reject", arr.tolist(), None, stop.reason, "error")
            return stop
        clipped = np.clip(arr, -1.0, 1.0)
        if not np.array_equal(clipped, arr):
            self._event(state, "clamp", arr.tolist(), clipped.tolist(),
                        "action outside [-1, 1]", "info")
        return mint(self.robot, clipped)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.events:
            out[e.rule] = out.get(e.rule, 0) + 1
        return out
