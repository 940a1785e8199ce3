"""The policy side through the bridge, as a user runs it: `qrobot robot-sim --observations`,
`qrobot agent --require-approval` and `qrobot operator --enable --approve` as separate
processes, and a `RemoteRobot` here that sees only what the robot process streams. The
shipped Qwen VLA drives the base toward its goal from those frames, once the operator
approved its task, at the approved speed share; a new episode comes only at rest; an
operator's e-stop ends the episode and the robot comes to rest. The agent's session
record reads back, and replays on a fresh robot process along the same path."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from qrobot.policies import make_policy

from qrobot.bridge import keys as certs
from qrobot.bridge.demo import stop_all
from qrobot.bridge.remote import RemoteRobot, run_remote_episode
from qrobot.scenario import load_scenario

from .test_processes import QROBOT, _start
from .test_robot_sim import _periods
from .test_transport import _free_port


def test_the_vla_drives_a_robot_process_through_the_agent(tmp_path: Path) -> None:
    certs.init(tmp_path / "keys")
    log, token = tmp_path / "robot.jsonl", str(tmp_path / "robot.token")
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []
    try:
        robot, line = _start(
            ["robot-sim", "pointnav", "--observations", "--log", str(log), "--token-file", token],
            "listening 127.0.0.1:",
        )
        procs.append(robot)
        agent, _ = _start(
            [
                "agent",
                "--robot",
                line.split()[-1],
                "--robot-token",
                token,
                "--keys",
                str(tmp_path / "keys"),
                "--listen",
                endpoint,
                "--name",
                "r1",
                "--latch",
                str(tmp_path / "estop.json"),
                "--audit",
                str(tmp_path / "audit.jsonl"),
                "--require-approval",
            ],
            "agent for diffbot",
        )
        procs.append(agent)
        remote = RemoteRobot.connect(endpoint, tmp_path / "keys", "r1")
        try:
            policy = make_policy("qwen-vla", remote, seed=0)  # the shipped checkpoint (its base model)
            operator, _ = _start(
                [
                    "operator",
                    "--connect",
                    endpoint,
                    "--keys",
                    str(tmp_path / "keys"),
                    "--name",
                    "r1",
                    "--enable",
                    "--approve",
                ],
                "qrobot/r1:",
            )
            procs.append(operator)
            assert remote.wait_enabled(5.0)

            obs, info = remote.reset(10000)
            cams = {c.name: (c.height, c.width, 3) for c in load_scenario("pointnav").cameras}
            assert {k: v.shape for k, v in obs["images"].items() if k in cams} == cams
            assert obs["instruction"] and info["seed"] == 10000 and info["step"] <= 5
            assert obs["images"][next(iter(cams))].std() > 5.0  # a rendered scene, not a blank frame
            start = info["metrics"]["distance_to_goal"]

            # the agent requires approval: the episode's task is proposed, the operator approves it at half speed
            result = run_remote_episode(remote, policy, 0, 10000, max_steps=50, speed_scale=0.5)
            assert result.end_reason == "timeout" and result.error == ""  # (cut at 50 steps, still on its way)
            assert {"interventions", "protective_stop_time"} <= set(result.safety)  # the agent's supervisor's counts
            assert start - result.metrics["distance_to_goal"] >= 0.6  # 5 s at up to 0.25 m/s, toward the goal
            assert max(p["speed"] for p in _periods(log)) <= 0.5 * 0.5 + 0.01  # the approved speed share

            # a new episode only once the robot has braked to rest; then an operator's e-stop ends it
            seen = remote._seen
            obs, info = remote.reset(10001)
            assert info["seed"] == 10001 and remote._seen > seen
            moving = [p for p in _periods(log) if p["speed"] > 1e-3]
            stopped = subprocess.run(
                QROBOT
                + ["operator", "--connect", endpoint, "--keys", str(tmp_path / "keys"), "--name", "r1", "--estop"],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert stopped.returncode == 0 and "ESTOPPED" in stopped.stdout
            estopped = time.time()
            result = run_remote_episode_after_reset(remote, policy)
            assert result == "estop"
            time.sleep(1.0)
            assert max(p["speed"] for p in _periods(log) if p["wall"] > estopped + 0.6) < 1e-3
            assert moving  # (it did drive before)
            with pytest.raises(ConnectionError, match="refused a new episode"):
                remote.reset(10002, timeout=0.3)  # e-stopped: no new world until a console reset
        finally:
            remote.close()
        stop_all(procs)
        _replay_the_session(tmp_path, log)
    finally:
        stop_all(procs)


def _replay_the_session(tmp_path: Path, log: Path) -> None:
    """The agent's session record: the Rerun recording reads back with its events and
    actions, and `qrobot agent-replay` drives a fresh robot process along the same path."""
    from qrobot.bridge.replay import read_session
    from qrobot.record.readback import _chunks

    entities = {c.entity_path for c in _chunks(tmp_path / "audit.rrd")[0]}
    assert {"/agent/events", "/agent/action/v", "/agent/ages/operator", "/robot/speed"} <= entities
    records = read_session(tmp_path / "audit.jsonl")
    reset = [r for r in records if r["kind"] == "reset" and r["seed"] == 10000][-1]  # the driven episode
    episode = 1 + max(r["episode"] for r in records if r["kind"] == "plan" and r["t"] < reset["t"])
    driving = [r for r in records if r["kind"] == "plan" and r["episode"] == episode and any(r["action"])]
    assert len(driving) >= 30
    for attempt in range(3):  # a replay that was itself late (a loaded machine) says so and is run again
        replay_log, token = tmp_path / f"replay{attempt}.jsonl", str(tmp_path / f"replay{attempt}.token")
        robot, line = _start(
            ["robot-sim", "pointnav", "--log", str(replay_log), "--token-file", token, "--window", "0.05"],
            "listening 127.0.0.1:",
        )
        try:
            out = subprocess.run(
                QROBOT
                + ["agent-replay", str(tmp_path / "audit.jsonl"), "--robot", line.split()[-1], "--robot-token", token],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert out.returncode == 0 and out.stdout.startswith("replayed"), out.stderr
        finally:
            stop_all([robot])
        if "came after their period" not in out.stdout:
            break
    assert "came after their period" not in out.stdout, out.stdout

    def planned(path: Path) -> list[dict]:
        return [p for p in _periods(path) if p["episode"] == episode and p["how"] == "plan"]

    original, replayed = planned(log), planned(replay_log)
    assert len(original) == len(replayed) > len(driving)  # the drive, then the hold until the next episode
    for k in (len(driving) // 2, len(driving) - 1, -1):  # mid-drive, its end, at rest
        assert np.linalg.norm(np.subtract(original[k]["pos"], replayed[k]["pos"])[:2]) < 0.02, k


def run_remote_episode_after_reset(remote: RemoteRobot, policy: object) -> str:
    """Step the current episode until the agent stops executing; its end reason."""
    obs = remote._as_obs(remote._next(-1))[0]
    for _ in range(50):
        obs, _, _term, _trunc, info = remote.step(policy.act(obs))  # type: ignore[attr-defined]
        if info["agent_state"] == "ESTOPPED":
            return "estop"
    return info["agent_state"]


@pytest.mark.parametrize(
    "argv,needle",
    [
        (
            ["run", "pointnav", "--policy", "hold", "--robot", "http://127.0.0.1:7447"],
            "run --robot: 'http://127.0.0.1:7447': only tls/",
        ),
        (
            ["run", "pointnav", "--policy", "hold", "--robot", "tls/127.0.0.1:7447", "--keys", "/nonexistent"],
            "run --keys: /nonexistent/ca.pem",
        ),
        (["run", "pointnav", "--robot", "tls/127.0.0.1:7447", "--policy", "expert"], "privileged state"),
        (["run", "pointnav", "--policy", "hold", "--robot", "tls/127.0.0.1:7447", "--gui"], "--gui does not apply"),
        (["run", "pointnav", "--robot-name", "r1"], "--robot-name applies with --robot only"),
        (["operator", "--connect", "tls/127.0.0.1:notaport", "--keys", "k"], "operator --connect"),
        (["operator", "--connect", "tls/127.0.0.1:7447", "--keys", "/nonexistent"], "operator --keys"),
    ],
)
def test_bridge_user_errors_are_one_line(argv: list[str], needle: str) -> None:
    proc = subprocess.run(QROBOT + argv, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and needle in proc.stderr and "Traceback" not in proc.stderr


def test_no_agent_at_the_endpoint_is_one_line(tmp_path: Path) -> None:
    certs.init(tmp_path / "keys")
    proc = subprocess.run(
        QROBOT
        + [
            "run",
            "pointnav",
            "--robot",
            f"tls/127.0.0.1:{_free_port()}",
            "--keys",
            str(tmp_path / "keys"),
            "--policy",
            "hold",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "no agent for qrobot/robot" in proc.stderr


def test_agent_replay_refuses_what_is_not_an_audit_log_in_one_line(tmp_path: Path) -> None:
    plan = '{"kind": "plan", "t": 1.0, "period": 5, "action": [0.1, 0.0, 0.0]}'
    cases = {
        "no_seed.jsonl": plan + '\n{"kind": "reset", "t": 0.5}\n',
        "bad_seed.jsonl": plan + '\n{"kind": "reset", "t": 0.5, "seed": -1}\n',
        "inf_period.jsonl": '{"kind": "plan", "t": 1.0, "period": 1e999, "action": [0, 0, 0]}\n',
        "mixed_t.jsonl": plan + '\n{"kind": "halt", "t": "soon"}\n',
        "nan_action.jsonl": '{"kind": "plan", "t": 1.0, "period": 5, "action": [NaN, 0, 0]}\n',
        "no_plans.jsonl": '{"kind": "state", "t": 1.0, "detail": "x"}\n',
        "binary.jsonl": b"\xff\xfe\x00",
    }
    for name, text in cases.items():
        path = tmp_path / name
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
        proc = subprocess.run(
            QROBOT + ["agent-replay", str(path), "--robot", "127.0.0.1:1", "--robot-token", "x"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, name
        assert "agent-replay: " in proc.stderr, name
