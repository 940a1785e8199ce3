"""The operator console in a browser: `qrobot console ENDPOINT` serves a local page (a
Starlette app, assets from this package, no CDN) that shows the agent's state and lets a
person stop, enable and approve.

The server is one console peer (the `console` certificate) and the page its face. Over
one websocket the server pushes the agent's status and camera thumbnails; the page sends
E-STOP (a button and the space bar, sent on pointer-down: nothing waits on a click),
ENABLE and APPROVE. ENABLE is held: while the button is down the page beats a dead-man
heartbeat at 20 Hz; the server holds the agent's dead-man only while those beats keep
coming (none for `DEADMAN_GAP` s, a release, a lost focus or a closed page all let go).
While ENABLE is held the page asks to enable until it first succeeds, never again in that
hold: a stop during it ends motion until the person presses anew.

The page has no login: it listens on 127.0.0.1 only and refuses websockets from other
origins (a page elsewhere cannot drive it through the operator's browser).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import math
import secrets
import signal
import threading
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.bridge.messages import Observation, decode, unpack_arrays
from qrobot.bridge.service import ConsoleClient
from qrobot.bridge.transport import keys

DEADMAN_GAP = 0.25  # s without a page heartbeat (five at 20 Hz; the agent's own operator timeout) before letting go
PUSH_PERIOD = 0.05  # s between status pushes to the page
THUMB_PERIOD = 0.5  # s between camera thumbnails
THUMB_SIDE = 160  # px


class ConsoleState:
    """The dead-man as the pages hold it, and the e-stops they sent. Shared by every page
    connected: any release, or any page closing, lets go for every page until one presses
    anew (a page still beating from before does not hold the robot after another let go)."""

    def __init__(self, client: ConsoleClient) -> None:
        self.client = client
        self.epoch = 0  # counts releases: a hold counts only if it began after the last one
        self._holds: dict[int, tuple[int, int]] = {}  # page -> (its hold number, the epoch it began in)
        self.held_until = 0.0  # monotonic time the dead-man stays held without another beat
        self.estops: list[dict[str, float]] = []  # each press: page time and server receipt (wall s)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watch = threading.Thread(target=self._deadman, daemon=True)
        self._watch.start()

    def beat(self, page: int, hold: int) -> None:
        """A heartbeat of `page`'s hold number `hold` (a new number: a fresh press)."""
        with self._lock:
            mine = self._holds.get(page)
            if mine is None or mine[0] != hold:
                if mine is not None and hold < mine[0]:
                    return  # a beat of an older hold, arriving late
                self._holds[page] = mine = (hold, self.epoch)
            if mine[1] != self.epoch:
                return  # that hold began before someone let go
            self.held_until = time.monotonic() + DEADMAN_GAP
            self.client.deadman.set()

    def release(self, page: int | None = None, hold: int | None = None) -> None:
        with self._lock:
            if page is not None and hold is not None:
                self._holds[page] = (max(hold, self._holds.get(page, (0, 0))[0]), -1)  # that hold is over
            self.epoch += 1
            self.held_until = 0.0
            self.client.deadman.clear()

    def _deadman(self) -> None:
        while not self._stop.wait(0.01):
            if self.client.deadman.is_set() and time.monotonic() > self.held_until:
                self.client.deadman.clear()

    def estop(self) -> None:
        """Stop first; then again every 50 ms (for up to 1 s) until the agent's status shows it."""
        self.client.request("estop", key="estop", detail="browser console")

        def confirm() -> None:
            end = time.monotonic() + 1.0
            while time.monotonic() < end and not self._stop.wait(0.05):
                st = self.client.watch.status
                if st is not None and st.state == "ESTOPPED":
                    return
                self.client.request("estop", key="estop", detail="browser console")

        threading.Thread(target=confirm, daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.release()
        self._watch.join(1)


class Thumbnails:
    """The latest camera frames the robot streams, as small PNG data URLs."""

    def __init__(self, session: Any, robot: str) -> None:
        self.latest: dict[str, str] = {}
        self._made = 0.0
        self._sub = session.declare_subscriber(keys(robot)["observation"], self._on)

    def _on(self, sample: Any) -> None:
        if time.monotonic() - self._made < THUMB_PERIOD:
            return
        msg, _ = decode(sample.payload.to_bytes())
        if not isinstance(msg, Observation):
            return
        self._made = time.monotonic()
        from PIL import Image

        for name, arr in unpack_arrays(msg).items():
            if not name.startswith("images/") or arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] < 3:
                continue
            img = Image.fromarray(np.ascontiguousarray(arr[..., :3]))
            img.thumbnail((THUMB_SIDE, THUMB_SIDE))
            buf = io.BytesIO()
            img.save(buf, format="PNG")
            self.latest[name[len("images/") :]] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()

    def close(self) -> None:
        self._sub.undeclare()


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None  # (a NaN would break the page's JSON)


def status_view(client: ConsoleClient) -> dict[str, Any]:
    """The agent's last status as the page shows it (plain JSON; the page escapes text)."""
    st = client.watch.status
    if st is None:
        return {"state": "no agent", "age": None}
    robot = client.watch.robot_state()
    speed = (
        float(np.linalg.norm(robot["ee_lin_vel"]))
        if "ee_lin_vel" in robot
        else abs(float(robot["base_vel"][0]))
        if "base_vel" in robot
        else None
    )
    pending = client.pending()
    return {
        "state": st.state,
        "latched": st.latched,
        "holder": st.holder,
        "ages": {k: (_finite(v) if v < 1e6 else None) for k, v in st.ages.items()},
        "rejects": list(st.rejects),
        "approval": st.approval,
        "pending": {"digest": pending[0], "task": pending[1]} if pending else None,
        "speed": _finite(speed),
        "safety": {k: _finite(v) for k, v in st.safety.items()},
        "age": time.monotonic() - client.watch.received,
    }


def _asset(name: str) -> str:
    return resources.files("qrobot.bridge").joinpath("console_static", name).read_text()


def make_app(
    client: ConsoleClient, thumbs: Thumbnails | None, robot: str, port: int, token: str
) -> tuple[Any, ConsoleState]:
    """The Starlette app serving the page and its websocket, and the shared state. Only
    requests addressed to this machine's loopback name and port are served (a DNS-rebound
    name is refused), and the websocket needs this launch's token (other local users do not
    have it: it is printed to the operator's terminal, in the page address's fragment)."""
    from starlette.applications import Starlette
    from starlette.responses import HTMLResponse, Response
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    state = ConsoleState(client)
    hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
    pages = iter(range(1, 2**62))

    def ours(headers: Any) -> bool:
        return headers.get("host", "") in hosts

    async def page(request: Any) -> Response:
        if not ours(request.headers):
            return Response(status_code=421)
        return HTMLResponse(_asset("index.html").replace("{{robot}}", robot))

    async def icon(request: Any) -> Response:
        return Response(status_code=204)  # no icon: browsers ask for one anyway

    async def asset(request: Any) -> Response:
        name = request.path_params["name"]
        if not ours(request.headers) or name not in ("console.js", "console.css"):
            return Response(status_code=404)
        kind = "text/javascript" if name.endswith(".js") else "text/css"
        return Response(_asset(name), media_type=kind)

    async def socket(ws: WebSocket) -> None:
        origin = ws.headers.get("origin", "")
        given = ws.query_params.get("token", "")
        if (
            not ours(ws.headers)
            or origin not in {f"http://{h}" for h in hosts}
            or not secrets.compare_digest(given, token)
        ):
            await ws.close(code=1008)  # another site (or a rebound name), or not this launch's page
            return
        await ws.accept()
        me = next(pages)
        replies: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

        async def ask(op: str, detail: str) -> None:  # (never awaited by the reading loop)
            reply = await asyncio.to_thread(client.request, op, "request", detail)
            ok, why = (reply.ok, reply.reason) if reply is not None else (False, "no answer")
            await replies.put({"reply": op, "ok": ok, "reason": why})

        async def push() -> None:
            sent_thumbs = 0.0
            while True:
                while not replies.empty():
                    await ws.send_text(json.dumps(replies.get_nowait()))
                view = status_view(client)
                if thumbs is not None and time.monotonic() - sent_thumbs > THUMB_PERIOD:
                    view["thumbs"], sent_thumbs = dict(thumbs.latest), time.monotonic()
                view["held"] = client.deadman.is_set()
                await ws.send_text(json.dumps(view, allow_nan=False))
                await asyncio.sleep(PUSH_PERIOD)

        pusher = asyncio.create_task(push())
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                frame = await ws.receive()
                if frame.get("type") == "websocket.disconnect":
                    break
                msg = _message(frame.get("text"))  # (binary frames, junk: ignored)
                op, hold = msg.get("op"), msg.get("hold")
                if op == "estop":
                    state.estop()  # the stop first, then the bookkeeping
                    state.estops.append({"pressed": _seconds(msg.get("t")), "sent": time.time()})
                elif op == "beat" and isinstance(hold, int):
                    state.beat(me, hold)
                elif op == "release":
                    state.release(me, hold if isinstance(hold, int) else None)
                elif op in ("enable", "reset", "approve"):
                    detail = str(msg.get("digest", ""))[:64] if op == "approve" else ""
                    task = asyncio.create_task(ask(op, detail))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except WebSocketDisconnect:
            pass
        finally:
            state.release()  # the page is gone: nobody holds the dead-man
            pusher.cancel()

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/favicon.ico", icon),
            Route("/static/{name}", asset),
            WebSocketRoute("/ws", socket),
        ],
    )
    return app, state


def _seconds(ms: object) -> float:
    """The page's press time (wall ms) in s; now if it sent none that makes sense."""
    try:
        t = float(ms) / 1000 if isinstance(ms, (int, float)) and not isinstance(ms, bool) else math.nan
    except OverflowError:
        t = math.nan
    return t if math.isfinite(t) else time.time()


def _message(text: object) -> dict[str, Any]:
    """One message from the page as a dict ({} for anything else: it is ignored)."""
    if not isinstance(text, str) or len(text) > 4096:
        return {}
    try:
        msg = json.loads(text)
    except ValueError:
        return {}
    return msg if isinstance(msg, dict) else {}


class ConsoleServer:
    """The page's server in a background thread (uvicorn on 127.0.0.1:`port`, 0: a free one)."""

    def __init__(self, session: Any, robot: str, port: int = 0) -> None:
        import socket

        import uvicorn

        sock = socket.create_server(("127.0.0.1", port))
        self.port = sock.getsockname()[1]
        self.token = secrets.token_urlsafe(24)
        self.client = ConsoleClient(session, robot)
        self.thumbs = Thumbnails(session, robot)
        self.app, self.state = make_app(self.client, self.thumbs, robot, self.port, self.token)
        self.url = f"http://127.0.0.1:{self.port}/#{self.token}"  # (a fragment never leaves the browser)
        cfg = uvicorn.Config(self.app, log_level="warning", ws="websockets-sansio", lifespan="off")
        self._server = uvicorn.Server(cfg)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.state.close()
        self._server.should_exit = True
        self._thread.join(5)
        self.thumbs.close()
        self.client.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("connect", help="the agent's Zenoh endpoint, tls/HOST:PORT")
    p.add_argument("--keys", type=Path, required=True, help="directory from `qrobot keys init` (console.pem, ca.pem)")
    p.add_argument("--name", default="robot", help="the robot's name (the agent's --name)")
    p.add_argument("--port", type=int, default=8080, help="local HTTP port of the page (0: a free one); 127.0.0.1 only")


def serve(args: argparse.Namespace) -> int:
    """`qrobot console`: prints `console http://127.0.0.1:PORT/` and serves until SIGTERM/Ctrl-C."""
    import zenoh

    from qrobot.bridge.transport import config
    from qrobot.errors import QrobotError

    if not 0 <= args.port < 65536:
        raise QrobotError(f"console --port: {args.port} (0..65535 accepted; 0: a free one)")
    session = zenoh.open(config("console", args.keys, connect=args.connect))
    try:
        server = ConsoleServer(session, args.name, args.port)
    except OSError as exc:
        session.close()
        raise QrobotError(f"console --port: cannot listen on 127.0.0.1:{args.port} ({exc.strerror})") from None
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"console {server.url} for qrobot/{args.name} at {args.connect}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()  # (the page's dead-man goes with it: the robot stops)
        session.close()
    return 0
