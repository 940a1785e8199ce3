"""The bridge's fault table with one trial per fault (benchmarks/bridge_faults.py runs
100): every row's pass criterion holds, each printed for the log."""

from __future__ import annotations

from pathlib import Path

from qrobot.bridge.conformance import run_suite


def test_every_fault_of_the_table_passes(tmp_path: Path) -> None:
    passed, total, lines = run_suite(tmp_path, trials=1)
    print("\n".join(lines))
    assert total == 14
    assert passed == total, "\n".join(line for line in lines if line.startswith("FAIL"))
