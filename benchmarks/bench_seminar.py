"""Issue 3's seminar table on digits, with all labels and with --labeled-fraction 0.1.

    .venv/bin/python benchmarks/bench_seminar.py [--seeds 3] [--epochs 30]

Runs `edgekd compare` for both settings (the teacher trained once per setting, the
student alone once per seed, every method on the same seeds and budget), prints both
tables, and writes benchmarks/results/seminar_{full,lf0.1}.json and .png.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    args = ap.parse_args()
    import torch

    import edgekd
    from edgekd.tables import compare_table, console

    torch.set_num_threads(1)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    for lf in args.fractions:
        tag = "full" if lf >= 1 else f"lf{lf:g}"
        with tempfile.TemporaryDirectory() as tmp:
            result = edgekd.compare(seeds=args.seeds, epochs=args.epochs, labeled_fraction=lf,
                                    run=Path(tmp) / "run", progress=False).to_json()
            shutil.copy(Path(tmp) / "run" / "compare.png", out / f"seminar_{tag}.png")
        result["run"] = f"(temporary) benchmarks/results/seminar_{tag}"
        (out / f"seminar_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        console.print(compare_table(result))
        winners = [r["method"] for r in result["rows"] if r.get("beats_alone_beyond_std")]
        best = max(result["rows"][2:], key=lambda r: r.get("gap_closed") or -1e9)
        print(f"labeled fraction {lf:g}: beat the student alone beyond std: {', '.join(winners) or 'none'}; "
              f"largest gap closed: {best['method']} {100 * (best['gap_closed'] or 0):.0f}%", flush=True)


if __name__ == "__main__":
    sys.exit(main())
