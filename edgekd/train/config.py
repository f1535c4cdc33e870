"""What a distill run is asked to do: `DistillConfig`, its validation, and what --resume must match."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from edgekd import defaults, options
from edgekd.errors import BadInput

# Options that follow the data (`defaults.recipe`) when left None (declared in edgekd.options).
FROM_DATA = options.FROM_DATA


@dataclass
class DistillConfig:
    """Everything one distill run is asked to do (the `edgekd distill` options, as the API names
    them; each declared in `edgekd.options`, with which tests/test_options.py checks every field and
    default); `validate()` refuses bad values before anything is paid for (ranges and choices from the
    table). Saved as config.json (`edgekd.run.config`).

    The FROM_DATA fields default to the digits values (`defaults.TEACHER`, …). Set to None —
    as the CLI does for every such option the user leaves out — they follow the data:
    `for_data` fills them from `defaults.recipe`, and distill/compare call it after loading
    the data. A value given always wins."""

    data: str = defaults.DATA
    data_dir: Path | None = None                          # None: ./data, then the system folder
    download: bool = False
    teacher: str | tuple[str, ...] | None = defaults.TEACHER  # several = multi-teacher distillation
    teacher_mode: str = defaults.TEACHER_MODE             # mean | weighted | confidence
    teacher_weights: list[float] | None = None
    # Foreign teachers (edgekd.models.foreign): weights files paired in order with torchvision:/timm: teachers,
    # and the teacher's own view of the input (None = the data's).
    teacher_weight_files: tuple[str, ...] = ()
    teacher_input_size: tuple[int, int] | None = None     # (H, W); None = the data's, or an ONNX teacher's fixed dims
    teacher_mean: str | None = None                       # comma-separated, or "imagenet"
    teacher_std: str | None = None
    input_size: tuple[int, int] | None = None             # imagefolder: the student's (H, W) (None = default)
    resize: str | None = None                             # imagefolder: stretch | pad | crop (None: defaults.RESIZE)
    unlabeled: tuple[str, ...] = ()                       # folders of unlabeled images added to the transfer set
    teacher_outputs: str = defaults.TEACHER_OUTPUTS       # auto | logits | probabilities | log-probabilities
    class_order: str | None = None                        # the data class of each teacher output (indices or names)
    augment: bool = False                                 # random train transform; the teacher then runs live
    hint_epochs: int = 0                                  # FitNets stage 1 (needs a fitnet term)
    generations: int = 0                                  # born-again self-distillation: K generations
    cache_teacher: bool = True                            # cache teacher outputs when inputs are deterministic
    online: bool = False                                  # deep mutual learning, no pretrained teacher
    peers: int = defaults.PEERS
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    student_taps: dict[str, str] = field(default_factory=dict)   # role -> module name overrides
    teacher_taps: dict[str, str] = field(default_factory=dict)
    student: str | None = defaults.STUDENT
    target: str = defaults.TARGET
    methods: tuple[str, ...] | None = defaults.METHODS
    temperature: float | None = defaults.TEMPERATURE
    epochs: int | None = defaults.EPOCHS
    teacher_epochs: int | None = defaults.TEACHER_EPOCHS
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
    deterministic: bool = False                           # deterministic kernels (distributed.make_deterministic)

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
        if self.teacher is None:
            return []
        return [self.teacher] if isinstance(self.teacher, str) else list(self.teacher)

    def training_record(self) -> dict[str, Any]:
        """How this run trained, as distill.json records it: the resolved device and the LR actually used."""
        from edgekd.train import distributed as dist

        opts = self.train_options()
        return {"device": opts.device, "precision": str(opts.autocast_dtype() or "fp32").replace("torch.", ""),
                "channels_last": opts.channels_last, "batch_size": self.batch_size, "lr_base": self.lr,
                "lr": self.lr * self.batch_size / defaults.BASE_BATCH, "base_batch": defaults.BASE_BATCH,
                "lr_schedule": self.lr_schedule, "warmup_epochs": self.warmup_epochs,
                "world_size": dist.world_size(), "backend": dist.backend(), "deterministic": self.deterministic}

    def for_data(self, bundle: Any) -> "DistillConfig":
        """A copy with every FROM_DATA option left None set by `defaults.recipe` for `bundle`, and the
        teacher's size set by an ONNX teacher's fixed input dims (a conflicting --teacher-input-size
        is BadInput: `edgekd.models.foreign.teacher_size`)."""
        from dataclasses import replace

        from edgekd.models.foreign import parse_specs, teacher_size

        rule = defaults.recipe(n_train=len(bundle.train), input_shape=bundle.input_shape,
                               num_classes=bundle.num_classes)
        if self.labeled_fraction == 0:
            rule = {**rule, "methods": defaults.LABEL_FREE_METHODS}   # no labels: no ce term
        out = replace(self, **{k: rule[k] for k in FROM_DATA if getattr(self, k) is None})
        size = teacher_size(parse_specs(out.teacher_list, list(out.teacher_weight_files)), out.teacher_input_size)
        return replace(out, teacher_input_size=size)

    def validate(self) -> None:
        """Refuse bad values before anything is paid for. Messages name parameters (`epochs`);
        the CLI shows them as flags (`--epochs`)."""
        if self.teacher is not None and not self.teacher_list:
            raise BadInput("teacher: give at least one teacher", params=["teacher"])
        options.check(options.DISTILL, {f.name: getattr(self, f.name) for f in fields(self)})
        if self.teacher_weights is not None and len(self.teacher_weights) != len(self.teacher_list):
            raise BadInput(f"teacher_weights: {len(self.teacher_weights)} weights for "
                           f"{len(self.teacher_list)} teachers; give one per teacher", params=["teacher_weights"])
        if self.online and self.peers < 2:
            raise BadInput(f"peers {self.peers}: online distillation needs at least 2 students", params=["peers"])
        self._validate_methods()
        self._validate_label_free()
        self._validate_training()

    def _validate_label_free(self) -> None:
        """labeled_fraction 0: distillation from the teacher alone; what needs a label is refused."""
        from edgekd.models import TEACHERS

        if self.labeled_fraction != 0:
            return
        named = {m.partition(":")[0] for m in self.methods or ()}
        for bad, why, params in (
                ("ce" in named, "methods ce: labeled_fraction 0 leaves no label for ce; distill from the teacher "
                                "alone with soft and/or hard", ["methods", "labeled_fraction"]),
                (self.online, "online: deep mutual learning trains on labels; labeled_fraction 0 leaves none",
                 ["online", "labeled_fraction"]),
                (self.generations > 0, "generations: born-again starts from the student trained alone on labels; "
                                       "labeled_fraction 0 leaves none", ["generations", "labeled_fraction"]),
                (any(t in TEACHERS for t in self.teacher_list) or self.teacher is None,
                 "teacher: labeled_fraction 0 needs a teacher from outside (a file, or torchvision:/timm: with "
                 "its weights file); a registry teacher is trained on labels", ["teacher", "labeled_fraction"])):
            if bad:
                raise BadInput(why, params=params)

    def _validate_training(self) -> None:
        from edgekd.train.distributed import resolve_device

        try:
            resolve_device(self.device)  # names what the machine has
        except BadInput as e:
            raise BadInput(str(e), params=["device"]) from None
        if self.compile:
            raise BadInput("compile: refused; torch.compile did not beat eager channels_last training in "
                           "benchmarks/bench_throughput.py (see benchmarks/README.md)", params=["compile"])
        if self.tensorboard is not None:
            from edgekd.train.metrics import check_tensorboard

            check_tensorboard()

    def _validate_methods(self) -> None:
        named = {m.partition(":")[0] for m in self.methods or defaults.METHODS}
        for loss in self.loss_options:
            if loss not in named:
                raise BadInput(f"loss_options {loss}.…: no methods {loss} (methods: {', '.join(sorted(named))})",
                               params=["loss_options", "methods"])
        if self.hint_epochs and "fitnet" not in named:
            raise BadInput(f"hint_epochs {self.hint_epochs}: the hint stage needs a fitnet term in methods",
                           params=["hint_epochs", "methods"])


def load_bundle(cfg: DistillConfig, *, image_size: Any = None):
    """The run's data as its options ask: --data, --input-size (or `image_size`), --resize, --unlabeled,
    --augment."""
    from edgekd.data import load_data

    return load_data(cfg.data, data_dir=cfg.data_dir, download=cfg.download, augment=cfg.augment,
                     image_size=image_size or cfg.input_size, resize=cfg.resize, unlabeled=cfg.unlabeled)


# What --resume must agree on with the interrupted run.
RESUME_KEYS = ("data", "teacher", "student", "target", "methods", "temperature", "epochs", "teacher_epochs", "seeds",
               "lr", "batch_size", "labeled_fraction", "hint_epochs", "generations", "online", "peers",
               "teacher_mode", "teacher_weights", "loss_options", "student_taps", "teacher_taps", "lr_schedule",
               "warmup_epochs", "teacher_weight_files", "teacher_input_size", "teacher_mean", "teacher_std",
               "input_size", "augment", "resize", "unlabeled", "teacher_outputs", "class_order")


def check_resume(cfg: DistillConfig) -> None:
    """--resume continues the same run: the options that shape training must match config.json."""
    if cfg.run is None:
        raise BadInput("resume needs run (the run folder to continue)", params=["resume", "run"])
    from edgekd.run.config import load_config

    path = Path(cfg.run) / "config.json"
    if not path.is_file():
        raise BadInput(f"resume: {path} not found; nothing to continue (start this run without resume)",
                       params=["resume"])
    saved = load_config(path).to_json()
    mine = json.loads(json.dumps(asdict(cfg), default=str))
    diff = [k for k in RESUME_KEYS if k in saved and saved[k] != mine.get(k)]
    if diff:
        listed = ", ".join(f"{k} {mine.get(k)!r} (run has {saved[k]!r})" for k in diff)
        raise BadInput(f"resume: {listed}; resume with the run's own options", params=["resume", *diff])
