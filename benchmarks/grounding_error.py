"""How well the grounding head of a pick_place checkpoint locates the named cube and the
place point, against the simulator's labels of a `qrobot collect` dataset.

    .venv/bin/python benchmarks/grounding_error.py CHECKPOINT DATASET [--at start|random|near]
    .venv/bin/python benchmarks/grounding_error.py CHECKPOINT --binding 40 [--seed 10000]

`--at start` uses steps 0, 5 and 10 of each episode (gripper far from the cube: the scene
camera must do the work); `random` three random steps (much of it with the cube in hand);
`near` three random steps of the approach, the gripper within 10 cm (x, y) of the cube and
above it (the wrist camera's job: where grasps are won or lost).
Prints RMSE per label dimension and the median xy error of the cube and the place point (m).
`--binding N` resets the checkpoint's scenario on N seeds and asks, at the start pose,
whether the cube nearest to the predicted point is the named one (chance: 1 / cubes).
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
    p.add_argument("dataset", type=Path, nargs="?")
    p.add_argument("--binding", type=int, default=0, help="scenes to check binding on (no dataset needed)")
    p.add_argument("--seed", type=int, default=10000)
    p.add_argument("--at", choices=["start", "random", "near"], default="start")
    p.add_argument("--episodes", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = QwenVLA.from_pretrained(args.checkpoint, robot="panda")  # a bundle: its arm model
    cams = model.config.cameras
    if args.binding:
        binding(model, args.binding, args.seed)
        return
    if args.dataset is None:
        p.error("give a DATASET or --binding N")
    rng = np.random.default_rng(1)
    preds, truths = [], []
    for f in sorted(args.dataset.glob("ep*.npz"))[: args.episodes]:
        z = np.load(f)
        state = np.concatenate([z["proprio"], z["goal"]], 1).astype(np.float32)
        labels = relative_grounding(state, z["grounding"])
        if args.at == "near":
            near = np.flatnonzero((np.linalg.norm(labels[:, :2], axis=1) < 0.1) & (labels[:, 2] < -0.02))
            if not len(near):
                continue
            steps = rng.choice(near, size=3)
        else:
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
    print(
        f"median |cube xy error| {np.median(np.linalg.norm(pred[:, :2] - true[:, :2], axis=1)):.4f} m, "
        f"median |place xy error| {np.median(np.linalg.norm(pred[:, 5:7] - true[:, 5:7], axis=1)):.4f} m"
    )


def binding(model: QwenVLA, scenes: int, seed: int) -> None:
    from qrobot.envs.core import QRobotEnv

    scenario = model.config.scenario or "pick_place"  # a multi-task arm model: its tabletop task
    env = QRobotEnv(scenario, images=True)
    named, to_named, to_nearest = 0, [], []
    for s in range(seed, seed + scenes):
        obs, _ = env.reset(seed=s)
        images = torch.from_numpy(np.stack([obs["images"][c] for c in model.config.cameras]))[None]
        state = obs["proprio"][None].astype(np.float32)
        with torch.no_grad():
            ctx, pad = model.encode(images, [obs["instruction"]])
            g = model.ground(ctx, pad, torch.from_numpy(model.norm["state"].normalize(state)))
        point = state[0, :2] + model.norm["grounding"].unnormalize(g.numpy())[0, :2]
        dist = {c: float(np.linalg.norm(point - env.sim.pose(c)[0][:2])) for c in env.task.cubes}
        nearest = min(dist, key=dist.get)
        named += nearest == env.task.target_name
        to_named.append(dist[env.task.target_name])
        to_nearest.append(dist[nearest])
    env.close()
    print(
        f"{scenario}, seeds {seed}-{seed + scenes - 1}, start pose: the cube nearest the predicted "
        f"point is the named one in {named}/{scenes} (chance 1/{len(env.task.cubes)}); median distance to "
        f"the named cube {100 * np.median(to_named):.1f} cm, to the nearest {100 * np.median(to_nearest):.1f} cm"
    )


if __name__ == "__main__":
    main()
