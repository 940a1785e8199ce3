"""`qrobot bench`: scenarios x policies x episodes into a Markdown and CSV table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from qrobot.progress import Progress
from qrobot.record import RunDir
from qrobot.runner import prepare, run_episodes, summarize

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


def plan(scenarios: dict[str, Any], policies: list[str]) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """(pairs to run, (scenario, policy, reason) pairs skipped because the policy cannot drive it)."""
    from qrobot.policies import unfit_reason

    pairs, skipped = [], []
    for name, sc in scenarios.items():
        for pol in policies:
            why = unfit_reason(pol, sc)
            (skipped.append((name, pol, why)) if why else pairs.append((name, pol)))
    return pairs, skipped


def bench(
    pairs: list[tuple[str, str]],
    episodes: int,
    seed: int = 0,
    run_dir: RunDir | None = None,
    record: bool = False,
    show: bool = True,
) -> list[dict[str, Any]]:
    """Each (scenario, policy) pair for `episodes` seeds; every episode's result is appended to
    the run directory's episodes.jsonl as it ends, recordings go to <policy>/<scenario>/."""
    rows = []
    for sc, pol in pairs:
        session = prepare(sc, pol, record=record, seed=seed, preflight=False)
        bar = Progress(f"{sc}/{pol}", episodes, enabled=show)
        try:
            results = run_episodes(session, episodes, seed, run_dir, record, progress=bar, policy_dir=pol)
        finally:
            bar.close()
            session.close()
        rows.append({"scenario": sc, "policy": pol, **summarize(results)})
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
