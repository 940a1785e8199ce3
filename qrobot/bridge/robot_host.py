"""The robot's side of the robot link for real robots: one process on the robot's computer
that speaks the link to the agent (`qrobot.bridge.robot_link`) and drives the robot
through a `Driver` (Franka through franky, a LeRobot `Robot`, a ROS 2 base).

It does what `robot_sim` does for the simulation, with the wall clock as the only clock:
every control period it sends the driver's measured state and waits `window` seconds for
that period's plan. It executes a plan only if it is sealed by the paired supervisor,
fresh, for this robot, of the right size and planned from the state it sent this period;
anything else (no plan, a forged or stale one, a dead agent) makes the driver brake at
once. A `Halt` brakes between periods. The driver never sees a plan the host did not check.
"""

from __future__ import annotations

import hmac
import json
import os
import socket
import time
from typing import IO, Any, Protocol

import numpy as np

from qrobot.bridge.robot_link import (
    LINK_VERSION,
    Halt,
    Hello,
    Link,
    Pair,
    Plan,
    RobotState,
    pack_state,
    proof,
)
from qrobot.safety.command import CommandCheck, SafeCommand

MIN_BRAKING = 0.5  # a pairing agent may ask for gentler braking than the robot's, down to this share
PAIRING_TIME = 2.0  # s an agent has to pair after connecting
PLAN_START = {"panda": ("joint_pos", slice(0, 7)), "diffbot": ("cmd_vel", slice(3, 5))}  # what a plan starts from


class Driver(Protocol):
    """One robot, as the host drives it. `robot` names the command layout the agent's
    supervisor issues (`panda`: q0, v0, v1, finger; `diffbot`: v1, w1, done, v0, w0)."""

    robot: str
    scenario: str
    control_dt: float
    command_size: int
    max_rates: np.ndarray  # the robot's own braking rates (per velocity component)
    people: str  # "sensor": states carry people; "none": nobody can be present

    def state(self) -> dict[str, np.ndarray | float]:
        """The measured state the supervisor reads (its keys for `robot`), now."""
        ...

    def execute(self, values: np.ndarray, rates: np.ndarray) -> None:
        """Run one checked one-period plan; when it runs out, brake at `rates` by itself."""
        ...

    def brake(self, rates: np.ndarray) -> None:
        """Stop from the current motion at `rates` (no plan, a refused one, a halt)."""
        ...

    def close(self) -> None: ...


class RobotHost:
    def __init__(
        self, driver: Driver, token: bytes, port: int = 0, window: float = 0.03, log: IO[str] | None = None
    ) -> None:
        self.driver, self._token, self._log = driver, token, log
        self.dt = float(driver.control_dt)
        self.window = min(float(window), 0.5 * self.dt)
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.link: Link | None = None
        self._check: CommandCheck | None = None
        self._rates = np.asarray(driver.max_rates, dtype=np.float64).copy()
        self._sent: dict[str, np.ndarray | float] = {}
        self._pending: Plan | None = None
        self.period = 0
        self.watchdog_brakes = self.rejected = self.halts = self.plans = self.faults = 0
        self.halt_times: list[float] = []  # wall time of each Halt taken (the console's latency)
        self._t0 = time.monotonic()  # the robot's clock: seconds since this process started
        self._how = ""  # what moved the robot in the last period (logged once its end is measured)
        self._linked = 0.0

    # ------------------------------------------------------------ connections
    def _accept(self) -> None:
        try:
            sock, _ = self.server.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        if self.link is not None:  # one agent at a time
            sock.close()
            return
        self.link, self._check, self._nonce = Link(sock), None, os.urandom(16)
        self._linked = time.monotonic()
        d = self.driver
        self._send(
            Hello(
                version=LINK_VERSION,
                robot=d.robot,
                scenario=d.scenario,
                control_dt=self.dt,
                watchdog=self.dt + self.window,
                people=d.people,
                nonce=self._nonce,
            )
        )

    def _unpaired_too_long(self) -> bool:
        """A connection that has not paired within PAIRING_TIME: dropped (it would keep the
        only link slot from the real agent)."""
        return self.link is not None and self._check is None and time.monotonic() - self._linked > PAIRING_TIME

    def _drop(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link, self._check = None, None
        self._rates = np.asarray(self.driver.max_rates, dtype=np.float64).copy()

    def _send(self, frame: object) -> None:
        if self.link is None:
            return
        try:
            self.link.send(frame)  # type: ignore[arg-type]
        except ConnectionError:
            self._drop()

    # ------------------------------------------------------------ frames
    def _handle(self, frame: object) -> None:
        if isinstance(frame, Pair) and self._check is None:
            rates = np.asarray(frame.rates, dtype=np.float64)
            own = np.asarray(self.driver.max_rates, dtype=np.float64)
            if not hmac.compare_digest(bytes(frame.proof), proof(self._token, self._nonce)):
                raise ConnectionError("pairing without the robot's token")
            if (
                rates.shape != own.shape
                or not np.all(np.isfinite(rates))
                or np.any(rates < MIN_BRAKING * own)
                or np.any(rates > own * (1 + 1e-9))  # its supervisor would count on braking the robot cannot do
                or len(frame.secret) < 16
            ):
                raise ConnectionError("pairing with braking rates the robot cannot keep to, or a short secret")
            self._check, self._rates = CommandCheck(bytes(frame.secret)), rates
        elif isinstance(frame, Halt) and self._check is not None:
            self.halt_times.append(time.time())
            self.halts += 1
            self._write({"wall": self.halt_times[-1], "halt": frame.reason})
            self._act(self.driver.brake, self._rates)
        elif isinstance(frame, Plan) and frame.period == self.period:
            self._pending = frame
        # anything else (a Reset: a real robot is reset by people) is ignored

    def _poll(self, deadline: float, plans: bool = True) -> None:
        """Take what the agent sent until this period's plan came (`plans`) or the deadline
        passed; without `plans`, a late plan is dropped and the poll goes on (a halt after
        it is still taken at once)."""
        timeout = max(0.0, deadline - time.monotonic())
        while self.link is not None:
            try:
                frame = self.link.recv(timeout)
                if frame is None:
                    return
                self._handle(frame)
            except ConnectionError:  # gone, or a protocol violation: dropped, the robot brakes
                self._drop()
                return
            if self._pending is not None:
                if plans:
                    return
                self._pending = None  # too late for this period
            timeout = max(0.0, deadline - time.monotonic())

    def _verified(self, plan: Plan | None) -> np.ndarray | None:
        """The plan's values if the paired supervisor sealed them for the state sent."""
        d = self.driver
        if plan is None or self._check is None:
            return None
        if len(plan.values) != 8 * d.command_size or not 0 < plan.seq < 2**62:
            return None
        cmd = SafeCommand(d.robot, np.frombuffer(plan.values, "<f8").copy(), int(plan.seq))
        object.__setattr__(cmd, "seal", bytes(plan.seal))
        if not self._check.accept(cmd, d.robot, d.command_size):
            return None
        key, part = PLAN_START.get(d.robot, (None, slice(0, 0)))
        if key is not None and not np.array_equal(cmd.values[part], np.asarray(self._sent.get(key, []))):
            return None  # planned from another state than the one this period reported
        return cmd.values

    # ------------------------------------------------------------ one period
    def step(self) -> None:
        start = time.monotonic()
        if self._unpaired_too_long():
            self._drop()
        self._accept()
        self._pending = None
        try:
            self._sent = self.driver.state()
        except Exception:  # a driver that cannot read its robot: no state, no plan, brake
            self._sent = {}
        if self._how:  # the last period's line, with the speed it ended at (as robot-sim writes it)
            self._record(self._how)
        if self.link is not None:
            fields, shapes = pack_state({k: v for k, v in self._sent.items() if k != "time"})
            self._send(
                RobotState(
                    version=LINK_VERSION,
                    period=self.period,
                    time=time.monotonic() - self._t0,
                    fields=fields,
                    shapes=shapes,
                    watchdog_brakes=self.watchdog_brakes,
                    rejected=self.rejected,
                )
            )
            self._poll(start + self.window)
        plan = self._pending
        values = self._verified(plan)
        how = "plan"
        if values is not None and self._sent:
            self._act(self.driver.execute, values, self._rates)
            self.plans += 1
        else:
            how = "rejected" if plan is not None else "watchdog"
            self.rejected += plan is not None
            self.watchdog_brakes += 1
            self._act(self.driver.brake, self._rates)
        self._poll(start + self.dt, plans=False)  # halts between plans are taken at once
        self._how = how
        time.sleep(max(0.0, start + self.dt - time.monotonic()))
        self.period += 1

    def _record(self, how: str) -> None:
        """One JSON line per period (as `robot_sim --log` writes): the speed measured as the
        period ends (the hand's, or the base's forward speed) and what moved the robot."""
        if self._log is None:
            return
        st = self._sent
        if "ee_lin_vel" in st:
            speed, pos = float(np.linalg.norm(st["ee_lin_vel"])), st.get("ee_pos")
        elif "base_vel" in st:
            speed, pos = abs(float(np.asarray(st["base_vel"])[0])), st.get("base_pose")
        else:
            speed, pos = float("nan"), None
        pos_list = [round(float(x), 6) for x in np.asarray(pos, float)] if pos is not None else []
        self._write({"wall": time.time(), "period": self.period - 1, "how": how, "speed": speed, "pos": pos_list})

    def _write(self, record: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.write(json.dumps(record) + "\n")
            self._log.flush()

    def _act(self, call: Any, *args: Any) -> None:
        """A driver call; one that fails is followed by a brake (and a failing brake by
        nothing more: the robot's own controller holds what it was last told)."""
        try:
            call(*args)
        except Exception:
            self.faults += 1
            if call != self.driver.brake:
                try:
                    self.driver.brake(self._rates)
                except Exception:
                    pass

    def run(self, periods: int | None = None) -> None:
        k = 0
        while periods is None or k < periods:
            self.step()
            k += 1

    def close(self) -> None:
        self._drop()
        self.server.close()
        try:
            self.driver.brake(np.asarray(self.driver.max_rates, dtype=np.float64))
        finally:
            self.driver.close()


def serve_until_stopped(host: Any) -> None:
    """A robot process's life (a RobotHost, or robot-sim's RobotSim: `port`, `run`, `close`): `listening 127.0.0.1:PORT`, periods until SIGTERM, then close
    (the driver brakes and lets go)."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(f"listening 127.0.0.1:{host.port}", flush=True)
    try:
        host.run()
    finally:
        host.close()


def host_main(prog: str, doc: str | None, add_arguments: Any, serve: Any, argv: list[str] | None = None) -> int:
    """`python -m MODULE` for a robot host: its flags, and a user's mistake as one line, exit 2."""
    import argparse
    import sys

    from qrobot.errors import QrobotError

    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return int(serve(p.parse_args(argv)))
    except QrobotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
