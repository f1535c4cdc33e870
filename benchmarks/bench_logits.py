"""Issue 22: the modern logit methods (DKD, DIST, TTM, logit standardisation) against Hinton's KD and
the student alone, through `edgekd compare` (teacher trained once, its logits cached once for all rows).

    .venv/bin/python benchmarks/bench_logits.py --data digits [--fractions 1 0.1] [--seeds 3] [--epochs N]
    .venv/bin/python benchmarks/bench_logits.py --data fashion-mnist --fractions 1 --seeds 1 --epochs 4
    .venv/bin/python benchmarks/bench_logits.py --data imagefolder:DIR --name rgb16   # bench_travel.write_rgb16(DIR)

Prints, per labeled fraction, each method's test accuracy as mean ± std (sample std over seeds) and
median, its gap closed ((method − alone) / (teacher − alone)), its difference to the student alone
against their combined spread √(sd² + sd_alone²), and wall time; writes
benchmarks/results/logits_{name}_{full|lfF}.json. Options left out follow the data (defaults.recipe).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def verdict(alone: dict, acc: dict) -> str:
    spread = (alone["std"] ** 2 + acc["std"] ** 2) ** 0.5
    delta = acc["mean"] - alone["mean"]
    word = "helped" if delta > spread else "LOST" if delta < -spread else "within spread"
    return f"{100 * delta:+.2f} pts vs spread {100 * spread:.2f}: {word}"


def report(result: dict) -> None:
    rows = result["rows"]
    teacher, alone = rows[0], rows[1]
    print(f"\n{result['data']}, labeled fraction {result['labeled_fraction']:g}: {result['student']} "
          f"from {result['teacher']}, {result['epochs']} epochs, {result['seeds']} seeds; "
          f"teacher {100 * teacher['accuracy']['mean']:.2f}%; teacher cache built {result['teacher_cache']['built']}x "
          f"({result['teacher_cache']['seconds']:.0f} s)")
    print(f"{'method':<24} {'mean ± std':>16} {'median':>8} {'gap closed':>11}  {'vs alone':<40} {'wall':>7}")
    for r in rows[1:]:
        a, seeds = r["accuracy"], r.get("per_seed") or [r["accuracy"]["mean"]]
        gap = "" if r.get("gap_closed") is None else f"{100 * r['gap_closed']:.0f}%"
        vs = "" if r is alone else verdict(alone["accuracy"], a)
        print(f"{r['method']:<24} {100 * a['mean']:>7.2f} ± {100 * a['std']:<5.2f}% "
              f"{100 * statistics.median(seeds):>7.2f}% {gap:>11}  {vs:<40} {r['seconds']:>6.0f}s", flush=True)


def main() -> None:
    from edgekd.train.advice import LOGIT

    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="digits")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--name", default=None, help="the results' file name part (default: from --data)")
    ap.add_argument("--teacher", default=None, help="a teacher file to reuse (default: train the data's teacher)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1])
    ap.add_argument("--method", action="append", default=None, help=f"compare rows (default: {' '.join(LOGIT)})")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    import torch

    import edgekd

    torch.set_num_threads(args.threads)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    for lf in args.fractions:
        tag = "full" if lf >= 1 else f"lf{lf:g}"
        with tempfile.TemporaryDirectory() as tmp:
            result = edgekd.compare(data=args.data, data_dir=args.data_dir, teacher=args.teacher, seeds=args.seeds,
                                    epochs=args.epochs, labeled_fraction=lf, methods=args.method or list(LOGIT),
                                    run=Path(tmp) / "run", progress=False).to_json()
        name = args.name or args.data.replace(":", "_").replace("/", "_")
        result["run"] = f"(temporary) benchmarks/results/logits_{name}_{tag}.json"
        (out / f"logits_{name}_{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
        report(result)


if __name__ == "__main__":
    sys.exit(main())
