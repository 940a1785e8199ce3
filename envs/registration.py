"""One gymnasium id per packaged scenario: `qrobot/<CamelName>-v0`."""

from __future__ import annotations

import gymnasium as gym

from qrobot.scenario import load_scenario, scenario_names

_WORDS = {"pointnav": "PointNav", "objectnav": "ObjectNav"}


def env_id(scenario: str) -> str:
    """pick_place -> qrobot/PickPlace-v0, pointnav_people -> qrobot/PointNavPeople-v0."""
    name = "".join(_WORDS.get(w, w.capitalize()) for w in scenario.split("_"))
    return f"qrobot/{name}-v0"


def register_all() -> list[str]:
    ids = []
    for name in scenario_names():
        eid = env_id(name)
        if eid not in gym.registry:
            gym.register(eid, entry_point="qrobot.envs.core:QRobotEnv",
                         kwargs={"scenario": name},
                         max_episode_steps=load_scenario(name).max_steps)
        ids.append(eid)
    return ids


def registered_ids() -> list[str]:
    return sorted(k for k in gym.registry if k.startswith("qrobot/"))
