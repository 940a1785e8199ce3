"""Demonstration datasets: scripted-expert episodes on disk, and training samples.

On-disk layout (`qrobot collect SCENARIO --episodes N --out DIR`):
    DIR/meta.json              scenario, robot, cameras, image size, dims, episodes, versions
    DIR/ep<k>-seed<s>.npz      one episode: images_<camera> (T, H, W, 3) uint8, proprio (T, P),
                               goal (T, G) (empty where the task has none), actions (T, A) as the
                               expert sent them (normalised action space), base_pose (T, 3) (nav),
                               grounding (T, 8) (tabletop tasks, else (T, 0)): named cube x, y, z,
                               sin 4yaw, cos 4yaw and the place point x, y, z,
                               instruction (str), success (bool), seed (int), action_noise
                               (float: the episode's DART noise scale, 0 for a clean one),
                               action_chunks (T, 8, A): DART episodes only, the expert's next
                               8 actions from step t had nothing perturbed them
Observation t and action t are aligned (the action taken after seeing observation t).
With `--action-noise` the recorded action is still the expert's, but a perturbed one was
executed (DART), so the episode shows the expert recovering from errors.
Policy inputs are only the env's observations. `grounding` is a training *label* (what the
instruction refers to, as embodied chain-of-thought VLAs label it with a detector); the
model learns to predict it from images and never receives it as an input.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.checks import COLLECTING, episode_path, read_meta
from qrobot.envs.core import MOUNT_UP, QRobotEnv
from qrobot.errors import QrobotError
from qrobot.policies import make_policy
from qrobot.progress import Progress
from qrobot.robots.panda import hand_frame
from qrobot.safety.view import SupervisorView
from qrobot.scenario import Camera, Randomize, Scenario, load_scenario
from qrobot.sim import yaw_of


def grounding_label(privileged: dict[str, Any]) -> np.ndarray:
    """Where the named cube is (and its yaw modulo 90 degrees) and where it must go; for
    reach, the target sphere is both (no yaw). Navigation: none (shape (0,))."""
    target = privileged.get("target")
    if "target_pose" not in privileged:
        if isinstance(target, np.ndarray) and target.shape == (3,):  # reach
            return np.array([*target, 0.0, 1.0, *target], np.float32)
        return np.zeros(0, np.float32)
    pos, orn = privileged["target_pose"]
    yaw = yaw_of(orn)
    return np.array([*pos, np.sin(4 * yaw), np.cos(4 * yaw), *privileged["place_point"]], np.float32)


def relative_grounding(state: np.ndarray, grounding: np.ndarray) -> np.ndarray:
    """Stored (absolute) grounding labels -> relative to the gripper, what the model learns:
    named cube - gripper (3), sin/cos of 4 (cube yaw - gripper yaw) (2), place point -
    gripper (3). `state` starts with the Panda's proprio: gripper x, y, z, cos yaw, sin yaw."""
    if grounding.shape[-1] == 0:
        return grounding
    ee, ee_yaw = state[..., :3], np.arctan2(state[..., 4], state[..., 3])
    d4 = np.arctan2(grounding[..., 3], grounding[..., 4]) - 4 * ee_yaw
    return np.concatenate(
        [grounding[..., :3] - ee, np.sin(d4)[..., None], np.cos(d4)[..., None], grounding[..., 5:8] - ee], axis=-1
    ).astype(np.float32)


def image_point(
    points: np.ndarray,
    eye: np.ndarray,
    target: np.ndarray,
    fov: float,
    up: np.ndarray | tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> np.ndarray:
    """World points (..., 3) -> where a square pinhole camera (OpenGL look-at; eye, target
    and up broadcast with the points; vertical fov in degrees) sees them, in [-1, 1]: x to
    the right, y down (the patch grid's order). NaN behind the camera."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    f = target - eye
    f = f / np.linalg.norm(f, axis=-1, keepdims=True)
    r = np.cross(f, np.broadcast_to(np.asarray(up, np.float64), f.shape))
    r = r / np.linalg.norm(r, axis=-1, keepdims=True)
    u = np.cross(r, f)
    d = np.asarray(points, np.float64) - eye
    depth = np.sum(d * f, -1)
    scale = 1.0 / np.tan(np.radians(fov) / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = np.stack([scale * np.sum(d * r, -1) / depth, -scale * np.sum(d * u, -1) / depth], -1)
    xy[depth <= 1e-6] = np.nan
    return xy.astype(np.float32)


def camera_point(cam: Camera, points: np.ndarray, state: np.ndarray, robot: str) -> np.ndarray:
    """Where scenario camera `cam` sees world points (T, 3) at proprio `state` (T, S), in
    [-1, 1] as `image_point`; NaN where it cannot be placed (not square, or a wrist camera
    of a robot other than the Panda, whose hand is placed from the proprio)."""
    out = np.full((len(points), 2), np.nan, np.float32)
    if cam.width != cam.height:
        return out
    if cam.mount == "world":
        return image_point(points, np.array(cam.eye), np.array(cam.target), cam.fov)
    if cam.mount == "wrist" and robot == "panda":
        hand, rot = hand_frame(state[:, :3], np.arctan2(state[:, 4], state[:, 3]))
        return image_point(
            points,
            hand + rot @ np.array(cam.eye),
            hand + rot @ np.array(cam.target),
            cam.fov,
            up=rot @ np.array(MOUNT_UP["wrist"]),
        )
    return out


def _scenario(scenario: str, randomize: bool) -> Scenario:
    sc = load_scenario(scenario)
    if randomize:
        sc = sc.model_copy(
            update={"randomize": Randomize(light=True, color_jitter=max(sc.randomize.color_jitter, 0.06))}
        )
    return sc


NOISE_CORRELATION = 0.7  # AR(1) coefficient of the DART noise (per control step)
LABEL_CHUNK = 8  # clean expert actions stored per step of a DART episode (the model's chunk)


class ActionNoise:
    """DART (Laskey et al. 2017): the expert's own action is the recorded label while a
    perturbed one is executed, so demonstrations visit the states a learned policy drifts
    into (a grasp a centimetre off, a cube dropped) and show the way back. AR(1) noise on
    every action dimension but the last (the gripper or stop command), at a scale drawn per
    episode from [sigma / 2, sigma]; seeded by the episode's seed."""

    def __init__(self, sigma: float, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 7])
        self.scale = float(self.rng.uniform(sigma / 2, sigma)) if sigma > 0 else 0.0
        self.state: np.ndarray | None = None

    def __call__(self, action: np.ndarray) -> np.ndarray:
        if self.scale == 0.0:
            return action
        if self.state is None:
            self.state = np.zeros(len(action) - 1)
        r = NOISE_CORRELATION
        self.state = r * self.state + np.sqrt(1 - r * r) * self.scale * self.rng.standard_normal(len(action) - 1)
        out = action.copy()
        out[:-1] = np.clip(action[:-1] + self.state, -1.0, 1.0)
        return out


def expert_continuation(env: QRobotEnv, expert: Any, first: np.ndarray, horizon: int) -> np.ndarray:
    """(horizon, A): `first` and the expert's next actions had nothing perturbed them,
    rolled out in the simulator and then undone. These are the chunk labels of a DART
    episode: its recorded next actions also undo noise that came later, which a policy
    would learn to expect from where it is and over-correct for."""
    # shared, not copied: the world is restored by PyBullet, the robot's plan by its backend
    keep = {id(env.sim): env.sim, id(env): env, id(env.robot): env.robot}
    snapshot = copy.deepcopy((env._task, env._supervisor, env.last_command, dict(vars(expert))), keep)
    plan = env.robot._snapshot()
    clock, images, saved = env.sim.time, env.images, env.sim._save_state()
    env.images = False
    chunk = [np.asarray(first, np.float32)]
    try:
        obs, _, term, trunc, _ = env.step(first)
        while len(chunk) < horizon:
            if term or trunc:  # the episode ended: the last action repeats, as in action_chunk
                chunk.append(chunk[-1])
                continue
            chunk.append(np.asarray(expert.act(obs), np.float32))
            if len(chunk) < horizon:
                obs, _, term, trunc, _ = env.step(chunk[-1])
    finally:
        env.sim._restore_state(saved)
        env.sim._discard_state(saved)
        env._task, env._supervisor, env.last_command, state = snapshot
        env._view = SupervisorView(env._supervisor)  # the policy-facing view of the restored supervisor
        env.robot._restore(plan)
        vars(expert).clear()
        vars(expert).update(state)
        env.sim._time, env.images = clock, images
    return np.stack(chunk)


def _record_episodes(
    scenario: str,
    randomize: bool,
    indices: list[int],
    seed: int,
    out: Path,
    label: str = "",
    action_noise: float = 0.0,
    show: bool = True,
    tty: bool | None = None,
) -> int:
    """Episodes `indices` (seed + k each) to `out`; returns how many succeeded.
    Progress per step and a line per episode go to stderr (`show`), labelled `label`."""
    env = QRobotEnv(_scenario(scenario, randomize), images=True)
    expert = make_policy("expert", env)
    bar = Progress(label or f"collect {scenario}", len(indices), enabled=show, tty=tty)
    kept = 0
    for k in indices:
        path = episode_path(out, k, seed)
        obs, _ = env.reset(seed=seed + k)
        expert.reset(obs["instruction"])
        perturb = ActionNoise(action_noise, seed + k)
        chunks: list[np.ndarray] = []
        frames: dict[str, list] = {name: [] for name in obs["images"]}
        proprio, goal, actions, poses, ground = [], [], [], [], []
        done = False
        info: dict = {}
        while not done:
            action = np.asarray(expert.act(obs), np.float32)
            for name, img in obs["images"].items():
                frames[name].append(img)
            proprio.append(obs["proprio"])
            goal.append(obs.get("goal", np.zeros(0, np.float32)))
            actions.append(action)
            if perturb.scale:
                chunks.append(expert_continuation(env, expert, action, LABEL_CHUNK))
            poses.append(env.robot_state().get("base_pose", np.zeros(3)))
            ground.append(grounding_label(env.privileged_state()))
            obs, _, term, trunc, info = env.step(perturb(action))
            done = term or trunc
            bar.step(len(actions))
        # (Any: numpy types savez's **kwds so that a str-keyed dict might hold allow_pickle)
        arrays: dict[str, Any] = {
            **{f"images_{n}": np.stack(v) for n, v in frames.items()},
            "proprio": np.stack(proprio),
            "goal": np.stack(goal),
            "actions": np.stack(actions),
            "base_pose": np.stack(poses),
            "grounding": np.stack(ground),
            "instruction": np.array(env.task.instruction),
            "success": np.array(bool(info.get("success"))),
            "seed": np.array(seed + k),
            "action_noise": np.array(perturb.scale),
            **({"action_chunks": np.stack(chunks)} if chunks else {}),
        }
        partial = out / f".{path.name}"  # (hidden: not an episode until renamed)
        np.savez_compressed(partial, **arrays)
        partial.replace(path)
        kept += bool(info.get("success"))
        bar.episode(bool(info.get("success")))
        if show:
            bar.result(
                f"{bar.label}: episode {k} seed {seed + k}: "
                f"{'success' if info.get('success') else 'failed'} in {len(actions)} steps",
                sys.stderr,
            )
    bar.close()
    env.close()
    return kept


def _succeeded(path: Path) -> bool:
    with np.load(path) as z:
        return bool(z["success"])


def collect(
    scenario: str,
    episodes: int,
    out: Path,
    seed: int = 0,
    randomize: bool = True,
    show: bool = False,
    workers: int = 1,
    action_noise: float = 0.0,
) -> dict[str, Any]:
    """Record `episodes` scripted-expert episodes (domain randomised: lighting, colours;
    poses are random per seed), split over `workers` processes; `action_noise` > 0 executes
    DART-perturbed actions (see ActionNoise)."""
    sc = _scenario(scenario, randomize)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = QRobotEnv(sc, images=False)
    intent = {
        "scenario": sc.name,
        "robot": sc.robot,
        "task": sc.task.kind,
        "cameras": [c.name for c in sc.cameras],
        "image_size": [sc.cameras[0].height, sc.cameras[0].width],
        "proprio_dim": env.robot.proprio_dim,
        "goal_dim": env.task.goal_dim,
        "action_dim": env.robot.action_dim,
        "seed": seed,
        "randomized": randomize,
        "action_noise": action_noise,
    }
    env.close()
    _check_intent(out, intent)
    # an interrupted collection goes on where it stopped (episode files appear whole); the
    # missing episodes, not the planned ones, are what the workers share
    on_disk = [episode_path(out, k, seed).is_file() for k in range(episodes)]
    done = [k for k in range(episodes) if on_disk[k]]
    pending = [k for k in range(episodes) if not on_disk[k]]
    kept = sum(_succeeded(episode_path(out, k, seed)) for k in done)
    workers = max(1, min(workers, len(pending)))
    if pending and workers == 1:
        kept += _record_episodes(scenario, randomize, pending, seed, out, "", action_noise, show)
    elif pending:
        ctx = multiprocessing.get_context("spawn")  # a fresh interpreter per worker (no forked PyBullet)
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            jobs = [
                pool.submit(
                    _record_episodes,
                    scenario,
                    randomize,
                    pending[w::workers],
                    seed,
                    out,
                    f"collect {scenario} worker {w}",
                    action_noise,
                    show,
                    False,
                )
                for w in range(workers)
            ]
            kept += sum(j.result() for j in jobs)
    meta = {k: v for k, v in intent.items() if k != "seed"}
    meta.update(control_hz=sc.control_hz, episodes=episodes, successful=kept, seeds=[seed, seed + episodes - 1])
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / COLLECTING).unlink(missing_ok=True)
    return meta


def _check_intent(out: Path, intent: dict[str, Any]) -> None:
    """Write what this collection is (so that a killed one can go on), or check that an
    unfinished one in `out` was the same: its episode files are reused as they are."""
    path = out / COLLECTING
    if path.is_file():
        try:
            held = json.loads(path.read_text())
        except (OSError, ValueError):
            held = None
        if held != intent:
            raise QrobotError(f"collect --out: {out} holds an unfinished collection of other episodes ({path})")
    elif (out / "meta.json").is_file():  # a finished collection, grown: the same episodes, more of them
        try:
            meta = json.loads((out / "meta.json").read_text())
        except (OSError, ValueError):
            meta = None
        held = meta if isinstance(meta, dict) else {}
        wanted = {k: v for k, v in intent.items() if k != "seed"}
        seeds = held.get("seeds")
        first = seeds[0] if isinstance(seeds, list) and seeds else None
        if {k: held.get(k) for k in wanted} != wanted or first != intent["seed"]:
            raise QrobotError(
                f"collect --out: {out} holds a finished collection of other episodes ({out / 'meta.json'}); "
                "grow it only with the same scenario, --seed, --action-noise and randomisation"
            )
    else:
        path.write_text(json.dumps(intent, indent=2) + "\n")


@dataclass
class Episode:
    images: np.ndarray  # (T, cams, H, W, 3)
    state: np.ndarray  # (T, S): proprio ++ goal
    actions: np.ndarray  # (T, A)
    base_pose: np.ndarray  # (T, 3)
    grounding: np.ndarray  # (T, 8) or (T, 0): a training label, never an input
    instruction: str
    success: bool
    chunks: np.ndarray | None = None  # (T, LABEL_CHUNK, A): DART episodes' clean continuations
    scenario: str = ""  # the scenario it was recorded in (balanced sampling across tasks)


def load_episodes(directory: Path, successful_only: bool = True) -> tuple[dict[str, Any], list[Episode]]:
    directory = Path(directory)
    if (directory / "meta" / "info.json").is_file():  # a LeRobotDataset v3 (`qrobot export lerobot`)
        from qrobot.export.lerobot import read_lerobot

        return read_lerobot(directory, successful_only)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise QrobotError(f"{directory}: not a qrobot dataset (no meta.json; make one with `qrobot collect`)")
    meta = read_meta(meta_path, {"scenario": str, "cameras": list, "seeds": list})
    if len(meta["seeds"]) != 2 or not all(isinstance(c, str) for c in meta["cameras"]):
        raise QrobotError(f"{meta_path}: 'seeds' must be [first, last] and 'cameras' a list of names")
    eps = []
    for f in sorted(directory.glob("ep*.npz")):
        try:
            ep = _load_episode(f, meta["cameras"], successful_only)
        except Exception as exc:  # zip, npz, key and shape errors: a damaged or foreign file
            raise QrobotError(f"{f}: not a readable qrobot episode ({type(exc).__name__}: {str(exc)[:120]})") from None
        if ep is not None:
            ep.scenario = str(meta["scenario"])
            eps.append(ep)
    return meta, eps


def _load_episode(f: Path, cameras: list[str], successful_only: bool) -> Episode | None:
    with np.load(f) as z:
        if successful_only and not bool(z["success"]):
            return None
        imgs = np.stack([z[f"images_{c}"] for c in cameras], axis=1)
        state = np.concatenate([z["proprio"], z["goal"]], axis=1).astype(np.float32)
        ep = Episode(
            imgs,
            state,
            z["actions"].astype(np.float32),
            z["base_pose"].astype(np.float32),
            z["grounding"].astype(np.float32) if "grounding" in z else np.zeros((len(state), 0), np.float32),
            str(z["instruction"]),
            bool(z["success"]),
            z["action_chunks"].astype(np.float32) if "action_chunks" in z else None,
        )
    if not (len(ep.images) == len(ep.state) == len(ep.actions) > 0):
        raise ValueError("images, state and actions differ in length or are empty")
    return ep


MUST_AGREE = ("robot", "cameras", "image_size", "proprio_dim", "action_dim")  # one embodiment


def load_datasets(directories: list[Path], successful_only: bool = True) -> tuple[dict[str, Any], list[Episode]]:
    """Several collections of one embodiment (clean and DART-noised, and several tasks) as
    one: the episodes of all, and the first's meta with `sources` describing each and
    `scenarios` naming them. The state is proprio ++ goal, the goal zero-padded to the
    largest goal any of them has (a task without a goal sensor observes zeros there)."""
    metas: list[dict[str, Any]] = []
    episodes: list[Episode] = []
    for d in directories:
        meta, eps = load_episodes(d, successful_only)
        for key in MUST_AGREE:
            if metas and meta.get(key) != metas[0].get(key):
                raise QrobotError(
                    f"{Path(d) / 'meta.json'}: {key} is {meta.get(key)!r}, but {directories[0]} "
                    f"has {metas[0].get(key)!r}; datasets trained together must agree on {', '.join(MUST_AGREE)}"
                )
        metas.append(meta)
        episodes += eps
    merged = dict(metas[0])
    merged["scenarios"] = sorted({str(m["scenario"]) for m in metas})
    merged["goal_dim"] = max(int(m.get("goal_dim", 0)) for m in metas)
    width = int(merged.get("proprio_dim", 0)) + merged["goal_dim"]
    for ep in episodes:
        if ep.state.shape[1] < width:
            ep.state = np.pad(ep.state, ((0, 0), (0, width - ep.state.shape[1])))
    merged["sources"] = [
        (f"{m['scenario']}: " if len(merged["scenarios"]) > 1 else "")
        + f"seeds {m['seeds'][0]}-{m['seeds'][1]}"
        + (f", DART action noise {m['action_noise']}" if m.get("action_noise") else "")
        for m in metas
    ]
    if not episodes:
        raise QrobotError(
            f"{', '.join(map(str, directories))}: no {'successful ' if successful_only else ''}episodes to train on"
        )
    return merged, episodes


def action_chunk(ep: Episode, t: int, horizon: int) -> np.ndarray:
    """Actions t .. t+H-1, the last one repeated past the episode's end; in a DART episode
    the expert's clean continuation from step t."""
    if ep.chunks is not None and horizon <= ep.chunks.shape[1]:
        return ep.chunks[t, :horizon]
    idx = np.minimum(np.arange(t, t + horizon), len(ep.actions) - 1)
    return ep.actions[idx]


def future_waypoints(ep: Episode, t: int, count: int = 8, stride: int = 2) -> np.ndarray:
    """(count, 3) future base poses (x, y, theta) in the robot frame at step t."""
    idx = np.minimum(t + stride * np.arange(1, count + 1), len(ep.base_pose) - 1)
    x, y, th = ep.base_pose[t]
    d = ep.base_pose[idx, :2] - [x, y]
    c, s = np.cos(th), np.sin(th)
    local = np.stack([c * d[:, 0] + s * d[:, 1], -s * d[:, 0] + c * d[:, 1]], axis=1)
    dth = np.arctan2(np.sin(ep.base_pose[idx, 2] - th), np.cos(ep.base_pose[idx, 2] - th))
    return np.concatenate([local, dth[:, None]], axis=1).astype(np.float32)
