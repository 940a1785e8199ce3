"""Limit conformance between control ticks: worst measured value / limit for every limited
quantity, sampled at every 240 Hz physics substep (speeds: finite differences of measured
positions; accelerations: over 25 ms windows; steps: over one control period; positions:
1 + depth beyond the limit / size of the allowed range). Corner actions (every axis +-1,
random signs) and over-range uniform ones, through real envs:

- reach (the Panda in free space) and pick_place (where random actions hit cubes and bowls:
  samples in contact, and one period after, are listed apart: impacts are physics the
  supervisor has no model of);
- pointnav without obstacles, with three keep-out zones inside the room's bounds.

    .venv/bin/python benchmarks/limit_conformance.py [--steps 10000]

tests/safety/test_conformance.py bounds the free-motion ratios by 1.01 on a shorter run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "safety"))
from qrobot.envs.core import QRobotEnv
from test_conformance import _zoned_room

from qrobot.safety.conformance import measure_env


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000, help="control periods per scenario and action kind")
    args = p.parse_args()
    worst_free = 0.0
    for name, scenario in (("reach", "reach"), ("pick_place", "pick_place"), ("pointnav+zones", _zoned_room())):
        for actions in ("corner", "uniform"):
            env = QRobotEnv(scenario, images=False)
            t0 = time.perf_counter()
            out = measure_env(env, args.steps, seed=0, actions=actions)
            env.close()
            share = out["contact_samples"] / max(out["samples"], 1)
            print(
                f"\n{name}, {actions} actions: {args.steps} periods, {out['samples']} substeps probed "
                f"({share:.1%} in contact), {time.perf_counter() - t0:.0f} s"
            )
            print(f"  {'max / limit':<44s} {'free motion':>11s} {'in contact':>11s}")
            for key in sorted(out["free"]):
                c = out["contact"].get(key)
                print(f"  {key:<44s} {out['free'][key]:11.4f} {'-' if c is None else f'{c:.4f}':>11s}")
            worst_free = max(worst_free, *out["free"].values())
    print(f"\nworst free-motion ratio: {worst_free:.4f} (bar 1.01)")


if __name__ == "__main__":
    main()
