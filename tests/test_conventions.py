"""The conventions users bring: ids registered on `import qrobot`, `info["is_success"]`,
and an opt-in goal-conditioned wrapper whose rewards hold under HER relabelling."""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from qrobot.envs import GoalConditioned, QRobotEnv
from qrobot.policies import make_policy

from qrobot.errors import QrobotError
from qrobot.scenario import scenario_names


def test_import_qrobot_alone_registers_every_id_and_stays_light() -> None:
    code = (
        "import sys, qrobot, gymnasium as gym; "
        "ids = sorted(k for k in gym.registry if k.startswith('qrobot/')); "
        "print(len(ids), gym.spec('qrobot/PickPlace-v0').max_episode_steps, "
        "'pybullet' in sys.modules, 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    n, steps, bullet, torch_loaded = out.stdout.split()
    assert int(n) == len(scenario_names()) and int(steps) == 150
    assert bullet == "False" and torch_loaded == "False"  # the CLI's fast path stays fast


@pytest.mark.parametrize("name", scenario_names())
def test_is_success_mirrors_success_over_the_registry(name: str) -> None:
    from qrobot.registry import env_id

    env = gym.make(env_id(name), images=False)
    try:
        obs, info = env.reset(seed=3)
        assert info["is_success"] is info["success"] is False
        policy = make_policy("expert", env)
        policy.reset(obs["instruction"])
        for _ in range(40):
            obs, _, term, trunc, info = env.step(policy.act(obs))
            assert info["is_success"] is info["success"] and isinstance(info["is_success"], bool)
            if term or trunc:
                break
    finally:
        env.close()


@pytest.mark.parametrize("name", ["reach", "pick_place", "pointnav"])
def test_goal_wrapper_rewards_and_her_relabelling(name: str) -> None:
    env = GoalConditioned(QRobotEnv(name, images=False))
    try:
        obs, _ = env.reset(seed=5)
        n = 2 if name == "pointnav" else 3
        assert obs["achieved_goal"].shape == obs["desired_goal"].shape == (n,)
        assert env.observation_space["achieved_goal"].shape == (n,)
        policy = make_policy("expert", env)
        policy.reset(obs["instruction"])
        achieved, desired, rewards, success = [obs["achieved_goal"]], [obs["desired_goal"]], [], []
        for _ in range(env.unwrapped.scenario.max_steps):
            obs, reward, term, trunc, info = env.step(policy.act(obs))
            assert reward == env.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)
            achieved.append(obs["achieved_goal"])
            desired.append(obs["desired_goal"])
            rewards.append(reward)
            success.append(info["is_success"])
            if term or trunc:
                break
        ag, dg = np.stack(achieved), np.stack(desired)
        assert rewards[0] == -1.0 and any(success) and rewards[-1] == 0.0  # the expert got there
        assert float(np.linalg.norm(ag[-1] - ag[0])) > 0.05  # achieved_goal is the real, moving state
        # success implies the distance test (the task may ask more: released cube, stopped base)
        assert all(r == 0.0 for r, s in zip(rewards, success) if s)
        # HER "future" relabelling: the goal a transition reached is a goal it achieved
        rng = np.random.default_rng(0)
        t = rng.integers(0, len(ag) - 1, size=64)
        future = np.minimum(t + 1 + rng.integers(0, 5, size=64), len(ag) - 1)
        batch = env.compute_reward(ag[t + 1], ag[future], {})
        assert batch.shape == (64,) and batch.dtype == np.float32
        assert np.all(batch[future == t + 1] == 0.0)
        moved = np.linalg.norm(ag[future] - ag[t + 1], axis=-1) >= env.distance_threshold
        assert np.array_equal(batch == -1.0, moved)
        assert np.array_equal(
            env.compute_reward(ag, dg, {}),
            -(np.linalg.norm(ag - dg, axis=-1) >= env.distance_threshold).astype(np.float32),
        )
    finally:
        env.close()


def test_goal_wrapper_refuses_a_task_without_a_point_goal() -> None:
    env = QRobotEnv("objectnav", images=False)
    try:
        with pytest.raises(QrobotError, match="no point goal"):
            GoalConditioned(env)
    finally:
        env.close()
