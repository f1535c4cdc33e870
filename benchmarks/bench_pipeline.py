"""Issue 2's benchmarks, measured within one run on this machine.

1. ONNX Runtime student latency ÷ PyTorch eager student latency (batch 1, same threads, one process).
2. Student against teacher, both through ONNX Runtime: speed-up and accuracy points lost.
3. The README's main command (distill → export --target cpu-arm → bench), total wall time after setup.

    .venv/bin/python benchmarks/bench_pipeline.py [--repeats 5] [--threads 1]

Prints a table and writes benchmarks/results/pipeline.json. Medians over repeats.
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
EDGEKD = [sys.executable, "-m", "edgekd.cli"]


def run_main_command(workdir: Path) -> float:
    """The README's main job, minus setup, in a fresh folder; returns wall seconds."""
    t0 = time.perf_counter()
    for args in (["distill", "--no-progress"], ["export", "--target", "cpu-arm"], ["bench"]):
        subprocess.run(EDGEKD + args, cwd=workdir, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def ort_p50_ms(model: Path, x, threads: int, seconds: float = 1.0) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for _ in range(50):
        sess.run(None, {name: x})
    times, end = [], time.perf_counter() + seconds
    while len(times) < 200 or time.perf_counter() < end:
        t0 = time.perf_counter()
        sess.run(None, {name: x})
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def latency_ratios(run: Path, repeats: int, threads: int) -> dict:
    import numpy as np
    import torch

    from edgekd.bench.run import eager_latency_ms
    from edgekd.models.checkpoints import load_student

    out = run / "cpu-arm"
    student, _ = load_student(run)
    x = np.load(out / "golden.npz")["inputs"][:1]
    shape = tuple(x.shape[1:])
    rows = []
    for _ in range(repeats):
        s_ort = ort_p50_ms(out / "model.onnx", x, threads)
        t_ort = ort_p50_ms(out / "teacher.onnx", x, threads)
        s_eager = eager_latency_ms(student, shape, threads=threads)["p50"]
        rows.append({"student_ort_ms": s_ort, "teacher_ort_ms": t_ort, "student_eager_ms": s_eager})
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    manifest = json.loads((out / "manifest.json").read_text())
    return {
        "threads": threads, "repeats": repeats, "medians": med, "per_repeat": rows,
        "ort_over_eager": statistics.median(r["student_ort_ms"] / r["student_eager_ms"] for r in rows),
        "teacher_over_student": statistics.median(r["teacher_ort_ms"] / r["student_ort_ms"] for r in rows),
        "accuracy": manifest["accuracy"],
        "points_lost": 100 * (manifest["accuracy"]["teacher"] - manifest["accuracy"]["student_onnx"]),
        "torch_version": torch.__version__,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--main-runs", type=int, default=1, help="times to run the README main command")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        work = Path(tmp)
        walls = [run_main_command(work) for _ in range(args.main_runs)]
        ratios = latency_ratios((work / "artifacts" / "latest").resolve(), args.repeats, args.threads)
    result = {"main_command_wall_s": statistics.median(walls), "main_command_walls": walls,
              "cpus": os.cpu_count(), **ratios}
    dest = ROOT / "benchmarks" / "results" / "pipeline.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    print(f"README main command wall time:            {result['main_command_wall_s']:.1f} s (goal ≤ 180 s)")
    print(f"ORT ÷ eager student latency (batch 1, {args.threads} thr): {result['ort_over_eager']:.3f} (goal ≤ 0.5)"
          f"   [ORT {ratios['medians']['student_ort_ms']:.4f} ms, "
          f"eager {ratios['medians']['student_eager_ms']:.4f} ms]")
    print(f"teacher ÷ student latency, both ORT:      {result['teacher_over_student']:.1f}× (goal ≥ 10×)"
          f"   [teacher {ratios['medians']['teacher_ort_ms']:.4f} ms]")
    print(f"accuracy points lost (teacher − student ONNX): {result['points_lost']:.2f} (goal ≤ 2)")


if __name__ == "__main__":
    main()
