"""Nothing a policy can reach through public names changes what the supervisor decides.

Every writable array, tensor, list, dict and set reachable from the env through public
attributes, properties and the results of public query methods is overwritten or
emptied before every step of one env; a second env, untouched, runs the same seed and
actions. The commands the two supervisors issue must be identical: limits, robot
state, people reports, the world model and the scenario the env runs are private or
read-only. Likewise for every public attribute set to another value, one at a time: a
scalar changed, an object swapped for its twin from another world (an env that raises
on its own broken state is allowed: it commands nothing).
(Monkeypatching and private names are out of scope in-process: docs/safety.md.)
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from qrobot.envs.core import QRobotEnv

from qrobot.safety.command import SafeCommand, Stop

# public methods with effects: stepping or resetting the world is allowed, but it changes
# the world itself, so the two envs would differ for a legitimate reason
EFFECTS = {"close", "render", "reset", "step", "estop", "compile"}  # torch.compile would only make the test slow
OURS = ("qrobot", "envs", "policies", "gymnasium", "torch")  # torch: modules and their parameters


def _query_results(obj: Any) -> list[tuple[str, Any]]:
    out = []
    for name in dir(obj):
        if name.startswith("_") or name.startswith("model_") or name in EFFECTS:
            continue
        try:
            value = getattr(obj, name)
        except Exception:
            continue
        if inspect.ismethod(value):
            if not getattr(value.__func__, "__module__", "").startswith(OURS):
                continue  # library methods (pydantic's, gymnasium's): not ours to vouch for
            try:
                params = inspect.signature(value).parameters.values()
            except (TypeError, ValueError):
                continue
            if any(p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params):
                continue  # needs arguments: not a query we can call blindly
            try:
                value = value()
            except Exception:
                continue
        elif inspect.isroutine(value) or inspect.isclass(value):
            continue  # functions and classes; callable objects (torch modules) are walked
        out.append((name, value))
    return out


def _mutables(root: Any, max_depth: int = 6) -> list[tuple[str, Any]]:
    """(path, object) for every mutable container and writable array reachable from root."""
    seen, found, todo = set(), [], [("env", root, 0)]
    while todo:
        path, obj, depth = todo.pop()
        if id(obj) in seen or depth > max_depth or isinstance(obj, (str, bytes, int, float, bool, type, type(None))):
            continue
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            if obj.flags.writeable and obj.dtype.kind in "biuf":
                found.append((path, obj))
            continue
        if isinstance(obj, torch.Tensor):  # model weights, frame histories
            found.append((path, obj))
            continue
        if isinstance(obj, (list, dict, set)):
            found.append((path, obj))
        if isinstance(obj, dict):
            kids = [(f"{path}[{k!r}]", v) for k, v in list(obj.items())]
        elif isinstance(obj, (list, tuple, set, frozenset)):
            kids = [(f"{path}[{i}]", v) for i, v in enumerate(list(obj))]
        elif type(obj).__module__.startswith(OURS):
            kids = [(f"{path}.{n}", v) for n, v in _query_results(obj)]
        else:
            kids = []
        todo += [(p, v, depth + 1) for p, v in kids]
    return found


def _tamper(found: list[tuple[str, Any]]) -> int:
    """Overwrite arrays and tensors with nonsense and empty containers, deepest first;
    count what changed."""
    changed = 0
    for _, obj in reversed(found):
        try:
            if isinstance(obj, torch.Tensor):
                with torch.no_grad():
                    obj.fill_(7)
            elif isinstance(obj, np.ndarray):
                if obj.dtype.kind == "b":
                    obj[...] = ~obj
                else:
                    obj[...] = obj * 0 + 7
            else:
                obj.clear()
            changed += 1
        except Exception:
            continue
    return changed


def _issued(command: Any) -> list[float]:
    cmd = command.brake if isinstance(command, Stop) else command
    return cmd.values.tolist() if isinstance(cmd, SafeCommand) else []


WORLD_MODEL = Path(__file__).resolve().parents[2] / "qrobot" / "checkpoints" / "world_model"


@pytest.mark.parametrize(
    "scenario, foresight",
    [("pointnav_people", None), ("reach", None), ("pick_place", None), ("pointnav_clutter", WORLD_MODEL)],
)
def test_tampering_with_public_state_changes_no_command(scenario: str, foresight: Path | None) -> None:
    """(The world model steers the supervisor too: its weights and frame history count.)"""
    honest, tampered = (QRobotEnv(scenario, images=False, foresight=foresight) for _ in range(2))
    honest.reset(seed=3)
    tampered.reset(seed=3)
    rng = np.random.default_rng(7)
    dim = honest.action_space.shape[0]
    changed, rounds = 0, 40
    for step in range(rounds):
        action = np.sign(rng.uniform(-1, 1, dim))  # corner actions: every limit is pressed
        if dim == 3:
            action[0], action[2] = 1.0, -1.0  # full speed ahead, never "done": meets people
        changed += _tamper(_mutables(tampered))
        honest.step(action)
        tampered.step(action)
        assert _issued(tampered.last_command) == _issued(honest.last_command), (
            f"step {step}: public state changed the supervisor's command"
        )
    assert changed > rounds  # the walk did find and change things every step
    assert honest.supervisor.counts() == tampered.supervisor.counts()
    honest.close()
    tampered.close()


def _attributes(root: Any, max_depth: int = 5) -> dict[str, tuple[Any, str, Any]]:
    """path -> (owner, attribute, value) for every public instance attribute (in the
    object's __dict__: assignable) of our objects reachable from root."""
    seen, found, todo = set(), {}, [("env", root, 0)]
    while todo:
        path, obj, depth = todo.pop()
        if id(obj) in seen or depth > max_depth or isinstance(obj, (str, bytes, int, float, bool, np.ndarray)):
            continue
        seen.add(id(obj))
        if isinstance(obj, (list, tuple, dict, set)):
            items = obj.items() if isinstance(obj, dict) else enumerate(obj)
            todo += [(f"{path}[{k!r}]", v, depth + 1) for k, v in list(items)]
            continue
        if not type(obj).__module__.startswith(("qrobot", "envs", "policies")):
            continue
        for name, value in list(getattr(obj, "__dict__", {}).items()):
            if not name.startswith("_"):
                found[f"{path}.{name}"] = (obj, name, value)
                todo.append((f"{path}.{name}", value, depth + 1))
        for name in dir(type(obj)):  # properties too: assigning one must fail
            if not name.startswith("_") and isinstance(getattr(type(obj), name, None), property):
                try:
                    found.setdefault(f"{path}.{name}", (obj, name, getattr(obj, name)))
                except Exception:
                    continue
        todo += [(f"{path}.{n}", v, depth + 1) for n, v in _query_results(obj)]
    return found


def _seen(env: QRobotEnv) -> dict[str, Any]:
    """What the supervisor reads this step (robot state, people), as plain lists."""
    return {k: np.asarray(v).tolist() for k, v in env.supervisor_state().items()}


def _other(value: Any, decoy: Any) -> Any:
    """Another value for an attribute: a scalar changed, an object swapped for the same
    attribute's object in another world (rebinding the env's wiring)."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value * 100 + 7
    if isinstance(value, str):
        return value + "x"
    return decoy


@pytest.mark.parametrize("scenario", ["pointnav_people", "pick_place"])
def test_setting_public_attributes_changes_no_command(scenario: str) -> None:
    def fresh() -> QRobotEnv:
        env = QRobotEnv(scenario, images=False)
        env.reset(seed=3)
        return env

    decoy_env = QRobotEnv(scenario, images=False)  # another world, with nobody in the way
    decoy_env.reset(seed=11)
    decoys = {p: v for p, (_, _, v) in _attributes(decoy_env).items()}
    probe = fresh()
    paths = sorted(_attributes(probe))
    probe.close()
    assert len(paths) > 50
    rng = np.random.default_rng(7)
    actions = np.sign(rng.uniform(-1, 1, (6, probe.action_space.shape[0])))
    if actions.shape[1] == 3:
        actions[:, 0], actions[:, 2] = 1.0, -1.0  # full speed ahead, never "done"
    honest = fresh()
    expected = []
    for action in actions:
        seen = _seen(honest)
        honest.step(action)
        expected.append((seen, _issued(honest.last_command)))
    honest.close()
    changed = []
    for path in paths:
        tampered = fresh()
        target = _attributes(tampered).get(path)
        for action, want in zip(actions, expected):
            if target is not None:
                owner, name, _ = target
                try:
                    setattr(owner, name, _other(getattr(owner, name), decoys.get(path)))
                except Exception:
                    pass  # read-only
            try:
                seen = _seen(tampered)
                tampered.step(action)
            except Exception:
                break  # the env broke on its own state: it commands nothing more
            if (seen, _issued(tampered.last_command)) != want:
                changed.append(path)
                break
        tampered.close()
    decoy_env.close()
    assert not changed, f"public attributes that change the supervisor's commands: {changed}"
