"""Reading a saved VLA's files strictly, and checking that it fits a scenario.

A missing, truncated or malformed file, or a checkpoint made for another task or other
observation sizes, is one `QrobotError` naming the file and field, raised before any
weights are loaded where possible (the config and norm files are read first).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qrobot.errors import QrobotError

if TYPE_CHECKING:
    from qrobot.scenario import Scenario
    from qrobot.vla.model import Normalizer, QwenVLA, VLAConfig

CONFIG_FILE = "vla_config.json"
NORM_FILE = "norm_stats.json"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise QrobotError(f"{path}: missing (not a complete qrobot VLA checkpoint)") from None
    except (OSError, ValueError) as exc:
        raise QrobotError(f"{path}: not valid JSON ({str(exc)[:120]})") from None


def read_config(directory: Path) -> "VLAConfig":
    """vla_config.json, every field of the type VLAConfig declares."""
    from qrobot.vla.model import VLAConfig

    path = Path(directory) / CONFIG_FILE
    if not Path(directory).is_dir():
        raise QrobotError(f"{directory}: checkpoint directory not found")
    raw = _json(path)
    if not isinstance(raw, dict):
        raise QrobotError(f"{path}: must be a JSON object")
    fields = {f.name: f for f in dataclasses.fields(VLAConfig)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise QrobotError(f"{path}: unknown fields {unknown}; accepted: {sorted(fields)}")
    for name, value in raw.items():
        kind = {"str": str, "int": int, "bool": bool, "list[str]": list, "dict[str, Any]": dict}[str(fields[name].type)]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise QrobotError(f"{path}: field {name!r}: expected {fields[name].type} (got {value!r})")
        if kind is int and not (0 if name == "grounding_dim" else 1) <= value <= 4096:
            raise QrobotError(f"{path}: field {name!r}: {value} is outside "
                              f"{0 if name == 'grounding_dim' else 1}..4096")
    if "cameras" in raw and not (raw["cameras"] and all(isinstance(c, str) for c in raw["cameras"])):
        raise QrobotError(f"{path}: field 'cameras': a non-empty list of camera names")
    try:
        return VLAConfig(**raw)
    except ValueError as exc:
        raise QrobotError(f"{path}: {exc}") from None


def load_norm(path: Path) -> dict[str, "Normalizer"]:
    """norm_stats.json: {key: {q01: [...], q99: [...]}} of finite numbers, equal lengths."""
    from qrobot.vla.model import Normalizer

    raw = _json(path)
    if not isinstance(raw, dict):  # empty: an untrained model (tests, fresh checkpoints)
        raise QrobotError(f"{path}: must be a JSON object of {{key: {{q01, q99}}}}")
    out = {}
    for key, v in raw.items():
        ok = isinstance(v, dict) and all(isinstance(v.get(q), list) and v[q] and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v[q])
            for q in ("q01", "q99")) and len(v["q01"]) == len(v["q99"])
        if not ok:
            raise QrobotError(f"{path}: field {key!r}: needs q01 and q99, equal-length lists of finite numbers")
        out[key] = Normalizer(np.array(v["q01"]), np.array(v["q99"]))
    return out


def load_heads(model: "QwenVLA", path: Path) -> None:
    """heads.safetensors into the model's heads; every head must be complete and fit."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise QrobotError(f"{path}: missing (not a complete qrobot VLA checkpoint)")
    try:
        state = load_file(str(path))
    except Exception as exc:  # SafetensorError (truncated, bad header) is not an OSError
        raise QrobotError(f"{path}: unreadable ({str(exc)[:120]}); the file is damaged or truncated") from None
    heads = {"flow.": model.flow, "waypoint.": model.waypoint}
    if model.grounding is not None:
        heads["grounding."] = model.grounding
    for prefix, head in heads.items():
        try:
            head.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise QrobotError(f"{path}: {prefix[:-1]} head does not match vla_config.json "
                              f"({str(exc).splitlines()[0][:160]})") from None


def checkpoint_tasks(config: "VLAConfig") -> set[str]:
    """The task kinds a checkpoint was trained for (empty: unknown, only sizes are checked)."""
    from qrobot.scenario import load_scenario, scenario_names

    if config.scenario in scenario_names():
        return {load_scenario(config.scenario).task.kind}
    return set()


def scenario_dims(scenario: "Scenario") -> tuple[int, int, int]:
    """(proprio, goal, action) sizes a scenario's observations and actions have."""
    from qrobot.envs.core import TASKS
    from qrobot.robots.diffbot import DiffDriveBase
    from qrobot.robots.panda import PandaArm

    robot = {"panda": PandaArm, "diffbot": DiffDriveBase}[scenario.robot]
    return robot.proprio_dim, TASKS[scenario.task.kind].goal_dim, robot.action_dim


def check_fits(config: "VLAConfig", directory: Path, scenario: "Scenario") -> None:
    """Refuse a checkpoint made for another task, other cameras or other sizes."""
    where = Path(directory) / CONFIG_FILE
    proprio_dim, goal_dim, action_dim = scenario_dims(scenario)
    tasks = checkpoint_tasks(config)
    if tasks and scenario.task.kind not in tasks:
        raise QrobotError(f"{where}: a checkpoint for task {'/'.join(sorted(tasks))} (trained on "
                          f"{config.scenario!r}); scenario {scenario.name!r} is task {scenario.task.kind!r}")
    cams = {c.name: c for c in scenario.cameras}
    missing = [c for c in config.cameras if c not in cams]
    if missing:
        raise QrobotError(f"{where}: field 'cameras': {missing} not in scenario {scenario.name!r} "
                          f"(it has {sorted(cams)})")
    if config.state_dim != proprio_dim + goal_dim:
        raise QrobotError(f"{where}: field 'state_dim': {config.state_dim}; scenario {scenario.name!r} "
                          f"observes {proprio_dim + goal_dim} (proprio {proprio_dim} + goal {goal_dim})")
    if config.action_dim != action_dim:
        raise QrobotError(f"{where}: field 'action_dim': {config.action_dim}; robot {scenario.robot!r} "
                          f"takes {action_dim}")


def fits_scenario(directory: Path, scenario: "Scenario") -> str | None:
    """Why the checkpoint cannot drive the scenario (None: it fits), from its config alone."""
    try:
        check_fits(read_config(Path(directory)), Path(directory), scenario)
    except QrobotError as exc:
        return str(exc)
    return None
