"""The policy side of the bridge: a robot behind a `qrobot agent`, as a gymnasium-style
environment (`RemoteRobot`), and the episode loop of `qrobot run SCENARIO --robot URL`.

The policy never commands hardware: each `step` sends one short-lived command (its entry
expires on the robot's clock one and a half periods after it was sent) and waits for the
robot's next observation, which the robot process renders after each period's physics
and the agent forwards. A command computed from an observation therefore acts in the
period after the one that observation opened: one period of latency, as on any robot
driven over a network. An agent that is not RUNNING (not enabled, holding, e-stopped)
executes nothing the policy sends; `step` reports the agent's state in `info`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zenoh
from gymnasium import spaces

from qrobot.bridge.messages import MAX_OBSERVATION, VERSION, Observation, Proposal, decode, digest, unpack_arrays
from qrobot.bridge.service import PolicyClient
from qrobot.bridge.transport import config, keys
from qrobot.errors import QrobotError
from qrobot.runner import EpisodeResult, _describe
from qrobot.scenario import Scenario, load_scenario

ACTION_DIM = {"panda": 5, "diffbot": 3}
MOVING_STATES = ("ENABLED", "RUNNING", "HOLD")


class RemoteRobot:
    """Args:
    session: a Zenoh session with the policy role's certificate (`connect`).
    robot: the robot's name in key expressions (`qrobot agent --name`).
    timeout: seconds to wait for an observation before the link counts as lost.
    """

    _own_session: bool  # set by `connect` only: close() then closes the session it opened

    def __init__(self, session: zenoh.Session, robot: str, timeout: float = 2.0) -> None:
        self.session, self.name, self.timeout = session, robot, timeout
        self._cond = threading.Condition()
        self._last: Observation | None = None
        self.dropped = 0  # observations that did not decode
        self._sub = session.declare_subscriber(keys(robot)["observation"], self._on)
        self.client = PolicyClient(session, robot)
        self.client.sync()
        self.client.acquire()
        first = self._next(-1)
        self.robot_kind, self.scenario_name = first.robot, first.scenario
        self.control_dt = float(first.control_dt)
        self.action_space = spaces.Box(-1.0, 1.0, (ACTION_DIM.get(first.robot, 3),), np.float32)
        self._scenario: Scenario | None = None
        self._seen = first.period

    @classmethod
    def connect(cls, endpoint: str, key_dir: str | Path, robot: str, timeout: float = 2.0) -> RemoteRobot:
        """Open a policy-role session to the agent at `endpoint` (tls/HOST:PORT)."""
        session = zenoh.open(config("policy", key_dir, connect=endpoint))
        try:
            remote = cls(session, robot, timeout)
        except BaseException:
            session.close()
            raise
        remote._own_session = True
        return remote

    # ------------------------------------------------------------ observations
    def _on(self, sample: zenoh.Sample) -> None:
        msg, _ = decode(sample.payload.to_bytes(), MAX_OBSERVATION)
        if isinstance(msg, Observation):
            try:
                unpack_arrays(msg)  # (decode checked each array fills its shape; this is the proof)
            except (ValueError, KeyError):
                msg = None
        with self._cond:
            if not isinstance(msg, Observation):
                self.dropped += 1
                return
            if self._last is None or msg.period > self._last.period:
                self._last = msg
                self._cond.notify_all()

    def _next(self, after: int, episode: int | None = None) -> Observation:
        """The first observation newer than `after` (and of `episode`, if given)."""
        deadline = time.monotonic() + self.timeout
        with self._cond:
            while True:
                last = self._last
                if last is not None and last.period > after and (episode is None or last.episode == episode):
                    return last
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ConnectionError(f"no observation from qrobot/{self.name} for {self.timeout} s")
                self._cond.wait(left)

    @property
    def unwrapped(self) -> RemoteRobot:
        return self

    @property
    def scenario(self) -> Scenario:
        """The robot's scenario, as this side knows it (for policies that read the task kind)."""
        if self._scenario is None:
            self._scenario = load_scenario(self.scenario_name)
        return self._scenario

    def agent_state(self) -> str:
        st = self.client.watch.status
        return st.state if st is not None else "UNKNOWN"

    @staticmethod
    def _as_obs(msg: Observation) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays = unpack_arrays(msg)
        obs: dict[str, Any] = {
            "images": {k[len("images/") :]: v for k, v in arrays.items() if k.startswith("images/")},
            "instruction": msg.instruction,
        }
        obs.update({k: v for k, v in arrays.items() if not k.startswith("images/")})
        info = {
            "success": msg.success,
            "metrics": dict(msg.metrics),
            "time": msg.time,
            "step": msg.step,
            "episode": msg.episode,
            "seed": msg.seed,
        }
        return obs, info

    # ------------------------------------------------------------ gym-style API
    def wait_enabled(self, timeout: float) -> bool:
        """Wait until an operator has enabled the robot (the agent ENABLED, RUNNING or HOLD)."""
        deadline = time.monotonic() + timeout
        while self.agent_state() not in MOVING_STATES:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def reset(self, seed: int, timeout: float = 5.0) -> tuple[dict[str, Any], dict[str, Any]]:
        """A new episode of the simulated robot's scenario with `seed`, once it is at rest."""
        before = self._next(-1)
        deadline = time.monotonic() + timeout
        while True:
            reply = self.client.episode(seed)
            if reply.ok:
                break
            if reply.reason in ("lease stale", "not the current lease"):  # lost while busy: lease anew
                try:
                    self.client.acquire()
                except PermissionError:
                    pass
            if time.monotonic() > deadline:
                raise ConnectionError(f"qrobot/{self.name} refused a new episode: {reply.reason}")
            time.sleep(0.1)  # (braking to rest after the last episode)
        msg = self._next(before.period, episode=before.episode + 1)
        self._seen = msg.period
        obs, info = self._as_obs(msg)
        return obs, dict(info, agent_state=self.agent_state())

    def approve(self, instruction: str, speed_scale: float, timeout: float) -> bool:
        """With an agent that requires approval: propose this task and wait until the
        operator approved it (True at once when no approval is required or it holds)."""
        status = self.client.watch.status
        if status is None or not status.approval:
            return True
        g = self.client.grant
        assert g is not None
        approved = (
            "approved "
            + digest(
                Proposal(
                    version=VERSION,
                    lease=g.lease,
                    epoch=g.epoch,
                    instruction=instruction,
                    scenario=self.scenario_name,
                    speed_scale=float(speed_scale),
                )
            )
            + ":"
        )
        if status.approval.startswith(approved):
            return True
        reply = self.client.propose(instruction, self.scenario_name, speed_scale)
        if not reply.ok:
            raise PermissionError(f"qrobot/{self.name} refused the proposal: {reply.reason}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            st = self.client.watch.status
            if st is not None and st.approval.startswith(approved):
                return True
            time.sleep(0.05)
        return False

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        a = np.clip(np.asarray(action, np.float32).reshape(-1), -1.0, 1.0)  # the agent refuses beyond [-1, 1]
        self.client.send(a, period=self.control_dt, lead=0.5 * self.control_dt)
        msg = self._next(self._seen)
        self._seen = msg.period
        obs, info = self._as_obs(msg)
        return obs, msg.reward, msg.terminated, msg.truncated, dict(info, agent_state=self.agent_state())

    def close(self) -> None:
        self.client.close()
        self._sub.undeclare()
        if getattr(self, "_own_session", False):
            self.session.close()


def run_remote_episode(
    robot: RemoteRobot,
    policy: Any,
    episode: int,
    seed: int,
    max_steps: int = 100_000,
    speed_scale: float = 1.0,
    wait: float = 60.0,
) -> EpisodeResult:
    """One episode through the agent. Ends on the task's own end, or when the agent stops
    executing (e-stop, operator lost: reason `estop` / `operator`), or the link is lost.
    An agent that requires approval gets this episode's task proposed first."""
    obs, info = robot.reset(seed)
    if not robot.approve(obs["instruction"], speed_scale, wait):
        return EpisodeResult(
            robot.scenario_name,
            str(getattr(policy, "name", type(policy).__name__)),
            episode,
            seed,
            obs["instruction"],
            False,
            0,
            "operator",
            {},
            {},
            f"the operator did not approve the task within {wait:g} s",
        )
    latest = robot._next(-1)  # (the world kept running while the operator looked)
    robot._seen = latest.period
    obs, info = robot._as_obs(latest)
    policy.reset(obs["instruction"])
    reason, error, steps = "timeout", "", 0
    terminated = truncated = False
    while not (terminated or truncated) and steps < max_steps:
        try:
            action = policy.act(obs)
        except Exception as exc:
            reason, error = "policy_error", _describe(exc)
            break
        try:
            obs, _, terminated, truncated, info = robot.step(action)
        except ConnectionError as exc:
            reason, error = "link_lost", str(exc)
            break
        steps += 1
        state = info["agent_state"]
        if state == "ESTOPPED":
            reason, error = "estop", "the agent is e-stopped"
            break
        if state not in MOVING_STATES:
            reason, error = "operator", f"the agent left the enabled states ({state})"
            break
    if reason == "timeout":
        reason = "success" if info["success"] else ("stopped" if terminated else "timeout")
    status = robot.client.watch.status  # the agent's supervisor, this episode (it resets with each new world)
    safety = {k: float(v) for k, v in status.safety.items()} if status is not None else {}
    return EpisodeResult(
        robot.scenario_name,
        str(getattr(policy, "name", type(policy).__name__)),
        episode,
        seed,
        obs["instruction"],
        reason == "success",
        int(info["step"]),
        reason,
        {k: float(v) for k, v in info["metrics"].items()},
        safety,
        error,
    )


def check_remote_policy(name: str) -> None:
    """Policies that see only observations can drive a remote robot; the experts read the
    simulator's privileged state, which a robot does not offer."""
    if name in ("expert", "noisy-expert", "wander"):
        raise QrobotError(
            f"run --robot: policy {name!r} reads the simulator's privileged state, which a remote "
            "robot does not offer; use qwen-vla, random or hold"
        )
