"""Rerun recording: content read back with Rerun's reader, crash safety, CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from qrobot.envs.core import QRobotEnv
from qrobot.policies import make_policy

from qrobot.cli import main
from qrobot.errors import QrobotError
from qrobot.record import EpisodeRecorder, RunDir, summarize_rrd
from qrobot.runner import run, run_episode
from qrobot.scenario import load_scenario


def test_episode_recording_reads_back_with_the_right_content(tmp_path: Path) -> None:
    sc = load_scenario("pointnav_people").model_copy(update={"max_steps": 40})
    env = QRobotEnv(sc, images=True)
    path = tmp_path / "ep.rrd"
    rec = EpisodeRecorder(path, sc.name, "ep-test", frame_room=None)  # lossless: every frame counted
    res = run_episode(env, make_policy("expert", env), 0, 3, rec)
    assert res.steps == 40  # a whole episode of driving, not a first-step stop
    s = summarize_rrd(path)
    assert s["complete"] and s["application_id"] == "qrobot-pointnav_people" and s["recording_id"] == "ep-test"
    assert s["steps"] == res.steps  # control steps, as the result counts them
    assert s["cameras"] == {"front": res.steps + 1}  # the reset frame, then one per step
    assert s["dropped_frames"] == 0
    assert _frame_steps(path, "/cameras/front") == list(range(res.steps + 1))  # each frame at its own step
    for entity in (
        "/cameras/front",
        "/world/static/boxes",
        "/world/people/capsules",
        "/world/diffbot/visual_geometries/base_link/visual_0",  # the base's own URDF geometry
        "/world/robot/root",
        "/world/robot/joints/left_wheel_joint",
        "/world/trajectory",
        "/task/instruction",
        "/policy/action",
        "/supervisor/command/linear_speed",
        "/supervisor/command/turn_rate",
        "/supervisor/events",
        "/metrics/speed",
        "/metrics/distance_to_goal",
        "/metrics/min_person_clearance",
        "/result",
    ):
        assert entity in s["entities"], entity
    # every supervisor event of the episode is in the file, once
    assert s["events"] == len(env.supervisor.events) > 0
    assert s["events_by_rule"] == {
        k: v for k, v in env.supervisor.counts().items() if k not in ("interventions", "estops", "protective_stop_time")
    }
    assert f"end_reason: {res.end_reason}" in s["result"] and s["instruction"] == res.instruction
    env.close()


def _frame_steps(path: Path, entity: str) -> list[int]:
    import rerun.chunk as rc

    steps = []
    for chunk in rc.RrdReader(str(path)).stream().to_chunks():
        if chunk.entity_path == entity:
            steps += chunk.to_record_batch().column("step").to_pylist()
    return sorted(steps)


def test_policy_exception_still_leaves_a_complete_recording(tmp_path: Path) -> None:
    class Broken:
        name = "broken"

        def reset(self, instruction: str) -> None:
            self.n = 0

        def act(self, obs: dict) -> np.ndarray:
            self.n += 1
            if self.n > 5:
                raise RuntimeError("nan in the model")
            return np.zeros(5, np.float32)

    env = QRobotEnv("reach", images=True)
    path = tmp_path / "ep.rrd"
    res = run_episode(env, Broken(), 0, 0, EpisodeRecorder(path, "reach", "broken"))
    s = summarize_rrd(path)
    assert res.end_reason == "policy_error" and s["complete"] and "policy_error" in s["result"]
    assert s["events_by_rule"].get("estop") == 1 and s["events_by_level"].get("CRITICAL") == 1
    env.close()


_CHILD = textwrap.dedent("""
    import signal, sys, time
    # a worker that runs the test may ignore SIGINT, and children inherit that: restore
    # Python's handler so that the signal is what this test sends, not a matter of who ran it
    signal.signal(signal.SIGINT, signal.default_int_handler)
    from pathlib import Path
    from qrobot.envs.core import QRobotEnv
    from qrobot.policies import make_policy
    from qrobot.record import EpisodeRecorder
    from qrobot.runner import run_episode
    from qrobot.scenario import load_scenario

    sc = load_scenario("pointnav").model_copy(update={"max_steps": 2000})
    env = QRobotEnv(sc, images=True)
    inner = make_policy("random", env)

    class Slow:
        name = "slow"
        n = 0
        def reset(self, instruction): inner.reset(instruction)
        def act(self, obs):
            self.n += 1
            print(f"step {self.n}", flush=True)  # about to take step n
            time.sleep(0.01)
            a = inner.act(obs)
            a[2] = 0.0
            return a

    run_episode(env, Slow(), 0, 0, EpisodeRecorder(Path(sys.argv[1]), "pointnav", "crash-test"))
""")


def _run_and_signal(path: Path, sig: int, after: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    seen = False
    for line in proc.stdout:
        if line.strip() == f"step {after + 1}":  # `after` steps are done
            seen = True
            break
    assert seen, "the child ended before the signal was due"
    proc.send_signal(sig)
    proc.wait(timeout=60)
    return proc


@pytest.mark.parametrize("after", [45])
def test_sigkill_loses_nothing_already_handed_over(tmp_path: Path, after: int) -> None:
    """The writer process outlives a SIGKILLed control loop: it writes everything that
    reached the pipe and closes the file. Steps are handed over synchronously, so every
    step taken before the kill is in the file."""
    path = tmp_path / "killed.rrd"
    _run_and_signal(path, signal.SIGKILL, after)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # the writer notices its parent is gone within a second
        try:
            s = summarize_rrd(path)
            if s["complete"]:
                break
        except QrobotError:
            pass
        time.sleep(0.2)
    assert s["complete"] and "result" not in s["result"]
    assert s["steps"] >= after  # steps 1..after were handed over before the kill
    assert s["cameras"]["front"] + s["dropped_frames"] >= after + 1  # with the reset frame


def test_sigint_yields_a_complete_file(tmp_path: Path) -> None:
    path = tmp_path / "interrupted.rrd"
    proc = _run_and_signal(path, signal.SIGINT, 25)
    assert proc.returncode != 0
    s = summarize_rrd(path)
    assert s["complete"] and s["steps"] >= 25 and "end_reason: interrupted" in s["result"]


def test_cli_records_by_default_and_inspects(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "reach", "--episodes", "2", "--runs-dir", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    files = sorted((run_dir / "reach").glob("*.rrd"))
    assert [f.name for f in files] == ["ep0-seed0.rrd", "ep1-seed1.rrd"]
    assert (run_dir / "RERUN_VERSION").read_text().strip() == __import__("rerun").__version__
    assert f"recordings: {run_dir}/reach/" in err
    assert main(["inspect", str(files[0])]) == 0
    text = capsys.readouterr().out
    assert "application qrobot-reach" in text and "cameras: scene" in text and "complete file: yes" in text
    assert main(["run", "reach", "--no-record", "--runs-dir", str(tmp_path / "none")]) == 0
    (plain,) = (tmp_path / "none").iterdir()  # results are written, recordings are not
    assert (plain / "episodes.jsonl").is_file() and not list(plain.rglob("*.rrd"))


def test_cli_view_and_inspect_errors_are_one_line(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.rrd"
    bogus.write_bytes(b"not a recording")
    good = tmp_path / "good.rrd"
    env = QRobotEnv("reach", images=True)
    run_episode(env, make_policy("hold", env), 0, 0, EpisodeRecorder(good, "reach", "good"))
    env.close()
    for argv in (
        ["inspect", str(tmp_path / "missing.rrd")],
        ["inspect", str(bogus)],
        ["view", str(bogus)],
        ["view", str(good)],
    ):  # no DISPLAY in this environment: a one-line pointer to inspect
        proc = subprocess.run(
            [sys.executable, "-m", "qrobot.cli", *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr


def test_bench_records_under_one_run(tmp_path: Path) -> None:
    rows = run("reach", "expert", episodes=1, seed=0, progress=False, run_dir=RunDir(tmp_path, "r1"))
    assert Path(rows[0].recording).is_file() and rows[0].recording.startswith(str(tmp_path / "r1" / "reach"))


def test_depth_camera_is_recorded_when_configured(tmp_path: Path) -> None:
    sc = load_scenario("pointnav").model_copy(update={"max_steps": 5})
    sc = sc.model_copy(update={"cameras": [sc.cameras[0].model_copy(update={"depth": True})]})
    env = QRobotEnv(sc, images=True)
    obs, _ = env.reset(seed=0)
    depth = obs["images"]["front_depth"]
    assert depth.dtype == np.float32 and 0.0 < depth.min() and depth.max() <= sc.cameras[0].model_dump().get("far", 6.0)
    path = tmp_path / "depth.rrd"
    run_episode(env, make_policy("hold", env), 0, 0, EpisodeRecorder(path, sc.name, "depth"))
    s = summarize_rrd(path)
    assert s["cameras"]["front"] == s["cameras"]["front_depth"] == s["steps"] + 1  # with the reset frame
    env.close()


def test_under_pressure_frames_are_dropped_and_counted_never_data(tmp_path: Path) -> None:
    """frame_room=0: the writer counts as behind at every step, so every camera frame
    is dropped; the events, commands, clamps and the result all arrive."""
    sc = load_scenario("pointnav_people").model_copy(update={"max_steps": 25})
    env = QRobotEnv(sc, images=True)
    path = tmp_path / "pressure.rrd"
    rec = EpisodeRecorder(path, sc.name, "pressure", frame_room=0)
    res = run_episode(env, make_policy("expert", env), 0, 3, rec)
    s = summarize_rrd(path)
    assert s["complete"] and s["steps"] == res.steps
    assert s.get("cameras", {}).get("front", 0) == 0 and s["dropped_frames"] == rec.dropped_frames == res.steps + 1
    assert s["events"] == len(env.supervisor.events) > 0
    assert "/supervisor/command/linear_speed" in s["entities"] and "/policy/action" in s["entities"]
    assert f"end_reason: {res.end_reason}" in s["result"] and f"dropped_frames: {res.steps + 1}" in s["result"]
    env.close()


def test_series_are_named_and_routine_clamps_are_counts_not_rows(tmp_path: Path) -> None:
    import rerun.chunk as rc

    env = QRobotEnv("pick_place", images=False)
    path = tmp_path / "arm.rrd"
    res = run_episode(env, make_policy("expert", env), 0, 3, EpisodeRecorder(path, "pick_place", "names"))
    names: dict[str, list[str]] = {}
    rows: list[str] = []
    for chunk in rc.RrdReader(str(path)).stream().to_chunks():
        batch = chunk.to_record_batch()
        if "SeriesLines:names" in batch.schema.names:
            names[chunk.entity_path] = batch.column("SeriesLines:names").to_pylist()[0]
        if chunk.entity_path == "/supervisor/events":
            rows += [t[0] for t in batch.column("TextLog:text").to_pylist() if t]
    assert names["/policy/action"] == ["dx", "dy", "dz", "dyaw", "gripper"]
    assert names["/supervisor/command/joint_velocity"] == [f"joint{i}" for i in range(1, 8)]
    infos = sum(1 for e in env.supervisor.events if e.severity == "info")
    assert infos > 10 and not any(r.startswith("[") and "limit" in r for r in rows)  # no clamp rows
    s = summarize_rrd(path)
    assert s["events_by_level"].get("INFO") == infos and s["steps"] == res.steps
    env.close()


def test_inspect_summarises_a_whole_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["run", "reach", "--episodes", "2", "--seed", "5", "--runs-dir", str(tmp_path)]
    assert main(argv) == 0
    run_dir = next(tmp_path.iterdir())
    capsys.readouterr()
    assert main(["inspect", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "| reach | expert | 5-6 | 2/2 = 100% |" in out and "recordings: 2" in out and "qrobot view" in out
    with open(run_dir / "episodes.jsonl", "a") as f:
        f.write('{"scenario": "reach", "cut sh')  # a run killed mid-line
    assert main(["inspect", str(run_dir)]) == 0
    assert "1 unreadable line(s)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path)]) == 2  # not a run directory: one line


def test_a_policy_whose_reset_raises_ends_its_episode_not_the_run(tmp_path: Path) -> None:
    class ResetBroken:
        name = "reset-broken"

        def reset(self, instruction: str) -> None:
            raise ValueError("no such instruction")

        def act(self, obs: dict) -> np.ndarray:
            raise AssertionError("never reached")

    env = QRobotEnv("reach", images=True)
    path = tmp_path / "ep.rrd"
    res = run_episode(env, ResetBroken(), 0, 0, EpisodeRecorder(path, "reach", "reset-broken"))
    s = summarize_rrd(path)
    assert res.end_reason == "policy_error" and "no such instruction" in res.error
    assert s["complete"] and "policy_error" in s["result"]
    env.close()


def test_a_writer_that_dies_costs_the_recording_not_the_episode(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from qrobot.record import writer

    env = QRobotEnv("reach", images=True)
    inner = make_policy("expert", env)

    class KillsWriter:
        name = "kills-writer"
        n = 0

        def reset(self, instruction: str) -> None:
            inner.reset(instruction)

        def act(self, obs: dict) -> np.ndarray:
            self.n += 1
            if self.n == 3:
                assert writer._WRITER is not None
                writer._WRITER.proc.kill()
                writer._WRITER.proc.wait()
            return inner.act(obs)

    rec = EpisodeRecorder(tmp_path / "ep.rrd", "reach", "dies")
    with caplog.at_level("WARNING", logger="qrobot"):
        res = run_episode(env, KillsWriter(), 0, 0, rec)
    assert res.end_reason == "success" and rec.failed  # the episode ran to its end
    assert sum("recording stopped" in r.getMessage() for r in caplog.records) == 1
    ok = EpisodeRecorder(tmp_path / "next.rrd", "reach", "next")  # the next recording gets a new writer
    run_episode(env, make_policy("expert", env), 1, 1, ok)
    assert summarize_rrd(tmp_path / "next.rrd")["complete"]
    env.close()
