"""Run folders for the report tests, in the shapes the real writers produce.

The numbers are generated (smooth curves, log-normal latencies), not copied from
a run; the shapes follow edgekd/train/distill.py (distill.json), the loop's
metrics.jsonl schema, deploy/export.py (manifest.json), bench/run.py (bench.json
with `latency_raw`), train/compare.py, search/student.py and search/teacher.py.
"""

from __future__ import annotations

import base64
import json
import math
import zlib
from pathlib import Path

import numpy as np

TEACHER_ACC = 0.9861
ALONE = [0.9611, 0.9583]
KD = [0.9750, 0.9778]
LABELS = [str(i) for i in range(10)]
PREPROCESSING = {"size": [8, 8], "resize": "none", "scale": 1.0 / 16, "mean": [0.0], "std": [1.0]}


def encode_raw(ms: np.ndarray) -> dict:
    data = base64.b64encode(zlib.compress(np.asarray(ms, dtype="<f4").tobytes())).decode()
    return {"encoding": "float32-zlib-base64", "unit": "ms", "n": len(ms), "data": data}


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=1))


def config(run: Path, *, epochs: int = 6, seeds: int = 2) -> dict:
    """config.json as distill writes it: every DistillConfig option, through the typed writer."""
    from dataclasses import asdict

    from edgekd.run.config import write_config
    from edgekd.train.config import DistillConfig

    cfg = DistillConfig(data="digits", teacher="cnn", student="small-cnn", target="cpu-arm",
                        methods=("soft:0.7", "ce:0.3"), temperature=4.0, epochs=epochs, teacher_epochs=4,
                        seeds=seeds, lr=0.003, batch_size=64, labeled_fraction=1.0, run=run)
    info = {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8],
            "split": {"method": "stratified", "seed": 0, "fractions": [0.6, 0.2, 0.2],
                      "sizes": {"train": 1077, "val": 360, "test": 360}}}
    run.mkdir(parents=True, exist_ok=True)
    return write_config(run / "config.json", asdict(cfg), info).to_json()


def metrics_lines(*, epochs: int = 6, seeds: int = 2, teacher_epochs: int = 4) -> list[dict]:
    rows, t = [], 1764433000.0
    phases = [("teacher", teacher_epochs, ["ce"])] + [
        (f"{kind}/seed{s}", epochs, terms) for s in range(seeds)
        for kind, terms in (("alone", ["ce"]), ("kd", ["soft", "ce"]))]
    for k, (phase, n, terms) in enumerate(phases):
        for e in range(1, n + 1):
            decay = math.exp(-0.5 * e) + 0.02 * (k + 1)
            parts = {name: round((0.7 if name == "soft" else 0.9) * decay * (1 + 0.1 * j), 6)
                     for j, name in enumerate(terms)}
            t += 1.3
            rows.append({"phase": phase, "stage": "main", "epoch": e, "epochs": n, "loss": sum(parts.values()),
                         "terms": parts, "val_acc": round(0.99 - 0.6 * math.exp(-0.8 * e) - 0.003 * k, 6),
                         "lr": 0.003 * (1 + math.cos(math.pi * e / n)) / 2, "seconds": 1.3,
                         "images_per_s": 4200.0, "time": t})
    return rows


def write_metrics(run: Path, rows: list[dict], *, torn_tail: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in rows)
    if torn_tail:  # a line being written as the report reads it
        text += '{"phase": "kd/seed1", "stage": "ma'
    (run / "metrics.jsonl").write_text(text)


def distill(run: Path, *, epochs: int = 6, seeds: int = 2, provenance: bool = True) -> dict:
    alone, kd = ALONE[:seeds], KD[:seeds]

    def ms(xs):
        a = np.asarray(xs)
        return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}

    d = {"data": {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8], "labels": LABELS,
                  "preprocessing": PREPROCESSING,
                  "split": {"method": "stratified", "seed": 0, "fractions": [0.6, 0.2, 0.2],
                            "sizes": {"train": 1077, "val": 360, "test": 360}}},
         "target": "cpu-arm", "methods": ["soft:0.7", "ce:0.3"], "objective": "0.7·soft + 0.3·ce",
         "temperature": 4.0, "epochs": epochs, "seeds": seeds, "labeled_fraction": 1.0,
         "teacher": {"source": "trained", "arch": "cnn", "epochs": 4, "params": 2220682, "accuracy": TEACHER_ACC,
                     "all": [{"source": "trained", "arch": "cnn", "epochs": 4, "params": 2220682}]},
         "student": {"arch": "small-cnn", "params": 7514, "ops": ["Conv", "Flatten", "Gemm"], "ops_notes": [],
                     "chosen_seed": 1},
         "accuracy": {"teacher": TEACHER_ACC, "student_alone": ms(alone), "student": ms(kd)},
         "gap_closed": (np.mean(kd) - np.mean(alone)) / (TEACHER_ACC - np.mean(alone)),
         "per_seed": [{"seed": s, "student_alone": a, "student": k} for s, (a, k) in enumerate(zip(alone, kd))],
         "wall_seconds": 42.0}
    d["training"] = {"device": "cpu", "precision": "fp32", "channels_last": False, "batch_size": 64, "lr_base": 0.003,
                     "lr": 0.003, "base_batch": 64, "lr_schedule": "cosine", "warmup_epochs": 0, "world_size": 1,
                     "backend": None}
    if provenance:
        d["provenance"] = {"edgekd": "0.1.0", "torch": "2.14.1", "torchvision": "0.29.1", "onnxruntime": "1.32.0",
                           "python": "3.11.7", "platform": "Linux-x86_64", "device": "cpu", "world_size": 1,
                           "backend": None}
    _write(run / "distill.json", d)
    return d


def manifest(run: Path, target: str = "cpu-arm", *, int8: bool = True, partition: bool = True) -> dict:
    m = {"edgekd_version": "0.1.0", "target": target,
         "target_profile": {"name": target, "budget": {"latency_p90_ms": 5.0, "peak_memory_mb": 256.0,
                                                       "model_size_mb": 2.0}},
         "model": {"path": "model.onnx", "sha256": "0" * 64, "bytes": 31942, "opset": 17, "params": 7514,
                   "inputs": [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
                   "outputs": [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}],
                   "preprocessing": PREPROCESSING, "labels": LABELS},
         "ops": {"used": ["Conv", "Flatten", "Gemm"], "unsupported": [], "coverage": 1.0, "graph": "optimized",
                 "notes": [], "partition": {"ran": True, "built": True, "provider": "CPUExecutionProvider",
                                            "nodes": {"CPUExecutionProvider": 5},
                                            "share": {"CPUExecutionProvider": 1.0},
                                            "fell_back_ops": [], "passed": True,
                                            "summary": "CPUExecutionProvider 5 nodes"}},
         "parity": {"n": 360, "max_abs_diff": 9.5e-07, "max_rel_diff": 4.8e-04, "top1_agreement": 1.0, "passed": True},
         "accuracy": {"teacher": TEACHER_ACC, "student_alone": ALONE[1], "student": KD[1], "student_onnx": KD[1],
                      "n_test": 360},
         "recommended": "fp32", "checks": {"passed": True, "failures": []}, "deployable": True}
    if not partition:  # made before export recorded ONNX Runtime's own partition
        del m["ops"]["partition"]
    if int8:
        m["variants"] = {"int8": {"path": "model.int8.onnx", "sha256": "1" * 64, "bytes": 18741, "accuracy": 0.9722,
                                  "parity": {"n": 360, "max_abs_diff": 0.05, "max_rel_diff": 0.4,
                                             "top1_agreement": 0.9944, "passed": True}}}
    _write(run / target / "manifest.json", m)
    (run / target / "teacher.onnx").write_bytes(b"\0" * 8_900_000)
    return m


def _entry(rng, median_ms: float, *, raw: bool, batches=(1, 8, 32)) -> dict:
    ms = rng.lognormal(math.log(median_ms), 0.25, size=2000)
    pct = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}
    e = {"provider": "CPUExecutionProvider", "provider_requested": "XnnpackExecutionProvider", "threads": 2,
         "threads_requested": 4, "latency_ms": {**pct, "mean": float(ms.mean()), "n": len(ms)},
         "init_ms": 15.0, "first_run_ms": 0.7, "peak_rss_mb": 62.1,
         "throughput": {str(b): 1000.0 / median_ms * b ** 0.6 for b in batches},
         "golden": {"n": 128, "max_abs_diff": 6e-7, "max_rel_diff": 6e-5, "top1_agreement": 1.0, "passed": True}}
    if raw:
        e["latency_raw"] = encode_raw(ms)
    return e


def bench(run: Path, target: str = "cpu-arm", *, raw: bool = True, int8: bool = True, profile: bool = True,
          seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    fp32 = _entry(rng, 0.045, raw=raw)
    q = _entry(rng, 0.034, raw=raw) if int8 else None
    teacher_entry = _entry(rng, 0.69, raw=raw)
    teacher = teacher_entry["latency_ms"]
    if profile:  # the agent's summarize_profile shape
        fp32["profile"] = {"CPUExecutionProvider": {"total_ms": 20.4, "runs": 100, "ops": [
            {"op": "Conv", "total_ms": 12.5, "share": 0.61, "calls": 200, "mean_us": 62.5},
            {"op": "Gemm", "total_ms": 5.1, "share": 0.25, "calls": 100, "mean_us": 51.0}]}}
    checks = [{"name": "latency_p90_ms", "value": fp32["latency_ms"]["p90"], "limit": 5.0, "passed": True},
              {"name": "peak_memory_mb", "value": 62.1, "limit": 256.0, "passed": True},
              {"name": "model_size_mb", "value": 31942 / 2**20, "limit": 2.0, "passed": True}]
    b = {"runner": "local", "target": target, "fp32": fp32, "int8": q, "recommended": "fp32", "notes": [],
         "budget": {"passed": True, "checks": checks},
         "host": {"model": "Example CPU @ 2.0GHz", "machine": "x86_64", "logical_cpus": 2, "python_bits": 64,
                  "flags": {"avx2": True, "avx512f": True, "avx512_vnni": False, "avx512_bf16": False, "amx": False,
                            "neon": False}},
         "comparison": {"threads": 2, "teacher_onnx_ms": teacher, "student_onnx_ms": fp32["latency_ms"],
                        "student_eager_ms": {"p50": 0.41, "p90": 0.55, "p99": 1.6, "mean": 0.7, "n": 1415},
                        "teacher_onnx_raw": teacher_entry.get("latency_raw"),
                        "teacher_over_student": teacher["p50"] / fp32["latency_ms"]["p50"],
                        "onnx_over_eager": 0.11, "accuracy_points_lost": 1.1}}
    _write(run / target / "bench.json", b)
    return b


def compare_json(run: Path) -> dict:
    rows = [{"method": "teacher", "params": 2220682, "accuracy": {"mean": TEACHER_ACC, "std": 0.0, "n": 1}},
            {"method": "student alone", "params": 7514, "accuracy": {"mean": 0.96, "std": 0.004, "n": 2}}]
    for i, m in enumerate(("soft", "hard", "cosine", "fitnet", "fitnet+hint", "at", "rkd", "born-again", "dml")):
        acc = 0.962 + 0.004 * i
        rows.append({"method": m, "objective": f"{m} objective", "params": 7514,
                     "accuracy": {"mean": acc, "std": 0.003, "n": 2}, "gap_closed": (acc - 0.96) / (TEACHER_ACC - 0.96),
                     "beats_alone_beyond_std": i == 8, "per_seed": [acc - 0.002, acc + 0.002]})
    c = {"data": "digits", "target": "cpu-arm", "student": "small-cnn", "teacher": ["cnn"], "epochs": 6, "seeds": 2,
         "labeled_fraction": 1.0, "rows": rows}
    _write(run / "compare.json", c)
    return c


def select_student_json(run: Path) -> dict:
    cands = []
    for i in range(8):
        c = {"id": i, "name": f"cand{i}", "status": "trained" if i < 6 else "over budget",
             "cost": {"params": 2000 * (i + 1), "macs": 40000 * (i + 1)},
             "measured": {"latency_p90_ms": 0.03 + 0.02 * i, "model_bytes": 9000 * (i + 1)}}
        if i < 6:
            c.update(val_accuracy=0.9 + 0.012 * i - 0.004 * (i % 2), test_accuracy=0.9 + 0.011 * i)
        cands.append(c)
    s = {"target": "cpu-arm", "data": "digits", "runner": "local", "candidates": cands,
         "pareto": {"latency": [0, 2, 4, 5], "latency_size": [0, 2, 4, 5]}, "recommended": {"id": 5}}
    _write(run / "select_student.json", s)
    return s


def select_teacher_json(run: Path) -> dict:
    t = {"student": "small-cnn", "data": "digits", "score": "GRACE", "higher_is_better": False, "best": "cnn",
         "teachers": [{"teacher": "cnn", "params": 2220682, "val_accuracy": 0.986, "agreement_at_init": 0.1,
                       "grace": {"score": 12.5, "std": 0.4}},
                      {"teacher": "resnet18", "params": 11170000, "val_accuracy": 0.99, "agreement_at_init": 0.09,
                       "grace": {"score": 14.1, "std": 0.6}}]}
    _write(run / "teacher_selection.json", t)
    return t


def full_run(run: Path, *, seed: int = 0, seeds: int = 2) -> Path:
    """Every part a report can show."""
    config(run, seeds=seeds)
    write_metrics(run, metrics_lines(seeds=seeds))
    distill(run, seeds=seeds)
    manifest(run)
    bench(run, seed=seed)
    compare_json(run)
    select_student_json(run)
    select_teacher_json(run)
    return run
