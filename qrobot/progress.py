"""Live progress on stderr, per control step.

On a terminal: one line, redrawn at most 10 times a second. Otherwise (a log file, CI, a
pipe): a full line every QROBOT_PROGRESS_SECONDS seconds (default 5), so a long episode
is never silent. Results go to stdout; `Progress.result` prints one there without
tearing the progress line.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

DEFAULT_EVERY = 5.0


def _every() -> float:
    try:
        return max(0.0, float(os.environ.get("QROBOT_PROGRESS_SECONDS", DEFAULT_EVERY)))
    except ValueError:
        return DEFAULT_EVERY


class Progress:
    """`step` after every control step (or training step), `episode` after each episode."""

    def __init__(
        self,
        label: str,
        total: int,
        unit: str = "episode",
        enabled: bool = True,
        stream: TextIO | None = None,
        tty: bool | None = None,
    ) -> None:
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = (self.stream.isatty() if hasattr(self.stream, "isatty") else False) if tty is None else tty
        self.every = 0.1 if self.tty else _every()
        self.done = self.successes = self.steps = 0
        self.start = self._last = time.monotonic()
        self._drawn = False

    def step(self, current_steps: int = 0, note: str = "") -> None:
        self.steps += 1
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._draw(current_steps, note)

    def episode(self, success: bool) -> None:
        self.done += 1
        self.successes += bool(success)

    def worker_episode(self, success: bool, steps: int, note: str = "") -> None:
        """An episode a worker process ran, seen as it ended: its steps count toward the rate
        (all workers together), and the line is drawn at most every `every` seconds."""
        self.steps += max(0, int(steps))
        self.episode(success)
        now = time.monotonic()
        if self.enabled and now - self._last >= self.every:
            self._last = now
            self._draw(None, note)

    def _draw(self, current_steps: int | None, note: str) -> None:
        rate = self.steps / max(time.monotonic() - self.start, 1e-9)
        if self.unit == "episode" and current_steps is None:  # (workers: episodes as they end)
            line = (
                f"{self.label}: {self.done}/{self.total} episodes done, "
                f"{self.successes}/{self.done} successful so far, {rate:.1f} steps/s"
            )
        elif self.unit == "episode":
            line = (
                f"{self.label}: episode {min(self.done + 1, self.total)}/{self.total}, step {current_steps}, "
                f"{self.successes}/{self.done} successful so far, {rate:.1f} steps/s"
            )
        else:  # training: `current_steps` is the step count itself
            line = f"{self.label}: {self.unit} {current_steps}/{self.total}, {rate:.1f} {self.unit}s/s"
        line += f", {note}" if note else ""
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
            self._drawn = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False

    def result(self, line: str, stream: TextIO | None = None) -> None:
        """Print a result line (stdout by default) without tearing the progress line."""
        self.clear()
        print(line, file=stream or sys.stdout, flush=True)

    def close(self) -> None:
        self.clear()
