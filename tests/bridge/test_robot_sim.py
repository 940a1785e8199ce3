"""The simulated robot process behaves like hardware: it executes only plans sealed by the
supervisor that paired with it, and when its agent is SIGKILLed mid-motion its own
watchdog brakes it (no plan: the last one runs out into its stop) and it comes to rest."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qrobot.bridge.robot_link import LINK_VERSION, Pair, Plan, load_token, proof
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import Supervisor

FORWARD = np.array([1.0, 0.0, -1.0])  # full speed ahead, never "done"


def _spawn(args: list[str], **kw: object) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, **kw
    )  # type: ignore[call-overload]


@pytest.fixture()
def robot(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    log = tmp_path / "robot.jsonl"
    proc = _spawn(
        [
            "-m",
            "qrobot.bridge.robot_sim",
            "pointnav",
            "--seed",
            "0",
            "--log",
            str(log),
            "--token-file",
            str(tmp_path / "robot.token"),
        ]
    )
    line = proc.stdout.readline()  # type: ignore[union-attr]
    assert line.startswith("listening 127.0.0.1:"), line
    yield int(line.rsplit(":", 1)[1]), log
    proc.send_signal(signal.SIGTERM)
    proc.wait(10)


def _periods(log: Path) -> list[dict]:
    return [p for p in map(json.loads, log.read_text().splitlines()) if "how" in p]


def _halts(log: Path) -> list[float]:
    """Wall times at which the robot process took a halt."""
    return [p["wall"] for p in map(json.loads, log.read_text().splitlines()) if "halt" in p]


def _supervisor(adapter: SimAdapter) -> Supervisor:
    sup = Supervisor(default_limits(adapter.robot, adapter.hello.control_dt), (0.5, 1.2), people="none")
    return sup


def _nav_state(st: dict) -> dict:
    return {k: v for k, v in st.items() if k not in ("people", "people_radius")}  # pointnav: nobody present


def token(log: Path) -> bytes:
    return load_token(log.parent / "robot.token")  # (the fixture's robot made it)


def drive(port: int, token_file: Path) -> None:
    """The agent side, run as its own process (killed by the test): pairs, then drives."""
    adapter = SimAdapter(port, load_token(token_file))
    sup = _supervisor(adapter)
    sup.bind(adapter)
    said = False
    while True:
        st = adapter.state()
        if st is None:
            continue
        out = sup.filter(FORWARD, _nav_state(st))
        adapter.send(out, sup.last_action)
        if not said and float(st["base_vel"][0]) > 0.45:
            print("moving", flush=True)
            said = True


def test_agent_killed_mid_motion_the_robot_brakes_by_itself(robot: tuple[int, Path]) -> None:
    port, log = robot
    agent = _spawn([__file__, str(port), str(log.parent / "robot.token")])
    try:
        line = agent.stdout.readline()  # type: ignore[union-attr]
        assert line.strip() == "moving", line
        os.kill(agent.pid, signal.SIGKILL)
        killed = time.time()
    finally:
        agent.kill()
        agent.wait(10)
    time.sleep(1.2)
    after = [p for p in _periods(log) if p["wall"] > killed]
    assert after, "the robot stopped stepping"
    assert sum(p["how"] == "plan" for p in after) <= 1  # at most the plan already in flight
    first = next(i for i, p in enumerate(after) if p["how"] == "watchdog")
    dt = 0.1
    # the watchdog fires at the first period without a plan (<= one period after the kill); its
    # record is written when that period's physics ends, in real time; CI adds scheduling delay
    assert after[first]["wall"] - killed <= 2 * dt + 0.1
    speeds = [p["speed"] for p in after[first:]]
    brake_periods = int(np.ceil(0.5 / 1.5 / dt)) + 1  # v_max / v_acc, plus the period in flight
    assert speeds[0] > 0.1  # still moving when the watchdog fired...
    assert max(speeds[brake_periods:]) < 1e-3  # ...and at rest within the braking time
    assert all(b <= a + 1e-6 for a, b in itertools.pairwise(speeds))  # never speeding up


def test_only_the_paired_supervisors_plans_move_the_robot(robot: tuple[int, Path]) -> None:
    port, log = robot
    adapter = SimAdapter(port, token(log))
    paired, stranger = _supervisor(adapter), _supervisor(adapter)
    paired.bind(adapter)
    with pytest.raises((ConnectionError, OSError)):  # a second agent is turned away by the robot
        SimAdapter(port, token(log), timeout=1.0)
    for _ in range(8):  # plans issued by another supervisor: refused, the robot stays still
        st = adapter.state()
        assert st is not None
        adapter.send(stranger.filter(FORWARD, _nav_state(st)), None)
    for _ in range(8):  # the paired supervisor's plans move it
        st = adapter.state()
        assert st is not None
        adapter.send(paired.filter(FORWARD, _nav_state(st)), paired.last_action)
    st = adapter.state()
    adapter.close()
    time.sleep(0.3)
    periods = _periods(log)
    assert sum(p["how"] == "rejected" for p in periods) >= 7
    assert all(p["speed"] < 1e-3 for p in periods if p["how"] == "rejected")
    assert sum(p["how"] == "plan" for p in periods) >= 7 and float(st["base_vel"][0]) > 0.4  # type: ignore[index]


def test_pairing_needs_the_token_and_sane_braking(robot: tuple[int, Path]) -> None:
    """Whoever reaches the robot's port first gets nothing without the token; a pairing
    asking for braking below half the robot's own, or a malformed plan, drops the link
    (the robot process survives and brakes); a malformed plan is refused."""
    port, log = robot
    for tok, rates in ((b"x" * 32, None), (token(log), [1e-6, 1e-6]), (token(log), [1.0, 1.0, 1.0])):
        adapter = SimAdapter(port, tok)
        if rates is None:
            Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people="none").bind(adapter)
        else:
            adapter.link.send(
                Pair(version=LINK_VERSION, secret=b"s" * 32, rates=rates, proof=proof(tok, adapter.hello.nonce))
            )
        with pytest.raises(ConnectionError):
            for _ in range(5):
                if adapter.state(0.3) is None:
                    continue
        adapter.close()
    adapter = SimAdapter(port, token(log))  # the rightful agent still pairs; a malformed plan is refused
    _supervisor(adapter).bind(adapter)
    assert adapter.state() is not None
    adapter.link.send(Plan(version=LINK_VERSION, period=adapter.period, seq=2**63, values=b"1234567", seal=b""))
    assert adapter.state() is not None and adapter.state() is not None  # the robot process lives on
    adapter.close()
    time.sleep(0.2)
    assert _periods(log)[-3]["how"] in ("rejected", "watchdog") and "rejected" in {p["how"] for p in _periods(log)}


if __name__ == "__main__":
    drive(int(sys.argv[1]), Path(sys.argv[2]))


@pytest.mark.parametrize("scenario", ["pick_place", "pointnav"])
def test_the_link_carries_each_robots_state_as_the_supervisor_reads_it(scenario: str) -> None:
    """Scalars stay scalars (the arm's ee_yaw and gripper width): the supervisor on the
    far side of the link accepts the state exactly as it accepts the in-process one."""
    from qrobot.envs.core import QRobotEnv

    from qrobot.bridge.robot_link import LINK_VERSION, RobotState, pack_state, unpack_state
    from qrobot.safety.inputs import fields as state_fields
    from qrobot.safety.inputs import read_robot_state

    env = QRobotEnv(scenario, images=False)
    env.reset(seed=3)
    state = env.supervisor_state()
    fields, shapes = pack_state({k: v for k, v in state.items() if k != "time"})
    back = unpack_state(RobotState(version=LINK_VERSION, period=0, time=state["time"], fields=fields, shapes=shapes))
    for key, value in state.items():
        assert np.shape(back[key]) == np.shape(value) and np.allclose(back[key], value), key
    spec = state_fields(env.limits)
    assert read_robot_state(back, spec)[1] == "" and read_robot_state(state, spec)[1] == ""
    env.close()


def test_a_replay_that_misses_its_period_says_so(robot: tuple[int, Path]) -> None:
    """`agent-replay` drives a real-time robot: a plan of the replay's own that comes after
    its period is braked by the robot's watchdog, and the replay counts it (its path is no
    longer the original's), while one in time is not counted."""
    from qrobot.bridge.replay import replay

    port, log = robot
    adapter = SimAdapter(port, load_token(log.parent / "robot.token"))
    sup = _supervisor(adapter)
    slow, real = {3}, sup.filter

    def filter_(action: np.ndarray, st: dict) -> object:
        if len(calls) in slow:
            time.sleep(0.15)  # past the 30 ms window and the next period's start
        calls.append(1)
        return real(action, st)

    calls: list[int] = []
    sup.filter = filter_  # type: ignore[method-assign]
    records = [{"kind": "plan", "t": float(i), "period": i, "action": FORWARD * 0.3, "episode": 0} for i in range(8)]
    try:
        done = replay(records, adapter, sup)
    finally:
        adapter.close()
    hows = [p["how"] for p in _periods(log)]
    assert done["plans"] == 8 and done["late"] >= 1, done
    assert hows.count("plan") == 8 - done["late"]  # each late one counted, and only those
    assert hows[hows.index("plan") :][:3] == ["plan"] * 3  # the plans before the slow one ran in time
