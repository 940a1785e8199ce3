"""Episodes per second of `qrobot bench` with 1 and 2 workers on the same cells, as a
ratio (the aim: 2 workers >= 1.8x one, on a machine with 2 idle cores).

    .venv/bin/python benchmarks/bench_workers.py [--episodes 8] [--scenarios pointnav,reach]

Each run is a whole `qrobot bench` (worker start-up included) with recording off.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from qrobot.cli import main as qrobot


def rate(workers: int, scenarios: str, episodes: int, root: str) -> float:
    argv = ["bench", "--scenarios", scenarios, "--policies", "expert", "--episodes", str(episodes), "--seed", "100"]
    t = time.perf_counter()
    assert qrobot([*argv, "--workers", str(workers), "--no-record", "--runs-dir", root, "-q"]) == 0
    return len(scenarios.split(",")) * episodes / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--scenarios", default="pointnav,reach,pick_place")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = rate(1, args.scenarios, args.episodes, tmp)
        two = rate(2, args.scenarios, args.episodes, tmp)
    print(f"scenarios {args.scenarios}, {args.episodes} episodes each, expert, no recording")
    print(f"1 worker: {one:.2f} episodes/s   2 workers: {two:.2f} episodes/s   ratio {two / one:.2f}")


if __name__ == "__main__":
    main()
