"""Read a recording back through Rerun's own reader (`rerun.chunk.RrdReader`)."""

from __future__ import annotations

import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

from qrobot.errors import QrobotError

_RULE = re.compile(r"^\[([a-z_]+)\]")


def _chunks(path: Path) -> tuple[list[Any], Any, bool]:
    import rerun.chunk as rc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a killed writer leaves no footer: read it by scanning
        try:
            reader = rc.RrdReader(str(path))
            recordings = reader.recordings()
        except Exception as exc:  # not an .rrd, truncated header, ...
            raise QrobotError(f"{path}: not a readable Rerun recording ({exc})") from None
        if not recordings:
            raise QrobotError(f"{path}: holds no recording")
        try:
            return reader.store().stream().to_chunks(), recordings[0], True
        except RuntimeError:
            return reader.stream().to_chunks(), recordings[0], False


def _texts(batch: Any, column: str) -> list[str]:
    return [v[0] if isinstance(v, list) and v else str(v) for v in batch.column(column).to_pylist()]


def summarize_rrd(path: str | Path) -> dict[str, Any]:
    """Steps, entities, camera frames, safety events by rule and level, and the result."""
    path = Path(path)
    if not path.is_file():
        raise QrobotError(f"{path}: no such recording")
    chunks, entry, complete = _chunks(path)
    steps: set[int] = set()
    rows: Counter[str] = Counter()
    levels: Counter[str] = Counter()
    rules: Counter[str] = Counter()
    result = ""
    dropped = 0
    instruction = ""
    for chunk in chunks:
        entity = chunk.entity_path
        batch = chunk.to_record_batch()
        names = batch.schema.names
        rows[entity] += chunk.num_rows
        if "step" in names:
            steps.update(v for v in batch.column("step").to_pylist() if v is not None)
        if entity == "/supervisor/events" and "TextLog:text" in names:
            for text, level in zip(_texts(batch, "TextLog:text"), _texts(batch, "TextLog:level")):
                m = _RULE.match(text)
                if m:  # supervisor interventions carry their rule; start/end lines do not
                    rules[m.group(1)] += 1
                    levels[level] += 1
        if entity.startswith("/supervisor/clamps/") and "Scalars:scalars" in names:
            count = int(sum(v[0] for v in batch.column("Scalars:scalars").to_pylist() if v))
            rules[entity.removeprefix("/supervisor/clamps/")] += count  # routine clamps, logged as counts
            levels["INFO"] += count
        if entity == "/recording/dropped_frames" and "Scalars:scalars" in names:
            dropped += int(sum(v[0] for v in batch.column("Scalars:scalars").to_pylist() if v))
        if entity == "/result" and "TextDocument:text" in names:
            result = _texts(batch, "TextDocument:text")[-1]
        if entity == "/task/instruction" and "TextDocument:text" in names:
            instruction = _texts(batch, "TextDocument:text")[-1]
    cameras = {e.removeprefix("/cameras/"): n for e, n in rows.items() if e.startswith("/cameras/")}
    return {
        "path": str(path),
        "application_id": entry.application_id,
        "recording_id": entry.recording_id,
        "complete": complete,
        "steps": max(steps) if steps else 0,  # control steps, as the result counts them (frame 0: the reset)
        "dropped_frames": dropped,
        "entities": sorted(e for e in rows if not e.startswith("/__")),
        "cameras": cameras,
        "rows": {e: n for e, n in rows.items() if not e.startswith("/__")},
        "events": sum(rules.values()),
        "events_by_rule": dict(rules),
        "events_by_level": dict(levels),
        "instruction": instruction,
        "result": result,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"{s['path']}",
        f"  application {s['application_id']}  recording {s['recording_id']}",
        f"  complete file: {'yes' if s['complete'] else 'no (writer stopped early; read by scanning)'}",
        f"  steps: {s['steps']}",
        f"  instruction: {s['instruction']}",
        "  cameras: "
        + (", ".join(f"{k} ({v} frames)" for k, v in sorted(s["cameras"].items())) or "none")
        + (f"; {s['dropped_frames']} frames dropped by the writer" if s.get("dropped_frames") else ""),
        f"  safety events: {s['events']}"
        + ("  " + ", ".join(f"{k}={v}" for k, v in sorted(s["events_by_rule"].items())) if s["events"] else ""),
        "  by level: " + (", ".join(f"{k}={v}" for k, v in sorted(s["events_by_level"].items())) or "-"),
        f"  entities: {len(s['entities'])}",
    ]
    if s["result"]:
        parts = [ln.removeprefix("- ").replace("*", "").strip() for ln in s["result"].splitlines()]
        lines.append("  result: " + "; ".join(p for p in parts if p))
    return "\n".join(lines)
