"""Episodes per second of `qrobot bench` in-process (1 worker), with 2 workers and on Ray
(2 actors on a local Ray of 2 CPUs) on the same cells, with the ratios to in-process (the
aims, on a machine with 2 idle cores: 2 workers >= 1.8x, Ray >= 1.6x). Not a timed test.

    .venv/bin/python benchmarks/bench_workers.py [--episodes 8] [--scenarios pointnav,reach] [--no-ray]

Each run is a whole `qrobot bench` (worker and actor start-up included) with recording off;
the local Ray (`ray.init(num_cpus=2)`, bound to 127.0.0.1) is started before the timed run,
as a cluster would be, and shut down after. The three runs' rows are checked to be equal.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from bench_matrix import bench, cells  # (benchmarks/ is the script's own directory)


def rate(scenarios: str, episodes: int, root: Path, *flags: str) -> tuple[float, dict]:
    argv = ["--scenarios", scenarios, "--policies", "expert", "--episodes", str(episodes), "--seed", "100"]
    seconds, run = bench(argv, root, *flags)
    return len(scenarios.split(",")) * episodes / seconds, cells(run)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--scenarios", default="pointnav,reach,pick_place")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="leave Ray out")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one, cells = rate(args.scenarios, args.episodes, Path(tmp) / "one", "--workers", "1")
        two, cells2 = rate(args.scenarios, args.episodes, Path(tmp) / "two", "--workers", "2")
        assert cells2 == cells, "2 workers gave other rows than in-process"
        on_ray = None
        if args.ray:
            import ray

            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", logging_level="WARNING")
            try:
                on_ray, cells3 = rate(args.scenarios, args.episodes, Path(tmp) / "ray", "--executor", "ray")
            finally:
                ray.shutdown()
            assert cells3 == cells, "Ray gave other rows than in-process"
    print(f"scenarios {args.scenarios}, {args.episodes} episodes each (seeds from 100), expert, no recording")
    print(f"in-process: {one:.2f} episodes/s")
    print(f"2 workers:  {two:.2f} episodes/s   ratio {two / one:.2f} (aim >= 1.8)")
    if on_ray is not None:
        print(f"Ray, 2 CPUs: {on_ray:.2f} episodes/s   ratio {on_ray / one:.2f} (aim >= 1.6)")
    print(f"rows identical across executors: {len(cells)} cells")


if __name__ == "__main__":
    main()
