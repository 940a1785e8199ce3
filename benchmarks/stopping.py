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
from conftest import Rig


def trial(robot: str, action: np.ndarray, warmup: int) -> dict[str, float]:
    """Press the e-stop mid-period (a substep hook: the button does not wait for a tick)
    while the policy keeps asking for full speed; measure until rest at every substep."""
    rig = Rig(robot)
    for _ in range(warmup):
        rig.step(action)

    def position() -> np.ndarray:
        st = rig.robot.state()
        return st["ee_pos"] if robot == "panda" else np.r_[st["base_pose"][:2], 0.0]

    press_at = rig.sim.time + 0.5 * rig.sim.dt
    log: list[tuple[float, float]] = []
    start: dict[str, object] = {}

    def probe(t: float) -> None:
        if t >= press_at and not start:
            rig.sup.estop("benchmark", t)  # the button is pressed now
            start.update(t=t, v=rig.speed(), p=position())
        if start:
            log.append((t, rig.speed()))

    rig.sim._on_substep(probe)
    for _ in range(60):  # the policy still asking for full speed
        rig.step(action)
        if start and log[-1][1] < 0.005:
            break
    t0, v0 = float(start["t"]), float(start["v"])
    ts, vs = np.array([t for t, _ in log]), np.array([v for _, v in log])
    slower = np.nonzero(vs < v0 - 1e-3)[0]
    rest = np.nonzero(vs < 0.005)[0]
    dist = float(np.linalg.norm(position() - start["p"]))
    rig.sim.close()
    return {
        "v0": v0,
        "onset": float(ts[slower[0]] - t0) if len(slower) else float("nan"),
        "time": float(ts[rest[0]] - t0) if len(rest) else float("nan"),
        "distance": dist,
        "max_decel": float(np.max(-np.diff(vs)) * 240.0),
    }


def main() -> None:
    rows = [
        ("arm (EE, collaborative 0.25 m/s)", trial("panda", np.array([0, 1.0, 0, 0, 1.0]), 8)),
        ("base (0.5 m/s)", trial("diffbot", np.array([1.0, 0, 0]), 15)),
    ]
    print(
        f"{'robot':<34s} {'v0 m/s':>7s} {'onset s':>8s} {'stop time s':>12s} {'distance m':>11s} "
        f"{'peak decel m/s2':>16s}"
    )
    for name, r in rows:
        print(
            f"{name:<34s} {r['v0']:7.3f} {r['onset']:8.3f} {r['time']:12.3f} {r['distance']:11.3f} "
            f"{r['max_decel']:16.2f}"
        )
    print("control period: 0.100 s (braking must begin within it)")


if __name__ == "__main__":
    main()
