"""One deep-mutual-learning step through edgekd's one loop (`fit` with peers); every rank saves
its peers' weights. Run as `python tests/dml_probe.py OUT` (one process) or under
`torchrun --standalone --nproc-per-node 2 tests/dml_probe.py OUT` (files OUT.rank0.pt, OUT.rank1.pt)."""

import sys

import torch

from edgekd.data import load_data
from edgekd.models import create_student
from edgekd.train import distributed as dist
from edgekd.train.datasets import Indexed
from edgekd.train.loop import Phase, TrainOptions, fit
from edgekd.train.losses import build_objective

dist.init_from_env("cpu")
torch.set_num_threads(1)
bundle = load_data("digits")
torch.manual_seed(0)
peers = [create_student("small-cnn", in_channels=1, num_classes=10) for _ in range(2)]  # has BatchNorm
ph = Phase("dml/seed0", peers[0], build_objective(["ce"]), Indexed(bundle.train), bundle.val, epochs=1, seed=0,
           batch_size=64, peers=peers[1:], max_steps=1, options=TrainOptions(device="cpu"))
fit(ph, progress=False)
torch.save([{k: v.clone() for k, v in p.state_dict().items()} for p in peers], f"{sys.argv[1]}.rank{dist.rank()}.pt")
dist.shutdown()
