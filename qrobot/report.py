"""`qrobot report RUN_DIR`: a run as a static HTML page with PNG plots (qrobot.compare
puts two runs side by side).

A report reads episodes.jsonl (every finished episode, a killed run's too; a last line a
kill cut short is skipped and counted) and, for a run directory that has none, results.parquet.
The page and the plots depend only on the episodes and run.json: rows are sorted, nothing
carries the time it was made.
"""

from __future__ import annotations

import json
import math
import os
import shlex
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from qrobot.checks import make_out_dir
from qrobot.errors import QrobotError
from qrobot.record.rundir import EPISODES_FILE, RUN_FILE

PARQUET = "results.parquet"
PLOTS = ("success.png", "efficiency.png", "safety.png")
NO_WALL_TIME = "Per-episode wall time is not recorded in the run's episodes (the run's start and end are, above)."


@dataclass
class Episode:
    scenario: str
    policy: str
    episode: int
    seed: int
    success: bool
    steps: int
    end_reason: str
    metrics: dict[str, float]
    safety: dict[str, float]
    error: str = ""
    recording: Path | None = None  # the .rrd, when it exists
    wall_time: float | None = None  # seconds, when the run recorded it

    @property
    def estop(self) -> bool:
        return self.safety.get("estops", 0) > 0 or self.end_reason == "estop"

    @property
    def intrusions(self) -> float | None:
        """SSM intrusions (control steps driving toward a person inside Sp); None: not
        measured (the scenario has no people)."""
        return self.metrics.get("intrusions")

    @property
    def safe_success(self) -> bool:
        """A success with no e-stop, no SSM intrusion and no collision (a protective stop is
        correct behaviour near people: it does not count against it)."""
        return self.success and not self.estop and not self.metrics.get("collisions", 0) and not self.intrusions


@dataclass
class Cell:
    scenario: str
    policy: str
    episodes: list[Episode]
    planned: int | None = None

    def _mean(self, values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    def stats(self) -> dict[str, Any]:
        from qrobot.runner import wilson_interval

        eps, n = self.episodes, len(self.episodes)
        k, safe = sum(e.success for e in eps), sum(e.safe_success for e in eps)
        intrusions = [e.intrusions for e in eps if e.intrusions is not None]
        walls = [e.wall_time for e in eps if e.wall_time is not None]
        return {
            "n": n,
            "planned": self.planned,
            "k": k,
            "rate": k / n,
            "ci": wilson_interval(k, n),
            "safe_k": safe,
            "safe_rate": safe / n,
            "safe_ci": wilson_interval(safe, n),
            "spl": self._mean([e.metrics["spl"] for e in eps]) if all("spl" in e.metrics for e in eps) else None,
            "estops": sum(e.estop for e in eps),
            "collisions": self._mean([e.metrics.get("collisions", 0.0) for e in eps]),
            "collided": sum(e.metrics.get("collisions", 0) > 0 for e in eps),
            "intrusions": sum(intrusions) if intrusions else None,
            "intruded": sum(i > 0 for i in intrusions),
            "protective_stops": self._mean([e.safety.get("protective_stop", 0.0) for e in eps]),
            "protective_time": self._mean([e.safety.get("protective_stop_time", 0.0) for e in eps]),
            "interventions": self._mean([e.safety.get("interventions", 0.0) for e in eps]),
            "steps": self._mean([float(e.steps) for e in eps]),
            "wall": self._mean(walls) if len(walls) == n else None,
            "reasons": ", ".join(f"{r} {c}" for r, c in sorted(Counter(e.end_reason for e in eps).items())),
        }


@dataclass
class Run:
    path: Path
    info: dict[str, Any]
    episodes: list[Episode]
    source: str
    cut_lines: int = 0
    cells: list[Cell] = field(default_factory=list)

    def __post_init__(self) -> None:
        groups: dict[tuple[str, str], list[Episode]] = defaultdict(list)
        for e in self.episodes:
            groups[(e.scenario, e.policy)].append(e)
        planned = self.info.get("episodes") if isinstance(self.info.get("episodes"), int) else None
        self.cells = [Cell(sc, pol, groups[(sc, pol)], planned) for sc, pol in sorted(groups)]


def _episode(row: Any, run: Path, where: str) -> Episode:
    """One episodes.jsonl object (or results.parquet row, metrics and safety flattened)."""
    if not isinstance(row, dict) or not all(k in row for k in ("scenario", "policy", "seed", "success")):
        raise QrobotError(f"{where}: not an episode record (an object with scenario, policy, seed and success)")

    def numbers(d: Any, prefix: str = "") -> dict[str, float]:
        items = d.items() if isinstance(d, dict) else ()
        return {
            k[len(prefix) :]: float(v)
            for k, v in items
            if k.startswith(prefix) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }

    try:
        rec = _recording(run, str(row.get("recording") or ""))
        wall = row.get("wall_time")
        return Episode(
            str(row["scenario"]),
            str(row["policy"]),
            int(row.get("episode") or 0),
            int(row["seed"]),
            bool(row["success"]),
            int(row.get("steps") or 0),
            str(row.get("end_reason") or ""),
            numbers(row.get("metrics")) or numbers(row, "metric."),
            numbers(row.get("safety")) or numbers(row, "safety."),
            str(row.get("error") or ""),
            rec,
            float(wall) if isinstance(wall, (int, float)) else None,
        )
    except (TypeError, ValueError) as exc:
        raise QrobotError(f"{where}: not an episode record ({exc})") from None


def _recording(run: Path, text: str) -> Path | None:
    """The .rrd a row names, wherever the run directory is now (the row holds the path as the
    run wrote it, relative to the directory it ran in)."""
    if not text:
        return None
    p, name = Path(text), run.resolve().name
    found = [run.joinpath(*p.parts[i + 1 :]) for i in range(len(p.parts) - 1, -1, -1) if p.parts[i] == name]
    return next((c for c in [*found, p, run / p] if c.is_file()), None)


def load_run(path: Path, flag: str) -> Run:
    """The run directory's episodes (first of each (scenario, policy, seed)) and run.json.
    Not a run directory, no episode, or a line that is no episode record: one QrobotError."""
    path = Path(path)
    jsonl, parquet, info_file = path / EPISODES_FILE, path / PARQUET, path / RUN_FILE
    if not path.is_dir():
        raise QrobotError(f"{flag} {path}: not a directory")
    if not (info_file.is_file() or jsonl.is_file() or parquet.is_file()):
        raise QrobotError(f"{flag} {path}: not a run directory (no {RUN_FILE}, {EPISODES_FILE} or {PARQUET})")
    info: dict[str, Any] = {}
    if info_file.is_file():
        try:
            info = json.loads(info_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QrobotError(f"{flag} {path}: {RUN_FILE} cannot be read ({exc})") from None
        if not isinstance(info, dict):
            raise QrobotError(f"{flag} {path}: {RUN_FILE} is not a qrobot run record")
    rows, cut = [], 0
    if jsonl.is_file():
        source = EPISODES_FILE
        for n, line in enumerate(jsonl.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if line.lstrip().startswith("{") and not line.rstrip().endswith("}"):
                    cut += 1  # the line a kill cut short
                    continue
                raise QrobotError(f"{flag} {path}: {EPISODES_FILE} line {n}: not JSON ({exc.msg})") from None
            rows.append(_episode(row, path, f"{flag} {path}: {EPISODES_FILE} line {n}"))
    elif parquet.is_file():
        import pyarrow.parquet as pq

        source = PARQUET
        try:
            table = pq.read_table(parquet).to_pylist()
        except Exception as exc:  # pyarrow's errors have no common base worth naming
            raise QrobotError(f"{flag} {path}: {PARQUET} cannot be read ({str(exc)[:160]})") from None
        rows = [_episode(r, path, f"{flag} {path}: {PARQUET} row {i}") for i, r in enumerate(table, 1)]
    else:
        source = EPISODES_FILE
    seen: dict[tuple[str, str, int], Episode] = {}
    for e in rows:
        seen.setdefault((e.scenario, e.policy, e.seed), e)  # an episode re-run after a kill counts once
    if not seen:
        raise QrobotError(f"{flag} {path}: no finished episode yet ({source} holds none)")
    episodes = [seen[k] for k in sorted(seen)]
    return Run(path, info, episodes, source, cut)


def command_line(info: dict[str, Any]) -> str:
    """The command that made the run, from run.json (as typed when it kept `argv`)."""
    if isinstance(info.get("argv"), list):
        return shlex.join(["qrobot", *map(str, info["argv"])])
    if not info.get("command"):
        return "(not recorded)"
    words = ["qrobot", str(info["command"])]
    if info.get("scenario") and info["command"] != "bench":
        words.append(str(info["scenario"]))
    for key in ("scenarios", "policies", "policy", "checkpoint", "episodes", "seed", "split", "phrasing"):
        value = info.get(key)
        if value not in (None, ""):
            words += [f"--{key}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    if info.get("record") is False and info["command"] in ("run", "bench"):
        words.append("--no-record")
    return shlex.join(words)


def versions(info: dict[str, Any]) -> dict[str, str]:
    """run.json's versions (qrobot, Python, torch, ..., the git commit) as text."""
    held = info.get("versions")
    return {str(k): str(v) for k, v in held.items()} if isinstance(held, dict) else {}


def _duration(info: dict[str, Any]) -> str:
    try:
        start, end = (datetime.strptime(info[k], "%Y-%m-%dT%H:%M:%S%z") for k in ("started", "ended"))
    except (KeyError, TypeError, ValueError):
        return "-"
    return f"{(end - start).total_seconds():.0f} s" + (" (resumed: includes the pause)" if info.get("resumed") else "")


# ---------------------------------------------------------------------------- plots
def _bars(ax: Any, cells: list[Cell], stats: list[dict[str, Any]], key: str, title: str, ci: str = "") -> None:
    """Grouped bars: scenarios along x, one colour per policy, each bar labelled with its
    value; `ci` the key of (low, high) (error bars, shares as percentages); "n/a" where
    a cell has no such value."""
    scenarios = sorted({c.scenario for c in cells})
    policies = sorted({c.policy for c in cells})
    width = 0.8 / len(policies)
    top = max([s[ci][1] if ci else s[key] for s in stats if s[key] is not None] + [0.0])
    for j, pol in enumerate(policies):
        xs, ys, lo, hi = [], [], [], []
        for c, s in zip(cells, stats):
            if c.policy != pol:
                continue
            x = scenarios.index(c.scenario) - 0.4 + width * (j + 0.5)
            if s[key] is None:
                ax.text(x, 0, "n/a", ha="center", va="bottom", fontsize=8, color="0.4")
                continue
            xs.append(x)
            ys.append(s[key])
            lo.append(s[key] - s[ci][0] if ci else 0.0)
            hi.append(s[ci][1] - s[key] if ci else 0.0)
        label = pol if len(pol) <= 40 else pol[:37] + "..."
        bars = ax.bar(xs, ys, width, label=label, color=f"C{j % 10}", yerr=[lo, hi] if ci else None, capsize=3)
        if ci or top > 0:
            ax.bar_label(bars, labels=[f"{y:.0%}" if ci else f"{y:.3g}" for y in ys], fontsize=8, padding=2)
    ax.set_xticks(range(len(scenarios)), scenarios, rotation=20 if len(scenarios) > 3 else 0)
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_xlim(-0.5, len(scenarios) - 0.5)
    ax.set_ylim(0, 1.1 if ci else max(top * 1.15, 1.0))
    if not ci and top == 0:
        ax.text(0.5, 0.6, "none in this run", transform=ax.transAxes, ha="center", color="0.4")


def _plots(run: Run, stats: list[dict[str, Any]], out: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global state, the Agg canvas

    width = max(7.0, 1.6 * len({c.scenario for c in run.cells}) + 3)
    panels = {
        "success.png": [
            ("rate", "success rate (95 % Wilson CI)", "ci"),
            ("safe_rate", "safety-weighted success (95 % Wilson CI)", "safe_ci"),
        ],
        "efficiency.png": [("spl", "SPL (navigation)", ""), ("steps", "mean steps / episode", "")],
        "safety.png": [
            ("interventions", "supervisor interventions / episode", ""),
            ("collisions", "collisions / episode", ""),
            ("protective_time", "protective stop s / episode", ""),
            ("estops", "episodes with an e-stop", ""),
        ],
    }
    for name, specs in panels.items():
        rows = (len(specs) + 1) // 2
        fig = Figure(figsize=(width, 3.2 * rows), layout="constrained")
        axes = fig.subplots(rows, 2, squeeze=False).ravel()
        for ax, (key, title, ci) in zip(axes, specs):
            _bars(ax, run.cells, stats, key, title, ci)
        axes[0].legend(fontsize=8, loc="best")
        fig.savefig(out / name, dpi=100, metadata={"Software": None})


# ---------------------------------------------------------------------------- pages
_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222}h1{font-size:21px;margin:0 0 8px}
h2{font-size:16px;margin:22px 0 4px}table{border-collapse:collapse;margin:6px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap}th{background:#f3f3f3;white-space:normal}
td.l,th.l{text-align:left}td.w{white-space:normal}.note{color:#555;font-size:13px;margin:4px 0}
.partial{background:#fff3cd;padding:6px 8px;border:1px solid #e0c36c}.yes{color:#1a7f37;font-weight:600}
.no{color:#b42318}.plots{display:flex;flex-wrap:wrap;gap:8px;align-items:flex-start}.plots img{max-width:100%;border:1px solid #ddd}"""

_REPORT = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>qrobot report {{ run_id }}</title>
<style>{{ css }}</style></head><body>
<h1>Run {{ run_id }}</h1>
{% if partial %}<p class="partial" id="partial">{{ partial }}</p>{% endif %}
<table id="run"><tr><th class="l">command</th><td class="l"><code>{{ command }}</code></td></tr>
<tr><th class="l">status</th><td class="l">{{ status }}: {{ episodes|length }} episodes (from {{ source }}),
started {{ started }}, ended {{ ended }} ({{ duration }})</td></tr>
<tr><th class="l">versions</th><td class="l w">{% for k, v in versions %}{{ k }} <code>{{ v }}</code>{{ ", " if not loop.last }}{% endfor %}</td></tr>
</table>
<h2>Per scenario and policy</h2>
<table id="cells"><tr><th class="l">scenario</th><th class="l">policy</th><th>episodes</th><th>success</th><th>rate</th>
<th>95 % CI</th><th>safety-weighted success</th><th>rate</th><th>95 % CI</th><th>SPL</th><th>e-stops</th>
<th>collisions / ep</th><th>SSM intrusions</th><th>protective stops / ep (s / ep)</th>
<th>interventions / ep</th><th>steps / ep</th>{% if wall %}<th>wall s / ep</th>{% endif %}<th class="l">end reasons</th></tr>
{% for c, s in cells %}<tr class="cell" data-scenario="{{ c.scenario }}" data-policy="{{ c.policy }}">
<td class="l">{{ c.scenario }}</td><td class="l">{{ c.policy }}</td>
<td class="n">{{ s.n }}{% if s.planned and s.planned != s.n %} of {{ s.planned }}{% endif %}</td>
<td class="success">{{ s.k }}/{{ s.n }}</td><td class="rate">{{ pct(s.rate) }}</td>
<td class="ci">{{ pct(s.ci[0]) }}–{{ pct(s.ci[1]) }}</td>
<td class="safe">{{ s.safe_k }}/{{ s.n }}</td><td class="safe-rate">{{ pct(s.safe_rate) }}</td>
<td class="safe-ci">{{ pct(s.safe_ci[0]) }}–{{ pct(s.safe_ci[1]) }}</td>
<td class="spl">{{ num(s.spl, 3) }}</td><td class="estops">{{ s.estops }}</td><td>{{ num(s.collisions) }}</td>
<td>{% if s.intrusions is none %}not measured{% else %}{{ num(s.intrusions, 0) }} ({{ s.intruded }} ep){% endif %}</td>
<td>{{ num(s.protective_stops) }} ({{ num(s.protective_time, 1) }} s)</td><td class="interventions">{{ num(s.interventions) }}</td>
<td class="steps">{{ num(s.steps, 1) }}</td>{% if wall %}<td class="wall">{{ num(s.wall) }}</td>{% endif %}<td class="l w">{{ s.reasons }}</td></tr>
{% endfor %}</table>
{% for n in notes %}<p class="note">{{ n }}</p>{% endfor %}
<div class="plots">{% for p, alt in plots %}<img src="{{ p }}" alt="{{ alt }}">{% endfor %}</div>
<h2>Episodes</h2>
<table id="episodes"><tr><th class="l">scenario</th><th class="l">policy</th><th>episode</th><th>seed</th>
<th>success</th><th>safe</th><th class="l">end reason</th><th>steps</th><th>SPL</th><th>collisions</th>
<th>e-stop</th><th>SSM intrusions</th><th>protective stop s</th><th>interventions</th><th class="l">recording</th></tr>
{% for e, href in rows %}<tr class="episode"><td class="l">{{ e.scenario }}</td><td class="l">{{ e.policy }}</td>
<td>{{ e.episode }}</td><td>{{ e.seed }}</td><td class="{{ 'yes' if e.success else 'no' }}">{{ 'yes' if e.success else 'no' }}</td>
<td>{{ 'yes' if e.safe_success else 'no' }}</td><td class="l" title="{{ e.error }}">{{ e.end_reason }}</td><td>{{ e.steps }}</td>
<td>{{ num(e.metrics.get('spl'), 3) }}</td><td>{{ num(e.metrics.get('collisions'), 0) }}</td><td>{{ 'yes' if e.estop else '' }}</td>
<td>{{ num(e.intrusions, 0) }}</td><td>{{ num(e.safety.get('protective_stop_time'), 2) }}</td>
<td>{{ num(e.safety.get('interventions'), 0) }}</td>
<td class="l">{% if href %}<a class="rrd" href="{{ href }}">{{ href.rsplit('/', 1)[-1] }}</a>{% endif %}</td></tr>
{% endfor %}</table></body></html>
"""


def _num(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _pct(v: float) -> str:
    return f"{v:.1%}"


def render(template: str, **values: Any) -> str:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(template).render(css=_CSS, num=_num, pct=_pct, **values)


def write_report(run_dir: Path, out: Path | None = None, flag: str = "report") -> Path:
    """RUN_DIR/report/index.html (or OUT/index.html) with its plots; returns the page's path."""
    run = load_run(run_dir, flag)
    out = Path(out) if out is not None else run.path / "report"
    make_out_dir(f"{flag} --out", out)
    stats = [c.stats() for c in run.cells]
    _plots(run, stats, out)
    info, status = run.info, str(run.info.get("status") or "unknown")
    partial = ""
    if status != "finished" or run.cut_lines:
        partial = f"Run status: {status}. The report covers the {len(run.episodes)} episodes finished so far."
        if run.cut_lines:
            partial += f" {run.cut_lines} line(s) a kill cut short are left out."
    notes = [
        "Safety-weighted success: a success with no e-stop, no SSM intrusion and no collision. Protective "
        "stops are correct behaviour near people: they are reported on their own and do not count against it.",
    ]
    unmeasured = sorted({c.scenario for c, s in zip(run.cells, stats) if s["intrusions"] is None})
    if unmeasured:
        notes.append(
            f"SSM intrusions are not measured in {', '.join(unmeasured)}: no people in the scenario, no intrusion."
        )
    if any(s["wall"] is None for s in stats):
        notes.append(NO_WALL_TIME)
    rows = []
    for e in run.episodes:
        href = quote(Path(os.path.relpath(e.recording, out)).as_posix()) if e.recording else ""
        rows.append((e, href))
    html = render(
        _REPORT,
        run_id=str(info.get("run_id") or run.path.name),
        partial=partial,
        command=command_line(info),
        status=status,
        started=info.get("started") or "-",
        ended=info.get("ended") or "-",
        duration=_duration(info),
        source=run.source,
        episodes=run.episodes,
        versions=sorted(versions(info).items()),
        cells=list(zip(run.cells, stats)),
        wall=any(s["wall"] is not None for s in stats),
        notes=notes,
        plots=[(p, p.removesuffix(".png") + " per scenario and policy") for p in PLOTS],
        rows=rows,
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    return page


def report_after_bench(run_dir: Path) -> None:
    """The end of `qrobot bench`, Ctrl-C and crash included: RUN_DIR/report/, or one line
    saying why not. Never raises (the bench's own outcome is what the user must see)."""
    import logging

    log = logging.getLogger("qrobot")
    try:
        log.info("report: %s", write_report(run_dir, flag="bench report"))
    except QrobotError as exc:
        log.info("no report: %s", exc)
    except Exception as exc:  # a plot or a page that fails costs the report, not the run
        log.warning("no report: %s: %s", type(exc).__name__, exc)


def report_cmd(run_dir: Path, out: Path | None) -> int:
    print(write_report(run_dir, out))
    return 0
