"""Gymnasium contract over the whole registry: check_env, make_vec, determinism."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import qrobot.envs
from gymnasium.utils.env_checker import check_env

from qrobot.scenario import scenario_names

IDS = qrobot.envs.registered_ids()


def test_one_id_per_scenario() -> None:
    assert IDS == sorted(qrobot.envs.env_id(n) for n in scenario_names())
    assert "qrobot/PickPlace-v0" in IDS and "qrobot/PointNavPeople-v0" in IDS


@pytest.mark.parametrize("env_id", IDS)
def test_check_env(env_id: str) -> None:
    env = gym.make(env_id)
    check_env(env.unwrapped, skip_render_check=True)
    env.close()


@pytest.mark.parametrize("env_id", IDS)
def test_observation_has_no_privileged_state(env_id: str) -> None:
    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    assert set(obs) <= {"images", "proprio", "instruction", "goal"}
    assert obs["proprio"].shape == (env.unwrapped.robot.proprio_dim,)
    kind = env.unwrapped.scenario.task.kind
    assert ("goal" in obs) == (kind in ("reach", "pointnav"))
    cams = set(obs["images"])
    assert cams == ({"front"} if kind in ("pointnav", "objectnav") else {"scene", "wrist"})
    env.close()


def _rollout(env_id: str, seed: int, steps: int = 100) -> tuple[list, list]:
    env = gym.make(env_id)
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    frames, rewards = [obs], []
    for _ in range(steps):
        obs, r, term, trunc, _ = env.step(env.action_space.sample())
        frames.append(obs)
        rewards.append(r)
        if term or trunc:
            obs, _ = env.reset()
            frames.append(obs)
    env.close()
    return frames, rewards


def _same(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, np.ndarray):
        return a.shape == b.shape and bool(np.array_equal(a, b))
    return a == b


@pytest.mark.parametrize("env_id", ["qrobot/PickPlace-v0", "qrobot/PointNavPeople-v0"])
def test_same_seed_same_rollout(env_id: str) -> None:
    f1, r1 = _rollout(env_id, seed=7)
    f2, r2 = _rollout(env_id, seed=7)
    assert r1 == r2
    assert len(f1) == len(f2) and all(_same(a, b) for a, b in zip(f1, f2))
    f3, _ = _rollout(env_id, seed=8, steps=1)
    assert not _same(f1[0], f3[0])


def test_reset_restores_the_world() -> None:
    """A second episode with the same seed equals the first, whatever happened in between."""
    env = gym.make("qrobot/Stack-v0")
    obs_a, _ = env.reset(seed=3)
    for _ in range(20):
        env.step(env.action_space.sample())
    obs_b, _ = env.reset(seed=3)
    assert _same(obs_a, obs_b)
    env.close()


def test_make_vec() -> None:
    envs = gym.make_vec("qrobot/Reach-v0", num_envs=2, vectorization_mode="sync")
    obs, _ = envs.reset(seed=[1, 2])
    assert obs["images"]["scene"].shape == (2, 128, 128, 3)
    assert obs["proprio"].shape == (2, 13)
    obs, rew, term, _trunc, _info = envs.step(envs.action_space.sample())
    assert rew.shape == (2,) and term.shape == (2,)
    envs.close()
