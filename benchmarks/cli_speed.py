"""How fast the `qrobot` command answers when nothing has to run: `--help`, `--version`,
`run --help`, a bad scenario name, a bad policy name, `import qrobot` (which registers
the gymnasium ids). Each is a fresh interpreter, timed as the median of N starts, and
printed beside the same interpreter doing nothing (`python -c pass`), measured in the
same run, as a ratio and as the extra seconds the command costs. Bar: at most 1 s each.

    .venv/bin/python benchmarks/cli_speed.py [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

CASES = {
    "python -c pass (baseline)": ["-c", "pass"],
    "import qrobot": ["-c", "import qrobot"],
    "qrobot --help": ["-m", "qrobot.cli", "--help"],
    "qrobot --version": ["-m", "qrobot.cli", "--version"],
    "qrobot run --help": ["-m", "qrobot.cli", "run", "--help"],
    "qrobot run nosuch": ["-m", "qrobot.cli", "run", "nosuch"],
    "qrobot run reach --policy nosuch": ["-m", "qrobot.cli", "run", "reach", "--policy", "nosuch"],
}


def seconds(argv: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run([sys.executable, *argv], capture_output=True, timeout=60)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    seconds(["-c", "import qrobot.cli"], 1)  # warm the file cache
    base = seconds(CASES["python -c pass (baseline)"], args.repeats)
    print(f"{'command':36s} {'median s':>9s} {'x baseline':>11s} {'extra s':>8s}  bar 1 s")
    for name, argv in CASES.items():
        s = base if "baseline" in name else seconds(argv, args.repeats)
        print(f"{name:36s} {s:9.3f} {s / base:11.1f} {s - base:8.3f}  {'ok' if s <= 1.0 else 'OVER'}")


if __name__ == "__main__":
    main()
