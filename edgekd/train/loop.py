"""The one training loop. Every phase runs through `fit`: teacher training, the student alone,
distillation, the FitNets hint stage, born-again generations, deep mutual learning (a phase
with `peers`) and the teacher-selection warm-up (a phase with `max_steps`).

Per epoch: batches on the phase's device (cut from tensors when the data is in memory),
autocast on CUDA, one AdamW step per batch with the LR schedule stepped per step, validation,
one metrics line (`RUN/metrics.jsonl`, TensorBoard) and a checkpoint. Ctrl-C or SIGKILL loses
at most one epoch and --resume continues bit for bit; a NaN or Inf loss stops training
naming the epoch, step and term.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd.errors import BadInput, CheckFailed
from edgekd.models.checkpoints import load_checkpoint
from edgekd.progress import Progress
from edgekd.train import distributed as dist
from edgekd.train.datasets import Indexed, accuracy, batches
from edgekd.train.losses import KDBatch, Objective
from edgekd.train.metrics import MetricsLog
from edgekd.train.source import TeacherSource


@dataclass
class TrainOptions:
    """How a phase trains, not what: device, precision, memory format, LR rule and schedule, metrics."""

    device: str = "cpu"                       # a resolved device ("cpu", "cuda:0"); see distributed.resolve_device
    precision: str = defaults.PRECISION       # auto | fp32 | bf16 | fp16 (autocast; auto = bf16/fp16 on CUDA only)
    channels_last: bool = False               # NHWC activations and weights
    compile: bool = False                     # torch.compile the model(s)
    schedule: str = defaults.LR_SCHEDULE      # auto | cosine | warmup-cosine | constant
    warmup_epochs: float = defaults.WARMUP_EPOCHS
    base_batch: int | None = defaults.BASE_BATCH   # linear LR rule: lr × batch / base_batch; None: lr as given
    metrics: MetricsLog | None = None

    def autocast_dtype(self) -> torch.dtype | None:
        on_cuda = self.device.startswith("cuda")
        if self.precision == "auto":
            if not on_cuda:
                return None  # plain bf16 autocast was slower than fp32 on CPU (issue 10; bench_throughput)
            # Emulated bf16 (counted by default since torch 2.x, e.g. on a T4, sm75) is slow: fp16 + GradScaler there.
            native = torch.cuda.is_bf16_supported(including_emulation=False)
            return torch.bfloat16 if native else torch.float16
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]


@dataclass
class Phase:
    """One training run: what to train, on what, against which objective."""

    name: str
    model: nn.Module
    objective: Objective
    train: Indexed
    val: Dataset | None
    epochs: int
    seed: int
    lr: float = defaults.LR                      # at options.base_batch (linear rule)
    batch_size: int = defaults.BATCH_SIZE
    teacher_logits: torch.Tensor | None = None  # shorthand for a cached single-teacher source
    teacher: nn.Module | None = None            # shorthand for a live single-teacher source
    source: TeacherSource | None = None
    student_taps: dict[str, str] = field(default_factory=dict)
    hint_epochs: int = 0                         # FitNets stage 1 before the phase
    history: list[dict[str, Any]] = field(default_factory=list)
    peers: list[nn.Module] = field(default_factory=list)   # deep mutual learning: trained beside `model`
    max_steps: int | None = None                 # stop after this many optimizer steps (a warm-up)
    options: TrainOptions = field(default_factory=TrainOptions)

    def __post_init__(self) -> None:
        if self.source is None and (self.teacher is not None or self.teacher_logits is not None):
            cache = None if self.teacher_logits is None else {"logits": self.teacher_logits, "feats": {}}
            self.source = TeacherSource([self.teacher] if self.teacher is not None else [], cache=cache)

    @property
    def members(self) -> list[nn.Module]:
        return [self.model, *self.peers]

    def scaled_lr(self) -> float:
        base = self.options.base_batch
        return self.lr if base is None else self.lr * self.batch_size / base


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _cpu(obj: Any) -> Any:
    """State with every tensor on the CPU: checkpoints load anywhere; export and parity run on CPU."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def _checkpoint_state(ph: Phase, opt, sched, scaler, epoch: int, stage: str) -> dict[str, Any]:
    state = {"kind": "checkpoint", "phase": ph.name, "stage": stage, "epoch": epoch,
             "model": ph.model.state_dict(), "objective": ph.objective.state_dict(),
             "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "rng": torch.get_rng_state(), "history": ph.history}
    if scaler.is_enabled():  # fp16: the loss scale and its growth tracker, so a resume goes on as if never stopped
        state["scaler"] = scaler.state_dict()
    if ph.peers:
        state["peers"] = [p.state_dict() for p in ph.peers]
    if ph.options.device.startswith("cuda"):
        state["cuda_rng"] = torch.cuda.get_rng_state(torch.device(ph.options.device))
    return _cpu(state)


# ---------------------------------------------------------------- what one step computes
def _kd_terms(ph: Phase, objective: Objective, tap) -> Callable:
    def terms(x, y, idx, nets):
        t_logits, t_feats = None, {}
        if objective.needs_teacher:
            t_logits, t_feats = ph.source.outputs(x, idx)
        return objective.terms(KDBatch(student_logits=nets[0](x), labels=y, teacher_logits=t_logits,
                                       student_feats=dict(tap.outputs), teacher_feats=t_feats))
    return terms


def _dml_terms(x, y, idx, nets) -> dict[str, torch.Tensor]:
    """Deep mutual learning: term `peerK` is peer K's own loss (CE + KL to the others, detached)."""
    from edgekd.train.losses import dml_losses

    return {f"peer{i + 1}": loss for i, loss in enumerate(dml_losses([net(x) for net in nets], y))}


def _prepare(ph: Phase, tap) -> None:
    """One dry batch: checks teacher/student compatibility and builds projections/regressors."""
    if ph.objective.needs_teacher and ph.source is None:
        raise BadInput(f"{ph.name}: --method {ph.objective.describe()} needs a teacher")
    if ph.peers:
        return  # DML reads no teacher and no taps
    x, y, idx = next(iter(DataLoader(ph.train, batch_size=min(ph.batch_size, 8))))
    x, y = x.to(ph.options.device), y.to(ph.options.device)
    ph.model.eval()
    with torch.no_grad():
        b = KDBatch(student_logits=ph.model(_fmt(ph, x)), labels=y)
        if ph.objective.needs_teacher:
            b.teacher_logits, b.teacher_feats = ph.source.outputs(_fmt(ph, x), idx)
        b.student_feats = dict(tap.outputs)
    ph.objective.prepare(b, student_taps=ph.student_taps, teacher_taps=ph.source.taps if ph.source else {})
    ph.objective.to(ph.options.device)  # regressors built just now


def _leaves_params_unused(ph: Phase, objective: Objective, tap) -> bool:
    """Under torch.distributed: does this objective's loss leave some of the student's parameters
    without a gradient (the hint stage; feature losses only, where the classifier is unused)?
    Read from one small eval-mode batch (no statistics, weights or random state change), so
    exactly the stages that have such parameters train without DDP."""
    if dist.world_size() == 1 or ph.peers:
        return False
    from torch.utils.data import default_collate

    x, y, idx = default_collate([ph.train[i] for i in range(min(len(ph.train), ph.batch_size, 8))])
    x, y = _fmt(ph, x.to(ph.options.device)), y.to(ph.options.device)
    params = [p for p in ph.model.parameters() if p.requires_grad]
    was_training = ph.model.training
    ph.model.eval()
    try:
        with torch.enable_grad():
            b = KDBatch(student_logits=ph.model(x), labels=y)
            if objective.needs_teacher:
                b.teacher_logits, b.teacher_feats = ph.source.outputs(x, idx)
            b.student_feats = dict(tap.outputs)
            loss = sum(objective.terms(b).values())
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        ph.model.train(was_training)
    return any(g is None for g in grads)


def _fmt(ph: Phase, x: torch.Tensor) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if ph.options.channels_last and x.dim() == 4 else x


# ---------------------------------------------------------------- schedule
def _lr_factor(kind: str, *, epochs: int, steps_per_epoch: int, warmup_epochs: float) -> Callable[[int], float]:
    """LR multiplier per optimizer step. `cosine` is per epoch (as torch's CosineAnnealingLR stepped
    per epoch: the first epoch at the full rate); `warmup-cosine` ramps linearly over the warm-up
    steps, then follows a per-step cosine to 0; `constant` keeps the rate."""
    total = max(1, epochs * steps_per_epoch)
    if kind == "constant":
        return lambda s: 1.0
    if kind == "cosine":
        return lambda s: 0.5 * (1 + math.cos(math.pi * min(s // steps_per_epoch, epochs) / epochs))
    warm = min(total - 1, max(1, round(warmup_epochs * steps_per_epoch)))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
    return factor


def auto_schedule(*, epochs: int, batch_size: int, base_batch: int | None, warmup_epochs: float) -> tuple[str, float]:
    """What `auto` means for a run: (schedule, warm-up epochs).
    - above BASE_BATCH: warmup-cosine, as Goyal et al. 2017 pair the linear LR rule with a warm-up;
    - short runs (< SHORT_RUN_EPOCHS): warmup-cosine decaying per step, the warm-up at most
      SHORT_RUN_WARMUP of the run (on Fashion-MNIST a 1.2M-param teacher reached 93.3% in 4 epochs so);
    - else: cosine per epoch (what digits was tuned with)."""
    if base_batch is not None and batch_size > base_batch:
        return "warmup-cosine", warmup_epochs
    if epochs < defaults.SHORT_RUN_EPOCHS:
        return "warmup-cosine", min(warmup_epochs, defaults.SHORT_RUN_WARMUP * epochs)
    return "cosine", warmup_epochs


def _schedule(ph: Phase, opt, epochs: int, steps_per_epoch: int):
    kind = ph.options.schedule
    if kind not in defaults.LR_SCHEDULES:
        raise BadInput(f"lr_schedule '{kind}': valid: {', '.join(defaults.LR_SCHEDULES)}")
    warmup = ph.options.warmup_epochs
    if kind == "auto":
        kind, warmup = auto_schedule(epochs=epochs, batch_size=ph.batch_size, base_batch=ph.options.base_batch,
                                     warmup_epochs=warmup)
    factor = _lr_factor(kind, epochs=epochs, steps_per_epoch=steps_per_epoch, warmup_epochs=warmup)
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _steps_per_epoch(ph: Phase) -> int:
    per_rank = ph.batch_size // dist.world_size()
    return max(1, math.ceil(math.ceil(len(ph.train) / dist.world_size()) / max(1, per_rank)))


# ---------------------------------------------------------------- one stage
def _restore(ph: Phase, opt, sched, scaler, ckpt: Path | None, resume: bool, stage: str) -> int | None:
    """The epoch to start from (0: from scratch); None when this stage finished before the interruption."""
    if not (resume and ckpt is not None and ckpt.exists()):
        return 0
    state = load_checkpoint(ckpt)
    saved = STAGES.index(state.get("stage", "main"))
    if saved > STAGES.index(stage):
        return None  # this stage finished before the interruption
    if saved < STAGES.index(stage):
        return 0  # an earlier stage (the hint stage) finished: this one starts from its weights
    ph.model.load_state_dict(state["model"])
    for peer, peer_state in zip(ph.peers, state.get("peers", [])):
        peer.load_state_dict(peer_state)
    ph.objective.load_state_dict(state["objective"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if "scaler" in state and scaler.is_enabled():
        scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["rng"])
    if "cuda_rng" in state and ph.options.device.startswith("cuda"):
        torch.cuda.set_rng_state(state["cuda_rng"], torch.device(ph.options.device))
    ph.history = list(state["history"])
    return int(state["epoch"])


STAGES = ("hint", "main")  # the order of a phase's stages


class _Epoch:
    """Sums of one epoch's loss terms (as tensors: no device sync per step) and its image count."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n, self.t0 = 0, time.perf_counter()

    def add(self, terms: dict[str, torch.Tensor], n: int) -> None:
        for k, v in terms.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach().float() * n
        self.n += n

    def means(self) -> tuple[dict[str, float], int]:
        keys = list(self.sums)
        values = [float(self.sums[k]) for k in keys]
        *totals, n = dist.sum_across(*values, self.n)
        return {k: t / max(n, 1) for k, t in zip(keys, totals)}, int(n)


def _step(ph: Phase, terms_fn, nets, x, y, idx, opt, sched, scaler, extra, epoch: int, step: int):
    dtype = ph.options.autocast_dtype()
    # No autocast context at all in fp32 (torch.autocast refuses device types it has no rules for, e.g. meta).
    cast = contextlib.nullcontext() if dtype is None else torch.autocast(torch.device(ph.options.device).type, dtype)
    with cast:
        terms = terms_fn(_fmt(ph, x), y, idx, nets)
    loss = sum(terms.values())
    if not torch.isfinite(loss):  # one check (one device sync) per step; name the culprit only when needed
        bad = next((k for k, v in terms.items() if not torch.isfinite(v)), next(iter(terms)))
        raise CheckFailed(f"{ph.name}: loss term '{bad}' is {terms[bad].item()} at epoch {epoch + 1}, "
                          f"step {step + 1}; the last good checkpoint is kept")
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    dist.average_grads(extra)  # DDP syncs the student(s); the regressors are ours to sync
    scaler.step(opt)
    scaler.update()
    sched.step()
    return terms


def _run_stage(ph: Phase, terms_fn, params: list, epochs: int, *, stage: str, ckpt: Path | None,
               resume: bool, progress: bool, partial: bool = False) -> None:
    """`partial`: the loss reaches only some of the parameters; under torch.distributed the models
    then train unwrapped and their existing gradients are averaged after backward (DDP cannot)."""
    opt = torch.optim.AdamW(params, lr=ph.scaled_lr(), weight_decay=defaults.WEIGHT_DECAY)
    spe = _steps_per_epoch(ph)
    sched = _schedule(ph, opt, epochs, spe)
    scaler = torch.amp.GradScaler("cuda", enabled=ph.options.autocast_dtype() == torch.float16)
    start = _restore(ph, opt, sched, scaler, ckpt, resume, stage)
    if start is None:
        return
    metrics = ph.options.metrics
    if metrics is not None and resume:
        metrics.forget(ph.name, stage, after_epoch=start)
    label = ph.name if stage == "main" else f"{ph.name} ({stage})"
    bar = Progress(label, total=epochs, unit="epoch", initial=start, enabled=progress)
    # DDP + global-batch BatchNorm under torch.distributed (the BatchNorm swap is already done in `fit`)
    nets = list(ph.members) if partial else [dist.wrap(m) for m in ph.members]
    extra = ph.objective.extra_parameters() + ([p for m in ph.members for p in m.parameters()] if partial else [])
    done = start * spe
    try:
        for epoch in range(start, epochs):
            for m in ph.members:
                m.train()
            ph.objective.train()
            ep = _Epoch()
            for step, (x, y, idx) in enumerate(batches(ph.train, batch_size=ph.batch_size, shuffle=True,
                                                       seed=ph.seed, epoch=epoch, device=ph.options.device)):
                lr = opt.param_groups[0]["lr"]
                ph.objective.set_progress(done, epochs * spe)  # schedules inside losses (DKD's warm-up)
                ep.add(_step(ph, terms_fn, nets, x, y, idx, opt, sched, scaler, extra, epoch, step), len(x))
                done += 1
                if ph.max_steps is not None and done >= ph.max_steps:
                    break
            row = _end_epoch(ph, ep, stage=stage, epoch=epoch, epochs=epochs, lr=lr)
            bar.update(1, line=True, loss=row["loss"], val=row["val_acc"], lr=row["lr"],
                       img_s=round(row["images_per_s"]))
            if ckpt is not None:  # after the metrics line: a kill in between redoes (and forgets) this epoch
                artifacts.save_torch(ckpt, _checkpoint_state(ph, opt, sched, scaler, epoch + 1, stage))
            if ph.max_steps is not None and done >= ph.max_steps:
                break
    finally:
        bar.close()


def _end_epoch(ph: Phase, ep: _Epoch, *, stage: str, epoch: int, epochs: int, lr: float) -> dict[str, Any]:
    """Validate, then record the epoch in the history, metrics.jsonl and TensorBoard."""
    train_s = time.perf_counter() - ep.t0
    means, n = ep.means()
    vals = [accuracy(m, ph.val) for m in ph.members] if ph.val is not None else [None] * len(ph.members)
    seconds = time.perf_counter() - ep.t0
    common = {"stage": stage, "epoch": epoch + 1, "epochs": epochs, "lr": lr, "seconds": seconds,
              "images_per_s": n / train_s if train_s > 0 else 0.0, "time": time.time()}
    if ph.peers:
        rows = [{**common, "phase": f"{ph.name}/peer{i + 1}", "loss": means[f"peer{i + 1}"],
                 "terms": {"dml": means[f"peer{i + 1}"]}, "val_acc": v} for i, v in enumerate(vals)]
        summary = {**common, "phase": ph.name, "loss": sum(means.values()), "terms": means,
                   "val_acc": max(v for v in vals if v is not None) if vals[0] is not None else None,
                   "peers_val_acc": vals}
    else:
        summary = {**common, "phase": ph.name, "loss": sum(means.values()), "terms": means, "val_acc": vals[0]}
        rows = [summary]
    ph.history.append(summary)
    if ph.options.metrics is not None:
        for row in rows:
            ph.options.metrics.record(row)
    return summary


# ---------------------------------------------------------------- the entry point
def _place(ph: Phase) -> None:
    """Models, objective and teacher source on the phase's device (channels_last when asked)."""
    fmt = torch.channels_last if ph.options.channels_last else torch.preserve_format
    for m in ph.members:
        m.to(device=ph.options.device, memory_format=fmt)
    ph.objective.to(ph.options.device)
    if ph.source is not None:
        ph.source.to(ph.options.device, channels_last=ph.options.channels_last)


def fit(ph: Phase, *, ckpt: Path | None = None, resume: bool = False, progress: bool = True) -> nn.Module:
    """Train `ph.model` (and `ph.peers`); checkpoint after every epoch so Ctrl-C (or SIGKILL) loses at most one."""
    from edgekd.train.features import FeatureTap
    from edgekd.train.losses import hint_objective, hint_stage_params

    _seed_all(ph.seed)
    _place(ph)
    for m in ph.members:
        # Under torch.distributed this swaps BatchNorm2d for its global-batch version: before the
        # optimizer and the taps see the modules, or they would hold parameters no step updates.
        dist.wrap(m)
    with FeatureTap(ph.model, ph.student_taps) as tap:
        _prepare(ph, tap)
        if ph.hint_epochs > 0 and not ph.peers:
            # FitNets stage 1: the student up to its tap plus the regressor, on the hint loss alone.
            example = next(iter(DataLoader(ph.train, batch_size=2)))[0].to(ph.options.device)
            params = hint_stage_params(ph.objective, ph.model, student_taps=ph.student_taps, example_input=example)
            hint = hint_objective(ph.objective)
            _run_stage(ph, _kd_terms(ph, hint, tap), params, ph.hint_epochs, stage="hint", ckpt=ckpt,
                       resume=resume, progress=progress, partial=_leaves_params_unused(ph, hint, tap))
        terms_fn = _dml_terms if ph.peers else _kd_terms(ph, ph.objective, tap)
        params = [p for m in ph.members for p in m.parameters()] + ph.objective.extra_parameters()
        _run_stage(ph, terms_fn, params, ph.epochs, stage="main", ckpt=ckpt, resume=resume, progress=progress,
                   partial=_leaves_params_unused(ph, ph.objective, tap))
    for m in ph.members:
        m.eval()
    return ph.model


def fit_scored(ph: Phase, test: Dataset, **fit_kwargs: Any) -> dict[str, float]:
    """`fit`, then what every caller reports: final val accuracy, test accuracy, training seconds."""
    t0 = time.perf_counter()
    fit(ph, **fit_kwargs)
    seconds = time.perf_counter() - t0
    return {"val": ph.history[-1]["val_acc"], "test": accuracy(ph.model, test), "seconds": seconds}
