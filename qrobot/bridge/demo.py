"""The bridge end to end, as four processes on this machine (`make bridge-demo`): a
simulated robot (`qrobot robot-sim`, streaming its cameras), its agent (`qrobot agent`:
supervisor, deadlines, lease, e-stop latch, audit), an operator holding the dead-man
(`qrobot operator --enable`) and the Qwen VLA driving through the agent (`qrobot run
SCENARIO --robot tls/127.0.0.1:PORT`). Each is the command a person would type in its own
terminal; this script only starts them in order and stops them after the run.

    python -m qrobot.bridge.demo [--scenario pointnav] [--episodes 3] [--seed 10000] [--dir runs/bridge-demo]
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
    print(f"$ qrobot {' '.join(args)}\n  {line.rstrip()}", flush=True)
    if not line.startswith(first):
        proc.kill()
        raise SystemExit(f"bridge demo: `qrobot {args[0]}` did not start: {line.strip()} {proc.stdout.read()}")  # type: ignore[union-attr]
    return proc, line


def stop_all(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process still running, newest first; SIGKILL one that takes over 10 s."""
    for proc in procs[::-1]:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default="pointnav")
    p.add_argument("--episodes", type=int, default=3)
    p.add_argument("--seed", type=int, default=10000)
    p.add_argument("--dir", type=Path, default=Path("runs/bridge-demo"))
    args = p.parse_args(argv)
    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    keys = d / "keys"
    if not (keys / "ca.pem").exists():
        subprocess.run(QROBOT + ["keys", "init", str(keys)], check=True)
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    procs: list[subprocess.Popen] = []
    try:
        robot, line = _start(
            [
                "robot-sim",
                args.scenario,
                "--observations",
                "--seed",
                str(args.seed),
                "--token-file",
                str(d / "robot.token"),
            ],
            "listening",
        )
        procs.append(robot)
        agent, _ = _start(
            [
                "agent",
                "--robot",
                line.split()[-1],
                "--robot-token",
                str(d / "robot.token"),
                "--keys",
                str(keys),
                "--listen",
                endpoint,
                "--name",
                "demo",
                "--latch",
                str(d / "estop.json"),
                "--audit",
                str(d / "audit.jsonl"),
            ],
            "agent for",
        )
        procs.append(agent)
        run = [
            "run",
            args.scenario,
            "--policy",
            "qwen-vla",
            "--episodes",
            str(args.episodes),
            "--seed",
            str(args.seed),
            "--robot",
            endpoint,
            "--keys",
            str(keys),
            "--robot-name",
            "demo",
        ]
        print(f"$ qrobot {' '.join(run)}", flush=True)
        policy = subprocess.Popen(QROBOT + run)
        procs.append(policy)
        time.sleep(1.0)
        operator, _ = _start(
            ["operator", "--connect", endpoint, "--keys", str(keys), "--name", "demo", "--enable"], "qrobot/demo:"
        )
        procs.append(operator)
        rc = policy.wait()
    finally:
        stop_all(procs)
    print(f"audit log: {d / 'audit.jsonl'}")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
