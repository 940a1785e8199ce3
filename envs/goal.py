"""Opt-in goal-conditioned observations for hindsight experience replay (HER).

`GoalConditioned(env)` adds `achieved_goal` and `desired_goal` to the observation and a
vectorised `compute_reward(achieved_goal, desired_goal, info)`, the interface
Gymnasium-Robotics' GoalEnv and HER replay buffers use; the step reward becomes that
sparse reward (0 within the task's success distance, else -1). Opt-in because
`achieved_goal` is privileged state that the default observation never carries.

The goals are points: the end effector and the target (reach), the named cube and where
it must go (pick_place, stack), the base and the goal point (pointnav). The reward is the
distance test alone; the task's own success may ask more (the cube released, the base
stopped), which `info["is_success"]` reports. ObjectNav's goal is a landmark's surface,
not a point, so it has no wrapper.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from .core import QRobotEnv  # relative: mypy checks this folder as `envs`, installed as `qrobot.envs`

_POINTS = {  # task kind -> (achieved, desired) from the env's privileged state, and their size
    "reach": (lambda s: s["robot"]["ee_pos"], lambda s: s["target"], 3),
    "pick_place": (lambda s: s["target_pose"][0], lambda s: s["place_point"], 3),
    "stack": (lambda s: s["target_pose"][0], lambda s: s["place_point"], 3),
    "pointnav": (lambda s: s["robot"]["base_pose"][:2], lambda s: s["goal_xy"], 2),
}


def _qrobot(env: gym.Env) -> QRobotEnv:
    """The QRobotEnv under any wrappers (the wrapper is for qrobot envs)."""
    return cast("QRobotEnv", env.unwrapped)


class GoalConditioned(gym.Wrapper):
    """achieved_goal / desired_goal observations and compute_reward for HER."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        kind = _qrobot(env).scenario.task.kind
        if kind not in _POINTS:
            raise QrobotError(f"GoalConditioned: task {kind!r} has no point goal; supported: {sorted(_POINTS)}")
        self._achieved, self._desired, n = _POINTS[kind]
        self.distance_threshold = float(_qrobot(env).scenario.task.success_distance)
        box = spaces.Box(-np.inf, np.inf, (n,), np.float32)
        self.observation_space = spaces.Dict(
            {**cast(spaces.Dict, env.observation_space).spaces, "achieved_goal": box, "desired_goal": box}
        )

    def _goals(self, obs: dict[str, Any]) -> dict[str, Any]:
        state = _qrobot(self.env).privileged_state()
        return {
            **obs,
            "achieved_goal": np.asarray(self._achieved(state), np.float32).copy(),
            "desired_goal": np.asarray(self._desired(state), np.float32).copy(),
        }

    def reset(self, **kwargs: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        return self._goals(obs), info

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        obs, _, terminated, truncated, info = self.env.step(action)
        obs = self._goals(obs)
        return (
            obs,
            float(self.compute_reward(obs["achieved_goal"], obs["desired_goal"], info)),
            terminated,
            truncated,
            info,
        )

    def compute_reward(self, achieved_goal: np.ndarray, desired_goal: np.ndarray, info: Any) -> np.ndarray:
        """0 where the goals lie within the success distance, -1 elsewhere; works on one pair
        or on batches (..., n) as HER relabelling needs."""
        d = np.linalg.norm(np.asarray(achieved_goal, np.float64) - np.asarray(desired_goal, np.float64), axis=-1)
        return -(d >= self.distance_threshold).astype(np.float32)
