"""Replay an agent's recorded session against a simulated robot (`qrobot agent-replay`):
the same supervisor, fed period by period the actions the agent executed, with the same
halts and new episodes, so a session's motion can be reproduced and inspected offline.

Commands themselves cannot be replayed (a new agent grants a new lease, epoch and nonce:
replay protection is the point); what the agent executed can.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.bridge.robot_link import LINK_VERSION, Halt
from qrobot.errors import QrobotError
from qrobot.safety.command import Stop

REPLAYED = ("plan", "halt", "reset", "missed")


MAX_GAP = 600  # periods between two recorded plans that a replay waits out (a minute at 10 Hz)


def _record(record: object) -> dict[str, Any] | None:
    """One audit line checked field by field: a replayable record, None for other kinds;
    ValueError for anything malformed."""
    if not isinstance(record, dict):
        raise ValueError("not an object")
    kind = record.get("kind")
    if kind not in REPLAYED:
        return None
    t = record["t"]
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise ValueError("t")
    out: dict[str, Any] = {"kind": kind, "t": float(t)}
    if kind == "reset":
        seed = record["seed"]
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError("seed")
        out["seed"] = seed
    elif kind == "halt":
        out["why"] = str(record.get("why", ""))[:120]
    elif kind == "missed":
        period = record["period"]
        if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period < 2**62:
            raise ValueError("period")
        out["period"] = period
    else:
        period, action, episode = record["period"], record["action"], record.get("episode")
        if isinstance(period, bool) or not isinstance(period, int) or not 0 <= period < 2**62:
            raise ValueError("period")
        if (
            not isinstance(action, list)
            or not 0 < len(action) <= 32
            or not all(isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) for a in action)
        ):
            raise ValueError("action")
        out.update(
            period=period, action=np.asarray(action, np.float64), episode=episode if isinstance(episode, int) else None
        )
    return out


def read_session(path: Path) -> list[dict[str, Any]]:
    """The replayable records of an audit log, in time order (a bad line is a user error)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise QrobotError(f"agent-replay: cannot read {path} as an audit log ({exc})") from None
    out = []
    for n, line in enumerate(lines, 1):
        try:
            record = _record(json.loads(line))
        except (ValueError, KeyError, TypeError, RecursionError):
            raise QrobotError(f"agent-replay: {path}:{n} is not an audit record of `qrobot agent`") from None
        if record is not None:
            out.append(record)
    if not any(r["kind"] == "plan" for r in out):
        raise QrobotError(f"agent-replay: {path} holds no executed plans")
    return sorted(out, key=lambda r: r["t"])


def replay(records: list[dict[str, Any]], adapter: Any, supervisor: Any, timeout: float = 2.0) -> dict[str, Any]:
    """Drive the robot behind `adapter` with the recorded plans; returns counts and the
    replay robot's period for each recorded one (`periods`: original -> replay)."""
    supervisor.bind(adapter)
    periods: dict[int, int] = {}
    counts = {"plans": 0, "halts": 0, "resets": 0, "refused": 0, "missed": 0, "late": 0}
    last_plan: int | None = None
    fresh: dict | None = None  # a new world's first state, which its first plan uses
    sent: list[int] = []  # the robot's brake count when the last plan went out

    def next_state() -> dict:
        st = adapter.state(timeout)
        if st is None:
            raise ConnectionError("the robot stopped streaming its state")
        if sent and adapter.last.watchdog_brakes > sent.pop():
            counts["late"] += 1  # this replay's plan missed its period: the robot braked it instead
        return st

    for _ in range(3):  # a robot that refused the pairing drops the link within a period
        next_state()

    def new_world(seed: int) -> dict:
        if adapter.last is None:
            next_state()
        episode = adapter.last.episode
        adapter.reset(seed)
        st = next_state()
        while adapter.last.episode == episode:  # until the new world's first state
            st = next_state()
        supervisor.reset()
        counts["resets"] += 1
        return st

    # A reset takes effect at the robot's next period: plans the agent made for the old
    # world's last states (recorded after the reset, with the old episode) run there first.
    pending: dict | None = None
    episode: int | None = None  # the original session's robot episode of the last plan
    missed = {r["period"] for r in records if r["kind"] == "missed"}  # plans the robot never executed
    for r in records:
        if r["kind"] == "missed":
            continue
        if r["kind"] == "reset":
            if pending is not None:
                fresh, last_plan = new_world(int(pending["seed"])), None
            pending = r
            continue
        if r["kind"] == "halt":
            adapter.link.send(Halt(version=LINK_VERSION, reason=str(r.get("why", ""))[:120]))
            counts["halts"] += 1
            continue
        if pending is not None and r.get("episode") != episode:
            fresh, last_plan, pending = new_world(int(pending["seed"])), None, None
        episode = r.get("episode")
        skip = 0 if last_plan is None else min(MAX_GAP, max(0, int(r["period"]) - last_plan - 1))
        st = fresh if fresh is not None else next_state()
        for _ in range(skip):  # periods the agent left to the robot's watchdog stay unplanned
            st = next_state()
        fresh = None
        out = supervisor.filter(r["action"], st)
        if r["period"] in missed:  # late in the original: the robot's watchdog braked that period
            counts["missed"] += 1
        elif adapter.send(out, supervisor.last_action) is False or isinstance(out, Stop):
            counts["refused"] += 1  # the supervisor did not pass it as recorded (it braked instead)
        else:
            sent.append(int(adapter.last.watchdog_brakes))
        periods[int(r["period"])] = adapter.period
        last_plan = int(r["period"])
        counts["plans"] += 1
    if pending is not None:
        new_world(int(pending["seed"]))
    if sent:
        next_state()  # whether the last plan made its period
    return dict(counts, periods=periods, first=min(periods.values()), last=max(periods.values()))
