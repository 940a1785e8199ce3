"""A Franka arm (FR3, Panda) through `franky-control`, the libfranka Python binding: the
`Driver` the robot host (`qrobot.bridge.robot_host`) drives, proven against `franky-sim`.

Each checked one-period plan becomes one asynchronous joint-velocity motion towards the
plan's end velocity, held for one period: franky replaces the running motion without a
jolt, and when no new plan comes it ramps to zero by itself. franky's acceleration and
jerk limits are lowered to the FR3's at connection (this build of franky-control carries
the Panda's, which allow more), and no velocity above franky's own limit is ever sent
(franky would reject the motion and abort the stream).

What the driver cannot vouch for stops the arm: a motion franky reports as failed makes
every later state incomplete, so the agent's supervisor latches an e-stop, until a person
has looked at the arm and restarts the host (it clears franky's errors as it connects).

The simulator has no communication watchdog (a hung client leaves the arm moving); a
real Franka reflexes after 20 lost packets. The agent and this host stop the arm first.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from qrobot.errors import QrobotError
from qrobot.robots.kinematics import PandaModel
from qrobot.safety.limits import FR3_ARM

FR3_ACC = np.array(FR3_ARM["joint_acc_max"])
FR3_JERK = np.full(7, 5000.0)  # rad/s^3, Franka's published FR3 jerk limit
VEL_SHARE = 0.95  # of franky's own velocity limit: never a motion it would refuse
OPEN = 0.08  # m: the hand's opening reported (franky-sim serves no gripper)


def connect(host: str, realtime: bool = False) -> Any:
    """A franky `Robot`. libfranka moves the connecting thread to real-time (SCHED_FIFO)
    scheduling, and as root that succeeds even when real time is ignored: without a
    real-time kernel (`realtime=False`, franky-sim on a workstation) the thread goes back
    to normal scheduling, or it would starve every other process on the machine."""
    import os

    import franky

    cfg = franky.RealtimeConfig.Enforce if realtime else franky.RealtimeConfig.Ignore
    arm = franky.Robot(host, realtime_config=cfg)
    if not realtime and os.sched_getscheduler(0) != os.SCHED_OTHER:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    return arm


class FrankaArm:
    robot = "panda"
    command_size = 22
    people = "none"

    def __init__(
        self,
        host: str = "127.0.0.1",
        scenario: str = "reach",
        control_dt: float = 0.1,
        people: str = "none",
        realtime: bool = False,
    ) -> None:
        import franky

        self._f = franky
        self.arm = connect(host, realtime)
        self.arm.recover_from_errors()
        self.arm.joint_acceleration_limit.set(np.minimum(FR3_ACC, self.arm.joint_acceleration_limit.max).tolist())
        self.arm.joint_jerk_limit.set(np.minimum(FR3_JERK, self.arm.joint_jerk_limit.max).tolist())
        self.vmax = VEL_SHARE * np.asarray(self.arm.joint_velocity_limit.max, dtype=float)
        self.scenario, self.control_dt, self.people = scenario, float(control_dt), people
        self.max_rates = np.asarray(self.arm.joint_acceleration_limit.get(), dtype=float)  # as franky brakes
        self._model = PandaModel()  # kinematics only (never stepped): the supervisor's own model
        self.fault = ""  # franky's last motion error (the state is withheld while it stands)
        self.clamped = 0  # plans whose end velocity was cut to franky's limit
        self.sent = np.zeros(7)  # the joint velocities of the last motion given to franky

    # ------------------------------------------------------------ state
    def state(self) -> dict[str, np.ndarray | float]:
        try:
            self.arm.poll_motion()  # re-raises what franky's control thread hit since
        except Exception as exc:  # franky's own exception types (it shadows the builtin name)
            self.fault = f"{type(exc).__name__}: {exc}"[:200]  # stands until the host restarts
        s = self.arm.state
        q, dq, dq_d = np.array(s.q, float), np.array(s.dq, float), np.array(s.dq_d, float)
        pose = self._model.pose(q)
        pos, orn = pose["ee_pos"], pose["ee_orn"]
        jac = self._model.jacobian(q)
        out: dict[str, np.ndarray | float] = {
            "joint_pos": q,
            "joint_vel": dq,
            "ee_pos": pos,
            "ee_orn": orn,
            "ee_yaw": float(pose["ee_yaw"]),
            "ee_lin_vel": jac[:3] @ dq,
            "ee_ang_vel": jac[3:] @ dq,
            "gripper_width": OPEN,
            "cmd_vel": dq_d,  # what franky's controller asks for now: the next plan starts there
        }
        if self.fault:  # the supervisor refuses an incomplete state: it stops and latches
            del out["cmd_vel"]
        return out

    # ------------------------------------------------------------ motion
    def execute(self, values: np.ndarray, rates: np.ndarray) -> None:
        f = self._f
        v1 = np.asarray(values[14:21], dtype=float)
        cut = np.clip(v1, -self.vmax, self.vmax)
        self.clamped += bool(np.any(cut != v1))
        self.sent = cut
        hold = f.Duration(max(1, round(1000 * self.control_dt)))  # then franky ramps to zero itself
        self.arm.move(f.JointVelocityMotion(cut.tolist(), duration=hold), asynchronous=True)

    def brake(self, rates: np.ndarray) -> None:
        if not self.arm.is_in_control:  # (nothing moving: the server holds position)
            return
        self.arm.move(self._f.JointVelocityStopMotion(), asynchronous=True)  # within franky's (FR3) limits

    def close(self) -> None:
        try:
            if self.arm.is_in_control:
                self.arm.move(self._f.JointVelocityStopMotion(), asynchronous=True)
                self.arm.join_motion(timeout=2.0)
        except Exception:  # closing: the server holds the arm once the client is gone
            pass
        self._model.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--franka", default="127.0.0.1", help="the robot's (or franky-sim's) address")
    p.add_argument("--scenario", default="reach", help="the arm scenario whose task the agent approves")
    p.add_argument("--people", choices=("none", "sensor"), default="none")
    p.add_argument("--port", type=int, default=0, help="local port for the agent (0: a free one, printed)")
    p.add_argument("--window", type=float, default=0.03, help="seconds each period waits for its plan")
    p.add_argument("--realtime", action="store_true", help="require a real-time kernel (a real robot)")
    p.add_argument("--token-file", type=Path, required=True, help="pairing token the agent must prove it holds")
    p.add_argument("--log", type=Path, default=None, help="append one JSON line per period (speed, what moved it)")


def serve(args: argparse.Namespace) -> int:
    from qrobot.bridge.robot_host import RobotHost, serve_until_stopped
    from qrobot.bridge.robot_link import load_token
    from qrobot.scenario import load_scenario

    if not 0 <= args.port < 65536 or not 0.0 < args.window <= 0.05:
        raise QrobotError("robot-franka --port 0..65535 (0: a free one) and --window in (0, 0.05] s are accepted")
    if load_scenario(args.scenario).robot != "panda":
        raise QrobotError(f"robot-franka --scenario: {args.scenario} is not an arm scenario")
    try:
        token = load_token(args.token_file)
    except (ValueError, OSError) as exc:
        raise QrobotError(f"robot-franka --token-file: {args.token_file}: not a pairing token: {exc}") from None
    try:
        import franky  # noqa: F401
    except ImportError:
        raise QrobotError("robot-franka: franky-control is not installed (pip install 'qrobot[franka]')") from None
    try:
        arm = FrankaArm(args.franka, args.scenario, people=args.people, realtime=args.realtime)
    except Exception as exc:  # franky's connection errors (its own types)
        raise QrobotError(f"robot-franka --franka: cannot connect to {args.franka}: {exc}") from None
    log = args.log.open("a") if args.log else None
    host = RobotHost(arm, token, args.port, args.window, log)
    serve_until_stopped(host)
    return 0


def main(argv: list[str] | None = None) -> int:
    from qrobot.bridge.robot_host import host_main

    return host_main("python -m qrobot.bridge.franka", __doc__, add_arguments, serve, argv)


if __name__ == "__main__":
    sys.exit(main())
