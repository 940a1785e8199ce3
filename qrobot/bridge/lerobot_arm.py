"""A LeRobot arm as a `robot_host.Driver`: any object with LeRobot's `Robot` interface
(`connect`, `disconnect`, `is_connected`, `get_observation`, `send_action`,
`action_features`, `observation_features`) driven by the agent's supervisor as a Panda.

    qrobot robot-lerobot --robot-class lerobot.robots.so_follower:SO100Follower \\
        --robot-config '{"port": "/dev/ttyACM0", "id": "arm1"}' \\
        --joints j1,j2,j3,j4,j5,j6,j7 [--gripper gripper] --token-file robot.token

Seven motors map in order onto the supervisor's seven Panda joints. Each checked
one-period plan becomes one `send_action` of position targets: where the plan's joint
ramp ends, clamped per joint to +-`max_relative_target` rad from the position measured
just before (what LeRobot's own `ensure_safe_goal_position` does, here always on). A
brake holds: the measured positions go out as targets. The end-effector pose the
supervisor reads comes from a kinematics-only Panda: an arm with another kinematic
model needs its own profile (docs/robots/lerobot.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.errors import QrobotError
from qrobot.robots.kinematics import PandaModel
from qrobot.robots.panda import COMMAND_SIZE, FINGER_OPEN, MAX_JOINT_ACC
from qrobot.safety import trajectory

UNITS = {"deg": math.pi / 180.0, "rad": 1.0}  # robot units -> rad
GRIPPER_RANGE = (0.0, 100.0)  # (closed, open): LeRobot's Feetech/Dynamixel grippers (MotorNormMode.RANGE_0_100)


class LeRobotArm:
    robot = "panda"
    command_size = COMMAND_SIZE

    def __init__(
        self,
        arm: Any,
        joints: Sequence[str],
        gripper: str | None = None,
        units: str = "deg",
        max_relative_target: float = 0.1,
        log: Path | None = None,
        control_dt: float = 0.1,
        scenario: str = "pick_place",
        people: str = "none",
        clock: Callable[[], float] = time.monotonic,
        gripper_range: tuple[float, float] = GRIPPER_RANGE,
    ) -> None:
        joints = list(joints)
        if len(joints) != 7 or len(set(joints)) != 7 or gripper in joints:
            raise ValueError(f"LeRobotArm: 7 distinct arm motors are needed, in the Panda's joint order (got {joints})")
        if units not in UNITS:
            raise ValueError(f"LeRobotArm: units {units!r}: 'deg' or 'rad'")
        if not (math.isfinite(max_relative_target) and max_relative_target > 0):
            raise ValueError(f"LeRobotArm: max_relative_target {max_relative_target}: a positive number of rad")
        if not (all(map(math.isfinite, gripper_range)) and gripper_range[0] != gripper_range[1]):
            raise ValueError(f"LeRobotArm: gripper_range {gripper_range}: (closed, open), two different positions")
        motors = joints + ([gripper] if gripper else [])
        for kind in ("action_features", "observation_features"):
            have = dict(getattr(arm, kind))
            for m in motors:
                if f"{m}.pos" not in have:
                    raise ValueError(f"{type(arm).__name__}.{kind} has no {m + '.pos'!r} (it has: {', '.join(have)})")
        self.arm, self.joints, self.gripper = arm, joints, gripper
        self.scale, self.units, self.max_relative_target = UNITS[units], units, float(max_relative_target)
        self.control_dt, self.scenario, self.people = float(control_dt), scenario, people
        self.max_rates = np.array(MAX_JOINT_ACC, dtype=np.float64)
        self._clock = clock
        # the plan being followed, for cmd_vel: (start, v0, v1, braking rates); at rest at first
        self._plan = (clock(), np.zeros(7), np.zeros(7), self.max_rates.copy())
        self._last: tuple[float, np.ndarray] | None = None  # the previous state read, for velocities
        self._dq = np.zeros(7)
        self._hold: np.ndarray | None = None  # the target a brake holds (kept while held: no creep)
        self.gripper_range = (float(gripper_range[0]), float(gripper_range[1]))
        self._grip = self.gripper_range[1]
        self._log = open(log, "a", buffering=1) if log is not None else None  # (closed in close())
        self.steps = self.clamps = 0

        # a kinematics-only Panda in its own DIRECT world, never stepped: forward kinematics
        # and link velocities for the measured joints, the same model the supervisor uses
        self._kin = PandaModel()

    # ------------------------------------------------------------ measuring
    def _read(self) -> tuple[np.ndarray, np.ndarray | None, float | None]:
        """Joint positions (rad), joint velocities (rad/s) if the robot reports them, gripper."""
        obs = self.arm.get_observation()
        q = np.array([float(obs[f"{j}.pos"]) for j in self.joints]) * self.scale
        vel = [obs.get(f"{j}.vel") for j in self.joints]
        dq = None if any(v is None for v in vel) else np.array(vel, dtype=np.float64) * self.scale
        grip = float(obs[f"{self.gripper}.pos"]) if self.gripper else None
        return q, dq, grip

    def _velocity(self, now: float) -> np.ndarray:
        t0, v0, v1, rates = self._plan
        return trajectory.at(v0, v1, self.control_dt, rates, now - t0)[1]

    def state(self) -> dict[str, np.ndarray | float]:
        now = self._clock()
        q, dq, grip = self._read()
        if dq is None:  # finite difference between successive state reads (about one period apart)
            if self._last is not None and now - self._last[0] > 1e-3:
                self._dq = (q - self._last[1]) / (now - self._last[0])
            dq = self._dq
        self._last = (now, q)
        shut, wide = self.gripper_range
        half = FINGER_OPEN * (min(max((grip - shut) / (wide - shut), 0.0), 1.0) if grip is not None else 0.0)
        st = self._kin.pose(q, dq, half)
        # the measured values themselves (the host checks a plan starts exactly where it was sent)
        st.update(joint_pos=q, joint_vel=dq, cmd_vel=self._velocity(now))
        return st

    # ------------------------------------------------------------ commanding
    def _send(self, kind: str, goal: np.ndarray, rates: np.ndarray, plan: tuple[np.ndarray, np.ndarray]) -> None:
        """Clamp `goal` (rad) to the cap around the present position, send it, log both."""
        now = self._clock()
        present = self._read()[0]
        cap = self.max_relative_target
        over = np.abs(goal - present) > cap
        # unclamped joints go out exactly as requested; clamped ones as LeRobot computes them
        sent_q = np.where(over, present + np.clip(goal - present, -cap, cap), goal)
        self._plan = (now, plan[0], plan[1], np.asarray(rates, dtype=np.float64).copy())
        requested = {f"{j}.pos": float(v / self.scale) for j, v in zip(self.joints, goal)}
        action = {f"{j}.pos": float(v / self.scale) for j, v in zip(self.joints, sent_q)}
        if self.gripper:
            requested[f"{self.gripper}.pos"] = action[f"{self.gripper}.pos"] = self._grip
        sent = self.arm.send_action(action)
        self.steps += 1
        self.clamps += bool(over.any())
        if self._log is not None:
            line = {
                "wall": time.time(),
                "kind": kind,
                "units": self.units,
                "present": {f"{j}.pos": float(v / self.scale) for j, v in zip(self.joints, present)},
                "requested": requested,
                "sent": {k: float(v) for k, v in dict(sent).items()},
                "clamped": bool(over.any()),
            }
            self._log.write(json.dumps(line) + "\n")

    def execute(self, values: np.ndarray, rates: np.ndarray) -> None:
        """One checked plan [q0, v0, v1, finger]: the position where its ramp ends, at once."""
        q0, v0, v1 = (np.array(values[i : i + 7], dtype=np.float64) for i in (0, 7, 14))
        disp = trajectory.at(v0, v1, self.control_dt, np.asarray(rates, dtype=np.float64), self.control_dt)[0]
        self._grip = self.gripper_range[1] if float(values[21]) > 0.02 else self.gripper_range[0]
        self._hold = None
        self._send("execute", q0 + disp, rates, (v0, v1))

    def brake(self, rates: np.ndarray) -> None:
        """Hold: a position-controlled arm stops where it is. While held, the first target is
        sent again (re-reading would walk the target down with any sag under gravity)."""
        if self._hold is None:
            self._hold = self._read()[0]
        self._send("brake", self._hold, rates, (np.zeros(7), np.zeros(7)))

    def close(self) -> None:
        """The host braked before calling. The robot itself stays connected: its owner disconnects it."""
        if self._log is not None:
            self._log.close()
            self._log = None
        self._kin.close()


# ---------------------------------------------------------------- the host process
def _import(spec: str, flag: str) -> Any:
    module, _, name = spec.partition(":")
    if not module or not name:
        raise QrobotError(
            f"robot-lerobot {flag}: {spec!r}: give module:Class, e.g. lerobot.robots.so_follower:SO100Follower"
        )
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise QrobotError(f"robot-lerobot {flag}: cannot import {spec}: {exc}") from None


def make_robot(robot_class: str, config: str = "{}", config_class: str | None = None) -> Any:
    """The robot: `Class(ConfigClass(...))` (ConfigClass: given, or the class's own
    `config_class`, as every LeRobot robot has), else `Class(**kwargs)`. `config` is a JSON
    object, or the path of a file holding one. A dataclass config is decoded with draccus
    where it is installed (LeRobot's own parser: paths, nested dataclasses), else built
    from the keyword arguments as they are."""
    cls = _import(robot_class, "--robot-class")
    text = Path(config).read_text() if not config.lstrip().startswith("{") and Path(config).is_file() else config
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as exc:
        raise QrobotError(f"robot-lerobot --robot-config: not a JSON object or a file holding one: {exc}") from None
    if not isinstance(kwargs, dict):
        raise QrobotError(
            'robot-lerobot --robot-config: a JSON object of keyword arguments, e.g. {"port": "/dev/ttyACM0"}'
        )
    cfg_cls = _import(config_class, "--config-class") if config_class else getattr(cls, "config_class", None)
    try:
        if cfg_cls is None:
            return cls(**kwargs)
        try:
            decode = importlib.import_module("draccus").decode  # (installed with LeRobot)
        except ImportError:
            decode = None
        use = decode is not None and dataclasses.is_dataclass(cfg_cls)
        return cls(decode(cfg_cls, kwargs) if use else cfg_cls(**kwargs))
    except Exception as exc:  # (draccus's DecodingError, a TypeError for a wrong keyword, the robot's own)
        raise QrobotError(f"robot-lerobot: {robot_class} with config {kwargs}: {exc}") from None


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The LeRobot arm host's flags (here and as `qrobot robot-lerobot`)."""
    p.add_argument("--robot-class", required=True, help="module:Class of a LeRobot Robot")
    p.add_argument("--robot-config", default="{}", help="its config's keyword arguments: a JSON object, or a file")
    p.add_argument("--config-class", default=None, help="module:ConfigClass (default: the robot's config_class)")
    p.add_argument("--joints", required=True, help="7 motor names, comma-separated, in the Panda's joint order")
    p.add_argument("--gripper", default=None, help="the gripper motor's name")
    p.add_argument("--gripper-range", default="0,100", help="its CLOSED,OPEN positions (default 0,100: LeRobot's)")
    p.add_argument("--units", choices=tuple(UNITS), default="deg", help="the arm motors' position units")
    p.add_argument("--max-relative-target", type=float, default=0.1, help="rad a target may lie from the present")
    p.add_argument("--scenario", default="pick_place", help="panda scenario whose limits the agent applies")
    p.add_argument("--log", type=Path, default=None, help="JSONL: each step's requested and sent action")
    p.add_argument("--port", type=int, default=0, help="local port for the agent (0: a free one, printed)")
    p.add_argument(
        "--token-file",
        type=Path,
        required=True,
        help="pairing token the agent must prove it holds (made, 0600, if missing; give the agent the same)",
    )


def serve(args: argparse.Namespace) -> int:
    from qrobot.bridge.robot_host import RobotHost, serve_until_stopped
    from qrobot.bridge.robot_link import load_token
    from qrobot.scenario import load_scenario

    joints = [j.strip() for j in args.joints.split(",")]
    if len(joints) != 7 or not all(joints):
        raise QrobotError(f"robot-lerobot --joints: {args.joints!r}: 7 motor names, comma-separated")
    if not (math.isfinite(args.max_relative_target) and 0 < args.max_relative_target <= 0.5):
        raise QrobotError(f"robot-lerobot --max-relative-target: {args.max_relative_target} (rad per step, 0..0.5)")
    try:
        closed, opened = (float(x) for x in args.gripper_range.split(","))
    except ValueError:
        raise QrobotError(f"robot-lerobot --gripper-range: {args.gripper_range!r}: CLOSED,OPEN, e.g. 0,100") from None
    if not 0 <= args.port < 65536:
        raise QrobotError("robot-lerobot --port: 0..65535 (0: a free one)")
    if load_scenario(args.scenario).robot != "panda":
        raise QrobotError(f"robot-lerobot --scenario: {args.scenario} is not a panda scenario (e.g. pick_place)")
    path = args.token_file
    if path.is_dir() or (path.parent.exists() and not path.parent.is_dir()):
        raise QrobotError(f"robot-lerobot --token-file: {path}: give a file path (a folder, or a file in the way)")
    try:
        token = load_token(path)
    except (ValueError, OSError) as exc:
        raise QrobotError(
            f"robot-lerobot --token-file: {path}: not a pairing token (hex, at least 16 bytes): {exc}"
        ) from None
    robot = make_robot(args.robot_class, args.robot_config, args.config_class)
    try:
        driver = LeRobotArm(
            robot,
            joints,
            args.gripper,
            args.units,
            args.max_relative_target,
            args.log,
            scenario=args.scenario,
            gripper_range=(closed, opened),
        )
    except ValueError as exc:
        raise QrobotError(f"robot-lerobot: {exc}") from None
    try:
        robot.connect()
    except Exception as exc:  # (a serial port missing, a motor not answering: LeRobot's own errors)
        driver.close()
        raise QrobotError(f"robot-lerobot: {args.robot_class} did not connect: {exc}") from None
    try:
        serve_until_stopped(RobotHost(driver, token, args.port))
    finally:
        if robot.is_connected:
            robot.disconnect()
    return 0


def main(argv: list[str] | None = None) -> int:
    from qrobot.bridge.robot_host import host_main

    return host_main("python -m qrobot.bridge.lerobot_arm", __doc__, add_arguments, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
