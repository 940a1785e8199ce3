"""One Rerun recording per episode: cameras, the 3D scene, the policy's raw action,
the command the supervisor issued, safety events, metrics and the result.

Layout of a recording (timelines `step` and `sim_time`):
    cameras/<name>            JPEG camera frames (and <name>_depth when configured)
    world/static, world/props primitives of the scene (props move every step)
    world/people              capsules
    world/robot/links         link origins + chain; world/robot/base (mobile base box)
    world/trajectory          end-effector or base path
    task/instruction          text
    policy/action             raw action (one series per component)
    supervisor/command        issued command values; supervisor/events: TextLog
    metrics/<name>            scalars: distance to goal, speed, min person clearance, reward
    result                    final text document (success, SPL, end reason)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rerun as rr
import rerun.blueprint as rrb

from qrobot.safety.command import SafeCommand, Stop

LEVELS = {"info": rr.TextLogLevel.INFO, "warning": rr.TextLogLevel.WARN,
          "error": rr.TextLogLevel.ERROR, "critical": rr.TextLogLevel.CRITICAL}
TRAJECTORY_EVERY = 10  # steps between re-logs of the growing trajectory strip
FLUSH_EVERY = 10       # steps between flushes to disk (the crash-loss window)


def blueprint(cameras: list[str]) -> rrb.Blueprint:
    """3D view, camera views, time series and the supervisor's event log."""
    cams = [rrb.Spatial2DView(origin=f"cameras/{c}", name=c) for c in cameras]
    return rrb.Blueprint(rrb.Horizontal(
        rrb.Vertical(rrb.Spatial3DView(origin="world", name="scene"),
                     rrb.TextLogView(origin="supervisor/events", name="safety events")),
        rrb.Vertical(rrb.Horizontal(*cams), rrb.TimeSeriesView(origin="metrics", name="metrics"),
                     rrb.TimeSeriesView(origin="policy", name="raw action"),
                     rrb.TimeSeriesView(origin="supervisor/command", name="issued command")),
        column_shares=[3, 2]))


def _rgba(parts: list[dict]) -> np.ndarray:
    return (np.array([p["rgba"] for p in parts]) * 255).astype(np.uint8)


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

    # ---------------------------------------------------------------- helpers
    def _time(self, step: int, sim_time: float) -> None:
        self.rec.set_time("step", sequence=step)
        self.rec.set_time("sim_time", duration=float(sim_time))

    def _images(self, obs: dict) -> None:
        for name, img in obs.get("images", {}).items():
            if img.ndim == 3:
                self.rec.log(f"cameras/{name}", rr.Image(img).compress(jpeg_quality=self.jpeg_quality))
            else:
                self.rec.log(f"cameras/{name}", rr.DepthImage(img, meter=1.0))

    def _bodies(self, env: Any, names: list[str], entity: str) -> None:
        boxes: dict[str, list] = {"centers": [], "half_sizes": [], "quaternions": [], "colors": []}
        caps: dict[str, list] = {"translations": [], "lengths": [], "radii": [], "colors": []}
        balls: dict[str, list] = {"centers": [], "half_sizes": [], "colors": []}
        for name in names:
            pos, orn = env.sim.pose(name)
            rot = np.asarray(env.sim.client.getMatrixFromQuaternion(orn)).reshape(3, 3)
            for part in env.sim.visuals(name):
                centre = pos + rot @ np.asarray(part["offset"])
                colour = (np.asarray(part["rgba"]) * 255).astype(np.uint8)
                size = part["size"]
                if part["kind"] == "box":
                    boxes["centers"].append(centre)
                    boxes["half_sizes"].append(np.asarray(size) / 2)
                    boxes["quaternions"].append(rr.Quaternion(xyzw=orn))
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
        if boxes["centers"]:
            self.rec.log(f"{entity}/boxes", rr.Boxes3D(fill_mode="solid", **boxes))
        if caps["translations"]:
            self.rec.log(f"{entity}/cylinders", rr.Capsules3D(**caps))
        if balls["centers"]:
            self.rec.log(f"{entity}/spheres", rr.Ellipsoids3D(fill_mode="solid", **balls))

    def _robot(self, env: Any) -> np.ndarray:
        links = env.sim.link_positions("robot")
        self.rec.log("world/robot/links", rr.Points3D(links, radii=0.025, colors=[230, 230, 235]))
        self.rec.log("world/robot/chain", rr.LineStrips3D([links], radii=0.012, colors=[200, 200, 210]))
        state = env.robot.state()
        if "ee_pos" in state:
            return np.asarray(state["ee_pos"])
        x, y, yaw = state["base_pose"]
        self.rec.log("world/robot/base", rr.Boxes3D(
            centers=[[x, y, 0.14]], half_sizes=[[0.22, 0.17, 0.08]], fill_mode="solid",
            quaternions=[rr.Quaternion(xyzw=[0, 0, np.sin(yaw / 2), np.cos(yaw / 2)])], colors=[90, 90, 110]))
        return np.array([x, y, 0.02])

    # --------------------------------------------------------------- episode
    def start(self, env: Any, obs: dict, info: dict) -> None:
        """After reset: the static scene, the instruction, the first frame."""
        self.rec.save(self.path, default_blueprint=blueprint([c.name for c in env.cameras]))
        self._started = True
        self._time(0, 0.0)
        props = [n for n in env.sim.bodies if n != "robot"]
        self.dynamic = [n for n in props if env.sim.is_dynamic(n) or n.startswith("person")]
        self._bodies(env, [n for n in props if n not in self.dynamic], "world/static")
        self.rec.log("task/instruction", rr.TextDocument(obs["instruction"]))
        self.rec.log("supervisor/events", rr.TextLog(f"episode start: {obs['instruction']}",
                                                     level=rr.TextLogLevel.INFO))
        self._frame(env, obs, info, reward=None)

    def _frame(self, env: Any, obs: dict, info: dict, reward: float | None) -> None:
        self._images(obs)
        people = [n for n in self.dynamic if n.startswith("person")]
        self._bodies(env, [n for n in self.dynamic if n not in people], "world/props")
        self._bodies(env, people, "world/people")
        self.trail.append(self._robot(env))
        if self.step % TRAJECTORY_EVERY == 0:
            self.rec.log("world/trajectory", rr.LineStrips3D([np.array(self.trail)], radii=0.006,
                                                            colors=[255, 200, 40]))
        m = info.get("metrics", {})
        for key in ("distance", "distance_to_goal", "min_person_clearance"):
            if key in m and np.isfinite(m[key]):
                self.rec.log(f"metrics/{key}", rr.Scalars(float(m[key])))
        st = env.robot.state()
        speed = st["ee_lin_vel"] if "ee_lin_vel" in st else st["base_vel"][:1]
        self.rec.log("metrics/speed", rr.Scalars(float(np.linalg.norm(speed))))
        if reward is not None:
            self.rec.log("metrics/reward", rr.Scalars(float(reward)))

    def log_step(self, env: Any, obs: dict, action: Any, reward: float, info: dict) -> None:
        """After env.step: raw action, issued command, new safety events, the frame."""
        self.step += 1
        self._time(self.step, env.sim.time)
        try:
            raw = np.asarray(action, dtype=np.float64).reshape(-1)
            if raw.size <= 16:
                self.rec.log("policy/action", rr.Scalars(raw))
        except (TypeError, ValueError):
            pass  # not numeric: the supervisor's reject event says what it was
        cmd = env.last_command
        issued = cmd.brake if isinstance(cmd, Stop) else cmd
        if isinstance(issued, SafeCommand):
            self.rec.log("supervisor/command", rr.Scalars(issued.values))
        self.rec.log("supervisor/stopped", rr.Scalars(float(isinstance(cmd, Stop))))
        self._events(env)
        self._frame(env, obs, info, reward)
        if self.step % FLUSH_EVERY == 0:
            self.rec.flush(timeout_sec=0.0)

    def _events(self, env: Any) -> None:
        events = env.supervisor.events
        for e in events[self.events_logged:]:
            self.rec.log("supervisor/events", rr.TextLog(
                f"[{e.rule}] {e.reason} | raw={e.raw} issued={e.issued}", level=LEVELS.get(e.severity)))
        self.events_logged = len(events)

    def finish(self, result: dict[str, Any]) -> None:
        """The final result, then close the file (footer written)."""
        if self.finished or not self._started:
            return
        self.rec.log("world/trajectory", rr.LineStrips3D([np.array(self.trail)], radii=0.006,
                                                        colors=[255, 200, 40]))
        text = "\n".join(f"{k}: {v}" for k, v in result.items())
        self.rec.log("result", rr.TextDocument(text))
        ok = result.get("success")
        self.rec.log("supervisor/events", rr.TextLog(
            f"episode end: {'SUCCESS' if ok else 'failure'} ({result.get('end_reason')})",
            level=rr.TextLogLevel.INFO if ok else rr.TextLogLevel.WARN))
        self.rec.flush()
        self.rec.disconnect()
        self.finished = True
