"""How well the grounding head of a pick_place checkpoint locates the named cube and the
place point, against the simulator's labels of a `qrobot collect` dataset.

    .venv/bin/python benchmarks/grounding_error.py CHECKPOINT DATASET [--at start|random]

`--at start` uses steps 0, 5 and 10 of each episode (gripper far from the cube: the scene
camera must do the work); `random` three random steps (much of it with the cube in hand).
Prints RMSE per label dimension and the median xy error of the cube and the place point (m).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from qrobot.vla.data import relative_grounding
from qrobot.vla.model import QwenVLA


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("dataset", type=Path)
    p.add_argument("--at", choices=["start", "random"], default="start")
    p.add_argument("--episodes", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = QwenVLA.from_pretrained(args.checkpoint)
    cams = model.config.cameras
    rng = np.random.default_rng(1)
    preds, truths = [], []
    for f in sorted(args.dataset.glob("ep*.npz"))[: args.episodes]:
        z = np.load(f)
        state = np.concatenate([z["proprio"], z["goal"]], 1).astype(np.float32)
        labels = relative_grounding(state, z["grounding"])
        steps = np.array([0, 5, 10]) if args.at == "start" else rng.integers(len(state), size=3)
        steps = np.minimum(steps, len(state) - 1)
        images = torch.from_numpy(np.stack([np.stack([z[f"images_{c}"][t] for c in cams]) for t in steps]))
        with torch.no_grad():
            ctx, pad = model.encode(images, [str(z["instruction"])] * len(steps))
            g = model.ground(ctx, pad, torch.from_numpy(model.norm["state"].normalize(state[steps])))
        preds.append(model.norm["grounding"].unnormalize(g.numpy()))
        truths.append(labels[steps])
    pred, true = np.concatenate(preds), np.concatenate(truths)
    print(f"{len(pred)} samples from {args.dataset} ({args.at})")
    print("RMSE per dim (cube dx dy dz, sin4, cos4, place dx dy dz):", np.sqrt(((pred - true) ** 2).mean(0)).round(3))
    print(f"median |cube xy error| {np.median(np.linalg.norm(pred[:, :2] - true[:, :2], axis=1)):.4f} m, "
          f"median |place xy error| {np.median(np.linalg.norm(pred[:, 5:7] - true[:, 5:7], axis=1)):.4f} m")


if __name__ == "__main__":
    main()
