"""The agent's e-stop latch, kept on disk so that it survives an agent restart: written
atomically (temp file, fsync, rename) before the latch is reported as set."""

from __future__ import annotations

import json
import os
from pathlib import Path


class Latch:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._reason: str | None = None
        try:
            self._reason = str(json.loads(self._path.read_text())["reason"])[:200] or "latched"
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError):
            self._reason = "latch file unreadable: treated as latched"  # cannot vouch: latched

    @property
    def reason(self) -> str | None:
        return self._reason

    def set(self, reason: str) -> None:
        if self._reason is not None:
            return
        tmp = self._path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"reason": str(reason)[:200]}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path)
        self._reason = str(reason)[:200] or "latched"

    def clear(self) -> None:
        self._path.unlink(missing_ok=True)
        self._reason = None
