"""The pictures of recordings in the docs, made the way a person would see them: an
expert episode recorded by `qrobot run`, opened in the real Rerun viewer (headless),
captured at a chosen step.

    .venv/bin/python scripts/screenshot.py [--out docs/images]

Needs a Vulkan driver for the headless viewer (Debian: mesa-vulkan-drivers).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from PIL import Image

from qrobot.cli import main as qrobot
from qrobot.record.snapshot import snapshot

# scenario, seed, step shown: mid-task, when the robot is doing something worth seeing
SHOTS = [("pick_place", 3, 20), ("pointnav_people", 3, 120)]
WIDTH = 1440  # px: readable in the docs, a few hundred kB each


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("docs/images"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for scenario, seed, step in SHOTS:
            runs = Path(tmp) / scenario
            argv = ["run", scenario, "--policy", "expert", "--episodes", "1", "--seed", str(seed), "--quiet"]
            assert qrobot([*argv, "--runs-dir", str(runs)]) == 0
            rrd = next(runs.rglob("*.rrd"))
            png = args.out / f"recording_{scenario}.png"
            problems = {v: r for v, r in snapshot(rrd, png, step=step).items() if r}
            img = Image.open(png)
            img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.LANCZOS).save(png, optimize=True)
            print(
                f"wrote {png} (step {step} of {scenario} seed {seed})"
                + (f"; view problems: {problems}" if problems else "")
            )


if __name__ == "__main__":
    main()
