"""Step rate with Rerun recording on vs off (same scenario, same actions, same run),
camera frames the writer dropped, and recording size per 100 steps.

    .venv/bin/python benchmarks/record_speed.py [--steps 200] [--scenarios a,b]

Both loops render the cameras (a recording needs the frames); the ratio is what
recording costs the control loop: gathering the data and handing it to the writer
process, which encodes and logs it on another core (measure with that core idle). The
timed loop includes `finish`, which waits until the writer has closed the file.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from qrobot.envs.core import QRobotEnv

from qrobot.record import EpisodeRecorder
from qrobot.scenario import load_scenario, scenario_names


def rate(name: str, steps: int, path: Path | None) -> tuple[float, int]:
    sc = load_scenario(name).model_copy(update={"max_steps": steps + 10, "stop_at_rest_steps": 0})
    env = QRobotEnv(sc, images=True)
    obs, info = env.reset(seed=0)
    rec = EpisodeRecorder(path, name, "bench") if path else None
    if rec:
        rec.start(env, obs, info)
    acts = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_space.shape[0])).astype(np.float32)
    if env.robot.name == "diffbot":
        acts[:, 2] = 0.0
    t = time.perf_counter()
    for a in acts:
        obs, r, _term, _trunc, info = env.step(a)
        if rec:
            rec.log_step(env, obs, a, r, info)
    if rec:
        rec.finish({"success": False, "end_reason": "benchmark"})
    elapsed = time.perf_counter() - t
    env.close()
    return steps / elapsed, rec.dropped_frames if rec else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--scenarios", default=",".join(scenario_names()), help="comma-separated (default: every scenario)")
    args = p.parse_args()
    print(
        f"{'scenario':<20s} {'cameras':<28s} {'off steps/s':>11s} {'on steps/s':>10s} {'ratio':>6s} "
        f"{'frames dropped':>14s} {'MB per 100 steps':>17s}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.scenarios.split(","):
            path = Path(tmp) / f"{name}.rrd"
            offs, ons, dropped = [], [], []
            for _ in range(2):  # interleaved, best of 2: the machine is noisy
                offs.append(rate(name, args.steps, None)[0])
                on, lost = rate(name, args.steps, path)
                ons.append(on)
                dropped.append(lost)
            cams = ", ".join(f"{c.name} {c.width}px" for c in load_scenario(name).cameras)
            frames = (args.steps + 1) * len(load_scenario(name).cameras)
            mb = path.stat().st_size / 1e6 * 100 / args.steps
            print(
                f"{name:<20s} {cams:<28s} {max(offs):11.1f} {max(ons):10.1f} {max(ons) / max(offs):6.2f} "
                f"{max(dropped):>6d} of {frames:<5d} {mb:17.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
