"""Training: the teacher, the student alone (the control) and the distilled student.

Read top to bottom: config → data and models → teacher → one `fit` loop shared
by every phase (checkpoint each epoch, resume, NaN guard) → seeds → summary.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd import distributed as dist
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
    teacher: str | tuple[str, ...] = defaults.TEACHER     # several = multi-teacher distillation
    teacher_mode: str = "mean"                            # mean | weighted | confidence
    teacher_weights: list[float] | None = None
    hint_epochs: int = 0                                  # FitNets stage 1 (needs a fitnet term)
    generations: int = 0                                  # born-again self-distillation: K generations
    cache_teacher: bool = True                            # cache teacher outputs when inputs are deterministic
    online: bool = False                                  # deep mutual learning, no pretrained teacher
    peers: int = 2
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    student_taps: dict[str, str] = field(default_factory=dict)   # role -> module name overrides
    teacher_taps: dict[str, str] = field(default_factory=dict)
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

    @property
    def teacher_list(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

    def validate(self) -> None:
        from edgekd.losses import COMBINE_MODES

        if not self.teacher_list:
            raise BadInput("--teacher: give at least one teacher")
        if self.teacher_mode not in COMBINE_MODES:
            raise BadInput(f"--teacher-mode '{self.teacher_mode}': valid: {', '.join(COMBINE_MODES)}")
        if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teacher_list):
            raise BadInput(f"--teacher-weight: {len(self.teacher_weights)} weights for "
                           f"{len(self.teacher_list)} teachers; give one per --teacher")
        if self.online and self.peers < 2:
            raise BadInput(f"--peers {self.peers}: online distillation needs at least 2 students")
        for key, value in (("hint_epochs", self.hint_epochs), ("generations", self.generations)):
            if value < 0:
                raise BadInput(f"--{key.replace('_', '-')} {value}: must be >= 0")
        for key, value, lo in (("epochs", self.epochs, 1), ("teacher_epochs", self.teacher_epochs, 1),
                               ("seeds", self.seeds, 1), ("batch_size", self.batch_size, 1)):
            if value < lo:
                raise BadInput(f"--{key.replace('_', '-')} {value}: must be >= {lo}")
        named = {m.partition(":")[0] for m in self.methods}
        for loss in self.loss_options:
            if loss not in named:
                raise BadInput(f"--loss-option {loss}.…: no --method {loss} (methods: {', '.join(sorted(named))})")
        if self.hint_epochs and not any(m.partition(":")[0] == "fitnet" for m in self.methods):
            raise BadInput(f"--hint-epochs {self.hint_epochs}: the hint stage needs a fitnet term in --method")
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
    """The batches of one epoch. The order depends only on (seed, epoch), so a resumed run sees
    the same batches; under torch.distributed each rank takes its share of that order with
    batch_size / world_size, so the global batch is the same as in one process."""
    w = dist.world_size()
    if batch_size % w:
        raise BadInput(f"--batch-size {batch_size}: must be divisible by the number of processes ({w})")
    order = dist.shard(len(ds), seed=seed, epoch=epoch, shuffle=shuffle)
    return DataLoader(ds, batch_size=batch_size // w, sampler=order, num_workers=defaults.NUM_WORKERS)


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outs = [model(x) for x, *_ in DataLoader(ds, batch_size=batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


@torch.no_grad()
def accuracy(model: nn.Module, ds: Dataset) -> float:
    """Test/val accuracy; under torch.distributed each rank scores a shard and the counts are summed."""
    model.eval()
    idx = dist.shard(len(ds), seed=0, epoch=0, shuffle=False)[: len(ds)]
    idx = sorted(set(idx))  # padding repeats indices; count each sample once
    labels = torch.as_tensor(dataset_labels(ds))
    correct = 0
    for x, *_rest, i in _indexed_batches(ds, idx):
        correct += int((model(x).argmax(1) == labels[i]).sum())
    correct, total = dist.sum_across(correct, len(idx))
    return correct / total if total else float("nan")


def _indexed_batches(ds: Dataset, idx: list[int], batch_size: int = 256):
    for k in range(0, len(idx), batch_size):
        chunk = idx[k:k + batch_size]
        xs = torch.stack([torch.as_tensor(ds[i][0]) for i in chunk])
        yield xs, torch.as_tensor(chunk)


# ---------------------------------------------------------------- what the student learns from
@dataclass
class TeacherSource:
    """The teacher side of a phase: one or more live teachers, or their cached outputs.

    Several teachers are mixed by `combine_teachers` into one set of logits; feature
    losses read the first teacher's taps. When the inputs are deterministic the outputs
    are computed once (`build_cache`), so a distillation epoch costs about what a
    student-alone epoch costs.
    """

    teachers: list[nn.Module]
    taps: dict[str, str] = field(default_factory=dict)   # role -> module name in teachers[0]
    mode: str = "mean"
    weights: list[float] | None = None
    temperature: float = defaults.TEMPERATURE
    cache: dict[str, Any] | None = None

    def live(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from edgekd.features import FeatureTap
        from edgekd.losses import combine_teachers

        # inference_mode: no autograd bookkeeping at all; clone so the student's graph may keep them.
        with torch.inference_mode(), FeatureTap(self.teachers[0], self.taps, detach=True) as tap:
            logits = [t.eval()(x) for t in self.teachers]
            feats = dict(tap.outputs)
        out = logits[0] if len(logits) == 1 else combine_teachers(
            logits, mode=self.mode, weights=self.weights, temperature=self.temperature)
        return out.clone(), {k: v.clone() for k, v in feats.items()}

    def outputs(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.cache is None:
            return self.live(x)
        return self.cache["logits"][idx], {k: v[idx] for k, v in self.cache["feats"].items()}

    def build_cache(self, ds: Dataset, *, batch_size: int = 256, cache_dir: Path | None = None) -> "TeacherSource":
        """Run the teacher(s) once over `ds`; features too, unless they are too big.

        With `cache_dir` (one process) the outputs go straight into memory-mapped .npy files
        there, so a large dataset's cache lives on disk, not in RAM. Under torch.distributed
        each rank runs its own shard and the shards are assembled in memory."""
        if cache_dir is not None and dist.world_size() == 1:
            return self._build_mmap(ds, batch_size, cache_dir)
        idx = sorted(set(dist.shard(len(ds), seed=0, epoch=0, shuffle=False)))
        logits, feats = [], {}
        for x, _ in _indexed_batches(ds, idx, batch_size):
            lo, fe = self.live(x)
            logits.append(lo)
            for k, v in fe.items():
                feats.setdefault(k, []).append(v)
        n_bytes = sum(sum(t.numel() for t in v) * 4 for v in feats.values()) * dist.world_size()
        if n_bytes > CACHE_FEATURE_BYTES:
            # Feature maps of a big dataset would not fit: keep the teacher live instead.
            return self
        n = len(ds)
        self.cache = {"logits": dist.fill_rows(torch.cat(logits), idx, n),
                      "feats": {k: dist.fill_rows(torch.cat(v), idx, n) for k, v in feats.items()}}
        return self


    def _build_mmap(self, ds: Dataset, batch_size: int, cache_dir: Path) -> "TeacherSource":
        cache_dir.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.memmap] = {}
        start = 0
        for x, *_ in DataLoader(ds, batch_size=batch_size, num_workers=defaults.NUM_WORKERS):
            lo, fe = self.live(x)
            for key, value in {"logits": lo, **{f"feat.{k}": v for k, v in fe.items()}}.items():
                if key not in arrays:
                    if key != "logits" and value[0].numel() * 4 * len(ds) > CACHE_FEATURE_BYTES:
                        return self  # feature maps this big: keep the teacher live
                    arrays[key] = np.lib.format.open_memmap(cache_dir / f"teacher.{key}.npy", mode="w+",
                                                            dtype=np.float32, shape=(len(ds), *value.shape[1:]))
                arrays[key][start:start + len(x)] = value.numpy()
            start += len(x)
        for a in arrays.values():
            a.flush()
        t = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.cache = {"logits": t["logits"], "feats": {k[5:]: v for k, v in t.items() if k.startswith("feat.")}}
        return self


CACHE_FEATURE_BYTES = 1 << 30


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


def _load_reason(e: Exception) -> str:
    """The informative line of torch.load's error (its weights_only notice is boilerplate)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        detail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()[0]
        return f"refused by the safe loader: {detail}"
    first = text.strip().splitlines()[0] if text.strip() else ""
    return f"{type(e).__name__}: {first[:100]}" if first else type(e).__name__


# The fields each kind of edgekd checkpoint must hold.
REQUIRED_FIELDS = {
    "teacher": ("arch", "in_channels", "num_classes", "model"),
    "student": ("arch", "in_channels", "num_classes", "target_ops", "model"),
    "checkpoint": ("epoch", "history", "rng"),
}


def load_checkpoint(path: Path, *, kind: str | None = None) -> dict[str, Any]:
    """Load any edgekd .pt safely (weights_only); anything else is BadInput naming the file.
    With `kind`, the checkpoint must be of that kind and hold its fields."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a non-checkpoint file
        raise BadInput(f"{path}: not an edgekd checkpoint ({_load_reason(e)})") from None
    if not isinstance(obj, dict) or "kind" not in obj:
        raise BadInput(f"{path}: not an edgekd checkpoint (no 'kind' field)")
    if kind is not None and obj["kind"] != kind:
        raise BadInput(f"{path}: a {obj['kind']} checkpoint, not a {kind}")
    missing = [f for f in REQUIRED_FIELDS.get(obj["kind"], ()) if f not in obj]
    if missing:
        raise BadInput(f"{path}: {obj['kind']} checkpoint lacks {', '.join(missing)}")
    return obj


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
    from edgekd.features import FeatureTap
    from edgekd.losses import hint_objective, hint_stage_params

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


# ---------------------------------------------------------------- teacher
def _named_teacher(name: str, cfg: DistillConfig, bundle: DataBundle, run_dir: Path, slot: str):
    C = bundle.input_shape[0]
    if name.endswith(".pt") or Path(name).is_file():
        state = load_checkpoint(Path(name), kind="teacher")
        if state["num_classes"] != bundle.num_classes:
            raise BadInput(f"{name}: teacher has {state['num_classes']} classes, "
                           f"--data {bundle.name} has {bundle.num_classes}")
        model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
        model.load_state_dict(state["model"])
        return model.eval(), {"source": name, "arch": state["arch"]}
    model = create_teacher(name, in_channels=C, num_classes=bundle.num_classes)
    ph = Phase(slot, model, build_objective(["ce"]), Indexed(bundle.train), bundle.val,
               cfg.teacher_epochs, seed=0, lr=cfg.lr, batch_size=cfg.batch_size)
    fit(ph, ckpt=run_dir / "checkpoints" / f"{slot}.pt", resume=cfg.resume, progress=cfg.progress)
    artifacts.save_torch(run_dir / f"{slot}.pt", {
        "kind": "teacher", "arch": name, "in_channels": C,
        "num_classes": bundle.num_classes, "model": model.state_dict()})
    return model.eval(), {"source": "trained", "arch": name, "epochs": cfg.teacher_epochs}


def check_teacher_paths(cfg: DistillConfig, bundle: DataBundle | None = None) -> None:
    """Every --teacher is a registry name or an edgekd teacher checkpoint that fits the data."""
    from edgekd.models import TEACHERS

    for name in cfg.teacher_list:
        if name in TEACHERS:
            continue
        if name.endswith(".pt") or os.sep in name:
            state = load_checkpoint(Path(name), kind="teacher")
            if state["arch"] not in TEACHERS:
                raise BadInput(f"{name}: teacher arch '{state['arch']}' is unknown; valid: {', '.join(TEACHERS)}")
            if bundle is not None and (state["num_classes"], state["in_channels"]) != (bundle.num_classes, bundle.input_shape[0]):
                raise BadInput(f"{name}: teacher takes {state['in_channels']} channels and has {state['num_classes']} "
                               f"classes; --data {bundle.name} has {bundle.input_shape[0]} and {bundle.num_classes}")
            continue
        create_teacher(name, in_channels=1, num_classes=2)  # raises BadInput listing the valid names


def check_taps(cfg: DistillConfig, bundle: DataBundle, student: nn.Module, objective: Objective) -> None:
    """Tap names resolve on the student and on each registry teacher, before any folder is made."""
    from edgekd.features import ROLES

    for side, taps in (("--student-tap", cfg.student_taps), ("--teacher-tap", cfg.teacher_taps)):
        for role in taps:
            if role not in ROLES:
                raise BadInput(f"{side} {role}=...: unknown role; valid: {', '.join(ROLES)}")
            if role not in objective.taps:
                raise BadInput(f"{side} {role}=...: no --method reads '{role}' (the objective is {objective.describe()})")
    if not objective.taps:
        return
    resolve_taps(student, objective, cfg.student_taps)
    from edgekd.models import TEACHERS

    for name in cfg.teacher_list:
        if name in TEACHERS:
            teacher = create_teacher(name, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes)
            _dry_prepare(cfg, bundle, student, teacher)


def _dry_prepare(cfg: DistillConfig, bundle: DataBundle, student: nn.Module, teacher: nn.Module) -> None:
    """One batch through a fresh objective with the real taps: feature shapes that cannot be
    matched are refused here, before the run folder exists, not after a teacher is trained."""
    from edgekd.features import FeatureTap, forward_with_taps

    obj = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
    s_taps, t_taps = resolve_taps(student, obj, cfg.student_taps), resolve_taps(teacher, obj, cfg.teacher_taps)
    x, y, *_ = next(iter(DataLoader(bundle.train, batch_size=4)))
    with FeatureTap(student.eval(), s_taps) as tap, torch.no_grad():
        s_logits = student(x)
    t_logits, t_feats = forward_with_taps(teacher.eval(), x, t_taps)
    obj.prepare(KDBatch(student_logits=s_logits, labels=y, teacher_logits=t_logits, student_feats=dict(tap.outputs),
                        teacher_feats=t_feats), student_taps=s_taps, teacher_taps=t_taps)


# What --resume must agree on with the interrupted run.
RESUME_KEYS = ("data", "teacher", "student", "target", "methods", "temperature", "epochs", "teacher_epochs", "seeds",
               "lr", "batch_size", "labeled_fraction", "hint_epochs", "generations", "online", "peers",
               "teacher_mode", "teacher_weights", "loss_options", "student_taps", "teacher_taps")


def check_resume(cfg: DistillConfig) -> None:
    """--resume continues the same run: the options that shape training must match config.json."""
    if cfg.run is None:
        raise BadInput("--resume needs --run DIR (the run folder to continue)")
    path = Path(cfg.run) / "config.json"
    if not path.is_file():
        raise BadInput(f"--resume: {path} not found; nothing to continue (drop --resume to start this run)")
    saved = artifacts.read_json(path)
    mine = json.loads(json.dumps(asdict(cfg), default=str))
    diff = [k for k in RESUME_KEYS if k in saved and saved[k] != mine.get(k)]
    if diff:
        listed = ", ".join(f"--{k.replace('_', '-')} {mine.get(k)!r} (run has {saved[k]!r})" for k in diff)
        raise BadInput(f"--resume: {listed}; resume with the run's own options")


def obtain_teachers(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Load each teacher from a .pt path, or train the named one (seed 0); saved as teacher.pt, teacher1.pt, …"""
    return [_named_teacher(name, cfg, bundle, run_dir, "teacher" if i == 0 else f"teacher{i}")
            for i, name in enumerate(cfg.teacher_list)]


def obtain_teacher(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    return obtain_teachers(cfg, bundle, run_dir)[0]


def teacher_source(cfg: DistillConfig, bundle: DataBundle, teachers: list[nn.Module], objective: Objective,
                   cache_dir: Path | None = None, overrides: dict[str, str] | None = None) -> TeacherSource:
    taps = resolve_taps(teachers[0], objective, overrides)
    src = TeacherSource(teachers, taps=taps, mode=cfg.teacher_mode, weights=cfg.teacher_weights,
                        temperature=cfg.temperature)
    # Deterministic inputs: the teacher's outputs are computed once, not every epoch.
    return src if bundle.augmented or not cfg.cache_teacher else src.build_cache(bundle.train, cache_dir=cache_dir)


# ---------------------------------------------------------------- students
def make_student(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return create_student(cfg.student, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes,
                          target_ops=target.ops_allow)


def resolve_taps(model: nn.Module, objective: Objective, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """{role: module name} for the roles the objective reads: `overrides` (--student-tap /
    --teacher-tap ROLE=MODULE) first, the model's defaults for the rest. A name that matches
    no module is BadInput listing the nearest module names."""
    from edgekd.features import default_taps, find_module

    overrides = overrides or {}
    taps = {}
    for role in objective.taps:
        if role in overrides:
            find_module(model, overrides[role], tap=role)
            taps[role] = overrides[role]
        else:
            taps.update(default_taps(model, roles=[role]))
    return taps


def _student_taps(model: nn.Module, objective: Objective, cfg: DistillConfig | None = None) -> dict[str, str]:
    return resolve_taps(model, objective, cfg.student_taps if cfg else None)


def fit_scored(ph: Phase, test: Dataset, **fit_kwargs: Any) -> dict[str, float]:
    """`fit`, then what every caller reports: final val accuracy, test accuracy, training seconds."""
    t0 = time.perf_counter()
    fit(ph, **fit_kwargs)
    seconds = time.perf_counter() - t0
    return {"val": ph.history[-1]["val_acc"], "test": accuracy(ph.model, test), "seconds": seconds}


def _fit_into(row: dict, key: str, ph: Phase, cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> None:
    r = fit_scored(ph, bundle.test, ckpt=run_dir / "checkpoints" / f"{ph.name.replace('/', '-')}.pt",
                   resume=cfg.resume, progress=cfg.progress)
    row[key], row[f"{key}_val"], row[f"{key}_seconds"] = r["test"], r["val"], r["seconds"]
    row[f"_{key}_model"] = ph.model


def train_control(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, run_dir: Path, seed: int,
                  labeled_only: Dataset) -> dict[str, Any]:
    """The student alone on the labeled data, same epochs and steps: the control."""
    row: dict[str, Any] = {"seed": seed}
    alone = Phase(f"alone/seed{seed}", make_student(cfg, bundle, target, seed), build_objective(["ce"]),
                  Indexed(labeled_only), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size)
    _fit_into(row, "student_alone", alone, cfg, bundle, run_dir)
    return row


def labeled_subset(cfg: DistillConfig, bundle: DataBundle) -> tuple[np.ndarray, Dataset]:
    mask = labeled_mask(dataset_labels(bundle.train), cfg.labeled_fraction)
    return mask, Repeated(torch.utils.data.Subset(bundle.train, np.flatnonzero(mask).tolist()), len(mask))


def train_students(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, teacher: nn.Module | list[nn.Module],
                   run_dir: Path, objective: Objective, *, source: TeacherSource | None = None,
                   controls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """For each seed: the student alone (control), then distilled (or born-again generations).
    `controls` reuses rows whose control was already trained (as `compare` does)."""
    teachers = teacher if isinstance(teacher, list) else [teacher]
    mask, labeled_only = labeled_subset(cfg, bundle)
    if source is None and objective.needs_teacher and cfg.generations == 0:
        source = teacher_source(cfg, bundle, teachers, objective, cache_dir=run_dir / "cache",
                                overrides=cfg.teacher_taps)
    results = []
    for seed in range(cfg.seeds):
        row = train_control(cfg, bundle, target, run_dir, seed, labeled_only) if controls is None else \
            {k: v for k, v in controls[seed].items() if k.startswith(("seed", "student_alone", "_student_alone"))}
        gens = [(None, source)] if cfg.generations == 0 else [
            (g, None) for g in range(1, cfg.generations + 1)]
        prev = row["_student_alone_model"]
        for gen, src in gens:
            # Born-again: generation g learns from generation g-1 of the same architecture,
            # starting from the student trained alone (generation 0).
            obj = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
            if gen is not None:
                src = teacher_source(cfg, bundle, [prev], obj)
            model = make_student(cfg, bundle, target, seed + 1000 * (gen or 0))
            name = f"kd/seed{seed}" if gen is None else f"kd/seed{seed}/gen{gen}"
            kd = Phase(name, model, obj, Indexed(bundle.train, mask), bundle.val, cfg.epochs, seed, cfg.lr,
                       cfg.batch_size, source=src, student_taps=_student_taps(model, obj, cfg), hint_epochs=cfg.hint_epochs)
            _fit_into(row, "student", kd, cfg, bundle, run_dir)
            if gen is not None:
                row.setdefault("generations", []).append({"generation": gen, "accuracy": row["student"]})
            prev = kd.model
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
def ensemble_accuracy(cfg: DistillConfig, teachers: list[nn.Module], ds: Dataset) -> float:
    """Test accuracy of what the student learns from: the teacher, or the teachers' mixture."""
    if len(teachers) == 1:
        return accuracy(teachers[0], ds)
    src = TeacherSource(teachers, mode=cfg.teacher_mode, weights=cfg.teacher_weights, temperature=cfg.temperature)
    logits = torch.cat([src.live(x)[0] for x, *_ in DataLoader(ds, batch_size=256)])
    return float((logits.argmax(1) == torch.as_tensor(dataset_labels(ds))).float().mean())


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run the whole distill stage; returns the summary written to distill.json."""
    cfg.validate()
    t_start = time.perf_counter()
    target = load_target(cfg.target)
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
    bundle = load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download)
    probe = make_student(cfg, bundle, target, 0)
    ops = check_student_ops(probe, input_shape=bundle.input_shape, target=target)
    check_teacher_paths(cfg, bundle)  # before any folder is made
    check_taps(cfg, bundle, probe, objective)
    if cfg.resume:
        check_resume(cfg)
    run_dir = artifacts.create_run(cfg.run, resume=cfg.resume)
    artifacts.write_json(run_dir / "config.json", {**asdict(cfg), "data_info": bundle.describe()})
    teachers = obtain_teachers(cfg, bundle, run_dir)
    models = [m for m, _ in teachers]
    teacher_acc = ensemble_accuracy(cfg, models, bundle.test)
    if cfg.online:
        from edgekd.online import train_mutual

        rows = train_mutual(cfg, bundle, target, run_dir, peers=cfg.peers)
    else:
        rows = train_students(cfg, bundle, target, models, run_dir, objective)
    best = max(rows, key=lambda r: (r["student_val"], -r["seed"]))
    save_student(run_dir / "student.pt", cfg, bundle, best["_student_model"], seed=best["seed"], ops=ops)
    save_student(run_dir / "student_alone.pt", cfg, bundle, best["_student_alone_model"], seed=best["seed"], ops=ops)
    summary = summarise(cfg, bundle, target, teachers, teacher_acc, rows, best, probe, ops)
    summary["wall_seconds"] = time.perf_counter() - t_start
    artifacts.write_json(run_dir / "distill.json", summary)
    artifacts.set_latest(run_dir)
    summary["run"] = str(run_dir)
    return summary


def save_student(path: Path, cfg: DistillConfig, bundle: DataBundle, model: nn.Module, *,
                 seed: int, ops: list[str], net_kwargs: dict[str, Any] | None = None) -> None:
    """`net_kwargs` (for architectures outside the registry, e.g. from select-student) are the
    keyword arguments of `student_net`; plain ints, strings and lists so weights_only loads them."""
    state = {"kind": "student", "arch": cfg.student, "in_channels": bundle.input_shape[0],
             "num_classes": bundle.num_classes, "target": cfg.target, "seed": seed, "ops": ops,
             "target_ops": sorted(load_target(cfg.target).ops_allow), "model": model.state_dict()}
    if net_kwargs is not None:
        state["net_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in net_kwargs.items()}
    artifacts.save_torch(path, state)


def method_label(cfg: DistillConfig) -> str:
    if cfg.online:
        return f"online: deep mutual learning, {cfg.peers} peers"
    label = build_objective(list(cfg.methods), temperature=cfg.temperature).describe()
    if cfg.generations:
        label += f", born-again x{cfg.generations}"
    if len(cfg.teacher_list) > 1:
        label += f", {len(cfg.teacher_list)} teachers ({cfg.teacher_mode})"
    return label


def summarise(cfg, bundle, target, teachers, teacher_acc, rows, best, probe, ops) -> dict[str, Any]:
    alone = mean_std([r["student_alone"] for r in rows])
    kd = mean_std([r["student"] for r in rows])
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    infos = [{**info, "params": count_params(m)} for m, info in teachers]
    return {
        "data": bundle.describe(), "target": target.name, "methods": list(cfg.methods),
        "objective": method_label(cfg), "temperature": cfg.temperature, "epochs": cfg.epochs, "seeds": cfg.seeds,
        "labeled_fraction": cfg.labeled_fraction,
        "teacher": {**infos[0], "accuracy": teacher_acc, "all": infos},
        "student": {"arch": cfg.student, "params": count_params(probe), "ops": ops,
                    "ops_notes": getattr(probe, "ops_notes", []), "chosen_seed": best["seed"]},
        "accuracy": {"teacher": teacher_acc, "student_alone": alone, "student": kd},
        "gap_closed": gap_closed(teacher_acc, alone["mean"], kd["mean"]),
        "per_seed": clean_rows,
        "seconds": {"student_alone": sum(r["student_alone_seconds"] for r in rows),
                    "student": sum(r["student_seconds"] for r in rows)},
    }


def load_student(run_dir: Path, name: str = "student.pt") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved student from its checkpoint (arch + weights)."""
    state = load_checkpoint(run_dir / name, kind="student")
    common = dict(in_channels=state["in_channels"], num_classes=state["num_classes"],
                  target_ops=frozenset(state["target_ops"]))
    if "net_kwargs" in state:
        from edgekd.models import student_net

        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in state["net_kwargs"].items()}
        model = student_net(**common, **kw)
    else:
        model = create_student(state["arch"], **common)
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
