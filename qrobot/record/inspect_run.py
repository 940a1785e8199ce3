"""`qrobot inspect RUN_DIR`: a whole run at a glance, read from its files only.

The run's status and command (run.json), a success table per (scenario, policy) from
episodes.jsonl, with Wilson intervals, and the recordings to open. Numbers are rounded
for reading; the JSON files keep them whole.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError
from qrobot.record.rundir import EPISODES_FILE, RUN_FILE
from qrobot.runner import wilson_interval


def _number(v: Any, lo: float = 0.0, hi: float = 1e12) -> float | None:
    """A finite number in range, or None (bool is not a number here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if lo <= f <= hi else None


def _row(raw: Any) -> dict[str, Any] | None:
    """An episode line as inspect uses it, or None for one it cannot vouch for."""
    if not isinstance(raw, dict) or not isinstance(raw.get("scenario"), str):
        return None
    steps, seed = _number(raw.get("steps")), _number(raw.get("seed"), 0, 2**31 - 1)
    if steps is None or seed is None or not isinstance(raw.get("success"), bool):
        return None
    metrics: dict[str, Any] = raw["metrics"] if isinstance(raw.get("metrics"), dict) else {}
    safety: dict[str, Any] = raw["safety"] if isinstance(raw.get("safety"), dict) else {}
    return {
        "scenario": raw["scenario"],
        "policy": str(raw.get("policy", "?")),
        "seed": int(seed),
        "steps": steps,
        "success": raw["success"],
        "spl": _number(metrics.get("spl"), 0.0, 1.0),
        "interventions": _number(safety.get("interventions")) or 0.0,
        "estops": _number(safety.get("estops")) or 0.0,
    }


def _episodes(path: Path) -> tuple[list[dict[str, Any]], int]:
    rows, bad = [], 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            row = _row(json.loads(line))
        except (ValueError, RecursionError):  # a line cut short by a kill, or not JSON
            row = None
        if row is None:  # skipped, counted
            bad += 1
        else:
            rows.append(row)
    return rows, bad


def summarize_run(run_dir: Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    if not (run_dir / RUN_FILE).is_file() and not (run_dir / EPISODES_FILE).is_file():
        raise QrobotError(f"{run_dir}: not a run directory (no {RUN_FILE} or {EPISODES_FILE})")
    try:
        run = json.loads((run_dir / RUN_FILE).read_text()) if (run_dir / RUN_FILE).is_file() else {}
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8
        raise QrobotError(f"{run_dir / RUN_FILE}: not a readable run record ({str(exc)[:80]})") from None
    except OSError as exc:
        raise QrobotError(f"{run_dir / RUN_FILE}: cannot be read ({exc.strerror})") from None
    if not isinstance(run, dict):
        raise QrobotError(f"{run_dir / RUN_FILE}: not a run record (a JSON object is expected)")
    run = {k: v if isinstance(v, (str, int, float)) else str(v) for k, v in run.items() if isinstance(k, str)}
    rows, bad = _episodes(run_dir / EPISODES_FILE) if (run_dir / EPISODES_FILE).is_file() else ([], 0)
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["scenario"], r["policy"])].append(r)
    table = []
    for (scenario, policy), eps in sorted(groups.items()):
        k, n = sum(e["success"] for e in eps), len(eps)
        lo, hi = wilson_interval(k, n)
        spl = [e["spl"] for e in eps if e["spl"] is not None]
        table.append(
            {
                "scenario": scenario,
                "policy": policy,
                "episodes": n,
                "successes": k,
                "ci95": (lo, hi),
                "mean_steps": sum(e["steps"] for e in eps) / n,
                "spl": sum(spl) / len(spl) if spl else None,
                "interventions": sum(e["interventions"] for e in eps) / n,
                "estops": int(sum(e["estops"] for e in eps)),
                "seeds": (min(e["seed"] for e in eps), max(e["seed"] for e in eps)),
            }
        )
    recordings = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*.rrd"))
    return {"run_dir": str(run_dir), "run": run, "table": table, "recordings": recordings, "unreadable_lines": bad}


def format_run(s: dict[str, Any], links: int = 5) -> str:
    run = s["run"]
    lines = [
        f"{s['run_dir']}",
        f"  qrobot {run.get('command', '?')}, run {run.get('run_id', '?')}: {run.get('status', 'unknown status')}"
        + (f", {run['started']} to {run.get('ended', '…')}" if run.get("started") else ""),
    ]
    if s["table"]:
        lines += [
            "",
            "| scenario | policy | seeds | success | 95% CI | mean steps | SPL | interventions/ep | e-stops |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for t in s["table"]:
            lo, hi = t["ci95"]
            spl = "-" if t["spl"] is None else f"{t['spl']:.2f}"
            lines.append(
                f"| {t['scenario']} | {t['policy']} | {t['seeds'][0]}-{t['seeds'][1]} | "
                f"{t['successes']}/{t['episodes']} = {100 * t['successes'] / t['episodes']:.0f}% | "
                f"{100 * lo:.0f}%-{100 * hi:.0f}% | {t['mean_steps']:.1f} | {spl} | {t['interventions']:.1f} | {t['estops']} |"
            )
    else:
        lines.append("  no finished episodes yet")
    if s["unreadable_lines"]:
        lines.append(
            f"  {s['unreadable_lines']} unreadable line(s) in {EPISODES_FILE} skipped (cut short by a kill, or damaged)"
        )
    recs = s["recordings"]
    lines.append("")
    lines.append(f"  recordings: {len(recs)}" + (" (recording was off)" if not recs else ""))
    for r in recs[:links]:
        lines.append(f"    qrobot view {Path(s['run_dir']) / r}")
    if len(recs) > links:
        lines.append(f"    … and {len(recs) - links} more under {s['run_dir']}")
    return "\n".join(lines)
