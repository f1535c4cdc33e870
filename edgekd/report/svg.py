"""Charts as inline SVG strings: bars with error bars, lines, box plots, histograms, scatter.

No plotting library and no script: each function returns one `<svg>` element that a
browser draws offline. Legends sit under the plot area, never over the data, and tick
labels come from `nice_ticks` so axes stay readable at any scale.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
W, H = 540, 300
STATS = ("p1", "q1", "p50", "q3", "p90", "p99")
STATS_W = 230           # room right of a box plot for its p50/p90/p99 text          # default chart size in CSS pixels
PAD = {"left": 58, "right": 16, "top": 28, "bottom": 44}


def color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def fmt(v: float) -> str:
    """Short tick text: 0.5, 12, 1.2k, 3e-05."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    if a < 1e-3:
        return f"{v:.0e}"
    return f"{v:.4g}"


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About `n` round tick values covering [lo, hi] (1, 2, 2.5, 5 × 10^k steps)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0, 1.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(1, n)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 12))
        t += step
    if ticks[-1] < hi:
        ticks.append(round(t, 12))
    return ticks


@dataclass
class Frame:
    """A plot area with linear (or log10 y) scales; maps data to pixels and draws axes."""

    x0: float
    x1: float
    y0: float
    y1: float
    width: int = W
    height: int = H
    log_y: bool = False
    left: int = PAD["left"]
    parts: list[str] = field(default_factory=list)

    def _ty(self, v: float) -> float:
        return math.log10(max(v, 1e-12)) if self.log_y else v

    def px(self, x: float) -> float:
        span = (self.x1 - self.x0) or 1.0
        return self.left + (x - self.x0) / span * (self.width - self.left - PAD["right"])

    def py(self, y: float) -> float:
        lo, hi = self._ty(self.y0), self._ty(self.y1)
        span = (hi - lo) or 1.0
        return self.height - PAD["bottom"] - (self._ty(y) - lo) / span * (self.height - PAD["top"] - PAD["bottom"])

    def add(self, s: str) -> None:
        self.parts.append(s)

    def y_axis(self, label: str, ticks: Sequence[float]) -> None:
        for t in ticks:
            y = self.py(t)
            self.add(f'<line x1="{self.left}" x2="{self.width - PAD["right"]}" y1="{y:.1f}" y2="{y:.1f}" '
                     'class="grid"/>')
            self.add(f'<text x="{self.left - 5}" y="{y + 4:.1f}" text-anchor="end" class="tick">{fmt(t)}</text>')
        mid = (PAD["top"] + self.height - PAD["bottom"]) / 2
        self.add(f'<text transform="translate(13,{mid:.1f}) rotate(-90)" text-anchor="middle" class="axis">'
                 f'{escape(label)}</text>')

    def x_axis(self, label: str, ticks: Sequence[float] = (), texts: Sequence[str] | None = None) -> None:
        base = self.height - PAD["bottom"]
        self.add(f'<line x1="{self.left}" x2="{self.width - PAD["right"]}" y1="{base}" y2="{base}" class="axisline"/>')
        for i, t in enumerate(ticks):
            text = texts[i] if texts else fmt(t)
            self.add(f'<text x="{self.px(t):.1f}" y="{base + 15}" text-anchor="middle" '
                     f'class="tick">{escape(text)}</text>')
        self.add(f'<text x="{(self.left + self.width - PAD["right"]) / 2:.1f}" y="{self.height - 6}" '
                 f'text-anchor="middle" class="axis">{escape(label)}</text>')

    def svg(self, title: str, legend: Sequence[tuple[str, str, str]] = ()) -> str:
        """The finished element; `legend` rows (name, colour, 'line'|'box'|'dash') go below the plot."""
        rows = _legend_rows(legend, self.width, self.left)
        extra = 18 * len(rows)
        body = "".join(self.parts)
        leg = "".join(_legend_item(name, c, kind, x, self.height + 14 + 18 * r)
                      for r, row in enumerate(rows) for name, c, kind, x in row)
        return (f'<svg role="img" width="{self.width}" height="{self.height + extra}" '
                f'viewBox="0 0 {self.width} {self.height + extra}"><title>{escape(title)}</title>'
                f'<text x="{self.width / 2}" y="16" text-anchor="middle" class="ctitle">{escape(title)}</text>'
                f'{body}{leg}</svg>')


def _legend_rows(legend: Sequence[tuple[str, str, str]], width: int,
                 left: int) -> list[list[tuple[str, str, str, float]]]:
    """Lay legend items left to right, wrapping to a new row instead of overlapping."""
    rows: list[list[tuple[str, str, str, float]]] = [[]]
    x = left
    for name, c, kind in legend:
        w = 26 + 6.5 * len(name)
        if x + w > width - 4 and rows[-1]:
            rows.append([])
            x = left
        rows[-1].append((name, c, kind, x))
        x += w + 10
    return [r for r in rows if r]


def _legend_item(name: str, c: str, kind: str, x: float, y: float) -> str:
    if kind == "box":
        mark = f'<rect x="{x}" y="{y - 9}" width="14" height="10" fill="{c}"/>'
    else:
        dash = ' stroke-dasharray="5,3"' if kind == "dash" else ""
        mark = f'<line x1="{x}" x2="{x + 16}" y1="{y - 4}" y2="{y - 4}" stroke="{c}" stroke-width="2.5"{dash}/>'
    return f'{mark}<text x="{x + 21}" y="{y}" class="legend">{escape(name)}</text>'


def bar_chart(groups: Sequence[str], series: Sequence[tuple[str, Sequence[float | None], Sequence[float | None]]], *,
              title: str, y_label: str, hline: tuple[float, str] | None = None,
              y_min: float | None = None, width: int = W) -> str:
    """Grouped bars with ±error bars: one group per category, one bar per series (run)."""
    tops = [v + (e or 0) for _, vs, es in series for v, e in zip(vs, es) if v is not None]
    bottoms = [v - (e or 0) for _, vs, es in series for v, e in zip(vs, es) if v is not None]
    hi = max(tops + ([hline[0]] if hline else []) + [1e-9])
    lo = min(bottoms + ([hline[0]] if hline else []) + [hi])  # error bars and the reference line stay inside
    lo = y_min if y_min is not None else max(0.0, lo - 0.15 * (hi - lo + 1e-9))
    ticks = nice_ticks(lo, hi)
    # Wide enough that no category name runs into the next one.
    width = max(width, int(len(groups) * (6.5 * max(map(len, groups), default=1) + 12)) + PAD["left"] + PAD["right"])
    f = Frame(-0.5, len(groups) - 0.5, ticks[0], ticks[-1], width=width)
    f.y_axis(y_label, ticks)
    n = max(1, len(series))
    bw = 0.8 / n
    for si, (name, vs, es) in enumerate(series):
        for gi, (v, e) in enumerate(zip(vs, es)):
            if v is None:
                continue
            xc = gi - 0.4 + bw * (si + 0.5)
            x_l, x_r, top, base = f.px(xc - bw * 0.45), f.px(xc + bw * 0.45), f.py(v), f.py(ticks[0])
            fill = color(si if len(series) > 1 else gi)  # one series: a colour per category
            f.add(f'<rect x="{x_l:.1f}" y="{min(top, base):.1f}" width="{x_r - x_l:.1f}" '
                  f'height="{abs(base - top):.1f}" '
                  f'fill="{fill}"><title>{escape(name)} {escape(groups[gi])}: {v:.4g}'
                  f'{f" ± {e:.2g}" if e else ""}</title></rect>')
            if e:
                cx = f.px(xc)
                f.add(f'<path d="M{cx:.1f},{f.py(v - e):.1f}V{f.py(v + e):.1f}M{cx - 5:.1f},{f.py(v - e):.1f}h10'
                      f'M{cx - 5:.1f},{f.py(v + e):.1f}h10" class="err"/>')
    if hline:
        y = f.py(hline[0])
        f.add(f'<line x1="{f.left}" x2="{width - PAD["right"]}" y1="{y:.1f}" y2="{y:.1f}" class="ref"/>')
    f.x_axis("", list(range(len(groups))), list(groups))
    legend = [(s[0], color(i), "box") for i, s in enumerate(series)] if len(series) > 1 else []
    if hline:
        legend.append((hline[1], "#444", "dash"))
    return f.svg(title, legend)


def line_chart(series: Sequence[dict], *, title: str, x_label: str, y_label: str, width: int = W,
               x_ticks: Sequence[float] | None = None, x_texts: Sequence[str] | None = None,
               log_y: bool = False) -> str:
    """Lines with point markers. Each series: {name, xs, ys, color?, dash?, legend? (False hides it)}."""
    xs = [x for s in series for x in s["xs"]]
    ys = [y for s in series for y in s["ys"] if y is not None and math.isfinite(y)]
    if not xs or not ys:
        return ""
    if log_y:
        ys = [y for y in ys if y > 0] or [1.0]
        ticks = [10 ** k for k in range(math.floor(math.log10(min(ys))), math.ceil(math.log10(max(ys))) + 1)]
        if len(ticks) < 2:
            ticks.append(ticks[0] * 10)
    else:
        ticks = nice_ticks(min(ys), max(ys))
    f = Frame(min(xs), max(xs) if max(xs) > min(xs) else min(xs) + 1, ticks[0], ticks[-1], width=width, log_y=log_y)
    f.y_axis(y_label, ticks)
    legend = []
    for i, s in enumerate(series):
        c = s.get("color") or color(i)
        pts = [(f.px(x), f.py(y)) for x, y in zip(s["xs"], s["ys"]) if y is not None and math.isfinite(y)]
        dash = ' stroke-dasharray="5,3"' if s.get("dash") else ""
        f.add(f'<polyline points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}" fill="none" stroke="{c}" '
              f'stroke-width="{s.get("stroke", 2)}"{dash} '
              f'opacity="{s.get("opacity", 1)}"><title>{escape(s["name"])}</title></polyline>')
        if len(pts) <= 40:
            f.add("".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{c}"/>' for x, y in pts))
        if s.get("legend", True):
            legend.append((s["name"], c, "dash" if s.get("dash") else "line"))
    if x_ticks is None:
        x_ticks = [t for t in nice_ticks(f.x0, f.x1) if f.x0 <= t <= f.x1]
    f.x_axis(x_label, x_ticks, x_texts)
    return f.svg(title, legend)


def box_plot(boxes: Sequence[dict], *, title: str, x_label: str, width: int = W, log_x: bool = False) -> str:
    """Horizontal box plots, one row each: {name, p1?, q1?, p50, q3?, p90?, p99, n?, color?}. Rows made
    from percentiles only (no raw timings) have no box: a median tick and whiskers to p90/p99."""
    if not boxes:
        return ""
    if log_x:  # teacher and student can be 100x apart: plot log10(ms), label ticks in ms
        boxes = [{k: (math.log10(max(v, 1e-9)) if k in STATS else v) for k, v in b.items()} for b in boxes]
    lo = min(b.get("p1", b["p50"]) for b in boxes)
    hi = max(b.get("p99", b["p50"]) for b in boxes)
    if log_x:
        ticks = [float(k) for k in range(math.floor(lo), math.ceil(hi) + 1)]
        ticks = ticks if len(ticks) > 1 else [ticks[0], ticks[0] + 1]
    else:
        ticks = nice_ticks(max(0.0, lo - 0.05 * (hi - lo)), hi)
    row_h = 34
    label_w = int(14 + 6.3 * max(len(str(b["name"])) for b in boxes))  # room for the longest row name
    height = PAD["top"] + PAD["bottom"] + row_h * len(boxes)
    f = Frame(ticks[0], ticks[-1], 0, len(boxes), width=width - STATS_W, height=height, left=label_w)
    for t in ticks:
        x = f.px(t)
        f.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD["top"]}" y2="{height - PAD["bottom"]}" class="grid"/>')
    for i, b in enumerate(boxes):
        yc = PAD["top"] + row_h * (i + 0.5)
        c = b.get("color") or color(i)
        f.add(f'<text x="{label_w - 6}" y="{yc + 4:.1f}" text-anchor="end" class="tick">{escape(b["name"])}</text>')
        w_lo, w_hi = b.get("p1", b.get("q1", b["p50"])), b.get("p99", b.get("p90", b["p50"]))
        f.add(f'<line x1="{f.px(w_lo):.1f}" x2="{f.px(w_hi):.1f}" y1="{yc:.1f}" y2="{yc:.1f}" stroke="{c}" '
              f'stroke-width="1.5"/>')
        if "q1" in b and "q3" in b:
            f.add(f'<rect x="{f.px(b["q1"]):.1f}" y="{yc - 10:.1f}" '
                  f'width="{max(1.0, f.px(b["q3"]) - f.px(b["q1"])):.1f}" '
                  f'height="20" fill="{c}" fill-opacity="0.35" stroke="{c}"/>')
        f.add(f'<line x1="{f.px(b["p50"]):.1f}" x2="{f.px(b["p50"]):.1f}" y1="{yc - 11:.1f}" y2="{yc + 11:.1f}" '
              f'stroke="{c}" stroke-width="3"><title>{escape(b["name"])}: p50 '
              f'{fmt(10 ** b["p50"] if log_x else b["p50"])}'
              f' ms</title></line>')
        for key in ("p90", "p99"):
            if key in b:
                x = f.px(b[key])
                f.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{yc - 6:.1f}" y2="{yc + 6:.1f}" stroke="{c}" '
                      f'stroke-width="1.5"/>')
        real = (lambda v: 10 ** v) if log_x else (lambda v: v)
        text = " · ".join(f"{k} {real(b[k]):.3g}" for k in ("p50", "p90", "p99") if k in b) + " ms"
        f.add(f'<text x="{width - STATS_W + 8}" y="{yc + 4:.1f}" class="small">{text}</text>')
    f.x_axis(x_label, ticks, [fmt(10 ** t) for t in ticks] if log_x else None)
    f.width = width  # the stats column sits right of the plot area
    return f.svg(title)


def histogram(samples: Sequence[float], *, title: str, x_label: str, bins: int = 40, width: int = W,
              clip_quantile: float = 0.99) -> str:
    """Counts of `samples` in equal bins up to the `clip_quantile` or the far-out fence, whichever is lower (the
    tail is counted in the last bin and said in the title, so stalls do not squash the distribution into one bar)."""
    xs = sorted(float(s) for s in samples if math.isfinite(s))
    if len(xs) < 2:
        return ""
    q1, q3 = xs[len(xs) // 4], xs[(3 * len(xs)) // 4]
    # Up to the quantile, but no further than 3 IQR above q3 (Tukey's far-out fence): on a busy host
    # 1% of runs can be 100x the median, and one bin would then hold nearly everything.
    lo, hi = xs[0], min(xs[min(len(xs) - 1, int(clip_quantile * (len(xs) - 1)))], q3 + 3 * (q3 - q1))
    if hi <= lo:
        hi = lo + 1e-9
    counts = [0] * bins
    for v in xs:
        counts[min(bins - 1, max(0, int((v - lo) / (hi - lo) * bins)))] += 1
    tail = sum(1 for v in xs if v > hi)
    yt = nice_ticks(0, max(counts))
    f = Frame(lo, hi, 0, yt[-1], width=width)
    f.y_axis("runs", yt)
    bw = (hi - lo) / bins
    for i, c in enumerate(counts):
        x0, x1 = f.px(lo + i * bw), f.px(lo + (i + 1) * bw)
        f.add(f'<rect x="{x0:.1f}" y="{f.py(c):.1f}" width="{max(0.5, x1 - x0 - 0.5):.1f}" '
              f'height="{f.py(0) - f.py(c):.1f}" '
              f'fill="{color(0)}"><title>{lo + i * bw:.4g}–{lo + (i + 1) * bw:.4g}: {c}</title></rect>')
    f.x_axis(x_label, [t for t in nice_ticks(lo, hi) if lo <= t <= hi])
    note = f" (n={len(xs)}; {tail} over {hi:.3g} in the last bin)" if tail else f" (n={len(xs)})"
    return f.svg(title + note)


def scatter(points: Sequence[dict], *, title: str, x_label: str, y_label: str, front: Sequence[int] = (),
            width: int = W, log_x: bool = False) -> str:
    """Points {x, y, name, group} coloured by group; `front` (indices) is joined by a line."""
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    if not pts:
        return ""
    tx = (lambda v: math.log10(max(v, 1e-12))) if log_x else (lambda v: v)
    xt = nice_ticks(min(tx(p["x"]) for p in pts), max(tx(p["x"]) for p in pts))
    yt = nice_ticks(min(p["y"] for p in pts), max(p["y"] for p in pts))
    f = Frame(xt[0], xt[-1], yt[0], yt[-1], width=width)
    f.y_axis(y_label, yt)
    groups = list(dict.fromkeys(p.get("group", "") for p in pts))
    for p in pts:
        c = color(groups.index(p.get("group", "")))
        f.add(f'<circle cx="{f.px(tx(p["x"])):.1f}" cy="{f.py(p["y"]):.1f}" r="4" fill="{c}" fill-opacity="0.75">'
              f'<title>{escape(str(p.get("name", "")))}: {p["x"]:.4g}, {p["y"]:.4g}</title></circle>')
    line = sorted((tx(points[i]["x"]), points[i]["y"]) for i in front if points[i].get("x") is not None)
    if line:
        f.add(f'<polyline points="{" ".join(f"{f.px(x):.1f},{f.py(y):.1f}" for x, y in line)}" fill="none" '
              f'stroke="#222" stroke-width="1.5" stroke-dasharray="4,3"/>')
    texts = [fmt(10 ** t) for t in xt] if log_x else None
    f.x_axis(x_label, xt, texts)
    legend = [(g or "candidates", color(i), "box") for i, g in enumerate(groups)]
    if line:
        legend.append(("Pareto front", "#222", "dash"))
    return f.svg(title, legend)


def budget_bars(rows: Sequence[dict], *, title: str, width: int = W) -> str:
    """Each budget as a bar of value / limit (100% = the limit), green when within, red when over."""
    if not rows:
        return ""
    label_w, row_h = 150, 30
    height = PAD["top"] + PAD["bottom"] + row_h * len(rows)
    top = max([1.0] + [r["value"] / r["limit"] for r in rows if r.get("limit")])
    ticks = nice_ticks(0, min(top, 10.0) * 100)
    f = Frame(0, ticks[-1], 0, 1, width=width, height=height, left=label_w)
    for t in ticks:
        f.add(f'<line x1="{f.px(t):.1f}" x2="{f.px(t):.1f}" y1="{PAD["top"]}" y2="{height - PAD["bottom"]}" '
              f'class="grid"/>')
    for i, r in enumerate(rows):
        yc = PAD["top"] + row_h * (i + 0.5)
        share = min(ticks[-1], 100 * r["value"] / r["limit"]) if r.get("limit") else 0
        ok = r.get("passed", True)
        c = "#2ca02c" if ok else "#d62728"
        f.add(f'<text x="{label_w - 6}" y="{yc + 4:.1f}" text-anchor="end" class="tick">{escape(r["name"])}</text>'
              f'<rect x="{f.px(0):.1f}" y="{yc - 9:.1f}" width="{max(1.0, f.px(share) - f.px(0)):.1f}" height="18" '
              f'fill="{c}">'
              f'<title>{r["value"]:.4g} of {r["limit"]:g}</title></rect>'
              f'<text x="{f.px(share) + 4:.1f}" y="{yc + 4:.1f}" class="small">{fmt(r["value"])} / {fmt(r["limit"])}'
              f'{" (skipped: " + escape(str(r["skipped"])) + ")" if r.get("skipped") else ""}</text>')
    x = f.px(100)
    f.add(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{PAD["top"] - 4}" y2="{height - PAD["bottom"]}" class="ref"/>')
    f.x_axis("% of the budget", ticks)
    return f.svg(title)
