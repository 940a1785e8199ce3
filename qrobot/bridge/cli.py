"""The bridge's commands: `qrobot robot-sim` and `qrobot agent` (the robot's side),
`qrobot operator` (a minimal terminal console: dead-man, enable, e-stop, reset) and
`qrobot run SCENARIO --robot tls/HOST:PORT` (the policy's side)."""

from __future__ import annotations

import argparse
import os
import re
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
    a.add_argument(
        "--profile",
        choices=("default", "fr3"),
        default="default",
        help="the robot's limits profile (fr3: Franka Research 3's published joint limits)",
    )
    a.add_argument(
        "--require-approval",
        action="store_true",
        help="commands need the operator's approval of the policy's task (instruction, scenario, speed)",
    )
    a.add_argument(
        "--recording",
        type=Path,
        default=None,
        help="the session as a Rerun recording (default: the audit log's name with .rrd)",
    )

    o = sub.add_parser(
        "operator", help="a terminal console for an agent: holds the dead-man, enables, e-stops (bridge)"
    )
    o.add_argument("--connect", required=True, help="the agent's Zenoh endpoint, tls/HOST:PORT")
    o.add_argument("--keys", type=Path, required=True, help="directory from `qrobot keys init` (console.pem, ca.pem)")
    o.add_argument("--name", default="robot", help="the robot's name (the agent's --name)")
    act = o.add_mutually_exclusive_group()
    act.add_argument(
        "--enable", action="store_true", help="hold the dead-man and enable; Ctrl-C releases (the robot stops)"
    )
    o.add_argument(
        "--approve",
        action="store_true",
        help="with --enable: approve each task the policy proposes, printing it (you are watching)",
    )
    act.add_argument("--estop", action="store_true", help="send an e-stop and exit")
    act.add_argument("--reset", action="store_true", help="release a latched e-stop (then --enable again) and exit")
    from qrobot.bridge.console import add_arguments as console_arguments

    console_arguments(sub.add_parser("console", help="the operator console in a browser, for an agent (bridge)"))
    from qrobot.bridge.franka import add_arguments as franka_arguments
    from qrobot.bridge.lerobot_arm import add_arguments as lerobot_arguments
    from qrobot.bridge.ros2_base import add_arguments as ros2_arguments

    franka_arguments(
        sub.add_parser("robot-franka", help="a Franka arm through franky (libfranka), for an agent (bridge)")
    )

    lerobot_arguments(sub.add_parser("robot-lerobot", help="a LeRobot arm as a Panda, for an agent (bridge)"))
    ros2_arguments(
        sub.add_parser("robot-ros2", help="a ROS 2 base (cmd_vel, odom) through Zenoh, for an agent (bridge)")
    )
    rp = sub.add_parser("agent-replay", help="drive a simulated robot with an agent's recorded session (bridge)")
    rp.add_argument("audit", type=Path, help="the agent's JSONL audit log (qrobot agent --audit)")
    rp.add_argument("--robot", required=True, help="HOST:PORT of a robot process (qrobot robot-sim) to replay on")
    rp.add_argument("--robot-token", type=Path, required=True, help="that robot process's --token-file")


def add_remote_flags(r: argparse.ArgumentParser) -> None:
    """`qrobot run`'s flags for driving a robot through its agent."""
    r.add_argument(
        "--robot",
        default=None,
        metavar="tls/HOST:PORT",
        help="drive the robot behind this agent instead of a local world (policy role, mutual TLS)",
    )
    r.add_argument("--keys", type=Path, default=None, help="with --robot: `qrobot keys init` directory (default: keys)")
    r.add_argument("--robot-name", default=None, help="with --robot: the agent's --name (default: robot)")
    r.add_argument(
        "--wait-enable",
        type=float,
        default=None,
        help="with --robot: seconds to wait for an operator to enable (and approve) (default: 60)",
    )
    r.add_argument(
        "--speed-scale",
        type=float,
        default=None,
        help="with --robot: the speed share proposed for the operator's approval (0..1, default: 1)",
    )


def refuse_remote_flags(args: argparse.Namespace) -> None:
    """A local run given flags that only apply with --robot: refused, not ignored."""
    for flag in ("keys", "robot_name", "wait_enable", "speed_scale"):
        if getattr(args, flag) is not None:
            raise QrobotError(f"run: --{flag.replace('_', '-')} applies with --robot only")


def dispatch(args: argparse.Namespace) -> int:
    if args.cmd == "robot-sim":
        from qrobot.bridge.robot_sim import serve

        return serve(args)
    if args.cmd == "operator":
        return _operator(args)
    if args.cmd == "agent-replay":
        return _replay(args)
    if args.cmd == "robot-lerobot":
        from qrobot.bridge.lerobot_arm import serve as lerobot

        return lerobot(args)
    if args.cmd == "robot-franka":
        from qrobot.bridge.franka import serve as franka

        return franka(args)
    if args.cmd == "robot-ros2":
        from qrobot.bridge.ros2_base import serve as ros2

        return ros2(args)
    if args.cmd == "console":
        from qrobot.bridge.console import serve as console

        _check_endpoint("console", args.connect)
        _check_keys("console --keys", args.keys, "console")
        _check_name("console --name", args.name)
        return console(args)
    return _agent(args)


def _check_keys(flag: str, key_dir: Path, role: str) -> None:
    for name in ("ca.pem", f"{role}.pem", f"{role}.key"):
        if not (key_dir / name).is_file():
            raise QrobotError(f"{flag}: {key_dir / name} missing (make them with `qrobot keys init DIR`)")


def _check_endpoint(flag: str, endpoint: str) -> None:
    host, _, port = str(endpoint).removeprefix("tls/").rpartition(":")
    if not str(endpoint).startswith("tls/") or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QrobotError(f"{flag}: {endpoint!r}: only tls/HOST:PORT endpoints (mutual TLS) are accepted")


def _check_name(flag: str, name: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name or ""):
        raise QrobotError(f"{flag}: {name!r}: 1 to 64 ASCII letters, digits, - and _")


def run_remote(args: argparse.Namespace, scenario: Any) -> int:
    """`qrobot run SCENARIO --robot tls/HOST:PORT`: the policy here, the robot behind its agent."""
    from tqdm import tqdm

    from qrobot.bridge.remote import RemoteRobot, check_remote_policy, run_remote_episode
    from qrobot.policies import make_policy
    from qrobot.runner import format_episode, format_summary, summarize

    check_remote_policy(args.policy)
    args.keys = Path("keys") if args.keys is None else args.keys
    args.robot_name = "robot" if args.robot_name is None else args.robot_name
    args.wait_enable = 60.0 if args.wait_enable is None else args.wait_enable
    args.speed_scale = 1.0 if args.speed_scale is None else args.speed_scale
    if not 0.0 < args.speed_scale <= 1.0:
        raise QrobotError(f"run --speed-scale: {args.speed_scale!r}: a share of the limits in (0, 1]")
    for flag, given in (("--gui", args.gui), ("--foresight", args.foresight)):
        if given:
            raise QrobotError(f"run --robot: {flag} does not apply (the robot's world and supervisor are the agent's)")
    if args.checkpoint is not None and args.policy != "qwen-vla":
        raise QrobotError(f"run: --checkpoint applies to policy qwen-vla only, not {args.policy!r}")
    _check_endpoint("run --robot", args.robot)
    _check_keys("run --keys", args.keys, "policy")
    _check_name("run --robot-name", args.robot_name)
    if not args.wait_enable >= 0:
        raise QrobotError(f"run --wait-enable: {args.wait_enable!r}: seconds >= 0")
    try:
        robot = RemoteRobot.connect(args.robot, args.keys, args.robot_name)
    except (ConnectionError, PermissionError) as exc:
        raise QrobotError(f"run --robot: no agent for qrobot/{args.robot_name} at {args.robot} ({exc})") from None
    try:
        if robot.scenario_name != scenario.name:
            raise QrobotError(f"run --robot: the robot runs scenario {robot.scenario_name!r}, not {scenario.name!r}")
        kwargs = {"checkpoint": args.checkpoint, "device": args.device} if args.policy == "qwen-vla" else {}
        policy = make_policy(args.policy, robot, seed=args.seed, **kwargs)
        print(
            f"driving qrobot/{args.robot_name} ({robot.robot_kind}, {robot.scenario_name}) through its agent; "
            f"waiting for an operator to enable it",
            flush=True,
        )
        if not robot.wait_enabled(args.wait_enable):
            raise QrobotError(
                f"run --robot: nobody enabled qrobot/{args.robot_name} within {args.wait_enable:g} s "
                f"(agent state {robot.agent_state()}; `qrobot operator --enable`)"
            )
        results = []
        for k in range(args.episodes):
            results.append(
                run_remote_episode(robot, policy, k, args.seed + k, speed_scale=args.speed_scale, wait=args.wait_enable)
            )
            tqdm.write(format_episode(results[-1]))
            if results[-1].end_reason in ("estop", "operator", "link_lost"):
                break  # the robot stopped for a person or the link: not the policy's next episode to try
    finally:
        robot.close()
    print(format_summary(f"{scenario.name} / {args.policy} via qrobot/{args.robot_name}", summarize(results)))
    return 0


def _operator(args: argparse.Namespace) -> int:
    import zenoh

    from qrobot.bridge.service import ConsoleClient
    from qrobot.bridge.transport import config

    _check_endpoint("operator --connect", args.connect)
    _check_keys("operator --keys", args.keys, "console")
    _check_name("operator --name", args.name)
    if args.approve and not args.enable:
        raise QrobotError(
            "operator --approve: only with --enable (the operator approving is the one holding the dead-man)"
        )
    session = zenoh.open(config("console", args.keys, connect=args.connect))
    console = ConsoleClient(session, args.name, beat=not (args.estop or args.reset))
    try:
        deadline = time.monotonic() + 5.0
        while console.watch.status is None:
            if time.monotonic() > deadline:
                raise QrobotError(f"operator --connect: no agent for qrobot/{args.name} at {args.connect}")
            time.sleep(0.05)
        if args.estop:
            console.request("estop", key="estop")
            time.sleep(0.3)
            print(f"qrobot/{args.name}: {console.watch.status.state}", flush=True)
            return 0
        if args.reset:
            reply = console.request("reset")
            if not reply.ok:  # type: ignore[union-attr]
                raise QrobotError(f"operator --reset: refused by qrobot/{args.name}: {reply.reason}")  # type: ignore[union-attr]
            print(f"qrobot/{args.name}: reset; enable again to move", flush=True)
            return 0
        console.deadman.set()  # held while this runs: Ctrl-C or SIGTERM releases it and the robot stops
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        time.sleep(0.3)  # a few heartbeats first: enabling needs a live operator
        # --enable: asked once a second until it first succeeds (a policy may not have synced its
        # clock yet), never again after that: a stop ends motion until a person enables anew
        enabled, asked, refusal = not args.enable, 0.0, ""
        shown = ""
        try:
            while not stop.wait(0.05):
                if not enabled and time.monotonic() - asked > 1.0:
                    asked = time.monotonic()
                    reply = console.request("enable")
                    enabled = reply.ok  # type: ignore[union-attr]
                    if not enabled and reply.reason != refusal:  # type: ignore[union-attr]
                        refusal = reply.reason  # type: ignore[union-attr]
                        print(f"qrobot/{args.name}: enable refused: {refusal} (asking again each second)", flush=True)
                pending = console.pending() if args.approve else None
                if pending is not None:
                    print(f"qrobot/{args.name}: approving {pending[0]}: {pending[1]}", flush=True)
                    console.request("approve", detail=pending[0])
                    time.sleep(0.2)  # (the status shows the approval before the next look)
                st = console.watch.status
                line = f"{st.state}{' (' + st.latched + ')' if st.latched else ''}" if st else "no status"
                if line != shown:
                    print(f"qrobot/{args.name}: {line}", flush=True)
                    shown = line
        except KeyboardInterrupt:
            pass
        console.deadman.clear()
        time.sleep(0.1)  # one released heartbeat: the agent stops at once rather than at its timeout
        return 0
    finally:
        console.close()
        session.close()


def _connect(args: argparse.Namespace, command: str) -> Any:
    """The adapter to the robot process at --robot (checked), paired by --robot-token."""
    from qrobot.bridge.sim_adapter import SimAdapter

    host, _, port = str(args.robot).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise QrobotError(f"{command} --robot: {args.robot!r} is not HOST:PORT")
    try:
        token = bytes.fromhex(args.robot_token.read_text().strip())
    except (OSError, ValueError):
        raise QrobotError(
            f"{command} --robot-token: {args.robot_token} is not a readable hex token "
            "(the robot process's --token-file)"
        ) from None
    try:
        return SimAdapter(int(port), token, host)
    except OSError as exc:
        raise QrobotError(f"{command} --robot: cannot reach the robot at {host}:{port} ({exc})") from None


def _replay(args: argparse.Namespace) -> int:
    from qrobot.bridge.replay import read_session, replay

    records = read_session(args.audit)
    adapter = _connect(args, "agent-replay")
    dims = {len(r["action"]) for r in records if r["kind"] == "plan"}
    want = 5 if adapter.robot == "panda" else 3
    try:
        if dims != {want}:
            raise QrobotError(
                f"agent-replay: {args.audit} holds actions of {sorted(dims)} values; the robot at "
                f"{args.robot} ({adapter.robot}) takes {want}"
            )
        done = replay(records, adapter, robot_supervisor(adapter))
    except ConnectionError as exc:
        raise QrobotError(
            f"agent-replay --robot: the robot at {args.robot} dropped the link ({exc}; is "
            f"{args.robot_token} its --token-file?)"
        ) from None
    finally:
        adapter.close()
    print(
        f"replayed {done['plans']} plans ({done['refused']} braked by the supervisor instead, {done['missed']} late in "
        f"the original and left to the robot's watchdog as then), {done['halts']} "
        f"halts, {done['resets']} episodes from {args.audit}; robot periods {done['first']}..{done['last']}"
        + (
            f"; {done['late']} plans of this replay came after their period and were braked instead: "
            "its path is not the original's (run it again on a less loaded machine)"
            if done["late"]
            else ""
        )
    )
    return 0


def _check(args: argparse.Namespace) -> None:
    folder = args.latch.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise QrobotError(
            f"agent --latch: {args.latch}: its folder must exist and be writable (the e-stop latch "
            "is saved there so that it survives a restart)"
        )
    _check_keys("agent --keys", args.keys, "agent")
    _check_endpoint("agent --listen", args.listen)
    _check_name("agent --name", args.name)


def _agent(args: argparse.Namespace) -> int:
    import zenoh

    from qrobot.bridge.agent import Agent
    from qrobot.bridge.agent_core import AgentCore, Timing
    from qrobot.bridge.audit import SessionAudit
    from qrobot.bridge.latch import Latch
    from qrobot.bridge.service import AgentService
    from qrobot.bridge.transport import config
    from qrobot.safety.supervisor import OperatorKey

    _check(args)
    adapter = _connect(args, "agent")
    key = OperatorKey()  # the console's reset releases the supervisor through the agent
    if args.profile == "fr3" and adapter.robot != "panda":
        adapter.close()
        raise QrobotError(f"agent --profile fr3: the robot at {args.robot} is a {adapter.robot}, not an arm")
    sup = robot_supervisor(adapter, key, args.profile)
    core = AgentCore(
        3 if adapter.robot == "diffbot" else 5,
        Latch(args.latch),
        Timing(),
        people=adapter.hello.people in ("sensor", "none"),
        approval=args.require_approval,
        motion=((0, 1, 2), (3,)) if adapter.robot == "panda" else ((0,), (1,)),
    )
    agent = Agent(adapter, sup, core, key)
    periods: set[int] = set()
    for _ in range(100):  # the robot drops a link whose pairing proof is wrong: say so now, not later
        agent.step()
        periods.add(adapter.period)
        if not core.connected or len(periods - {-1}) >= 3:
            break
    if not core.connected:
        adapter.close()
        raise QrobotError(
            f"agent --robot-token: the robot at {args.robot} refused the pairing (is {args.robot_token} "
            "its --token-file?) or closed the link"
        )
    session = zenoh.open(config("agent", args.keys, listen=args.listen, robot=args.name))
    service = AgentService(agent, session, args.name)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    print(
        f"agent for {adapter.robot} ({adapter.hello.scenario}) on {args.listen} as qrobot/{args.name}; "
        f"state {core.state.value}",
        flush=True,
    )
    try:
        audit = SessionAudit(args.audit, args.recording or args.audit.with_suffix(".rrd"), adapter.robot, args.name)
    except OSError as exc:
        adapter.close()
        raise QrobotError(f"agent --audit/--recording: cannot write the session record ({exc})") from None
    retry = 0.0
    try:
        while not stop.is_set():
            agent.step()
            if not core.connected and time.monotonic() > retry:  # the robot's link dropped: reconnect
                retry = time.monotonic() + 1.0
                try:
                    agent.rebind(_connect(args, "agent"))
                except QrobotError:
                    pass  # (still unreachable: the robot's own watchdog holds it meanwhile)
            records = agent.drain()  # the session record, as it happens
            for record in records:
                audit.write(record)
            if records:
                audit.flush()
    finally:
        service.close()
        session.close()
        agent.adapter.close()
        audit.close()
    return 0


def robot_supervisor(adapter: Any, key: Any = None, profile: str = "default") -> Any:
    """The supervisor an agent runs for the robot behind `adapter`: the robot's limits
    profile at its control period (and the arm's Jacobian from a kinematics-only model)."""
    from qrobot.safety.limits import default_limits
    from qrobot.safety.supervisor import OperatorKey, Supervisor

    scale = (0.025, 0.25) if adapter.robot == "panda" else (0.5, 1.2)
    return Supervisor(
        default_limits(adapter.robot, adapter.hello.control_dt, profile),
        scale,
        kinematics=_kinematics(adapter.robot),
        operator=key or OperatorKey(),
        people=adapter.hello.people,
    )


def _kinematics(robot: str) -> Any:
    """The arm's Jacobian, from a kinematics-only copy of its model (never stepped)."""
    if robot != "panda":
        return None
    from qrobot.robots.panda import PandaArm
    from qrobot.sim import Sim

    return PandaArm(Sim())
