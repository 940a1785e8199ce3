"""Worst measured values over 10,000 control steps of an over-range random policy per
robot behind the supervisor (the figures tests/safety/test_conformance.py bounds).

    .venv/bin/python benchmarks/limit_conformance.py [--steps 10000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "safety"))
from conftest import Rig  # noqa: E402


def worst(robot: str, steps: int) -> dict[str, float]:
    rig = Rig(robot)
    rng = np.random.default_rng(0)
    lim, out = rig.limits, {}
    for _ in range(steps):
        rig.step(rng.uniform(-1.5, 1.5, 5 if robot == "panda" else 3))
        st = rig.robot.state()
        if robot == "panda":
            vals = {"|qdot| / limit": np.max(np.abs(st["joint_vel"]) / lim.arm.vmax),
                    "EE speed (m/s, limit 0.25)": np.linalg.norm(st["ee_lin_vel"]),
                    "beyond a joint limit (rad)": max(np.max(lim.arm.lower - st["joint_pos"]),
                                                      np.max(st["joint_pos"] - lim.arm.upper)),
                    "outside the workspace box (m)": np.max(np.maximum(lim.arm.ws_low - st["ee_pos"],
                                                                       st["ee_pos"] - lim.arm.ws_high))}
        else:
            vals = {"|v| (m/s, limit 0.5)": abs(st["base_vel"][0]), "|w| (rad/s, limit 1.2)": abs(st["base_vel"][1])}
        for k, v in vals.items():
            out[k] = max(out.get(k, -np.inf), float(v))
    rig.sim.close()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=10_000)
    args = p.parse_args()
    for robot in ("panda", "diffbot"):
        for k, v in worst(robot, args.steps).items():
            print(f"{robot:<8s} max {k:<32s} {v:9.4f}")


if __name__ == "__main__":
    main()
