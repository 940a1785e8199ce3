"""`qrobot bench --executor ray`: the matrix's shares on an existing Ray cluster (`ray start
--head` on one machine, `ray start --address HEAD:6379` on the others; `--address auto` on
the head, or HEAD:6379). Ray is an opt-in extra (`pip install 'qrobot[ray]'`), imported only
here.

Each worker is an actor holding an env and a policy per (scenario, policy) pair, as a pool
process does (`matrix.run_unit`, one torch thread); it returns its share's rows and this
process (the driver) appends them to episodes.jsonl as each share comes back, so a run
directory never needs to be reachable from the workers (recordings do: they are written by
the workers, under the same path). A killed driver takes its actors with it; `--resume`
runs what no returned share covered.

With `--policy-gpus N` the policies that have `act_batch` run on N policy actors (one GPU
each) instead, which batch the env workers' requests (qrobot.policy_server_ray).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError
from qrobot.record.rundir import EPISODES_FILE, append_line

_OWN = {"connected": False}  # whether this module called ray.init (then it also shuts it down)


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise QrobotError(
            "bench --executor ray: Ray is not installed here; pip install 'qrobot[ray]' (on every machine of the cluster)"
        ) from None
    return ray


def connect(address: str | None, gpus: int | None = None) -> int:
    """Join the cluster at `address` (auto: the one on this machine) unless this process is
    already connected; return its CPUs. `gpus`: the policy actors' GPUs it must have."""
    ray = _ray()
    if not ray.is_initialized():
        where = address or "auto"
        try:
            _probe(where)  # (ray.init retries an address where nothing listens for minutes)
            ray.init(address=where, logging_level=logging.WARNING, configure_logging=True)
        except ConnectionError as exc:
            raise QrobotError(
                f"bench --address {where}: no Ray cluster there ({str(exc).splitlines()[0][:160]}); start one "
                "with `ray start --head`, and for one with token authentication export RAY_AUTH_MODE=token "
                "with its token in ~/.ray/auth_token (docs/benchmarking.md: Running on a Ray cluster)"
            ) from None
        _OWN["connected"] = True
    if gpus:
        from qrobot.policy_server_ray import check_cluster_gpus

        check_cluster_gpus(ray, gpus)
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def _probe(where: str, timeout: float = 3.0) -> None:
    """ConnectionError unless something accepts connections at the cluster's address."""
    import socket

    try:
        from ray._private.services import canonicalize_bootstrap_address

        addr = canonicalize_bootstrap_address(where)  # auto: the cluster this machine last started
    except ConnectionError:
        raise
    except Exception:  # (an internal of Ray's that moved: ray.init says what is wrong)
        return
    if not addr:
        return
    host, _, port = str(addr).rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise ConnectionError(f"nothing answers at {addr}: {exc}") from None


def disconnect() -> None:
    if _OWN["connected"]:
        _OWN["connected"] = False
        _ray().shutdown()  # this driver leaves; the cluster stays up


class Worker:
    """An env worker: the process pool's worker function as an actor (its envs and policies
    stay in this process across shares). `server`: the policy actor (--policy-gpus) that
    answers this share's policy, this worker being one of its clients."""

    def __init__(self) -> None:
        from qrobot.policy_server_ray import new_client

        self.client = new_client()

    def run(self, unit: Any, run_path: str, run_id: str, record: bool, server: Any = None) -> list[dict[str, Any]]:
        from qrobot import matrix

        proxy = None
        if server is not None:
            from qrobot.policy_server_ray import PolicyActorLost, served_session

            key = (unit.scenario, unit.spec, record)
            if key not in matrix._SESSIONS:  # run_unit's own cache: it then runs this session
                matrix._SESSIONS[key] = served_session(unit.scenario, unit.spec, record, server, self.client)
            proxy = matrix._SESSIONS[key].policy
            proxy.lost = None
        rows = matrix.run_unit(unit, run_path, run_id, record, append=False)
        if proxy is not None and proxy.lost:  # rows of a lost policy actor are not results
            raise PolicyActorLost(proxy.lost)
        return rows


def _portable(unit: Any) -> Any:
    """Paths made absolute (a worker's directory is not this process's)."""
    spec = unit.spec
    if spec.checkpoint:
        spec = dataclasses.replace(spec, checkpoint=str(Path(spec.checkpoint).resolve()))
    return dataclasses.replace(unit, spec=spec, cells=list(unit.cells))


def run_units(
    todo: list[Any],
    run_path: Path,
    run_id: str,
    record: bool,
    workers: int,
    progress: Any = None,
    policy_gpus: int = 0,
) -> None:
    """`workers` actors (one CPU each) take the shares one at a time; each share's rows are
    appended here as it comes back. A worker lost with its machine is restarted and its
    share run again (the rows are only written here, so nothing is written twice); so is a
    share whose policy actor (`policy_gpus`) was lost."""
    from qrobot import policy_server_ray as served
    from qrobot.matrix import share_done

    ray = _ray()
    servers: list[Any] = []
    try:
        if not todo:
            return
        connect(None, policy_gpus)
        actor = ray.remote(num_cpus=1, max_restarts=2, max_task_retries=2)(Worker)
        path = str(Path(run_path).resolve())
        queue = [_portable(u) for u in todo]
        n = max(1, min(workers, len(queue)))
        batched = {u.spec.label for u in queue if policy_gpus and served.batchable(u.spec.name)}
        if batched:
            pairs = {(u.scenario, u.spec.label): (u.scenario, u.spec) for u in queue if u.spec.label in batched}
            servers = served.start(ray, policy_gpus, list(pairs.values()), n)
        actors = [actor.remote() for _ in range(n)]
        server = {a: servers[k % len(servers)] for k, a in enumerate(actors)} if servers else {}
        pending: dict[Any, tuple[Any, Any]] = {}
        lost: dict[int, int] = {}  # share -> times its policy actor was lost

        def give(a: Any) -> None:
            if queue:
                u = queue.pop(0)
                to = server.get(a) if u.spec.label in batched else None  # (None: the policy runs in the worker)
                pending[a.run.remote(u, path, run_id, record, to)] = (a, u)

        try:
            for a in actors:
                give(a)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                a, unit = pending.pop(ref)
                try:
                    rows = _result(ray, ref)
                except served.PolicyActorLost:
                    lost[id(unit)] = lost.get(id(unit), 0) + 1
                    if lost[id(unit)] > 2:  # (as Ray's restarts of an actor: twice at most)
                        raise
                    queue.insert(0, unit)
                    give(a)
                    continue
                for row in rows:
                    append_line(Path(run_path) / EPISODES_FILE, row)
                if progress is not None:
                    share_done(progress, unit, rows)
                give(a)
        finally:
            for a in actors:
                ray.kill(a)  # (its envs go with its process)
    finally:
        if servers:
            served.stop(ray, servers)
        disconnect()


def _result(ray: Any, ref: Any) -> list[dict[str, Any]]:
    """A share's rows; a worker's QrobotError reaches the user as its own one line."""
    try:
        return list(ray.get(ref))
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, QrobotError):
            raise cause from None
        raise
