"""Bring your own teacher, small scale: (1) distillation throughput with the teacher live in PyTorch,
live in onnxruntime, or cached; (2) a student distilled from a torchvision resnet18 that sees
2× the student's resolution, against the same student alone.

    .venv/bin/python benchmarks/bench_teachers.py [--repeats 3] [--seeds 5] [--epochs 15]

Data: a generated 6-class RGB ImageFolder (stripes of two frequencies in two orientations, a blob,
a ring; noise and a random tint), 64 px on disk. The teacher is torchvision's resnet18 (standard
stem, random init) fine-tuned here at 64 px with ImageNet statistics and saved as a state_dict,
then also exported to ONNX. Medians over interleaved repeats; one torch thread. Writes
benchmarks/results/teachers.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ("blob", "ring", "h_coarse", "h_fine", "v_coarse", "v_fine")


def make_data(root: Path, *, n: int, size: int = 64, seed: int = 0) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            ph, (cy, cx) = rng.uniform(0, 6), rng.uniform(0.3, 0.7, 2)
            r2 = (yy - cy) ** 2 + (xx - cx) ** 2
            f = {"coarse": 4, "fine": 9}.get(name.split("_")[-1], 0) + rng.uniform(-0.5, 0.5)
            img = {"blob": np.exp(-r2 / 0.02) * 2 - 1, "ring": np.exp(-(np.sqrt(r2) - 0.22) ** 2 / 0.003) * 2 - 1,
                   "h": np.sin(2 * np.pi * f * yy + ph), "v": np.sin(2 * np.pi * f * xx + ph)}[name.split("_")[0]]
            img = np.clip(((img + rng.normal(0, 0.6, img.shape)) * 0.5 + 0.5) * 255, 0, 255)
            Image.fromarray((img[..., None] * rng.uniform(0.5, 1.0, 3)).astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def finetune(data: Path, out: Path, *, size: int, steps: int):
    import torch
    import torchvision
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(0)
    ds = datasets.ImageFolder(str(data), T.Compose([T.Resize((size, size)), T.ToTensor(),
                                                   T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))]))
    model = torchvision.models.resnet18(num_classes=len(ds.classes))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    step = 0
    while step < steps:
        for x, y in torch.utils.data.DataLoader(ds, batch_size=32, shuffle=True):
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if step == steps:
                break
    torch.save(model.state_dict(), out / "resnet18.pt")
    from edgekd.models import write_onnx

    write_onnx(model.eval(), str(out / "resnet18.onnx"), input_shape=(3, size, size), opset=17)


def throughput(data: Path, files: Path, *, epochs: int, repeats: int) -> dict:
    """Images/s of the distillation phase at 64 px, teacher at 64 px: live torch, live ONNX, cache."""
    from edgekd.deploy.targets import load_target
    from edgekd.train.config import DistillConfig, load_bundle
    from edgekd.train.datasets import Indexed
    from edgekd.train.distill import build_objective, make_student
    from edgekd.train.loop import Phase, fit
    from edgekd.train.teacher import check_teacher_paths, teacher_source

    base = DistillConfig(data=f"imagefolder:{data}", input_size=64, student="small-cnn-s", epochs=epochs,
                         progress=False, teacher_mean="imagenet", teacher_std="imagenet")
    kinds = {"torch_live": replace(base, teacher="torchvision:resnet18", cache_teacher=False,
                                   teacher_weight_files=(str(files / "resnet18.pt"),)),
             "onnx_live": replace(base, teacher=str(files / "resnet18.onnx"), cache_teacher=False),
             "cache": replace(base, teacher="torchvision:resnet18", teacher_weight_files=(str(files / "resnet18.pt"),))}
    bundle, target = load_bundle(base), load_target("cpu-arm")
    teachers = {k: [lt.model for lt in check_teacher_paths(c, bundle)] for k, c in kinds.items()}
    n = epochs * len(bundle.train)

    def once(kind: str) -> tuple[float, float]:
        cfg = kinds.get(kind, base)
        model = make_student(cfg, bundle, target, 0)
        if kind == "alone":
            ph = Phase("alone", model, build_objective(["ce"]), Indexed(bundle.train), bundle.val, epochs, 0)
            build = 0.0
        else:
            obj = build_objective(list(cfg.methods), temperature=cfg.temperature)
            t0 = time.perf_counter()
            src = teacher_source(cfg, bundle, teachers[kind], obj)
            build = time.perf_counter() - t0
            ph = Phase(kind, model, obj, Indexed(bundle.train), bundle.val, epochs, 0, source=src)
        t0 = time.perf_counter()
        fit(ph, progress=False)
        return build, time.perf_counter() - t0

    rows = []
    for _ in range(repeats):  # interleaved: machine drift hits every kind alike
        rows.append({k: once(k) for k in ("alone", "torch_live", "onnx_live", "cache")})
    med = {k: statistics.median(r[k][1] for r in rows) for k in rows[0]}
    build = statistics.median(r["cache"][0] for r in rows)
    return {"images": len(bundle.train), "epochs": epochs, "repeats": repeats, "seconds_median": med,
            "cache_build_seconds_median": build,
            "images_per_s": {k: n / v for k, v in med.items()},
            "images_per_s_cache_with_build": n / (med["cache"] + build),
            "per_repeat": [{k: list(v) for k, v in r.items()} for r in rows]}


def accuracy(data: Path, files: Path, *, epochs: int, seeds: int, run: Path, temperature: float) -> dict:
    """Student at 32 px alone vs distilled from resnet18 seeing the same images at 64 px."""
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import distill

    s = distill(DistillConfig(data=f"imagefolder:{data}", input_size=32, student="small-cnn-s", epochs=epochs,
                              seeds=seeds, teacher="torchvision:resnet18",
                              teacher_weight_files=(str(files / "resnet18.pt"),), teacher_input_size=64,
                              teacher_mean="imagenet", teacher_std="imagenet", run=run, progress=False,
                              temperature=temperature))
    return {"temperature": temperature, "teacher": s["accuracy"]["teacher"],
            "student_alone": s["accuracy"]["student_alone"], "student_distilled": s["accuracy"]["student"],
            "gap_closed": s["gap_closed"],
            "per_seed": [{k: r[k] for k in ("seed", "student_alone", "student")} for r in s["per_seed"]],
            "test_images": s["data"]["split"]["sizes"]["test"], "objective": s["objective"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--teacher-steps", type=int, default=150)
    ap.add_argument("--temperatures", default="4,1", help="KD temperatures to compare (4 is edgekd's default)")
    args = ap.parse_args()
    import torch

    sys.path.insert(0, str(ROOT))
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = make_data(tmp / "images", n=args.per_class)
        t0 = time.perf_counter()
        finetune(data, tmp, size=64, steps=args.teacher_steps)
        t_teacher = time.perf_counter() - t0
        thr = throughput(data, tmp, epochs=3, repeats=args.repeats)
        acc = [accuracy(data, tmp, epochs=args.epochs, seeds=args.seeds, run=tmp / f"run{t}", temperature=float(t))
               for t in args.temperatures.split(",")]
    result = {"scale": "small: generated 6-class ImageFolder, 64 px on disk, one torch thread, shared 2-core machine",
              "teacher": "torchvision resnet18, standard stem, random init, fine-tuned here",
              "teacher_finetune_seconds": t_teacher, "args": vars(args), "throughput": thr, "accuracy": acc}
    out = ROOT / "benchmarks" / "results" / "teachers.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    ips = thr["images_per_s"]
    print(f"distillation images/s at 64 px ({thr['images']} train images, {thr['epochs']} epochs, median of "
          f"{thr['repeats']}): student alone {ips['alone']:.0f}, teacher live PyTorch {ips['torch_live']:.0f}, "
          f"live ONNX {ips['onnx_live']:.0f}, cache {ips['cache']:.0f} "
          f"({thr['images_per_s_cache_with_build']:.0f} counting the one-time cache build)")
    for a in acc:
        print(f"student small-cnn-s at 32 px, teacher resnet18 at 64 px, T={a['temperature']:g} "
              f"({a['test_images']} test images, {args.seeds} seeds): teacher {a['teacher']:.3f}; "
              f"alone {a['student_alone']['mean']:.3f} ± {a['student_alone']['std']:.3f}; "
              f"distilled {a['student_distilled']['mean']:.3f} ± {a['student_distilled']['std']:.3f}")


if __name__ == "__main__":
    main()
