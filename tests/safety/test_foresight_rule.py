"""The supervisor's foresight rule with scripted predictors: slows, stops, and stays total."""

from __future__ import annotations

import math

import numpy as np
import pytest

from qrobot.safety import SafeCommand
from qrobot.safety.supervisor import Supervisor
from tests.safety.conftest import Rig


class Scripted:
    """A predictor that answers what it is told (or raises)."""

    def __init__(self, answer: object) -> None:
        self.answer, self.calls = answer, 0

    def speed_scale(self, action: np.ndarray) -> tuple[float, float]:
        self.calls += 1
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer  # type: ignore[return-value]


def _issued_v(base: Rig, predictor: object | None, action: list[float]) -> tuple[float, Supervisor]:
    base.sup = Supervisor(base.limits, (0.5, 1.2), operator=base.key, foresight=predictor, people="none")
    cmd = base.sup.filter(np.array(action), base.state())
    values = cmd.values if isinstance(cmd, SafeCommand) else cmd.brake.values
    return float(values[0]), base.sup


def test_foresight_scales_forward_speed_and_logs_why(base: Rig) -> None:
    free, _ = _issued_v(base, None, [0.1, 0.3, 0.0])
    slowed, sup = _issued_v(base, Scripted((0.25, 0.2)), [0.1, 0.3, 0.0])
    assert free > 0 and slowed == pytest.approx(0.25 * free)
    assert [e.rule for e in sup.events] == ["foresight"] and "x 0.25" in sup.events[0].reason
    same, sup = _issued_v(base, Scripted((1.0, 0.1)), [0.1, 0.3, 0.0])
    assert same == pytest.approx(free) and not sup.events


def test_turning_in_place_does_not_consult_foresight(base: Rig) -> None:
    predictor = Scripted((0.0, 0.9))
    v, sup = _issued_v(base, predictor, [0.0, 0.5, 0.0])
    assert v == 0.0 and predictor.calls == 0 and "foresight" not in sup.counts()


@pytest.mark.parametrize(
    "answer", [RuntimeError("model exploded"), (math.nan, 0.1), (1.5, 0.1), (0.5, math.inf), ("fast", 0.1), None]
)
def test_a_failing_predictor_stops_forward_motion_and_never_raises(base: Rig, answer: object) -> None:
    v, sup = _issued_v(base, Scripted(answer), [0.1, 0.3, 0.0])
    assert v == 0.0
    assert [e.rule for e in sup.events] == ["foresight_fault"] and sup.latched is None
