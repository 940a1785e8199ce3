"""A simulated robot that behaves like hardware: a separate process owning a scenario's
PyBullet world, paced by the wall clock, with a vendor-style watchdog.

Every control period it sends its state to the connected agent and waits `window`
seconds for that period's plan; a plan that does not come (agent killed, link cut, agent
hung), or that is not sealed by the paired supervisor, is not executed and the robot
brakes by itself (the previous one-period plan runs out into its stop, as a UR arm does
when its RTDE watchdog fires). The watchdog therefore reacts at the first period without
a plan: at most one period plus the window after the last plan arrived. It keeps
stepping, holding still, and accepts the next agent (which pairs anew).

    python -m qrobot.bridge.robot_sim SCENARIO --token-file F [--seed S] [--port P] [--window 0.03] [--log FILE]

prints `listening 127.0.0.1:PORT` once it accepts connections. `--log` appends one JSON
line per period: wall time, period, speed, and whether a plan or the watchdog moved it
(and one per halt taken: its wall time and reason).
With `--observations` it also renders, after each period's physics, what a policy sees
(cameras, proprioception, goal, instruction, the task's reward and end) and streams it to
the agent, which forwards it to the policy; and it starts a new episode when the agent
asks (`Reset`, only while the robot is not moving), applied between periods.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import socket
import time
from pathlib import Path
from typing import IO

import numpy as np

from qrobot.bridge.messages import VERSION, encode, pack_arrays
from qrobot.bridge.messages import Observation as ObservationMsg
from qrobot.bridge.robot_link import (
    LINK_VERSION,
    MAX_FRAME,
    Halt,
    Hello,
    Link,
    Observation,
    Pair,
    Plan,
    Reset,
    RobotState,
    load_token,
    pack_state,
    proof,
)
from qrobot.errors import QrobotError
from qrobot.safety.command import CommandCheck, SafeCommand, Stop
from qrobot.scenario import load_scenario
from qrobot.sim import PHYSICS_HZ

MIN_BRAKING = 0.5  # a pairing agent may ask for gentler braking than the robot's, down to this share


class RobotSim:
    # this period's command and the policy's raw action (set by step, replaced by a plan)
    _command: SafeCommand | Stop
    _action: np.ndarray | None

    def __init__(
        self,
        scenario: str,
        token: bytes,
        seed: int = 0,
        port: int = 0,
        window: float = 0.03,
        log: IO[str] | None = None,
        observations: bool = False,
    ) -> None:
        self._token = token
        from qrobot.envs.core import QRobotEnv  # the world: only this process has it

        self.observations = observations
        self.env = QRobotEnv(scenario, images=observations)
        frame = sum(c.width * c.height * (3 + 4 * (c.name in self.env._depth)) for c in self.env.cameras)
        if observations and frame > MAX_FRAME // 2:
            raise QrobotError(
                f"robot-sim --observations: the scenario's cameras make {frame / 1e6:.1f} MB frames; the robot link "
                f"carries at most {MAX_FRAME // 2 / 1e6:.1f} MB per observation (fewer or smaller cameras)"
            )
        self.seed = seed
        self._obs = self.env.reset(seed=seed)[0]
        self._outcome = (0.0, False, False, self.env._info())
        self._pairing: tuple[CommandCheck, np.ndarray] | None = None
        self._reset_to: int | None = None
        self._observed = 0  # observations sent: their `period` counts up by one each
        self._render_cost = 0.0  # seconds rendering takes after a period's physics
        self.dt = float(self.env.limits.control_dt)
        self.window = min(float(window), 0.5 * self.dt)
        self.server = socket.create_server(("127.0.0.1", port))
        self.server.setblocking(False)
        self.port = self.server.getsockname()[1]
        self.link: Link | None = None
        self.paired = False
        self.period = 0
        self.watchdog_brakes = 0
        self.rejected = 0
        self.halts = 0
        self._log = log
        self._phys = (time.monotonic(), self.dt)  # when this period's physics starts, and its wall span
        self._pending: Plan | None = None
        self.env.sim._on_substep(self._substep)  # real-time pacing, and halts between substeps

    # ------------------------------------------------------------ connections
    def _accept(self) -> None:
        try:
            sock, _ = self.server.accept()
        except BlockingIOError:
            return
        sock.setblocking(True)
        if self.link is not None:  # one agent at a time: a second one is turned away
            sock.close()
            return
        self.link, self.paired, self._nonce = Link(sock), False, os.urandom(16)
        self.link.send(
            Hello(
                nonce=self._nonce,
                version=LINK_VERSION,
                robot=self.env.robot.name,
                scenario=self.env.scenario.name,
                control_dt=self.dt,
                watchdog=self.dt + self.window,
                people=self.env.supervisor.people_source or "none",
                resettable=True,
                observations=self.observations,
            )
        )
        self._observe()  # the policy sees the world before its first command

    def _drop(self) -> None:
        if self.link is not None:
            self.link.close()
        self.link, self.paired, self._pairing, self._reset_to = None, False, None, None

    # ------------------------------------------------------------ one period
    def _handle(self, frame: object, t: float) -> None:
        if isinstance(frame, Pair) and not self.paired:
            rates = np.asarray(frame.rates, dtype=np.float64)
            robot = self.env.robot
            if not hmac.compare_digest(bytes(frame.proof), proof(self._token, self._nonce)):
                raise ConnectionError("pairing without the robot's token")
            if (
                rates.shape != robot.MAX_RATES.shape
                or not np.all(np.isfinite(rates))
                or np.any(rates < MIN_BRAKING * robot.MAX_RATES)
                or len(frame.secret) < 16
            ):
                raise ConnectionError("pairing with braking rates below the robot's or a short secret")
            self._pairing = (CommandCheck(bytes(frame.secret)), rates)
            robot._pair(*self._pairing)
            self.paired = True
        elif isinstance(frame, Halt) and self.paired:
            self.env.robot._halt(t)
            self.halts += 1
            if self._log is not None:  # when the stop reached the robot (the console's latency)
                self._log.write(json.dumps({"wall": time.time(), "halt": frame.reason}) + "\n")
                self._log.flush()
        elif isinstance(frame, Plan) and frame.period == self.period:
            self._pending = frame
        elif isinstance(frame, Reset) and self.paired:
            if not 0 <= frame.seed < 2**32:
                raise ConnectionError(f"reset seed {frame.seed} outside 0..2**32-1")
            self._reset_to = int(frame.seed)  # between periods, at rest, never inside a period's physics

    def _poll(self, timeout: float, t: float) -> None:
        """Handle what the agent sent, waiting up to `timeout` for a frame."""
        while self.link is not None:
            try:
                frame = self.link.recv(timeout)
            except ConnectionError:
                self._drop()
                return
            if frame is None:
                return
            try:
                self._handle(frame, t)
            except ConnectionError:  # a protocol violation: this agent is dropped, the robot brakes
                self._drop()
                return
            timeout = 0.0

    def _wait_plan(self, deadline: float) -> Plan | None:
        """This period's plan, if it comes before the deadline (older ones are discarded)."""
        self._pending = None
        while self.link is not None and self._pending is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._poll(left, self.env.sim.time)
        return self._pending

    def _substep(self, t: float) -> None:
        """Before each physics substep: wait for its wall-clock time, then take any halt."""
        begin, span = self._phys
        time.sleep(max(0.0, begin + (t - self.env.sim.time) / self.dt * span - time.monotonic()))
        if self.link is not None:
            self._poll(0.0, t - 1.0 / PHYSICS_HZ)

    def _execute(self, plan: Plan | None) -> str:
        robot = self.env.robot
        if plan is None or not self.paired:
            self.watchdog_brakes += 1
            robot._apply(Stop("watchdog: no plan this period"))  # the last plan runs out into its stop
            return "watchdog"
        try:
            if len(plan.values) % 8 or not 0 < plan.seq < 2**62:
                raise PermissionError("malformed plan")
            cmd = SafeCommand(robot.name, np.frombuffer(plan.values, "<f8").copy(), int(plan.seq))
            object.__setattr__(cmd, "seal", bytes(plan.seal))
            robot._apply(cmd)
        except PermissionError:  # not sealed by the paired supervisor, replayed, or not where the robot is
            self.rejected += 1
            self.watchdog_brakes += 1
            return "rejected"
        self._command, self._action = cmd, np.frombuffer(plan.action, "<f4").astype(np.float64) if plan.action else None
        return "plan"

    def _new_episode(self) -> None:
        """The agent's Reset: a new world of the scenario; the robot stays paired."""
        seed, self._reset_to = self._reset_to, None
        self.seed = int(seed)  # type: ignore[arg-type]
        self._obs = self.env.reset(seed=self.seed)[0]  # (rebuilds the robot, bound to the env's own supervisor)
        self._outcome = (0.0, False, False, self.env._info())
        if self._pairing is not None:
            self.env.robot._pair(*self._pairing)
        self._observe()

    def _at_rest(self, tol: float = 1e-2) -> bool:
        st = self.env.robot.state()
        speeds = [np.abs(np.asarray(st[k])).max(initial=0.0) for k in ("base_vel", "joint_vel") if k in st]
        return all(float(v) < tol for v in speeds)

    def _observe(self) -> None:
        """Send what the policy sees now (with --observations)."""
        if not self.observations or self.link is None:
            return
        obs, (reward, terminated, truncated, info) = self._obs, self._outcome
        arrays = {f"images/{k}": v for k, v in obs.get("images", {}).items()}
        arrays.update({k: obs[k] for k in ("proprio", "goal") if k in obs})
        raw, shapes, dtypes = pack_arrays(arrays)
        self._observed += 1
        msg = ObservationMsg(
            version=VERSION,
            robot=self.env.robot.name,
            scenario=self.env.scenario.name,
            episode=self.env.episode,
            seed=self.seed,
            period=self._observed,
            step=self.env.task.steps,
            time=self.env.sim.time,
            instruction=obs["instruction"],
            arrays=raw,
            shapes=shapes,
            dtypes=dtypes,
            reward=reward,
            success=bool(info["success"]),
            terminated=terminated,
            truncated=truncated,
            metrics={k: float(v) for k, v in info["metrics"].items()},
            control_dt=self.dt,
        )
        try:
            self.link.send(Observation(version=LINK_VERSION, period=self._observed, data=encode(msg)))
        except ConnectionError:
            self._drop()

    def step(self) -> None:
        start = time.monotonic()
        self._accept()
        if self._reset_to is not None and self._at_rest():
            self._new_episode()
        self._command = Stop("watchdog")
        self._action = None
        if self.link is not None:
            fields, shapes = pack_state({k: v for k, v in self.env.supervisor_state().items() if k != "time"})
            try:
                self.link.send(
                    RobotState(
                        version=LINK_VERSION,
                        period=self.period,
                        time=self.env.sim.time,
                        fields=fields,
                        shapes=shapes,
                        watchdog_brakes=self.watchdog_brakes,
                        rejected=self.rejected,
                        episode=self.env.episode,
                    )
                )
            except ConnectionError:
                self._drop()
        plan = self._wait_plan(start + self.window) if self.link is not None else None
        how = self._execute(plan)
        # the period's physics fills the rest of it in real time, less what rendering and
        # sending the observation after it take (a running estimate)
        now = time.monotonic()
        self._phys = (now, max(start + self.dt - now - self._render_cost, 0.0))
        obs, reward, terminated, truncated, info = self.env._advance(self._command, self._action)
        self._obs, self._outcome = obs, (reward, terminated, truncated, info)
        self._observe()
        if self.observations:
            cost = max(0.0, time.monotonic() - sum(self._phys))
            self._render_cost = min(0.5 * self.dt, 0.8 * self._render_cost + 0.2 * cost)
        if self._log is not None:
            st = self.env.robot.state()
            speed = (
                float(np.linalg.norm(st["ee_lin_vel"]))
                if "ee_lin_vel" in st
                else abs(float(np.asarray(st["base_vel"])[0]))
            )
            pos = np.asarray(st["ee_pos"] if "ee_pos" in st else st["base_pose"])
            self._log.write(
                json.dumps(
                    {
                        "wall": time.time(),
                        "period": self.period,
                        "how": how,
                        "speed": speed,
                        "sim_time": self.env.sim.time,
                        "episode": self.env.episode,
                        "pos": [round(float(x), 6) for x in pos],
                    }
                )
                + "\n"
            )
            self._log.flush()
        self.period += 1
        time.sleep(max(0.0, start + self.dt - time.monotonic()))  # (the substeps paced most of it)

    def run(self, periods: int | None = None) -> None:
        k = 0
        while periods is None or k < periods:
            self.step()
            k += 1

    def close(self) -> None:
        self._drop()
        self.server.close()
        self.env.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The robot process's flags (here and as `qrobot robot-sim`)."""
    p.add_argument("scenario")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--port", type=int, default=0, help="local port for the agent (0: a free one, printed)")
    p.add_argument("--window", type=float, default=0.03, help="seconds each period waits for its plan")
    p.add_argument("--log", type=Path, default=None, help="append one JSON line per period")
    p.add_argument(
        "--observations",
        action="store_true",
        help="render and stream what a policy sees (cameras, goal, instruction) every period",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        required=True,
        help="pairing token the agent must prove it holds (made, 0600, if missing; give the agent the same)",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m qrobot.bridge.robot_sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    return serve(p.parse_args(argv))


def serve(args: argparse.Namespace) -> int:
    if not 0 <= args.seed < 2**32:
        raise QrobotError(f"robot-sim --seed: {args.seed} (0..2**32-1 accepted)")
    if not 0 <= args.port < 65536 or not 0.0 < args.window <= 0.05:
        raise QrobotError("robot-sim --port 0..65535 (0: a free one) and --window in (0, 0.05] s are accepted")
    load_scenario(args.scenario)  # a bad name or file is refused before any file is made
    for flag, path in (("--log", args.log), ("--token-file", args.token_file)):
        if path is not None and (path.is_dir() or (path.parent.exists() and not path.parent.is_dir())):
            raise QrobotError(f"robot-sim {flag}: {path}: give a file path (a folder, or a file in the way)")
    try:
        token = load_token(args.token_file)
    except (ValueError, OSError) as exc:
        raise QrobotError(
            f"robot-sim --token-file: {args.token_file}: not a pairing token (hex, at least 16 bytes): {exc}"
        ) from None
    log = args.log.open("a") if args.log else None
    sim = RobotSim(args.scenario, token, args.seed, args.port, args.window, log, args.observations)
    from qrobot.bridge.robot_host import serve_until_stopped

    serve_until_stopped(sim)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
