"""Gymnasium ids, registered on `import qrobot` (as panda-gym does on `import panda_gym`).

Kept light: the scenario files are read with tomllib only for their step limit, and the
env class is imported by gymnasium when an id is first made.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import tomllib

_WORDS = {"pointnav": "PointNav", "objectnav": "ObjectNav"}


def env_id(scenario: str) -> str:
    """pick_place -> qrobot/PickPlace-v0, pointnav_people -> qrobot/PointNavPeople-v0."""
    name = "".join(_WORDS.get(w, w.capitalize()) for w in scenario.split("_"))
    return f"qrobot/{name}-v0"


def _scenario_files() -> dict[str, Path]:
    folder = Path(str(resources.files("qrobot.scenarios")))
    return {p.stem: p for p in sorted(folder.glob("*.toml"))}


def _max_steps(files: dict[str, Path], name: str, depth: int = 0) -> int | None:
    data = tomllib.loads(files[name].read_text(encoding="utf-8"))
    if "max_steps" in data or depth > 8:
        return data.get("max_steps")
    parent = data.get("extends")
    return _max_steps(files, parent, depth + 1) if parent in files else None


def register_all() -> list[str]:
    import gymnasium as gym

    files = _scenario_files()
    ids = []
    for name in files:
        eid = env_id(name)
        if eid not in gym.registry:
            gym.register(
                eid,
                entry_point="qrobot.envs.core:QRobotEnv",
                kwargs={"scenario": name},
                max_episode_steps=_max_steps(files, name),
            )
        ids.append(eid)
    return ids


def registered_ids() -> list[str]:
    import gymnasium as gym

    return sorted(k for k in gym.registry if k.startswith("qrobot/"))
