"""Write docs/run-folder.md from the dataclasses of edgekd/run/ (run after changing them)."""

from __future__ import annotations

from pathlib import Path

from edgekd.run.docs import render

if __name__ == "__main__":
    out = Path(__file__).resolve().parent.parent / "docs" / "run-folder.md"
    out.write_text(render(), encoding="utf-8")
    print(f"wrote {out}")
