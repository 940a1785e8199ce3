"""Policies: scripted experts (privileged), baselines, and (later) the Qwen VLA.

`make_policy(name, env)` builds one for an env; `POLICY_NAMES` lists the names.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from qrobot.errors import QrobotError
from qrobot.policies.base import HoldPolicy, Policy, RandomPolicy
from qrobot.policies.experts import NavExpert, PickPlaceExpert, ReachExpert

POLICY_NAMES = ("expert", "random", "hold")
_EXPERTS = {"reach": ReachExpert, "pick_place": PickPlaceExpert, "stack": PickPlaceExpert,
            "pointnav": NavExpert, "objectnav": NavExpert}


def needs_images(name: str) -> bool:
    """Whether the named policy reads camera images (the env skips rendering if not)."""
    return name not in POLICY_NAMES


def make_policy(name: str, env: gym.Env, seed: int = 0, **kwargs: Any) -> Policy:
    """Build the named policy for `env` (the expert matching its task)."""
    base = env.unwrapped
    if name == "expert":
        return _EXPERTS[base.scenario.task.kind](base.privileged_state)
    if name == "random":
        return RandomPolicy(env.action_space, seed)
    if name == "hold":
        return HoldPolicy(env.action_space)
    raise QrobotError(f"unknown policy {name!r}; valid names: {', '.join(POLICY_NAMES)}")


__all__ = ["POLICY_NAMES", "Policy", "make_policy", "needs_images"]
