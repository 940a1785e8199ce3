"""A Franka arm through the agent, proven against `franky-sim` (the libfranka network
protocol over MuJoCo; an FR3): the robot host drives it with franky-control, the agent's
supervisor runs the FR3 limits profile in front of it.

- An over-limit joint velocity sent straight to the driver never reaches the arm: the
  joint speeds read back from franky-sim stay under franky's own limit.
- A scripted reach controller drives the arm through the agent with full-scale actions
  (faster than the collaborative Cartesian limit allows): the arm's measured speeds stay
  inside the FR3 profile, it reaches its target, and the released dead-man stops it.
- The host process SIGKILLed mid-motion: franky-sim holds the arm.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.cli import robot_supervisor
from qrobot.bridge.franka import connect
from qrobot.bridge.latch import Latch
from qrobot.bridge.robot_link import load_token
from qrobot.bridge.service import AgentService, ConsoleClient, PolicyClient
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.bridge.transport import config
from qrobot.safety.limits import FR3_ARM
from qrobot.safety.supervisor import OperatorKey

from .leases import retake_lease
from .test_robot_sim import _spawn
from .test_transport import _free_port, _wait

FR3_VMAX = np.array(FR3_ARM["joint_vel_max"])
EE_SPEED = 0.25  # m/s: the profile's collaborative Cartesian limit
FR3_HW_VMAX = np.array([2.62, 2.62, 2.62, 2.62, 5.26, 4.18, 5.26])  # rad/s: Franka's published FR3 limits

# the real-time rigs (fault tables, franky-sim) run one after another on one worker:
# franky-sim's 1 kHz loop beside a fault table would load the machine it measures
pytestmark = pytest.mark.xdist_group("realtime")


def _free_loopback() -> str:
    """A loopback address whose port 1337 is free: franky-sim always listens on 1337, so
    tests running at once (pytest -n 2) each take their own 127.0.0.x."""
    for k in range(os.getpid() % 200, os.getpid() % 200 + 250):
        host = f"127.0.0.{2 + k % 250}"
        with socket.socket() as s:
            try:
                s.bind((host, 1337))
            except OSError:
                continue
        return host
    raise RuntimeError("no loopback address with port 1337 free")


@pytest.fixture()
def franky_sim() -> Iterator[str]:
    """franky-sim on a loopback address of its own; yields that address."""
    host = _free_loopback()
    exe = Path(sys.executable).parent / "franky-sim"
    proc = subprocess.Popen(
        [str(exe), "-s", "mujoco", "--hostname", host],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    for line in proc.stdout:  # type: ignore[union-attr]
        if "Connect to the server using" in line or time.monotonic() > deadline:
            break
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # type: ignore[union-attr]
    yield host
    proc.send_signal(signal.SIGTERM)  # (franky-sim stops on SIGTERM at once)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_an_over_limit_velocity_never_reaches_the_arm(franky_sim: str) -> None:
    from qrobot.bridge.franka import FrankaArm

    arm = FrankaArm(franky_sim)
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # (libfranka made it SCHED_FIFO: it starved the suite)
    try:
        st = arm.state()
        plan = np.zeros(22)
        plan[:7], plan[14:21] = st["joint_pos"], [0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0]  # 5 rad/s on joint 4
        peak, sent = 0.0, []
        for _ in range(8):
            arm.execute(plan, arm.max_rates)
            sent.append(arm.sent.copy())
            for _ in range(10):
                time.sleep(0.01)
                peak = max(peak, abs(float(arm.arm.current_joint_velocities[3])))  # read back from franky-sim
        assert arm.clamped == 8 and not arm.fault
        # what franky was given: cut to 95 % of franky's own limit, exactly
        assert all(s[3] == arm.vmax[3] < FR3_HW_VMAX[3] and not s[[0, 1, 2, 4, 5, 6]].any() for s in sent), sent
        # what the arm did: below the FR3's own limit. franky-sim tracks the command in no real
        # time: on an idle machine the peak is the cut (2.07); with two suites at once on two
        # cores it overshot it once, to 2.20, which the 5 % margin is for
        assert 1.0 < peak < FR3_HW_VMAX[3], peak
        arm.brake(arm.max_rates)
        assert _wait(lambda: float(np.abs(arm.arm.current_joint_velocities).max()) < 0.01, 2.0)
    finally:
        arm.close()


class Chain:
    """franky-sim, the robot host (its own process), the agent with the FR3 profile, a
    console holding the dead-man, a policy."""

    def __init__(self, tmp: Path, franka: str) -> None:
        token_file = tmp / "robot.token"
        flags = ["--franka", franka, "--token-file", str(token_file), "--port", "0"]
        self.host = _spawn(["-m", "qrobot.bridge.franka", *flags])
        line = self.host.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("listening 127.0.0.1:"), line
        self.adapter = SimAdapter(int(line.rsplit(":", 1)[1]), load_token(token_file))
        key = OperatorKey()
        self.sup = robot_supervisor(self.adapter, key, "fr3")
        self.core = AgentCore(5, Latch(tmp / "estop.json"), Timing(), people=True, motion=((0, 1, 2), (3,)))
        self.agent = Agent(self.adapter, self.sup, self.core, key)
        self.stop = threading.Event()
        threading.Thread(target=self.agent.run, args=(self.stop,), daemon=True).start()
        certs.init(tmp / "keys")
        endpoint = f"tls/127.0.0.1:{_free_port()}"
        self.sessions = [zenoh.open(config("agent", tmp / "keys", listen=endpoint, robot="fr3"))]
        self.service = AgentService(self.agent, self.sessions[0], "fr3")
        self.sessions += [zenoh.open(config(r, tmp / "keys", connect=endpoint)) for r in ("console", "policy")]
        self.console, self.policy = ConsoleClient(self.sessions[1], "fr3"), PolicyClient(self.sessions[2], "fr3")
        assert _wait(lambda: self.policy.watch.robot_state().get("ee_pos") is not None, 10.0)
        assert self.policy.sync() < 0.02
        self.policy.acquire()
        self.console.deadman.set()
        assert _wait(lambda: self.core._operator_ok(self.agent.clock()) == "", 3.0)
        assert self.console.request("enable").ok  # type: ignore[union-attr]

    def robot(self) -> dict[str, np.ndarray]:
        return self.policy.watch.robot_state()

    def close(self) -> None:
        self.stop.set()
        self.console.close()
        self.policy.close()
        self.service.close()
        for s in self.sessions[::-1]:
            s.close()
        self.adapter.close()
        if self.host.poll() is None:
            self.host.send_signal(signal.SIGTERM)
            try:
                self.host.wait(10)
            except subprocess.TimeoutExpired:  # (a loaded machine: the host brakes and disconnects slowly)
                self.host.kill()
                self.host.wait()


@pytest.fixture()
def chain(franky_sim: str, tmp_path: Path) -> Iterator[Chain]:
    c = Chain(tmp_path, franky_sim)
    c.franka = franky_sim
    yield c
    c.close()


def _reach(chain: Chain, target: np.ndarray, seconds: float) -> list[dict[str, np.ndarray]]:
    """The scripted reach controller: full-scale end-effector deltas towards the target,
    one chunk per period (it asks for more than the limits allow on purpose), keeping control
    as a loaded machine can take it away (`_in_control`)."""
    seen = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        _in_control(chain)
        st = chain.robot()
        seen.append(st)
        err = target - st["ee_pos"]
        if np.linalg.norm(err) < 0.005 and np.linalg.norm(st["ee_lin_vel"]) < 0.01:
            break
        # half the error per period (25 mm at 1; the state lags a period or two); saturates far
        # away, on every axis: up to sqrt(3) x the Cartesian limit
        step = np.clip(0.5 * err / 0.025, -1.0, 1.0)
        chain.policy.send(step_chunk(step))
        time.sleep(0.1)
    return seen


def _path(seen: list[dict[str, np.ndarray]]) -> float:
    """How far the hand travelled, in metres."""
    return float(np.linalg.norm(np.diff([s["ee_pos"] for s in seen], axis=0), axis=1).sum()) if len(seen) > 1 else 0.0


def _along(moves: np.ndarray, commanded: np.ndarray) -> float:
    """The share of the hand's travel along the directions commanded (1: all of it), move i
    paired with command i."""
    moves = moves[: len(commanded)]
    unit = commanded[: len(moves)] / np.maximum(np.linalg.norm(commanded[: len(moves)], axis=1, keepdims=True), 1e-9)
    return float((moves * unit).sum() / max(float(np.linalg.norm(moves, axis=1).sum()), 1e-9))


def step_chunk(step: np.ndarray) -> np.ndarray:
    """Three entries, one per period, easing off (the next chunk replaces them)."""
    return np.array([[*(step * share), 0.0, 1.0] for share in (1.0, 0.5, 0.0)])


def test_the_agent_drives_franky_sim_within_the_fr3_profile(chain: Chain) -> None:
    start = chain.robot()["ee_pos"].copy()
    target = start + np.array([0.08, 0.12, -0.12])
    seen = _reach(chain, target, 15.0)
    final = chain.robot()["ee_pos"]
    assert np.linalg.norm(final - target) < 0.02, (final, target)
    ee = max(float(np.linalg.norm(s["ee_lin_vel"])) for s in seen)
    joints = np.max([np.abs(s["joint_vel"]) for s in seen], axis=0)
    assert 0.15 < ee <= EE_SPEED + 0.03, ee  # measured by franky-sim, read back through the host
    assert np.all(joints <= FR3_VMAX), joints
    assert chain.sup.counts().get("interventions", 0) > 0  # the supervisor cut the requests
    # moving again, then the operator lets go: the arm stops
    seen = _reach(chain, start, 1.2)
    assert max(float(np.linalg.norm(s["ee_lin_vel"])) for s in seen[-3:]) > 0.1
    chain.console.deadman.clear()
    released = time.monotonic()
    assert _wait(lambda: chain.core.state == State.IDLE, 1.0)
    assert _wait(lambda: _at_rest(chain.robot()), 2.0), chain.robot()["joint_vel"]
    assert time.monotonic() - released < 1.0


def _at_rest(st: dict[str, np.ndarray]) -> bool:
    """The hand still. (franky-sim's hold controller leaves the light wrist, joint 7, in a
    limit cycle of about 0.08 rad/s around the held position: it does not move the hand.)"""
    return float(np.linalg.norm(st["ee_lin_vel"])) < 0.005 and float(np.abs(st["joint_vel"][:6]).max()) < 0.01


def test_the_host_killed_mid_motion_franky_sim_holds_the_arm(chain: Chain) -> None:
    start = chain.robot()["ee_pos"].copy()
    seen = _reach(chain, start + np.array([0.0, 0.2, 0.0]), 0.8)
    assert float(np.linalg.norm(seen[-1]["ee_lin_vel"])) > 0.1
    os.kill(chain.host.pid, signal.SIGKILL)
    chain.host.wait(5)
    time.sleep(0.5)
    arm = connect(chain.franka)  # the server takes a new client
    q0 = np.array(arm.current_joint_positions)
    time.sleep(0.3)
    assert float(np.abs(arm.current_joint_velocities[:6]).max()) < 0.01  # (the wrist: see _at_rest)
    assert float(np.abs(np.array(arm.current_joint_positions) - q0)[:6].max()) < 1e-3


def _in_control(chain: Chain) -> None:
    """The policy holds a fresh lease and the agent is enabled, again if a loaded machine
    took either away: a late operator heartbeat sends the agent IDLE, and retains starved
    for 0.5 s make the lease stale; both rightly stop the arm (their own tests say so).
    These tests are about motion and its limits, so they take control back as a policy
    runner does between episodes (`RemoteEnv.reset`)."""
    retake_lease(chain.core, chain.policy, chain.agent.clock)
    if chain.core.state == State.IDLE:
        assert _wait(lambda: chain.core._operator_ok(chain.agent.clock()) == "", 3.0)
        assert chain.console.request("enable").ok  # type: ignore[union-attr]


class Twin:
    """What the VLA sees: the pick_place scene in PyBullet with its arm mirrored from the
    arm's measured joints (franky-sim renders no cameras). Only perception is simulated
    here; the motion is franky-sim's, commanded through the agent. The cube is virtual:
    the arm can approach it, not move it."""

    def __init__(self, seed: int) -> None:
        from qrobot.envs.core import QRobotEnv

        self.env = QRobotEnv("pick_place", images=True)
        self.obs, _ = self.env.reset(seed=seed)

    def see(self, joints: np.ndarray) -> dict:
        sim, uid = self.env.sim, self.env.robot.uid
        for i, q in enumerate(joints):
            sim._client.resetJointState(uid, i, float(q))
        sim.version += 1  # (the env's state cache keys on it)
        return self.env._obs()

    def cube(self) -> np.ndarray:
        """Where the named cube is (the one the instruction asks for)."""
        return np.asarray(self.env.privileged_state()["target_pose"][0], dtype=float)


@pytest.fixture()
def vla_twin() -> Iterator[tuple[Twin, Any]]:
    """The twin scene and the shipped pick_place VLA, loaded before the chain takes its
    lease (as a policy process loads its model before it leases a robot): loading holds
    the interpreter long enough on a loaded machine to starve the lease's retains."""
    from qrobot.policies import SHIPPED
    from qrobot.policies.vla import VLAPolicy

    twin = Twin(seed=20001)  # (a CI-range seed)
    policy = VLAPolicy(SHIPPED["pick_place"], seed=20001, robot="panda")
    policy.reset(twin.obs["instruction"])
    yield twin, policy
    twin.env.close()


def test_the_vla_drives_the_arm_through_the_agent(vla_twin: tuple[Twin, Any], chain: Chain) -> None:
    twin, policy = vla_twin  # (requested before `chain`: pytest builds it first)
    start = np.asarray(twin.env.robot_state()["ee_pos"])
    _reach(chain, start, 10.0)  # where the VLA's episodes begin
    assert np.linalg.norm(chain.robot()["ee_pos"] - start) < 0.02, "the scripted reach did not get to the start"
    seen, sent = [], []
    for _ in range(60):  # until the hand has travelled 8 cm over at least 12 commands
        _in_control(chain)
        seen.append(chain.robot())
        if len(sent) >= 12 and _path(seen) >= 0.08:
            break
        action = np.asarray(policy.act(twin.see(seen[-1]["joint_pos"])), dtype=float)
        chain.policy.send(np.stack([action] * 3))
        sent.append(action[:3])
        time.sleep(0.1)
    # The hand goes where the VLA's deltas say, a period or two later (the state lags). Which
    # cube it heads for is the model's skill, measured by `qrobot eval` (named cube moved 80 %
    # on the test split): with franky-sim's timing in the loop no two runs see the same frames,
    # and one in a few went for another cube than the named one.
    moves = np.diff([s["ee_pos"] for s in seen], axis=0)
    along = max(_along(moves[lag:], np.array(sent)) for lag in range(4))
    rejects = [a for a in chain.core.audit if a[1] in ("reject", "lease_refused", "state")][-8:]
    print(f"VLA path {_path(seen):.3f} m over {len(sent)} commands, along the commands {along:.2f}")
    assert _path(seen) >= 0.05 and along > 0.7, (_path(seen), along, rejects)
    assert max(float(np.linalg.norm(s["ee_lin_vel"])) for s in seen) <= EE_SPEED + 0.03
    assert np.all(np.max([np.abs(s["joint_vel"]) for s in seen], axis=0) <= FR3_VMAX)
