"""One Rerun recording per episode: cameras, the 3D scene, the policy's raw action,
the command the supervisor issued, safety events, metrics and the result.

Layout of a recording (timelines `step` and `sim_time`):
    cameras/<name>            JPEG camera frames (and <name>_depth when configured)
    world/static, world/props primitives of the scene (props move every step)
    world/people              capsules
    world/robot/links         the chain through every link origin; world/robot/base (mobile base box)
    world/trajectory          end-effector or base path
    task/instruction          text
    policy/action             raw action (one series per component)
    supervisor/command        issued command values; supervisor/events: TextLog
    metrics/<name>            scalars: distance to goal, speed, min person clearance, reward
    result                    final text document (success, SPL, end reason)
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import rerun as rr
import rerun.blueprint as rrb

from qrobot.safety.command import SafeCommand, Stop

LEVELS = {
    "info": rr.TextLogLevel.INFO,
    "warning": rr.TextLogLevel.WARN,
    "error": rr.TextLogLevel.ERROR,
    "critical": rr.TextLogLevel.CRITICAL,
}
TRAJECTORY_EVERY = 10  # steps between re-logs of the growing trajectory strip
FLUSH_EVERY = 10  # steps between flushes to disk (the crash-loss window)
FLUSH_TIMEOUT = 5.0  # (s) the longest a periodic flush may hold the control loop


def blueprint(cameras: list[str], foresight: int = 0) -> rrb.Blueprint:
    """3D view, camera views, time series and the supervisor's event log (and, with
    foresight of horizon H, the scene frame beside its predictions)."""
    cams = [rrb.Spatial2DView(origin=f"cameras/{c}", name=c) for c in cameras]
    if foresight:
        cams += [
            rrb.Spatial2DView(origin=f"foresight/{n}", name=n.replace("_", " "))
            for n in ("actual", "predicted_h1", f"predicted_h{foresight}")
        ]
        cams.append(rrb.TimeSeriesView(origin="foresight", name="foresight"))
    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial3DView(origin="world", name="scene"),
                rrb.TextLogView(origin="supervisor/events", name="safety events"),
            ),
            rrb.Vertical(
                rrb.Horizontal(*cams),
                rrb.TimeSeriesView(origin="metrics", name="metrics"),
                rrb.TimeSeriesView(origin="policy", name="raw action"),
                rrb.TimeSeriesView(origin="supervisor/command", name="issued command"),
            ),
            column_shares=[3, 2],
        )
    )


class EpisodeRecorder:
    """Streams one episode to `path` (flushed every few steps, finished with a footer)."""

    def __init__(self, path: Path, scenario: str, episode_id: str, jpeg_quality: int = 75) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.rec = rr.RecordingStream(f"qrobot-{scenario}", recording_id=episode_id)
        self.jpeg_quality = jpeg_quality
        self.step = 0
        self.events_logged = 0
        self.trail: list[np.ndarray] = []
        self.dynamic: list[str] = []
        self.finished = False
        self._started = False
        self._styled: set[str] = set()
        self._vis: dict[str, list[dict]] = {}
        self._columns: dict[str, list] = {}
        self._texts: list[tuple] = []
        self._now = 0.0

    # ---------------------------------------------------------------- helpers
    def _time(self, step: int, sim_time: float) -> None:
        self._now = float(sim_time)
        self.rec.set_time("step", sequence=step)
        self.rec.set_time("sim_time", duration=float(sim_time))

    def _jpeg(self, entity: str, img: np.ndarray) -> None:
        """JPEG straight from PIL: a third of rr.Image(...).compress()'s cost."""
        buf = io.BytesIO()
        PIL.Image.fromarray(img).save(buf, format="JPEG", quality=self.jpeg_quality)
        self.rec.log(entity, rr.EncodedImage(contents=buf.getvalue(), media_type="image/jpeg"))

    def _foresight(self, view: dict) -> None:
        """The scene frame beside what the world model predicted for it 1 and H steps
        earlier, and the predicted collision probability of the policy's command."""
        self._jpeg("foresight/actual", view["actual"])
        for h, pred in view["predicted"].items():
            self._jpeg(f"foresight/predicted_h{h}", pred)
        self._scalar("foresight/collision_prob", view["probability"])
        self._scalar("foresight/speed_scale", view["scale"])

    def _images(self, obs: dict) -> None:
        for name, img in obs.get("images", {}).items():
            if img.ndim == 3:
                self._jpeg(f"cameras/{name}", img)
            else:
                self.rec.log(f"cameras/{name}", rr.DepthImage(img, meter=1.0))

    def _bodies(self, env: Any, names: list[str], entity: str) -> None:
        """Primitives of `names`. Sizes and colours are logged with the first frame;
        later frames send only positions and orientations (a fraction of the cost)."""
        boxes: dict[str, list] = {"centers": [], "half_sizes": [], "quaternions": [], "colors": []}
        caps: dict[str, list] = {"translations": [], "lengths": [], "radii": [], "colors": []}
        balls: dict[str, list] = {"centers": [], "half_sizes": [], "colors": []}
        for name in names:
            pos, orn = env.sim.pose(name)
            rot = env.sim.rotation(orn)
            for part in self._visuals(env, name):
                centre = pos + rot @ np.asarray(part["offset"])
                colour = (np.asarray(part["rgba"]) * 255).astype(np.uint8)
                size = part["size"]
                if part["kind"] == "box":
                    boxes["centers"].append(centre)
                    boxes["half_sizes"].append(np.asarray(size) / 2)
                    boxes["quaternions"].append(orn)
                    boxes["colors"].append(colour)
                elif part["kind"] == "sphere":
                    balls["centers"].append(centre)
                    balls["half_sizes"].append([size[0]] * 3)
                    balls["colors"].append(colour)
                else:  # cylinder or capsule, upright: logged as capsules
                    caps["translations"].append(centre - [0, 0, size[0] / 2])
                    caps["lengths"].append(size[0])
                    caps["radii"].append(size[1])
                    caps["colors"].append(colour)
        first = entity not in self._styled
        self._styled.add(entity)
        if boxes["centers"]:
            if first:
                self.rec.log(f"{entity}/boxes", rr.Boxes3D(fill_mode="solid", **boxes))
            else:
                self.rec.log(
                    f"{entity}/boxes",
                    rr.Boxes3D.from_fields(centers=boxes["centers"], quaternions=boxes["quaternions"]),
                )
        if caps["translations"]:
            self.rec.log(
                f"{entity}/cylinders",
                rr.Capsules3D(**caps) if first else rr.Capsules3D.from_fields(translations=caps["translations"]),
            )
        if balls["centers"]:
            self.rec.log(
                f"{entity}/spheres",
                rr.Ellipsoids3D(fill_mode="solid", **balls)
                if first
                else rr.Ellipsoids3D.from_fields(centers=balls["centers"]),
            )

    def _visuals(self, env: Any, name: str) -> list[dict]:
        if name not in self._vis:
            self._vis[name] = env.sim.visuals(name)  # fixed for the episode
        return self._vis[name]

    def _robot(self, env: Any, state: dict) -> np.ndarray:
        links = env.sim.link_positions("robot")
        self.rec.log("world/robot/links", rr.LineStrips3D.from_fields(strips=[links]))
        if "ee_pos" in state:
            return np.asarray(state["ee_pos"])
        x, y, yaw = state["base_pose"]
        self.rec.log(
            "world/robot/base",
            rr.Boxes3D.from_fields(centers=[[x, y, 0.14]], quaternions=[[0, 0, np.sin(yaw / 2), np.cos(yaw / 2)]]),
        )
        return np.array([x, y, 0.02])

    def _style_robot(self) -> None:
        self.rec.log(
            "world/robot/links", rr.LineStrips3D.from_fields(radii=0.015, colors=[220, 220, 230]), static=True
        )  # the kinematic chain through every link origin
        self.rec.log(
            "world/robot/base",
            rr.Boxes3D.from_fields(half_sizes=[[0.22, 0.17, 0.08]], fill_mode="solid", colors=[90, 90, 110]),
            static=True,
        )

    def _scalar(self, entity: str, value: Any) -> None:
        """Buffered: scalars go out as columns at each flush (one log call per entity)."""
        self._columns.setdefault(entity, []).append((self.step, self._now, np.atleast_1d(value)))

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
        if self._texts:
            rows, self._texts = self._texts, []
            self.rec.send_columns(
                "supervisor/events",
                indexes=[
                    rr.TimeColumn("step", sequence=[r[0] for r in rows]),
                    rr.TimeColumn("sim_time", duration=[r[1] for r in rows]),
                ],
                columns=rr.TextLog.columns(text=[r[2] for r in rows], level=[r[3] for r in rows]),
            )

    # --------------------------------------------------------------- episode
    def start(self, env: Any, obs: dict, info: dict) -> None:
        """After reset: the static scene, the instruction, the first frame."""
        self.rec.save(
            self.path, default_blueprint=blueprint([c.name for c in env.cameras], getattr(env, "foresight_horizon", 0))
        )
        self._started = True
        self._time(0, 0.0)
        self._style_robot()
        props = [n for n in env.sim.bodies if n != "robot"]
        self.dynamic = [n for n in props if env.sim.is_dynamic(n) or n.startswith("person")]
        self._bodies(env, [n for n in props if n not in self.dynamic], "world/static")
        self.rec.log("task/instruction", rr.TextDocument(obs["instruction"]))
        self.rec.log(
            "supervisor/events", rr.TextLog(f"episode start: {obs['instruction']}", level=rr.TextLogLevel.INFO)
        )
        profile = env.limits.profile
        self.rec.log("supervisor/limits_profile", rr.TextDocument(profile))
        if profile != "default":
            self.rec.log(
                "supervisor/events",
                rr.TextLog(
                    f"LIMITS PROFILE {profile}: not the robot's safety profile (test only)", level=rr.TextLogLevel.WARN
                ),
            )
        self._frame(env, obs, info, reward=None)

    def _frame(self, env: Any, obs: dict, info: dict, reward: float | None) -> None:
        self._images(obs)
        view = env.foresight_view() if hasattr(env, "foresight_view") else None
        if view is not None:
            self._foresight(view)
        people = [n for n in self.dynamic if n.startswith("person")]
        self._bodies(env, [n for n in self.dynamic if n not in people], "world/props")
        self._bodies(env, people, "world/people")
        state = env.robot_state()  # cached by the env for this step
        self.trail.append(self._robot(env, state))
        if self.step % TRAJECTORY_EVERY == 0:
            self.rec.log(
                "world/trajectory", rr.LineStrips3D([np.array(self.trail)], radii=0.006, colors=[255, 200, 40])
            )
        m = info.get("metrics", {})
        for key in ("distance", "distance_to_goal", "min_person_clearance"):
            if key in m and np.isfinite(m[key]):
                self._scalar(f"metrics/{key}", float(m[key]))
        speed = state["ee_lin_vel"] if "ee_lin_vel" in state else state["base_vel"][:1]
        self._scalar("metrics/speed", float(np.linalg.norm(speed)))
        if reward is not None:
            self._scalar("metrics/reward", float(reward))

    def log_step(self, env: Any, obs: dict, action: Any, reward: float, info: dict) -> None:
        """After env.step: raw action, issued command, new safety events, the frame."""
        self.step += 1
        self._time(self.step, env.sim.time)
        valid = env.supervisor.last_action  # the validated copy; a refused action is in the events
        if valid is not None:
            self._scalar("policy/action", valid)
        cmd = env.last_command
        issued = cmd.brake if isinstance(cmd, Stop) else cmd
        if isinstance(issued, SafeCommand):
            self._scalar("supervisor/command", issued.values)
        self._scalar("supervisor/stopped", float(isinstance(cmd, Stop)))
        self._events(env)
        self._frame(env, obs, info, reward)
        if self.step % FLUSH_EVERY == 0:
            self._flush_columns()
            # blocking (bounded): once this returns the window is on disk, so a SIGKILL later
            # loses at most the steps since; a non-blocking flush made that a race
            try:
                self.rec.flush(timeout_sec=FLUSH_TIMEOUT)
            except Exception:  # a slow disk: the data still goes out with the next flush
                pass

    def _events(self, env: Any) -> None:
        """New supervisor events, buffered like the scalars and sent as columns at each flush."""
        events = env.supervisor.events
        for e in events[self.events_logged :]:
            self._texts.append(
                (
                    self.step,
                    self._now,
                    f"[{e.rule}] {e.reason} | raw={e.raw} issued={e.issued}",
                    LEVELS.get(e.severity, rr.TextLogLevel.INFO),
                )
            )
        self.events_logged = len(events)

    def finish(self, result: dict[str, Any]) -> None:
        """The final result, then close the file (footer written)."""
        if self.finished or not self._started:
            return
        self._flush_columns()
        self.rec.log("world/trajectory", rr.LineStrips3D([np.array(self.trail)], radii=0.006, colors=[255, 200, 40]))
        text = "\n".join(f"{k}: {v}" for k, v in result.items())
        self.rec.log("result", rr.TextDocument(text))
        ok = result.get("success")
        self.rec.log(
            "supervisor/events",
            rr.TextLog(
                f"episode end: {'SUCCESS' if ok else 'failure'} ({result.get('end_reason')})",
                level=rr.TextLogLevel.INFO if ok else rr.TextLogLevel.WARN,
            ),
        )
        self.rec.flush()
        self.rec.disconnect()
        self.finished = True
