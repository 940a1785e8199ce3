"""The benchmark matrix: cells run by any executor give the same results, a killed run
resumes without redoing finished cells, checkpoints of one's own are policies."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from qrobot.cli import main

CHECKPOINTS = Path(__file__).resolve().parents[1] / "qrobot" / "checkpoints"
KEYS = ("success", "steps", "end_reason", "metrics", "safety", "instruction")


def _cells(run_dir: Path) -> dict[tuple[str, str, int], dict]:
    out = {}
    for line in (run_dir / "episodes.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (row["scenario"], row["policy"], row["seed"])
        assert key not in out, f"cell {key} ran twice"
        out[key] = {k: row[k] for k in KEYS}
    return out


def _run(tmp: Path, *argv: str) -> Path:
    before = set(tmp.iterdir()) if tmp.exists() else set()
    assert main(["bench", *argv, "--no-record", "--runs-dir", str(tmp), "-q"]) == 0
    (new,) = set(tmp.iterdir()) - before
    return new


def test_in_process_and_pool_give_identical_cells(tmp_path: Path) -> None:
    argv = ("--scenarios", "reach,pointnav", "--policies", "expert,random", "--episodes", "3", "--seed", "7")
    one = _cells(_run(tmp_path / "one", *argv, "--workers", "1"))
    two = _cells(_run(tmp_path / "two", *argv, "--workers", "2"))
    assert len(one) == 12 and one == two  # random is re-seeded per episode: order does not matter


def test_worker_pool_progress_counts_each_episode_as_it_ends(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With worker processes the progress line follows episodes.jsonl: every episode is
    counted once, in order, named, with the control steps of all workers in the rate."""
    monkeypatch.setenv("QROBOT_PROGRESS_SECONDS", "0")  # a line for every event
    argv = ["bench", "--scenarios", "pointnav", "--policies", "expert", "--episodes", "10", "--seed", "11"]
    assert main([*argv, "--workers", "2", "--no-record", "--runs-dir", str(tmp_path)]) == 0
    lines = [line for line in capsys.readouterr().err.splitlines() if "episodes done" in line]
    counts = [int(line.split(": ", 1)[1].split("/", 1)[0]) for line in lines]
    assert counts == list(range(1, 11)), lines
    assert all("2 workers; last: pointnav / expert seed " in line for line in lines)
    assert float(lines[-1].split(" steps/s")[0].rsplit(" ", 1)[1]) > 0
    seeds = {int(line.split(" seed ")[1].split()[0]) for line in lines}
    assert seeds == set(range(11, 21))


def test_a_killed_bench_resumes_without_redoing_finished_cells(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "qrobot.cli", "bench", "--scenarios", "pointnav", "--policies", "expert,random"]
    cmd += ["--episodes", "15", "--seed", "3", "--workers", "1", "--no-record", "--runs-dir", str(runs), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    jsonl = None
    while time.monotonic() < deadline:
        found = list(runs.glob("*/episodes.jsonl")) if runs.exists() else []
        if found and len(found[0].read_text().splitlines()) >= 4:
            jsonl = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert jsonl is not None, "the bench never finished four episodes"
    before = _cells(jsonl.parent)
    assert 4 <= len(before) < 30
    with open(jsonl, "a") as f:
        f.write('{"scenario": "pointnav", "policy": "exp')  # the line a kill cut short
    assert main(["bench", "--resume", str(jsonl.parent), "--workers", "2", "-q"]) == 0
    after = _cells(jsonl.parent)
    assert len(after) == 30 and all(after[k] == v for k, v in before.items())  # kept, not redone
    summary = json.loads((jsonl.parent / "summary.json").read_text())
    assert [r["episodes"] for r in summary["rows"]] == [15, 15] and summary["status"] == "finished"
    table = pq.read_table(jsonl.parent / "results.parquet")
    assert table.num_rows == 30 and "metric.spl" in table.column_names and "safety.interventions" in table.column_names
    assert main(["bench", "--resume", str(jsonl.parent), "--episodes", "20"]) == 2  # contradicts the run


def test_a_checkpoint_of_ones_own_is_a_policy(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = f"qwen-vla={CHECKPOINTS / 'qwen-vla' / 'diffbot'}"
    run = _run(tmp_path, "--scenarios", "pointnav,reach", "--policies", spec, "--episodes", "1", "--seed", "20000")
    (cell,) = _cells(run)
    assert cell == ("pointnav", spec, 20000)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped"][0]["scenario"] == "reach" and summary["skipped"][0]["policy"] == spec
    capsys.readouterr()
    for bad in ("expert=somewhere", f"qwen-vla={tmp_path}", "qwen-vla="):
        assert main(["bench", "--policies", bad, "--runs-dir", str(tmp_path / "x")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("qrobot: error: bench --policies") for e in errors)


def test_a_scenario_given_as_a_file_is_summarised_and_resumed_by_its_name(tmp_path: Path) -> None:
    """Episode rows carry the scenario's name; a bench given a .toml path counts them under
    that name in summary.json, and --resume finds them (nothing runs twice)."""
    mine = tmp_path / "my_reach.toml"
    mine.write_text((Path(__file__).resolve().parents[1] / "scenarios" / "reach.toml").read_text())
    runs = tmp_path / "runs"
    run = _run(runs, "--scenarios", str(mine), "--policies", "expert", "--episodes", "2", "--seed", "5")
    summary = json.loads((run / "summary.json").read_text())
    assert [(r["scenario"], r["episodes"]) for r in summary["rows"]] == [("my_reach", 2)]
    before = _cells(run)
    assert main(["bench", "--resume", str(run), "-q"]) == 0
    assert _cells(run) == before and set(before) == {("my_reach", "expert", 5), ("my_reach", "expert", 6)}
    (tmp_path / "other").mkdir()
    other = tmp_path / "other" / "my_reach.toml"
    other.write_text(mine.read_text())
    twice = ["bench", "--scenarios", f"{mine},{other}", "--policies", "expert", "-q"]
    assert main([*twice, "--runs-dir", str(runs)]) == 2  # two files, one name: refused before anything runs
