"""Fault-injection conformance of the bridge (issue 18): the simulated robot process, the
agent with its Zenoh service (mutual TLS, access list), a console and a policy; a link
shim on the policy's command path. Loop 20 ms, deadline 200 ms, operator timeout 250 ms,
lease stale 500 ms. Per fault: p50 / p99 / max of (a) fault -> the agent's stop at the
adapter and (b) fault -> measured speed < 1e-3 (robot-process log, one record per 0.1 s
period: (b) is resolved to a period), and the fault's own pass criterion.

    .venv/bin/python benchmarks/bridge_faults.py [--trials 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qrobot.bridge.conformance import run_suite


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        passed, total, lines = run_suite(Path(tmp), args.trials, args.seed)
    print("\n".join(lines))
    print(f"bridge conformance: {passed}/{total} faults passed")
    return 0 if passed == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
