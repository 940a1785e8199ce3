"""The robot in a recording, drawn from its own URDF with Rerun's URDF importer.

The meshes and the fixed joints go out once (static); each step adds the moving joints'
values and the base pose, sent as columns at each flush (one call per joint, not per
step). Joint transforms use Rerun's named frames: the URDF's link names, prefixed so two
robots could share a recording, with the root link placed under the `world` entity.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import numpy as np
import rerun as rr
from rerun.urdf import UrdfTree

ENTITY = "world/robot"
JOINTS = "world/robot/joints"  # where the per-step joint transforms are logged
_PACKAGE = re.compile(r"package://")


def _resolved_urdf(path: Path, into: Path) -> Path:
    """A copy of `path` whose `package://` mesh references point at files next to it:
    pybullet resolves them against the URDF's folder, Rerun only against ROS package
    paths, which a simulation does not have."""
    text = _PACKAGE.sub(str(path.parent.resolve()) + "/", path.read_text())
    # draw the coarse collision meshes where a robot ships them: the Panda's visual meshes
    # are 9 MB, logged into every episode, its collision meshes 0.4 MB and still a Panda
    text = re.sub(r"/meshes/visual/([^\"]+)\.obj", lambda m: _coarse(path.parent, m), text)
    out = into / path.name
    out.write_text(text)
    return out


def _coarse(root: Path, m: re.Match[str]) -> str:
    coarse = root.resolve() / "meshes" / "collision" / f"{m.group(1)}.obj"
    return f"/meshes/collision/{m.group(1)}.obj" if coarse.is_file() else m.group(0)


class RobotModel:
    """Logs a URDF robot and its motion to one recording stream."""

    def __init__(self, urdf: Path, prefix: str = "robot/") -> None:
        with tempfile.TemporaryDirectory() as tmp:
            self.tree = UrdfTree.from_file_path(
                _resolved_urdf(Path(urdf), Path(tmp)),
                "world",  # meshes under world/<robot name>: the importer escapes a nested prefix
                frame_prefix=prefix,
                static_transform_entity_path=f"{ENTITY}/tf_static",
            )
        self.prefix = prefix
        self.root = prefix + self.tree.root_link().name
        self.joints = {j.name: j for j in self.tree.joints() if j.joint_type in ("revolute", "prismatic", "continuous")}
        self._rows: list[tuple[int, float, dict[str, float], np.ndarray, np.ndarray]] = []

    def log_static(self, rec: rr.RecordingStream) -> None:
        """Visual meshes and fixed transforms; collision meshes stay out (they double the
        file and draw over the visuals)."""
        rec.send_chunks(self.tree.stream().drop(content="/world/*/collision_geometries/**"))

    def add(self, step: int, sim_time: float, joints: dict[str, float], pos: np.ndarray, quat_xyzw: np.ndarray) -> None:
        """One step: joint values by name and the root link's world pose (buffered)."""
        self._rows.append((step, sim_time, joints, np.asarray(pos, float), np.asarray(quat_xyzw, float)))

    def flush(self, rec: rr.RecordingStream) -> None:
        """Send the buffered steps as columns: the root pose, then each moving joint."""
        if not self._rows:
            return
        rows, self._rows = self._rows, []
        index = [
            rr.TimeColumn("step", sequence=[r[0] for r in rows]),
            rr.TimeColumn("sim_time", duration=[r[1] for r in rows]),
        ]
        n = len(rows)
        rec.send_columns(
            f"{ENTITY}/root",
            indexes=index,
            columns=rr.Transform3D.columns(
                translation=np.stack([r[3] for r in rows]),
                quaternion=np.stack([r[4] for r in rows]),
                parent_frame=["tf#/world"] * n,
                child_frame=[self.root] * n,
            ),
        )
        for name, joint in self.joints.items():
            values = [r[2].get(name, 0.0) for r in rows]
            rec.send_columns(
                f"{JOINTS}/{name}", indexes=index, columns=joint.compute_transform_columns(values, clamp=False)
            )
