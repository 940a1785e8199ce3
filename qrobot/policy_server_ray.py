"""`qrobot bench --executor ray --policy-gpus N`: learned policies served by N policy actors
(one GPU each) that batch the requests of several env workers.

An env worker keeps its env and runs the episodes as before (`matrix.run_unit`), but its
policy is a `ServedPolicy`: each control step sends the observation to its policy actor and
waits for the action. A policy actor is an async Ray actor holding one policy (one model)
per (scenario, policy) pair; it collects the requests that arrive within WINDOW_S (or until
every env worker it serves has asked) and answers them with one `act_batch` (the optional
batched part of the Policy protocol, policies/base.py). Each env worker is one client of
the policy, with its own episode state, so a cell's row stays that of the in-process
executor within float32 tolerance (batching changes the order matrix products add up in).

Ray is imported only by the caller (qrobot.ray_executor); this module needs it only for
`ray.get` in ServedPolicy.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from qrobot.errors import QrobotError

LOG = logging.getLogger("qrobot")
WINDOW_S = 0.005  # how long a policy actor waits for more requests before a forward pass
CALLS = ("seed_episode", "reset")  # what a ServedPolicy passes on with its next request
STATS: dict[str, int] = {}  # the last bench's totals over its policy actors (read by tests)


class PolicyActorLost(QrobotError):
    """A policy actor died during a share (its machine went): the share's rows are dropped
    and the share runs again on the restarted actor."""


def batchable(name: str) -> bool:
    """Whether the named policy has `act_batch` (without building it)."""
    from qrobot.policies import POLICY_NAMES

    if name == "qwen-vla":
        from qrobot.policies.vla import VLAPolicy

        return hasattr(VLAPolicy, "act_batch")
    if name in POLICY_NAMES or name == "remote":
        return False
    from qrobot.policies.plugins import load_factory, plugin_entries

    entry = plugin_entries(POLICY_NAMES).get(name)  # a plugin: its factory is its class, or says so
    return entry is not None and hasattr(load_factory(name, entry), "act_batch")


def check_policy_gpus(gpus: int | None, executor: str, names: list[str]) -> None:
    """One line and exit 2 for a --policy-gpus that cannot work, before anything runs."""
    if not gpus:
        return
    if executor != "ray":
        raise QrobotError(
            f"bench --policy-gpus {gpus}: applies to --executor ray only (policy actors on a Ray cluster)"
        )
    if not any(batchable(n) for n in names):
        raise QrobotError(
            f"bench --policy-gpus {gpus}: no given policy has act_batch (batched serving; "
            f"{', '.join(dict.fromkeys(names))} do not); qwen-vla has, and a plugin whose class has it"
        )


def check_cluster_gpus(ray: Any, gpus: int) -> None:
    have = int(ray.cluster_resources().get("GPU", 0))
    if have < gpus:
        raise QrobotError(
            f"bench --policy-gpus {gpus}: the Ray cluster has {have} GPU(s); give at most {have}, "
            "or start GPU machines with `ray start --num-gpus N`"
        )


@dataclass
class _Request:
    scenario: str
    spec: Any  # matrix.PolicySpec
    client: str
    calls: list[tuple[str, Any]]
    obs: dict[str, Any]
    future: asyncio.Future


class PolicyActor:
    """One policy actor (ray.remote(num_gpus=1) by the caller; a plain object in tests).
    `clients`: env workers sending to it, so that it stops waiting once all have asked."""

    def __init__(self, clients: int = 1, window_s: float = WINDOW_S) -> None:
        import torch

        torch.set_num_threads(1)  # CPU: results as an in-process worker's (and its work is the GPU's)
        # full float32 matrix products and convolutions on a GPU (TF32 would widen the tolerance)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # (Ray sets CUDA_VISIBLE_DEVICES)
        self.clients, self.window = max(1, clients), window_s
        self.policies: dict[tuple[str, str], Any] = {}
        self.pool = ThreadPoolExecutor(1)  # the policies run here, so requests queue meanwhile
        self.pending: list[_Request] = []
        self.arrived: asyncio.Event | None = None
        self.batcher: asyncio.Task | None = None
        self.counts = {"requests": 0, "batches": 0, "largest": 0}

    def _policy(self, scenario: str, spec: Any) -> Any:
        key = (scenario, spec.label)
        if key not in self.policies:
            from qrobot.policies import make_policy
            from qrobot.policies.remote import _World  # (what make_policy reads of an env, without a world)
            from qrobot.scenario import load_scenario

            kwargs = spec.kwargs() | ({"device": self.device} if spec.name == "qwen-vla" else {})
            policy = make_policy(spec.name, _World(load_scenario(scenario)), seed=0, **kwargs)  # (as prepare's)
            if not hasattr(policy, "act_batch"):
                raise QrobotError(f"bench --policy-gpus: policy {spec.label!r} has no act_batch")
            self.policies[key] = policy
        return self.policies[key]

    async def prepare(self, scenario: str, spec: Any) -> str:
        """Build the pair's policy now (a bad checkpoint fails before any episode); its device."""
        await asyncio.get_running_loop().run_in_executor(self.pool, self._policy, scenario, spec)
        return self.device

    async def act(self, scenario: str, spec: Any, client: str, calls: list[tuple[str, Any]], obs: dict) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self.arrived is None:
            self.arrived = asyncio.Event()
        future = loop.create_future()
        self.pending.append(_Request(scenario, spec, client, calls, obs, future))
        self.arrived.set()
        if self.batcher is None or self.batcher.done():
            self.batcher = asyncio.create_task(self._batches())
        return await future

    async def stats(self) -> dict[str, int]:
        return dict(self.counts)

    async def _batches(self) -> None:
        loop = asyncio.get_running_loop()
        assert self.arrived is not None
        while True:
            await self.arrived.wait()
            end = loop.time() + self.window
            while len(self.pending) < self.clients and loop.time() < end:
                self.arrived.clear()
                try:
                    await asyncio.wait_for(self.arrived.wait(), end - loop.time())
                except asyncio.TimeoutError:
                    break
            batch, self.pending = self.pending, []
            self.arrived.clear()
            if not batch:
                continue
            try:
                answers = await loop.run_in_executor(self.pool, self._run, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # (never leave a request unanswered)
                answers = [(False, exc)] * len(batch)
            for req, (ok, value) in zip(batch, answers, strict=True):
                if req.future.done():
                    continue
                if ok:
                    req.future.set_result(value)
                else:
                    req.future.set_exception(value)

    def _run(self, batch: list[_Request]) -> list[tuple[bool, Any]]:
        """The batch's answers: its reset and re-seed calls, then one act_batch per pair."""
        out: list[tuple[bool, Any]] = [(False, RuntimeError("unanswered"))] * len(batch)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(batch):
            try:
                policy = self._policy(r.scenario, r.spec)
                for method, arg in r.calls:
                    if method not in CALLS:
                        raise ValueError(f"a served policy takes {', '.join(CALLS)}, not {method!r}")
                    getattr(policy, method)(arg, client=r.client)
            except Exception as exc:  # this episode's policy_error, as a raising reset is in-process
                out[i] = (False, exc)
                continue
            groups.setdefault((r.scenario, r.spec.label), []).append(i)
        for key, rows in groups.items():
            try:
                actions = self.policies[key].act_batch([batch[i].obs for i in rows], [batch[i].client for i in rows])
                answers = [(True, a) for a in actions]
            except Exception as exc:  # (a row that breaks the forward pass fails its batch-mates too)
                answers = [(False, exc)] * len(rows)
            for i, answer in zip(rows, answers, strict=True):
                out[i] = answer
            self.counts["batches"] += 1
            self.counts["largest"] = max(self.counts["largest"], len(rows))
        self.counts["requests"] += len(batch)
        return out


class ServedPolicy:
    """The env worker's side: the Policy protocol, answered by a policy actor. reset and
    seed_episode travel with the next request (no round trip of their own)."""

    needs_images = True

    def __init__(self, server: Any, scenario: str, spec: Any, client: str) -> None:
        self.server, self.scenario, self.spec, self.client = server, scenario, spec, client
        self.name = spec.name
        self.calls: list[tuple[str, Any]] = []
        self.lost: str | None = None  # the policy actor died: the share is run again

    def seed_episode(self, seed: int) -> None:
        self.calls.append(("seed_episode", int(seed)))

    def reset(self, instruction: str) -> None:
        self.calls.append(("reset", instruction))

    def act(self, obs: dict[str, Any]) -> np.ndarray:
        import ray

        if self.lost:
            raise PolicyActorLost(self.lost)
        calls, self.calls = self.calls, []
        try:
            return np.asarray(ray.get(self.server.act.remote(self.scenario, self.spec, self.client, calls, obs)))
        except ray.exceptions.RayActorError as exc:
            self.lost = f"bench --policy-gpus: a policy actor was lost ({str(exc).splitlines()[0][:160]})"
            raise PolicyActorLost(self.lost) from None
        except ray.exceptions.RayTaskError as exc:  # the policy raised: this episode's policy_error, as in-process
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None


def served_session(scenario: str, spec: Any, record: bool, server: Any, client: str) -> Any:
    """An env as `runner.prepare` makes it, with a ServedPolicy instead of the model."""
    from qrobot.envs.core import QRobotEnv
    from qrobot.policies import needs_images
    from qrobot.runner import Session
    from qrobot.safety.supervisor import OperatorKey
    from qrobot.scenario import load_scenario

    operator = OperatorKey()
    env = QRobotEnv(load_scenario(scenario), images=needs_images(spec.name) or record, operator=operator)
    return Session(env, ServedPolicy(server, scenario, spec, client), operator, spec.name)


def new_client() -> str:
    return uuid.uuid4().hex


def start(ray: Any, gpus: int, pairs: list[tuple[str, Any]], workers: int) -> list[Any]:
    """`gpus` policy actors, each with every served pair's policy built (errors: one line)."""
    actor = ray.remote(num_gpus=1, num_cpus=0, max_restarts=2)(PolicyActor)
    servers = [actor.remote(-(-workers // gpus)) for _ in range(gpus)]
    try:
        devices = ray.get([s.prepare.remote(sc, spec) for s in servers for sc, spec in pairs])
    except ray.exceptions.RayTaskError as exc:
        for s in servers:
            ray.kill(s)
        cause = getattr(exc, "cause", None)
        if isinstance(cause, QrobotError):
            raise cause from None
        raise
    LOG.info("%d policy actor(s) on %s serve %s", gpus, ", ".join(sorted(set(devices))), _names(pairs))
    return servers


def stop(ray: Any, servers: list[Any]) -> None:
    """Kill the policy actors, keeping their totals in STATS (and the log)."""
    STATS.clear()
    try:
        for counts in ray.get([s.stats.remote() for s in servers], timeout=10):
            STATS["requests"] = STATS.get("requests", 0) + counts["requests"]
            STATS["batches"] = STATS.get("batches", 0) + counts["batches"]
            STATS["largest"] = max(STATS.get("largest", 0), counts["largest"])
    except Exception:  # (a lost actor has no totals; the rows are what counts)
        pass
    for s in servers:
        ray.kill(s)
    if STATS.get("batches"):
        LOG.info(
            "policy actors: %d requests in %d act_batch calls (largest batch %d)",
            STATS["requests"],
            STATS["batches"],
            STATS["largest"],
        )


def _names(pairs: list[tuple[str, Any]]) -> str:
    return ", ".join(f"{sc} / {spec.label}" for sc, spec in pairs)
