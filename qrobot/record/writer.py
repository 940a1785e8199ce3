"""Recording off the control loop: a writer process does the JPEG encoding and the Rerun
logging (`qrobot.record.sink`), so they run on another core instead of sharing the
control loop's interpreter (PyBullet holds the GIL while it steps and renders, so a
thread would not overlap with it).

The control loop hands each step over as plain data on a bounded queue. When the writer
falls FRAME_ROOM steps behind, that step's camera frames are dropped (counted, and
recorded as `recording/dropped_frames`); events, commands and the result are never
dropped: the control loop waits for room instead. `finish` waits until the writer has
written the episode and closed the file.

Crash window: when the control process is SIGKILLed, the writer sees its pipe close,
writes everything it has received and closes the file. What is lost is what was still
queued on the control side: at most QUEUE_STEPS steps.

One writer process serves every recording of a process, one after another or at once.
"""

from __future__ import annotations

import itertools
import os
import queue
import subprocess
import sys
import threading
from typing import Any

import numpy as np

QUEUE_STEPS = 32  # steps the writer may lag before the control loop waits
FRAME_ROOM = 8  # once this many items are queued, camera frames are dropped
FINISH_TIMEOUT = 120.0  # (s) for the writer to write out an episode's backlog
START_TIMEOUT = 60.0  # (s) for the writer process to import what it needs
PUT_TIMEOUT = 1.0  # (s) between checks that the writer is still alive


class RecordingError(RuntimeError):
    """The writer could not write a recording (disk full, writer process gone)."""


def serve(items_fd: int, replies_fd: int) -> None:
    """The writer process: one sink per open recording; a reply when each one closes.
    When the control process ends (its end of the pipe closes), whatever arrived is
    written and every open file is closed."""
    import signal
    import warnings
    from multiprocessing.connection import Connection

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    warnings.filterwarnings("ignore")  # the URDF importer's clamping notes are not for the user
    from qrobot.record.sink import EpisodeSink

    items, replies = Connection(items_fd, writable=False), Connection(replies_fd, readable=False)
    replies.send((-1, None, 0))  # ready: imports done
    sinks: dict[int, Any] = {}
    errors: dict[int, str] = {}
    while True:
        try:
            rid, kind, item, frames = items.recv()
        except (EOFError, OSError):  # the control process is gone: keep what arrived
            for sink in sinks.values():
                sink.close()
            return
        try:
            if kind == "open":
                sinks[rid] = EpisodeSink(item)
            elif rid in sinks and rid not in errors:
                sinks[rid].handle(kind, item, frames)
        except Exception as exc:
            errors[rid] = f"{type(exc).__name__}: {exc}"
        if kind == "finish":
            sink = sinks.pop(rid, None)
            if sink is not None:
                try:
                    sink.close()
                except Exception as exc:
                    errors.setdefault(rid, f"{type(exc).__name__}: {exc}")
            replies.send((rid, errors.pop(rid, None), getattr(sink, "dropped_frames", 0)))


class _Process:
    """The process-wide writer, started on first use: a fresh interpreter (`python -c`), so
    neither the caller's script nor PyBullet's and torch's thread state are copied into it.
    A feeder thread moves items from the bounded queue into the pipe."""

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        items_r, items_w = os.pipe()
        replies_r, replies_w = os.pipe()
        code = f"from qrobot.record.writer import serve; serve({items_r}, {replies_w})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(items_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=False,
        )
        os.close(items_r)
        os.close(replies_w)
        self.pipe = Connection(items_w, readable=False)
        self.replies = Connection(replies_r, writable=False)
        self.items: queue.Queue[tuple[int, str, Any, dict]] = queue.Queue(maxsize=QUEUE_STEPS)
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.done: dict[int, tuple[str | None, int]] = {}
        self.broken = False
        if not self.replies.poll(START_TIMEOUT):  # a writer still importing would look like one falling behind
            self.proc.kill()
            raise RecordingError("the recording's writer process did not start")
        self.replies.recv()
        threading.Thread(target=self._feed, name="qrobot-recording-feeder", daemon=True).start()

    def _feed(self) -> None:
        while True:
            msg = self.items.get()
            try:
                self.pipe.send(msg)
            except OSError:  # the writer died: the control side notices at its next put
                self.broken = True
            finally:
                self.items.task_done()

    def alive(self) -> bool:
        return not self.broken and self.proc.poll() is None


_WRITER: _Process | None = None
_START_LOCK = threading.Lock()


def _writer() -> _Process:
    global _WRITER
    with _START_LOCK:
        if _WRITER is None or not _WRITER.alive():
            _WRITER = _Process()
        return _WRITER


class Channel:
    """One recording's line to the writer process."""

    def __init__(self, opening: dict[str, Any], frame_room: int | None = FRAME_ROOM) -> None:
        self._w = _writer()
        self.frame_room = frame_room
        self.id = next(self._w.ids)
        self.dropped_frames = 0
        self._send("open", opening, {})

    def put(self, kind: str, item: dict[str, Any], frames: dict[str, np.ndarray] | None = None) -> None:
        """Queue an item; its camera `frames` go along unless the writer is behind."""
        if frames and self.frame_room is not None and self._w.items.qsize() >= self.frame_room:
            item["dropped"] = len(frames)  # recorded beside the step's other data
            self.dropped_frames += len(frames)
            frames = None
        self._send(kind, item, frames or {})

    def finish(self, result: dict[str, Any]) -> None:
        """The last item; returns once the writer has closed the file."""
        self._send("finish", result, {})
        w = self._w
        with w.lock:
            self._wait(w)
        error, _ = w.done.pop(self.id)
        if error is not None:
            raise RecordingError(f"recording failed: {error}")

    def _wait(self, w: _Process) -> None:
        while self.id not in w.done:
            if not w.replies.poll(FINISH_TIMEOUT):
                raise RecordingError("the recording's writer did not finish in time")
            try:
                rid, error, dropped = w.replies.recv()
            except (EOFError, OSError):
                raise RecordingError("the recording's writer process stopped") from None
            w.done[rid] = (error, dropped)

    def _send(self, kind: str, item: Any, frames: dict[str, np.ndarray]) -> None:
        while True:  # waits for room: never drops data, but never waits on a dead writer
            try:
                self._w.items.put((self.id, kind, item, frames), timeout=PUT_TIMEOUT)
                return
            except queue.Full:
                if not self._w.alive():
                    raise RecordingError("the recording's writer process stopped") from None
