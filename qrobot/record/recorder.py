"""One Rerun recording per episode: cameras, the 3D scene, the policy's raw action,
the command the supervisor issued, safety events, metrics and the result.

Layout of a recording (timelines `step` and `sim_time`):
    cameras/<name>                 JPEG camera frames (and <name>_depth when configured)
    world/<robot>/...              the robot's URDF meshes; world/robot/joints, world/robot/root:
                                   per-step joint and base transforms (named frames)
    world/static, world/props      primitives of the scene (props move every step); world/people
    world/trajectory               end-effector or base path
    task/instruction, result       text documents
    policy/action                  raw action, one named series per component
    supervisor/command/<quantity>  the issued command, one unit per entity, named series
    supervisor/clamps/<rule>       routine (INFO) clamps per step, as counts
    supervisor/events              TextLog rows for what a person must see (warning and worse)
    metrics/<name>                 distance to goal, speed, min person clearance, reward
    recording/dropped_frames       camera frames the writer dropped under pressure

This is the control loop's side: it only gathers plain data (PyBullet is queried here);
the writer process encodes and logs it (`qrobot.record.writer`, `qrobot.record.sink`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.record.sink import FLUSH_EVERY, LEVELS
from qrobot.record.writer import FRAME_ROOM, QUEUE_STEPS, Channel, RecordingError
from qrobot.safety.command import SafeCommand, Stop

__all__ = ["FLUSH_EVERY", "LEVELS", "QUEUE_STEPS", "EpisodeRecorder"]
LOG = logging.getLogger("qrobot")


class EpisodeRecorder:
    """Streams one episode to `path` (flushed every few steps, finished with a footer)."""

    def __init__(
        self, path: Path, scenario: str, episode_id: str, jpeg_quality: int = 75, frame_room: int | None = FRAME_ROOM
    ) -> None:
        """frame_room: queued steps at which camera frames start being dropped (None: never;
        the control loop then waits for the writer instead)."""
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.application_id, self.recording_id = f"qrobot-{scenario}", episode_id
        self.jpeg_quality = jpeg_quality
        self.frame_room = frame_room
        self.step = 0
        self.events_logged = 0
        self.finished = False
        self.failed = False  # set when the writer could not finish the file
        self.dynamic: list[str] = []
        self._channel: Channel | None = None
        self._vis: dict[str, list[dict]] = {}

    def _check_path(self) -> None:
        """The file can be made here, before the episode runs (the writer would only find
        out at the end): one clear line otherwise."""
        if self.path.exists() and not self.path.is_file():
            raise RecordingError(f"{self.path}: in the way of a recording (not a regular file)")
        try:
            os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_NONBLOCK, 0o644))
        except OSError as exc:
            raise RecordingError(f"{self.path}: a recording cannot be written here ({exc.strerror})") from None

    @property
    def dropped_frames(self) -> int:
        return 0 if self._channel is None else self._channel.dropped_frames

    # ============================================================ control side
    def start(self, env: Any, obs: dict, info: dict) -> None:
        """After reset: the static scene, the robot, the instruction, the first frame."""
        self._check_path()
        robot = env.robot
        props = [n for n in env.sim.bodies if n != "robot"]
        self.dynamic = [n for n in props if env.sim.is_dynamic(n) or n.startswith("person")]
        static = self._bodies(env, [n for n in props if n not in self.dynamic])
        lo, hi = self._extent(env, robot, static)
        series = robot.command_series(np.zeros(32))
        layout = {
            "cameras": [c.name for c in env.cameras],
            "command_panels": list(series),
            "lo": lo.tolist(),
            "hi": hi.tolist(),
            "steep": not hasattr(robot, "workspace"),
            "foresight": getattr(env, "foresight_horizon", 0),
        }
        opening = {
            "path": str(self.path),
            "application_id": self.application_id,
            "recording_id": self.recording_id,
            "layout": layout,
            "jpeg_quality": self.jpeg_quality,
        }
        self._channel = Channel(opening, self.frame_room)
        head = {
            "static": static,
            "urdf": None if env.sim.urdf_files.get("robot") is None else str(env.sim.urdf_files["robot"]),
            "instruction": obs["instruction"],
            "profile": env.limits.profile,
            "action_names": list(robot.action_names),
            "command_names": {k: list(v[0]) for k, v in series.items()},
        }
        self._put("start", head)
        self._frame(env, obs, info, reward=None)

    def log_step(self, env: Any, obs: dict, action: Any, reward: float, info: dict) -> None:
        """After env.step: raw action, issued command, new safety events, the frame."""
        self.step += 1
        if self.failed:
            return
        valid = env.supervisor.last_action  # the validated copy; a refused action is in the events
        cmd = env.last_command
        issued = cmd.brake if isinstance(cmd, Stop) else cmd
        series = env.robot.command_series(issued.values) if isinstance(issued, SafeCommand) else {}
        events = env.supervisor.events
        new = [(e.rule, e.reason, e.severity, e.raw, e.issued) for e in events[self.events_logged :]]
        self.events_logged = len(events)
        step = {
            "action": None if valid is None else np.asarray(valid, float).copy(),
            "command": {k: v[1] for k, v in series.items()},
            "stopped": float(isinstance(cmd, Stop)),
            "events": new,
        }
        self._frame(env, obs, info, reward, step)

    def finish(self, result: dict[str, Any]) -> None:
        """The final result; returns once the writer has written the episode and closed the file."""
        if self.finished or self._channel is None:
            return
        self.finished = True
        if self.failed:
            raise RecordingError("the writer failed during the episode")
        self._channel.finish(dict(result))

    def _frame(self, env: Any, obs: dict, info: dict, reward: float | None, step: dict | None = None) -> None:
        frames = {f"cameras/{k}": v for k, v in obs.get("images", {}).items()}
        view = env.foresight_view() if hasattr(env, "foresight_view") else None
        if view is not None:
            frames["foresight/actual"] = view["actual"]
            frames.update({f"foresight/predicted_h{h}": p for h, p in view["predicted"].items()})
        people = [n for n in self.dynamic if n.startswith("person")]
        state = env.robot_state()  # cached by the env for this step
        pos, orn = env.sim.pose("robot")
        m = info.get("metrics", {})
        scalars = {
            f"metrics/{k}": float(m[k])
            for k in ("distance", "distance_to_goal", "min_person_clearance")
            if k in m and np.isfinite(m[k])
        }
        speed = state["ee_lin_vel"] if "ee_lin_vel" in state else state["base_vel"][:1]
        scalars["metrics/speed"] = float(np.linalg.norm(speed))
        if reward is not None:
            scalars["metrics/reward"] = float(reward)
        if view is not None:
            scalars["foresight/collision_prob"] = float(view["probability"])
            scalars["foresight/speed_scale"] = float(view["scale"])
        item = {
            "step": self.step,
            "time": float(env.sim.time),
            "props": self._bodies(env, [n for n in self.dynamic if n not in people]),
            "people": self._bodies(env, people),
            "joints": env.sim.joint_values("robot"),
            "root": (np.asarray(pos, float), np.asarray(orn, float)),
            "tip": np.asarray(state["ee_pos"], float) if "ee_pos" in state else np.array([pos[0], pos[1], 0.02]),
            "scalars": scalars,
            **(step or {}),
        }
        self._put("step", item, frames)

    def _put(self, kind: str, item: dict[str, Any], frames: dict[str, np.ndarray] | None = None) -> None:
        """A writer that fails mid-episode costs the recording (one warning), never the episode."""
        assert self._channel is not None, "start() first"
        if self.failed:
            return
        try:
            self._channel.put(kind, item, frames)
        except RecordingError as exc:
            self.failed = True
            LOG.warning("%s: recording stopped at step %d: %s", self.path, self.step, exc)

    def _bodies(self, env: Any, names: list[str]) -> dict[str, dict[str, list]]:
        """Primitives of `names` by kind. Sizes and colours are sent with the first frame;
        later frames send only positions and orientations (a fraction of the cost)."""
        out: dict[str, dict[str, list]] = {}
        for name in names:
            pos, orn = env.sim.pose(name)
            rot = env.sim.rotation(orn)
            if name not in self._vis:
                self._vis[name] = env.sim.visuals(name)  # fixed for the episode
            for part in self._vis[name]:
                kind = part["kind"] if part["kind"] in ("box", "sphere", "cylinder") else "capsule"
                d = out.setdefault(kind, {"centers": [], "quaternions": [], "sizes": [], "colors": []})
                d["centers"].append(pos + rot @ np.asarray(part["offset"]))
                d["quaternions"].append(np.asarray(orn, float))
                d["sizes"].append(part["size"])  # used on the first frame only (cached visuals)
                d["colors"].append(part["rgba"])
        return out

    @staticmethod
    def _extent(env: Any, robot: Any, static: dict[str, dict[str, list]]) -> tuple[np.ndarray, np.ndarray]:
        """What the 3D view frames: an arm's workspace and base (the table is larger than
        what happens on it); otherwise the scene's bodies and the robot, without floors."""
        base = np.asarray(env.sim.pose("robot")[0], float)
        if hasattr(robot, "workspace"):
            lo, hi = np.asarray(robot.workspace, float)
            return np.minimum(lo, base), np.maximum(hi, base)
        pts = [base]
        for d in static.values():
            for c, size in zip(d["centers"], d["sizes"]):
                if max(size) < 3.0:  # a floor or a ground plane would frame an empty field
                    pts.append(np.asarray(c, float))
        arr = np.array(pts)
        return arr.min(axis=0) - 0.1, arr.max(axis=0) + np.array([0.1, 0.1, 0.4])
