"""The clock offset between policy and agent survives a loaded machine: a probe slowed by
load never replaces a tighter offset (aged by drift), the policy reports the round its
offset comes from, and the agent ages that round's uncertainty from when it was measured."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import qrobot.bridge.service as service
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import CLOCK_DRIFT, AgentCore, Timing
from qrobot.bridge.latch import Latch
from qrobot.bridge.messages import VERSION, ClockProbe, decode
from qrobot.bridge.service import PolicyClient

OFFSET = 5.0  # the agent's clock runs this far ahead of the policy's


class _Link:
    """The policy's clock and the agent's, joined by probes whose round trips we choose."""

    def __init__(self, tmp_path: Path, trips: list[float]) -> None:
        self.trips, self.t = list(trips), 100.0
        self.agent = Agent.__new__(Agent)  # only the clock-probe handler and the core are used
        self.agent._last_clock_reply, self.agent._clock_replies = -1.0, {}
        self.agent.core = AgentCore(3, Latch(tmp_path / "estop.json"), Timing())

    def monotonic(self) -> float:
        return self.t

    def ask(self, session: Any, key: str, msg: ClockProbe, timeout: float = 1.0) -> ClockProbe:
        trip = self.trips.pop(0)
        self.t += trip / 2  # out: half the trip (the agent answers at the midpoint)
        reply, _ = decode(self.agent._clock_probe(msg, "policy", self.t + OFFSET))
        self.t += trip / 2
        return reply


@pytest.fixture()
def link(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[_Link, PolicyClient]:
    lk = _Link(tmp_path, [0.002, 0.080, 0.120, 0.003, 0.001])
    monkeypatch.setattr(service, "_ask", lk.ask)
    monkeypatch.setattr(service.time, "monotonic", lk.monotonic)
    client = PolicyClient.__new__(PolicyClient)
    client.session, client.k, client.offset = None, {"clock": "c"}, None
    client._prev, client._half_rtt, client._sync_lock = (0.0, 0.0, 0.0), float("inf"), threading.Lock()
    return lk, client


def test_a_slow_probe_never_makes_the_offset_worse(link: tuple[_Link, PolicyClient]) -> None:
    lk, client = link
    assert client.sync(1) == pytest.approx(0.001)  # a 2 ms round trip: offset known to 1 ms
    assert client.offset == pytest.approx(OFFSET)
    kept = client._prev
    for _ in range(2):  # two rounds slowed by load (80 and 120 ms): the 1 ms offset stays
        assert client.sync(1) < 0.002
        assert client._prev == kept and client.offset == pytest.approx(OFFSET)
    # the agent heard each report of the kept round: it ages 1 ms from when it was measured
    skew = lk.agent.core.skew(lk.t + OFFSET)
    assert skew == pytest.approx(0.001 + CLOCK_DRIFT * (lk.t + OFFSET - kept[1]))
    assert skew < Timing().max_skew  # commands are still accepted
    client.sync(1)  # a 3 ms round: not tighter than the kept one aged by 0.2 s of drift
    assert client._prev == kept
    client.sync(1)  # a 1 ms round: tighter, it replaces the offset in use
    assert client._prev != kept and client._half_rtt == pytest.approx(0.0005)


def test_the_agent_refuses_a_round_it_never_answered(link: tuple[_Link, PolicyClient]) -> None:
    lk, _client = link
    forged = ClockProbe(
        version=VERSION, sent=lk.t, prev_sent=lk.t - 1e-4, prev_agent=lk.t + OFFSET - 0.5, prev_received=lk.t
    )
    lk.agent._clock_probe(forged, "policy", lk.t + OFFSET)
    assert lk.agent.core.skew(lk.t + OFFSET) is None  # still unknown: no genuine round reported
