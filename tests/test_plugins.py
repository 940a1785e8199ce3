"""Policies from outside qrobot: a pip-installed package adds one by name through the
`qrobot.policies` entry-point group, and qrobot benchmarks it like its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

PLUGIN = textwrap.dedent('''
    """A policy shipped by another package: the expert, slowed to half speed."""
    import numpy as np
    from qrobot.policies import make_policy


    class HalfSpeed:
        name = "half-speed"
        needs_images = False

        def __init__(self, inner):
            self.inner = inner

        def reset(self, instruction):
            self.inner.reset(instruction)

        def act(self, obs):
            a = np.asarray(self.inner.act(obs), np.float32).copy()
            a[:2] *= 0.5
            return a


    def make(env, seed=0, **kwargs):
        return HalfSpeed(make_policy("expert", env))


    make.needs_images = False
    make.unfit = lambda scenario: None if scenario.robot == "diffbot" else "drives a mobile base only"


    def broken(env, seed=0, **kwargs):
        raise AssertionError("never built: its module cannot be imported")
''')


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plugin installed with `pip install --target` into a temp dir (never the venv)."""
    src = tmp_path_factory.mktemp("plugin-src")
    (src / "halfspeed").mkdir()
    (src / "halfspeed" / "__init__.py").write_text(PLUGIN)
    (src / "pyproject.toml").write_text(
        textwrap.dedent("""
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "qrobot-halfspeed"
        version = "0.1"

        [project.entry-points."qrobot.policies"]
        half-speed = "halfspeed:make"
        broken-plugin = "no_such_module:make"

        [tool.setuptools]
        packages = ["halfspeed"]
        """)
    )
    target = tmp_path_factory.mktemp("site")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    subprocess.run([*cmd, "--target", str(target), str(src)], check=True, timeout=300)
    return target


def _qrobot(site: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(site))
    return subprocess.run(
        [sys.executable, "-m", "qrobot.cli", *argv], env=env, capture_output=True, text=True, timeout=600
    )


def test_an_installed_plugin_is_benchmarked_beside_the_builtins(site: Path, tmp_path: Path) -> None:
    argv = ["bench", "--scenarios", "pointnav,reach", "--policies", "half-speed,expert", "--episodes", "2"]
    done = _qrobot(site, *argv, "--seed", "5", "--workers", "1", "--no-record", "--runs-dir", str(tmp_path), "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    rows = {(r["scenario"], r["policy"]): r for r in summary["rows"]}
    assert rows[("pointnav", "half-speed")]["episodes"] == 2 and rows[("pointnav", "half-speed")]["successes"] == 2
    # half speed: the same paths take longer than the expert's
    assert rows[("pointnav", "half-speed")]["mean_steps"] > rows[("pointnav", "expert")]["mean_steps"]
    assert summary["skipped"] == [{"scenario": "reach", "policy": "half-speed", "reason": "drives a mobile base only"}]
    (run_dir,) = tmp_path.iterdir()
    assert _qrobot(site, "report", str(run_dir)).returncode == 0
    page = (run_dir / "report" / "index.html").read_text()  # the plugin is a row of the report like a builtin
    assert '<td class="l">pointnav</td><td class="l">half-speed</td>' in page
    assert page.count('<td class="l">half-speed</td>') == 1 + 2  # its cell and its two episodes
    listed = _qrobot(site, "list")
    assert "half-speed" in listed.stdout and "broken-plugin" in listed.stdout and listed.returncode == 0


def test_a_plugin_that_cannot_be_loaded_is_one_line(site: Path, tmp_path: Path) -> None:
    done = _qrobot(site, "run", "pointnav", "--policy", "broken-plugin", "--episodes", "1", "--runs-dir", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert "broken-plugin" in line and "cannot be loaded" in line and "no_such_module" in line
