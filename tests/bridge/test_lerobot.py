"""The LeRobot adapter (`qrobot.bridge.lerobot_arm`) against a stand-in with LeRobot's
`Robot` interface over a real PyBullet Panda (`lerobot_standin.py`):

- unit level, on an injected clock: the forced clamp to +-max_relative_target around the
  measured position (logged: requested != sent exactly where it clamped), missing feature
  keys refused by name, a brake that holds still, the measured pose and velocities;
- the chain: console + policy over Zenoh -> agent -> robot link -> `qrobot robot-lerobot`'s
  process -> stand-in: end-effector deltas move the joints, no target ever lies beyond the
  cap from where the arm was, and releasing the dead-man holds the arm still.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.cli import robot_supervisor
from qrobot.bridge.latch import Latch
from qrobot.bridge.lerobot_arm import LeRobotArm, main
from qrobot.bridge.robot_link import load_token
from qrobot.bridge.service import AgentService, ConsoleClient, PolicyClient
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.bridge.transport import config
from qrobot.robots.panda import EE_LINK, HOME
from qrobot.safety.supervisor import OperatorKey

from .lerobot_standin import MOTORS, StandInPanda
from .test_transport import _free_port, _wait

HERE = Path(__file__).parent
DEG = 180.0 / math.pi


class Clock:
    """A clock the test moves: the stand-in's physics and the adapter read the same one."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _arm(tmp_path: Path, cap: float = 0.1, **standin: bool) -> tuple[LeRobotArm, StandInPanda, Clock]:
    clock = Clock()
    robot = StandInPanda(clock=clock, **standin)
    robot.connect()
    return LeRobotArm(robot, MOTORS, "gripper", "deg", cap, tmp_path / "arm.jsonl", clock=clock), robot, clock


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def _joints(d: dict) -> np.ndarray:
    return np.array([d[f"{m}.pos"] for m in MOTORS])


def _plan(q0: Any, v0: np.ndarray, v1: np.ndarray, finger: float = 0.04) -> np.ndarray:
    return np.concatenate([q0, v0, v1, [finger]])


def test_a_request_beyond_the_cap_is_clamped_and_logged(tmp_path: Path) -> None:
    arm, robot, clock = _arm(tmp_path)
    try:
        st = arm.state()
        assert np.allclose(st["joint_pos"], HOME, atol=1e-12) and np.allclose(st["cmd_vel"], 0.0)
        v1 = np.array([0.5, 0.0, 0.0, -0.4, 0.0, 0.0, 0.3])
        arm.execute(_plan(st["joint_pos"], np.zeros(7), v1), arm.max_rates)  # moves 0.05 v1: within the cap
        clock.t += 0.1
        st = arm.state()
        assert np.allclose(st["cmd_vel"], v1) and np.allclose(st["joint_vel"], v1 * 0.5, atol=0.05)
        v0, v1 = v1, np.array([2.0, 0.0, 0.0, -0.4, 0.0, 0.0, -1.0])  # joint 1 asked 0.125 rad ahead: too far
        arm.execute(_plan(st["joint_pos"], v0, v1), arm.max_rates)
        clock.t += 0.1
        arm.state()
        first, second = _log(tmp_path / "arm.jsonl")
        assert not first["clamped"] and first["requested"] == first["sent"]
        assert second["clamped"] and second["requested"] != second["sent"]
        req, sent, present = (_joints(second[k]) / DEG for k in ("requested", "sent", "present"))
        assert req[0] - present[0] > 0.1 and math.isclose(sent[0] - present[0], 0.1, abs_tol=1e-9)
        assert np.array_equal(req[1:], sent[1:])  # only the joint beyond the cap
        assert robot.actions[-1] == second["sent"]  # what the robot received and said it sent
        assert second["sent"]["gripper.pos"] == 100.0 and arm.clamps == 1
        for line in (first, second):
            assert np.all(np.abs(_joints(line["sent"]) - _joints(line["present"])) <= 0.1 * DEG + 1e-9)
    finally:
        arm.close()
        robot.disconnect()


def test_missing_feature_keys_are_refused_by_name() -> None:
    robot = StandInPanda(gripper=False)
    with pytest.raises(ValueError, match=r"StandInPanda.action_features has no 'gripper.pos'"):
        LeRobotArm(robot, MOTORS, "gripper")
    with pytest.raises(ValueError, match=r"has no 'wrist_roll.pos'"):
        LeRobotArm(robot, [*MOTORS[:6], "wrist_roll"])
    with pytest.raises(ValueError, match="7 distinct arm motors"):
        LeRobotArm(robot, MOTORS[:6])
    with pytest.raises(ValueError, match="units"):
        LeRobotArm(robot, MOTORS, units="rev")


def test_a_brake_holds_the_arm_where_it_is(tmp_path: Path) -> None:
    arm, robot, clock = _arm(tmp_path)
    try:
        st = arm.state()
        v1 = np.array([1.0, -0.8, 0.0, 0.8, 0.0, 0.0, 1.0])
        arm.execute(_plan(st["joint_pos"], np.zeros(7), v1, finger=0.0), arm.max_rates)  # the gripper closes
        clock.t += 0.05  # mid-way through the period: the host took a halt
        arm.brake(arm.max_rates)
        held = [arm.state()["joint_pos"]]
        assert np.allclose(arm.state()["cmd_vel"], 0.0)
        for _ in range(10):  # one second of periods without plans
            clock.t += 0.1
            arm.brake(arm.max_rates)
            held.append(arm.state()["joint_pos"])
        moved = np.abs(held[-1] - HOME).max()
        assert moved > 0.02  # it had started moving...
        assert np.abs(np.array(held[3:]) - held[-1]).max() < 1e-3  # ...and stands still, no creep
        brakes = [line for line in _log(tmp_path / "arm.jsonl") if line["kind"] == "brake"]
        assert len(brakes) == 11 and all(b["sent"] == brakes[0]["sent"] and not b["clamped"] for b in brakes)
        assert np.allclose(_joints(brakes[0]["sent"]), _joints(brakes[0]["present"]))  # held where measured
        assert brakes[0]["sent"]["gripper.pos"] == 0.0 and arm.state()["gripper_width"] < 0.01
    finally:
        arm.close()
        robot.disconnect()


def test_pose_and_velocities_are_the_arms(tmp_path: Path) -> None:
    arm, robot, clock = _arm(tmp_path, velocities=True)  # the robot reports <motor>.vel: used as is
    try:
        st = arm.state()
        arm.execute(_plan(st["joint_pos"], np.zeros(7), np.array([0.6, 0.4, 0.0, 0.5, 0.0, -0.5, 0.0])), arm.max_rates)
        clock.t += 0.05
        st = arm.state()
        assert robot.physics is not None
        c, uid = robot.physics.sim._client, robot.physics.uid
        link = c.getLinkState(uid, EE_LINK, computeLinkVelocity=1, computeForwardKinematics=1)
        assert np.allclose(st["ee_pos"], link[4], atol=1e-6) and np.allclose(st["ee_orn"], link[5], atol=1e-6)
        assert np.allclose(st["ee_lin_vel"], link[6], atol=1e-6) and np.linalg.norm(st["ee_lin_vel"]) > 0.01
        measured = np.array([s[1] for s in c.getJointStates(uid, list(range(7)))])
        assert np.allclose(st["joint_vel"], measured, atol=1e-9)
        assert math.isclose(st["gripper_width"], 0.08, abs_tol=1e-3)
        assert set(st) == {
            "joint_pos", "joint_vel", "ee_pos", "ee_orn", "ee_yaw", "ee_lin_vel", "ee_ang_vel", "gripper_width", "cmd_vel"
        }  # fmt: skip
    finally:
        arm.close()
        robot.disconnect()


def test_bad_flags_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = ["--token-file", str(tmp_path / "t")]
    cases = [
        (["--robot-class", "nomodule", "--joints", ",".join(MOTORS)], "give module:Class"),
        (["--robot-class", "lerobot_standin:Nope", "--joints", ",".join(MOTORS)], "cannot import"),
        (["--robot-class", "x:Y", "--joints", "a,b"], "7 motor names"),
        (["--robot-class", "x:Y", "--joints", ",".join(MOTORS), "--max-relative-target", "2"], "rad per step"),
        (["--robot-class", "x:Y", "--joints", ",".join(MOTORS), "--gripper-range", "open"], "CLOSED,OPEN"),
    ]
    for argv, message in cases:
        assert main([*argv, *token]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


# ---------------------------------------------------------------- through a real agent
CAP = 0.025  # rad: below what the supervisor's plans ask per period at this speed, so the clamp acts
DRIVE = np.array([0.0, 0.8, 0.4, 0.0, 1.0])  # dx, dy, dz, dyaw, gripper (open)


def test_policy_drives_the_lerobot_arm_through_the_agent_and_the_dead_man_holds_it(tmp_path: Path) -> None:
    log, token_file = tmp_path / "arm.jsonl", tmp_path / "robot.token"
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=f"{HERE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    cmd = ["-m", "qrobot.bridge.lerobot_arm", "--robot-class", "lerobot_standin:StandInPanda"]
    cmd += ["--joints", ",".join(MOTORS), "--gripper", "gripper", "--max-relative-target", str(CAP)]
    host = subprocess.Popen(
        [sys.executable, *cmd, "--token-file", str(token_file), "--log", str(log)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    cleanup: list = []
    stop, driving = threading.Event(), threading.Event()
    sender = threading.Thread()
    try:
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line.startswith("listening 127.0.0.1:"), line
        adapter = SimAdapter(int(line.rsplit(":", 1)[1]), load_token(token_file))
        cleanup.append(adapter.close)
        assert adapter.robot == "panda" and adapter.hello.people == "none"
        certs.init(tmp_path / "keys")
        endpoint = f"tls/127.0.0.1:{_free_port()}"
        key = OperatorKey()
        core = AgentCore(5, Latch(tmp_path / "estop.json"), Timing(), people=True)
        agent = Agent(adapter, robot_supervisor(adapter, key), core, key)  # the agent's own supervisor
        threading.Thread(target=agent.run, args=(stop,), daemon=True).start()
        sessions = [zenoh.open(config("agent", tmp_path / "keys", listen=endpoint, robot="r1"))]
        service = AgentService(agent, sessions[0], "r1")
        sessions += [zenoh.open(config(role, tmp_path / "keys", connect=endpoint)) for role in ("console", "policy")]
        cleanup += [s.close for s in sessions] + [service.close]
        console, policy = ConsoleClient(sessions[1], "r1"), PolicyClient(sessions[2], "r1")
        cleanup += [policy.close, console.close]

        def drive() -> None:
            while not stop.is_set():
                if driving.is_set():
                    policy.send(np.stack([DRIVE] * 5))
                time.sleep(0.1)

        sender = threading.Thread(target=drive, daemon=True)
        sender.start()
        assert _wait(lambda: console.watch.status is not None and policy.watch.status is not None, 10.0)
        policy.sync()
        policy.acquire()
        console.deadman.set()
        assert _wait(lambda: core._operator_ok(agent.clock()) == "", 3.0)
        console.request("enable")
        assert _wait(lambda: core.state == State.ENABLED, 3.0), core.audit[-5:]
        start = policy.watch.robot_state()["ee_pos"].copy()
        driving.set()
        assert _wait(lambda: core.state == State.RUNNING, 3.0), core.audit[-5:]
        assert _wait(lambda: policy.watch.robot_state()["ee_pos"][1] - start[1] > 0.08, 10.0), core.audit[-5:]
        moved = policy.watch.robot_state()["ee_pos"] - start
        assert moved[2] > 0.02  # up as well as sideways: the stand-in's joints followed the plans
        steps = _log(log)
        executed = [s for s in steps if s["kind"] == "execute"]
        assert any(s["clamped"] for s in executed) and any(not s["clamped"] for s in executed)  # the cap acted
        assert np.abs(_joints(executed[-1]["present"]) - HOME * DEG).max() > 5.0  # degrees

        console.deadman.clear()  # the operator lets go
        released = time.time()
        assert _wait(lambda: core.state == State.IDLE, 1.0), core.audit[-5:]
        time.sleep(1.5)
        steps = _log(log)
        for s in steps:  # every target the robot got lay within the cap of where it was
            assert np.abs(_joints(s["sent"]) - _joints(s["present"])).max() <= CAP * DEG + 1e-9, s
        after = [s for s in steps if s["wall"] > released + 0.5]
        assert len(after) >= 8 and all(s["kind"] == "brake" and s["sent"] == after[0]["sent"] for s in after)
        spread = np.ptp(np.array([_joints(s["present"]) for s in after]), axis=0).max()
        print(
            f"{len(executed)} plans executed, {sum(s['clamped'] for s in steps)} clamped; held within {spread:.4f} deg"
        )
        assert spread < 0.05  # degrees: held still
        assert agent.halts
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(2.0)
        for close in cleanup[::-1]:
            try:
                close()
            except Exception:
                pass
        if host.poll() is None:
            host.send_signal(signal.SIGTERM)
            try:
                host.wait(10)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait(5)
