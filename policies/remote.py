"""`remote`: a policy that runs elsewhere (a GPU box serving OpenVLA, pi0, a LeRobot policy, or
any qrobot policy through `qrobot serve-policy`), queried once per control step over the
bridge's transport and messages, so that qrobot benchmarks it without importing its stack.

Wire (Zenoh query/reply, mutual TLS with the bridge's certificates; the bench side connects
with the `agent` certificate, the server listens with the `policy` one):

- key `qrobot/serve-policy/act/<client>`, one client id per policy instance (a bench worker);
- request: the bridge's `Observation` (arrays `images/<camera>`, `proprio`, `goal`, the
  instruction, as a robot streams them). `episode` counts the client's episodes (a new value:
  the server resets its policy with the instruction), `seed` is the episode's seed when the
  benchmark re-seeded the policy (`seed_episode`) and -1 when it did not, `period` numbers
  the requests, `step` the steps of the episode;
- reply: the bridge's `Command` whose `seq` is the request's `period`, with one entry (an
  action) or several (a chunk: played one per control step, in order, before the next
  request), or a `Reply` with `ok=False` and the reason.

A server that is gone, does not answer within the timeout, or refuses, ends the episode as a
`policy_error` with that reason (the runner's rule for a policy that raises); never a hang.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from gymnasium import spaces

from qrobot.errors import QrobotError

LOG = logging.getLogger("qrobot")
KEY = "qrobot/serve-policy/act"
CLIENT_ROLE, SERVER_ROLE = "agent", "policy"  # the certificates of `qrobot keys init`
DEFAULT_TIMEOUT = 10.0  # seconds a step waits for the server's answer
ENV_ADDRESS = "QROBOT_REMOTE_POLICY"  # the address for `qrobot run --policy remote`
PRIVILEGED = ("expert", "noisy-expert", "wander")
MAX_CLIENTS = 64  # policies a server keeps (one per client and scenario; least recently used go)


class RemotePolicyError(RuntimeError):
    """The server is gone, late, or refused: this episode ends (policy_error)."""


@dataclass(frozen=True)
class Address:
    """`tls/HOST:PORT[?keys=DIR&timeout=SECONDS]`: the server's endpoint, the directory of
    `qrobot keys init` (ca.pem, agent.pem, agent.key; default ./keys) and the timeout."""

    endpoint: str
    keys: str
    timeout: float = DEFAULT_TIMEOUT

    def __str__(self) -> str:
        return f"{self.endpoint}?keys={self.keys}&timeout={self.timeout:g}"


def parse_address(text: str, flag: str = "policy 'remote'") -> Address:
    """The address, checked: a TLS endpoint, a key directory holding the client's certificate
    (made absolute, so that workers elsewhere find it), a positive timeout."""
    from qrobot.bridge.cli import _check_endpoint, _check_keys

    endpoint, _, query = str(text).partition("?")
    _check_endpoint(flag, endpoint)
    try:
        opts = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=True)) if query else {}
    except ValueError:
        raise QrobotError(f"{flag}: {text!r}: options go as ?keys=DIR&timeout=SECONDS") from None
    unknown = sorted(set(opts) - {"keys", "timeout"})
    if unknown:
        raise QrobotError(f"{flag}: {text!r}: unknown option {unknown[0]!r} (keys, timeout)")
    keys = Path(opts.get("keys") or "keys").expanduser().resolve()
    _check_keys(flag, keys, CLIENT_ROLE)
    try:
        timeout = float(opts.get("timeout", DEFAULT_TIMEOUT))
    except ValueError:
        timeout = math.nan
    if not (math.isfinite(timeout) and 0 < timeout <= 3600):
        raise QrobotError(f"{flag}: timeout={opts.get('timeout')!r}: seconds in (0, 3600]")
    return Address(endpoint, str(keys), timeout)


# ---------------------------------------------------------------- the client (a bench worker)
class RemotePolicy:
    """The policy protocol, answered by a server. One Zenoh session per instance, opened at
    the first step (in the worker that runs the episodes)."""

    name = "remote"
    needs_images = True

    def __init__(self, address: Address, scenario: Any, action_space: spaces.Box) -> None:
        self.address = address
        self.robot, self.scenario = str(scenario.robot), str(scenario.name)
        self.action_dim = int(np.prod(action_space.shape))
        self.key = f"{KEY}/{uuid.uuid4().hex}"
        self._session: Any = None
        self._queue: deque[np.ndarray] = deque()
        self._episode, self._step, self._period = -1, 0, 0
        self._next_seed = self._seed = -1
        self._instruction = ""

    def seed_episode(self, seed: int) -> None:
        """Passed on with the episode's first request: the server re-seeds its policy."""
        self._next_seed = int(seed)

    def reset(self, instruction: str) -> None:
        self._episode += 1
        self._step = 0
        self._seed, self._next_seed = self._next_seed, -1
        self._instruction = instruction
        self._queue.clear()

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        if not self._queue:
            self._queue.extend(self._ask(obs))
        self._step += 1
        return self._queue.popleft()

    def _open(self) -> Any:
        if self._session is None:
            import zenoh

            from qrobot.bridge.transport import config

            try:
                self._session = zenoh.open(config(CLIENT_ROLE, self.address.keys, connect=self.address.endpoint))
            except Exception as exc:  # (zenoh.ZError) a certificate it cannot read, a bad endpoint
                raise RemotePolicyError(f"cannot open a session to {self.address.endpoint}: {exc}") from None
        return self._session

    def _request(self, obs: dict[str, Any]) -> bytes:
        from qrobot.bridge.messages import VERSION, Observation, encode, pack_arrays

        arrays = {f"images/{k}": v for k, v in (obs.get("images") or {}).items()}
        arrays.update({k: obs[k] for k in ("proprio", "goal") if k in obs})
        raw, shapes, dtypes = pack_arrays(arrays)
        self._period += 1
        msg = Observation(
            version=VERSION,
            robot=self.robot,
            scenario=self.scenario,
            episode=self._episode,
            seed=self._seed,
            period=self._period,
            step=self._step,
            time=0.0,
            instruction=str(obs.get("instruction", self._instruction)),
            arrays=raw,
            shapes=shapes,
            dtypes=dtypes,
        )
        return encode(msg)

    def _ask(self, obs: dict[str, Any]) -> list[np.ndarray]:
        """The server's action(s) for this observation. Until the deadline a query that found
        no server (the link still coming up) is sent again; one the server received is not."""
        from qrobot.bridge.messages import Command, Reply, decode, entry_values

        session, payload, where = self._open(), self._request(obs), self.address.endpoint
        deadline = time.monotonic() + self.address.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._no_answer(where)
            sent = time.monotonic()
            replies = list(session.get(self.key, payload=payload, timeout=left))
            for reply in replies:
                if reply.ok is None:
                    err = reply.err.payload.to_string() if reply.err is not None else "?"
                    if err.lower().startswith("timeout"):
                        raise self._no_answer(where)
                    raise RemotePolicyError(f"the policy server at {where} failed: {err[:200]}")
                msg, why = decode(reply.ok.payload.to_bytes())
                if isinstance(msg, Reply):
                    raise RemotePolicyError(f"the policy server at {where} refused: {msg.reason[:200]}")
                if not isinstance(msg, Command):
                    raise RemotePolicyError(f"the policy server at {where} sent no action: {why or type(msg).__name__}")
                if msg.seq != self._period:
                    raise RemotePolicyError(f"the policy server answered request {msg.seq}, not {self._period}")
                out = [entry_values(e).astype(np.float32) for e in msg.entries]
                if any(a.shape != (self.action_dim,) for a in out):
                    raise RemotePolicyError(
                        f"the policy server sent actions of {out[0].size} values; {self.scenario} takes "
                        f"{self.action_dim}"
                    )
                return out
            if time.monotonic() - sent > 0.5 * left:  # waited, yet no reply: not a link coming up
                raise self._no_answer(where)
            time.sleep(0.02)

    def _no_answer(self, where: str) -> RemotePolicyError:
        # one message whether no server is there or it was too slow: on a loaded machine a
        # query to nobody can take as long as one to a slow server, so timing cannot tell them apart
        return RemotePolicyError(
            f"no answer from a policy server at {where} within {self.address.timeout:g} s (is `qrobot "
            "serve-policy` running there, with keys of the same authority, and answering in time?)"
        )

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            session.close()


class _Factory:
    """`make(env, seed, address=...)`, as the `qrobot.policies` entry point `remote`."""

    needs_images = True  # what the served policy sees is not known here: send the cameras

    def __call__(self, env: Any, seed: int = 0, **kwargs: Any) -> RemotePolicy:
        text = kwargs.get("address") or os.environ.get(ENV_ADDRESS)
        if not text:
            raise QrobotError(
                "policy 'remote' needs the server's address: bench --policies "
                f"remote=tls/HOST:PORT[?keys=DIR&timeout=S], or {ENV_ADDRESS}=tls/HOST:PORT for run"
            )
        base = env.unwrapped
        return RemotePolicy(parse_address(text), base.scenario, env.action_space)

    def unfit(self, scenario: Any) -> str | None:
        return None  # the server says so at the first step if it cannot


make = _Factory()


# ---------------------------------------------------------------- the server
class _World:
    """What make_policy reads of an env, where there is no world: the scenario and the
    action space. No privileged state: a served policy sees observations only."""

    def __init__(self, scenario: Any) -> None:
        from qrobot.vla.checkpoint import scenario_dims

        self.scenario = scenario
        self.action_space = spaces.Box(-1.0, 1.0, (scenario_dims(scenario)[2],), np.float32)

    @property
    def unwrapped(self) -> _World:
        return self

    def privileged_state(self) -> dict[str, Any]:
        raise QrobotError("a served policy sees observations only, not the simulator's state")


class PolicyServer:
    """Answers requests with the named policy: one instance per (client, scenario), reset and
    re-seeded as the client's episodes begin. `handle` is the whole protocol (bytes in, bytes
    out); `serve` puts it on a Zenoh queryable."""

    def __init__(
        self, policy: str, scenarios: list[str] | None = None, kwargs: dict[str, Any] | None = None, seed: int = 0
    ) -> None:
        from qrobot.policies import policy_names

        if policy not in policy_names():
            raise QrobotError(f"serve-policy: unknown policy {policy!r}; valid names: {', '.join(policy_names())}")
        if policy in PRIVILEGED or policy == "remote":
            raise QrobotError(
                f"serve-policy: policy {policy!r} "
                + ("is itself remote" if policy == "remote" else "reads the simulator's privileged state")
                + "; serve one that sees observations only (qwen-vla, random, hold, a plugin)"
            )
        self.policy, self.kwargs, self.seed = policy, dict(kwargs or {}), seed
        self.scenarios = list(scenarios or [])
        self._policies: OrderedDict[tuple[str, str], list[Any]] = OrderedDict()  # -> [policy, episode]
        self.answered = 0
        for name in self.scenarios:  # made now: a bad checkpoint fails before serving
            self._make(name)

    def _make(self, scenario: str) -> Any:
        from qrobot.policies import make_policy, unfit_reason

        from qrobot.scenario import load_scenario

        sc = load_scenario(scenario)
        why = unfit_reason(self.policy, sc) if not self.kwargs.get("checkpoint") else None
        if why:
            raise QrobotError(f"serve-policy: {self.policy} cannot drive {scenario}: {why}")
        return make_policy(self.policy, _World(sc), seed=self.seed, **self.kwargs)

    def _policy_for(self, client: str, scenario: str) -> list[Any]:
        key = (client, scenario)
        if key not in self._policies:
            if self.scenarios and scenario not in self.scenarios:
                raise QrobotError(f"this server serves scenario(s) {', '.join(self.scenarios)}, not {scenario!r}")
            self._policies[key] = [self._make(scenario), None]
            while len(self._policies) > MAX_CLIENTS:
                self._policies.popitem(last=False)
        self._policies.move_to_end(key)
        return self._policies[key]

    def handle(self, data: bytes, client: str) -> bytes:
        """One request's answer: a Command with the action, or a Reply saying why not."""
        from qrobot.bridge.messages import (
            MAX_OBSERVATION,
            VERSION,
            Command,
            Entry,
            Observation,
            Reply,
            actions,
            decode,
            encode,
        )

        msg, why = decode(data, MAX_OBSERVATION)
        if not isinstance(msg, Observation):
            return encode(Reply(version=VERSION, ok=False, reason=why or f"a {type(msg).__name__}, not an observation"))
        try:
            obs = _observation(msg)  # as a policy driving a robot over the bridge sees it
            obs = {k: v if k == "instruction" else _copy(v) for k, v in obs.items()}
            entry = self._policy_for(client, msg.scenario)
            policy = entry[0]
            if entry[1] != msg.episode:  # the client's next episode
                if msg.seed >= 0 and hasattr(policy, "seed_episode"):
                    policy.seed_episode(msg.seed)
                policy.reset(msg.instruction)
                entry[1] = msg.episode
            action = np.asarray(policy.act(obs), np.float32).reshape(-1)
        except Exception as exc:  # the client's episode ends with this reason; the server goes on
            failed = self._policies.get((client, msg.scenario))
            if failed is not None:
                failed[1] = None  # its next request starts afresh
            return encode(Reply(version=VERSION, ok=False, reason=f"{type(exc).__name__}: {exc}"[:300]))
        self.answered += 1
        cmd = Command(
            version=VERSION,
            lease="serve-policy",
            epoch=0,
            seq=msg.period,
            nonce=b"",
            entries=[Entry(expires=1.0, action=actions(action))],
        )
        return encode(cmd)


def _observation(msg: Any) -> dict[str, Any]:
    """RemoteRobot._as_obs's observation, without importing the bridge's robot client: it
    brings the runner and the recorder (rerun-sdk), which a LeRobot venv does not have."""
    from qrobot.bridge.messages import unpack_arrays

    arrays = unpack_arrays(msg)
    obs: dict[str, Any] = {
        "images": {k[len("images/") :]: v for k, v in arrays.items() if k.startswith("images/")},
        "instruction": msg.instruction,
    }
    obs.update({k: v for k, v in arrays.items() if not k.startswith("images/")})
    return obs


def _copy(value: Any) -> Any:
    """Writable arrays, as a local env hands them (the message's are read-only views)."""
    if isinstance(value, dict):
        return {k: np.array(v) for k, v in value.items()}
    return np.array(value)


def serve(server: PolicyServer, listen: str, keys: str | Path, ready: Any = None) -> None:
    """Answer queries on `listen` until SIGTERM or Ctrl-C. Requests are answered one at a time,
    in the order they come (a thread takes them off the queryable's channel)."""
    import zenoh

    from qrobot.bridge.transport import config

    session = zenoh.open(config(SERVER_ROLE, keys, listen=listen))
    stop = threading.Event()
    queryable = session.declare_queryable(f"{KEY}/*")

    def loop() -> None:
        while not stop.is_set():
            try:
                query = queryable.recv()
            except Exception:  # the channel closed: the session is ending
                return
            with query:  # (the final reply goes when the query is dropped: at once, not at the next one)
                client = str(query.key_expr).rsplit("/", 1)[-1]
                data = query.payload.to_bytes() if query.payload is not None else b""
                query.reply(query.key_expr, server.handle(data, client))

    worker = threading.Thread(target=loop, name="serve-policy", daemon=True)
    worker.start()
    old = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        if ready is not None:
            ready()
        while not stop.wait(0.2) and worker.is_alive():
            pass
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        signal.signal(signal.SIGTERM, old)
        session.close()  # (closes the queryable's channel under the worker's recv; undeclaring
        worker.join(2)  # it while recv holds it fails with "Already borrowed")


def serve_cmd(args: Any) -> int:
    """`qrobot serve-policy POLICY --listen tls/HOST:PORT`: wrap a qrobot policy as a server."""
    from qrobot.bridge.cli import _check_endpoint, _check_keys

    _check_endpoint("serve-policy --listen", args.listen)
    _check_keys("serve-policy --keys", args.keys, SERVER_ROLE)
    kwargs: dict[str, Any] = {}
    if args.checkpoint is not None or args.device is not None:
        if args.policy not in ("qwen-vla", "lerobot"):
            raise QrobotError(
                f"serve-policy: --checkpoint and --device apply to qwen-vla and lerobot only, not {args.policy!r}"
            )
        from qrobot.checks import check_device

        check_device("serve-policy --device", args.device or "cpu")
        kwargs = {"checkpoint": str(args.checkpoint) if args.checkpoint else None, "device": args.device or "cpu"}
        kwargs = {k: v for k, v in kwargs.items() if v is not None}
    if args.policy == "lerobot":  # its directory, and LeRobot importable, before serving
        from qrobot.policies.lerobot_policy import check_checkpoint

        check_checkpoint(args.checkpoint)
    import torch

    torch.set_num_threads(args.threads)  # 1: the numbers a one-thread bench worker computes locally
    server = PolicyServer(args.policy, args.scenario, kwargs, seed=args.seed)
    what = f"{args.policy}" + (f" ({', '.join(args.scenario)})" if args.scenario else "")

    def ready() -> None:
        print(f"serving {what} on {args.listen} (key {KEY}/*); Ctrl-C stops", flush=True)

    serve(server, args.listen, args.keys, ready)
    print(f"served {server.answered} requests", flush=True)
    return 0
