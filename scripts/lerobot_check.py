"""`make lerobot-check` (scripts/lerobot_check.sh builds .venv-lerobot and runs this): the
LeRobot adapter against lerobot 0.4.4 itself.

- a real `lerobot.robots.robot.Robot` subclass, with its own `RobotConfig` subclass
  registered as LeRobot registers its robots (`RobotConfig.register_subclass`), over the
  PyBullet Panda of the tests' stand-in (tests/bridge/lerobot_standin.py);
- built the way `qrobot robot-lerobot` builds a robot (`make_robot`: its config class,
  decoded by draccus from JSON), connected, and driven by `LeRobotArm` through plans of
  growing speed, then a brake;
- for every step, LeRobot's own `ensure_safe_goal_position` (lerobot.robots.utils), given
  the same requested targets, present positions and cap, gives the targets the adapter sent.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "bridge"))

# PyPI's torchvision 0.28 (the one for torch 2.13) is a CUDA build: its compiled ops do not
# load beside the CPU torch, and its meta registrations then fail on two missing operators.
# lerobot.robots imports torchvision (through lerobot.processor); nothing here runs these ops.
for _op in ("nms", "qnms"):
    torch.library.define(f"torchvision::{_op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")

import lerobot  # noqa: E402
from lerobot.robots import Robot, RobotConfig  # noqa: E402
from lerobot.robots.utils import ensure_safe_goal_position  # noqa: E402
from lerobot_standin import MOTORS, PandaSim  # noqa: E402

from qrobot.bridge.lerobot_arm import LeRobotArm, make_robot  # noqa: E402
from qrobot.robots.panda import FINGER_OPEN  # noqa: E402

CAP = 0.1  # rad per step, the adapter's default


class Warnings(logging.Handler):
    """Counts LeRobot's own clamp warnings (ensure_safe_goal_position logs one per clamped call)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.clamped = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.clamped += "had to be clamped" in record.getMessage()


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


CLOCK = Clock()  # the physics and the adapter on one clock the check moves: deterministic


@RobotConfig.register_subclass("qrobot_panda_sim")
@dataclass(kw_only=True)
class PandaSimConfig(RobotConfig):
    gripper: bool = True


class PandaSimRobot(Robot):
    """A LeRobot robot: 7 arm motors in degrees (joint1..joint7) and a gripper 0..100."""

    config_class = PandaSimConfig
    name = "qrobot_panda_sim"

    def __init__(self, config: PandaSimConfig) -> None:
        super().__init__(config)
        self.config = config
        self.motors = MOTORS + (("gripper",) if config.gripper else ())
        self.physics: PandaSim | None = None

    @property
    def observation_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.motors}

    @property
    def action_features(self) -> dict[str, Any]:
        return {f"{m}.pos": float for m in self.motors}

    @property
    def is_connected(self) -> bool:
        return self.physics is not None

    @property
    def is_calibrated(self) -> bool:
        return True

    def connect(self, calibrate: bool = True) -> None:
        self.physics = PandaSim(CLOCK)
        self.configure()

    def calibrate(self) -> None:
        pass

    def configure(self) -> None:
        pass

    def get_observation(self) -> dict[str, Any]:
        assert self.physics is not None, "not connected"
        q, _, width = self.physics.read()
        obs = {f"{m}.pos": math.degrees(v) for m, v in zip(MOTORS, q.tolist())}
        if self.config.gripper:
            obs["gripper.pos"] = 100.0 * width / (2 * FINGER_OPEN)
        return obs

    def send_action(self, action: dict[str, Any]) -> dict[str, Any]:
        assert self.physics is not None, "not connected"
        goal = {k.removesuffix(".pos"): float(v) for k, v in action.items() if k.endswith(".pos")}
        target = np.radians([goal[m] for m in MOTORS])
        width = 2 * FINGER_OPEN * goal.get("gripper", 100.0) / 100.0
        self.physics.command(target, width)
        return {f"{m}.pos": v for m, v in goal.items()}

    def disconnect(self) -> None:
        assert self.physics is not None, "not connected"
        self.physics.close()
        self.physics = None


def main() -> int:
    tmp = Path(tempfile.mkdtemp(prefix="lerobot-check-"))
    log = tmp / "arm.jsonl"
    assert RobotConfig.get_choice_class("qrobot_panda_sim") is PandaSimConfig  # registered as LeRobot's are
    robot = make_robot(
        "__main__:PandaSimRobot", json.dumps({"id": "check", "calibration_dir": str(tmp / "calibration")})
    )
    assert isinstance(robot, Robot) and isinstance(robot.config, PandaSimConfig)
    assert robot.config.type == "qrobot_panda_sim" and isinstance(robot.config.calibration_dir, Path)
    robot.connect()
    arm = LeRobotArm(robot, MOTORS, "gripper", "deg", CAP, log, clock=CLOCK)
    direction = np.array([1.0, -0.6, 0.4, 0.8, -0.5, -1.0, 1.2])
    for k, speed in enumerate([0.2, 0.6, 1.0, 1.4, 1.8, 1.8, 1.0, 0.4]):  # rad/s scale: up past the cap, down
        st = arm.state()
        values = np.concatenate([st["joint_pos"], st["cmd_vel"], speed * direction, [0.04 if k < 5 else 0.0]])
        arm.execute(values, arm.max_rates)
        CLOCK.t += arm.control_dt
    for _ in range(3):
        arm.brake(arm.max_rates)
        CLOCK.t += arm.control_dt
    arm.close()

    cap_deg = math.degrees(CAP)
    warned = Warnings()
    logging.getLogger().handlers[:] = [warned]  # (counted, not printed)
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    rows = []
    for n, line in enumerate(lines):
        keys = [f"{m}.pos" for m in MOTORS]
        theirs = ensure_safe_goal_position({k: (line["requested"][k], line["present"][k]) for k in keys}, cap_deg)
        ours = np.array([line["sent"][k] for k in keys])
        diff = float(np.abs(ours - np.array([theirs[k] for k in keys])).max())
        assert diff < 1e-9, f"step {n}: the adapter sent {ours}, LeRobot's clamp gives {theirs}"
        moved = float(np.abs(np.array([line["requested"][k] - line["present"][k] for k in keys])).max())
        rows.append((n, line["kind"], moved, line["clamped"], diff, line["sent"]["gripper.pos"]))
    final = np.array(list(robot.get_observation().values())[:7])
    held = [np.array([line["present"][f"{m}.pos"] for m in MOTORS]) for line in lines[-2:]]
    assert np.abs(held[1] - held[0]).max() < 0.01 and np.abs(final - held[1]).max() < 0.01, "the brake did not hold"
    robot.disconnect()

    print(f"lerobot {lerobot.__version__} (torch {torch.__version__}): Robot subclass {PandaSimRobot.__name__}, "
          f"config type {PandaSimConfig().type!r}; cap {CAP} rad = {cap_deg:.3f} deg per step")  # fmt: skip
    print(" step  kind     max |requested - present| (deg)  clamped  |adapter - ensure_safe_goal_position|  gripper")
    for n, kind, moved, clamped, diff, grip in rows:
        print(f" {n:4d}  {kind:7s}  {moved:31.3f}  {'yes' if clamped else 'no':7s}  {diff:37.1e}  {grip:7.1f}")
    clamped = sum(r[3] for r in rows)
    assert 0 < clamped < len(rows), "the run should show both clamped and unclamped steps"
    assert warned.clamped == clamped, f"LeRobot warned of {warned.clamped} clamped steps, the adapter logged {clamped}"
    print(f"{len(rows)} steps, {clamped} clamped (LeRobot's own clamp warned on the same {warned.clamped}):")
    print("every target the adapter sent equals lerobot.robots.utils.ensure_safe_goal_position's for the same request;")
    print(f"the arm moved to {np.round(final, 2).tolist()} deg and the brakes held it there. OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
