"""Render a recording to PNG with the real Rerun viewer, without a display.

A headless viewer (`rerun --headless`) opens the file; once it has loaded, the time cursor
goes to the last step and the viewer paints a screenshot. Rendering needs a Vulkan
adapter: on a machine without a GPU, Mesa's lavapipe (Debian `mesa-vulkan-drivers`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError

LOAD_TIMEOUT = 60.0  # (s) for the viewer to start and load one episode


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _viewer() -> str:
    found = shutil.which("rerun", path=str(Path(sys.executable).parent)) or shutil.which("rerun")
    if found is None:
        raise QrobotError("the Rerun viewer (`rerun`, from rerun-sdk) is not on PATH")
    return found


def has_renderer() -> bool:
    """A Vulkan driver the headless viewer can paint with (lavapipe counts); elsewhere
    than Linux the platform's own graphics API serves."""
    if not sys.platform.startswith("linux"):
        return True
    return any(
        Path(d).is_dir() and any(Path(d).glob("*.json")) for d in ("/usr/share/vulkan/icd.d", "/etc/vulkan/icd.d")
    )


def snapshot(rrd: Path, out: Path, step: int | None = None) -> dict[str, list[str]]:
    """Write `out` (PNG) showing `rrd` at `step` (default: its last step). Returns the
    viewer's report of each view: {name: [what failed to visualize]} (empty lists when healthy)."""
    from rerun.experimental import ViewerClient

    from qrobot.record.readback import summarize_rrd

    summary = summarize_rrd(rrd)  # one clear line for a missing or unreadable file
    last = int(summary["steps"])
    if step is not None and not 0 <= step <= last:
        raise QrobotError(f"snapshot --step: {step} is outside the recording (steps 0-{last})")
    out = Path(out)
    try:  # before rendering: a picture that cannot be written is one line, not a wasted render
        out.parent.mkdir(parents=True, exist_ok=True)
        out.touch()
    except OSError as exc:
        raise QrobotError(f"snapshot: {out}: cannot be written ({exc.strerror})") from None
    if not has_renderer():
        raise QrobotError(
            "snapshot: no Vulkan driver to render with; install one (Debian: apt-get install mesa-vulkan-drivers)"
        )
    port = _free_port()
    runtime = tempfile.mkdtemp(prefix="qrobot-xdg-")
    env = dict(
        os.environ, WGPU_BACKEND="vulkan", XDG_RUNTIME_DIR=runtime, RUST_LOG="error"
    )  # GL cannot render offscreen here
    cmd = [_viewer(), "--headless", "--hide-welcome-screen", "--port", str(port), "--bind", "127.0.0.1"]
    proc = subprocess.Popen(  # its own group: `rerun` on PATH is a wrapper that starts the viewer binary
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    viewer = None
    try:
        viewer = _wait_up(ViewerClient, f"rerun+http://127.0.0.1:{port}/proxy", proc)
        viewer.open(str(Path(rrd).resolve()))
        _wait_loaded(viewer)
        viewer.set_time("step", sequence=last if step is None else step, play_state="paused")
        time.sleep(1.0)  # a few frames for meshes and images at the new time
        out.write_bytes(viewer.take_screenshot())
        return {v.name: [str(r) for r in v.reports] for v in viewer.get_state().views}
    finally:
        with contextlib.suppress(ProcessLookupError):  # the wrapper and the viewer it started
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        shutil.rmtree(runtime, ignore_errors=True)


def _wait_up(client: Any, url: str, proc: subprocess.Popen) -> Any:
    """A client of the viewer once it answers."""
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        if proc.poll() is not None:
            raise QrobotError(f"snapshot: the headless viewer exited ({proc.returncode}) before it could render")
        try:
            viewer = client.connect(url)
            viewer.get_state()
            return viewer
        except Exception as exc:
            if time.monotonic() > deadline:
                raise QrobotError(f"snapshot: the headless viewer did not start ({exc})") from None
            time.sleep(0.3)


def _wait_loaded(viewer: Any) -> Any:
    deadline = time.monotonic() + LOAD_TIMEOUT
    while time.monotonic() < deadline:
        state = viewer.get_state()
        if state.recordings and not state.loading and state.views:
            return state
        time.sleep(0.3)
    raise QrobotError("snapshot: the viewer did not finish loading the recording")
