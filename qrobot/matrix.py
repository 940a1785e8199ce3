"""The benchmark matrix: (scenario, policy, seed) cells, run in-process, on a local process
pool or on a Ray cluster (qrobot.ray_executor), each result appended to episodes.jsonl the
moment it ends (on Ray: as each worker's share comes back), resumable.

A cell's result depends only on the cell: the world comes from the seed, and a policy
with its own randomness is re-seeded from the seed before each episode (`seed_episode`),
so a cell gives the same result whichever worker runs it and in whatever order.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError
from qrobot.record.rundir import EPISODES_FILE, SCHEMA_VERSION, append_line, recording_id, recording_path

LEARNED = ("qwen-vla",)
ADDRESSED = ("remote",)  # `remote=tls/HOST:PORT[?keys=DIR&timeout=S]`: a policy server (policies/remote.py)


@dataclass(frozen=True)
class PolicySpec:
    """`name`, `name=CHECKPOINT` or `remote=ADDRESS`; `label` names it in the table, the
    files and --resume."""

    label: str
    name: str
    checkpoint: str | None = None
    address: str | None = None  # remote: the server's address, checked, its key directory absolute

    @classmethod
    def parse(cls, text: str) -> PolicySpec:
        from qrobot.policies import policy_names

        name, _, path = text.partition("=")
        if name not in policy_names():
            raise QrobotError(f"bench --policies: unknown policy {name!r}; valid names: {', '.join(policy_names())}")
        if name in ADDRESSED:
            if not path:
                raise QrobotError(f"bench --policies {text}: give the server after '=': remote=tls/HOST:PORT")
            from qrobot.policies.remote import parse_address

            return cls(text, name, address=str(parse_address(path, f"bench --policies {text}")))
        if "=" in text and name not in LEARNED:
            raise QrobotError(f"bench --policies {text}: only {', '.join(LEARNED)} takes =CHECKPOINT")
        if "=" in text and not path:
            raise QrobotError(f"bench --policies {text}: give the checkpoint directory after '='")
        if path and not (Path(path) / "vla_config.json").is_file():
            raise QrobotError(f"bench --policies {text}: {path} holds no trained model (vla_config.json)")
        return cls(text, name, path or None)

    @property
    def folder(self) -> str:
        """The recordings' folder: the label without characters a path cannot carry."""
        return "".join(c if c.isalnum() or c in "-_." else "_" for c in self.label)

    def kwargs(self) -> dict[str, Any]:
        if self.address:
            return {"address": self.address}
        return {"checkpoint": self.checkpoint} if self.checkpoint else {}


def unfit(spec: PolicySpec, scenario: Any) -> str | None:
    from qrobot.policies import unfit_reason

    if spec.checkpoint:
        from qrobot.vla.checkpoint import fits_scenario

        return fits_scenario(Path(spec.checkpoint), scenario)
    return unfit_reason(spec.name, scenario)


@dataclass
class Unit:
    """Seeds of one (scenario, policy) pair that one worker runs with one env and policy."""

    scenario: str
    spec: PolicySpec
    cells: list[tuple[int, int]] = field(default_factory=list)  # (episode index, seed)


def done_cells(run_path: Path) -> set[tuple[str, str, int]]:
    """(scenario, policy, seed) of every finished episode; a line cut short by a kill is not one."""
    return {(sc, pol, r.seed) for (sc, pol), eps in results(run_path).items() for r in eps}


def cell_name(scenario: str) -> str:
    """The name episode rows carry for a scenario given by name or by .toml path."""
    from qrobot.scenario import load_scenario

    return load_scenario(scenario).name


def units(
    pairs: list[tuple[str, PolicySpec]], episodes: int, seed: int, done: set[tuple[str, str, int]], workers: int
) -> list[Unit]:
    """The cells not done yet, cut into about four units per worker for each pair, so that
    workers finish together (a worker keeps its env and policy for a pair across units)."""
    out = []
    for sc, spec in pairs:
        name = cell_name(sc)
        todo = [(k, seed + k) for k in range(episodes) if (name, spec.label, seed + k) not in done]
        if not todo:
            continue
        parts = max(1, min(len(todo), 4 * workers if workers > 1 else 1))
        for i in range(parts):
            chunk = todo[i::parts]
            if chunk:
                out.append(Unit(sc, spec, chunk))
    return out


def run_unit(
    unit: Unit, run_path: str, run_id: str, record: bool, progress: Any = None, append: bool = True
) -> list[dict[str, Any]]:
    """One worker's share: episodes of one pair, each appended as its own line on ending
    (`append`; else the caller appends them: a Ray worker may be on another machine).
    Returns their rows."""
    import torch

    from qrobot.record import EpisodeRecorder
    from qrobot.runner import prepare, run_episode

    torch.set_num_threads(1)  # results must not depend on the executor
    key = (unit.scenario, unit.spec, record)
    if key not in _SESSIONS:
        _SESSIONS[key] = prepare(
            unit.scenario, unit.spec.name, record=record, policy_kwargs=unit.spec.kwargs(), preflight=False
        )
    session = _SESSIONS[key]
    root = Path(run_path)
    rows = []
    for k, s in unit.cells:
        reseed = getattr(session.policy, "seed_episode", None)
        if reseed is not None:
            reseed(s)
        rec = None
        if record:
            path = recording_path(root, unit.scenario, k, s, unit.spec.folder)
            rec = EpisodeRecorder(path, unit.scenario, recording_id(run_id, unit.scenario, k, s))
        on_step = None if progress is None else progress.step
        res = run_episode(session.env, session.policy, k, s, rec, session.operator, on_step)
        if progress is not None:
            progress.episode(res.success)
        res.policy = unit.spec.label
        if rec is not None and rec.path.exists() and not rec.failed:
            res.recording = str(rec.path)
        row = {"schema_version": SCHEMA_VERSION, **res.to_dict()}
        if unit.spec.checkpoint:
            row["checkpoint"] = unit.spec.checkpoint
        if append:
            append_line(root / EPISODES_FILE, row)
        rows.append(row)
    return rows


_SESSIONS: dict[tuple[str, PolicySpec, bool], Any] = {}  # this process's envs and policies, by pair


def close_sessions() -> None:
    while _SESSIONS:
        session = _SESSIONS.popitem()[1]
        session.close()
        close = getattr(session.policy, "close", None)  # (remote: its network session)
        if close is not None:
            close()


def worker_count(workers: int | None, executor: str = "local", address: str | None = None) -> int:
    """How many workers run the cells: `workers`, else the core count here (local) or the
    Ray cluster's CPUs (`ray`: connects to the cluster at `address`)."""
    if executor == "ray":
        from qrobot.ray_executor import connect

        cpus = connect(address)
        return min(workers, cpus) if workers else cpus
    return workers or os.cpu_count() or 1


def run_units(
    todo: list[Unit],
    run_path: Path,
    run_id: str,
    record: bool,
    workers: int,
    progress: Any = None,
    executor: str = "local",
    policy_gpus: int = 0,
) -> None:
    """In this process for one worker (progress per control step); otherwise a pool of
    fresh interpreters (spawn: no PyBullet or torch state is copied), one torch thread
    each, progress per finished share; or (`executor="ray"`) `workers` actors on the Ray
    cluster `worker_count` connected to (`policy_gpus`: batched policies on that many GPU actors)."""
    if executor == "ray":
        from qrobot.ray_executor import run_units as on_ray

        on_ray(todo, run_path, run_id, record, workers, progress, policy_gpus)
        return
    if workers <= 1:
        try:
            for u in todo:
                run_unit(u, str(run_path), run_id, record, progress)
        finally:
            close_sessions()
        return
    import multiprocessing

    env = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # read by the workers' torch at import
    try:
        tail = EpisodeTail(run_path / EPISODES_FILE)
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {pool.submit(run_unit, u, str(run_path), run_id, record) for u in todo}
            while pending:
                done, pending = wait(pending, timeout=0.5, return_when=FIRST_COMPLETED)
                for job in done:
                    job.result()  # a worker's QrobotError reaches the user as one line
                if progress is not None:  # live: each episode as its worker appends it
                    for row in tail.new_rows():
                        progress.worker_episode(bool(row.get("success")), row.get("steps", 0), _last(row, workers))
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def share_done(progress: Any, unit: Unit, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        progress.worker_episode(bool(row["success"]), row.get("steps", 0), _last(row))


def _last(row: dict[str, Any], workers: int = 0) -> str:
    end = "success" if row.get("success") else row.get("end_reason", "?")
    ran = f"{workers} workers; " if workers else ""
    return f"{ran}last: {row.get('scenario')} / {row.get('policy')} seed {row.get('seed')} ({end})"


class EpisodeTail:
    """The rows appended to an `episodes.jsonl` since the last call (whole lines only: a
    worker may be mid-write), for progress while worker processes run the episodes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.is_file() else 0

    def new_rows(self) -> list[dict[str, Any]]:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        whole = data[: data.rfind(b"\n") + 1]
        self.offset += len(whole)
        rows = []
        for line in whole.splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows


def results(run_path: Path) -> dict[tuple[str, str], list[Any]]:
    """Every finished episode of the run by (scenario, policy), in seed order."""
    from qrobot.runner import EpisodeResult

    names = {f.name for f in fields(EpisodeResult)}
    groups: dict[tuple[str, str], list[Any]] = defaultdict(list)
    seen: set[tuple[str, str, int]] = set()
    path = Path(run_path) / EPISODES_FILE
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        try:
            row = json.loads(line)
            res = EpisodeResult(**{k: v for k, v in row.items() if k in names})
        except (json.JSONDecodeError, TypeError):
            continue
        key = (res.scenario, res.policy, res.seed)
        if key not in seen:  # an episode re-run after a kill counts once
            seen.add(key)
            groups[(res.scenario, res.policy)].append(res)
    return {k: sorted(v, key=lambda r: r.seed) for k, v in groups.items()}


def write_parquet(run_path: Path) -> Path:
    """results.parquet: one row per episode; metrics and safety counts flattened to columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = []
    for eps in results(run_path).values():
        for r in eps:
            row = {k: v for k, v in r.to_dict().items() if k not in ("metrics", "safety")}
            row.update({f"metric.{k}": v for k, v in r.metrics.items()})
            row.update({f"safety.{k}": v for k, v in r.safety.items()})
            rows.append(row)
    out = Path(run_path) / "results.parquet"
    keys = list(dict.fromkeys(k for r in rows for k in r))  # (from_pylist takes the first row's columns only)
    pq.write_table(pa.Table.from_pylist([{k: r.get(k) for k in keys} for r in rows]), out)
    return out
