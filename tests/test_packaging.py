"""Install layout: envs/ and policies/ live under qrobot.*, scenarios ship as data."""

from __future__ import annotations

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_namespace_mapping_outside_the_checkout(tmp_path: Path) -> None:
    code = (
        "import importlib.util as u, qrobot.envs, qrobot.policies;"
        "print(u.find_spec('envs'), u.find_spec('policies'), qrobot.envs.__name__)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["None", "None", "qrobot.envs"]


@pytest.mark.slow
def test_wheel_has_only_the_qrobot_package(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    wheel = next(tmp_path.glob("qrobot-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"qrobot"}
    assert "qrobot/envs/core.py" in names and "qrobot/policies/experts.py" in names
    assert sum(n.startswith("qrobot/scenarios/") and n.endswith(".toml") for n in names) >= 8
    assert "qrobot/assets/diffbot.urdf" in names
    # every file of the shipped checkpoints, however deep (a bundle's <robot>/backbone/ too)
    shipped = {str(f.relative_to(ROOT)) for f in (ROOT / "qrobot" / "checkpoints").rglob("*") if f.is_file()}
    assert shipped and shipped <= set(names), sorted(shipped - set(names))[:5]


def _imports(path: Path) -> set[str]:
    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def test_only_the_sim_facade_and_robot_backends_import_pybullet() -> None:
    allowed = {ROOT / "qrobot" / "sim.py"} | set((ROOT / "qrobot" / "robots").glob("*.py"))
    offenders = [
        str(p.relative_to(ROOT))
        for d in ("qrobot", "envs", "policies")
        for p in (ROOT / d).rglob("*.py")
        if p not in allowed and _imports(p) & {"pybullet", "pybullet_data", "pybullet_utils"}
    ]
    assert offenders == []
    # and the supervisor stays pure numpy
    for p in (ROOT / "qrobot" / "safety").glob("*.py"):
        assert not _imports(p) & {"torch", "pybullet"}, p
