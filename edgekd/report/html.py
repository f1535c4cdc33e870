"""Page assembly: small HTML helpers, the inline stylesheet, and `make_report`.

The page is one file with no script and no external reference (fonts, CSS and
charts are inline), so it opens offline, from an e-mail attachment or a CI
artifact alike.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from edgekd import __version__

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2a3a;color:#fff;padding:16px 28px}
header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#c9d3df}
nav{padding:6px 28px;background:#e8ecf1;font-size:13px}nav a{margin-right:14px;color:#1d4f91;text-decoration:none}
main{padding:8px 28px 40px;max-width:1500px}
section{background:#fff;border:1px solid #dde2e8;border-radius:6px;margin:16px 0;padding:10px 18px 16px}
h2{font-size:18px;margin:6px 0 10px;border-bottom:1px solid #e3e7ec;padding-bottom:4px}
h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border:1px solid #dde2e8;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f0f3f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}
figure.chart{margin:4px 0;padding:4px;border:1px solid #edf0f3;border-radius:4px;background:#fff}
svg text{font-family:inherit}
svg .tick{font-size:11px;fill:#333}
svg .axis{font-size:12px;fill:#222}
svg .ctitle{font-size:13px;font-weight:600;fill:#111}
svg .legend{font-size:11.5px;fill:#222}
svg .small{font-size:10px;fill:#444}
svg .grid{stroke:#e6e9ee}
svg .axisline{stroke:#888}
svg .err{stroke:#222;stroke-width:1.3;fill:none}svg .ref{stroke:#444;stroke-width:1.2;stroke-dasharray:6,4}
.pass{color:#16803c;font-weight:600}
.fail{color:#c0262d;font-weight:600}
.missing{color:#8a5a00;background:#fff7e0;border-left:3px solid #e0a800;padding:4px 8px;margin:6px 0}
.row{display:flex;flex-wrap:wrap;gap:8px 28px;align-items:flex-start}.cell{min-width:0;max-width:100%}
h3.tname{font-size:16px;color:#1d4f91}header code{background:#2c3e55;color:#e6edf5}
.pair{display:flex;flex-wrap:wrap;gap:0 16px}.pair>section{flex:1 1 480px;min-width:0}
.muted{color:#667}code{background:#f0f2f5;padding:0 3px;border-radius:3px}
"""


@dataclass
class Section:
    """One top-level block of the page; `key` is its anchor and the browser test's handle."""

    key: str
    title: str
    body: str


def esc(v: Any) -> str:
    return escape(str(v))


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, numeric_from: int = 1) -> str:
    """Cells are HTML already (use `esc` on text); columns from `numeric_from` on are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i >= numeric_from else ""}>{c}</td>'
                                     for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def missing(text: str) -> str:
    return f'<p class="missing">{text}</p>'


def chart(key: str, svg: str, *, empty: str = "") -> str:
    """A chart in a figure the browser test can find; an empty chart becomes a note saying why."""
    if not svg:
        return missing(empty) if empty else ""
    return f'<figure class="chart" data-chart="{esc(key)}">{svg}</figure>'


def charts(*figs: str) -> str:
    figs = tuple(f for f in figs if f)
    return f'<div class="charts">{"".join(figs)}</div>' if figs else ""


def mark(passed: bool | None, *, skipped: str | None = None) -> str:
    if skipped:
        return f'<span class="muted">skipped ({esc(skipped)})</span>'
    if passed is None:
        return '<span class="muted">—</span>'
    return '<span class="pass">✓ pass</span>' if passed else '<span class="fail">✗ fail</span>'


def pct(v: Any, digits: int = 2) -> str:
    return f"{100 * v:.{digits}f}%" if isinstance(v, (int, float)) else "—"


def num(v: Any, digits: int = 4) -> str:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return "—" if v is None else esc(v)
    return f"{v:.{digits}g}"


def count(v: Any) -> str:
    """A parameter count as 7.51k / 2.22M."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(v) >= scale:
            return f"{v / scale:.3g}{unit}"
    return f"{v:g}"


def size(v: Any) -> str:
    """Bytes as B / KiB / MiB."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "—"
    for unit, scale in (("MiB", 2**20), ("KiB", 2**10)):
        if v >= scale:
            return f"{v / scale:.3g} {unit}"
    return f"{int(v)} B"


def _html(s: Section) -> str:
    return f'<section id="{s.key}" data-section="{s.key}"><h2>{esc(s.title)}</h2>{s.body}</section>'


def page(title: str, subtitle: str, sections: Sequence[Section], *, side_by_side: tuple[str, str] | None = None) -> str:
    """The document. `side_by_side` names two consecutive sections to share a row where the window is wide."""
    nav = "".join(f'<a href="#{s.key}">{esc(s.title)}</a>' for s in sections)
    parts, i = [], 0
    while i < len(sections):
        if side_by_side and i + 1 < len(sections) and (sections[i].key, sections[i + 1].key) == side_by_side:
            parts.append(f'<div class="pair">{_html(sections[i])}{_html(sections[i + 1])}</div>')
            i += 2
        else:
            parts.append(_html(sections[i]))
            i += 1
    body = "".join(parts)
    made = time.strftime("%Y-%m-%d %H:%M:%S")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f'<style>{CSS}</style></head><body><header><h1>{esc(title)}</h1><p>{subtitle} · made {made} by edgekd '
            f'{esc(__version__)}</p></header><nav>{nav}</nav><main>{body}</main></body></html>\n')
