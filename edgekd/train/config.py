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
    data: str = defaults.DATA
    data_dir: Path = defaults.DATA_DIR
    download: bool = False
    teacher: str | tuple[str, ...] = defaults.TEACHER     # several = multi-teacher distillation
    teacher_mode: str = "mean"                            # mean | weighted | confidence
    teacher_weights: list[float] | None = None
    # Foreign teachers (edgekd.teachers): weights files paired in order with torchvision:/timm: teachers,
    # and the teacher's own view of the input (None = the data's).
    teacher_weight_files: tuple[str, ...] = ()
    teacher_input_size: int | None = None
    teacher_mean: str | None = None                       # comma-separated, or "imagenet"
    teacher_std: str | None = None
    input_size: int | None = None                         # imagefolder: the student's H = W (None = default)
    augment: bool = False                                 # random train transform; the teacher then runs live
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


def load_bundle(cfg: DistillConfig):
    """The run's data as its options ask: --data, --input-size, --augment."""
    from edgekd.data import load_data

    return load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download, augment=cfg.augment,
                     image_size=cfg.input_size)


# What --resume must agree on with the interrupted run.
RESUME_KEYS = ("data", "teacher", "student", "target", "methods", "temperature", "epochs", "teacher_epochs", "seeds",
               "lr", "batch_size", "labeled_fraction", "hint_epochs", "generations", "online", "peers",
               "teacher_mode", "teacher_weights", "loss_options", "student_taps", "teacher_taps",
               "teacher_weight_files", "teacher_input_size", "teacher_mean", "teacher_std", "input_size", "augment")


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
