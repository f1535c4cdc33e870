"""Defaults that travel (issue 10): the README's distill command with no tuning flags, on data it
was never tuned on, with all labels and with scarce labels.

    .venv/bin/python benchmarks/bench_travel.py                  # all three, 3 seeds: ~20 min on 2 idle cores
    .venv/bin/python benchmarks/bench_travel.py --datasets rgb16 --seeds 3

Datasets (each built here, deterministically, from data on this machine; nothing downloads):
- digits:      the embedded default (scikit-learn's 8×8 digits);
- rgb16:       the same digits re-encoded as an ImageFolder of 16×16 RGB PNGs: bilinear upsampling,
               a random shift of up to 2 px, a random light foreground on a random dark background;
- fashion-png: real Fashion-MNIST from Debian's IDX files written out as 28×28 PNGs, train/ and
               test/ folders: a stratified subset of 600 train and 100 test images per class (the
               whole set is bench_fashion.py's job; this one tests the ImageFolder path).
Per dataset the teacher is trained once (all labels) and reused for the scarce-label run, as
bench_fashion.py does. Writes benchmarks/results/travel.json after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "travel.json"
SCARCE = {"digits": 0.1, "rgb16": 0.1, "fashion-png": 0.1}


def write_rgb16(root: Path, *, size: int = 16, shift: int = 2, seed: int = 0) -> Path:
    from PIL import Image
    from sklearn.datasets import load_digits

    d, rng = load_digits(), np.random.default_rng(seed)
    for i, (img, y) in enumerate(zip(d.images, d.target)):
        a = np.asarray(Image.fromarray((img / 16 * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR),
                       dtype=np.float32) / 255
        dy, dx = rng.integers(-shift, shift + 1, 2)
        a = np.roll(np.roll(a, dy, 0), dx, 1)[..., None]
        rgb = a * rng.uniform(0.5, 1.0, 3) + (1 - a) * rng.uniform(0.0, 0.3, 3)
        (root / str(y)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((rgb * 255).astype(np.uint8)).save(root / str(y) / f"{i:04d}.png")
    return root


def write_fashion_png(root: Path, *, train_per_class: int = 600, test_per_class: int = 100, seed: int = 0) -> Path:
    from PIL import Image

    from edgekd.data import load_data

    b = load_data("fashion-mnist")
    rng = np.random.default_rng(seed)
    for split, ds, per in (("train", b.train, train_per_class), ("test", b.test, test_per_class)):
        pixels, labels = ds.pixels.numpy(), ds.all_labels.numpy()
        for c, name in enumerate(b.labels):
            rows = ds.indices[labels[ds.indices] == c]
            folder = root / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for k, r in enumerate(rng.choice(rows, per, replace=False)):
                Image.fromarray(pixels[r, 0]).save(folder / f"{k:04d}.png")
    return root


def dataset(name: str, data_root: Path) -> str:
    if name == "digits":
        return "digits"
    folder = data_root / name
    if not folder.exists():
        (write_rgb16 if name == "rgb16" else write_fashion_png)(folder)
    return f"imagefolder:{folder}"


def run_one(data: str, fraction: float, seeds: int, run: Path, teacher: str | None) -> dict:
    from edgekd import api

    shutil.rmtree(run, ignore_errors=True)   # this script's own scratch folder: a rerun starts clean
    t0 = time.perf_counter()
    r = api.distill(data=data, labeled_fraction=fraction, seeds=seeds, run=run, teacher=teacher, progress=False).data
    acc = r["accuracy"]
    return {"labeled_fraction": fraction, "teacher": r["teacher"]["arch"], "student": r["student"]["arch"],
            "input_shape": r["data"]["input_shape"], "epochs": r["epochs"], "seeds": r["seeds"],
            "teacher_accuracy": acc["teacher"], "student_alone": acc["student_alone"],
            "student_distilled": acc["student"], "gap_closed": r["gap_closed"], "verdict": r["verdict"]["distillation"],
            "recommended": r["verdict"]["recommended_student"], "seconds": time.perf_counter() - t0, "run": str(run)}


def line(name: str, r: dict) -> str:
    a, d = r["student_alone"], r["student_distilled"]
    gap = "—" if r["gap_closed"] is None else f"{100 * r['gap_closed']:+.0f}%"
    return (f"{name:12s} labels {100 * r['labeled_fraction']:>4g}%  "
            f"teacher {r['teacher']} {100 * r['teacher_accuracy']:.2f}%  "
            f"{r['student']} alone {100 * a['mean']:.2f} ± {100 * a['std']:.2f}%  "
            f"distilled {100 * d['mean']:.2f} ± {100 * d['std']:.2f}%  gap closed {gap}  {r['verdict']}  "
            f"({r['seconds'] / 60:.1f} min)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=list(SCARCE), choices=list(SCARCE))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--root", type=Path, default=ROOT / "artifacts" / "bench_travel")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    result = json.loads(OUT.read_text()) if OUT.exists() else {}
    result["command"] = "benchmarks/bench_travel.py " + " ".join(os.sys.argv[1:])
    for name in args.datasets:
        data = dataset(name, args.root / "data")
        rows = []
        for fraction in (1.0, SCARCE[name]):
            teacher = None if not rows else str(Path(rows[0]["run"]) / "teacher.pt")
            rows.append(run_one(data, fraction, args.seeds, args.root / f"{name}-lf{fraction:g}", teacher))
            print(line(name, rows[-1]), flush=True)
            result[name] = rows
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
