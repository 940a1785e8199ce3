"""Policies: scripted experts (privileged), baselines, and (later) the Qwen VLA.

`make_policy(name, env)` builds one for an env; `POLICY_NAMES` lists the names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym

from qrobot.errors import QrobotError
from qrobot.policies.base import HoldPolicy, Policy, RandomPolicy
from qrobot.policies.experts import NavExpert, PickPlaceExpert, ReachExpert

POLICY_NAMES = ("expert", "random", "hold", "qwen-vla")
_IMAGE_POLICIES = {"qwen-vla"}
_EXPERTS = {"reach": ReachExpert, "pick_place": PickPlaceExpert, "stack": PickPlaceExpert,
            "pointnav": NavExpert, "objectnav": NavExpert}


def needs_images(name: str) -> bool:
    """Whether the named policy reads camera images (the env skips rendering if not)."""
    return name in _IMAGE_POLICIES


def make_policy(name: str, env: gym.Env, seed: int = 0, **kwargs: Any) -> Policy:
    """Build the named policy for `env` (the expert matching its task)."""
    base = env.unwrapped
    if name == "expert":
        return _EXPERTS[base.scenario.task.kind](base.privileged_state)
    if name == "random":
        return RandomPolicy(env.action_space, seed)
    if name == "hold":
        return HoldPolicy(env.action_space)
    if name == "qwen-vla":
        from qrobot.policies.vla import VLAPolicy  # torch/transformers only when asked for

        checkpoint = kwargs.get("checkpoint")
        if not checkpoint or not (Path(checkpoint) / "vla_config.json").is_file():
            raise QrobotError(f"policy 'qwen-vla' needs --checkpoint DIR with a trained model "
                              f"(vla_config.json); got {checkpoint!r}")
        return VLAPolicy(checkpoint, device=kwargs.get("device", "cpu"), seed=seed)
    raise QrobotError(f"unknown policy {name!r}; valid names: {', '.join(POLICY_NAMES)}")


__all__ = ["POLICY_NAMES", "Policy", "make_policy", "needs_images"]
