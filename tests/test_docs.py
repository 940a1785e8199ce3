"""The README fits on a screen or two and its links resolve; the docs site builds offline
in strict mode (every page in the nav, every link between pages resolving)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
MAX_README_LINES = 250

# [text](target) and ![alt](target), with an optional "title"; reference-style links too
_INLINE = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def _nav_pages(nav: Any) -> list[str]:
    """Every page file named in an mkdocs nav (nested sections, `Title: page.md` or bare)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [p for item in nav for p in _nav_pages(item)]
    if isinstance(nav, dict):
        return [p for value in nav.values() for p in _nav_pages(value)]
    return []


def _config() -> dict[str, Any]:
    # mkdocs.yml may carry !!python/name tags (material's emoji, for example): read them as plain text
    class Loader(yaml.SafeLoader):
        pass

    Loader.add_multi_constructor("tag:yaml.org,2002:python/", lambda loader, suffix, node: None)
    return yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)


def _links(markdown: str) -> list[str]:
    text = _FENCE.sub("", markdown)  # code blocks hold shell text, not links
    text = re.sub(r"`[^`\n]*`", "", text)  # nor do code spans
    return _INLINE.findall(text) + _REFERENCE.findall(text)


def test_readme_fits_on_a_screen_or_two() -> None:
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move sections to docs/"
    )


def test_every_relative_link_in_the_readme_points_to_a_file() -> None:
    links = _links(README.read_text())
    assert any(link.startswith("docs/") for link in links)  # the parser found the docs links
    missing = []
    for link in links:
        if re.match(r"^[a-z][a-z0-9+.-]*:", link, re.IGNORECASE) or link.startswith("#"):
            continue  # http(s):, mailto:, in-page anchors
        path = link.split("#", 1)[0].split("?", 1)[0]
        if not (ROOT / path).exists():
            missing.append(link)
    assert not missing, f"README.md links to files that do not exist: {missing}"


def test_every_docs_page_is_in_the_nav() -> None:
    nav = _nav_pages(_config()["nav"])
    assert len(nav) == len(set(nav)), f"a page is listed twice in the nav: {nav}"
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert pages - set(nav) == set(), f"docs pages missing from mkdocs.yml nav: {sorted(pages - set(nav))}"
    assert set(nav) - pages == set(), f"nav entries without a page: {sorted(set(nav) - pages)}"


def test_the_docs_site_builds_in_strict_mode_offline(tmp_path: Path) -> None:
    config = _config()
    assert config["theme"]["name"] == "material"
    assert config["theme"].get("font") is False  # no Google Fonts link: the build and the site need no network
    site = tmp_path / "site"
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (site / "index.html").is_file()
    for page in _nav_pages(config["nav"]):
        out = site / ("index.html" if page == "index.md" else Path(page).with_suffix("") / "index.html")
        assert out.is_file(), f"{page} was not built to {out.relative_to(site)}"
    html = (site / "index.html").read_text()
    assert "fonts.googleapis.com" not in html
