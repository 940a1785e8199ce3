"""Stopping time and distance from maximum speed after an e-stop, in simulation,
sampled at every physics substep (240 Hz).

    .venv/bin/python benchmarks/stopping.py

The e-stop is pressed half-way through a control period while the robot moves at
full commanded speed; the supervisor acts at its next tick. Braking onset = time
from the press until the measured speed first drops; it must be within one
control period (0.1 s at 10 Hz).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "safety"))
from conftest import Rig  # noqa: E402


def trial(robot: str, action: np.ndarray, warmup: int) -> dict[str, float]:
    rig = Rig(robot)
    for _ in range(warmup):
        rig.step(action)

    def position() -> np.ndarray:
        st = rig.robot.state()
        return st["ee_pos"] if robot == "panda" else np.r_[st["base_pose"][:2], 0.0]

    rig.robot.apply(rig.sup.filter(action, rig.state()))
    half = rig.sim.substeps // 2
    for _ in range(half):  # mid-period, moving
        rig.sim.client.stepSimulation()
    v0, p0 = rig.speed(), position()
    rig.sup.estop("benchmark", rig.sim.time)  # the button is pressed now
    t, onset, speeds = 0.0, None, [v0]
    for _ in range(rig.sim.substeps - half):  # the rest of this period: the old command
        rig.sim.client.stepSimulation()
        t += 1.0 / 240.0
        speeds.append(rig.speed())
        if onset is None and speeds[-1] < v0 - 1e-3:
            onset = t
    rig.sim.time += rig.sim.dt
    for _ in range(40):  # 4 s of control periods, the policy still asking for full speed
        rig.robot.apply(rig.sup.filter(action, rig.state()))
        for _ in range(rig.sim.substeps):
            rig.sim.client.stepSimulation()
            t += 1.0 / 240.0
            v = rig.speed()
            if onset is None and v < speeds[0] - 1e-3:
                onset = t
            speeds.append(v)
            if v < 0.005 and t > 0.05:
                break
        rig.sim.time += rig.sim.dt
        if speeds[-1] < 0.005 and t > 0.05:
            break
    dist = float(np.linalg.norm(position() - p0))
    rig.sim.close()
    return {"v0": v0, "onset": onset or float("nan"), "time": t, "distance": dist,
            "max_decel": float(np.max(-np.diff(speeds)) * 240.0)}


def main() -> None:
    rows = [("arm (EE, collaborative 0.25 m/s)", trial("panda", np.array([0, 1.0, 0, 0, 1.0]), 8)),
            ("base (0.5 m/s)", trial("diffbot", np.array([1.0, 0, 0]), 15))]
    print(f"{'robot':<34s} {'v0 m/s':>7s} {'onset s':>8s} {'stop time s':>12s} {'distance m':>11s} "
          f"{'peak decel m/s2':>16s}")
    for name, r in rows:
        print(f"{name:<34s} {r['v0']:7.3f} {r['onset']:8.3f} {r['time']:12.3f} {r['distance']:11.3f} "
              f"{r['max_decel']:16.2f}")
    print("control period: 0.100 s (braking must begin within it)")


if __name__ == "__main__":
    main()
