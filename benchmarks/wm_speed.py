"""World-model speed on CPU: predicted frames per second (batched) against the simulator.

    .venv/bin/python benchmarks/wm_speed.py [--checkpoint DIR] [--threads 1 2] [--batch 64]

Predicted frames/s = batch x horizon / time of one `imagine` call (median of 10), at the
checkpoint's image size. Baseline in the same run: the simulator's own rate of stepping
`pointnav_clutter` and rendering the same scene camera, frames/s. Foresight latency: one
`speed_scale` call (4 candidate chunks x H steps), median and p99 in ms.
Without --checkpoint an untrained model of the default size is timed (speed does not
depend on the weights).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from qrobot.envs.core import QRobotEnv

from qrobot.worldmodel.data import camera_for, camera_to_dict
from qrobot.worldmodel.foresight import Foresight
from qrobot.worldmodel.model import WMConfig, WorldModel


def sim_fps(scenario: str, size: int, steps: int = 200) -> float:
    env = QRobotEnv(scenario, images=False)
    cam = camera_for(scenario, size)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        env.step(np.array([0.3, 0.2, 0.0]))
        env.sim.render(cam)
    env.close()
    return steps / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    model = WorldModel.from_pretrained(args.checkpoint) if args.checkpoint else WorldModel(WMConfig()).eval()
    c = model.config
    scenario = c.scenario or "pointnav_clutter"
    base = sim_fps(scenario, c.image_size)
    print(f"simulator: step + render {c.image_size}x{c.image_size} scene camera: {base:.0f} frames/s (baseline)")
    env = QRobotEnv(scenario, images=False)
    env.reset(seed=0)
    if not c.camera:
        c.camera = camera_to_dict(camera_for(scenario, c.image_size))
    fs = Foresight(model, lambda cam: env.sim.render(cam)[0])
    fs.observe()
    for threads in args.threads:
        torch.set_num_threads(threads)
        ctx = torch.rand(args.batch, c.context, 3, c.image_size, c.image_size)
        acts = torch.rand(args.batch, c.horizon, c.action_dim) * 2 - 1
        model.imagine(ctx, acts)
        times = []
        for _ in range(10):
            t = time.perf_counter()
            model.imagine(ctx, acts)
            times.append(time.perf_counter() - t)
        fps = args.batch * c.horizon / float(np.median(times))
        lat = []
        for _ in range(100):
            t = time.perf_counter()
            fs.speed_scale(np.array([0.8, 0.1, 0.0], np.float32))
            lat.append(time.perf_counter() - t)
        print(
            f"{threads} thread(s): {fps:.0f} predicted frames/s at batch {args.batch} ({fps / base:.1f}x the "
            f"simulator); foresight per control step median {1000 * np.median(lat):.2f} ms, "
            f"p99 {1000 * np.percentile(lat, 99):.2f} ms"
        )
    env.close()


if __name__ == "__main__":
    main()
