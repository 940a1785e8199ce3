"""Runner and CLI on real episodes."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv

from qrobot.cli import main
from qrobot.runner import run, run_episode, summarize, wilson_interval


def test_wilson_interval() -> None:
    lo, hi = wilson_interval(48, 50)
    assert lo == pytest.approx(0.8650, abs=1e-3) and hi == pytest.approx(0.9890, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-3)


class _Exploding:
    name = "exploding"

    def __init__(self) -> None:
        self.calls = 0

    def reset(self, instruction: str) -> None:
        pass

    def act(self, obs: dict) -> np.ndarray:
        self.calls += 1
        if self.calls == 3:
            raise RuntimeError("boom")
        return np.array([0, 0, 0, 0, 1.0], np.float32)


def test_policy_exception_ends_the_episode_not_the_run() -> None:
    env = QRobotEnv("reach", images=False)
    pol = _Exploding()
    bad = run_episode(env, pol, 0, 0)
    assert bad.end_reason == "policy_error" and "boom" in bad.error and bad.steps == 3  # 2 + 1 braking
    good = run_episode(env, pol, 1, 1)  # the same env carries on
    assert good.end_reason in ("timeout", "success") and good.steps > 2
    assert summarize([bad, good])["policy_errors"] == 1
    env.close()


def test_run_is_seeded_and_summarized() -> None:
    a = run("pick_place", "expert", episodes=2, seed=10, progress=False)
    b = run("pick_place", "expert", episodes=2, seed=10, progress=False)
    same = [{k: v for k, v in r.to_dict().items() if k != "wall_time"} for r in a]
    assert same == [{k: v for k, v in r.to_dict().items() if k != "wall_time"} for r in b]
    assert all(isinstance(r.wall_time, float) and 0 < r.wall_time < 600 for r in a + b)  # the one field that differs
    assert [r.seed for r in a] == [10, 11]
    s = summarize(a)
    assert s["episodes"] == 2 and s["success_rate"] == s["successes"] / 2


def test_cli_run_prints_episodes_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "pointnav", "--episodes", "2", "--seed", "3", "--runs-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("ep   0 seed 3") and out[1].startswith("ep   1 seed 4")
    assert out[-1].startswith("pointnav / expert: success") and "95% CI" in out[-1] and "SPL" in out[-1]
    assert len(out) == 3  # results only: progress and where things went are on stderr


def test_cli_list(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "qrobot/PickPlace-v0" in out and "policies, and the scenarios each drives:" in out
    fits = {line.split()[0]: line.split(None, 1)[1] for line in out.split("policies, and")[1].splitlines()[1:7]}
    assert fits["expert"] == "all" and "reach" not in fits["wander"] and "pointnav" in fits["wander"]
    assert fits["qwen-vla"] == "all"  # one shipped checkpoint for every task
    assert "qwen-vla for pointnav:" in out and "qwen-vla for reach:" in out


def test_cli_bench_writes_tables(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(
        [
            "bench",
            "--scenarios",
            "reach,pointnav",
            "--policies",
            "expert,hold",
            "--episodes",
            "2",
            "--out",
            str(tmp_path),
            "--no-record",
            "--runs-dir",
            str(tmp_path / "runs"),
        ]
    )
    assert rc == 0
    rows = list(csv.DictReader((tmp_path / "bench.csv").open()))
    assert [(r["scenario"], r["policy"]) for r in rows] == [
        ("reach", "expert"),
        ("reach", "hold"),
        ("pointnav", "expert"),
        ("pointnav", "hold"),
    ]
    hold = [r for r in rows if r["policy"] == "hold"]
    assert all(float(r["success_rate"]) == 0.0 for r in hold)  # doing nothing never succeeds
    assert "| reach | expert | 2 |" in (tmp_path / "bench.md").read_text()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "nowhere"], "unknown scenario 'nowhere'; valid names:"),
        (["run", "reach", "--policy", "nobody"], "unknown policy 'nobody'; valid names: expert"),
        (["bench", "--scenarios", "reach,nowhere"], "unknown scenario 'nowhere'"),
    ],
)
def test_cli_user_errors_are_one_line(argv: list[str], needle: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "qrobot.cli", *argv], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr
