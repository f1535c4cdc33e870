"""What a distill run is asked to do: `DistillConfig`, its validation, and what --resume must match."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgekd import artifacts, defaults
from edgekd.errors import BadInput


@dataclass
class DistillConfig:
    """Everything one `edgekd distill` run is asked to do; `validate()` checks it before any folder exists."""

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
    device: str = defaults.DEVICE                         # auto | cpu | cuda | cuda:N
    precision: str = defaults.PRECISION                   # auto | fp32 | bf16 | fp16 (autocast)
    channels_last: bool | None = None                     # None: defaults.channels_last_for(device)
    compile: bool = False                                 # torch.compile (see benchmarks/README.md)
    lr_schedule: str = defaults.LR_SCHEDULE               # auto | cosine | warmup-cosine | constant
    warmup_epochs: float = defaults.WARMUP_EPOCHS
    tensorboard: Path | None = None                       # also write per-epoch scalars here

    def train_options(self, run_dir: Path | None = None):
        """How every phase of this run trains (`edgekd.train.loop.TrainOptions`); metrics go to run_dir."""
        from edgekd.train.distributed import resolve_device
        from edgekd.train.loop import TrainOptions
        from edgekd.train.metrics import FILE, MetricsLog

        device = resolve_device(self.device)
        metrics = None if run_dir is None else MetricsLog.shared(Path(run_dir) / FILE, tensorboard=self.tensorboard)
        cl = defaults.channels_last_for(device) if self.channels_last is None else self.channels_last
        return TrainOptions(device=device, precision=self.precision, channels_last=cl, compile=self.compile,
                            schedule=self.lr_schedule, warmup_epochs=self.warmup_epochs, metrics=metrics)

    @property
    def teacher_list(self) -> list[str]:
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

    def training_record(self) -> dict[str, Any]:
        """How this run trained, as distill.json records it: the resolved device and the LR actually used."""
        from edgekd.train import distributed as dist

        opts = self.train_options()
        return {"device": opts.device, "precision": str(opts.autocast_dtype() or "fp32").replace("torch.", ""),
                "channels_last": opts.channels_last, "batch_size": self.batch_size, "lr_base": self.lr,
                "lr": self.lr * self.batch_size / defaults.BASE_BATCH, "base_batch": defaults.BASE_BATCH,
                "lr_schedule": self.lr_schedule, "warmup_epochs": self.warmup_epochs,
                "world_size": dist.world_size(), "backend": dist.backend()}

    def validate(self) -> None:
        from edgekd.train.losses import COMBINE_MODES

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
        self._validate_training()

    def _validate_training(self) -> None:
        from edgekd.train.distributed import resolve_device

        resolve_device(self.device)  # BadInput naming what the machine has
        if self.precision not in defaults.PRECISIONS:
            raise BadInput(f"--precision {self.precision}: valid: {', '.join(defaults.PRECISIONS)}")
        if self.lr_schedule not in defaults.LR_SCHEDULES:
            raise BadInput(f"--lr-schedule {self.lr_schedule}: valid: {', '.join(defaults.LR_SCHEDULES)}")
        if not self.warmup_epochs >= 0:
            raise BadInput(f"--warmup-epochs {self.warmup_epochs}: must be >= 0")
        if self.compile:
            raise BadInput("--compile: refused; torch.compile did not beat eager training in "
                           "benchmarks/bench_throughput.py (see benchmarks/README.md)")
        if self.tensorboard is not None:
            from edgekd.train.metrics import check_tensorboard

            check_tensorboard()


# What --resume must agree on with the interrupted run.
RESUME_KEYS = ("data", "teacher", "student", "target", "methods", "temperature", "epochs", "teacher_epochs", "seeds",
               "lr", "batch_size", "labeled_fraction", "hint_epochs", "generations", "online", "peers",
               "teacher_mode", "teacher_weights", "loss_options", "student_taps", "teacher_taps", "lr_schedule",
               "warmup_epochs")


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
