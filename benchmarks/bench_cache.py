"""Offline distillation speed: wall time of a distillation run with cached teacher outputs
÷ the student alone, same epochs and steps, one process; and the same ratio without the cache.

    .venv/bin/python benchmarks/bench_cache.py [--repeats 5] [--epochs 10]

Medians over repeats; writes benchmarks/results/cache.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    import torch

    from edgekd.data import load_data
    from edgekd.deploy.targets import load_target
    from edgekd.train.config import DistillConfig
    from edgekd.train.datasets import Indexed
    from edgekd.train.distill import build_objective, make_student
    from edgekd.train.loop import Phase, fit
    from edgekd.train.teacher import obtain_teachers, teacher_source

    torch.set_num_threads(1)
    bundle, target = load_data("digits"), load_target("cpu-arm")
    cfg = DistillConfig(epochs=args.epochs, progress=False, teacher_epochs=3)
    with tempfile.TemporaryDirectory() as tmp:
        teachers = [m for m, _ in obtain_teachers(cfg, bundle, Path(tmp))]

    def kd_obj():
        return build_objective(list(cfg.methods), temperature=cfg.temperature)

    def timed(kind: str) -> tuple[float, float]:
        """(seconds building the teacher cache, seconds training)."""
        model = make_student(cfg, bundle, target, 0)
        build = 0.0
        if kind == "alone":
            ph = Phase("alone", model, build_objective(["ce"]), Indexed(bundle.train), bundle.val, args.epochs, 0)
        else:
            obj = kd_obj()
            t0 = time.perf_counter()
            src = teacher_source(replace(cfg, cache_teacher=(kind == "cached")), bundle, teachers, obj)
            build = time.perf_counter() - t0
            ph = Phase(kind, model, obj, Indexed(bundle.train), bundle.val, args.epochs, 0, source=src)
        t0 = time.perf_counter()
        fit(ph, progress=False)
        return build, time.perf_counter() - t0

    rows = []
    for _ in range(args.repeats):  # interleaved, so machine drift hits all three alike
        row = {}
        for k in ("alone", "cached", "live"):
            row[f"{k}_build"], row[k] = timed(k)
        rows.append(row)
    ratio_c = statistics.median(r["cached"] / r["alone"] for r in rows)
    ratio_ct = statistics.median((r["cached"] + r["cached_build"]) / r["alone"] for r in rows)
    ratio_l = statistics.median(r["live"] / r["alone"] for r in rows)
    result = {"epochs": args.epochs, "repeats": args.repeats, "teacher": cfg.teacher, "student": cfg.student,
              "per_repeat_seconds": rows, "cached_over_alone": ratio_c, "cached_with_build_over_alone": ratio_ct,
              "live_over_alone": ratio_l, "threads": 1}
    out = ROOT / "benchmarks" / "results" / "cache.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"training: student alone {med['alone']:.2f} s, KD cached {med['cached']:.2f} s "
          f"(+ {med['cached_build']:.2f} s building the cache once), KD live teacher {med['live']:.2f} s "
          f"({args.epochs} epochs, median of {args.repeats})")
    print(f"cached ÷ alone = {ratio_c:.3f} (goal ≤ 1.15); with the one-time cache build = {ratio_ct:.3f}; "
          f"live teacher ÷ alone = {ratio_l:.3f}")


if __name__ == "__main__":
    main()
