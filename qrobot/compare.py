"""`qrobot compare RUN_A RUN_B`: the success of each (scenario, policy) cell two runs share,
A against B, with Fisher's exact test per cell and Holm's correction across the cells."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qrobot.checks import make_out_dir
from qrobot.errors import QrobotError
from qrobot.report import Cell, Run, command_line, load_run, render, versions


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given: the i-th smallest p times
    (m - i + 1), made monotone, at most 1. Reject where the adjusted value <= alpha."""
    m = len(pvalues)
    out = [0.0] * m
    running = 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda j: pvalues[j])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


@dataclass
class Comparison:
    a: Run
    b: Run
    alpha: float
    rows: list[dict[str, Any]]
    only_a: list[str]
    only_b: list[str]


def compare(
    run_a: Path, run_b: Path, alpha: float = 0.05, policy_a: str | None = None, policy_b: str | None = None
) -> Comparison:
    """Success of each (scenario, policy) cell both runs have, A against B (with policy_a
    and policy_b: that policy of A against that of B, scenario by scenario)."""
    from scipy.stats import fisher_exact  # type: ignore[import-untyped]

    from qrobot.runner import wilson_interval

    if (policy_a is None) != (policy_b is None):
        raise QrobotError("compare: give both --policy-a and --policy-b, or neither")
    a, b = load_run(run_a, "compare"), load_run(run_b, "compare")

    def keyed(run: Run, policy: str | None, flag: str) -> dict[str, Cell]:
        if policy is None:
            return {f"{c.scenario} / {c.policy}": c for c in run.cells}
        cells = {f"{c.scenario} / {policy_a} vs {policy_b}": c for c in run.cells if c.policy == policy}
        if not cells:
            have = ", ".join(sorted({c.policy for c in run.cells}))
            raise QrobotError(f"compare {flag} {policy}: no episode of it in {run.path} (its policies: {have})")
        return cells

    ca, cb = keyed(a, policy_a, "--policy-a"), keyed(b, policy_b, "--policy-b")
    common = sorted(set(ca) & set(cb))
    if not common:
        raise QrobotError(
            f"compare: {run_a} and {run_b} share no (scenario, policy) cell; "
            "compare two policies with --policy-a NAME --policy-b NAME"
        )
    rows: list[dict[str, Any]] = []
    for key in common:
        (ka, na), (kb, nb) = ((sum(e.success for e in c.episodes), len(c.episodes)) for c in (ca[key], cb[key]))
        p = float(fisher_exact([[ka, na - ka], [kb, nb - kb]], alternative="two-sided").pvalue)
        rows.append(
            {"cell": key, "ka": ka, "na": na, "kb": kb, "nb": nb, "p": p}
            | {"ci_a": wilson_interval(ka, na), "ci_b": wilson_interval(kb, nb), "diff": kb / nb - ka / na}
        )
    for row, adjusted in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"], row["significant"] = adjusted, adjusted <= alpha
    return Comparison(a, b, alpha, rows, sorted(set(ca) - set(cb)), sorted(set(cb) - set(ca)))


def format_comparison(c: Comparison) -> str:
    head = ("cell", "A", "B", "p", "p (Holm)", f"significant (alpha {c.alpha:g})")
    table = [head] + [
        (r["cell"], f"{r['ka']}/{r['na']}", f"{r['kb']}/{r['nb']}", f"{r['p']:.4g}", f"{r['p_holm']:.4g}")
        + ("yes" if r["significant"] else "no",)
        for r in c.rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    lines = [f"A: {c.a.path}", f"B: {c.b.path}"]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in table]
    lines += [f"only in A: {k}" for k in c.only_a] + [f"only in B: {k}" for k in c.only_b]
    return "\n".join(lines)


_COMPARE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>qrobot compare</title>
<style>{{ css }}</style></head><body><h1>{{ a_id }} vs {{ b_id }}</h1>
<p>Success per cell, A against B: Fisher's exact test (two-sided) per cell, Holm-corrected across the
{{ rows|length }} cells; significant where the corrected p &le; {{ alpha }}.</p>
<table id="compare"><tr><th class="l">cell</th><th>A</th><th>A 95 % CI</th><th>B</th><th>B 95 % CI</th>
<th>B − A</th><th>p</th><th>p (Holm)</th><th>significant</th></tr>
{% for r in rows %}<tr class="cell"><td class="l">{{ r.cell }}</td><td>{{ r.ka }}/{{ r.na }}</td>
<td>{{ pct(r.ci_a[0]) }}–{{ pct(r.ci_a[1]) }}</td><td>{{ r.kb }}/{{ r.nb }}</td>
<td>{{ pct(r.ci_b[0]) }}–{{ pct(r.ci_b[1]) }}</td><td>{{ '%+.1f'|format(100 * r.diff) }} pp</td>
<td>{{ '%.4g'|format(r.p) }}</td><td>{{ '%.4g'|format(r.p_holm) }}</td>
<td class="{{ 'yes' if r.significant else 'no' }}">{{ 'yes' if r.significant else 'no' }}</td></tr>{% endfor %}</table>
{% for k in only_a %}<p class="note">only in A: {{ k }}</p>{% endfor %}{% for k in only_b %}<p class="note">only in B: {{ k }}</p>{% endfor %}
<h2>Runs</h2><table id="runs"><tr><th class="l"></th><th class="l">A</th><th class="l">B</th></tr>
{% for k, va, vb in info %}<tr><th class="l">{{ k }}</th><td class="l w">{{ va }}</td>
<td class="l w{{ ' no' if va != vb else '' }}">{{ vb }}</td></tr>{% endfor %}</table></body></html>
"""


def compare_cmd(
    run_a: Path, run_b: Path, alpha: float, out: Path | None, policy_a: str | None, policy_b: str | None
) -> int:
    c = compare(run_a, run_b, alpha, policy_a, policy_b)
    a, b = c.a.path.resolve(), c.b.path.resolve()
    out = Path(out) if out is not None else b.parent / f"compare-{a.name}-vs-{b.name}"
    make_out_dir("compare --out", out)

    def facts(run: Run) -> dict[str, str]:
        return {
            "path": str(run.path),
            "command": command_line(run.info),
            "status": str(run.info.get("status") or "unknown"),
        } | dict(sorted(versions(run.info).items()))

    fa, fb = facts(c.a), facts(c.b)
    info = [(k, fa.get(k, "-"), fb.get(k, "-")) for k in dict.fromkeys([*fa, *fb])]
    html = render(
        _COMPARE,
        a_id=c.a.path.name,
        b_id=c.b.path.name,
        alpha=f"{c.alpha:g}",
        rows=c.rows,
        only_a=c.only_a,
        only_b=c.only_b,
        info=info,
    )
    page = out / "index.html"
    page.write_text(html, encoding="utf-8")
    print(format_comparison(c))
    print(f"wrote {page}")
    return 0
