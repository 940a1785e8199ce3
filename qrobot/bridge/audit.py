"""The agent's session record: one JSONL line per event as it happens (flushed, so a
killed agent loses at most the line being written) and the same session in a Rerun
recording a person opens in the viewer.

Records (all with `t`, the agent's clock in seconds):
- the core's audit: `state`, `lease`, `reject`, `*_refused`, `deadline`, `episode`, ...
  (`detail` says what and why);
- `plan`: once per robot period the agent planned, the action it gave the supervisor
  (`action`), the robot period, the episode, the measured speed, the operator
  heartbeat's and the lease retain's ages;
- `halt`: a stop sent at once between periods (`why`, `period`);
- `command`: an accepted command chunk (`seq`, `entries`);
- `reset`: a new episode of a simulated robot (`seed`);
- `missed`: a plan the robot never executed (late for its window): its watchdog braked.
`qrobot agent-replay` reads the `plan`, `halt` and `reset` records back and drives a
simulated robot through the same supervisor with them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import IO, Any

import rerun as rr
import rerun.blueprint as rrb

ACTION_NAMES = {"diffbot": ("v", "omega", "stop"), "panda": ("dx", "dy", "dz", "dyaw", "gripper")}
WARN_KINDS = ("reject", "deadline", "halt", "missed")


def _level(kind: str, detail: str) -> rr.TextLogLevel:
    if kind == "state" and ("ESTOPPED" in detail.split(":")[0] or "FAULT" in detail.split(":")[0]):
        return rr.TextLogLevel.ERROR
    if kind in WARN_KINDS or kind.endswith("_refused"):
        return rr.TextLogLevel.WARN
    return rr.TextLogLevel.INFO


class SessionAudit:
    def __init__(self, jsonl: Path, rrd: Path | None, robot: str, name: str) -> None:
        self._file: IO[str] = Path(jsonl).open("a")
        self.names = ACTION_NAMES.get(robot, ())
        self.rec: rr.RecordingStream | None = None
        if rrd is not None:
            self.rec = rr.RecordingStream("qrobot-agent", recording_id=f"agent-{name}-{int(time.time())}")
            self.rec.save(
                str(rrd),
                default_blueprint=rrb.Blueprint(
                    rrb.Vertical(
                        rrb.TextLogView(origin="agent/events", name="agent events (rejects, halts, state, lease)"),
                        rrb.Horizontal(
                            rrb.TimeSeriesView(origin="agent/action", name="executed action (supervisor input)"),
                            rrb.TimeSeriesView(origin="agent/ages", name="heartbeat and lease ages (s)"),
                            rrb.TimeSeriesView(origin="robot", name="robot speed"),
                        ),
                    )
                ),
            )

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(dict(record, wall=time.time())) + "\n")
        if self.rec is not None:
            self._log(record)

    def flush(self) -> None:
        self._file.flush()

    def _log(self, r: dict[str, Any]) -> None:
        rec = self.rec
        assert rec is not None
        rec.set_time("agent_time", duration=float(r["t"]))
        kind = r["kind"]
        if kind == "plan":
            for name, value in zip(self.names, r["action"]):
                rec.log(f"agent/action/{name}", rr.Scalars(float(value)))
            rec.log("agent/ages/operator", rr.Scalars(min(float(r["operator_age"]), 10.0)))
            rec.log("agent/ages/lease", rr.Scalars(min(float(r["lease_age"]), 10.0)))
            rec.log("robot/speed", rr.Scalars(float(r["speed"])))
            return
        if kind == "command":
            rec.log("agent/commands/entries", rr.Scalars(float(r["entries"])))
            return
        text = {
            "halt": lambda: f"halt: {r['why']}",
            "reset": lambda: f"new episode, seed {r['seed']}",
            "missed": lambda: f"plan for period {r['period']} too late: the robot's watchdog braked",
        }.get(kind, lambda: f"{kind}: {r.get('detail', '')}")()
        rec.log("agent/events", rr.TextLog(text, level=_level(kind, str(r.get("detail", "")))))

    def close(self) -> None:
        self._file.close()
        if self.rec is not None:
            self.rec.flush()
            self.rec.disconnect()
