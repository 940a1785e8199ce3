"""Policies: scripted experts (privileged), baselines, and (later) the Qwen VLA.

`make_policy(name, env)` builds one for an env; `POLICY_NAMES` lists the names.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import gymnasium as gym
from gymnasium import spaces
from qrobot.policies.base import HoldPolicy, Policy, RandomPolicy
from qrobot.policies.experts import NavExpert, PickPlaceExpert, Privileged, ReachExpert
from qrobot.policies.noisy import make_noisy
from qrobot.policies.plugins import load_factory, plugin_entries

import qrobot
from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from qrobot.bridge.remote import RemoteRobot
    from qrobot.scenario import Scenario

POLICY_NAMES = ("expert", "noisy-expert", "wander", "random", "hold", "qwen-vla")
CHECKPOINTS = Path(qrobot.__file__).resolve().parent / "checkpoints"


def _shipped() -> dict[str, Path]:
    """Task kind -> the checkpoint shipped for it (used when no --checkpoint is given): the
    one multi-task checkpoint `qwen-vla`, for every task its embodiments were trained on."""
    import json

    from qrobot.vla.multi import embodiments

    multi = CHECKPOINTS / "qwen-vla"
    try:  # a damaged install ships nothing (`qwen-vla` then asks for --checkpoint), it never breaks the import
        robots = embodiments(multi) or []
        return {
            kind: multi
            for robot in robots
            for kind in json.loads((multi / robot / "vla_config.json").read_text())["tasks"]
        }
    except (QrobotError, OSError, ValueError, KeyError, TypeError):
        return {}


SHIPPED = _shipped()
_IMAGE_POLICIES = {"qwen-vla"}
_EXPERTS: dict[str, Callable[[Privileged], Policy]] = {
    "reach": ReachExpert,
    "pick_place": PickPlaceExpert,
    "stack": PickPlaceExpert,
    "pointnav": NavExpert,
    "objectnav": NavExpert,
}


# shipped with qrobot but loaded as a plugin is: `lerobot` imports LeRobot only when built
# (it runs behind serve-policy in a venv with lerobot; policies/lerobot_policy.py)
BUNDLED = {"lerobot": EntryPoint("lerobot", "qrobot.policies.lerobot_policy:make", "qrobot.policies")}


def _entries() -> dict[str, EntryPoint]:
    return {**plugin_entries(POLICY_NAMES), **BUNDLED}


def policy_names() -> tuple[str, ...]:
    """The built-in names, then those pip-installed packages add (`qrobot.policies` entry points)."""
    return POLICY_NAMES + tuple(sorted(_entries()))


def _plugin(name: str) -> Any:
    entry = _entries().get(name)
    return None if entry is None else load_factory(name, entry)


def unfit_reason(name: str, scenario: Any) -> str | None:
    """Why the named policy cannot drive this scenario (None: it can), without building
    either: used to list pairs and to skip them in a bench."""
    if name not in POLICY_NAMES:
        factory = _plugin(name)
        if factory is None:
            return f"unknown policy {name!r}"
        unfit = getattr(factory, "unfit", None)
        return None if unfit is None else unfit(scenario)
    if name in ("noisy-expert", "wander") and scenario.robot != "diffbot":
        return f"{name} drives a mobile base; {scenario.name} has robot {scenario.robot}"
    if name == "qwen-vla":
        shipped = SHIPPED.get(scenario.task.kind)
        if shipped is None:
            return f"no shipped qwen-vla checkpoint for task {scenario.task.kind} (give one with --checkpoint)"
        from qrobot.vla.checkpoint import fits_scenario

        return fits_scenario(shipped, scenario)
    return None


def needs_images(name: str) -> bool:
    """Whether the named policy reads camera images (the env skips rendering if not)."""
    if name in POLICY_NAMES:
        return name in _IMAGE_POLICIES
    factory = _plugin(name)
    return bool(getattr(factory, "needs_images", True))


class TaskEnv(Protocol):
    """What make_policy reads of `env.unwrapped`: a QRobotEnv, or a RemoteRobot over the
    bridge. Only a QRobotEnv has the privileged channel the experts read; a remote robot
    never gets an expert (`check_remote_policy` refuses them first)."""

    @property
    def scenario(self) -> Scenario: ...

    def privileged_state(self) -> dict[str, Any]: ...


def make_policy(name: str, env: gym.Env | RemoteRobot, seed: int = 0, **kwargs: Any) -> Policy:
    """Build the named policy for `env` (the expert matching its task)."""
    base = cast(TaskEnv, env.unwrapped)
    if name == "expert":
        return _EXPERTS[base.scenario.task.kind](base.privileged_state)
    if name in ("noisy-expert", "wander"):
        if base.scenario.robot != "diffbot":
            raise QrobotError(
                f"policy {name!r} drives a mobile base; scenario {base.scenario.name!r} "
                f"has robot {base.scenario.robot!r} (use a pointnav or objectnav scenario)"
            )
        return make_noisy(name, lambda: make_policy("expert", env), seed)
    if name == "random":  # (qrobot envs and remote robots act in a Box)
        return RandomPolicy(cast(spaces.Box, env.action_space), seed)
    if name == "hold":
        return HoldPolicy(cast(spaces.Box, env.action_space))
    if name == "qwen-vla":
        from qrobot.policies.vla import VLAPolicy  # torch/transformers only when asked for

        task = base.scenario.task.kind
        checkpoint = kwargs.get("checkpoint") or SHIPPED.get(task)
        if not checkpoint or not any((Path(checkpoint) / f).is_file() for f in ("vla_config.json", "embodiments.json")):
            shipped = ", ".join(sorted(SHIPPED)) or "none"
            raise QrobotError(
                f"policy 'qwen-vla' needs --checkpoint DIR with a trained model "
                f"(vla_config.json) for task {task!r}; got {checkpoint!r} "
                f"(shipped checkpoints exist for: {shipped})"
            )
        from qrobot.vla.checkpoint import check_fits, check_policy_norm, read_config
        from qrobot.vla.multi import embodiment_dir

        robot = base.scenario.robot
        own = embodiment_dir(Path(checkpoint), robot)
        check_fits(read_config(own), own, base.scenario)  # local world or remote robot
        check_policy_norm(own)
        replan = {"replan": kwargs["replan"]} if kwargs.get("replan") else {}  # else the policy's default
        nav_stop = kwargs.get("nav_stop")  # (None: the checkpoint's own)
        return VLAPolicy(
            checkpoint, device=kwargs.get("device", "cpu"), seed=seed, robot=robot, nav_stop=nav_stop, **replan
        )
    factory = _plugin(name)
    if factory is not None:
        return cast(Policy, factory(env, seed=seed, **kwargs))
    raise QrobotError(f"unknown policy {name!r}; valid names: {', '.join(policy_names())}")


__all__ = [
    "POLICY_NAMES",
    "SHIPPED",
    "Policy",
    "TaskEnv",
    "make_policy",
    "needs_images",
    "policy_names",
    "unfit_reason",
]
