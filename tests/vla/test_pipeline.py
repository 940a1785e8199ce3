"""collect -> train -> run: the VLA pipeline end to end on a tiny budget (< 60 s)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from qrobot.cli import main
from qrobot.envs.core import MOUNT_UP, QRobotEnv
from qrobot.policies import make_policy
from qrobot.robots.panda import hand_frame
from qrobot.vla.data import action_chunk, future_waypoints, image_point, load_episodes


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
    assert main(["run", "pick_place", "--policy", "qwen-vla", "--checkpoint", str(ckpt), "--episodes", "1",
                 "--no-record"]) == 0
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
    assert not any(isinstance(v, QRobotEnv) or callable(getattr(v, "privileged_state", None))
                   for v in vars(policy).values())  # no handle on the env or its privileged channel
    obs, _ = env.reset(seed=0)
    policy.reset(obs["instruction"])
    action = policy.act(obs)  # from images, proprio, instruction and the goal vector only
    assert action.shape == (3,) and np.all(np.abs(action) <= 1.0)
    env.close()


def test_image_point_is_where_the_scene_camera_sees_the_cube() -> None:
    """The keypoint labels: project each cube, then find it in a real render (the pixels that
    change when the cube is taken away)."""
    env = QRobotEnv("pick_place", images=True)
    spec = next(c for c in env.scenario.cameras if c.name == "scene")
    cam = next(c for c in env.cameras if c.name == "scene")
    for seed in (0, 1):
        env.reset(seed=seed)
        for name in env.task.cubes:
            before, _ = env.sim.render(cam)
            pos, orn = env.sim.pose(name)
            env.sim.client.resetBasePositionAndOrientation(env.sim.bodies[name], [3, 3, 0.02], orn)
            after, _ = env.sim.render(cam)
            env.sim.client.resetBasePositionAndOrientation(env.sim.bodies[name], pos, orn)
            rows, cols = np.nonzero(np.abs(before.astype(int) - after).max(-1) > 30)
            assert len(rows) > 40   # the cube is in view
            seen = np.array([(cols.mean() + 0.5) / cam.width * 2 - 1, (rows.mean() + 0.5) / cam.height * 2 - 1])
            np.testing.assert_allclose(image_point(np.array(pos), spec.eye, spec.target, spec.fov), seen, atol=0.03)
    # the wrist camera, placed from the proprio alone, while the expert approaches the cube
    spec = next(c for c in env.scenario.cameras if c.name == "wrist")
    cam = next(c for c in env.cameras if c.name == "wrist")
    obs, _ = env.reset(seed=0)
    expert = make_policy("expert", env)
    expert.reset(obs["instruction"])
    name, checked = env.task.target_name, 0
    for _ in range(10):
        hand, rot = hand_frame(obs["proprio"][:3], np.arctan2(obs["proprio"][4], obs["proprio"][3]))
        before, _ = env.sim.render(cam)
        pos, orn = env.sim.pose(name)
        env.sim.client.resetBasePositionAndOrientation(env.sim.bodies[name], [3, 3, 0.02], orn)
        after, _ = env.sim.render(cam)
        env.sim.client.resetBasePositionAndOrientation(env.sim.bodies[name], pos, orn)
        rows, cols = np.nonzero(np.abs(before.astype(int) - after).max(-1) > 30)
        if 100 < len(rows) < 600:   # wholly in view (close up the image edge cuts it)
            seen = np.array([(cols.mean() + 0.5) / cam.width * 2 - 1, (rows.mean() + 0.5) / cam.height * 2 - 1])
            point = image_point(np.array(pos), hand + rot @ np.array(spec.eye), hand + rot @ np.array(spec.target),
                                spec.fov, up=rot @ np.array(MOUNT_UP["wrist"]))
            np.testing.assert_allclose(point, seen, atol=0.03)
            checked += 1
        obs, *_ = env.step(expert.act(obs))
    assert checked >= 3
    env.close()
