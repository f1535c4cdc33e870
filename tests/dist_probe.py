"""Probes of edgekd's distributed pieces, run as `python tests/dist_probe.py OUT.pt [MODE]` (one process)
or under `torchrun --standalone --nproc-per-node 2 tests/dist_probe.py OUT.pt [MODE]`; rank 0 saves.

- MODE `grads` (default): one distillation step through edgekd's own loop pieces; the student's gradients.
- MODE `shards`: for splits of odd and prime sizes, the teacher cache (`TeacherSource.build_cache`)
  and the accuracy (`datasets.accuracy`) as correct/total, to compare 2 ranks with 1 exactly.
"""

import sys

import torch

from edgekd.train import distributed as dist


def grads() -> dict:
    from edgekd.data import load_data
    from edgekd.deploy.targets import load_target
    from edgekd.models import create_teacher
    from edgekd.train.config import DistillConfig
    from edgekd.train.datasets import Indexed, loader
    from edgekd.train.distill import make_student
    from edgekd.train.losses import KDBatch, build_objective
    from edgekd.train.source import TeacherSource

    bundle, target = load_data("digits"), load_target("cpu-arm")
    torch.manual_seed(123)
    teacher = create_teacher("cnn-small", in_channels=1, num_classes=10).eval()
    source = TeacherSource([teacher]).build_cache(bundle.train)  # each rank builds its shard
    student = make_student(DistillConfig(), bundle, target, seed=0)
    net = dist.wrap(student)
    objective = build_objective(["soft:0.7", "ce:0.3"], temperature=4.0)
    x, y, idx = next(iter(loader(Indexed(bundle.train), batch_size=64, shuffle=True, seed=0, epoch=0)))
    t_logits, _ = source.outputs(x, idx)
    loss = objective(KDBatch(student_logits=net(x), labels=y, teacher_logits=t_logits))
    loss.backward()
    return {n: p.grad.clone() for n, p in student.named_parameters()}


SIZES = (1, 2, 3, 7, 13, 257)


def shards() -> dict:
    from torch import nn
    from torch.utils.data import TensorDataset

    from edgekd.train import datasets
    from edgekd.train.source import TeacherSource

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    out = {}
    for n in SIZES:
        g = torch.Generator().manual_seed(n)
        ds = TensorDataset(torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 5, (n,), generator=g))
        # batch 1: each row computed alone, as in one process, so the comparison can be exact
        cache = TeacherSource([teacher]).build_cache(ds, batch_size=1).cache["logits"]
        counted = []
        real_sum = dist.sum_across
        dist.sum_across = lambda *v: counted.append(real_sum(*v)) or counted[-1]  # the summed (correct, total)
        try:
            datasets.accuracy(teacher, ds)
        finally:
            dist.sum_across = real_sum
        out[n] = {"cache": cache, "correct_total": counted[0]}
    return out


if __name__ == "__main__":
    dist.init_from_env("cpu")
    torch.set_num_threads(1)
    result = shards() if sys.argv[2:] == ["shards"] else grads()
    if dist.is_main():
        torch.save(result, sys.argv[1])
    dist.shutdown()
