"""What a partial stage costs under DDP (issue 18): the FitNets hint stage and feature-only losses
train the plain module and average the gradients that exist after backward (`average_grads`, one
all-reduce per dtype), because DDP cannot run them. Here both ways run the very same full CE step
of the digits student on 2 gloo ranks, interleaved, so the only difference is how gradients are
averaged: DDP's bucketed all-reduce overlapped with backward, or ours after backward.

    .venv/bin/python -m torch.distributed.run --standalone --nproc-per-node 2 benchmarks/bench_ddp_partial.py \\
        [--steps 60] [--repeats 5]

Also times the one-batch check (`loop._leaves_params_unused`) that picks the way per stage.
Rank 0 prints and writes benchmarks/results/ddp_partial.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from edgekd.data import load_data
from edgekd.models import create_student
from edgekd.train import distributed as dist
from edgekd.train.datasets import Indexed, batches
from edgekd.train.features import FeatureTap
from edgekd.train.loop import Phase, _leaves_params_unused
from edgekd.train.losses import build_objective

ROOT = Path(__file__).resolve().parent.parent


def steps_ms(net, model, data, opt, *, partial: bool) -> float:
    t0 = time.perf_counter()
    for x, y, _ in data:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
        if partial:
            dist.average_grads(list(model.parameters()))
        opt.step()
    return (time.perf_counter() - t0) * 1000 / len(data)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    dist.init_from_env("cpu")
    torch.set_num_threads(1)
    bundle = load_data("digits")
    torch.manual_seed(0)
    model = create_student("small-cnn", in_channels=1, num_classes=10)
    ddp = dist.wrap(model)  # also swaps in global-batch BatchNorm, as fit does
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    data = []
    epoch = 0
    while len(data) < args.steps:
        data += list(batches(Indexed(bundle.train), batch_size=64, shuffle=True, seed=0, epoch=epoch))
        epoch += 1
    data = data[: args.steps]
    steps_ms(ddp, model, data[:5], opt, partial=False)  # warm-up
    times: dict[str, list[float]] = {"ddp": [], "average_grads": []}
    for _ in range(args.repeats):
        times["ddp"].append(steps_ms(ddp, model, data, opt, partial=False))
        times["average_grads"].append(steps_ms(model, model, data, opt, partial=True))
    obj = build_objective(["at"])
    ph = Phase("kd", model, obj, Indexed(bundle.train), None, 1, 0, batch_size=64)
    from edgekd.train.teacher import resolve_taps

    ph.student_taps = resolve_taps(model, obj)
    with FeatureTap(model, ph.student_taps) as tap:
        t0 = time.perf_counter()
        unused = _leaves_params_unused(ph, build_objective(["ce"]), tap)
        check_ms = (time.perf_counter() - t0) * 1000
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"ms_per_step": med, "ratio_average_grads_over_ddp": med["average_grads"] / med["ddp"],
           "check_ms": check_ms, "check_says_ce_leaves_params_unused": unused, "steps": args.steps,
           "repeats": args.repeats, "world_size": dist.world_size(), "raw": times}
    if dist.is_main():
        print(json.dumps({k: v for k, v in out.items() if k != "raw"}, indent=1))
        (ROOT / "benchmarks" / "results").mkdir(exist_ok=True)
        (ROOT / "benchmarks" / "results" / "ddp_partial.json").write_text(json.dumps(out, indent=1))
    dist.shutdown()


if __name__ == "__main__":
    main()
