"""Checks of what a user typed, done before anything runs or is written.

Each failure is a `QrobotError` naming the flag and what is accepted; the CLI prints it
as one line and exits 2. Nothing here imports torch unless a device must be checked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError

SEED_MAX = 2**31 - 1  # PyBullet, numpy and torch generators all take seeds up to here
DEVICE = re.compile(r"^(cpu|mps|cuda(:\d{1,2})?)$")


def episode_path(out: Path, k: int, seed: int) -> Path:
    """Episode k of a collected dataset whose first seed is `seed` (VLA and world model alike)."""
    return out / f"ep{k}-seed{seed + k}.npz"


def check_seeds(flag: str, seed: int, episodes: int) -> None:
    """Seeds seed .. seed+episodes-1 must lie in [0, SEED_MAX]."""
    if seed < 0 or seed + episodes - 1 > SEED_MAX:
        raise QrobotError(
            f"{flag}: {seed}: seeds from 0 to {SEED_MAX} (first seed + episodes - 1 included) are accepted"
        )


def check_device(flag: str, device: str) -> None:
    """cpu, cuda, cuda:N or mps, and only one this torch build and machine have."""
    if not DEVICE.match(device):
        raise QrobotError(f"{flag}: {device!r}: accepted: cpu, cuda, cuda:N, mps")
    if device == "cpu":
        return
    import torch

    if device == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise QrobotError(f"{flag}: mps: not available on this machine (accepted here: cpu)")
        return
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no visible CUDA GPU"
        raise QrobotError(f"{flag}: {device}: {build} (accepted here: cpu)")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise QrobotError(f"{flag}: {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")


def check_gui(flag: str = "--gui") -> None:
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise QrobotError(
            f"{flag}: no display (DISPLAY is unset); run without --gui and open the "
            "recording with `qrobot view` or `rerun --serve-web`"
        )


def check_out_dir(flag: str, path: Path) -> None:
    """A directory that exists, or one that can be made: no file in the way, a writable
    ancestor. Nothing is created here."""
    path = Path(path)
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        where = "is a file" if probe == path else f"cannot be made: {probe} is a file"
        raise QrobotError(f"{flag}: {path} {where}; give a directory")
    if not os.access(probe, os.W_OK | os.X_OK) or str(probe.resolve()).startswith(("/proc", "/sys", "/dev")):
        raise QrobotError(f"{flag}: {path}: {probe} is not writable; give a directory you can write")


def make_out_dir(flag: str, path: Path) -> list[Path]:
    """Create `path` (and missing parents); returns the directories made, for `remove_made`.
    A failure removes what it made and is one line."""
    check_out_dir(flag, path)
    path = Path(path)
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_made(missing)
        raise QrobotError(f"{flag}: {path}: cannot create it ({exc.strerror or exc})") from None
    return missing


def remove_made(made: list[Path]) -> None:
    """Remove directories `make_out_dir` made (deepest first), with anything inside."""
    for d in made:
        shutil.rmtree(d, ignore_errors=True)


COLLECTING = "collecting.json"  # what an unfinished `collect` is collecting (meta.json comes at its end)


def check_dataset_out(flag: str, out: Path, expected: dict[str, Any]) -> None:
    """`collect --out`: a new or empty directory, or a dataset whose meta.json agrees with
    `expected` (scenario, robot, task, cameras, sizes) on every key both have: one dataset
    holds one kind of episode, whatever the scenario files are called."""
    check_out_dir(flag, out)
    out = Path(out)
    if not out.is_dir():
        return
    meta = out / "meta.json"
    if meta.exists():
        try:
            held = json.loads(meta.read_text())
        except (OSError, ValueError):
            raise QrobotError(f"{flag}: {meta}: unreadable dataset metadata; give a new directory") from None
        if not isinstance(held, dict):
            raise QrobotError(f"{flag}: {meta}: not a dataset's metadata; give a new directory")
        for key, want in expected.items():
            if key in held and held[key] != want:
                raise QrobotError(
                    f"{flag}: {out} holds episodes with {key} {held[key]!r}, not {want!r} "
                    f"(scenario {expected.get('scenario')!r}); give a new directory"
                )
    elif (out / COLLECTING).is_file():  # an interrupted collection of the same episodes goes on
        try:
            intent = json.loads((out / COLLECTING).read_text())
        except (OSError, ValueError):
            intent = None
        if not isinstance(intent, dict) or any(intent.get(k) != v for k, v in expected.items()):
            raise QrobotError(f"{flag}: {out} holds an interrupted collection of other episodes; give a new directory")
    elif any(out.glob("ep*.npz")):
        raise QrobotError(f"{flag}: {out} holds episodes without meta.json; give a new directory")


def read_meta(path: Path, fields: dict[str, type]) -> dict[str, Any]:
    """A dataset's meta.json: a JSON object with these fields of these types."""
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise QrobotError(f"{path}: unreadable dataset metadata ({str(exc)[:120]})") from None
    if not isinstance(meta, dict):
        raise QrobotError(f"{path}: must be a JSON object")
    for key, kind in fields.items():
        value = meta.get(key)
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise QrobotError(f"{path}: field {key!r}: missing or not a {kind.__name__}")
    return meta
