"""`qrobot bench`: scenarios x policies x episodes into a Markdown and CSV table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from qrobot import matrix
from qrobot.matrix import PolicySpec, unfit
from qrobot.progress import Progress
from qrobot.record import RunDir
from qrobot.runner import summarize

COLUMNS = [
    "scenario",
    "policy",
    "episodes",
    "success_rate",
    "ci_low",
    "ci_high",
    "spl",
    "mean_steps",
    "collisions",
    "interventions",
    "protective_stop_time",
    "intrusions",
    "estops",
    "policy_errors",
    "env_errors",
    "limits_profile",
]


def plan(
    scenarios: dict[str, Any], specs: list[PolicySpec]
) -> tuple[list[tuple[str, PolicySpec]], list[tuple[str, str, str]]]:
    """(pairs to run, (scenario, policy, reason) pairs skipped because the policy cannot drive it)."""
    pairs, skipped = [], []
    for name, sc in scenarios.items():
        for spec in specs:
            why = unfit(spec, sc)
            (skipped.append((name, spec.label, why)) if why else pairs.append((name, spec)))
    return pairs, skipped


def bench(
    pairs: list[tuple[str, PolicySpec]],
    episodes: int,
    seed: int,
    run_dir: RunDir,
    record: bool = False,
    workers: int | None = 1,
    show: bool = True,
    executor: str = "local",
    address: str | None = None,
    policy_gpus: int = 0,
) -> list[dict[str, Any]]:
    """Every (scenario, policy, seed) cell not yet in the run's episodes.jsonl; each result
    is appended as it ends (recordings under <policy>/<scenario>/). Rows summarise every
    finished cell of the run, earlier runs of it included. `executor`: local (this process
    or a process pool) or ray (the cluster at `address`; `policy_gpus`: policy actors that
    batch the learned policies); workers None: as many as cores."""
    workers = matrix.worker_count(workers, executor, address)
    todo = matrix.units(pairs, episodes, seed, matrix.done_cells(run_dir.path), workers)
    bar = Progress("bench", sum(len(u.cells) for u in todo), unit="episode", enabled=show)
    try:
        matrix.run_units(todo, run_dir.path, run_dir.run_id, record, workers, bar, executor, policy_gpus)
    finally:
        bar.close()
    done = matrix.results(run_dir.path)
    run_dir.episodes = sum(len(v) for v in done.values())
    rows = []
    for sc, spec in pairs:
        name = matrix.cell_name(sc)  # (a .toml path given: its episodes are under the scenario's name)
        rows.append({"scenario": name, "policy": spec.label, **summarize(done.get((name, spec.label), []))})
    return rows


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("success_rate", "ci_low", "ci_high"):
        return f"{v:.0%}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| scenario | policy | episodes | success | 95% CI | SPL | mean steps | collisions/ep "
        "| interventions/ep | protective stop s/ep | SSM intrusions |"
    )
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ci = f"{_cell(r, 'ci_low')}-{_cell(r, 'ci_high')}"
        name = r["scenario"] + (f" (LIMITS PROFILE {r['limits_profile']})" if r.get("limits_profile") else "")
        lines.append(
            f"| {name} | {r['policy']} | {r['episodes']} | {_cell(r, 'success_rate')} "
            f"| {ci} | {_cell(r, 'spl')} | {_cell(r, 'mean_steps')} | {_cell(r, 'collisions')} "
            f"| {_cell(r, 'interventions')} | {_cell(r, 'protective_stop_time')} "
            f"| {_cell(r, 'intrusions')} |"
        )
    return "\n".join(lines)


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


def write(rows: list[dict[str, Any]], out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, cs = out_dir / "bench.md", out_dir / "bench.csv"
    md.write_text(to_markdown(rows) + "\n")
    cs.write_text(to_csv(rows))
    return md, cs
