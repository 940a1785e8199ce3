"""Results as data: every run kind writes episodes.jsonl and summary.json that agree with what
it printed; run.json says how the run ended; progress shows on a non-terminal stderr; exit
status 3 when an episode ended in a policy or env error."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qrobot.policies import CHECKPOINTS

from qrobot import runner
from qrobot.cli import main
from qrobot.record.rundir import read_lines


def _only_run(root: Path) -> Path:
    (run_dir,) = [p for p in root.iterdir() if p.is_dir()]
    return run_dir


def _agree(run_dir: Path, summary: dict[str, Any]) -> list[dict[str, Any]]:
    rows = read_lines(run_dir / "episodes.jsonl")
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk == summary
    assert all(r["schema_version"] == 1 for r in rows) and on_disk["schema_version"] == 1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["ended"] and info["versions"]["torch"]
    assert {"qrobot", "git_commit", "pybullet", "rerun"} <= set(info["versions"])
    return rows


def test_run_json_output_progress_and_files_agree(tmp_path: Path) -> None:
    env = dict(os.environ, QROBOT_PROGRESS_SECONDS="0.2")
    proc = subprocess.run(
        [sys.executable, "-m", "qrobot.cli", "run", "pointnav", "--seed", "3", "--json", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # stdout is the summary alone
    progress = [line for line in proc.stderr.splitlines() if line.startswith("pointnav/expert: episode 1/1, step")]
    assert len(progress) >= 2, proc.stderr  # one episode, stderr not a terminal: lines every 0.2 s
    assert "steps/s" in progress[-1] and "\r" not in proc.stderr
    assert proc.stderr.count("ep   0 seed 3") == 1  # the episode line moved to stderr with --json
    run_dir = _only_run(tmp_path)
    (row,) = _agree(run_dir, summary)
    assert summary["successes"] == int(row["success"]) and summary["episodes"] == 1
    assert summary["mean_steps"] == row["steps"] and summary["seeds"] == [3, 3]
    assert row["seed"] == 3 and row["scenario"] == "pointnav" and row["policy"] == "expert"
    assert Path(row["recording"]).is_file() and row["end_reason"] in ("success", "timeout", "stopped")
    assert set(row["safety"]) >= {"interventions", "estops"} and "spl" in row["metrics"]


def test_bench_rows_match_episodes_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "bench",
                "--scenarios",
                "reach,pick_place",
                "--policies",
                "expert,wander",
                "--episodes",
                "2",
                "--no-record",
                "--json",
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    run_dir = _only_run(tmp_path)
    rows = _agree(run_dir, summary)
    assert [(s["scenario"], s["policy"]) for s in summary["skipped"]] == [("reach", "wander"), ("pick_place", "wander")]
    for pair in summary["rows"]:
        mine = [r for r in rows if (r["scenario"], r["policy"]) == (pair["scenario"], pair["policy"])]
        assert len(mine) == 2 and sum(r["success"] for r in mine) == pair["successes"]
    table = list(csv.DictReader((run_dir / "bench.csv").open()))
    assert [float(t["success_rate"]) for t in table] == [p["success_rate"] for p in summary["rows"]]


def test_eval_writes_results_in_runs_format(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "eval",
                "pointnav",
                "--checkpoint",
                str(CHECKPOINTS / "qwen-vla" / "diffbot"),
                "--episodes",
                "1",
                "--seed",
                "20000",
                "--no-swap",
                "--no-card",  # a CI-sized check: the shipped card keeps its published figures
                "--runs-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "split: ci (seeds 20000-20000), phrasing: seen"
    assert out[1].startswith("ep 20000 seed 20000 ")  # run's per-episode format
    run_dir = _only_run(tmp_path)
    summary = json.loads((run_dir / "summary.json").read_text())
    (row,) = _agree(run_dir, summary)
    assert row["checkpoint"] == str(CHECKPOINTS / "qwen-vla" / "diffbot") and row["policy"] == "qwen-vla"
    assert summary["successes"] == int(row["success"]) and summary["seeds"] == [20000, 20000]


class _Raises:
    name = "raises"

    def __init__(self, exc: BaseException, after: int) -> None:
        self.exc, self.after, self.calls = exc, after, 0

    def reset(self, instruction: str) -> None:
        pass

    def act(self, obs: dict[str, Any]) -> Any:
        self.calls += 1
        if self.calls > self.after:
            raise self.exc
        return np.zeros(5, np.float32)  # the arm holds still


def test_policy_error_exits_3_and_keeps_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(runner, "make_policy", lambda *a, **k: _Raises(ValueError("boom"), 0))
    assert main(["run", "reach", "--episodes", "2", "--no-record", "--runs-dir", str(tmp_path)]) == 3
    captured = capsys.readouterr()
    assert "exit status 3" in captured.err
    run_dir = _only_run(tmp_path)
    rows = read_lines(run_dir / "episodes.jsonl")
    assert [r["end_reason"] for r in rows] == ["policy_error", "policy_error"] and "boom" in rows[0]["error"]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "finished"


def test_interrupt_marks_the_run_and_keeps_finished_episodes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    steps = __import__("qrobot.scenario").scenario.load_scenario("reach").max_steps
    policy = _Raises(KeyboardInterrupt(), steps + 5)  # holding still, episode 0 times out; Ctrl-C in episode 1
    monkeypatch.setattr(runner, "make_policy", lambda *a, **k: policy)
    assert main(["run", "reach", "--episodes", "3", "--no-record", "--runs-dir", str(tmp_path)]) == 130
    run_dir = _only_run(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    rows = read_lines(run_dir / "episodes.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert info["status"] == "interrupted" == summary["status"]
    assert info["episodes_recorded"] == len(rows) == summary["episodes"] == 1
    assert rows[0]["end_reason"] == "timeout"
