"""`qrobot report` and `qrobot compare` on real bench runs: the page opened in a real headless
Chromium (Debian's `chromium`, driven by Playwright with `executable_path`; no browser
download) shows the numbers results.parquet holds, its plots and its recordings' links;
the comparison finds the difference between the expert and a random policy, and none
between two runs of the same cells."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pyarrow.parquet as pq
import pytest

from qrobot.cli import main
from qrobot.compare import holm
from qrobot.report import load_run
from qrobot.runner import wilson_interval

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"  # (make test installs it when missing: no skip)
ARGV = ["bench", "--scenarios", "pointnav,reach", "--policies", "expert,random", "--episodes", "5", "--seed", "3"]
ARGV += ["--workers", "1", "-q"]


def _bench(runs: Path, *extra: str) -> Path:
    before = set(runs.iterdir()) if runs.exists() else set()
    assert main([*ARGV, *extra, "--runs-dir", str(runs)]) == 0
    (new,) = set(runs.iterdir()) - before
    return new


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same 20 cells twice: recorded (one .rrd per episode), and not."""
    root = tmp_path_factory.mktemp("runs")
    return _bench(root), _bench(root, "--no-record")


def _expected(run: Path) -> dict[tuple[str, str], dict[str, str]]:
    """What the page must show per cell, from results.parquet."""
    cells: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in pq.read_table(run / "results.parquet").to_pylist():
        cells.setdefault((row["scenario"], row["policy"]), []).append(row)
    out = {}
    for key, rows in cells.items():
        n, k = len(rows), sum(r["success"] for r in rows)
        safe = sum(
            r["success"]
            and not r.get("safety.estops")
            and r["end_reason"] != "estop"
            and not r.get("metric.collisions")
            and not r.get("metric.intrusions")
            for r in rows
        )
        lo, hi = wilson_interval(k, n)
        slo, shi = wilson_interval(safe, n)
        spl = [r.get("metric.spl") for r in rows]
        out[key] = {
            "success": f"{k}/{n}",
            "rate": f"{k / n:.1%}",
            "ci": f"{lo:.1%}–{hi:.1%}",
            "safe": f"{safe}/{n}",
            "safe-ci": f"{slo:.1%}–{shi:.1%}",
            "spl": "-" if None in spl else f"{sum(spl) / n:.3f}",
            "steps": f"{sum(r['steps'] for r in rows) / n:.1f}",
            "interventions": f"{sum(r.get('safety.interventions') or 0 for r in rows) / n:.2f}",
            "wall": f"{sum(r['wall_time'] for r in rows) / n:.2f}",  # every episode's own time
        }
    return out


def test_the_page_shows_the_runs_numbers_plots_and_recordings_in_chromium(runs: tuple[Path, Path]) -> None:
    from playwright.sync_api import sync_playwright

    run = runs[0]
    assert (run / "report" / "index.html").is_file()  # bench wrote it at its end
    assert main(["report", str(run), "-q"]) == 0
    page_path = run / "report" / "index.html"
    expected = _expected(run)
    assert len(expected) == 4
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1500, "height": 1000}).new_page()
        page.goto(page_path.resolve().as_uri())
        page.wait_for_load_state("load")
        rows = page.locator("#cells tr.cell")
        assert rows.count() == len(expected)
        for i in range(rows.count()):
            row = rows.nth(i)
            key = (row.get_attribute("data-scenario"), row.get_attribute("data-policy"))
            shown = {name: row.locator(f"td.{name}").inner_text().strip() for name in expected[key]}
            assert shown == expected[key], key
        images = page.eval_on_selector_all("img", "els => els.map(e => [e.complete, e.naturalWidth, e.naturalHeight])")
        assert len(images) == 3 and all(done and w > 100 and h > 100 for done, w, h in images), images
        hrefs = page.eval_on_selector_all("a.rrd", "els => els.map(e => e.getAttribute('href'))")
        assert len(hrefs) == page.locator("#episodes tr.episode").count() == 20
        assert all((page_path.parent / unquote(h)).resolve().is_file() and h.endswith(".rrd") for h in hrefs)
        assert "qrobot bench --scenarios pointnav,reach" in page.locator("#run").inner_text()
        shot = Path(os.environ.get("QROBOT_DOCS_IMAGES", run / "report")) / "report.png"  # (docs/images/report.png)
        page.screenshot(path=str(shot))
        browser.close()
    from PIL import Image

    with Image.open(shot) as im:
        colours = im.convert("RGB").getcolors(maxcolors=1 << 20)
    assert shot.stat().st_size > 20_000 and colours is not None and len(colours) > 50  # a page, not a blank


def test_the_report_is_deterministic_and_a_killed_run_still_reports(runs: tuple[Path, Path], tmp_path: Path) -> None:
    run = runs[1]
    assert main(["report", str(run), "--out", str(tmp_path / "a"), "-q"]) == 0
    assert main(["report", str(run), "--out", str(tmp_path / "b"), "-q"]) == 0
    for name in ("index.html", "success.png", "safety.png", "efficiency.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    # a run killed mid-way: 7 episodes, the last line cut short, run.json still says running
    killed = tmp_path / "killed"
    killed.mkdir()
    info = json.loads((run / "run.json").read_text()) | {"status": "running", "ended": None}
    (killed / "run.json").write_text(json.dumps(info))
    lines = (run / "episodes.jsonl").read_text().splitlines()
    (killed / "episodes.jsonl").write_text("\n".join(lines[:7]) + "\n" + lines[7][:40])
    assert main(["report", str(killed), "-q"]) == 0
    html = (killed / "report" / "index.html").read_text()
    assert "Run status: running" in html and "7 episodes" in html and "1 line(s) a kill cut short" in html
    assert sum(len(c.episodes) for c in load_run(killed, "report").cells) == 7
    assert "no-record" in html and "SSM intrusions are not measured" in html


def test_bad_run_directories_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    started = tmp_path / "started"
    started.mkdir()
    (started / "run.json").write_text('{"run_id": "x", "status": "running"}')
    (started / "episodes.jsonl").write_text("")
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    row = {"scenario": "reach", "policy": "expert", "seed": 0, "success": True}
    (garbage / "episodes.jsonl").write_text(json.dumps(row) + "\nhello\n" + json.dumps(row) + "\n")
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "episodes.jsonl").write_text('[1, 2]\n{"scenario": "reach"}\n')
    cases = {
        str(tmp_path / "missing"): "not a directory",
        str(empty): "not a run directory",
        str(started): "no finished episode yet",
        str(garbage): "episodes.jsonl line 2: not JSON",
        str(wrong): "episodes.jsonl line 1: not an episode record",
    }
    capsys.readouterr()
    for path, why in cases.items():
        assert main(["report", path]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"qrobot: error: report {path}") and why in err[0], err
    assert main(["compare", str(garbage), str(garbage), "--policy-a", "expert"]) == 2
    assert "both --policy-a and --policy-b" in capsys.readouterr().err


def test_holm_against_a_hand_worked_example() -> None:
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> 0.06 (monotone)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    assert holm([]) == []


def _table(out: str) -> dict[str, list[str]]:
    return {line.split("  ")[0]: line.split() for line in out.splitlines() if " / " in line}


def test_compare_finds_the_expert_beats_random_and_two_identical_runs_do_not_differ(
    runs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recorded, plain = runs
    capsys.readouterr()
    assert main(["compare", str(recorded), str(plain), "--out", str(tmp_path / "same"), "-q"]) == 0
    same = _table(capsys.readouterr().out)
    assert len(same) == 4 and all(row[-1] == "no" and float(row[-2]) == 1.0 for row in same.values()), same
    argv = ["compare", str(plain), str(plain), "--policy-a", "expert", "--policy-b", "random"]
    assert main([*argv, "--out", str(tmp_path / "diff"), "-q"]) == 0
    diff = _table(capsys.readouterr().out)
    assert set(diff) == {"pointnav / expert vs random", "reach / expert vs random"}
    nav = diff["pointnav / expert vs random"]
    assert nav[5:7] == ["5/5", "0/5"] and float(nav[7]) == pytest.approx(2 / math.comb(10, 5), rel=1e-3)
    assert nav[-1] == "yes" and float(nav[8]) <= 0.05
    html = (tmp_path / "diff" / "index.html").read_text()
    assert html.count('class="yes"') == sum(row[-1] == "yes" for row in diff.values())
    assert main(["compare", str(plain), str(recorded), "--policy-a", "expert", "--policy-b", "nosuch"]) == 2


def test_ctrl_c_in_a_bench_writes_the_partial_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import qrobot.runner

    real, calls = qrobot.runner.run_episode, []

    def interrupted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # as Ctrl-C in the third episode
        return real(*args, **kwargs)

    monkeypatch.setattr(qrobot.runner, "run_episode", interrupted)
    argv = ["bench", "--scenarios", "pointnav", "--policies", "random", "--episodes", "5", "--workers", "1"]
    assert main([*argv, "--no-record", "--runs-dir", str(tmp_path), "-q"]) == 130
    (run,) = tmp_path.iterdir()
    html = (run / "report" / "index.html").read_text()
    assert "Run status: interrupted. The report covers the 2 episodes finished so far." in html
    assert '<td class="n">2 of 5</td>' in html
