"""Scenario files: every packaged one loads; malformed ones give one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from qrobot.errors import ScenarioError
from qrobot.scenario import load_scenario, scenario_dir, scenario_names

BASE = (scenario_dir() / "pick_place.toml").read_text()


def test_packaged_scenarios_cover_every_task_and_people() -> None:
    names = scenario_names()
    assert len(names) >= 8
    scs = [load_scenario(n) for n in names]
    assert {s.task.kind for s in scs} == {"reach", "pick_place", "stack", "pointnav", "objectnav"}
    assert {s.task.kind for s in scs if s.people} == {"pointnav", "objectnav"}
    assert all(s.name == n for s, n in zip(scs, names))


def test_extends_merges_tables() -> None:
    clutter = load_scenario("pick_place_clutter")
    assert clutter.task.objects.count == 5 and clutter.robot == "panda"
    assert [c.name for c in clutter.cameras] == ["scene", "wrist"]  # inherited
    assert len(load_scenario("pointnav_people").people) == 3


# (file text, substrings the one-line error must contain)
MALFORMED = {
    "unknown_top_key": ("foo = 1\n" + BASE, ["foo: unknown key", "accepted keys:", "max_steps"]),
    "unknown_nested_key": (
        BASE.replace("count = 3 }", "count = 3, shiny = true }"),
        ["task.objects.shiny: unknown key", "colors, count"],
    ),
    "wrong_type": (BASE.replace("max_steps = 150", 'max_steps = "150"'), ["max_steps:", "integer"]),
    "out_of_range": (
        BASE.replace("max_steps = 150", "max_steps = 0"),
        ["max_steps:", "greater than or equal to 5", "(got 0)"],
    ),
    "bad_robot": (BASE.replace('robot = "panda"', 'robot = "ur5"'), ["robot:", "'panda'", "'diffbot'"]),
    "bad_task_kind": (
        BASE.replace('kind = "pick_place"', 'kind = "juggle"'),
        ["task:", "'reach'", "'pick_place'", "'objectnav'"],
    ),
    "bad_color": (BASE.replace('"purple"]', '"mauve"]'), ["task.objects.colors[4]:", "'red'"]),
    "too_few_colors": (BASE.replace("count = 3 }", "count = 6 }"), ["task.objects:", "distinct colors"]),
    "bad_template": (
        BASE.replace("put the {object} in the {receptacle}", "put the {thing} away"),
        ["task:", "{object}, {receptacle}"],
    ),
    "region_order": (
        BASE.replace("low = [0.35, -0.25], high = [0.68, 0.25]", "low = [0.7, -0.25], high = [0.3, 0.25]"),
        ["task.region:", "low <= high"],
    ),
    "missing_key": (BASE.replace('robot = "panda"\n', ""), ["robot:", "Field required"]),
    "robot_task_mismatch": (
        BASE.replace('robot = "panda"', 'robot = "diffbot"'),
        ["task 'pick_place' needs robot = 'panda'"],
    ),
    "bad_toml": (BASE + "\n[[cameras]\n", ["invalid TOML"]),
    "bad_extends": ('extends = "nope"\n', ["extends:", "unknown scenario 'nope'", "pick_place"]),
    "control_rate": (
        BASE.replace("max_steps = 150", "max_steps = 150\ncontrol_hz = 7.0"),
        ["control_hz must divide 240"],
    ),
    "camera_mount": (BASE.replace('mount = "wrist"', 'mount = "base"'), ["cameras", "mount must be one of"]),
    "vector_length": (BASE.replace("eye = [1.05, 0.0, 0.75]", "eye = [1.05, 0.0]"), ["cameras[0].eye:", "at least 3"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_file_gives_one_line_error(tmp_path: Path, case: str) -> None:
    text, needles = MALFORMED[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(str(path))
    for needle in needles:
        assert needle in msg, msg


def test_missing_file_and_unknown_name() -> None:
    with pytest.raises(ScenarioError, match=r"nope\.toml: scenario file not found"):
        load_scenario("/tmp/definitely/nope.toml")
    with pytest.raises(ScenarioError, match=r"valid names: .*pick_place"):
        load_scenario("nope")


def test_cli_prints_one_line_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(BASE.replace("max_steps = 150", "max_steps = -3"))
    proc = subprocess.run(
        [sys.executable, "-m", "qrobot.cli", "run", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert lines[0].startswith("qrobot: error: ") and "max_steps" in lines[0]


def test_every_number_has_a_documented_two_sided_range() -> None:
    from qrobot.scenario_keys import leaves, markdown

    numbers = [(key, accepted) for key, kind, accepted, _ in leaves() if "number" in kind or "integer" in kind]
    assert len(numbers) > 40
    unbounded = [key for key, accepted in numbers if not (accepted.startswith(("[", "(")) and ", " in accepted)]
    assert unbounded == []
    doc = (Path(__file__).resolve().parents[1] / "docs" / "scenario_keys.md").read_text()
    assert doc == markdown(), "docs/scenario_keys.md is stale: python -m qrobot.scenario_keys > docs/scenario_keys.md"
