"""Do camera frames delay commands? The bridge's rig (robot process, in-process agent with
its Zenoh service, console and policy over mutual TLS) drives the base while the policy
sends a command every 0.1 s; measured per command: one-way delay from the policy's send
to the agent's acceptance (same process, same clock), and the request/reply round trip.
Run twice in this invocation: without frames, and with the robot process rendering two
128 px RGB cameras every period (10 Hz), which the agent forwards at the lowest priority
and the policy side receives. Prints p50 / p99 / max and the ratio of the p99s.

    .venv/bin/python benchmarks/bridge_streams.py [--commands 300]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qrobot.bridge.faults import CIRCLE, ROOM, TWO_CAMERAS, Rig, round_trip
from qrobot.bridge.transport import keys


def measure(frames: bool, commands: int) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), scenario=TWO_CAMERAS if frames else ROOM, observations=frames)
        received = [0, 0]

        def on_frame(sample) -> None:
            received[0] += 1
            received[1] += len(sample.payload.to_bytes())

        sub = rig.sessions[2].declare_subscriber(keys("r1")["observation"], on_frame)
        sent: dict[int, float] = {}
        wire = rig.policy.wire

        def stamped(data: bytes) -> None:
            sent[rig.policy._seq] = time.monotonic()
            wire(data)

        try:
            rig.ready()
            rig.driving.clear()  # this script sends the commands, one per period
            rig.policy.wire = stamped
            start, wall = len(rig.agent.accepted), time.time()
            for _ in range(commands):
                rig.policy.send(np.stack([CIRCLE] * 3))
                time.sleep(0.1)
            delays = [t - sent[seq] for t, _, _, seq in rig.agent.accepted[start:] if seq in sent]
            periods = [r for r in map(json.loads, rig.log.read_text().splitlines()) if "how" in r]
            periods = [r for r in periods if r["wall"] > wall + 0.5]
            late = np.diff([r["wall"] for r in periods])
            rtt = round_trip(rig, commands)
            print(
                f"  frames {'on ' if frames else 'off'}: {len(delays)}/{commands} commands accepted; "
                f"{received[0]} observations received ({received[1] / max(received[0], 1) / 1e3:.0f} kB each); "
                f"robot periods without a plan {sum(r['how'] != 'plan' for r in periods)}/{len(periods)}, "
                f"period length p99 {np.percentile(late, 99) * 1e3:.1f} ms",
                flush=True,
            )
        finally:
            sub.undeclare()
            rig.close()
        return {"one-way": delays, "round trip": rtt}


def _fmt(xs: list[float]) -> str:
    a = np.asarray(xs) * 1e3
    return f"p50 {np.percentile(a, 50):.2f} ms, p99 {np.percentile(a, 99):.2f} ms, max {a.max():.2f} ms"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--commands", type=int, default=300)
    args = p.parse_args()
    off = measure(False, args.commands)
    on = measure(True, args.commands)
    for key in ("one-way", "round trip"):
        ratio = np.percentile(on[key], 99) / np.percentile(off[key], 99)
        print(
            f"{key:>10}: frames off {_fmt(off[key])} | two 128 px streams at 10 Hz {_fmt(on[key])} | "
            f"p99 ratio {ratio:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
