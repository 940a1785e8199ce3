"""World-model datasets: episodes seen by a fixed overhead camera, with actions and outcomes.

On-disk layout (`qrobot wm-collect SCENARIO --episodes N --out DIR`):
    DIR/meta.json            scenario, camera, image size, action dim, policy mix, seeds
    DIR/ep<k>-seed<s>.npz    frames (T+1, S, S, 3) uint8: frame 0 after reset, frame i after action i-1
                             actions (T, A) float32: what the policy sent, clipped to [-1, 1]
                             collision (T+1,) bool: the robot touches an obstacle or wall in frame i
                             success (T+1,) bool: the task counts as solved in frame i
                             policy (str), seed (int)
The policy of episode k cycles through the mix (expert, noisy-expert, wander by default), so
collisions and failures are well represented. The camera is not a policy input: it only
feeds the world model (and the supervisor's foresight).
"""

from __future__ import annotations

import itertools
import json
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.checks import episode_path, read_meta
from qrobot.envs.core import QRobotEnv
from qrobot.errors import QrobotError
from qrobot.policies import make_policy
from qrobot.progress import Progress
from qrobot.scenario import load_scenario
from qrobot.sim import Camera

POLICY_MIX = ("expert", "noisy-expert", "wander")
FOV = 60.0


def scene_camera(room_size: tuple[float, float], size: int = 64) -> Camera:
    """A camera straight above the room centre that sees the whole floor (+y up in the image)."""
    half = max(room_size) / 2 + 0.1
    height = half / math.tan(math.radians(FOV / 2))
    return Camera(
        "scene",
        size,
        size,
        fov=FOV,
        near=0.5,
        far=height + 1.0,
        eye=(0.0, 0.0, height),
        target=(0.0, 0.0, 0.0),
        up=(0.0, 1.0, 0.0),
    )


def camera_to_dict(cam: Camera) -> dict[str, Any]:
    """What a dataset and a checkpoint store of their scene camera."""
    return {
        "eye": list(cam.eye),
        "target": list(cam.target),
        "up": list(cam.up),
        "fov": cam.fov,
        "near": cam.near,
        "far": cam.far,
    }


def camera_from_dict(spec: dict[str, Any], size: int) -> Camera:
    return Camera(
        "scene",
        size,
        size,
        fov=spec["fov"],
        near=spec["near"],
        far=spec["far"],
        eye=tuple(spec["eye"]),
        target=tuple(spec["target"]),
        up=tuple(spec["up"]),
    )


def camera_for(scenario: str, size: int) -> Camera:
    sc = load_scenario(scenario)
    if sc.robot != "diffbot" or sc.room is None:
        raise QrobotError(
            f"scenario {scenario!r}: the world model needs a mobile base in a room "
            f"(robot 'diffbot' with a [room]); it has robot {sc.robot!r}"
        )
    return scene_camera((sc.room.size[0], sc.room.size[1]), size)


def _record(
    scenario: str,
    first: int,
    count: int,
    seed: int,
    size: int,
    out: str,
    mix: tuple[str, ...],
    max_steps: int,
    label: str = "",
    show: bool = False,
    tty: bool | None = None,
) -> tuple[int, int]:
    """Episodes first .. first+count-1; returns (episodes with a collision, successes).
    Progress per step goes to stderr (`show`)."""
    env = QRobotEnv(scenario, images=False)
    cam = camera_for(scenario, size)
    bar = Progress(label or f"wm-collect {scenario}", count, enabled=show, tty=tty)
    hits = wins = 0
    for k in range(first, first + count):
        name = mix[k % len(mix)]
        policy = make_policy(name, env, seed=seed + k)
        obs, info = env.reset(seed=seed + k)
        policy.reset(obs["instruction"])
        frames = [env.sim.render(cam)[0]]
        actions: list[np.ndarray] = []
        collision, success = [bool(env.task.touching)], [bool(info["success"])]
        done = False
        while not done and len(actions) < max_steps:
            action = np.clip(np.asarray(policy.act(obs), np.float32), -1.0, 1.0)
            obs, _, term, trunc, info = env.step(action)
            done = term or trunc
            frames.append(env.sim.render(cam)[0])
            actions.append(action)
            collision.append(bool(env.task.touching))
            success.append(bool(info["success"]))
            bar.step(len(actions))
        np.savez_compressed(
            episode_path(Path(out), k, seed),
            frames=np.stack(frames),
            actions=np.stack(actions),
            collision=np.array(collision),
            success=np.array(success),
            policy=np.array(name),
            seed=np.array(seed + k),
        )
        hits += any(collision)
        wins += success[-1]
        bar.episode(success[-1])
    bar.close()
    env.close()
    return hits, wins


def wm_collect(
    scenario: str,
    episodes: int,
    out: Path,
    seed: int = 0,
    size: int = 64,
    workers: int = 1,
    mix: tuple[str, ...] = POLICY_MIX,
    max_steps: int = 200,
    show: bool = False,
) -> dict[str, Any]:
    """Record `episodes` episodes (policies cycling through `mix`) split over `workers` processes."""
    cam = camera_for(scenario, size)
    for name in mix:
        if name not in ("expert", "noisy-expert", "wander", "random", "hold"):
            raise QrobotError(
                f"wm-collect --mix: unknown policy {name!r}; valid: expert, noisy-expert, wander, random, hold"
            )
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    workers = max(1, min(workers, episodes))
    bounds = np.linspace(0, episodes, workers + 1).astype(int)
    args = [
        (scenario, int(a), int(b - a), seed, size, str(out), tuple(mix), max_steps)
        for a, b in itertools.pairwise(bounds)
    ]
    if workers == 1:
        results = [_record(*args[0], "", show)]
    else:
        ctx = multiprocessing.get_context("spawn")  # no forked PyBullet clients
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            results = [
                j.result()
                for j in [pool.submit(_record, *a, f"wm-collect worker {w}", show, False) for w, a in enumerate(args)]
            ]
    env = QRobotEnv(scenario, images=False)
    meta = {
        "scenario": env.scenario.name,
        "image_size": size,
        "action_dim": env.robot.action_dim,
        "control_hz": env.scenario.control_hz,
        "policies": list(mix),
        "episodes": episodes,
        "seeds": [seed, seed + episodes - 1],
        "max_steps": max_steps,
        "episodes_with_collision": sum(r[0] for r in results),
        "successes": sum(r[1] for r in results),
        "camera": camera_to_dict(cam),
    }
    env.close()
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


@dataclass
class WMEpisode:
    frames: np.ndarray  # (T+1, S, S, 3) uint8
    actions: np.ndarray  # (T, A)
    collision: np.ndarray  # (T+1,)
    success: np.ndarray  # (T+1,)
    policy: str
    seed: int


def load_wm_episodes(directory: Path) -> tuple[dict[str, Any], list[WMEpisode]]:
    directory = Path(directory)
    if not (directory / "meta.json").is_file():
        raise QrobotError(f"{directory}: not a world-model dataset (no meta.json; make one with `qrobot wm-collect`)")
    meta = read_meta(directory / "meta.json", {"scenario": str, "image_size": int, "action_dim": int})
    eps = []
    for f in sorted(directory.glob("ep*.npz")):
        try:
            with np.load(f) as z:
                ep = WMEpisode(
                    z["frames"],
                    z["actions"].astype(np.float32),
                    z["collision"],
                    z["success"],
                    str(z["policy"]),
                    int(z["seed"]),
                )
            if not (
                len(ep.frames) == len(ep.actions) + 1 == len(ep.collision)
                and len(ep.actions) > 0
                and ep.frames.shape[1:] == (meta["image_size"], meta["image_size"], 3)
            ):
                raise ValueError("frames, actions and labels do not fit together or the image size")
        except Exception as exc:  # zip, npz, key and shape errors: a damaged or foreign file
            raise QrobotError(
                f"{f}: not a readable world-model episode ({type(exc).__name__}: {str(exc)[:120]})"
            ) from None
        eps.append(ep)
    if not eps:
        raise QrobotError(f"{directory}: no episodes (ep*.npz)")
    return meta, eps


def windows(ep: WMEpisode, t: int, context: int, horizon: int) -> dict[str, np.ndarray]:
    """Training/eval sample at step t: context frames t-k+1..t (the first repeated before
    the start), actions t..t+H-1 and targets t+1..t+H (valid=False past the episode's end)."""
    last = len(ep.actions)
    ctx = np.clip(np.arange(t - context + 1, t + 1), 0, last)
    fut = np.arange(t + 1, t + horizon + 1)
    valid = fut <= last
    fut_c = np.minimum(fut, last)
    act = ep.actions[np.minimum(fut - 1, last - 1)].copy()
    act[~valid] = 0.0
    return {
        "context": ep.frames[ctx],
        "actions": act,
        "target": ep.frames[fut_c],
        "collision": ep.collision[fut_c].astype(np.float32),
        "success": ep.success[fut_c].astype(np.float32),
        "valid": valid.astype(np.float32),
    }


def batch_of(eps: list[WMEpisode], picks: list[tuple[int, int]], context: int, horizon: int) -> dict[str, np.ndarray]:
    """Stack windows for (episode, step) picks."""
    items = [windows(eps[e], t, context, horizon) for e, t in picks]
    return {k: np.stack([it[k] for it in items]) for k in items[0]}
