"""`qrobot robot-sim` and `qrobot agent`: the two processes on the robot's side."""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError


def add_parsers(sub: Any) -> None:
    from qrobot.bridge.robot_sim import add_arguments

    add_arguments(sub.add_parser("robot-sim", help="a simulated robot process that behaves like hardware (bridge)"))
    a = sub.add_parser("agent", help="the robot-side agent: supervisor, deadlines, lease, e-stop latch (bridge)")
    a.add_argument("--robot", required=True, help="HOST:PORT of the robot process (qrobot robot-sim)")
    a.add_argument("--robot-token", type=Path, required=True, help="the robot process's --token-file")
    a.add_argument("--keys", type=Path, required=True, help="directory from `qrobot keys init` (agent.pem, ca.pem)")
    a.add_argument("--listen", required=True, help="Zenoh endpoint, e.g. tls/127.0.0.1:7447")
    a.add_argument("--name", default="robot", help="the robot's name in key expressions (qrobot/NAME/...)")
    a.add_argument("--latch", type=Path, default=Path("estop.json"), help="the e-stop latch file")
    a.add_argument("--audit", type=Path, default=Path("agent_audit.jsonl"), help="JSONL audit log (appended)")


def dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "robot-sim":
        from qrobot.bridge.robot_sim import serve

        return serve(args)
    return _agent(args)


def _check(args: argparse.Namespace) -> tuple[str, int]:
    host, _, port = str(args.robot).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QrobotError(f"agent --robot: {args.robot!r} is not HOST:PORT")
    for name in ("ca.pem", "agent.pem", "agent.key"):
        if not (args.keys / name).is_file():
            raise QrobotError(f"agent --keys: {args.keys / name} missing (make them with `qrobot keys init DIR`)")
    if not str(args.listen).startswith("tls/"):
        raise QrobotError(f"agent --listen: {args.listen!r}: only tls/HOST:PORT endpoints (mutual TLS) are accepted")
    if not args.name.replace("_", "").replace("-", "").isalnum():
        raise QrobotError(f"agent --name: {args.name!r}: letters, digits, - and _ only")
    return host, int(port)


def _agent(args: argparse.Namespace) -> int:
    import zenoh

    from qrobot.bridge.agent import Agent
    from qrobot.bridge.agent_core import AgentCore, Timing
    from qrobot.bridge.latch import Latch
    from qrobot.bridge.service import AgentService
    from qrobot.bridge.sim_adapter import SimAdapter
    from qrobot.bridge.transport import config
    from qrobot.safety.limits import default_limits
    from qrobot.safety.supervisor import OperatorKey, Supervisor

    host, port = _check(args)
    try:
        token = bytes.fromhex(args.robot_token.read_text().strip())
    except (OSError, ValueError):
        raise QrobotError(f"agent --robot-token: {args.robot_token} is not a readable hex token "
                          "(the robot process's --token-file)") from None
    try:
        adapter = SimAdapter(port, token, host)
    except OSError as exc:
        raise QrobotError(f"agent --robot: cannot reach the robot at {host}:{port} ({exc})") from None
    kin = _kinematics(adapter.robot)
    key = OperatorKey()  # the console's reset releases the supervisor through the agent
    scale = (0.025, 0.25) if adapter.robot == "panda" else (0.5, 1.2)
    sup = Supervisor(default_limits(adapter.robot, adapter.hello.control_dt), scale, kinematics=kin,
                     operator=key, people=adapter.hello.people)  # type: ignore[arg-type]
    core = AgentCore(3 if adapter.robot == "diffbot" else 5, Latch(args.latch), Timing(),
                     people=adapter.hello.people in ("sensor", "none"))
    agent = Agent(adapter, sup, core, key)
    session = zenoh.open(config("agent", args.keys, listen=args.listen, robot=args.name))
    service = AgentService(agent, session, args.name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(f"agent for {adapter.robot} ({adapter.hello.scenario}) on {args.listen} as qrobot/{args.name}; "
          f"state {core.state.value}", flush=True)
    written = 0
    try:
        with args.audit.open("a") as audit:
            while not stop.is_set():
                agent.step()
                if len(core.audit) > written:  # the audit trail, as it happens
                    for t, kind, detail in core.audit[written:]:
                        audit.write(json.dumps({"t": t, "wall": time.time(), "kind": kind, "detail": detail}) + "\n")
                    written = len(core.audit)
                    audit.flush()
    finally:
        service.close()
        session.close()
        adapter.close()
    return 0


def _kinematics(robot: str) -> Any:
    """The arm's Jacobian, from a kinematics-only copy of its model (never stepped)."""
    if robot != "panda":
        return None
    from qrobot.robots.panda import PandaArm
    from qrobot.sim import Sim

    return PandaArm(Sim())
