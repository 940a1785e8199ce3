"""The writer side of a recording, run in the writer process (`qrobot.record.writer`):
JPEG encoding and every Rerun call. It receives plain data from the control loop and
keeps what a recording needs between steps (trail, buffered scalar columns, the robot model).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import rerun as rr

from qrobot.record.layout import blueprint, frame_view, slug
from qrobot.record.robot_model import RobotModel

LEVELS = {
    "info": rr.TextLogLevel.INFO,
    "warning": rr.TextLogLevel.WARN,
    "error": rr.TextLogLevel.ERROR,
    "critical": rr.TextLogLevel.CRITICAL,
}
TRAJECTORY_EVERY = 10  # steps between re-logs of the growing trajectory strip
FLUSH_EVERY = 10  # steps between flushes to disk
FLUSH_TIMEOUT = 5.0  # (s) the longest a periodic flush may take
TRAIL = [255, 200, 40]
PLURAL = {"box": "boxes", "sphere": "spheres", "cylinder": "cylinders", "capsule": "capsules"}


def _short(values: Any) -> str:
    """A raw or issued vector in an event row, rounded so that it reads."""
    if values is None:
        return "-"
    try:
        return "[" + ", ".join(f"{float(v):.3g}" for v in np.ravel(np.asarray(values, dtype=float))) + "]"
    except (TypeError, ValueError):
        return repr(values)[:80]


class EpisodeSink:
    """One episode's recording stream, fed item by item."""

    def __init__(self, opening: dict[str, Any]) -> None:
        self.rec = rr.RecordingStream(opening["application_id"], recording_id=opening["recording_id"])
        layout = opening["layout"]
        framing = frame_view(np.asarray(layout["lo"]), np.asarray(layout["hi"]), layout["steep"])
        self.rec.save(
            Path(opening["path"]),
            default_blueprint=blueprint(layout["cameras"], layout["command_panels"], framing, layout["foresight"]),
        )
        self.jpeg_quality = opening["jpeg_quality"]
        self.dropped_frames = 0
        self._model: RobotModel | None = None
        self._trail: list[np.ndarray] = []
        self._columns: dict[str, list] = {}
        self._texts: list[tuple] = []
        self._styled: set[str] = set()
        self._written = 0
        self._last = (0, 0.0)

    def handle(self, kind: str, item: Any, frames: dict[str, np.ndarray]) -> None:
        if kind == "step":  # the frames belong to this item's step: its time first
            self._time(item["step"], item["time"])
        elif kind == "start":
            self._time(0, 0.0)
        for entity, img in frames.items():
            self._image(entity, img)
        if kind == "start":
            self._start(item)
        elif kind == "step":
            self._step(item)
        elif kind == "finish":
            self._finish(item)

    def close(self) -> None:
        """Everything still buffered goes out (after a crash of the control loop too)."""
        self._flush_columns()
        self.rec.flush()
        self.rec.disconnect()

    def _image(self, entity: str, img: np.ndarray) -> None:
        if img.ndim == 3:  # JPEG straight from PIL: a third of rr.Image(...).compress()'s cost
            buf = io.BytesIO()
            PIL.Image.fromarray(img).save(buf, format="JPEG", quality=self.jpeg_quality)
            self.rec.log(entity, rr.EncodedImage(contents=buf.getvalue(), media_type="image/jpeg"))
        else:
            self.rec.log(entity, rr.DepthImage(img, meter=1.0))

    def _flush(self) -> None:
        """Blocking (bounded): once this returns, what was logged is on disk."""
        try:
            self.rec.flush(timeout_sec=FLUSH_TIMEOUT)
        except Exception:  # a slow disk: the data still goes out with the next flush
            pass

    def _time(self, step: int, sim_time: float) -> None:
        self.rec.set_time("step", sequence=step)
        self.rec.set_time("sim_time", duration=sim_time)

    def _start(self, head: dict) -> None:
        rec = self.rec
        self._time(0, 0.0)
        rec.log("world/trajectory", rr.LineStrips3D.from_fields(radii=0.006, colors=[TRAIL]), static=True)
        if head["urdf"] is not None:
            self._model = RobotModel(Path(head["urdf"]))
            self._model.log_static(rec)
        self._log_bodies(head["static"], "world/static", static=True)
        rec.log("policy/action", rr.SeriesLines(names=list(head["action_names"])), static=True)
        for title, names in head["command_names"].items():
            rec.log(f"supervisor/command/{slug(title)}", rr.SeriesLines(names=list(names)), static=True)
        rec.log("task/instruction", rr.TextDocument(head["instruction"]))
        rec.log("result", rr.TextDocument("*running…*", media_type="text/markdown"))
        rec.log("supervisor/events", rr.TextLog(f"episode start: {head['instruction']}", level=rr.TextLogLevel.INFO))
        rec.log("supervisor/limits_profile", rr.TextDocument(head["profile"]))
        if head["profile"] != "default":
            text = f"LIMITS PROFILE {head['profile']}: not the robot's safety profile (test only)"
            rec.log("supervisor/events", rr.TextLog(text, level=rr.TextLogLevel.WARN))

    def _step(self, s: dict) -> None:
        n, t = s["step"], s["time"]
        self._time(n, t)
        self._last = (n, t)
        self._log_bodies(s["props"], "world/props")
        self._log_bodies(s["people"], "world/people")
        if self._model is not None:
            self._model.add(n, t, s["joints"], *s["root"])
        self._trail.append(s["tip"])
        if n % TRAJECTORY_EVERY == 0:
            self.rec.log("world/trajectory", rr.LineStrips3D.from_fields(strips=[np.array(self._trail)]))
        for entity, value in s["scalars"].items():
            self._scalar(entity, n, t, value)
        if s.get("action") is not None:
            self._scalar("policy/action", n, t, s["action"])
        for title, values in s.get("command", {}).items():
            self._scalar(f"supervisor/command/{slug(title)}", n, t, values)
        if "stopped" in s:
            self._scalar("supervisor/stopped", n, t, s["stopped"])
        clamps: dict[str, int] = {}
        for rule, reason, severity, raw, issued in s.get("events", []):
            if severity == "info":  # routine: a count per step, not a row
                clamps[rule] = clamps.get(rule, 0) + 1
            else:
                text = f"[{rule}] {reason} | raw={_short(raw)} issued={_short(issued)}"
                self._texts.append((n, t, text, LEVELS.get(severity, rr.TextLogLevel.WARN)))
        for rule, count in clamps.items():
            self._scalar(f"supervisor/clamps/{rule}", n, t, float(count))
        if s.get("dropped"):
            self.dropped_frames += int(s["dropped"])
            self._scalar("recording/dropped_frames", n, t, float(s["dropped"]))
        self._written += 1
        if self._written % FLUSH_EVERY == 0:
            self._flush_columns()
            self._flush()

    def _finish(self, result: dict[str, Any]) -> None:
        self._flush_columns()
        self._time(*self._last)
        self.rec.log("world/trajectory", rr.LineStrips3D.from_fields(strips=[np.array(self._trail)]))
        result = dict(result, dropped_frames=self.dropped_frames)
        ok = result.get("success")
        lines = [f"{k}: {_round(v)}" for k, v in result.items()]
        verdict = "SUCCESS" if ok else "FAILURE"
        self.rec.log(
            "result",
            rr.TextDocument(
                f"**{verdict}** ({result.get('end_reason')})\n\n" + "\n".join(f"- {ln}" for ln in lines),
                media_type="text/markdown",
            ),
        )
        self.rec.log(
            "supervisor/events",
            rr.TextLog(
                f"episode end: {'SUCCESS' if ok else 'failure'} ({result.get('end_reason')})",
                level=rr.TextLogLevel.INFO if ok else rr.TextLogLevel.WARN,
            ),
        )

    def _scalar(self, entity: str, step: int, t: float, value: Any) -> None:
        """Buffered: scalars go out as columns at each flush (one log call per entity)."""
        self._columns.setdefault(entity, []).append((step, t, np.atleast_1d(np.asarray(value, float))))

    def _flush_columns(self) -> None:
        for entity, rows in self._columns.items():
            if not rows:
                continue
            widths = [len(r[2]) for r in rows]
            self.rec.send_columns(
                entity,
                indexes=[
                    rr.TimeColumn("step", sequence=[r[0] for r in rows]),
                    rr.TimeColumn("sim_time", duration=[r[1] for r in rows]),
                ],
                columns=rr.Scalars.columns(scalars=np.concatenate([r[2] for r in rows])).partition(widths),
            )
        self._columns = {}
        if self._model is not None:
            self._model.flush(self.rec)
        if self._texts:
            rows, self._texts = self._texts, []
            # one log call per row: rows sent together as columns are shown with the level of
            # the entity's latest single-row log (the viewer's join), so an ERROR read as INFO
            for step, t, text, level in rows:
                self._time(step, t)
                self.rec.log("supervisor/events", rr.TextLog(text, level=level))
            self._time(*self._last)  # back to the step being written

    def _log_bodies(self, bodies: dict[str, dict[str, list]], entity: str, static: bool = False) -> None:
        first = entity not in self._styled
        self._styled.add(entity)
        for kind, d in bodies.items():
            arch: Any
            if not d["centers"]:
                continue
            centers, quats = np.asarray(d["centers"]), np.asarray(d["quaternions"])
            colors = (np.asarray(d["colors"]) * 255).astype(np.uint8) if first else None
            if kind == "box":
                arch = (
                    rr.Boxes3D(
                        centers=centers,
                        half_sizes=np.asarray(d["sizes"]) / 2,
                        quaternions=quats,
                        colors=colors,
                        fill_mode="solid",
                    )
                    if first
                    else rr.Boxes3D.from_fields(centers=centers, quaternions=quats)
                )
            elif kind == "sphere":
                radii = np.asarray([s[0] for s in d["sizes"]])
                arch = (
                    rr.Ellipsoids3D(
                        centers=centers, half_sizes=np.repeat(radii[:, None], 3, 1), colors=colors, fill_mode="solid"
                    )
                    if first
                    else rr.Ellipsoids3D.from_fields(centers=centers)
                )
            elif kind == "cylinder":  # goal discs, bowls, people: flat-ended, as drawn in PyBullet
                arch = (
                    rr.Cylinders3D(
                        centers=centers,
                        lengths=[s[0] for s in d["sizes"]],
                        radii=[s[1] for s in d["sizes"]],
                        quaternions=quats,
                        colors=colors,
                        fill_mode="solid",
                    )
                    if first
                    else rr.Cylinders3D.from_fields(centers=centers, quaternions=quats)
                )
            else:  # capsules, upright
                base = centers - np.array([[0.0, 0.0, 1.0]]) * np.asarray([[s[0] / 2] for s in d["sizes"]])
                arch = (
                    rr.Capsules3D(
                        translations=base,
                        lengths=[s[0] for s in d["sizes"]],
                        radii=[s[1] for s in d["sizes"]],
                        colors=colors,
                    )
                    if first
                    else rr.Capsules3D.from_fields(translations=base)
                )
            self.rec.log(f"{entity}/{PLURAL[kind]}", arch, static=static)


def _round(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.4g}"
    return v
