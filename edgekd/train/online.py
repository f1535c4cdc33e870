"""Online distillation: deep mutual learning (Zhang et al. 2018, arXiv 1706.00384).

Two or more students train together from scratch, each distilling from the
others at every step; there is no pretrained teacher. The peers share the
batches, so each step is one forward/backward per peer.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgekd import artifacts, defaults
from edgekd.errors import CheckFailed


def _state(models, opts, scheds, epoch: int, history: list) -> dict[str, Any]:
    return {"kind": "checkpoint", "phase": "dml", "epoch": epoch,
            "models": [m.state_dict() for m in models], "optimizers": [o.state_dict() for o in opts],
            "schedulers": [s.state_dict() for s in scheds], "rng": torch.get_rng_state(), "history": history}


def fit_mutual(models: list[nn.Module], train, val, *, epochs: int, seed: int, lr: float = defaults.LR,
               batch_size: int = defaults.BATCH_SIZE, ckpt: Path | None = None, resume: bool = False,
               progress: bool = True, name: str = "dml") -> list[dict[str, Any]]:
    """Train `models` as DML peers; checkpoint every epoch; returns the per-epoch history."""
    from tqdm.auto import tqdm

    from edgekd.checkpoints import load_checkpoint
    from edgekd.train.datasets import accuracy, loader
    from edgekd.train.loop import _seed_all
    from edgekd.train.losses import dml_losses

    _seed_all(seed)
    opts = [torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=defaults.WEIGHT_DECAY) for m in models]
    scheds = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=epochs) for o in opts]
    history: list[dict[str, Any]] = []
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        st = load_checkpoint(ckpt)
        for m, o, s, ms, os_, ss in zip(models, opts, scheds, st["models"], st["optimizers"], st["schedulers"]):
            m.load_state_dict(ms), o.load_state_dict(os_), s.load_state_dict(ss)
        torch.set_rng_state(st["rng"])
        history, start = list(st["history"]), int(st["epoch"])
    bar = tqdm(range(start, epochs), desc=name, unit="epoch", disable=None if progress else True, leave=False,
               initial=start, total=epochs)
    for epoch in bar:
        for m in models:
            m.train()
        for step, (x, y, _) in enumerate(loader(train, batch_size=batch_size, shuffle=True, seed=seed, epoch=epoch)):
            losses = dml_losses([m(x) for m in models], y)
            for i, loss in enumerate(losses):
                if not torch.isfinite(loss):
                    raise CheckFailed(f"{name}: loss term 'dml peer {i}' is {loss.item()} at epoch {epoch + 1}, "
                                      f"step {step + 1}; the last good checkpoint is kept")
            for o in opts:
                o.zero_grad(set_to_none=True)
            sum(losses).backward()  # peers are detached inside each other's loss: gradients stay separate
            for o in opts:
                o.step()
        for s in scheds:
            s.step()
        vals = [accuracy(m, val) for m in models]
        history.append({"epoch": epoch + 1, "val_acc": vals})
        bar.set_postfix(val=" ".join(f"{v:.3f}" for v in vals))
        if ckpt is not None:
            artifacts.save_torch(ckpt, _state(models, opts, scheds, epoch + 1, history))
    for m in models:
        m.eval()
    return history


def train_mutual(cfg, bundle, target, run_dir: Path, *, peers: int = 2,
                 controls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per seed: the student alone (control) and `peers` DML students; peer with the best val is 'student'."""
    import numpy as np

    from edgekd.train.datasets import Indexed, accuracy
    from edgekd.train.distill import labeled_subset, make_student, train_control

    mask, labeled_only = labeled_subset(cfg, bundle)
    rows = []
    for seed in range(cfg.seeds):
        row = train_control(cfg, bundle, target, run_dir, seed, labeled_only) if controls is None else \
            {k: v for k, v in controls[seed].items() if k.startswith(("seed", "student_alone", "_student_alone"))}
        models = [make_student(cfg, bundle, target, seed + 7919 * k) for k in range(peers)]
        t0 = time.perf_counter()
        hist = fit_mutual(models, Indexed(bundle.train, mask), bundle.val, epochs=cfg.epochs, seed=seed, lr=cfg.lr,
                          batch_size=cfg.batch_size, ckpt=run_dir / "checkpoints" / f"dml-seed{seed}.pt",
                          resume=cfg.resume, progress=cfg.progress, name=f"dml/seed{seed}")
        best = int(np.argmax(hist[-1]["val_acc"]))
        row.update({"student": accuracy(models[best], bundle.test), "student_val": hist[-1]["val_acc"][best],
                    "student_seconds": time.perf_counter() - t0, "_student_model": models[best],
                    "peers": [accuracy(m, bundle.test) for m in models]})
        rows.append(row)
    return rows
