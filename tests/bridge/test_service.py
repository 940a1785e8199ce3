"""End to end over real Zenoh peers (mutual TLS, the agent's default-deny access list,
multicast off, a free loopback port): the agent drives the simulated robot process; a
console enables it with a held dead-man; a policy syncs its clock, leases and drives with
expiring chunks; the policy's certificate cannot reset an e-stop; releasing the dead-man
halts the robot."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import zenoh

from qrobot.bridge import keys as certs
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.latch import Latch
from qrobot.bridge.service import AgentService, ConsoleClient, PolicyClient
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.bridge.transport import config
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor

from .test_robot_sim import _periods, robot, token  # noqa: F401  (the robot process fixture)
from .test_transport import _free_port, _wait

FORWARD = np.array([1.0, 0.0, -1.0])


def test_console_and_policy_drive_the_robot_through_the_agent(robot: tuple[int, Path], tmp_path: Path) -> None:  # noqa: F811
    port, log = robot
    certs.init(tmp_path / "keys")
    endpoint = f"tls/127.0.0.1:{_free_port()}"
    adapter = SimAdapter(port, token(log))
    key = OperatorKey()
    sup = Supervisor(
        default_limits(adapter.robot, adapter.hello.control_dt), (0.5, 1.2), operator=key, people=adapter.hello.people
    )  # type: ignore[arg-type]
    core = AgentCore(3, Latch(tmp_path / "estop.json"), Timing(), people=True)
    agent = Agent(adapter, sup, core, key)
    stop = threading.Event()
    loop = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    loop.start()
    sessions = [zenoh.open(config("agent", tmp_path / "keys", listen=endpoint, robot="r1"))]
    service = AgentService(agent, sessions[0], "r1")
    sessions += [zenoh.open(config(role, tmp_path / "keys", connect=endpoint)) for role in ("console", "policy")]
    console, policy = ConsoleClient(sessions[1], "r1"), PolicyClient(sessions[2], "r1")
    driving, parked = threading.Event(), threading.Event()

    def drive() -> None:
        while not (stop.is_set() or parked.is_set()):
            if driving.is_set():
                policy.send(np.stack([FORWARD] * 3))
            time.sleep(0.1)

    sender = threading.Thread(target=drive, daemon=True)
    try:
        assert _wait(lambda: console.watch.status is not None and policy.watch.status is not None, 10.0)
        uncertainty = policy.sync()
        assert 0.0 <= uncertainty < 0.02
        policy.acquire()
        console.deadman.set()
        assert _wait(lambda: core._operator_ok(agent.clock()) == "", 3.0)
        console.request("enable")
        assert _wait(lambda: core.state == State.ENABLED, 3.0), core.audit[-5:]
        driving.set()
        sender.start()
        assert _wait(lambda: core.state == State.RUNNING, 3.0), core.audit[-5:]
        assert _wait(lambda: any(p["speed"] > 0.45 for p in _periods(log)), 5.0)
        assert _wait(lambda: policy.watch.robot_state().get("base_vel", np.zeros(2))[0] > 0.4, 2.0)  # status carries it

        for _op in ("enable", "reset"):  # the policy's certificate may not: the access list drops them
            sessions[2].put("qrobot/r1/request", b"")  # (any payload: it never arrives)
        console.deadman.clear()  # the operator lets go
        released = time.time()
        assert _wait(lambda: core.state == State.IDLE, 1.0), core.audit[-5:]
        assert agent.halts and "dead-man released" in core.audit[-1][2] + "".join(a[2] for a in core.audit[-4:])
        time.sleep(0.8)
        assert max(p["speed"] for p in _periods(log) if p["wall"] > released + 0.5) < 1e-3
        assert not any(kind == "reject" and "policy" in why for _, kind, why in core.audit)  # nothing arrived
        parked.set()  # (a send after the close would raise in the sender's thread)
        sender.join(2.0)
        policy.close()  # its liveliness token goes: logged as presence, never acted on
        assert _wait(lambda: ("presence", "policy gone") in [a[1:] for a in core.audit], 3.0)
        present = [a[1:] for a in core.audit if a[1] == "presence"]
        assert ("presence", "console present") in present and ("presence", "policy present") in present
    finally:
        stop.set()
        parked.set()
        if sender.is_alive():
            sender.join(2.0)
        console.close()
        if not policy._stop.is_set():
            policy.close()
        service.close()
        for s in sessions[::-1]:
            s.close()
        adapter.close()
