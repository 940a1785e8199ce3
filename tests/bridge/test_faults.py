"""The bridge's fault table with one trial per fault (benchmarks/bridge_faults.py runs
100): every row's pass criterion holds, each printed for the log; against the simulated
robot process, and against the Franka host driving franky-sim."""

from __future__ import annotations

from pathlib import Path

import pytest

from qrobot.bridge.conformance import run_suite

from .test_franka import franky_sim  # noqa: F401  (franky-sim, started and stopped by the test)

# the real-time rigs (fault tables, franky-sim) run one after another on one worker:
# franky-sim's 1 kHz loop beside a fault table would load the machine it measures
pytestmark = pytest.mark.xdist_group("realtime")


def test_every_fault_of_the_table_passes(tmp_path: Path) -> None:
    passed, total, lines = run_suite(tmp_path, trials=1)
    print("\n".join(lines))
    assert total == 14
    assert passed == total, "\n".join(line for line in lines if line.startswith("FAIL"))


def test_the_policy_side_faults_against_the_franka_host(franky_sim: str, tmp_path: Path) -> None:  # noqa: F811
    """The same table against franky-sim through the Franka host (the FR3 profile; the hand
    circling at its collaborative speed), one trial per fault."""
    passed, total, lines = run_suite(tmp_path, trials=1, robot="franka", franka=franky_sim)
    print("\n".join(lines))
    assert total == 13
    assert passed == total, "\n".join(line for line in lines if line.startswith("FAIL"))
