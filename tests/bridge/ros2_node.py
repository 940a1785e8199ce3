"""A stand-in ROS 2 differential-drive base, in its own process, speaking rmw_zenoh's wire
format on its own (rosbags for CDR and the REP-2016 type hashes, Zenoh for transport,
nothing from qrobot): it subscribes to cmd_vel (geometry_msgs/msg/TwistStamped), takes a
sample only with rmw_zenoh's attachment and a newer sequence number, integrates unicycle
kinematics at 100 Hz, stops the wheels itself when no cmd_vel came for `--timeout`
seconds (ros2_control's diff_drive_controller `cmd_vel_timeout`), publishes
nav_msgs/msg/Odometry at 50 Hz, and logs one JSON line per tick.

    python tests/bridge/ros2_node.py --listen tcp/127.0.0.1:PORT --log FILE [--domain 0]

prints `ready` once its subscriber and publisher are declared.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import numpy as np
import zenoh
import zenoh.ext as zext
from rosbags.typesys import Stores, get_typestore

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types
TWIST, ODOM = "geometry_msgs/msg/TwistStamped", "nav_msgs/msg/Odometry"
HZ, ODOM_EVERY = 100.0, 2  # 100 Hz kinematics, odometry every 2nd tick (50 Hz)


def key(domain: int, topic: str, ros_type: str) -> str:
    pkg, kind, name = ros_type.split("/")
    return f"{domain}/{topic.strip('/')}/{pkg}::{kind}::dds_::{name}_/{TS.hash_rihs01(ros_type)}"


def odometry(x: float, y: float, yaw: float, v: float, w: float) -> bytes:
    now = time.time()
    v3, cov = T["geometry_msgs/msg/Vector3"], np.zeros(36)  # (rosbags keeps arrays as numpy)
    msg = T[ODOM](
        header=T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](sec=int(now), nanosec=int(now % 1 * 1e9)), frame_id="odom"
        ),
        child_frame_id="base_link",
        pose=T["geometry_msgs/msg/PoseWithCovariance"](
            pose=T["geometry_msgs/msg/Pose"](
                position=T["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2), w=math.cos(yaw / 2)),
            ),
            covariance=cov,
        ),
        twist=T["geometry_msgs/msg/TwistWithCovariance"](
            twist=T["geometry_msgs/msg/Twist"](linear=v3(x=v, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=w)),
            covariance=cov,
        ),
    )
    return bytes(TS.serialize_cdr(msg, ODOM))


class Node:
    def __init__(self, args: argparse.Namespace) -> None:
        c = zenoh.Config()
        c.insert_json5("mode", json.dumps("peer"))
        c.insert_json5("scouting/multicast/enabled", "false")
        c.insert_json5("scouting/gossip/enabled", "false")
        c.insert_json5("listen/endpoints", json.dumps([args.listen]))
        self.session = zenoh.open(c)
        self.timeout = args.timeout
        self.lock = threading.Lock()
        self.cmd = (0.0, 0.0)
        self.last_rx, self.last_rx_wall = -math.inf, 0.0
        self.received = self.dropped = 0
        self.seqs: dict[bytes, int] = {}
        self.pub = self.session.declare_publisher(key(args.domain, args.odom, ODOM))
        self.sub = self.session.declare_subscriber(key(args.domain, args.cmd_vel, TWIST), self.on_cmd)
        self.gid, self.seq = os.urandom(16), 0

    def on_cmd(self, sample: zenoh.Sample) -> None:
        try:  # rmw_zenoh: int64 sequence number, int64 source time (ns), 16-byte gid
            if sample.attachment is None:
                raise ValueError("no attachment: rmw_zenoh drops the sample")
            seq, _, gid = zext.z_deserialize(tuple[zext.Int64, zext.Int64, bytes], sample.attachment)
            msg: Any = TS.deserialize_cdr(sample.payload.to_bytes(), TWIST)
        except Exception:
            with self.lock:
                self.dropped += 1
            return
        with self.lock:
            if len(gid) != 16 or seq <= self.seqs.get(gid, 0) or msg.header.frame_id != "base_link":
                self.dropped += 1
                return
            self.seqs[gid] = seq
            self.cmd = (float(msg.twist.linear.x), float(msg.twist.angular.z))
            self.last_rx, self.last_rx_wall = time.monotonic(), time.time()
            self.received += 1

    def run(self, log_path: str) -> None:
        x = y = yaw = 0.0
        dt, tick, k = 1.0 / HZ, time.monotonic(), 0
        with open(log_path, "a") as log:
            while True:
                now = time.monotonic()
                with self.lock:
                    timed_out = now - self.last_rx > self.timeout
                    v, w = (0.0, 0.0) if timed_out else self.cmd  # the controller's own stop
                    last, received, dropped = self.last_rx_wall, self.received, self.dropped
                x += v * math.cos(yaw) * dt
                y += v * math.sin(yaw) * dt
                yaw = math.atan2(math.sin(yaw + w * dt), math.cos(yaw + w * dt))
                if k % ODOM_EVERY == 0:
                    self.seq += 1
                    att = zext.z_serialize((zext.Int64(self.seq), zext.Int64(time.time_ns()), self.gid))
                    self.pub.put(odometry(x, y, yaw, v, w), attachment=att)
                record = {"wall": time.time(), "v": v, "w": w, "x": round(x, 6), "y": round(y, 6)}
                record |= {"timeout": timed_out, "last_rx": last, "received": received, "dropped": dropped}
                log.write(json.dumps(record) + "\n")
                log.flush()
                k += 1
                tick += dt
                time.sleep(max(0.0, tick - time.monotonic()))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--listen", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--domain", type=int, default=0)
    p.add_argument("--cmd-vel", default="cmd_vel")
    p.add_argument("--odom", default="odom")
    p.add_argument("--timeout", type=float, default=0.5)
    args = p.parse_args()
    node = Node(args)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("ready", flush=True)
    try:
        node.run(args.log)
    finally:
        node.session.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
