"""The seed splits are enforced by the tools: eval names its split, the test split takes
the checkpoint as shipped and is measured once."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import pytest

from qrobot import cards
from qrobot.cli import main
from qrobot.splits import SPLITS, check_split, first_seed, split_of

CHECKPOINTS = Path(__file__).resolve().parents[1] / "qrobot" / "checkpoints"


def test_the_ranges_are_disjoint_and_cover_every_seed() -> None:
    bounds = sorted(r for ranges in SPLITS.values() for r in ranges)
    assert bounds[0][0] == 0 and bounds[-1][1] == 2**31 - 1
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(bounds))  # no gap, no overlap
    assert [split_of(s) for s in (0, 9999, 10000, 19999, 20000, 29999, 30000, 39999, 40000)] == [
        "train", "train", "validation", "validation", "ci", "ci", "validation", "validation", "test",
    ]  # fmt: skip
    assert first_seed("test") == 40000 and cards.split_of(40000) == "test"
    check_split("f", "validation", 30000, 10_000)  # the second validation range, whole
    with pytest.raises(Exception, match="19990-20009 are not all in the validation split"):
        check_split("f", "validation", 19990, 20)


@pytest.fixture()
def nav(tmp_path: Path) -> Path:
    d = tmp_path / "nav"
    shutil.copytree(CHECKPOINTS / "qwen-vla" / "diffbot", d)
    return d


def test_eval_names_its_split_and_the_test_split_runs_once(
    nav: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["eval", "pointnav", "--checkpoint", str(nav), "--episodes", "1", "--runs-dir", str(tmp_path / "runs")]
    for flag in (["--replan", "3"], ["--nav-stop", "0.06,0.15,3"]):  # tuning flags on the test split
        assert main([*argv, "--split", "test", *flag]) == 2
        assert "as shipped" in capsys.readouterr().err
    assert main([*argv, "--split", "test"]) == 0
    out = capsys.readouterr().out
    assert "split: test (seeds 40000-40000)" in out
    summary = json.loads(next((tmp_path / "runs").glob("*/summary.json")).read_text())
    assert summary["split"] == "test" and summary["seeds"] == [40000, 40000]
    _, records = cards.load(nav)
    test = [r for r in records if r.split == "test"]
    assert test and test[0].command.startswith("qrobot eval pointnav --split test")
    assert main([*argv, "--split", "test", "--seed", "40001"]) == 2  # measured once
    assert "already measured on the test split" in capsys.readouterr().err
    assert main([*argv, "--split", "validation", "--seed", "30000", "--no-card"]) == 0  # validation: as often as needed
    assert "split: validation (seeds 30000-30000)" in capsys.readouterr().out
