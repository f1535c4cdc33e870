"""Screenshot a run's report in headless Chromium, for docs/report.png.

    python scripts/report_screenshot.py artifacts/latest --out docs/report.png --height 2600 --scale 0.75

Writes RUN/report.html first (edgekd report), then the PNG: the page's top `--height` CSS pixels at
`--scale`, reduced to a 256-colour palette when Pillow is installed so it stays small.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from edgekd.report import make_report
from edgekd.report.browser import inspect


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("docs/report.png"))
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=None, help="CSS pixels from the top (default: the whole page)")
    ap.add_argument("--scale", type=float, default=1.0)
    a = ap.parse_args()
    html = make_report(a.runs, out=None if len(a.runs) == 1 else a.out.with_suffix(".html"))
    found = inspect(html, png=a.out, width=a.width, clip_height=a.height, scale=a.scale)
    try:
        from PIL import Image

        Image.open(a.out).convert("RGB").quantize(colors=256).save(a.out, optimize=True)
    except ImportError:
        pass
    bad = [c for c in found["charts"] if c["overlaps"] or c["clipped"] or not c["width"]]
    print(json.dumps({"report": str(html), "png": str(a.out), "bytes": a.out.stat().st_size,
                      "console_errors": found["console_errors"], "charts": len(found["charts"]),
                      "charts_with_problems": bad}, indent=1))


if __name__ == "__main__":
    main()
