"""What a person sees: a recording opened in the real Rerun viewer (headless, rendered
with Mesa's lavapipe when there is no GPU), captured to PNG by `qrobot snapshot`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.record import EpisodeRecorder
from qrobot.runner import run_episode
from qrobot.scenario import load_scenario


@pytest.fixture(scope="module")
def arm_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sc = load_scenario("pick_place").model_copy(update={"max_steps": 14})
    env = QRobotEnv(sc, images=True)
    path = tmp_path_factory.mktemp("snap") / "arm.rrd"
    run_episode(env, make_policy("expert", env), 0, 3, EpisodeRecorder(path, sc.name, "snap", frame_room=None))
    env.close()
    return path


def _scene(png: Path) -> np.ndarray:
    """The 3D view: the top-left of the default layout."""
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    h, w, _ = img.shape
    return img[int(0.06 * h) : int(0.58 * h), : int(0.58 * w)]


def _viewers(tag: Path) -> int:
    """Viewer processes this test started: their XDG_RUNTIME_DIR lies under `tag`. Counting
    every headless rerun on the machine raced with the other xdist worker's snapshots."""
    count = 0
    for env in Path("/proc").glob("[0-9]*/environ"):
        try:
            count += f"XDG_RUNTIME_DIR={tag}".encode() in env.read_bytes()
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return count


def test_snapshot_renders_the_layout_and_the_arm_moves_in_it(
    arm_recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the viewers' runtime dirs, and so their tag
    early, late = tmp_path / "early.png", tmp_path / "late.png"
    assert main(["snapshot", str(arm_recording), str(early), "--step", "1"]) == 0
    assert "view " not in capsys.readouterr().out  # the viewer reported no view it could not draw
    assert main(["snapshot", str(arm_recording), str(late), "--step", "14"]) == 0
    a, b = _scene(early), _scene(late)
    assert Image.open(late).size == (1920, 1080)
    assert a.std() > 20  # a rendered scene, not an empty panel
    # the meshed arm reached for the cube between steps 1 and 14: its pixels moved
    changed = (np.abs(a - b).sum(axis=2) > 60).mean()
    assert changed > 0.005, changed
    assert not list(tmp_path.glob("qrobot-xdg-*"))  # both runtime dirs were removed
    assert _viewers(tmp_path) == 0  # each headless viewer (and the binary its wrapper started) is gone


def test_snapshot_errors_are_one_line(arm_recording: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["snapshot", str(arm_recording), str(tmp_path / "x.jpg")]) == 2
    assert main(["snapshot", str(tmp_path / "missing.rrd"), str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "PNG" in err[0] and "missing.rrd" in err[1]


def test_a_protective_stop_shows_as_a_red_error_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Event rows keep their own level in the viewer (rows sent together as columns once
    all showed as green INFO): the expert's protective stop near a person is red."""
    sc = load_scenario("pointnav_people").model_copy(update={"max_steps": 12})
    env = QRobotEnv(sc, images=False)
    path = tmp_path / "people.rrd"
    run_episode(env, make_policy("expert", env), 0, 3, EpisodeRecorder(path, sc.name, "levels"))
    assert any(e.severity == "error" for e in env.supervisor.events)  # seed 3: a person close at step 8
    env.close()
    png = tmp_path / "people.png"
    assert main(["snapshot", str(path), str(png)]) == 0
    img = np.asarray(Image.open(png).convert("RGB"), dtype=np.int16)
    h, w, _ = img.shape
    events = img[int(0.76 * h) :, : int(0.6 * w)]  # the safety-events panel, bottom left
    red = (events[..., 0] > 150) & (events[..., 1] < 90) & (events[..., 2] < 90)
    green = (events[..., 1] > 150) & (events[..., 0] < 120) & (events[..., 2] < 150)
    assert red.sum() > 20 and green.sum() > 20, (red.sum(), green.sum())  # ERROR beside the INFO rows
