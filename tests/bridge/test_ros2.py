"""The ROS 2 base driver (`qrobot.bridge.ros2_base`) against a stand-in ROS 2 base node in
its own process (`ros2_node.py`: rmw_zenoh's wire format, decoded with rosbags, its own
0.5 s cmd_vel timeout), all on loopback with multicast off:

- the wire: TwistStamped arrives on rmw_zenoh's exact key expression, CDR with rmw_zenoh's
  attachment, field by field; odometry without the attachment is ignored; no odometry
  makes the supervisor stop (never raise);
- the chain: console + policy over Zenoh -> agent -> robot link -> host process -> cmd_vel
  -> node: the base moves at the supervisor's speed and stops when the dead-man is released;
- the host SIGKILLed mid-motion: the base's own timeout stops it.
"""

from __future__ import annotations

import json
import math
import os
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import zenoh
from rosbags.typesys import Stores, get_typestore

from qrobot.bridge import keys as certs
from qrobot.bridge.agent import Agent
from qrobot.bridge.agent_core import AgentCore, State, Timing
from qrobot.bridge.latch import Latch
from qrobot.bridge.robot_link import load_token
from qrobot.bridge.ros2_base import ODOM_HASH, TWIST_HASH, Ros2Base, attachment, peer_config
from qrobot.bridge.service import AgentService, ConsoleClient, PolicyClient
from qrobot.bridge.sim_adapter import SimAdapter
from qrobot.bridge.transport import config
from qrobot.safety.command import Stop
from qrobot.safety.limits import default_limits
from qrobot.safety.supervisor import OperatorKey, Supervisor

from .test_transport import _free_port, _wait

TS = get_typestore(Stores.ROS2_JAZZY)
NODE = Path(__file__).with_name("ros2_node.py")
FORWARD = np.array([1.0, 0.0, -1.0])
# written out, not built: what a ROS 2 Jazzy subscriber on /cmd_vel and publisher on /odom use
CMD_KEY = "0/cmd_vel/geometry_msgs::msg::dds_::TwistStamped_/" + TWIST_HASH
ODOM_KEY = "0/odom/nav_msgs::msg::dds_::Odometry_/" + ODOM_HASH
V_MAX = default_limits("diffbot", 0.1).base.v_max


def _spawn(args: list[str]) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def _twist(payload: bytes) -> Any:
    return TS.deserialize_cdr(payload, "geometry_msgs/msg/TwistStamped")


def _log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


def test_type_hashes_are_rep2016_hashes_of_the_jazzy_definitions() -> None:
    assert TS.hash_rihs01("geometry_msgs/msg/TwistStamped") == TWIST_HASH
    assert TS.hash_rihs01("nav_msgs/msg/Odometry") == ODOM_HASH


def test_twist_stamped_on_the_rmw_zenoh_key_field_by_field() -> None:
    endpoint = f"tcp/127.0.0.1:{_free_port()}"
    ros = zenoh.open(peer_config(listen=endpoint))  # the ROS 2 side
    got: list[tuple[float, str, bytes, bytes]] = []
    sub = ros.declare_subscriber(
        CMD_KEY,
        lambda s: got.append(
            (time.time(), str(s.key_expr), s.payload.to_bytes(), s.attachment.to_bytes() if s.attachment else b"")
        ),
    )
    base = Ros2Base(connect=endpoint)
    try:
        assert _wait(lambda: len(got) >= 3, 5.0)  # at rest: zeros at 50 Hz
        assert "base_pose" not in base.state()  # no odometry yet
        sup = Supervisor(default_limits("diffbot", 0.1), (0.5, 1.2), people="none")
        assert isinstance(sup.filter(FORWARD, {**base.state(), "time": 1.0}), Stop)  # stops, never raises

        del got[:]
        started = time.time()
        base.execute(np.array([0.3, -0.6, 0.0, 0.1, 0.0]), base.max_rates)  # ramp 0.1 -> 0.3 m/s over 0.1 s
        assert _wait(lambda: any(t > started + 0.6 for t, *_ in got), 5.0)
        seqs = []
        for t, key, payload, att in got:
            assert key == CMD_KEY
            assert payload[:4] == b"\x00\x01\x00\x00"  # CDR, little endian, XCDR1
            msg = _twist(payload)
            assert msg.header.frame_id == "base_link"
            assert abs(msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9 - t) < 0.5
            lin, ang = msg.twist.linear, msg.twist.angular
            assert lin.y == lin.z == ang.x == ang.y == 0.0
            assert 0.0 <= lin.x <= 0.3 + 1e-9 and -0.6 - 1e-9 <= ang.z <= 0.0
            assert abs(ang.z / 2 + lin.x) < 1e-9 or lin.x >= 0.1  # the brake keeps the path (v : w)
            seq, stamp_ns, n, _gid = struct.unpack("<qqB16s", att)  # rmw_zenoh's AttachmentData
            assert len(att) == 33 and n == 16 and abs(stamp_ns * 1e-9 - t) < 0.5
            seqs.append(seq)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one publisher, counting up
        peak = max(_twist(p).twist.linear.x for _, _, p, _ in got)
        assert peak > 0.25  # the ramp reached (near) its end...
        last = _twist(got[-1][2]).twist
        assert last.linear.x == last.angular.z == 0.0  # ...then braked to zeros (0.3 / 1.5 = 0.2 s)

        # odometry from the ROS 2 side: read with rmw_zenoh's attachment, ignored without it
        types = TS.types
        msg = types["nav_msgs/msg/Odometry"](
            header=types["std_msgs/msg/Header"](
                stamp=types["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="odom"
            ),
            child_frame_id="base_link",
            pose=types["geometry_msgs/msg/PoseWithCovariance"](
                pose=types["geometry_msgs/msg/Pose"](
                    position=types["geometry_msgs/msg/Point"](x=1.0, y=2.0, z=0.0),
                    orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(0.25), w=math.cos(0.25)),
                ),
                covariance=np.zeros(36),
            ),
            twist=types["geometry_msgs/msg/TwistWithCovariance"](
                twist=types["geometry_msgs/msg/Twist"](
                    linear=types["geometry_msgs/msg/Vector3"](x=0.2, y=0.0, z=0.0),
                    angular=types["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=0.1),
                ),
                covariance=np.zeros(36),
            ),
        )
        raw = bytes(TS.serialize_cdr(msg, "nav_msgs/msg/Odometry"))
        ros.put(ODOM_KEY, raw)  # no attachment: dropped
        time.sleep(0.3)
        assert "base_pose" not in base.state()
        ros.put(ODOM_KEY, raw, attachment=attachment(1, time.time_ns(), b"g" * 16))
        assert _wait(lambda: "base_pose" in base.state(), 3.0)
        st = base.state()
        assert np.allclose(st["base_pose"], [1.0, 2.0, 0.5]) and np.allclose(st["base_vel"], [0.2, 0.1])
        assert np.allclose(st["base_lin_vel"], [0.2 * math.cos(0.5), 0.2 * math.sin(0.5), 0.0])
        assert _wait(lambda: "base_pose" not in base.state(), 2.0)  # stale after 0.25 s: the supervisor stops
    finally:
        base.close()
        sub.undeclare()
        ros.close()


@contextmanager
def _chain(tmp_path: Path) -> Iterator[SimpleNamespace]:
    """Node process, host process, and an in-process agent enabled by a console, with a
    policy that drives forward once `driving` is set."""
    node_log, token_file = tmp_path / "node.jsonl", tmp_path / "robot.token"
    ros_endpoint = f"tcp/127.0.0.1:{_free_port()}"
    node = _spawn([str(NODE), "--listen", ros_endpoint, "--log", str(node_log)])
    host: subprocess.Popen | None = None
    cleanup: list = []
    stop = threading.Event()
    sender = threading.Thread()
    try:
        assert node.stdout is not None and node.stdout.readline().strip() == "ready"
        host = _spawn(["-m", "qrobot.bridge.ros2_base", "--connect", ros_endpoint, "--token-file", str(token_file)])
        assert host.stdout is not None
        line = host.stdout.readline()
        assert line.startswith("listening 127.0.0.1:"), line
        adapter = SimAdapter(int(line.rsplit(":", 1)[1]), load_token(token_file))
        cleanup.append(adapter.close)
        assert _wait(lambda: "base_pose" in (adapter.state() or {}), 10.0)  # odometry flows before pairing
        certs.init(tmp_path / "keys")
        endpoint = f"tls/127.0.0.1:{_free_port()}"
        key = OperatorKey()
        sup = Supervisor(
            default_limits(adapter.robot, adapter.hello.control_dt), (0.5, 1.2), operator=key, people="none"
        )
        core = AgentCore(3, Latch(tmp_path / "estop.json"), Timing(), people=True)
        agent = Agent(adapter, sup, core, key)
        threading.Thread(target=agent.run, args=(stop,), daemon=True).start()
        sessions = [zenoh.open(config("agent", tmp_path / "keys", listen=endpoint, robot="r1"))]
        service = AgentService(agent, sessions[0], "r1")
        sessions += [zenoh.open(config(role, tmp_path / "keys", connect=endpoint)) for role in ("console", "policy")]
        cleanup += [s.close for s in sessions] + [service.close]
        console, policy = ConsoleClient(sessions[1], "r1"), PolicyClient(sessions[2], "r1")
        cleanup += [policy.close, console.close]
        driving = threading.Event()

        def drive() -> None:
            while not stop.is_set():
                if driving.is_set():
                    policy.send(np.stack([FORWARD] * 3))
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
        yield SimpleNamespace(log=node_log, host=host, core=core, agent=agent, console=console, driving=driving)
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(2.0)  # (before the policy's session goes)
        for close in cleanup[::-1]:
            try:
                close()
            except Exception:
                pass
        for proc in (host, node):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)


def test_policy_drives_the_ros2_base_and_the_dead_man_stops_it(tmp_path: Path) -> None:
    with _chain(tmp_path) as c:
        c.driving.set()
        assert _wait(lambda: c.core.state == State.RUNNING, 3.0), c.core.audit[-5:]
        assert _wait(lambda: any(r["v"] > 0.45 for r in _log(c.log)), 8.0)  # the supervisor's speed...
        time.sleep(0.5)
        assert max(r["v"] for r in _log(c.log)) <= V_MAX + 1e-6  # ...never beyond it
        c.console.deadman.clear()  # the operator lets go
        released = time.time()
        assert _wait(lambda: c.core.state == State.IDLE, 1.0), c.core.audit[-5:]
        time.sleep(1.5)
        after = [r for r in _log(c.log) if r["wall"] > released]
        stopped = next(i for i, r in enumerate(after) if r["v"] == 0.0)
        # halt -> brake at 1.5 m/s^2 from 0.5 m/s (0.33 s) -> zeros on cmd_vel, on a loaded machine
        print(f"dead-man released -> base at rest in {after[stopped]['wall'] - released:.3f} s")
        assert after[stopped]["wall"] - released < 1.0
        assert all(r["v"] == 0.0 and not r["timeout"] for r in after[stopped:])  # stopped by cmd_vel zeros
        assert c.agent.halts


def test_host_killed_mid_motion_the_bases_own_timeout_stops_it(tmp_path: Path) -> None:
    with _chain(tmp_path) as c:
        c.driving.set()
        assert _wait(lambda: any(r["v"] > 0.45 for r in _log(c.log)), 8.0)
        os.kill(c.host.pid, signal.SIGKILL)
        killed = time.time()
        time.sleep(1.5)
        records = _log(c.log)
        last_rx = max(r["last_rx"] for r in records)
        assert last_rx <= killed + 0.05  # nothing came after the kill
        moving = [r for r in records if r["wall"] < last_rx + 0.45]
        assert moving[-1]["v"] > 0.4 and not moving[-1]["timeout"]  # the last command said: go on
        first = next(r for r in records if r["timeout"] and r["wall"] > last_rx)
        print(
            f"kill -> last cmd_vel {last_rx - killed:+.3f} s; its timeout stopped it {first['wall'] - last_rx:.3f} s later"
        )
        # the node's own stop: 0.5 s after the last cmd_vel plus one 10 ms tick (and scheduling)
        assert 0.5 <= first["wall"] - last_rx <= 0.5 + 0.01 + 0.1
        assert all(r["v"] == 0.0 and r["timeout"] for r in records if r["wall"] >= first["wall"])
