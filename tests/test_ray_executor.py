"""The bench on Ray (`--executor ray`): the same rows as in-process and a process pool, and a
driver killed half-way resumes without redoing a finished cell. One local Ray per session
(`ray.init(num_cpus=2)`, bound to 127.0.0.1: the `cluster` fixture of conftest.py), shut
down with `ray.shutdown()`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qrobot.cli import main
from tests.test_matrix import _cells, _run

ray = pytest.importorskip("ray", reason="Ray is an opt-in extra: pip install 'qrobot[ray]'")
pytestmark = pytest.mark.xdist_group("ray")  # one local Ray (the session `cluster`) per suite

MATRIX = ("--scenarios", "reach,pick_place", "--policies", "expert,random", "--episodes", "3", "--seed", "7")


def test_ray_gives_the_rows_of_in_process_and_the_pool(tmp_path: Path, cluster: str) -> None:
    one = _cells(_run(tmp_path / "one", *MATRIX, "--workers", "1"))
    two = _cells(_run(tmp_path / "two", *MATRIX, "--workers", "2"))
    on_ray = _cells(_run(tmp_path / "ray", *MATRIX, "--executor", "ray"))  # 2 actors: the cluster's CPUs
    assert len(one) == 12 and one == two == on_ray
    assert ray.is_initialized()  # a cluster this process joined before is left as it was


def test_a_killed_ray_driver_resumes_without_redoing_finished_cells(tmp_path: Path, cluster: str) -> None:
    runs = tmp_path / "runs"
    cmd = [sys.executable, "-m", "qrobot.cli", "bench", "--scenarios", "reach", "--policies", "expert,random"]
    cmd += ["--episodes", "8", "--seed", "3", "--executor", "ray", "--address", cluster, "--workers", "2"]
    cmd += ["--no-record", "--runs-dir", str(runs), "-q"]
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, start_new_session=True)
    deadline = time.monotonic() + 300  # (liveness, not speed: a loaded machine is slow)
    jsonl = None
    while time.monotonic() < deadline and proc.poll() is None:
        found = list(runs.glob("*/episodes.jsonl")) if runs.exists() else []
        if found and len(found[0].read_text().splitlines()) >= 4:
            jsonl = found[0]
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the driver only: Ray ends its actors
    _, err = proc.communicate(timeout=30)
    assert jsonl is not None, f"the Ray bench never finished four episodes: {err.decode()[-2000:]}"
    time.sleep(0.5)
    before = _cells(jsonl.parent)
    assert 4 <= len(before) < 16
    assert main(["bench", "--resume", str(jsonl.parent), "--executor", "ray", "-q"]) == 0
    after = _cells(jsonl.parent)  # (asserts no cell was written twice)
    assert len(after) == 16 and all(after[k] == v for k, v in before.items())
    summary = json.loads((jsonl.parent / "summary.json").read_text())
    assert [r["episodes"] for r in summary["rows"]] == [8, 8] and summary["status"] == "finished"


def test_without_ray_installed_it_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if not installed
    argv = ["bench", "--scenarios", "reach", "--episodes", "1", "--executor", "ray", "--runs-dir", str(tmp_path)]
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "pip install 'qrobot[ray]'" in line and not any(tmp_path.iterdir())
    assert main(["bench", "--scenarios", "reach", "--address", "auto", "--runs-dir", str(tmp_path)]) == 2
