"""The robot side as the user runs it: `qrobot robot-sim` and `qrobot agent` as separate
processes, a console and a policy over Zenoh with mutual TLS. The agent is SIGKILLed
while the base drives at full speed: the robot process's own watchdog brakes it to rest.
An e-stop written by one agent process is still latched in the next one; the audit log
records the session."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.demo import stop_all
from qrobot.bridge.service import ConsoleClient, PolicyClient
from qrobot.bridge.transport import config

from .test_robot_sim import _periods
from .test_transport import _free_port, _wait

FORWARD = np.array([1.0, 0.0, -1.0])
QROBOT = [sys.executable, "-m", "qrobot.cli"]


def _start(args: list[str], first: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        QROBOT + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith(first), line
    return proc, line


def test_agent_killed_then_restarted_keeps_the_robot_safe(tmp_path: Path) -> None:
    certs.init(tmp_path / "keys")
    log, latch, audit = tmp_path / "robot.jsonl", tmp_path / "estop.json", tmp_path / "audit.jsonl"
    robot, line = _start(
        ["robot-sim", "pointnav", "--log", str(log), "--token-file", str(tmp_path / "robot.token")],
        "listening 127.0.0.1:",
    )
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    agent_args = [
        "agent",
        "--robot",
        line.split()[-1],
        "--robot-token",
        str(tmp_path / "robot.token"),
        "--keys",
        str(tmp_path / "keys"),
        "--listen",
        endpoint,
        "--name",
        "r1",
        "--latch",
        str(latch),
        "--audit",
        str(audit),
    ]
    procs = [robot]
    sessions: list[zenoh.Session] = []
    stop = threading.Event()
    try:
        agent, _ = _start(agent_args, "agent for diffbot")
        procs.append(agent)
        sessions = [zenoh.open(config(role, tmp_path / "keys", connect=endpoint)) for role in ("console", "policy")]
        console, policy = ConsoleClient(sessions[0], "r1"), PolicyClient(sessions[1], "r1")
        assert _wait(lambda: console.watch.status is not None, 10.0)
        policy.sync()
        policy.acquire()
        console.deadman.set()
        time.sleep(0.3)
        console.request("enable")
        assert _wait(lambda: console.watch.status.state == "ENABLED", 3.0), console.watch.status  # type: ignore[union-attr]

        def drive() -> None:
            while not stop.is_set():
                policy.send(np.stack([FORWARD] * 3))
                time.sleep(0.1)

        threading.Thread(target=drive, daemon=True).start()
        assert _wait(lambda: any(p["speed"] > 0.45 for p in _periods(log)), 5.0)
        os.kill(agent.pid, signal.SIGKILL)  # the agent dies mid-motion
        killed = time.time()
        agent.wait(5)
        time.sleep(1.2)
        after = [p for p in _periods(log) if p["wall"] > killed]
        first = next(i for i, p in enumerate(after) if p["how"] == "watchdog")
        assert after[first]["wall"] - killed <= 0.3  # the first period without a plan (<= 0.1 s) brakes
        assert sum(p["how"] == "plan" for p in after) <= 1 and max(p["speed"] for p in after[first + 5 :]) < 1e-3

        again, line = _start(agent_args, "agent for diffbot")  # a restarted agent: nothing latched, not enabled
        assert line.rstrip().endswith("state IDLE")
        procs.append(again)
        assert _wait(lambda: console.watch.status is not None and console.watch.status.state == "IDLE", 5.0)
        console.request("estop", key="estop")
        assert _wait(lambda: console.watch.status.state == "ESTOPPED", 3.0)  # type: ignore[union-attr]
        again.send_signal(signal.SIGTERM)
        again.wait(10)
        third, line = _start(agent_args, "agent for diffbot")
        procs.append(third)
        assert line.rstrip().endswith("state ESTOPPED")  # the latch survived the restart
        assert _wait(
            lambda: (
                console.watch.status is not None
                and console.watch.status.state == "ESTOPPED"
                and time.monotonic() - console.watch.received < 0.2
            ),
            5.0,
        )  # and the console sees it
        kinds = [json.loads(line)["kind"] for line in audit.read_text().splitlines()]
        assert "lease" in kinds and "state" in kinds
        console.close()
        policy.close()
    finally:
        stop.set()
        for s in sessions:
            s.close()
        stop_all(procs)


def test_the_agent_reconnects_to_a_restarted_robot_and_waits_for_a_new_enable(tmp_path: Path) -> None:
    certs.init(tmp_path / "keys")
    port, token = _free_port(), str(tmp_path / "robot.token")
    robot_args = ["robot-sim", "pointnav", "--port", str(port), "--token-file", token]
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []
    session = None
    try:
        robot, _ = _start(robot_args, "listening 127.0.0.1:")
        procs.append(robot)
        agent, _ = _start(
            [
                "agent",
                "--robot",
                f"127.0.0.1:{port}",
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
            ],
            "agent for diffbot",
        )
        procs.append(agent)
        session = zenoh.open(config("console", tmp_path / "keys", connect=endpoint))
        console = ConsoleClient(session, "r1")
        state = lambda: console.watch.status.state if console.watch.status else None
        console.deadman.set()
        assert _wait(lambda: state() == "IDLE", 10.0)
        robot.terminate()  # the robot's controller goes away ...
        robot.wait(10)
        assert _wait(lambda: state() == "DISCONNECTED", 5.0)
        again, _ = _start(robot_args, "listening 127.0.0.1:")  # ... and comes back on its port
        procs.append(again)
        assert _wait(lambda: state() == "IDLE", 10.0)  # paired anew; not enabled by itself
        console.request("enable")
        assert not _wait(lambda: state() == "ENABLED", 1.0)  # no policy has synced its clock: refused
        kinds = [
            json.loads(line)["detail"]
            for line in (tmp_path / "audit.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "state"
        ]
        assert (
            kinds.count("DISCONNECTED -> IDLE: adapter connected") == 2
            and "IDLE -> DISCONNECTED: adapter lost" in kinds
        )
        console.close()
    finally:
        if session is not None:
            session.close()
        stop_all(procs)
