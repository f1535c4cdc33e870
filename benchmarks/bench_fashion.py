"""The default pipeline on real Fashion-MNIST, end to end, beside Zalando's published table.

    .venv/bin/python benchmarks/bench_fashion.py                       # the full run: 3 seeds, the defaults
    .venv/bin/python benchmarks/bench_fashion.py --seeds 1 --epochs 2  # what fits a busy machine (label it)
    .venv/bin/python benchmarks/bench_fashion.py --step-ratio --threads 1   # teachers' training-step cost only

Reads Debian's /usr/share/datasets/fashion-mnist (or --data-dir). Everything edgekd chooses by
default for this data (teacher, student, epochs, temperature, losses: `defaults.recipe`) is
used unless overridden here. Steps, each timed:
1. the default teacher, trained once on all labels (edgekd's `obtain_teachers`, as distill does);
2. `distill` with all labels, then with 1% of them (--fractions), both from that teacher.pt;
   each: the student alone vs distilled, mean ± std over seeds, gap closed, the verdict;
3. after the all-labels distill: `export` + `bench` of its student for cpu-x86 (local) and for
   cpu-arm under qemu (answers only: emulated timings are not ARM timings). Steps 1, 2 (all
   labels) and 3 are the default pipeline, and its wall time is reported on its own.
Writes benchmarks/results/fashion.json after every step (a cut-short run keeps what it measured).

--step-ratio measures only training-step time of each default model against the old default
teacher `cnn`, interleaved on the same real batches (medians over rounds; the ratio survives a
busy machine where absolute images/s does not), with the MFLOPs each model costs; it writes
benchmarks/results/fashion_step_ratio.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "fashion.json"

# Zalando's README (github.com/zalandoresearch/fashion-mnist, "Benchmark"), test accuracy.
# None = what edgekd chooses for the data (defaults.recipe), as the CLI does for options left out.
FROM_DATA = dict(teacher=None, student=None, methods=None, temperature=None)
ZALANDO = [("2 conv layers, < 100k params", 0.925), ("2 conv + pooling + BN", 0.934),
           ("MobileNet", 0.950), ("ResNet18", 0.949), ("WRN-40-4", 0.967)]


def _write(result: dict) -> None:
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    os.replace(tmp, OUT)


def _teacher(args, bundle, run: Path) -> dict:
    from edgekd.models import model_cost
    from edgekd.train.config import DistillConfig
    from edgekd.train.datasets import accuracy
    from edgekd.train.teacher import obtain_teachers

    cfg = DistillConfig(data="fashion-mnist", data_dir=args.data_dir, **FROM_DATA, epochs=None,
                        teacher_epochs=args.teacher_epochs, progress=args.progress).for_data(bundle)
    t0 = time.perf_counter()
    (model, info), = obtain_teachers(cfg, bundle, run)
    seconds = time.perf_counter() - t0
    images = cfg.teacher_epochs * len(bundle.train)
    return {"arch": cfg.teacher, "epochs": cfg.teacher_epochs, **model_cost(model, bundle.input_shape),
            "test_accuracy": accuracy(model, bundle.test), "seconds": seconds,
            "train_images_per_s": images / seconds, "path": str(run / "teacher.pt"),
            "seconds_for_10_epochs_at_this_rate": 10 * len(bundle.train) / (images / seconds)}


def _distill(args, teacher_pt: str, fraction: float, run: Path) -> dict:
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import distill

    shutil.rmtree(run, ignore_errors=True)   # this script's own scratch folder: a rerun starts clean
    t0 = time.perf_counter()
    s = distill(DistillConfig(data="fashion-mnist", data_dir=args.data_dir, **{**FROM_DATA, "teacher": teacher_pt},
                              seeds=args.seeds, epochs=args.epochs, teacher_epochs=None, labeled_fraction=fraction,
                              run=run, progress=args.progress))
    acc = s["accuracy"]
    return {"labeled_fraction": fraction, "student": s["student"]["arch"], "params": s["student"]["params"],
            "epochs": s["epochs"], "seeds": s["seeds"], "temperature": s["temperature"], "methods": s["methods"],
            "teacher": acc["teacher"], "student_alone": acc["student_alone"], "student_distilled": acc["student"],
            "gap_closed": s["gap_closed"], "verdict": s["verdict"], "seconds": time.perf_counter() - t0,
            "run": str(run)}


def _deploy(run: Path) -> dict:
    """export + bench of the run's student: cpu-x86 on this machine, cpu-arm under qemu."""
    from edgekd import api

    out = {}
    for target, runner in (("cpu-x86", "local"), ("cpu-arm", "qemu")):
        t0 = time.perf_counter()
        e = api.export(target=target, run=run)
        b = api.bench(target=target, run=run, runner=runner)
        out[target] = {"runner": runner, "max_abs_diff": e.max_abs_diff, "top1_agreement": e.top1_agreement,
                       "onnx_accuracy": e.student_onnx_accuracy, "provider": b.provider,
                       "p50_ms": b.latency_p50_ms, "p90_ms": b.latency_p90_ms, "emulated": runner == "qemu",
                       "seconds": time.perf_counter() - t0}
    return out


def _print(result: dict) -> None:
    t = result.get("teacher")
    if t:
        print(f"teacher {t['arch']} ({t['params']:,} params, {t['mflops']:.0f} MFLOPs), {t['epochs']} epochs: "
              f"test {100 * t['test_accuracy']:.2f}%, {t['seconds'] / 60:.1f} min, "
              f"{t['train_images_per_s']:.0f} images/s")
    for r in result["runs"]:
        a, d = r["student_alone"], r["student_distilled"]
        gap = "—" if r["gap_closed"] is None else f"{100 * r['gap_closed']:.0f}%"
        print(f"labels {100 * r['labeled_fraction']:g}%: {r['student']} ({r['params']:,} params), "
              f"{r['epochs']} epochs, {r['seeds']} seeds: alone {100 * a['mean']:.2f} ± {100 * a['std']:.2f}%, "
              f"distilled {100 * d['mean']:.2f} ± {100 * d['std']:.2f}%, gap closed {gap}, "
              f"{r['verdict']['distillation']}, {r['seconds'] / 60:.1f} min")
    for target, d in result.get("deploy", {}).items():
        print(f"{target} ({d['runner']}{', emulated: answers only' if d['emulated'] else ''}): ONNX p50 "
              f"{d['p50_ms']:.3f} ms, max |diff| {d['max_abs_diff']:.1e}, "
              f"top-1 agreement {100 * d['top1_agreement']:.2f}%")
    if "pipeline_seconds" in result:
        print("default pipeline (teacher, distill with all labels, export + bench): "
              f"{result['pipeline_seconds'] / 60:.1f} min")
    if "wall_seconds" in result:
        print(f"wall time, end to end: {result['wall_seconds'] / 60:.1f} min")
    print("Zalando's table: " + "; ".join(f"{n} {100 * a:.1f}%" for n, a in ZALANDO))


def step_ratio(args, bundle) -> dict:
    """Interleaved training steps of resnet-s, cnn, wide-cnn and small-cnn on real batches."""
    import statistics

    import numpy as np
    import torch

    from edgekd.models import create_student, create_teacher, model_cost

    build = {"resnet-s": create_teacher, "cnn": create_teacher, "wide-cnn": create_student, "small-cnn": create_student}
    models, opts = {}, {}
    for name, make in build.items():
        torch.manual_seed(0)
        models[name] = make(name, in_channels=1, num_classes=10).train()
        opts[name] = torch.optim.AdamW(models[name].parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    steps = {"resnet-s": 2, "cnn": 2, "wide-cnn": 8, "small-cnn": 8}
    times: dict[str, list[float]] = {n: [] for n in models}
    for r in range(args.rounds + 1):
        for name, model in models.items():
            x, y = bundle.train.batch(rng.integers(0, len(bundle.train), 64))
            t0 = time.perf_counter()
            for _ in range(steps[name]):
                loss = torch.nn.functional.cross_entropy(model(x), y)
                opts[name].zero_grad()
                loss.backward()
                opts[name].step()
            if r:  # round 0 warms up
                times[name].append((time.perf_counter() - t0) / steps[name])
    cnn = statistics.median(times["cnn"])
    out = {"threads": args.threads, "rounds": args.rounds, "batch": 64, "models": {}}
    for name, t in times.items():
        out["models"][name] = {**model_cost(models[name], bundle.input_shape),
                               "images_per_s": 64 / statistics.median(t),
                               "step_time_vs_cnn": statistics.median(t) / cnn}
        print(f"{name}: {out['models'][name]['mflops']:.1f} MFLOPs, {64 / statistics.median(t):.0f} images/s here, "
              f"step time {statistics.median(t) / cnn:.3f}x cnn's", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", type=Path, default=None)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=None, help="student epochs (default: the data's rule)")
    ap.add_argument("--teacher-epochs", type=int, default=None, help="(default: the data's rule)")
    ap.add_argument("--teacher", default=None, help="reuse this teacher.pt instead of training one")
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.01], help="labeled fractions, in order")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=ROOT / "artifacts" / "bench_fashion")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-deploy", action="store_true", help="skip export + bench")
    ap.add_argument("--step-ratio", action="store_true", help="only the interleaved training-step ratio")
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    import torch

    from edgekd.data import load_data

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    bundle = load_data("fashion-mnist", data_dir=args.data_dir)
    if args.step_ratio:
        out = step_ratio(args, bundle)
        path = OUT.with_name("fashion_step_ratio.json")
        path.write_text(json.dumps({"command": "benchmarks/bench_fashion.py " + " ".join(os.sys.argv[1:]), **out},
                                   indent=2))
        return
    result: dict = {"command": "benchmarks/bench_fashion.py " + " ".join(os.sys.argv[1:]),
                    "threads": args.threads, "zalando": dict(ZALANDO), "data": bundle.describe()["split"], "runs": []}
    if args.teacher is None:
        result["teacher"] = _teacher(args, bundle, args.root / "teacher")
        _write(result)
        _print(result)
    teacher_pt = args.teacher or result["teacher"]["path"]
    for fraction in args.fractions:
        result["runs"].append(_distill(args, teacher_pt, fraction, args.root / f"lf{fraction:g}"))
        if fraction == 1.0 and not args.no_deploy:
            result["deploy"] = _deploy(args.root / "lf1")
            result["pipeline_seconds"] = time.perf_counter() - t0
        _write(result)
        _print(result)
    result["wall_seconds"] = time.perf_counter() - t0
    _write(result)
    _print(result)


if __name__ == "__main__":
    main()
