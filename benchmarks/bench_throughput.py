"""Training throughput (issue 10): edgekd's loop against a plain PyTorch loop over the same in-memory
tensors, and as a share of the machine's compute limit.

For the default teacher and student on Fashion-MNIST-shaped data (1×28×28; the real training images
when /usr/share/datasets/fashion-mnist exists, else random pixels), interleaved per repeat:
- `plain`: a textbook loop (randperm, index the tensors, AdamW, CE), eager, NCHW;
- `edgekd`: `edgekd.train.loop.fit` on the same tensors (uint8 held, normalised per batch, as
  edgekd.data holds small datasets), no validation, no checkpoint;
- variants of the plain loop: channels_last, bf16 autocast, torch.compile (with --compile).
Each figure is images/s over one pass of N images; the tables report medians over repeats.
The share of the machine's limit is training FLOPs/image × images/s ÷ SGEMM FLOP/s, SGEMM measured in
the same run at the same thread count; training FLOPs ≈ 3 × forward MACs × 2.

    python benchmarks/bench_throughput.py --repeats 5 --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
FASHION_LABELS = Path("/usr/share/datasets/fashion-mnist/train-labels-idx1-ubyte.gz")


def fashion_like(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """n uint8 1×28×28 images and labels: real Fashion-MNIST when installed, random otherwise."""
    if FASHION.is_file() and FASHION_LABELS.is_file():
        with gzip.open(FASHION) as f:
            raw = np.frombuffer(f.read(), dtype=np.uint8, offset=16).reshape(-1, 1, 28, 28)
        with gzip.open(FASHION_LABELS) as f:
            labels = np.frombuffer(f.read(), dtype=np.uint8, offset=8)
        return torch.from_numpy(raw[:n].copy()), torch.from_numpy(labels[:n].astype(np.int64)), str(FASHION.parent)
    g = torch.Generator().manual_seed(0)
    return (torch.randint(0, 256, (n, 1, 28, 28), generator=g, dtype=torch.uint8),
            torch.randint(0, 10, (n,), generator=g), "random")


class Uint8Set(torch.utils.data.Dataset):
    """uint8 pixels normalised per batch (`batch(indices)`), as edgekd.data holds small datasets."""

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean: float, std: float):
        self.pixels, self.labels, self.mean, self.std = pixels, labels, mean, std

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return (self.pixels[i].float() / 255 - self.mean) / self.std, int(self.labels[i])

    def batch(self, idx: torch.Tensor):
        return (self.pixels[idx].float() / 255 - self.mean) / self.std, self.labels[idx]


def sgemm_flops(size: int = 1024, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t0)
    return 2 * size**3 / statistics.median(times)


def plain(model: nn.Module, ds: Uint8Set, batch: int, *, channels_last=False, bf16=False, step_fn=None) -> float:
    """One pass over ds with a textbook loop; images/s."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    order = torch.randperm(len(ds))
    t0 = time.perf_counter()
    for chunk in order.split(batch):
        x, y = ds.batch(chunk)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy((step_fn or model)(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return len(ds) / (time.perf_counter() - t0)


def edgekd_loop(model: nn.Module, ds: Uint8Set, batch: int, *, channels_last=False) -> float:
    from edgekd.train.datasets import Indexed
    from edgekd.train.loop import Phase, TrainOptions, fit
    from edgekd.train.losses import build_objective

    ph = Phase("bench", model, build_objective(["ce"]), Indexed(ds), None, epochs=1, seed=0, batch_size=batch,
               options=TrainOptions(channels_last=channels_last))
    t0 = time.perf_counter()
    fit(ph, progress=False)
    return len(ds) / (time.perf_counter() - t0)


def measure(name: str, build, ds: Uint8Set, batch: int, repeats: int, variants: list[str]) -> dict:
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for r in range(repeats + 1):  # repeat 0 warms caches and allocators; not counted
        for v in variants:  # interleaved: contention hits every variant alike
            torch.manual_seed(r)
            model = build()
            if v == "plain":
                rate = plain(model, ds, batch)
            elif v == "edgekd":
                rate = edgekd_loop(model, ds, batch)
            elif v == "edgekd+channels_last":
                rate = edgekd_loop(model, ds, batch, channels_last=True)
            elif v == "plain+channels_last":
                rate = plain(model, ds, batch, channels_last=True)
            elif v == "plain+bf16":
                rate = plain(model, ds, batch, bf16=True)
            elif v == "plain+compile":
                compiled = torch.compile(model)
                plain(compiled, Uint8Set(ds.pixels[:batch * 2], ds.labels[:batch * 2], ds.mean, ds.std), batch)
                rate = plain(compiled, ds, batch)
            if r > 0:
                rates[v].append(rate)
        print(f"  {name} repeat {r}: " + ", ".join(f"{v} {rates[v][-1]:.0f}" for v in variants if r > 0 and rates[v]),
              flush=True)
    return {v: statistics.median(x) for v, x in rates.items()}


def main() -> None:
    from edgekd import defaults
    from edgekd.models import create_student, create_teacher, forward_macs

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=defaults.BATCH_SIZE)
    fashion = defaults.recipe(n_train=54_000, input_shape=(1, 28, 28), num_classes=10)  # what distill picks there
    p.add_argument("--teacher", default=fashion["teacher"])
    p.add_argument("--student", default=fashion["student"])
    p.add_argument("--teacher-images", type=int, default=1024)
    p.add_argument("--student-images", type=int, default=8192)
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile)")
    p.add_argument("--no-bf16", action="store_true", help="skip the bf16 autocast variant")
    p.add_argument("--only", choices=("teacher", "student"), help="measure one model only")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "throughput.json")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    pixels, labels, source = fashion_like(max(args.teacher_images, args.student_images))
    mean, std = float(pixels.float().mean() / 255), float(pixels.float().std() / 255)
    variants = ["plain", "edgekd", "edgekd+channels_last", "plain+channels_last"]
    variants += ([] if args.no_bf16 else ["plain+bf16"]) + (["plain+compile"] if args.compile else [])
    result = {"data": source, "threads": args.threads, "batch": args.batch, "repeats": args.repeats,
              "torch": torch.__version__, "models": {}}
    flops = sgemm_flops()
    for role, name, n in (("teacher", args.teacher, args.teacher_images),
                          ("student", args.student, args.student_images)):
        if args.only not in (None, role):
            continue
        def build(name=name, role=role):
            make = create_teacher if role == "teacher" else create_student
            return make(name, in_channels=1, num_classes=10)
        ds = Uint8Set(pixels[:n], labels[:n], mean, std)
        med = measure(role, build, ds, args.batch, args.repeats, variants)
        train_flops = 3 * forward_macs(build(), (1, 28, 28)) * 2
        result["models"][role] = {
            "name": name, "images": n, "images_per_s": med, "train_flops_per_image": train_flops,
            "edgekd_over_plain": med["edgekd"] / med["plain"],
            "channels_last_speedup_edgekd": med["edgekd+channels_last"] / med["edgekd"],
            "channels_last_speedup_plain": med["plain+channels_last"] / med["plain"],
            **({"bf16_speedup_plain": med["plain+bf16"] / med["plain"]} if "plain+bf16" in med else {}),
            **({"compile_speedup_plain": med["plain+compile"] / med["plain"]} if args.compile else {}),
            "share_of_sgemm_peak": {v: train_flops * r / flops for v, r in med.items()},
        }
    result["sgemm_gflops"] = flops / 1e9
    result["sgemm_gflops_after"] = sgemm_flops() / 1e9  # measured again: the machine is shared
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for role, m in result["models"].items():
        print(f"{role} {m['name']}: plain {m['images_per_s']['plain']:.0f} img/s, "
              f"edgekd {m['images_per_s']['edgekd']:.0f} img/s, ratio {m['edgekd_over_plain']:.2f}; "
              f"channels_last ×{m['channels_last_speedup_edgekd']:.2f} (edgekd) "
              f"×{m['channels_last_speedup_plain']:.2f} (plain)"
              + (f"; bf16 ×{m['bf16_speedup_plain']:.2f}" if "bf16_speedup_plain" in m else "")
              + (f"; compile ×{m['compile_speedup_plain']:.2f}" if args.compile else "")
              + f"; {m['train_flops_per_image'] / 1e6:.1f} MFLOP/img, edgekd at "
              f"{100 * m['share_of_sgemm_peak']['edgekd']:.1f}% of SGEMM ({flops / 1e9:.1f} GFLOP/s)")
    print(f"written {args.out}")


if __name__ == "__main__":
    main()
