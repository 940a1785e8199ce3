"""`qrobot bench`: scenarios x policies x episodes into a Markdown and CSV table."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from qrobot.record import RunDir
from qrobot.runner import run, summarize

COLUMNS = ["scenario", "policy", "episodes", "success_rate", "ci_low", "ci_high", "spl",
           "mean_steps", "collisions", "interventions", "protective_stop_time", "intrusions", "estops",
           "policy_errors", "limits_profile"]


def bench(scenarios: list[str], policies: list[str], episodes: int, seed: int = 0,
          progress: bool = True, run_dir: RunDir | None = None) -> list[dict[str, Any]]:
    rows = []
    for sc in scenarios:
        for pol in policies:
            sub = None if run_dir is None else RunDir(run_dir.path.parent, f"{run_dir.run_id}/{pol}")
            s = summarize(run(sc, pol, episodes, seed, progress=progress, run_dir=sub))
            rows.append({"scenario": sc, "policy": pol, **s})
    return rows


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None:
        return "-"
    if key in ("success_rate", "ci_low", "ci_high"):
        return f"{v:.0%}"
    return f"{v:.2f}" if isinstance(v, float) else str(v)


def to_markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| scenario | policy | episodes | success | 95% CI | SPL | mean steps | collisions/ep "
            "| interventions/ep | protective stop s/ep | SSM intrusions |")
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        ci = f"{_cell(r, 'ci_low')}-{_cell(r, 'ci_high')}"
        name = r["scenario"] + (f" (LIMITS PROFILE {r['limits_profile']})" if r.get("limits_profile") else "")
        lines.append(f"| {name} | {r['policy']} | {r['episodes']} | {_cell(r, 'success_rate')} "
                     f"| {ci} | {_cell(r, 'spl')} | {_cell(r, 'mean_steps')} | {_cell(r, 'collisions')} "
                     f"| {_cell(r, 'interventions')} | {_cell(r, 'protective_stop_time')} "
                     f"| {_cell(r, 'intrusions')} |")
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
