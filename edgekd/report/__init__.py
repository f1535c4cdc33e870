"""`edgekd report`: one self-contained HTML page for a run, or several runs side by side.

`make_report(runs, out=None)` is the library entry; the CLI only parses options and calls it.
Importing this package does not import torch.
"""

from __future__ import annotations

from pathlib import Path


def make_report(runs: list[Path], *, out: Path | None = None) -> Path:
    """Write the report of `runs` and return its path.

    One run: `RUN/report.html` (or `out`). Several: one comparison page with a column or series per
    run, at `out` or `artifacts/report-compare.html`. An empty list means `artifacts/latest`.
    Missing parts of a run are shown as missing; only a RUN that is not a folder is bad input (exit 2).
    """
    from edgekd.report.page import build

    return build([Path(r) for r in runs], out=None if out is None else Path(out))
