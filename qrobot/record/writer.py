"""Recording off the control loop: a writer process does the JPEG encoding and the Rerun
logging (`qrobot.record.sink`), so they run on another core instead of sharing the
control loop's interpreter (PyBullet holds the GIL while it steps and renders, so a
thread would barely overlap with it).

The control loop writes each step as plain data straight into a pipe (enlarged to 1 MiB,
so a step does not wait for the reader); camera frames are copied into a ring in shared
memory and only their place goes through the pipe (a pipe copies at a few hundred MB/s
here, which made big frames cost the loop more than the rest of recording). The writer
counts the items it has written in the same shared file; the difference is the backlog. Once FRAME_ROOM items are behind, a
step's camera frames are dropped (counted, and recorded as `recording/dropped_frames`);
events, commands and the result are never dropped: at QUEUE_STEPS behind the control loop
waits instead. `finish` waits until the writer has written the episode and closed the file.

Crash window: what was handed over sits in the pipe, so when the control process is
SIGKILLed the writer still reads it, writes it and closes the file. What is lost is at
most the one item being handed over when the kill came.

One writer process serves every recording of a process, one after another or at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np

from qrobot.errors import QrobotError

QUEUE_STEPS = 32  # items the writer may lag before the control loop waits
FRAME_ROOM = 8  # items behind at which camera frames are dropped
PIPE_BYTES = 1 << 20  # Linux's default ceiling for an unprivileged pipe
HEADER = 4096  # the shared file: the writer's item count, then the frame ring
RING_BYTES = 32 << 20  # frames of at least FRAME_ROOM steps of any scenario here
START_TIMEOUT = 60.0  # (s) for the writer process to import what it needs
FINISH_TIMEOUT = 120.0  # (s) for the writer to write out an episode's backlog
STALL_TIMEOUT = 60.0  # (s) a full queue that does not move: the writer is stuck
_COUNT = struct.Struct("<q")


class RecordingError(QrobotError):
    """The writer could not write a recording (disk full, writer process gone)."""


def serve(items_fd: int, replies_fd: int, counter: str) -> None:
    """The writer process: one sink per open recording; a reply when each one closes.
    When the control process ends (its end of the pipe closes), whatever arrived is
    written and every open file is closed."""
    import signal
    import warnings
    from multiprocessing.connection import Connection

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # signals to the whole group: the
        signal.signal(sig, signal.SIG_IGN)  # parent decides; its end closing the pipe ends this
    warnings.filterwarnings("ignore")  # the URDF importer's clamping notes are not for the user
    from qrobot.record.sink import EpisodeSink

    with open(counter, "r+b") as f:
        done = mmap.mmap(f.fileno(), HEADER + RING_BYTES)
    items, replies = Connection(items_fd, writable=False), Connection(replies_fd, readable=False)
    replies.send((-1, None, 0))  # ready: imports done
    sinks: dict[int, Any] = {}
    errors: dict[int, str] = {}
    written = 0
    while True:
        try:
            rid, kind, item, places = items.recv()
            frames = {  # copied out: Rerun may keep a reference after `log` returns
                entity: np.frombuffer(done, dtype=dtype, count=int(np.prod(shape)), offset=off).reshape(shape).copy()
                for entity, (off, shape, dtype) in places.items()
            }
        except Exception:  # the control process is gone (or cut off mid-item): keep what arrived
            for sink in sinks.values():
                with contextlib.suppress(Exception):
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
        written += 1
        _COUNT.pack_into(done, 0, written)


class _Process:
    """The process-wide writer, started on first use: a fresh interpreter (`python -c`), so
    neither the caller's script nor PyBullet's and torch's thread state are copied into it."""

    def __init__(self) -> None:
        from multiprocessing.connection import Connection

        fd, counter = tempfile.mkstemp(prefix="qrobot-writer-")
        os.ftruncate(fd, HEADER + RING_BYTES)  # sparse: pages appear as frames are written
        self.done = mmap.mmap(fd, HEADER + RING_BYTES)
        os.close(fd)
        self.ring_at = HEADER  # where the next frame goes
        self.in_flight: list[tuple[int, int, int]] = []  # (item index, start, end) not yet written out
        items_r, items_w = os.pipe()
        replies_r, replies_w = os.pipe()
        with contextlib.suppress(OSError):  # a smaller pipe only means waiting sooner
            fcntl.fcntl(items_w, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        code = f"from qrobot.record.writer import serve; serve({items_r}, {replies_w}, {counter!r})"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code],
            pass_fds=(items_r, replies_w),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(items_r)
        os.close(replies_w)
        self.pipe = Connection(items_w, readable=False)
        self.replies = Connection(replies_r, writable=False)
        self.sent = 0
        self.ids = itertools.count()
        self.lock = threading.Lock()
        self.finished: dict[int, tuple[str | None, int]] = {}
        try:
            if not self.replies.poll(START_TIMEOUT):  # a writer still importing would look like one falling behind
                self.proc.kill()
                raise RecordingError("the recording's writer process did not start")
            self.replies.recv()
        except (EOFError, OSError):
            raise RecordingError("the recording's writer process did not start") from None
        finally:
            os.unlink(counter)  # both ends have it mapped

    def backlog(self) -> int:
        return self.sent - _COUNT.unpack_from(self.done, 0)[0]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def place(self, frames: dict[str, np.ndarray]) -> dict[str, tuple[int, tuple[int, ...], str]] | None:
        """Copy frames into the ring; their places, or None when the ring has no free room
        (frames of items the writer has not reached yet are never overwritten)."""
        written = _COUNT.unpack_from(self.done, 0)[0]
        self.in_flight = [r for r in self.in_flight if r[0] >= written]
        arrays = {k: np.ascontiguousarray(v) for k, v in frames.items()}
        need = sum(a.nbytes for a in arrays.values())
        start = self.ring_at if self.ring_at + need <= HEADER + RING_BYTES else HEADER
        end = start + need
        if end > HEADER + RING_BYTES or any(s < end and start < e for _, s, e in self.in_flight):
            return None
        places, at = {}, start
        for entity, a in arrays.items():
            np.frombuffer(self.done, dtype=np.uint8, count=a.nbytes, offset=at)[:] = a.reshape(-1).view(np.uint8)
            places[entity] = (at, a.shape, a.dtype.str)
            at += a.nbytes
        self.in_flight.append((self.sent, start, end))
        self.ring_at = end
        return places


_WRITER: _Process | None = None
_START_LOCK = threading.Lock()


def _forget_in_fork() -> None:
    """A child made by fork() (multiprocessing's default here, DataLoader workers) must not
    hold the pipe open: the writer would never see the parent end. It starts its own."""
    global _WRITER, _START_LOCK
    _START_LOCK = threading.Lock()  # another thread may have held it at the fork
    if _WRITER is not None:
        with contextlib.suppress(OSError):
            _WRITER.pipe.close()
            _WRITER.replies.close()
        _WRITER = None


os.register_at_fork(after_in_child=_forget_in_fork)


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
        """Hand an item over; its camera `frames` go along unless the writer is behind."""
        self._send(kind, item, frames or {})

    def finish(self, result: dict[str, Any]) -> None:
        """The last item; returns once the writer has closed the file."""
        self._send("finish", result, {})
        w = self._w
        with w.lock:
            while self.id not in w.finished:
                if not w.replies.poll(FINISH_TIMEOUT):
                    raise RecordingError("the recording's writer did not finish in time")
                try:
                    rid, error, dropped = w.replies.recv()
                except (EOFError, OSError):
                    raise RecordingError("the recording's writer process stopped") from None
                w.finished[rid] = (error, dropped)
        error, _ = w.finished.pop(self.id)
        if error is not None:
            raise RecordingError(f"recording failed: {error}")

    def _send(self, kind: str, item: Any, frames: dict[str, np.ndarray]) -> None:
        w = self._w
        since, moved = time.monotonic(), w.backlog()
        while w.backlog() >= QUEUE_STEPS:  # waits for room: never drops data, but never waits
            if not w.alive():  # on a dead writer, nor forever on a stuck one
                raise RecordingError("the recording's writer process stopped")
            if w.backlog() != moved:
                since, moved = time.monotonic(), w.backlog()
            elif time.monotonic() - since > STALL_TIMEOUT:
                raise RecordingError(f"the recording's writer has not moved for {STALL_TIMEOUT:.0f} s")
            time.sleep(0.001)
        with w.lock:
            places: dict[str, tuple[int, tuple[int, ...], str]] | None = {}
            if frames:
                behind = self.frame_room is not None and w.backlog() >= self.frame_room
                places = None if behind else w.place(frames)
                if places is None and self.frame_room is None and sum(f.nbytes for f in frames.values()) > RING_BYTES:
                    raise RecordingError(f"one step's camera frames exceed the {RING_BYTES >> 20} MiB frame ring")
                since = time.monotonic()
                while places is None and self.frame_room is None:  # lossless: wait for ring room
                    if not w.alive() or time.monotonic() - since > STALL_TIMEOUT:
                        raise RecordingError("the recording's writer process stopped")
                    time.sleep(0.001)
                    places = w.place(frames)
                if places is None:
                    item["dropped"] = len(frames)  # recorded beside the step's other data
                    self.dropped_frames += len(frames)
                    places = {}
            try:
                w.pipe.send((self.id, kind, item, places))
            except OSError:
                raise RecordingError("the recording's writer process stopped") from None
            w.sent += 1
