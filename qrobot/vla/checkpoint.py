"""Reading a saved VLA's files strictly, and checking that it fits a scenario.

A missing, truncated or malformed file, or a checkpoint made for another task or other
observation sizes, is one `QrobotError` naming the file and field, raised before any
weights are loaded where possible (the config and norm files are read first).
"""

from __future__ import annotations

import dataclasses
import json
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


def read_config(directory: Path) -> VLAConfig:
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
        kinds = {"str": str, "int": int, "bool": bool, "list[str]": list, "list[float]": list, "dict[str, Any]": dict}
        kind = kinds[str(fields[name].type)]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, kind):
            raise QrobotError(f"{path}: field {name!r}: expected {fields[name].type} (got {value!r})")
        if kind is int and isinstance(value, int) and not (0 if name == "grounding_dim" else 1) <= value <= 4096:
            raise QrobotError(f"{path}: field {name!r}: {value} is outside {0 if name == 'grounding_dim' else 1}..4096")
    if "cameras" in raw and not (raw["cameras"] and all(isinstance(c, str) for c in raw["cameras"])):
        raise QrobotError(f"{path}: field 'cameras': a non-empty list of camera names")
    if "nav_stop" in raw and not nav_stop_ok(raw["nav_stop"]):
        raise QrobotError(
            f"{path}: field 'nav_stop': [XY, TH, K] with 0 < XY <= 1 m, 0 < TH <= 3.15 rad, K 1..50 steps"
        )
    try:
        return VLAConfig(**raw)
    except ValueError as exc:
        raise QrobotError(f"{path}: {exc}") from None


def nav_stop_ok(value: Any) -> bool:
    """[XY, TH, K]: 0 < XY <= 1 m, 0 < TH <= 3.15 rad, K a whole number of steps 1..50."""
    if not isinstance(value, list | tuple) or len(value) != 3:
        return False
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
        return False
    xy, th, k = value
    return 0 < xy <= 1 and 0 < th <= 3.15 and 1 <= k <= 50 and float(k).is_integer()  # (range first: no overflow)


F32_MAX = 3.0e38  # larger numbers become infinities in float32


def load_norm(path: Path, config: VLAConfig | None = None) -> dict[str, Normalizer]:
    """norm_stats.json: {key: {q01: [...], q99: [...]}}: finite float32 numbers, q01 <= q99,
    and (given the config) the sizes the model reads and writes."""
    from qrobot.vla.model import Normalizer

    raw = _json(path)
    if not isinstance(raw, dict):  # empty: an untrained model (tests, fresh checkpoints)
        raise QrobotError(f"{path}: must be a JSON object of {{key: {{q01, q99}}}}")
    sizes = (
        {}
        if config is None
        else {
            "state": config.state_dim,
            "actions": config.action_dim,
            "waypoints": 3,
            "grounding": config.grounding_dim,
        }
    )
    out = {}
    for key, v in raw.items():
        ok = (
            isinstance(v, dict)
            and all(
                isinstance(v.get(q), list)
                and v[q]
                and all(isinstance(x, (int, float)) and not isinstance(x, bool) and abs(x) < F32_MAX for x in v[q])
                for q in ("q01", "q99")
            )
            and len(v["q01"]) == len(v["q99"])
        )
        if not ok:
            raise QrobotError(f"{path}: field {key!r}: needs q01 and q99, equal-length lists of finite numbers")
        if any(lo > hi for lo, hi in zip(v["q01"], v["q99"])):
            raise QrobotError(f"{path}: field {key!r}: q01 must not exceed q99")
        if key in sizes and len(v["q01"]) != sizes[key]:
            raise QrobotError(f"{path}: field {key!r}: {len(v['q01'])} values; vla_config.json says {sizes[key]}")
        out[key] = Normalizer(np.array(v["q01"]), np.array(v["q99"]))
    return out


def check_policy_norm(directory: Path) -> None:
    """What a policy needs beyond a loadable model: the state's normalisation and the
    actions' (arm) or the waypoints' (base)."""
    path = Path(directory) / NORM_FILE
    norm = load_norm(path, read_config(Path(directory)))
    if "state" not in norm or not ({"actions", "waypoints"} & set(norm)):
        raise QrobotError(
            f"{path}: a policy needs 'state' and 'actions' (arm) or 'waypoints' (base) (has {sorted(norm)})"
        )


def load_backbone(directory: Path, config: VLAConfig) -> Any:
    """The saved backbone, complete: its model type must be the config's family, and no
    weight may be missing, unexpected or of another shape (transformers would fill a
    missing one with random values and say so in a table). A LoRA checkpoint (finetune.save)
    has backbone_adapter/ instead: the base the config names is loaded the same way, then the
    adapter is applied and merged (finetune.apply_adapter)."""
    import logging as _logging

    import torch
    import transformers

    from qrobot.vla.backbones import FAMILIES, TINY

    adapter = Path(directory) / "backbone_adapter"
    family = FAMILIES[config.family]
    want = getattr(family.model_cls.config_class, "model_type", None)
    local = True
    if adapter.is_dir():
        if config.backbone in TINY:
            raise QrobotError(f"{adapter}: an adapter needs a pretrained base; vla_config.json names {config.backbone}")
        d = Path(config.backbone)  # a local checkpoint directory or a hub id
        local = (d / "config.json").is_file()
        raw = _json(d / "config.json") if local else {"model_type": want}  # a hub id: checked once loaded
    else:
        d = Path(directory) / "backbone"
        raw = _json(d / "config.json")
    if not isinstance(raw, dict) or (want and raw.get("model_type") != want):
        raise QrobotError(
            f"{d / 'config.json'}: model_type {raw.get('model_type') if isinstance(raw, dict) else raw!r}; "
            f"vla_config.json family {config.family!r} needs {want!r}"
        )
    level = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # its load reports are replaced by one line here
    _logging.getLogger("transformers").setLevel(_logging.ERROR)
    try:
        # (model, loading info): transformers annotates from_pretrained as returning the model alone
        source: str | Path = d if local else config.backbone
        loaded: Any = family.model_cls.from_pretrained(source, dtype=torch.float32, output_loading_info=True)
        model, info = loaded
    except QrobotError:
        raise
    except Exception as exc:  # OSError, ValueError, RuntimeError, SafetensorError ...
        raise QrobotError(f"{d}: cannot load the backbone ({str(exc).splitlines()[0][:200]})") from None
    finally:
        transformers.logging.set_verbosity(level)
    bad = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if bad:
        what = "; ".join(f"{k.replace('_', ' ')}: {sorted(map(str, v))[:3]}" for k, v in bad.items())
        raise QrobotError(f"{d}: weights do not match its config.json ({what})")
    if adapter.is_dir():
        from qrobot.vla.finetune import apply_adapter

        if want and model.config.model_type != want:
            raise QrobotError(
                f"{config.backbone}: model_type {model.config.model_type!r}; {config.family} needs {want!r}"
            )
        model = apply_adapter(model, adapter)
    return model


def check_finite(model: Any, directory: Path) -> None:
    """No weight of the loaded model is NaN or infinite."""
    import torch

    for name, param in model.named_parameters():
        if not bool(torch.isfinite(param).all()):
            raise QrobotError(f"{directory}: weight {name} holds NaN or infinite values")


def load_heads(model: QwenVLA, path: Path) -> None:
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
            head.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as exc:
            raise QrobotError(
                f"{path}: {prefix[:-1]} head does not match vla_config.json ({str(exc).splitlines()[0][:160]})"
            ) from None


def checkpoint_tasks(config: VLAConfig) -> set[str]:
    """The task kinds a checkpoint was trained for (empty: unknown, only sizes are checked)."""
    from qrobot.scenario import load_scenario, scenario_names

    if config.tasks:
        return set(config.tasks)
    if config.scenario in scenario_names():
        return {load_scenario(config.scenario).task.kind}
    return set()


def scenario_dims(scenario: Scenario) -> tuple[int, int, int]:
    """(proprio, goal, action) sizes a scenario's observations and actions have."""
    from qrobot.envs.core import TASKS
    from qrobot.robots.diffbot import DiffDriveBase
    from qrobot.robots.panda import PandaArm

    robots: dict[str, type[PandaArm] | type[DiffDriveBase]] = {"panda": PandaArm, "diffbot": DiffDriveBase}
    robot = robots[scenario.robot]
    return robot.proprio_dim, TASKS[scenario.task.kind].goal_dim, robot.action_dim


def check_fits(config: VLAConfig, directory: Path, scenario: Scenario) -> None:
    """Refuse a checkpoint made for another task, other cameras or other sizes."""
    where = Path(directory) / CONFIG_FILE
    proprio_dim, goal_dim, action_dim = scenario_dims(scenario)
    tasks = checkpoint_tasks(config)
    if tasks and scenario.task.kind not in tasks:
        raise QrobotError(
            f"{where}: a checkpoint for task {'/'.join(sorted(tasks))} (trained on "
            f"{config.scenario!r}); scenario {scenario.name!r} is task {scenario.task.kind!r}"
        )
    cams = {c.name: c for c in scenario.cameras}
    missing = [c for c in config.cameras if c not in cams]
    if missing:
        raise QrobotError(
            f"{where}: field 'cameras': {missing} not in scenario {scenario.name!r} (it has {sorted(cams)})"
        )
    if config.robot and config.robot != scenario.robot:
        raise QrobotError(
            f"{where}: field 'robot': {config.robot!r}; scenario {scenario.name!r} has {scenario.robot!r}"
        )
    if config.robot and proprio_dim + goal_dim <= config.state_dim:
        pass  # a model of several tasks: the goal is zero-padded to the largest any of them has
    elif config.state_dim != proprio_dim + goal_dim:
        raise QrobotError(
            f"{where}: field 'state_dim': {config.state_dim}; scenario {scenario.name!r} "
            f"observes {proprio_dim + goal_dim} (proprio {proprio_dim} + goal {goal_dim})"
        )
    if config.action_dim != action_dim:
        raise QrobotError(
            f"{where}: field 'action_dim': {config.action_dim}; robot {scenario.robot!r} takes {action_dim}"
        )


def fits_scenario(directory: Path, scenario: Scenario) -> str | None:
    """Why the checkpoint cannot drive the scenario (None: it fits), from its config alone."""
    from qrobot.vla.multi import embodiment_dir

    try:
        own = embodiment_dir(Path(directory), scenario.robot)
        check_fits(read_config(own), own, scenario)
    except QrobotError as exc:
        return str(exc)
    return None
