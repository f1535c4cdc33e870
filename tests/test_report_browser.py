"""The report in a real browser: headless Chromium (Debian's `chromium`) loads the page, and the test
checks no console errors, every section present and visible, every chart drawn with non-zero size and
no label over another or cut off; a second test checks that the file names no external URL."""

from __future__ import annotations

import re

import pytest

from edgekd.report import make_report
from edgekd.report.browser import Chromium, find_chromium, inspect

from helpers import report_fixtures as fx

pytestmark = pytest.mark.integration  # headless Chromium
CHROMIUM = find_chromium()
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (apt-get install chromium; "
                                                              ".ci/run installs it)")
FULL_SECTIONS = ["summary", "recipe", "accuracy", "curves", "targets", "teacher-vs-student", "seminar",
                 "select-student", "select-teacher", "missing"]

# Anything that would make the browser fetch: absolute and protocol-relative URLs, CSS imports and
# url(), and the elements that load resources.
EXTERNAL = re.compile(r"(?i)(https?:|ftp:|wss?:)//|(?:src|href|action|poster)\s*=\s*[\"']?\s*//|url\(|@import|"
                      r"<\s*(script|link|iframe|img|object|embed|video|audio|source|base)\b")


@pytest.fixture(scope="module")
def chrome():
    """One browser for the module's pages (each gets its own tab): starting Chromium is the slow part."""
    if CHROMIUM is None:
        pytest.skip("chromium not installed")
    with Chromium() as browser:
        yield browser


def external_refs(html: str) -> list[str]:
    return [m.group(0) for m in EXTERNAL.finditer(html)]


def _check(found: dict, sections: list[str]) -> None:
    assert found["console_errors"] == []
    assert [s["key"] for s in found["sections"]] == sections
    hidden = [s["key"] for s in found["sections"] if not s["visible"] or s["height"] < 20]
    assert hidden == []
    assert found["charts"], "no chart on the page"
    for c in found["charts"]:
        assert c["visible"] and c["width"] > 100 and c["height"] > 100, c
        assert c["marks"] > 3, c                      # drawn, not an empty frame
        assert c["overlaps"] == 0 and c["clipped"] == 0, c
    assert found["width"] <= 1280, "the page scrolls sideways"


@needs_chromium
def test_full_report_in_chromium(tmp_path, chrome):
    run = fx.full_run(tmp_path / "run")
    png = tmp_path / "report.png"
    found = inspect(make_report([run]), png=png, browser=chrome)
    _check(found, FULL_SECTIONS)
    assert len(found["charts"]) >= 10
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 20_000


@needs_chromium
def test_comparison_and_partial_pages_in_chromium(tmp_path, chrome):
    a, b = fx.full_run(tmp_path / "a"), fx.full_run(tmp_path / "b", seed=1)
    _check(inspect(make_report([a, b], out=tmp_path / "cmp.html"), browser=chrome), FULL_SECTIONS)
    partial = tmp_path / "partial"
    fx.config(partial)
    fx.write_metrics(partial, fx.metrics_lines()[:9], torn_tail=True)
    _check(inspect(make_report([partial]), browser=chrome),
           ["summary", "recipe", "accuracy", "curves", "targets", "teacher-vs-student", "missing"])


@needs_chromium
def test_the_browser_check_can_fail(tmp_path):
    """The same inspection on a broken page reports what is wrong."""
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><section data-section="x" style="display:none">x</section>'
                   '<figure class="chart" data-chart="c"><svg width="0" height="0"></svg></figure>'
                   '<script>console.error("boom")</script></body></html>')
    found = inspect(bad)
    assert any("boom" in e for e in found["console_errors"])
    assert found["sections"] == [{"key": "x", "visible": False, "height": 0}]
    assert found["charts"][0]["width"] == 0


def test_report_names_no_external_url(tmp_path):
    a, b = fx.full_run(tmp_path / "a"), fx.full_run(tmp_path / "b", seed=1)
    for page in (make_report([a]), make_report([a, b], out=tmp_path / "cmp.html")):
        html = page.read_text()
        assert external_refs(html) == [], page
        assert "<svg" in html and "<style>" in html  # charts and styles are inline


def test_external_url_check_catches_each_kind():
    for html in ('<a href="https://example.org">', "<img src='//cdn.example.org/x.png'>", "<script>",
                 "<link rel=stylesheet href=x.css>", "body{background:url(x.png)}", "@import 'x.css';",
                 '<svg xmlns="http://www.w3.org/2000/svg">'):
        assert external_refs(html), html
