"""The simulation facade: the one owner of a PyBullet client.

Every `import pybullet` of qrobot lives here or in a robot backend
(`qrobot/robots/`). Bodies are addressed by name; the physics rate is fixed
(240 Hz) and one `step()` advances one control period.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np


def yaw_of(orn: Sequence[float]) -> float:
    """Yaw (rotation about z) of an (x, y, z, w) quaternion."""
    x, y, z, w = orn
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[None]:
    """Silence PyBullet's C-level banners ("argv[0]=", "build time") on fds 1 and 2."""
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no stdio at all: nothing to silence
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        with contextlib.suppress(Exception):
            ctypes.CDLL(None).fflush(None)  # drain C stdio while it still points at /dev/null
        for fd, saved_fd in zip((1, 2), saved):
            os.dup2(saved_fd, fd)
            os.close(saved_fd)


with _quiet_stdio():
    import pybullet
    import pybullet_data
    from pybullet_utils.bullet_client import BulletClient

PHYSICS_HZ = 240


@dataclass(frozen=True)
class Camera:
    """A pinhole camera: fixed in the world, or attached to a body's link."""

    name: str
    width: int = 128
    height: int = 128
    fov: float = 60.0
    near: float = 0.02
    far: float = 6.0
    eye: tuple[float, float, float] = (1.0, 0.0, 1.0)
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    up: tuple[float, float, float] = (0.0, 0.0, 1.0)
    # When attached, eye/target/up are given in the link frame.
    body: str | None = None
    link: int = -1


class Sim:
    """Owns one `BulletClient`; DIRECT by default, GUI on request."""

    def __init__(self, gui: bool = False, control_hz: float = 10.0) -> None:
        if not (0 < control_hz <= PHYSICS_HZ) or PHYSICS_HZ % control_hz:
            raise ValueError(f"control_hz must divide {PHYSICS_HZ} (got {control_hz})")
        self.gui = gui
        self.control_hz = float(control_hz)
        self._substeps = int(PHYSICS_HZ // control_hz)
        self._dt = 1.0 / self.control_hz
        with _quiet_stdio():
            self._client = BulletClient(pybullet.GUI if gui else pybullet.DIRECT)
        self._client.setAdditionalSearchPath(pybullet_data.getDataPath())
        if gui:
            self._client.configureDebugVisualizer(pybullet.COV_ENABLE_GUI, 0)
        self._reset_world()

    # The PyBullet client, world rebuilds, state restores and per-substep hooks are private:
    # they could move a robot without its supervisor. While `_sealed` (an episode runs) no
    # body can be added either. Everything public here reads, renders or moves props.
    def _reset_world(self) -> None:
        """Empty the world. Rebuilding from scratch is what makes seeded episodes
        bit-identical: restoreState keeps broadphase history, which perturbs contacts."""
        self._sealed = False
        self._substep_hooks: list[Callable[[float], None]] = []
        self._client.resetSimulation()
        self._client.setTimeStep(1.0 / PHYSICS_HZ)
        self._client.setPhysicsEngineParameter(deterministicOverlappingPairs=1)
        self._client.setGravity(0, 0, -9.81)
        self._bodies: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._robots: set[int] = set()  # bodies only their backend may move
        self._joint_names: dict[int, list[tuple[int, str]]] = {}
        self.urdf_files: dict[str, Path] = {}
        self._time = 0.0
        self.version = 0  # bumped whenever physics state may have changed (state caches key on it)
        self._light: tuple[float, ...] = (0.6, 0.4, 2.0)

    # ----------------------------------------------------------------- bodies
    @property
    def time(self) -> float:
        """Simulated seconds since the world was built."""
        return self._time

    @property
    def dt(self) -> float:
        """The control period (s)."""
        return self._dt

    @property
    def substeps(self) -> int:
        return self._substeps

    @property
    def bodies(self) -> Mapping[str, int]:
        """Body ids by name (read-only)."""
        return MappingProxyType(self._bodies)

    def _on_substep(self, hook: Callable[[float], None]) -> None:
        """Call hook(t) before each physics substep, t = sim time at the substep's end
        (robot backends shape their motion between control ticks with it)."""
        self._substep_hooks.append(hook)

    def _building(self) -> None:
        if self._sealed:
            raise PermissionError("the world is sealed while an episode runs: bodies are added when it is built")

    def _register(self, name: str, uid: int) -> int:
        if name in self._bodies:
            raise ValueError(f"body name {name!r} already used")
        self._bodies[name] = uid
        if name == "robot":
            self._robots.add(uid)
        self._names[uid] = name
        return uid

    def load_urdf(
        self,
        name: str,
        path: str,
        pos: Sequence[float] = (0, 0, 0),
        orn: Sequence[float] = (0, 0, 0, 1),
        fixed: bool = False,
        scale: float = 1.0,
    ) -> int:
        self._building()
        uid = self._client.loadURDF(
            path,
            basePosition=pos,
            baseOrientation=orn,
            useFixedBase=fixed,
            globalScaling=scale,
            flags=pybullet.URDF_ENABLE_CACHED_GRAPHICS_SHAPES,
        )
        found = Path(path) if Path(path).is_absolute() else Path(pybullet_data.getDataPath()) / path
        self.urdf_files[name] = found  # for recordings: the robot is drawn from its own URDF
        return self._register(name, uid)

    def add_shape(
        self,
        name: str,
        shape: str,
        size: Sequence[float],
        rgba: Sequence[float],
        pos: Sequence[float] = (0, 0, 0),
        mass: float = 0.0,
        collide: bool = True,
        friction: float | None = None,
    ) -> int:
        """A primitive body. shape: box (size = half extents), cylinder/capsule
        (size = radius, height), sphere (size = radius)."""
        self._building()
        c = self._client
        kind = {
            "box": pybullet.GEOM_BOX,
            "cylinder": pybullet.GEOM_CYLINDER,
            "capsule": pybullet.GEOM_CAPSULE,
            "sphere": pybullet.GEOM_SPHERE,
        }[shape]
        geom: dict = {"halfExtents": list(size)} if shape == "box" else {"radius": size[0]}
        if shape in ("cylinder", "capsule"):
            vis = dict(geom, length=size[1])
            col = dict(geom, height=size[1])
        else:
            vis = col = geom
        vid = c.createVisualShape(kind, rgbaColor=list(rgba), **vis)
        cid = c.createCollisionShape(kind, **col) if collide else -1
        uid = c.createMultiBody(
            baseMass=mass, baseCollisionShapeIndex=cid, baseVisualShapeIndex=vid, basePosition=list(pos)
        )
        if friction is not None:
            c.changeDynamics(uid, -1, lateralFriction=friction)
        return self._register(name, uid)

    def add_compound(
        self,
        name: str,
        boxes: Sequence[tuple[Sequence[float], Sequence[float]]],
        rgba: Sequence[float],
        pos: Sequence[float] = (0, 0, 0),
    ) -> int:
        """A static body made of boxes given as (half_extents, offset) pairs."""
        self._building()
        c = self._client
        n = len(boxes)
        half = [list(b[0]) for b in boxes]
        offs = [list(b[1]) for b in boxes]
        cid = c.createCollisionShapeArray([pybullet.GEOM_BOX] * n, halfExtents=half, collisionFramePositions=offs)
        vid = c.createVisualShapeArray(
            [pybullet.GEOM_BOX] * n, halfExtents=half, visualFramePositions=offs, rgbaColors=[list(rgba)] * n
        )
        uid = c.createMultiBody(
            baseMass=0, baseCollisionShapeIndex=cid, baseVisualShapeIndex=vid, basePosition=list(pos)
        )
        return self._register(name, uid)

    def _set_color(self, name: str, rgba: Sequence[float]) -> None:
        self._client.changeVisualShape(self._bodies[name], -1, rgbaColor=list(rgba))

    def _set_pose(self, name: str, pos: Sequence[float], orn: Sequence[float] = (0, 0, 0, 1)) -> None:
        """Teleport a prop (not a robot: robots move only through their backend)."""
        uid = self._bodies[name]
        if uid in self._robots:
            raise PermissionError("the robot moves only through its backend (supervisor-issued commands)")
        self._client.resetBasePositionAndOrientation(uid, list(pos), list(orn))
        self.version += 1

    def pose(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        pos, orn = self._client.getBasePositionAndOrientation(self._bodies[name])
        return np.asarray(pos), np.asarray(orn)

    def velocity(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        lin, ang = self._client.getBaseVelocity(self._bodies[name])
        return np.asarray(lin), np.asarray(ang)

    def contact_links(self, a: str, b: str) -> set[int]:
        """Link indices of body `a` that touch body `b`."""
        return {pt[3] for pt in self._client.getContactPoints(self._bodies[a], self._bodies[b])}

    def near(self, a: str, b: str, margin: float = 0.01) -> bool:
        """True if bodies a and b are within `margin` metres (touching or penetrating)."""
        return bool(self._client.getClosestPoints(self._bodies[a], self._bodies[b], margin))

    def first_hit(self, start: Sequence[float], end: Sequence[float]) -> str | None:
        """Name of the first body the segment start-end meets (None: nothing; '?': unnamed)."""
        uid = self._client.rayTest(list(start), list(end))[0][0]
        return None if uid < 0 else self._names.get(uid, "?")

    def contacts_of(self, name: str) -> set[str]:
        """Names of bodies touching `name` right now."""
        uid = self._bodies[name]
        return {self._names.get(pt[2], "?") for pt in self._client.getContactPoints(bodyA=uid)}

    # ------------------------------------------------------------ inspection
    def visuals(self, name: str) -> list[dict]:
        """Primitive visual parts of a body, in its base frame: kind, size, offset, rgba.
        kind is box (full extents) | sphere (radius) | cylinder | capsule (length, radius)."""
        kinds = {
            pybullet.GEOM_BOX: "box",
            pybullet.GEOM_SPHERE: "sphere",
            pybullet.GEOM_CYLINDER: "cylinder",
            pybullet.GEOM_CAPSULE: "capsule",
        }
        out = []
        for v in self._client.getVisualShapeData(self._bodies[name]):
            if v[1] == -1 and v[2] in kinds:
                out.append({"kind": kinds[v[2]], "size": tuple(v[3]), "offset": tuple(v[5]), "rgba": tuple(v[7])})
        return out

    def joint_values(self, name: str) -> dict[str, float]:
        """Positions of a body's moving joints (revolute, prismatic), by URDF joint name."""
        uid = self._bodies[name]
        if uid not in self._joint_names:
            moving = (pybullet.JOINT_REVOLUTE, pybullet.JOINT_PRISMATIC)
            infos = [self._client.getJointInfo(uid, j) for j in range(self._client.getNumJoints(uid))]
            self._joint_names[uid] = [(i[0], i[1].decode()) for i in infos if i[2] in moving]
        joints = self._joint_names[uid]
        states = self._client.getJointStates(uid, [j for j, _ in joints]) if joints else []
        return {n: float(st[0]) for (_, n), st in zip(joints, states)}

    def is_dynamic(self, name: str) -> bool:
        return self._client.getDynamicsInfo(self._bodies[name], -1)[0] > 0

    def link_positions(self, name: str) -> np.ndarray:
        """World positions of a body's base and every link frame, in index order."""
        uid = self._bodies[name]
        n = self._client.getNumJoints(uid)
        base = self._client.getBasePositionAndOrientation(uid)[0]
        links = [s[4] for s in self._client.getLinkStates(uid, list(range(n)))] if n else []
        return np.asarray([base, *links], dtype=np.float64)

    # --------------------------------------------------------------- stepping
    def step(self) -> None:
        """Advance one control period (physics_hz / control_hz substeps)."""
        step, hooks = self._client.stepSimulation, self._substep_hooks
        for k in range(self.substeps):
            t = self._time + (k + 1) / PHYSICS_HZ
            for hook in hooks:
                hook(t)
            step()
        self._time += self._dt
        self.version += 1

    def _save_state(self) -> int:
        return self._client.saveState()

    def _restore_state(self, state_id: int) -> None:
        """Positions, velocities and contacts as saved (within the same world build)."""
        self._client.restoreState(stateId=state_id)
        self.version += 1

    def _discard_state(self, state_id: int) -> None:
        self._client.removeState(state_id)

    @staticmethod
    def rotation(orn: Sequence[float]) -> np.ndarray:
        """3x3 rotation matrix of an (x, y, z, w) quaternion."""
        return np.asarray(pybullet.getMatrixFromQuaternion(list(orn))).reshape(3, 3)

    def key_pressed(self, key: str) -> bool:
        """True if `key` went down since the last call (GUI runs only)."""
        events = self._client.getKeyboardEvents()
        return bool(events.get(ord(key), 0) & pybullet.KEY_WAS_TRIGGERED)

    # --------------------------------------------------------------- cameras
    def _set_light(self, direction: Sequence[float]) -> None:
        self._light = tuple(float(v) for v in direction)

    def _view(self, cam: Camera) -> list[float]:
        if cam.body is None:
            return self._client.computeViewMatrix(cam.eye, cam.target, cam.up)
        uid = self._bodies[cam.body]
        if cam.link < 0:
            pos, orn = self._client.getBasePositionAndOrientation(uid)
        else:
            pos, orn = self._client.getLinkState(uid, cam.link, computeForwardKinematics=True)[4:6]
        rot = np.asarray(self._client.getMatrixFromQuaternion(orn)).reshape(3, 3)
        eye = np.asarray(pos) + rot @ cam.eye
        target = np.asarray(pos) + rot @ cam.target
        return self._client.computeViewMatrix(eye.tolist(), target.tolist(), (rot @ cam.up).tolist())

    def render(self, cam: Camera, depth: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """RGB (H, W, 3) uint8 and, if asked, metric depth (H, W) float32."""
        proj = self._client.computeProjectionMatrixFOV(cam.fov, cam.width / cam.height, cam.near, cam.far)
        _, _, rgba, zbuf, _ = self._client.getCameraImage(
            cam.width,
            cam.height,
            self._view(cam),
            proj,
            lightDirection=list(self._light),
            shadow=0,
            renderer=pybullet.ER_TINY_RENDERER,
            flags=pybullet.ER_NO_SEGMENTATION_MASK,
        )
        rgb = np.asarray(rgba, dtype=np.uint8).reshape(cam.height, cam.width, 4)[..., :3]
        if not depth:
            return rgb, None
        z = np.asarray(zbuf, dtype=np.float32).reshape(cam.height, cam.width)
        metric = cam.far * cam.near / (cam.far - (cam.far - cam.near) * z)
        return rgb, metric.astype(np.float32)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.disconnect()
