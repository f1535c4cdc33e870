"""Online distillation: deep mutual learning (Zhang et al. 2018, arXiv 1706.00384).

Two or more students train together from scratch, each distilling from the
others at every step; there is no pretrained teacher. The peers share the
batches, so each step is one forward/backward per peer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any


def train_mutual(cfg, bundle, target, run_dir: Path, *, peers: int = 2,
                 controls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per seed: the student alone (control) and `peers` DML students, trained together through the
    one loop (`fit` with `Phase.peers`); the peer with the best val accuracy is 'student'.

    Under torch.distributed every peer is wrapped in DDP: the ranks share each batch and average
    each peer's gradients, so the peers stay identical across ranks."""
    from edgekd.train.datasets import Indexed, accuracy
    from edgekd.train.distill import labeled_subset, make_student, train_control
    from edgekd.train.loop import Phase, fit
    from edgekd.train.losses import build_objective

    mask, labeled_only = labeled_subset(cfg, bundle)
    rows = []
    for seed in range(cfg.seeds):
        row = train_control(cfg, bundle, target, run_dir, seed, labeled_only) if controls is None else \
            {k: v for k, v in controls[seed].items() if k.startswith(("seed", "student_alone", "_student_alone"))}
        models = [make_student(cfg, bundle, target, seed + 7919 * k) for k in range(peers)]
        ph = Phase(f"dml/seed{seed}", models[0], build_objective(["ce"]), Indexed(bundle.train, mask), bundle.val,
                   cfg.epochs, seed, cfg.lr, cfg.batch_size, peers=models[1:], options=cfg.train_options(run_dir))
        t0 = time.perf_counter()
        fit(ph, ckpt=run_dir / "checkpoints" / f"dml-seed{seed}.pt", resume=cfg.resume, progress=cfg.progress)
        vals = ph.history[-1]["peers_val_acc"]
        best = max(range(peers), key=lambda i: (vals[i], -i))
        row.update({"student": accuracy(models[best], bundle.test), "student_val": vals[best],
                    "student_seconds": time.perf_counter() - t0, "_student_model": models[best],
                    "peers": [accuracy(m, bundle.test) for m in models]})
        rows.append(row)
    return rows
