"""Peak RSS of `edgekd distill` on a generated ImageFolder at 1× and 4× the samples.

The data streams from disk (decoded per item) and the teacher cache is a memory-mapped
.npy in the run folder, so peak RSS should not grow with the dataset beyond that file.

    .venv/bin/python benchmarks/bench_memory.py [--base 1500] [--repeats 3]

Each distill runs in its own process; its peak RSS is read from wait4's rusage.
Medians over repeats; writes benchmarks/results/memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def make_imagefolder(root: Path, n: int, classes: int = 10, size: int = 32) -> None:
    """n RGB PNGs, class-dependent colour plus noise, so the task is learnable."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        c = i % classes
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array([(37 * c) % 256, (91 * c) % 256, (151 * c) % 256], dtype=np.float32)
        img = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(d / f"{i}.png")


def peak_rss_mb(cmd: list[str], cwd: Path) -> tuple[float, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read().decode()[-1000:]}")
    return usage.ru_maxrss / 1024, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", type=int, default=1500)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for mult in (1, 4):
            data = tmp / f"data{mult}"
            make_imagefolder(data, args.base * mult)
            cmd = [sys.executable, "-m", "edgekd.cli", "distill", "--data", f"imagefolder:{data}", "--teacher",
                   "cnn-small", "--student", "tiny-cnn", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "1",
                   "--no-progress"]
            runs = [peak_rss_mb(cmd + ["--run", str(tmp / f"run{mult}-{k}")], tmp) for k in range(args.repeats)]
            cache = tmp / f"run{mult}-0" / "cache" / "teacher.logits.npy"
            rows[mult] = {"samples": args.base * mult, "peak_rss_mb": [r[0] for r in runs],
                          "seconds": [r[1] for r in runs], "cache_file_mb": cache.stat().st_size / 2**20}
    med = {m: statistics.median(r["peak_rss_mb"]) for m, r in rows.items()}
    result = {"rows": rows, "median_peak_rss_mb": med, "ratio_4x_over_1x": med[4] / med[1]}
    out = ROOT / "benchmarks" / "results" / "memory.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for m, r in rows.items():
        print(f"{m}× ({r['samples']} images): peak RSS {med[m]:.0f} MB (median of {args.repeats}), "
              f"teacher cache file {r['cache_file_mb']:.2f} MB, {statistics.median(r['seconds']):.0f} s")
    print(f"peak RSS 4× ÷ 1× = {result['ratio_4x_over_1x']:.3f} (goal ≤ 1.2)")


if __name__ == "__main__":
    main()
