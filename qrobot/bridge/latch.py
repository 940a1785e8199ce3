"""The agent's e-stop latch, kept on disk so that it survives an agent restart: written
atomically (temp file, fsync, rename). Setting it never fails: it is latched in memory
first, then saved; a latch that could not be saved (`saved` False) cannot be reset until
it can be (a stop the disk cannot remember is not one the agent can vouch for)."""

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

        self.saved = True

    def set(self, reason: str) -> None:
        if self._reason is not None:
            return
        self._reason = str(reason)[:200] or "latched"
        self.save()

    def save(self) -> bool:
        """Write the set latch to disk; False (and `saved` False) if the disk refuses."""
        if self._reason is None:
            return True
        tmp = self._path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"reason": self._reason}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self._path)
            self.saved = True
        except OSError:
            self.saved = False
        return self.saved

    def clear(self) -> bool:
        """Release the latch; False (still latched) if it could not be saved or removed."""
        if not self.save():
            return False
        try:
            self._path.unlink(missing_ok=True)
        except OSError:
            return False
        self._reason = None
        return True
