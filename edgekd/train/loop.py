"""The one training loop: every phase (teacher, control, distilled student, hint stage) runs through `fit`.

Each epoch ends in a checkpoint, so Ctrl-C or SIGKILL loses at most one; a NaN or Inf loss stops
training naming the epoch, step and term."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd.checkpoints import load_checkpoint
from edgekd.errors import BadInput, CheckFailed
from edgekd.train import distributed as dist
from edgekd.train.datasets import Indexed, accuracy, loader
from edgekd.train.losses import KDBatch, Objective
from edgekd.train.source import TeacherSource


@dataclass
class Phase:
    """One training run: what to train, on what, against which objective."""

    name: str
    model: nn.Module
    objective: Objective
    train: Indexed
    val: Dataset
    epochs: int
    seed: int
    lr: float = defaults.LR
    batch_size: int = defaults.BATCH_SIZE
    teacher_logits: torch.Tensor | None = None  # shorthand for a cached single-teacher source
    teacher: nn.Module | None = None            # shorthand for a live single-teacher source
    source: TeacherSource | None = None
    student_taps: dict[str, str] = field(default_factory=dict)
    hint_epochs: int = 0                         # FitNets stage 1 before the phase
    history: list[dict[str, float]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.source is None and (self.teacher is not None or self.teacher_logits is not None):
            cache = None if self.teacher_logits is None else {"logits": self.teacher_logits, "feats": {}}
            self.source = TeacherSource([self.teacher] if self.teacher is not None else [], cache=cache)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _checkpoint_state(ph: Phase, opt, sched, epoch: int, stage: str) -> dict[str, Any]:
    return {"kind": "checkpoint", "phase": ph.name, "stage": stage, "epoch": epoch,
            "model": ph.model.state_dict(), "objective": ph.objective.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(), "history": ph.history}


def _batch(ph: Phase, objective: Objective, tap, x, y, idx, net: nn.Module | None = None) -> KDBatch:
    t_logits, t_feats = None, {}
    if objective.needs_teacher:
        t_logits, t_feats = ph.source.outputs(x, idx)
    return KDBatch(student_logits=(net or ph.model)(x), labels=y, teacher_logits=t_logits,
                   student_feats=dict(tap.outputs), teacher_feats=t_feats)


def _loss(ph: Phase, objective: Objective, tap, x, y, idx, epoch: int, step: int, net: nn.Module) -> torch.Tensor:
    terms = objective.terms(_batch(ph, objective, tap, x, y, idx, net))
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise CheckFailed(f"{ph.name}: loss term '{name}' is {value.item()} at epoch {epoch + 1}, "
                              f"step {step + 1}; the last good checkpoint is kept")
    return sum(terms.values())


def _prepare(ph: Phase, tap) -> None:
    """One dry batch: checks teacher/student compatibility and builds projections/regressors."""
    if ph.objective.needs_teacher and ph.source is None:
        raise BadInput(f"{ph.name}: --method {ph.objective.describe()} needs a teacher")
    x, y, idx = next(iter(DataLoader(ph.train, batch_size=min(ph.batch_size, 8))))
    ph.model.eval()
    with torch.no_grad():
        b = _batch(ph, ph.objective, tap, x, y, idx)
    ph.objective.prepare(b, student_taps=ph.student_taps, teacher_taps=ph.source.taps if ph.source else {})


def _run_stage(ph: Phase, objective: Objective, params: list, epochs: int, tap, *, stage: str,
               ckpt: Path | None, resume: bool, progress: bool) -> None:
    from tqdm.auto import tqdm

    opt = torch.optim.AdamW(params, lr=ph.lr, weight_decay=defaults.WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        if state.get("stage", "main") != stage:
            return  # this stage finished before the interruption
        ph.model.load_state_dict(state["model"])
        ph.objective.load_state_dict(state["objective"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        ph.history, start = list(state["history"]), int(state["epoch"])
    label = ph.name if stage == "main" else f"{ph.name} ({stage})"
    show = progress and dist.is_main()
    bar = tqdm(range(start, epochs), desc=label, unit="epoch", disable=None if show else True, leave=False,
               initial=start, total=epochs)
    net = dist.wrap(ph.model)  # DDP + SyncBatchNorm under torch.distributed; the model itself otherwise
    extra = ph.objective.extra_parameters()
    for epoch in bar:
        ph.model.train()
        objective.train()
        total, n = 0.0, 0
        for step, (x, y, idx) in enumerate(loader(ph.train, batch_size=ph.batch_size, shuffle=True,
                                                  seed=ph.seed, epoch=epoch)):
            loss = _loss(ph, objective, tap, x, y, idx, epoch, step, net)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            dist.average_grads(extra)  # DDP syncs the student; the regressors are ours to sync
            opt.step()
            total, n = total + float(loss.detach()) * len(x), n + len(x)
        total, n = dist.sum_across(total, n)
        sched.step()
        val_acc = accuracy(ph.model, ph.val)
        ph.history.append({"stage": stage, "epoch": epoch + 1, "loss": total / max(n, 1), "val_acc": val_acc})
        bar.set_postfix(loss=f"{total / max(n, 1):.3f}", val=f"{val_acc:.3f}")
        if ckpt is not None:
            artifacts.save_torch(ckpt, _checkpoint_state(ph, opt, sched, epoch + 1, stage))


def fit(ph: Phase, *, ckpt: Path | None = None, resume: bool = False, progress: bool = True) -> nn.Module:
    """Train `ph.model`; checkpoint after every epoch so Ctrl-C (or SIGKILL) loses at most one."""
    from edgekd.train.features import FeatureTap
    from edgekd.train.losses import hint_objective, hint_stage_params

    _seed_all(ph.seed)
    with FeatureTap(ph.model, ph.student_taps) as tap:
        _prepare(ph, tap)
        if ph.hint_epochs > 0:
            # FitNets stage 1: the student up to its tap plus the regressor, on the hint loss alone.
            example = next(iter(DataLoader(ph.train, batch_size=2)))[0]
            params = hint_stage_params(ph.objective, ph.model, student_taps=ph.student_taps, example_input=example)
            _run_stage(ph, hint_objective(ph.objective), params, ph.hint_epochs, tap, stage="hint",
                       ckpt=ckpt, resume=resume, progress=progress)
        params = list(ph.model.parameters()) + ph.objective.extra_parameters()
        _run_stage(ph, ph.objective, params, ph.epochs, tap, stage="main", ckpt=ckpt, resume=resume,
                   progress=progress)
    ph.model.eval()
    return ph.model


def fit_scored(ph: Phase, test: Dataset, **fit_kwargs: Any) -> dict[str, float]:
    """`fit`, then what every caller reports: final val accuracy, test accuracy, training seconds."""
    t0 = time.perf_counter()
    fit(ph, **fit_kwargs)
    seconds = time.perf_counter() - t0
    return {"val": ph.history[-1]["val_acc"], "test": accuracy(ph.model, test), "seconds": seconds}
