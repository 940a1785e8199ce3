"""collect -> train -> run: the VLA pipeline end to end on a tiny budget (< 60 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.vla.data import action_chunk, camera_point, future_waypoints, load_episodes
from qrobot.vla.geometry import TableRays, ray_config


def test_smoke_collect_train_run(tmp_path: Path, capsys) -> None:
    ds, ckpt = tmp_path / "ds", tmp_path / "ckpt"
    assert main(["collect", "pick_place", "--episodes", "2", "--out", str(ds)]) == 0
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["cameras"] == ["scene", "wrist"] and meta["episodes"] == 2
    _, eps = load_episodes(ds)
    assert eps[0].images.shape[1:] == (2, 128, 128, 3) and eps[0].state.shape[1] == 13
    assert action_chunk(eps[0], len(eps[0].actions) - 1, 8).shape == (8, 5)
    assert main(["train", "--dataset", str(ds), "--out", str(ckpt), "--steps", "20", "--batch", "4"]) == 0
    assert (ckpt / "vla_config.json").is_file() and (ckpt / "backbone" / "config.json").is_file()
    capsys.readouterr()
    assert (
        main(["run", "pick_place", "--policy", "qwen-vla", "--checkpoint", str(ckpt), "--episodes", "1", "--no-record"])
        == 0
    )
    assert "pick_place / qwen-vla: success" in capsys.readouterr().out


def test_vla_policy_sees_only_the_observation(tmp_path: Path) -> None:
    ds, ckpt = tmp_path / "ds", tmp_path / "ckpt"
    main(["collect", "pointnav", "--episodes", "2", "--out", str(ds)])
    _, eps = load_episodes(ds)
    w = future_waypoints(eps[0], 0)
    assert w.shape == (8, 3) and w[-1, 0] > 0.05  # the expert drives forward in its own frame
    main(["train", "--dataset", str(ds), "--out", str(ckpt), "--steps", "10", "--batch", "4"])
    env = QRobotEnv("pointnav", images=True)
    policy = make_policy("qwen-vla", env, checkpoint=str(ckpt))
    assert not any(
        isinstance(v, QRobotEnv) or callable(getattr(v, "privileged_state", None)) for v in vars(policy).values()
    )  # no handle on the env or its privileged channel
    obs, _ = env.reset(seed=0)
    policy.reset(obs["instruction"])
    action = policy.act(obs)  # from images, proprio, instruction and the goal vector only
    assert action.shape == (3,) and np.all(np.abs(action) <= 1.0)
    env.close()


def _where_rendered(env: QRobotEnv, camera: str, name: str) -> tuple[int, np.ndarray]:
    """Pixels of cube `name` in a real render (those that change when it is taken away) and
    their centre in [-1, 1]."""
    cam = next(c for c in env.cameras if c.name == camera)
    before, _ = env.sim.render(cam)
    pos, orn = env.sim.pose(name)
    env.sim._set_pose(name, [3, 3, 0.02], orn)
    after, _ = env.sim.render(cam)
    env.sim._set_pose(name, pos, orn)
    rows, cols = np.nonzero(np.abs(before.astype(int) - after).max(-1) > 30)
    centre = (
        np.array([(cols.mean() + 0.5) / cam.width * 2 - 1, (rows.mean() + 0.5) / cam.height * 2 - 1])
        if len(rows)
        else np.full(2, np.nan)
    )
    return len(rows), centre


def test_keypoint_labels_are_where_the_cameras_see_the_cube() -> None:
    """camera_point (the keypoint labels) against real renders: the scene camera for every
    cube, the wrist camera (placed from the proprio alone) while the expert approaches."""
    env = QRobotEnv("pick_place", images=True)
    specs = {c.name: c for c in env.scenario.cameras}

    def label(camera: str, name: str, proprio: np.ndarray) -> np.ndarray:
        return camera_point(specs[camera], np.array(env.sim.pose(name)[0])[None], proprio[None], "panda")[0]

    for seed in (0, 1):
        obs, _ = env.reset(seed=seed)
        for name in env.task.cubes:
            pixels, seen = _where_rendered(env, "scene", name)
            assert pixels > 40  # the cube is in view
            np.testing.assert_allclose(label("scene", name, obs["proprio"]), seen, atol=0.03)
    obs, _ = env.reset(seed=0)
    expert = make_policy("expert", env)
    expert.reset(obs["instruction"])
    checked = 0
    for _ in range(10):
        pixels, seen = _where_rendered(env, "wrist", env.task.target_name)
        if 100 < pixels < 600:  # wholly in view (close up the image edge cuts it)
            np.testing.assert_allclose(label("wrist", env.task.target_name, obs["proprio"]), seen, atol=0.03)
            checked += 1
        obs, *_ = env.step(expert.act(obs))
    assert checked >= 3
    env.close()


def test_table_rays_put_a_rendered_cube_where_it_rests() -> None:
    """The grounding head's camera geometry (TableRays) run backwards from where real
    renders show the named cube: the scene camera and the wrist camera (placed from the
    proprio) both give the cube's position relative to the gripper, as the labels have it."""
    env = QRobotEnv("pick_place", images=True)
    obs, _ = env.reset(seed=0)
    cube = env.task.target_name
    rest_z = float(env.sim.pose(cube)[0][2])
    spec = ray_config(env.scenario.cameras, "panda", rest_z)
    wide = (np.full(13, -10.0), np.full(13, 10.0))  # normalised state = raw / 10
    rays = TableRays(spec, wide, (np.full(8, -1.0), np.full(8, 1.0)))  # normalised grounding = metres
    expert = make_policy("expert", env)
    expert.reset(obs["instruction"])
    errors = {"scene": [], "wrist": []}
    for _ in range(12):
        seen = [_where_rendered(env, cam.name, cube) for cam in env.scenario.cameras]
        points = torch.tensor(np.stack([c for _, c in seen]), dtype=torch.float32)[None]
        state = torch.tensor(obs["proprio"] / 10.0, dtype=torch.float32)[None]
        placed = rays(points, state)[0].numpy()
        truth = np.array(env.sim.pose(cube)[0][:2]) - env.robot_state()["ee_pos"][:2]
        for (pixels, _), cam, xy in zip(seen, env.scenario.cameras, placed):
            if 100 < pixels < 600 or (cam.name == "scene" and pixels > 40):  # wholly in view
                errors[cam.name].append(float(np.linalg.norm(xy - truth)))
        obs, *_ = env.step(expert.act(obs))
    env.close()
    assert len(errors["scene"]) == 12 and len(errors["wrist"]) >= 3
    # a pixel of the 128-px scene camera is ~6 mm on the table, of the wrist camera ~2 mm
    assert max(errors["scene"]) < 0.015 and max(errors["wrist"]) < 0.01, errors


def test_a_killed_collection_goes_on_with_the_same_command(tmp_path: Path, capsys) -> None:
    """`collect` writes what it collects first (collecting.json) and meta.json at its end: the
    same command after a kill keeps the finished episodes and records only the missing ones;
    a different collection into that directory is refused with one line."""
    import subprocess
    import sys
    import time

    ds = tmp_path / "ds"
    cmd = [sys.executable, "-m", "qrobot.cli", "collect", "reach", "--episodes", "6", "--out", str(ds), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list(ds.glob("ep*.npz"))) < 2 and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait(30)
    kept = {p.name: p.stat().st_mtime_ns for p in ds.glob("ep*.npz")}
    assert 2 <= len(kept) < 6 and not (ds / "meta.json").exists() and (ds / "collecting.json").is_file()
    assert main(["collect", "pick_place", "--episodes", "6", "--out", str(ds), "-q"]) == 2
    assert "interrupted collection of other episodes" in capsys.readouterr().err
    assert main(["collect", "reach", "--episodes", "6", "--out", str(ds), "-q"]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in ds.glob("ep*.npz") if p.name in kept} == kept  # not redone
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["episodes"] == 6 and len(load_episodes(ds)[1]) == meta["successful"] == 6
    assert not (ds / "collecting.json").exists()


def test_an_extended_collection_shares_only_the_missing_episodes_among_workers(tmp_path: Path) -> None:
    """Growing a finished dataset (3 -> 7 episodes, as the make recipe grew pointnav) with
    2 workers: the 4 missing episodes are split 2 and 2, not by the planned range (which
    gave one worker all of them and the other none)."""
    import subprocess
    import sys

    ds = tmp_path / "ds"
    base = [sys.executable, "-m", "qrobot.cli", "collect", "reach", "--out", str(ds)]
    assert subprocess.run([*base, "--episodes", "3", "-q"], capture_output=True).returncode == 0
    kept = {p.name: p.stat().st_mtime_ns for p in ds.glob("ep*.npz")}
    done = subprocess.run([*base, "--episodes", "7", "--workers", "2"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    ran = [line.split(": episode ")[0].rsplit(" ", 1)[-1] for line in done.stderr.splitlines() if " seed " in line]
    assert sorted(ran) == ["0", "0", "1", "1"], done.stderr  # worker 0 and worker 1, two each
    assert {p.name: p.stat().st_mtime_ns for p in ds.glob("ep*.npz") if p.name in kept} == kept  # not redone
    meta = json.loads((ds / "meta.json").read_text())
    assert meta["episodes"] == 7 and meta["seeds"] == [0, 6] and len(load_episodes(ds)[1]) == meta["successful"]
    for other in (["--seed", "100"], ["--action-noise", "0.5"], ["--no-randomize"]):  # not the same episodes
        refused = subprocess.run([*base, "--episodes", "8", "-q", *other], capture_output=True, text=True)
        assert refused.returncode == 2 and "finished collection of other episodes" in refused.stderr, other
        assert "Traceback" not in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    assert len(list(ds.glob("ep*.npz"))) == 7 and json.loads((ds / "meta.json").read_text()) == meta
