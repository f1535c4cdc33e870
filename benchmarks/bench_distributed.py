"""2-process ÷ 1-process wall time per epoch of `edgekd distill` on this machine (gloo, CPU).

    .venv/bin/python benchmarks/bench_distributed.py [--repeats 3] [--epochs 10]

The teacher is trained once and loaded by every run, so only student training is compared:
seconds per epoch of the distilled student, read from each run's distill.json. Medians over
repeats; writes benchmarks/results/distributed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def distill(cwd: Path, *args: str) -> dict:
    run = cwd / f"run{len(list(cwd.iterdir()))}"
    subprocess.run([sys.executable, "-m", "edgekd.cli", "distill", "--run", str(run), "--no-progress", *args],
                   cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return json.loads((run / "distill.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=10)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        distill(tmp, "--epochs", "1", "--seeds", "1")  # trains the teacher once: run0/teacher.pt
        teacher = str(tmp / "run0" / "teacher.pt")
        common = ["--teacher", teacher, "--epochs", str(args.epochs), "--seeds", "1"]
        rows = []
        for _ in range(args.repeats):
            one = distill(tmp, *common)
            two = distill(tmp, *common, "--nproc", "2")
            rows.append({"one_s_per_epoch": one["seconds"]["student"] / args.epochs,
                         "two_s_per_epoch": two["seconds"]["student"] / args.epochs,
                         "one_acc": one["accuracy"]["student"]["mean"], "two_acc": two["accuracy"]["student"]["mean"]})
    ratio = statistics.median(r["two_s_per_epoch"] / r["one_s_per_epoch"] for r in rows)
    result = {"rows": rows, "ratio_2proc_over_1proc": ratio, "cpus": os.cpu_count(), "epochs": args.epochs}
    out = ROOT / "benchmarks" / "results" / "distributed.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"seconds per epoch: 1 process {med['one_s_per_epoch']:.3f}, 2 processes {med['two_s_per_epoch']:.3f} "
          f"(median of {args.repeats}); accuracy {100 * med['one_acc']:.2f}% vs {100 * med['two_acc']:.2f}%")
    print(f"2-process ÷ 1-process wall time per epoch = {ratio:.3f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
