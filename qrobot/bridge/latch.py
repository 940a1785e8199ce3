"""The agent's e-stop latch, kept on disk so that it survives an agent restart: written
atomically (temp file, fsync, rename), then reported (`reason`). Setting it never fails:
it is latched even when the disk refuses, and a latch that could not be saved (`saved`
False) cannot be reset until it can be (a stop the disk cannot remember is not one the
agent can vouch for). The agent stops the robot before it writes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Latch:
    def __init__(self, path: str | Path) -> None:
        self._path = Path(path)
        self._reason: str | None = None
        self.saved = True  # the latch on disk matches the one in memory
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
        """Latch: on disk first, then reported (`reason`); latched even if the disk refused."""
        if self._reason is not None:
            return
        reason = str(reason)[:200] or "latched"
        self._write(reason)
        self._reason = reason

    def save(self) -> bool:
        """Write the set latch to disk again; False (and `saved` False) if the disk refuses."""
        return True if self._reason is None else self._write(self._reason)

    def _write(self, reason: str) -> bool:
        tmp = self._path.with_suffix(".tmp")
        try:
            with open(tmp, "w") as f:
                json.dump({"reason": reason}, f)
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
