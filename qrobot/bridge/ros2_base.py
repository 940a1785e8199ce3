"""A ROS 2 differential-drive base as a `robot_host.Driver`: qrobot's checked plans become
`geometry_msgs/msg/TwistStamped` on cmd_vel and `nav_msgs/msg/Odometry` becomes the
supervisor's state, spoken directly in rmw_zenoh's wire format (no ROS 2 install needed
on this side): key `<domain>/<topic>/<pkg>::msg::dds_::<Type>_/<RIHS01 hash>`, CDR
payload (XCDR1 little endian, via `rosbags`), and rmw_zenoh's attachment on every sample
(int64 sequence number, int64 source time in ns, 16-byte publisher gid, Zenoh's own
serialization). A ROS 2 node running rmw_zenoh_cpp (Jazzy or newer) reads it as a ROS
message from any publisher.

    python -m qrobot.bridge.ros2_base --connect tcp/127.0.0.1:7447 --token-file F [--port P]

A background thread publishes at a fixed rate (50 Hz) the velocity the current plan asks
for now: its one-period ramp, then the brake at the paired rates, then zeros. If the host
process dies, the publishing stops with it and the base's own cmd_vel timeout
(diff_drive_controller's `cmd_vel_timeout`) stops the wheels.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zenoh
import zenoh.ext as zext

from qrobot.bridge.robot_host import RobotHost, host_main, serve_until_stopped
from qrobot.bridge.robot_link import load_token
from qrobot.errors import QrobotError
from qrobot.robots.diffbot import BRAKE, COMMAND_SIZE
from qrobot.safety import trajectory
from qrobot.scenario import load_scenario

TWIST = "geometry_msgs/msg/TwistStamped"
ODOM = "nav_msgs/msg/Odometry"
# REP-2016 type hashes of the Jazzy (and Kilted, Rolling) definitions, as `ros2 topic info -v`
# prints them; tests/bridge/test_ros2.py checks them against rosbags' own computation. Humble
# has no type hashes: pass the hash your distribution's rmw_zenoh puts in its keys.
TWIST_HASH = "RIHS01_5f0fcd4f81d5d06ad9b4c4c63e3ea51b82d6ae4d0558f1d475229b1121db6f64"
ODOM_HASH = "RIHS01_3cc97dc7fb7502f8714462c526d369e35b603cfc34d946e3f2eda2766dfec6e0"
GID_SIZE = 16  # RMW_GID_STORAGE_SIZE since Iron
_TOPIC = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")
_ENDPOINT = re.compile(r"^(tcp|tls|udp|quic|unixsock-stream)/\S+$")


@functools.cache
def typestore() -> Any:
    """rosbags' ROS 2 Jazzy message definitions (imported when a base is driven, not before)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def dds_type(ros_type: str) -> str:
    """`geometry_msgs/msg/TwistStamped` -> `geometry_msgs::msg::dds_::TwistStamped_` (rmw_zenoh's name)."""
    pkg, kind, name = ros_type.split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def topic_key(domain: int, topic: str, ros_type: str, type_hash: str) -> str:
    """rmw_zenoh's data key expression for a topic (its leading and trailing slashes stripped)."""
    return f"{domain}/{topic.strip('/')}/{dds_type(ros_type)}/{type_hash}"


def attachment(seq: int, stamp_ns: int, gid: bytes) -> bytes:
    """rmw_zenoh's per-sample attachment (AttachmentData::serialize_to_zbytes)."""
    return zext.z_serialize((zext.Int64(seq), zext.Int64(stamp_ns), gid)).to_bytes()


def read_attachment(raw: zenoh.ZBytes | None) -> tuple[int, int, bytes] | None:
    """(sequence number, source time ns, gid), or None where rmw_zenoh would drop the sample."""
    if raw is None:
        return None
    try:
        seq, stamp, gid = zext.z_deserialize(tuple[zext.Int64, zext.Int64, bytes], raw)
    except Exception:  # (zenoh raises its own ZDeserializeError, or a ValueError)
        return None
    return (int(seq), int(stamp), bytes(gid)) if len(gid) == GID_SIZE else None


def peer_config(connect: str | None = None, listen: str | None = None) -> zenoh.Config:
    """A plain Zenoh peer with explicit endpoints only, like qrobot's own (no multicast, no gossip)."""
    c = zenoh.Config()
    c.insert_json5("mode", json.dumps("peer"))
    c.insert_json5("scouting/multicast/enabled", "false")
    c.insert_json5("scouting/gossip/enabled", "false")
    c.insert_json5("listen/endpoints", json.dumps([listen] if listen else []))
    c.insert_json5("connect/endpoints", json.dumps([connect] if connect else []))
    return c


def twist_msg(v: float, w: float, frame_id: str, now: float) -> Any:
    t = typestore().types
    sec, nsec = divmod(int(now * 1e9), 1_000_000_000)
    return t[TWIST](
        header=t["std_msgs/msg/Header"](
            stamp=t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame_id
        ),
        twist=t["geometry_msgs/msg/Twist"](
            linear=t["geometry_msgs/msg/Vector3"](x=v, y=0.0, z=0.0),
            angular=t["geometry_msgs/msg/Vector3"](x=0.0, y=0.0, z=w),
        ),
    )


class Ros2Base:
    robot = "diffbot"
    command_size = COMMAND_SIZE
    control_dt = 0.1

    def __init__(
        self,
        connect: str | None = None,
        listen: str | None = None,
        domain: int = 0,
        cmd_vel: str = "cmd_vel",
        odom: str = "odom",
        scenario: str = "pointnav",
        people: str = "none",
        rate_hz: float = 50.0,
        odom_timeout: float = 0.25,  # s: 2.5 control periods; odometry comes at 20-50 Hz
        frame_id: str = "base_link",
        twist_hash: str = TWIST_HASH,
        odom_hash: str = ODOM_HASH,
    ) -> None:
        self.scenario, self.people = scenario, people
        self.max_rates = np.array(BRAKE, dtype=np.float64)
        self.rate_hz, self.odom_timeout, self.frame_id = float(rate_hz), float(odom_timeout), frame_id
        self.cmd_key = topic_key(domain, cmd_vel, TWIST, twist_hash)
        self.odom_key = topic_key(domain, odom, ODOM, odom_hash)
        self._lock = threading.Lock()
        # the plan being followed: (monotonic start, v0, v1, braking rates); at rest at first
        self._plan = (time.monotonic(), np.zeros(2), np.zeros(2), self.max_rates.copy())
        self._odom: tuple[float, ...] | None = None
        self._odom_at = -math.inf
        self._seq, self._gid = 0, os.urandom(GID_SIZE)
        self.published = 0
        self._session = zenoh.open(peer_config(connect, listen))
        # ROS 2's default cmd_vel QoS (reliable, volatile, keep last) as rmw_zenoh maps it
        self._pub = self._session.declare_publisher(
            self.cmd_key, congestion_control=zenoh.CongestionControl.DROP, reliability=zenoh.Reliability.RELIABLE
        )
        self._sub = self._session.declare_subscriber(self.odom_key, self._on_odom)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="ros2-cmd-vel", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ what the base is asked to do
    def _velocity(self, now: float) -> np.ndarray:
        t0, v0, v1, rates = self._plan
        return trajectory.at(v0, v1, self.control_dt, rates, now - t0)[1]

    def execute(self, values: np.ndarray, rates: np.ndarray) -> None:
        v1, v0 = np.array(values[0:2], dtype=np.float64), np.array(values[3:5], dtype=np.float64)
        with self._lock:
            self._plan = (time.monotonic(), v0, v1, np.asarray(rates, dtype=np.float64).copy())

    def brake(self, rates: np.ndarray) -> None:
        now = time.monotonic()
        with self._lock:
            v = self._velocity(now)  # as if a plan had ended at v now: at() brakes from there
            self._plan = (now - self.control_dt, v, v, np.asarray(rates, dtype=np.float64).copy())

    def _publish_loop(self) -> None:
        period = 1.0 / self.rate_hz
        tick = time.monotonic()
        while not self._stop.is_set():
            with self._lock:
                v, w = self._velocity(time.monotonic()).tolist()
            self._send(v, w)
            tick += period
            delay = tick - time.monotonic()
            if delay < -period:  # fell behind (a stalled machine): resume the rate from now
                tick, delay = time.monotonic(), 0.0
            self._stop.wait(max(0.0, delay))

    def _send(self, v: float, w: float) -> None:
        payload = bytes(typestore().serialize_cdr(twist_msg(v, w, self.frame_id, time.time()), TWIST))
        self._seq += 1  # (one thread publishes, and close() only after it stopped)
        self._pub.put(payload, attachment=attachment(self._seq, time.time_ns(), self._gid))
        self.published += 1

    # ------------------------------------------------------------ what the base measures
    def _on_odom(self, sample: zenoh.Sample) -> None:
        if read_attachment(sample.attachment) is None:
            return  # rmw_zenoh drops samples without its attachment too
        try:
            msg: Any = typestore().deserialize_cdr(sample.payload.to_bytes(), ODOM)
        except Exception:  # a malformed sample is no odometry (and not this thread's death)
            return
        p, q = msg.pose.pose.position, msg.pose.pose.orientation
        lin, ang = msg.twist.twist.linear, msg.twist.twist.angular
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        with self._lock:
            self._odom, self._odom_at = (p.x, p.y, yaw, lin.x, lin.y, ang.z), time.monotonic()

    def has_odometry(self) -> bool:
        with self._lock:
            return time.monotonic() - self._odom_at <= self.odom_timeout

    def state(self) -> dict[str, np.ndarray | float]:
        now = time.monotonic()
        with self._lock:
            odom, age, cmd = self._odom, now - self._odom_at, self._velocity(now)
        if odom is None or age > self.odom_timeout:
            # no pose: the supervisor's input check fails ("base_pose missing") and it stops
            return {"cmd_vel": cmd}
        x, y, yaw, vx, vy, w = odom
        c, s = math.cos(yaw), math.sin(yaw)
        return {
            "base_pose": np.array([x, y, yaw]),
            "base_vel": np.array([vx, w]),  # odometry's twist is in the child (base) frame
            "base_lin_vel": np.array([c * vx - s * vy, s * vx + c * vy, 0.0]),
            "cmd_vel": cmd,
        }

    def close(self) -> None:
        """Finish braking (the host braked before calling), publish zeros, leave the network."""
        with self._lock:
            t0, _, v1, rates = self._plan
            left = t0 + self.control_dt + trajectory.brake_time(v1, rates) - time.monotonic()
        self._stop.wait(min(max(left, 0.0), 2.0) + 2.0 / self.rate_hz)
        self._stop.set()
        self._thread.join(2.0)
        for _ in range(3):
            self._send(0.0, 0.0)
        self._sub.undeclare()
        self._pub.undeclare()
        self._session.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ROS 2 base host's flags (here and as `qrobot robot-ros2`)."""
    p.add_argument("--connect", default=None, help="Zenoh endpoint of the ROS 2 side, e.g. tcp/127.0.0.1:7447")
    p.add_argument("--listen", default=None, help="or a Zenoh endpoint to listen on for the ROS 2 side")
    p.add_argument("--domain", type=int, default=0, help="ROS_DOMAIN_ID of the base (default 0)")
    p.add_argument("--cmd-vel", default="cmd_vel", help="TwistStamped topic the base listens to")
    p.add_argument("--odom", default="odom", help="Odometry topic the base publishes")
    p.add_argument("--scenario", default="pointnav", help="scenario whose limits the agent applies")
    p.add_argument("--people", choices=("none", "sensor"), default="none")
    p.add_argument("--port", type=int, default=0, help="local port for the agent (0: a free one, printed)")
    p.add_argument(
        "--token-file",
        type=Path,
        required=True,
        help="pairing token the agent must prove it holds (made, 0600, if missing; give the agent the same)",
    )


def serve(args: argparse.Namespace) -> int:
    endpoints = [e for e in (args.connect, args.listen) if e is not None]
    if not endpoints or not all(_ENDPOINT.match(e) for e in endpoints):
        raise QrobotError("robot-ros2: give --connect and/or --listen as a Zenoh endpoint, e.g. tcp/127.0.0.1:7447")
    if not 0 <= args.domain <= 232:
        raise QrobotError(f"robot-ros2 --domain: {args.domain} (a ROS_DOMAIN_ID, 0..232)")
    for flag, topic in (("--cmd-vel", args.cmd_vel), ("--odom", args.odom)):
        if not _TOPIC.match(topic):
            raise QrobotError(f"robot-ros2 {flag}: {topic!r} is not a ROS 2 topic name (e.g. cmd_vel, /robot1/odom)")
    if not 0 <= args.port < 65536:
        raise QrobotError("robot-ros2 --port: 0..65535 (0: a free one)")
    if load_scenario(args.scenario).robot != "diffbot":  # (a bad name or file is refused here too)
        raise QrobotError(f"robot-ros2 --scenario: {args.scenario} is not a diffbot scenario (e.g. pointnav)")
    path = args.token_file
    if path.is_dir() or (path.parent.exists() and not path.parent.is_dir()):
        raise QrobotError(f"robot-ros2 --token-file: {path}: give a file path (a folder, or a file in the way)")
    try:
        token = load_token(path)
    except (ValueError, OSError) as exc:
        raise QrobotError(
            f"robot-ros2 --token-file: {path}: not a pairing token (hex, at least 16 bytes): {exc}"
        ) from None
    base = Ros2Base(args.connect, args.listen, args.domain, args.cmd_vel, args.odom, args.scenario, args.people)
    end = time.monotonic() + 2.0
    while not base.has_odometry() and time.monotonic() < end:
        time.sleep(0.05)
    if not base.has_odometry():  # the supervisor will stop (and latch) until odometry flows
        print(f"robot-ros2: no odometry on {base.odom_key} yet", file=sys.stderr, flush=True)
    host = RobotHost(base, token, args.port)
    serve_until_stopped(host)
    return 0


def main(argv: list[str] | None = None) -> int:
    return host_main("python -m qrobot.bridge.ros2_base", __doc__, add_arguments, serve, argv)


if __name__ == "__main__":
    raise SystemExit(main())
