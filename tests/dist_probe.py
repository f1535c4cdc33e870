"""One distillation step through edgekd's own loop pieces; rank 0 saves the student's gradients.

Run as `python tests/dist_probe.py OUT.pt` (one process) or under
`torchrun --standalone --nproc-per-node 2 tests/dist_probe.py OUT.pt`.
"""

import sys

import torch

from edgekd.data import load_data
from edgekd.deploy.targets import load_target
from edgekd.models import create_teacher
from edgekd.train import distributed as dist
from edgekd.train.config import DistillConfig
from edgekd.train.datasets import Indexed, loader
from edgekd.train.distill import make_student
from edgekd.train.losses import KDBatch, build_objective
from edgekd.train.source import TeacherSource

dist.init_from_env()
torch.set_num_threads(1)
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
if dist.is_main():
    torch.save({n: p.grad.clone() for n, p in student.named_parameters()}, sys.argv[1])
dist.shutdown()
