"""The Qwen VLA through the bridge against the same VLA in-process, on the same seeds:
for each task, the shipped checkpoint runs N episodes in a local world (`qrobot run`'s
loop) and N through the bridge (robot process streaming its cameras, agent, operator
holding the dead-man, `RemoteRobot` here: one period of command latency, real time).
Prints successes per side with Wilson intervals and the per-seed agreement.

    .venv/bin/python benchmarks/bridge_vla.py [--tasks pointnav,pick_place] [--episodes 10] [--seed 10000]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qrobot.policies import make_policy

from qrobot.bridge import keys as certs
from qrobot.bridge.faults import _die_with_parent
from qrobot.bridge.remote import RemoteRobot, run_remote_episode
from qrobot.runner import run, wilson_interval

QROBOT = [sys.executable, "-m", "qrobot.cli"]


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        QROBOT + args,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_die_with_parent,
    )
    return proc, proc.stdout.readline()  # type: ignore[union-attr]


def remote(task: str, episodes: int, seed: int, tmp: Path) -> list[bool]:
    certs.init(tmp / "keys")
    with __import__("socket").socket() as s:
        s.bind(("127.0.0.1", 0))
        endpoint = f"tls/127.0.0.1:{s.getsockname()[1]}"
    procs = []
    try:
        robot, line = _start(["robot-sim", task, "--observations", "--token-file", str(tmp / "t")])
        procs.append(robot)
        agent, _ = _start(
            [
                "agent",
                "--robot",
                line.split()[-1],
                "--robot-token",
                str(tmp / "t"),
                "--keys",
                str(tmp / "keys"),
                "--listen",
                endpoint,
                "--name",
                "b",
                "--latch",
                str(tmp / "l.json"),
                "--audit",
                str(tmp / "a.jsonl"),
            ]
        )
        procs.append(agent)
        bot = RemoteRobot.connect(endpoint, tmp / "keys", "b")
        policy = make_policy("qwen-vla", bot, seed=seed)
        operator, _ = _start(
            ["operator", "--connect", endpoint, "--keys", str(tmp / "keys"), "--name", "b", "--enable"]
        )
        procs.append(operator)
        assert bot.wait_enabled(10.0), bot.agent_state()
        out = []
        for k in range(episodes):
            r = run_remote_episode(bot, policy, k, seed + k)
            out.append(r.success)
            print(f"  {task} via bridge seed {seed + k}: {r.end_reason} in {r.steps} steps", flush=True)
        bot.close()
        return out
    finally:
        for p in procs[::-1]:
            p.send_signal(signal.SIGTERM)
            p.wait(10)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="pointnav,pick_place")
    p.add_argument("--episodes", type=int, default=10)
    p.add_argument("--seed", type=int, default=10000)
    args = p.parse_args()
    rows = []
    for task in args.tasks.split(","):
        t = time.time()
        local = [r.success for r in run(task, "qwen-vla", args.episodes, args.seed, progress=False)]
        with tempfile.TemporaryDirectory() as tmp:
            bridged = remote(task, args.episodes, args.seed, Path(tmp))
        rows.append((task, local, bridged, time.time() - t))
    for task, local, bridged, secs in rows:

        def fmt(xs: list[bool]) -> str:
            lo, hi = wilson_interval(sum(xs), len(xs))
            return f"{sum(xs)}/{len(xs)} ({lo:.0%}-{hi:.0%})"

        agree = sum(a == b for a, b in zip(local, bridged))
        print(
            f"{task}: in-process {fmt(local)} | through the bridge {fmt(bridged)} | same outcome on "
            f"{agree}/{len(local)} seeds ({secs:.0f} s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
