"""Render a recording to PNG with the real Rerun viewer, without a display.

A headless viewer (`rerun --headless`) opens the file; once it has loaded, the time cursor
goes to the last step and the viewer paints a screenshot. Rendering needs a Vulkan
adapter: on a machine without a GPU, Mesa's lavapipe (Debian `mesa-vulkan-drivers`).
"""

from __future__ import annotations

import os
import shutil
import socket
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
    if not has_renderer():
        raise QrobotError(
            "snapshot: no Vulkan driver to render with; install one (Debian: apt-get install mesa-vulkan-drivers)"
        )
    port = _free_port()
    env_before = {k: os.environ.get(k) for k in ("WGPU_BACKEND", "XDG_RUNTIME_DIR")}
    runtime = tempfile.mkdtemp(prefix="qrobot-xdg-")
    os.environ["WGPU_BACKEND"] = "vulkan"  # the GL path cannot render offscreen here
    os.environ["XDG_RUNTIME_DIR"] = runtime
    try:
        viewer = ViewerClient.spawn(headless=True, port=port, executable_path=_viewer(), hide_welcome_screen=True)
    finally:
        for k, v in env_before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    try:
        _wait_up(viewer)
        viewer.open(str(Path(rrd).resolve()))
        _wait_loaded(viewer)
        last = summary["steps"] if step is None else step
        viewer.set_time("step", sequence=int(last), play_state="paused")
        time.sleep(1.0)  # a few frames for meshes and images at the new time
        png = viewer.take_screenshot()
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_bytes(png)
        state = viewer.get_state()
        return {v.name: [str(r) for r in v.reports] for v in state.views}
    finally:
        try:
            viewer.quit(timeout=5.0)
        except Exception:  # already gone: nothing to stop
            pass
        shutil.rmtree(runtime, ignore_errors=True)


def _wait_up(viewer: Any) -> None:
    deadline = time.monotonic() + LOAD_TIMEOUT
    while True:
        try:
            viewer.get_state()
            return
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
