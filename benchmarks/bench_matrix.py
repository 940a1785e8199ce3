"""The whole benchmark matrix on every executor: 3 scenarios x 3 policies x N episodes run
in-process, with 2 worker processes and on a local Ray of 2 CPUs, plus a 2-worker run that
is SIGKILLed part-way and continued with `--resume`. Prints, per executor, the cells run,
the episodes/s and the ratio to in-process, and checks every per-seed row (success, steps,
end reason, metrics, safety counts, instruction) is identical to in-process; for the killed
run, how many episodes were on disk at the kill, how many the resume ran, and that none ran
twice. Not a timed test (issue 20's report figure; docs/benchmarking.md).

    .venv/bin/python benchmarks/bench_matrix.py [--episodes 20] [--no-ray]
        [--scenarios reach,pick_place,pointnav] [--policies expert,random,qwen-vla]

qwen-vla uses the shipped checkpoint (one for every task); a pair without one would be
listed as skipped by the bench itself, as a user would see it. Recording is off (speed is compared).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from qrobot.cli import main as qrobot

KEYS = ("success", "steps", "end_reason", "metrics", "safety", "instruction")


def cells(run: Path) -> dict[tuple[str, str, int], dict]:
    out: dict[tuple[str, str, int], dict] = {}
    for line in (run / "episodes.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # the line a kill cut short
            continue
        key = (row["scenario"], row["policy"], row["seed"])
        assert key not in out, f"{run}: cell {key} ran twice"
        out[key] = {k: row[k] for k in KEYS}
    return out


def bench(argv: list[str], root: Path, *flags: str) -> tuple[float, Path]:
    root.mkdir(parents=True)
    t = time.perf_counter()
    assert qrobot(["bench", *argv, *flags, "--no-record", "--runs-dir", str(root), "-q"]) == 0
    seconds = time.perf_counter() - t
    (run,) = root.iterdir()
    return seconds, run


def killed_and_resumed(argv: list[str], root: Path, kill_after: int) -> tuple[int, int, Path]:
    """A 2-worker bench SIGKILLed (with its workers) once `kill_after` episodes are on disk,
    then `--resume`d: (episodes kept at the kill, episodes the resume ran, run dir)."""
    root.mkdir(parents=True)
    cmd = [sys.executable, "-m", "qrobot.cli", "bench", *argv, "--workers", "2", "--no-record"]
    proc = subprocess.Popen([*cmd, "--runs-dir", str(root), "-q"], start_new_session=True)
    jsonl = None
    while proc.poll() is None:
        found = list(root.glob("*/episodes.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= kill_after:
            jsonl = found[0]
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes, mid-episode
    proc.wait()
    assert jsonl is not None, "the bench ended before the kill"
    kept = len(cells(jsonl.parent))
    assert qrobot(["bench", "--resume", str(jsonl.parent), "-q"]) == 0
    return kept, len(cells(jsonl.parent)) - kept, jsonl.parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=20)
    p.add_argument("--seed", type=int, default=20000)
    p.add_argument("--scenarios", default="reach,pick_place,pointnav")
    p.add_argument("--policies", default="expert,random,qwen-vla")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="leave Ray out")
    args = p.parse_args()
    argv = ["--scenarios", args.scenarios, "--policies", args.policies]
    argv += ["--episodes", str(args.episodes), "--seed", str(args.seed)]
    with tempfile.TemporaryDirectory() as tmp:
        secs_one, run = bench(argv, Path(tmp) / "one", "--workers", "1")
        ref = cells(run)
        skipped = json.loads((run / "summary.json").read_text())["skipped"]
        timings = {"in-process": secs_one}
        secs, run = bench(argv, Path(tmp) / "two", "--workers", "2")
        assert cells(run) == ref, "2 workers gave other rows than in-process"
        timings["2 workers"] = secs
        if args.ray:
            import ray

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
            try:
                secs, run = bench(argv, Path(tmp) / "ray", "--executor", "ray")
            finally:
                ray.shutdown()
            assert cells(run) == ref, "Ray gave other rows than in-process"
            timings["Ray, 2 CPUs"] = secs
        kept, ran, run = killed_and_resumed(argv, Path(tmp) / "killed", len(ref) // 3)
        assert cells(run) == ref, "the killed and resumed run gave other rows than in-process"
    n = len(ref)
    print(f"matrix: {args.scenarios} x {args.policies}, {args.episodes} episodes each, seeds from {args.seed}")
    for s in skipped:
        print(f"  skipped by the bench: {s['scenario']} / {s['policy']}: {s['reason']}")
    print(f"{n} episodes in {n // args.episodes} cells; rows identical on every executor below")
    for name, secs in timings.items():
        ratio = secs_one / secs
        print(f"  {name:<12} {secs:7.1f} s  {n / secs:5.2f} episodes/s  ratio {ratio:.2f}")
    print(f"killed (SIGKILL to the driver and its 2 workers) with {kept} of {n} episodes on disk;")
    print(f"  --resume ran the other {ran}, none twice; rows identical to in-process")


if __name__ == "__main__":
    main()
