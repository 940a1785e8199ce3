"""A run directory: results as data, plus one `.rrd` per recorded episode.

    runs/<run-id>/run.json          arguments, versions, start, end, status
    runs/<run-id>/episodes.jsonl    one object per episode, appended the moment it ends
    runs/<run-id>/summary.json      written when the run ends
    runs/<run-id>/[<policy>/]<scenario>/ep<k>-seed<s>.rrd

Both JSON files carry `schema_version`; non-finite numbers are written as null (strict JSON).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import qrobot
from qrobot.checks import make_out_dir, remove_made
from qrobot.errors import QrobotError

SCHEMA_VERSION = 1
EPISODES_FILE, SUMMARY_FILE, RUN_FILE = "episodes.jsonl", "summary.json", "run.json"


def strict_json(value: Any) -> Any:
    """The value with NaN and infinities as None and tuples as lists (json.dumps would
    otherwise write `Infinity`, which no strict JSON reader accepts)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): strict_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict_json(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return strict_json(value.item())
    return value


def versions() -> dict[str, str | None]:
    """What produced the results: package versions (read without importing them) and the
    git commit of the qrobot checkout, when it is one."""
    out: dict[str, str | None] = {"qrobot": qrobot.__version__, "python": platform.python_version()}
    for name, dist in (
        ("torch", "torch"),
        ("pybullet", "pybullet"),
        ("rerun", "rerun-sdk"),
        ("transformers", "transformers"),
        ("gymnasium", "gymnasium"),
    ):
        try:
            out[name] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[name] = None
    try:
        git = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(qrobot.__file__).parent, timeout=5, capture_output=True, text=True
        )
        out["git_commit"] = git.stdout.strip() if git.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        out["git_commit"] = None
    return out


class RunDir:
    """Creates the run directory; `record_episode` / `finish` keep its files current.
    A directory that cannot be made is one QrobotError naming `flag`, and a failed
    directory-making leaves nothing behind."""

    def __init__(
        self, root: Path | str = "runs", run_id: str | None = None, flag: str = "--runs-dir", **meta: Any
    ) -> None:
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.path = Path(root) / self.run_id
        self._made = make_out_dir(flag, self.path)
        self.episodes = 0
        self.info = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            **meta,
            "status": "running",
            "started": _now(),
            "ended": None,
            "versions": versions(),
        }
        self._write_info()
        # .rrd files open only in the Rerun version that wrote them: say which, beside them
        (self.path / "RERUN_VERSION").write_text(f"{self.info['versions']['rerun']}\n")

    @classmethod
    def reopen(cls, path: Path, flag: str = "--resume") -> RunDir:
        """An existing run directory, to continue (`bench --resume`): same run id, files kept."""
        path = Path(path)
        try:
            info = json.loads((path / RUN_FILE).read_text())
        except FileNotFoundError:
            raise QrobotError(f"{flag} {path}: not a run directory (no {RUN_FILE})") from None
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise QrobotError(f"{flag} {path}: {RUN_FILE} cannot be read ({exc})") from None
        if not isinstance(info, dict) or "run_id" not in info:
            raise QrobotError(f"{flag} {path}: {RUN_FILE} is not a qrobot run record")
        self = cls.__new__(cls)
        self.run_id, self.path, self._made = str(info["run_id"]), path, []
        self.episodes = int(info.get("episodes_recorded") or 0)
        self.info = {**info, "status": "running", "resumed": _now(), "versions": versions()}
        self._write_info()
        jsonl = path / EPISODES_FILE
        if jsonl.is_file() and jsonl.stat().st_size:
            with open(jsonl, "rb+") as f:  # a line a kill cut short must not swallow the next one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
        return self

    def _write_info(self) -> None:
        _atomic_write(self.path / RUN_FILE, json.dumps(strict_json(self.info), indent=2) + "\n")

    def episode_path(self, scenario: str, episode: int, seed: int, policy: str | None = None) -> Path:
        return recording_path(self.path, scenario, episode, seed, policy)

    def episode_id(self, scenario: str, episode: int, seed: int) -> str:
        return recording_id(self.run_id, scenario, episode, seed)

    def record_episode(self, row: dict[str, Any]) -> None:
        """Append one episode's result as a line, flushed to disk before returning."""
        append_line(self.path / EPISODES_FILE, {"schema_version": SCHEMA_VERSION, **row})
        self.episodes += 1

    def write_summary(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write summary.json; returns the document as written (what `--json` prints)."""
        doc = strict_json({"schema_version": SCHEMA_VERSION, "run_id": self.run_id, **summary})
        _atomic_write(self.path / SUMMARY_FILE, json.dumps(doc, indent=2) + "\n")
        return doc

    def finish(self, status: str) -> None:
        """status: finished | interrupted | crashed."""
        self.info.update(status=status, ended=_now(), episodes_recorded=self.episodes)
        self._write_info()

    def discard(self) -> None:
        """Remove the run directory (and parents this run made) when nothing ran in it."""
        if self.episodes == 0 and "resumed" not in self.info:  # a resumed run's directory is not ours to remove
            remove_made(self._made or [self.path])


def append_line(path: Path, row: dict[str, Any]) -> None:
    """One JSON line in one write (O_APPEND), so that processes appending to one file never
    interleave within a line; synced so a killed run keeps every finished episode."""
    data = (json.dumps(strict_json(row)) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def recording_path(run: Path, scenario: str, episode: int, seed: int, policy: str | None = None) -> Path:
    """Where an episode's recording lies in a run directory (one name for every executor)."""
    return (run / policy if policy else run) / scenario / f"ep{episode}-seed{seed}.rrd"


def recording_id(run_id: str, scenario: str, episode: int, seed: int) -> str:
    return f"{run_id}-{scenario}-ep{episode}-seed{seed}"
