"""A run directory: runs/<run-id>/<scenario>/ep<k>-seed<s>.rrd plus run.json."""

from __future__ import annotations

import json
import platform
import time
import uuid
from pathlib import Path
from typing import Any

import rerun as rr

import qrobot


class RunDir:
    """Creates the run directory and records the versions `.rrd` files depend on
    (Rerun promises `.rrd` compatibility only within one version)."""

    def __init__(self, root: Path | str = "runs", run_id: str | None = None, **meta: Any) -> None:
        self.run_id = run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
        self.path = Path(root) / self.run_id
        self.path.mkdir(parents=True, exist_ok=True)
        info = {"run_id": self.run_id, "rerun_sdk": rr.__version__, "qrobot": qrobot.__version__,
                "python": platform.python_version(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"), **meta}
        (self.path / "run.json").write_text(json.dumps(info, indent=2) + "\n")
        (self.path / "RERUN_VERSION").write_text(rr.__version__ + "\n")

    def episode_path(self, scenario: str, episode: int, seed: int) -> Path:
        return self.path / scenario / f"ep{episode}-seed{seed}.rrd"

    def episode_id(self, scenario: str, episode: int, seed: int) -> str:
        return f"{self.run_id}-{scenario}-ep{episode}-seed{seed}"
