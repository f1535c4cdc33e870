"""Training: the teacher, the student alone (the control) and the distilled student.

Read top to bottom: config → data and models → teacher → one `fit` loop shared
by every phase (checkpoint each epoch, resume, NaN guard) → seeds → summary.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd.data import DataBundle, load_data
from edgekd.errors import BadInput, CheckFailed
from edgekd.losses import KDBatch, Objective, build_objective
from edgekd.models import check_student_ops, count_params, create_student, create_teacher
from edgekd.targets import TargetProfile, load_target


@dataclass
class DistillConfig:
    data: str = defaults.DATA
    data_dir: Path = defaults.DATA_DIR
    download: bool = False
    teacher: str = defaults.TEACHER
    student: str = defaults.STUDENT
    target: str = defaults.TARGET
    methods: tuple[str, ...] = defaults.METHODS
    temperature: float = defaults.TEMPERATURE
    epochs: int = defaults.EPOCHS
    teacher_epochs: int = defaults.TEACHER_EPOCHS
    seeds: int = defaults.SEEDS
    lr: float = defaults.LR
    batch_size: int = defaults.BATCH_SIZE
    labeled_fraction: float = defaults.LABELED_FRACTION
    run: Path | None = None
    resume: bool = False
    progress: bool = True

    def validate(self) -> None:
        for key, value, lo in (("epochs", self.epochs, 1), ("teacher_epochs", self.teacher_epochs, 1),
                               ("seeds", self.seeds, 1), ("batch_size", self.batch_size, 1)):
            if value < lo:
                raise BadInput(f"--{key.replace('_', '-')} {value}: must be >= {lo}")
        if not 0 < self.labeled_fraction <= 1:
            raise BadInput(f"--labeled-fraction {self.labeled_fraction}: must be in (0, 1]")
        if not self.lr > 0:
            raise BadInput(f"--lr {self.lr}: must be > 0")
        if not self.temperature > 0:
            raise BadInput(f"--temperature {self.temperature}: must be > 0")


# ---------------------------------------------------------------- data plumbing
class Indexed(Dataset):
    """Wraps a dataset to yield (x, label or -1, index): -1 hides the label of unlabeled samples."""

    def __init__(self, base: Dataset, labeled: np.ndarray | None = None):
        self.base = base
        self.labeled = labeled  # boolean mask over indices; None = all labeled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.labeled is not None and not self.labeled[i]:
            y = -1
        return x, int(y), i


class Repeated(Dataset):
    """`base` cycled to `length` items, so the control sees as many steps per epoch as the
    distilled student does on the full train set (same budget, not just same epochs)."""

    def __init__(self, base: Dataset, length: int):
        self.base, self.length = base, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def dataset_labels(ds: Dataset) -> np.ndarray:
    if hasattr(ds, "tensors"):
        return ds.tensors[1].numpy()
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def labeled_mask(labels: np.ndarray, fraction: float, *, seed: int = defaults.SPLIT_SEED) -> np.ndarray:
    """Keep labels for a stratified `fraction` of the train set (at least one per class)."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction >= 1:
        mask[:] = True
        return mask
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def loader(ds: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0) -> DataLoader:
    # The shuffle order depends only on (seed, epoch), so a resumed run sees the same batches.
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g if shuffle else None,
                      num_workers=defaults.NUM_WORKERS)


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outs = [model(x) for x, *_ in DataLoader(ds, batch_size=batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


def accuracy(model: nn.Module, ds: Dataset) -> float:
    logits = predict(model, ds)
    y = torch.as_tensor(dataset_labels(ds))
    return float((logits.argmax(1) == y).float().mean()) if len(y) else float("nan")


# ---------------------------------------------------------------- the one training loop
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
    teacher_logits: torch.Tensor | None = None  # cached, indexed like `train`
    teacher: nn.Module | None = None            # used live when not cached
    history: list[dict[str, float]] = field(default_factory=list)


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _checkpoint_state(ph: Phase, opt, sched, epoch: int) -> dict[str, Any]:
    return {"kind": "checkpoint", "phase": ph.name, "epoch": epoch, "model": ph.model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "rng": torch.get_rng_state(), "history": ph.history}


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Load any edgekd .pt safely (weights_only); anything else is BadInput naming the file."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a non-checkpoint file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"{path}: not an edgekd checkpoint ({first[:120]})") from None
    if not isinstance(obj, dict) or "kind" not in obj:
        raise BadInput(f"{path}: not an edgekd checkpoint (no 'kind' field)")
    return obj


def _step(ph: Phase, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
    t_logits = None
    if ph.objective.needs_teacher:
        if ph.teacher_logits is not None:
            t_logits = ph.teacher_logits[idx]
        else:
            with torch.inference_mode():
                t_logits = ph.teacher(x)
            t_logits = t_logits.clone()
    batch = KDBatch(student_logits=ph.model(x), labels=y, teacher_logits=t_logits)
    terms = ph.objective.terms(batch)
    for name, value in terms.items():
        if not torch.isfinite(value):
            raise CheckFailed(f"{ph.name}: loss term '{name}' is {value.item()} at epoch {epoch + 1}, "
                              f"step {step + 1}; the last good checkpoint is kept")
    return sum(terms.values())


def fit(ph: Phase, *, ckpt: Path | None = None, resume: bool = False, progress: bool = True) -> nn.Module:
    """Train `ph.model`; checkpoint after every epoch so Ctrl-C loses at most one."""
    from tqdm.auto import tqdm

    _seed_all(ph.seed)
    opt = torch.optim.AdamW(ph.model.parameters(), lr=ph.lr, weight_decay=defaults.WEIGHT_DECAY)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=ph.epochs)
    start = 0
    if resume and ckpt is not None and ckpt.exists():
        state = load_checkpoint(ckpt)
        ph.model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        ph.history, start = list(state["history"]), int(state["epoch"])
    if ph.teacher is not None:
        ph.teacher.eval()
    bar = tqdm(range(start, ph.epochs), desc=ph.name, unit="epoch", disable=None if progress else True, leave=False,
               initial=start, total=ph.epochs)
    for epoch in bar:
        ph.model.train()
        total, n = 0.0, 0
        for step, (x, y, idx) in enumerate(loader(ph.train, batch_size=ph.batch_size, shuffle=True,
                                                  seed=ph.seed, epoch=epoch)):
            loss = _step(ph, x, y, idx, epoch, step)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, n = total + float(loss.detach()) * len(x), n + len(x)
        sched.step()
        val_acc = accuracy(ph.model, ph.val)
        ph.history.append({"epoch": epoch + 1, "loss": total / max(n, 1), "val_acc": val_acc})
        bar.set_postfix(loss=f"{total / max(n, 1):.3f}", val=f"{val_acc:.3f}")
        if ckpt is not None:
            artifacts.save_torch(ckpt, _checkpoint_state(ph, opt, sched, epoch + 1))
    ph.model.eval()
    return ph.model


# ---------------------------------------------------------------- teacher
def teacher_spec(state: dict[str, Any]) -> dict[str, Any]:
    return {k: state[k] for k in ("arch", "in_channels", "num_classes")}


def obtain_teacher(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    """Load the teacher from a .pt path, or train the named one (seed 0) and save teacher.pt."""
    C = bundle.input_shape[0]
    if cfg.teacher.endswith(".pt") or Path(cfg.teacher).is_file():
        state = load_checkpoint(Path(cfg.teacher))
        if state.get("kind") != "teacher":
            raise BadInput(f"{cfg.teacher}: a {state.get('kind')} checkpoint, not a teacher")
        if state["num_classes"] != bundle.num_classes:
            raise BadInput(f"{cfg.teacher}: teacher has {state['num_classes']} classes, "
                           f"--data {bundle.name} has {bundle.num_classes}")
        model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
        model.load_state_dict(state["model"])
        return model.eval(), {"source": cfg.teacher, "arch": state["arch"]}
    model = create_teacher(cfg.teacher, in_channels=C, num_classes=bundle.num_classes)
    ph = Phase("teacher", model, build_objective(["ce"]), Indexed(bundle.train), bundle.val,
               cfg.teacher_epochs, seed=0, lr=cfg.lr, batch_size=cfg.batch_size)
    fit(ph, ckpt=run_dir / "checkpoints" / "teacher.pt", resume=cfg.resume, progress=cfg.progress)
    artifacts.save_torch(run_dir / "teacher.pt", {
        "kind": "teacher", "arch": cfg.teacher, "in_channels": C,
        "num_classes": bundle.num_classes, "model": model.state_dict()})
    return model.eval(), {"source": "trained", "arch": cfg.teacher, "epochs": cfg.teacher_epochs}


# ---------------------------------------------------------------- students
def make_student(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_student(cfg.student, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes,
                          target_ops=target.ops_allow)


def train_students(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, teacher: nn.Module,
                   run_dir: Path, objective: Objective) -> list[dict[str, Any]]:
    mask = labeled_mask(dataset_labels(bundle.train), cfg.labeled_fraction)
    labeled_only = Repeated(torch.utils.data.Subset(bundle.train, np.flatnonzero(mask).tolist()), len(mask))
    # Deterministic inputs: the teacher's logits are computed once, not every epoch.
    cache = None if bundle.augmented else predict(teacher, bundle.train)
    results = []
    for seed in range(cfg.seeds):
        alone = Phase(f"alone/seed{seed}", make_student(cfg, bundle, target, seed), build_objective(["ce"]),
                      Indexed(labeled_only), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size)
        kd = Phase(f"kd/seed{seed}", make_student(cfg, bundle, target, seed), objective,
                   Indexed(bundle.train, mask), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size,
                   teacher_logits=cache, teacher=teacher)
        row: dict[str, Any] = {"seed": seed}
        for key, ph in (("student_alone", alone), ("student", kd)):
            t0 = time.perf_counter()
            fit(ph, ckpt=run_dir / "checkpoints" / f"{ph.name.replace('/', '-')}.pt",
                resume=cfg.resume, progress=cfg.progress)
            row[key] = accuracy(ph.model, bundle.test)
            row[f"{key}_val"] = ph.history[-1]["val_acc"]
            row[f"{key}_seconds"] = time.perf_counter() - t0
            row[f"_{key}_model"] = ph.model
        results.append(row)
    return results


def mean_std(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def gap_closed(teacher: float, alone: float, student: float) -> float | None:
    """Share of the teacher–student gap that distillation closed (None when there is no gap)."""
    gap = teacher - alone
    return None if gap <= 1e-9 else (student - alone) / gap


# ---------------------------------------------------------------- the stage
def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run the whole distill stage; returns the summary written to distill.json."""
    cfg.validate()
    t_start = time.perf_counter()
    target = load_target(cfg.target)
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature)
    bundle = load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download)
    probe = make_student(cfg, bundle, target, 0)
    ops = check_student_ops(probe, input_shape=bundle.input_shape, target=target)
    run_dir = artifacts.create_run(cfg.run)
    artifacts.write_json(run_dir / "config.json", {**asdict(cfg), "data_info": bundle.describe()})
    teacher, teacher_info = obtain_teacher(cfg, bundle, run_dir)
    teacher_acc = accuracy(teacher, bundle.test)
    rows = train_students(cfg, bundle, target, teacher, run_dir, objective)
    best = max(rows, key=lambda r: (r["student_val"], -r["seed"]))
    save_student(run_dir / "student.pt", cfg, bundle, best["_student_model"], seed=best["seed"], ops=ops)
    save_student(run_dir / "student_alone.pt", cfg, bundle, best["_student_alone_model"], seed=best["seed"], ops=ops)
    summary = summarise(cfg, bundle, target, teacher, teacher_info, teacher_acc, rows, best, probe, ops)
    summary["wall_seconds"] = time.perf_counter() - t_start
    artifacts.write_json(run_dir / "distill.json", summary)
    artifacts.set_latest(run_dir)
    summary["run"] = str(run_dir)
    return summary


def save_student(path: Path, cfg: DistillConfig, bundle: DataBundle, model: nn.Module, *,
                 seed: int, ops: list[str]) -> None:
    artifacts.save_torch(path, {
        "kind": "student", "arch": cfg.student, "in_channels": bundle.input_shape[0],
        "num_classes": bundle.num_classes, "target": cfg.target, "seed": seed, "ops": ops,
        "target_ops": sorted(load_target(cfg.target).ops_allow),
        "model": model.state_dict()})


def summarise(cfg, bundle, target, teacher, teacher_info, teacher_acc, rows, best, probe, ops) -> dict[str, Any]:
    alone = mean_std([r["student_alone"] for r in rows])
    kd = mean_std([r["student"] for r in rows])
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    return {
        "data": bundle.describe(), "target": target.name, "methods": list(cfg.methods),
        "objective": build_objective(list(cfg.methods), temperature=cfg.temperature).describe(),
        "temperature": cfg.temperature, "epochs": cfg.epochs, "seeds": cfg.seeds,
        "labeled_fraction": cfg.labeled_fraction,
        "teacher": {**teacher_info, "params": count_params(teacher), "accuracy": teacher_acc},
        "student": {"arch": cfg.student, "params": count_params(probe), "ops": ops,
                    "ops_notes": getattr(probe, "ops_notes", []), "chosen_seed": best["seed"]},
        "accuracy": {"teacher": teacher_acc, "student_alone": alone, "student": kd},
        "gap_closed": gap_closed(teacher_acc, alone["mean"], kd["mean"]),
        "per_seed": clean_rows,
    }


def load_student(run_dir: Path, name: str = "student.pt") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved student from its checkpoint (arch + weights)."""
    state = load_checkpoint(run_dir / name)
    if state.get("kind") != "student":
        raise BadInput(f"{run_dir / name}: a {state.get('kind')} checkpoint, not a student")
    model = create_student(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"],
                           target_ops=frozenset(state["target_ops"]))
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise BadInput(f"{run_dir / name}: weights do not fit student '{state['arch']}' ({str(e).splitlines()[0]})") from None
    return model.eval(), state


def load_teacher(run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    state = load_checkpoint(run_dir / "teacher.pt")
    model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), state
