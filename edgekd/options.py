"""Every option of distill, compare, select-teacher and select-student, declared once: `OPTIONS`.

One `Option` per option and command group: its name (the API keyword, the `DistillConfig` field and the
recipe key), the type of one value on the command line, its default (from `edgekd.defaults`), its help,
its valid range or choices, and the commands that take it. It is data: `edgekd.cli` builds each
command's typer options from it, `DistillConfig.validate` and the API check ranges and choices with
`check`, `edgekd.recipe` reads `--config` files against it, `edgekd.run.config` types config.json
with it, and tests/test_options.py fails when a CLI flag, an API keyword or a DistillConfig field
disagrees with it (name, default or presence).

Levels: "option" is an experiment setting (API keyword, recipe key); "run" is an API keyword that a
recipe may not set (where to write, resume, progress, the recipe itself); "cli" exists on the command
line only (--json, --quiet, the torchrun launcher's flags). Imports no torch (`edgekd --help` stays fast).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from edgekd import defaults
from edgekd.errors import BadInput

DISTILL, COMPARE, SELECT_TEACHER, SELECT_STUDENT = "distill", "compare", "select-teacher", "select-student"
COMMANDS = (DISTILL, COMPARE, SELECT_TEACHER, SELECT_STUDENT)
TRAIN = (DISTILL, COMPARE)
ALL = COMMANDS
NOT_TEACHER_SELECT = (DISTILL, COMPARE, SELECT_STUDENT)
# Options left None that follow the data (`defaults.recipe`); DistillConfig keeps the digits values as
# its own defaults (`defaults.TEACHER`, ...), so that a plain DistillConfig() is a digits run.
FROM_DATA = ("teacher", "student", "methods", "temperature", "epochs", "teacher_epochs")
_RULE = "default: from the data, see `defaults.recipe`"


@dataclass(frozen=True)
class Option:
    """One option as every layer sees it. `flag` defaults to `--name-with-dashes`; a bool is a
    `--x/--no-x` pair unless `switch` (then `--x` alone). `repeatable`: given several times on the
    command line, a list in a recipe. Range: `minimum` (>=), `above` (>), `maximum` (<=); `choices`."""

    name: str
    type: type
    default: Any
    help: str
    commands: tuple[str, ...]
    flag: str = ""
    short: str = ""
    repeatable: bool = False
    required: bool = False
    switch: bool = False
    minimum: float | None = None
    above: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()
    level: str = "option"

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


_O = Option
OPTIONS: tuple[Option, ...] = (
    # ---------------------------------------------------------------- data
    _O("data", str, defaults.DATA, "digits | mnist | fashion-mnist | cifar10 | imagefolder:DIR", ALL),
    _O("data_dir", Path, None, "Folder with the dataset files (IDX files, directly or under torchvision's MNIST/raw, "
       "FashionMNIST/raw; cifar-10-batches-py). Default: ./data, and for fashion-mnist also "
       "/usr/share/datasets/fashion-mnist.", ALL),
    _O("download", bool, False, "Let torchvision download the dataset into --data-dir.", ALL),
    _O("input_size", str, None, "imagefolder: the student's input, N (square) or HxW in pixels, e.g. 16x64 (default: "
       "the images' own HxW, scaled down keeping the aspect ratio to at most 32x32 = 1,024 pixels).",
       NOT_TEACHER_SELECT),
    _O("resize", str, None, "imagefolder: how an image becomes HxW: stretch (the default) | pad (keep the aspect, pad "
       "right/bottom with 0) | crop (resize the short side, centre crop).", NOT_TEACHER_SELECT,
       choices=defaults.RESIZES),
    _O("unlabeled", Path, (), "imagefolder: a folder of unlabeled images (any tree) added to the transfer set (the "
       "teacher labels them); repeatable. A held-out share scores agreement with the teacher.", (DISTILL,),
       repeatable=True),
    _O("augment", bool, False, "Random-resized crop + flip on the train set (imagefolder, cifar10); the teacher runs "
       "live.", (DISTILL,)),
    _O("labeled_fraction", float, defaults.LABELED_FRACTION, "Keep labels for this share of the train set; the rest "
       "only the teacher labels. 0: no training label is read (a teacher from outside; no student-alone control).",
       (DISTILL, COMPARE, SELECT_TEACHER), minimum=0, maximum=1),
    # ---------------------------------------------------------------- teachers
    _O("teacher", str, None, "Registry name, teacher file (edgekd .pt, TorchScript, .onnx), or torchvision:ARCH / "
       "timm:NAME with --teacher-weights; repeat for several teachers (default: cnn; for distill, compare and "
       "select-student resnet-s on inputs of 28x28 and more).", NOT_TEACHER_SELECT, repeatable=True),
    _O("teachers", str, (), "Candidate teacher (as for distill: name, file, torchvision:ARCH / timm:NAME with "
       "--teacher-weights); repeat for each.", (SELECT_TEACHER,), flag="--teacher", repeatable=True, required=True),
    _O("teacher_mode", str, defaults.TEACHER_MODE, "Several teachers: mean | weighted | confidence.", (DISTILL,),
       choices=defaults.TEACHER_MODES),
    _O("teacher_weights", float, None, "Per-teacher weight for --teacher-mode weighted.", (DISTILL,),
       flag="--teacher-weight", repeatable=True),
    _O("teacher_weight_files", str, (), "FILE of weights (state_dict or checkpoint) for each torchvision:ARCH / "
       "timm:NAME --teacher, in order.", ALL, flag="--teacher-weights", repeatable=True),
    _O("teacher_input_size", str, None, "The teacher sees each image at N (square) or HxW, e.g. 48x192 (default: an "
       "ONNX teacher's fixed input dims, else the data's).", ALL),
    _O("teacher_mean", str, None, "The teacher's per-channel mean, comma-separated, or 'imagenet' (default: the "
       "data's).", ALL),
    _O("teacher_std", str, None, "The teacher's per-channel std, comma-separated, or 'imagenet' (default: the "
       "data's).", ALL),
    _O("teacher_outputs", str, defaults.TEACHER_OUTPUTS, "What the teacher returns: auto | logits | probabilities | "
       "log-probabilities (auto: the last op, Softmax/LogSoftmax, and a sample of its outputs). Probabilities become "
       "log-probabilities before any loss.", ALL, choices=defaults.TEACHER_OUTPUT_KINDS),
    _O("class_order", str, None, "The data class of each teacher output, in the teacher's order: indices (2,0,1: "
       "output 0 is class 2) or class names. check-teacher names it when another order fits far better.", ALL),
    _O("teacher_epochs", int, None, f"Epochs when training a teacher ({_RULE}: 15 for digits, 4 for Fashion-MNIST).",
       ALL, minimum=1),
    _O("cache_teacher", bool, True, "Cache the teacher's outputs when inputs are deterministic.", (DISTILL,)),
    # ---------------------------------------------------------------- student and target
    _O("student", str, None, f"Student name from the registry ({_RULE}: small-cnn; wide-cnn for 10k+ train images "
       "or 28-32 px inputs; small-cnn-s above 32 px).", (DISTILL, COMPARE, SELECT_TEACHER)),
    _O("target", str, defaults.TARGET, "Target profile name or .toml path; the student uses only its ops.",
       (DISTILL, COMPARE, SELECT_TEACHER)),
    _O("target", str, None, "Target profile name or .toml path; every candidate uses only its ops.",
       (SELECT_STUDENT,), required=True),
    # ---------------------------------------------------------------- the losses
    _O("methods", str, None, "Loss NAME[:WEIGHT], repeatable: ce hard soft cosine fitnet at rkd rkd-d rkd-a. "
       f"Default: {' '.join(defaults.METHODS)} (DIST + CE; Hinton's KD is soft:0.7 ce:0.3).", (DISTILL,),
       flag="--method", repeatable=True),
    _O("methods", str, None, "Methods for the table (repeatable): soft dkd dist ttm hard cosine fitnet fitnet+hint at "
       "rkd born-again dml, or NAME.KEY=VALUE with a loss option (soft.standardize=true, ttm.wttm=true); default: all "
       "but dkd dist ttm.", (COMPARE,), flag="--method", repeatable=True),
    _O("methods", str, None, f"Loss NAME[:WEIGHT], repeatable (default: {' '.join(defaults.METHODS)}).",
       (SELECT_STUDENT,), flag="--method", repeatable=True),
    _O("temperature", float, None, f"Softmax temperature T for soft labels ({_RULE}: {defaults.TEMPERATURE:g}).",
       ALL, above=0),
    _O("loss_options", str, None, "LOSS.KEY=VALUE, e.g. fitnet.kernel=3 or cosine.project=false (in a recipe: a "
       "table, [loss_options.fitnet] kernel = 3).", (DISTILL,), flag="--loss-option", repeatable=True),
    _O("student_taps", str, None, "ROLE=MODULE: tap this student module for a feature loss (roles: hidden, "
       "feature_map; in a recipe: a table).", (DISTILL,), flag="--student-tap", repeatable=True),
    _O("teacher_taps", str, None, "ROLE=MODULE: tap this teacher module (e.g. feature_map=layer3; in a recipe: a "
       "table).", (DISTILL,), flag="--teacher-tap", repeatable=True),
    _O("hint_epochs", int, 0, "FitNets stage 1: epochs training the student up to its tap on the hint loss.",
       (DISTILL,), minimum=0),
    _O("generations", int, 0, "Born-again self-distillation: K generations of the student teaching the next.",
       (DISTILL,), minimum=0),
    _O("online", bool, False, "Online distillation: deep mutual learning of --peers students, no teacher.",
       (DISTILL,)),
    _O("peers", int, defaults.PEERS, "Students trained together with --online.", (DISTILL,), minimum=1),
    # ---------------------------------------------------------------- training
    _O("epochs", int, None, f"Student epochs; the control gets the same epochs and steps ({_RULE}: 30 for digits, "
       "4 for Fashion-MNIST).", NOT_TEACHER_SELECT, minimum=1),
    _O("seeds", int, defaults.SEEDS, "Seeds for mean ± std.", TRAIN, minimum=1),
    _O("seeds", int, defaults.SEARCH_SEEDS, "Seeds per finalist.", (SELECT_STUDENT,), minimum=1),
    _O("lr", float, defaults.LR, f"Learning rate (AdamW) at batch {defaults.BASE_BATCH}; scaled linearly with "
       "--batch-size.", (DISTILL,), above=0),
    _O("batch_size", int, defaults.BATCH_SIZE, "Batch size (global, over all processes).", (DISTILL,), minimum=1),
    _O("lr_schedule", str, defaults.LR_SCHEDULE, "auto | cosine | warmup-cosine | constant (auto: cosine; warm-up "
       "above batch 64).", (DISTILL,), choices=defaults.LR_SCHEDULES),
    _O("warmup_epochs", float, defaults.WARMUP_EPOCHS, "Linear warm-up of warmup-cosine, in epochs.", (DISTILL,),
       minimum=0),
    _O("device", str, defaults.DEVICE, "auto | cpu | cuda | cuda:N (auto: CUDA when available).", TRAIN),
    _O("precision", str, defaults.PRECISION, "auto | fp32 | bf16 | fp16 autocast (auto: bf16 on CUDA, fp32 on CPU).",
       (DISTILL,), choices=defaults.PRECISIONS),
    _O("channels_last", bool, None, "NHWC memory format (default: on; it won on CPU and GPU).", (DISTILL,)),
    _O("compile", bool, False, "torch.compile the models (refused: it did not win; see benchmarks/README.md).",
       (DISTILL,), switch=True),
    _O("deterministic", bool, False, "Deterministic kernels (CUDA): a resumed run repeats an uninterrupted one.",
       (DISTILL,), switch=True),
    _O("tensorboard", Path, None, "Also write per-epoch scalars to this TensorBoard log folder.", (DISTILL,)),
    # ---------------------------------------------------------------- select-teacher
    _O("n", int, defaults.SELECT_TEACHER_N, "Examples whose per-example gradients are scored.", (SELECT_TEACHER,),
       minimum=4),
    _O("warmup_steps", int, defaults.SELECT_TEACHER_WARMUP_STEPS, "CE steps on the student before scoring (0 = at "
       "initialisation).", (SELECT_TEACHER,), minimum=0),
    _O("higher_is_better", bool, False, "Rank a higher GRACE score first (default: lower first, as measured).",
       (SELECT_TEACHER,)),
    _O("seed", int, 0, "Seed for the projection and the splits.", (SELECT_TEACHER,)),
    # ---------------------------------------------------------------- select-student
    _O("budget_ms", float, None, "Latency budget (p90, ms); default: the profile's.", (SELECT_STUDENT,), above=0),
    _O("trials", int, defaults.SEARCH_TRIALS, "Candidates to time (the predictor skips hopeless draws without "
       "timing).", (SELECT_STUDENT,), minimum=1),
    _O("seed", int, 0, "Seed for sampling the search space (same seed, same result).", (SELECT_STUDENT,)),
    _O("runner", str, defaults.RUNNER, "local | qemu | ssh://USER@HOST[:PORT]", (SELECT_STUDENT,)),
    _O("short_epochs", int, None, "Epochs of the first successive-halving round.", (SELECT_STUDENT,), minimum=1),
    _O("include", str, None, f"Registry student drawn first, repeatable ({_RULE}: the student distill would use).",
       (SELECT_STUDENT,), repeatable=True),
    # ---------------------------------------------------------------- run level: not in a recipe
    _O("config", Path, None, "A recipe (.toml, keys as the API's keywords) or a run's config.json (replays that run); "
       "flags given on the command line win.", ALL, level="run"),
    _O("run", Path, None, "Run folder (default: a new artifacts/<run-id>).", NOT_TEACHER_SELECT, level="run"),
    _O("run", Path, None, "Keep the trained teachers and teacher_selection.json here.", (SELECT_TEACHER,),
       level="run"),
    _O("resume", bool, False, "Continue from the run's last epoch checkpoints (needs --run).", (DISTILL,),
       level="run"),
    _O("progress", bool, True, "Show progress bars.", ALL, level="run"),
    _O("quiet", bool, False, "No progress bars or per-epoch lines.", TRAIN, short="-q", switch=True, level="cli"),
    _O("as_json", bool, False, "Print the result as JSON instead of a table.", ALL, flag="--json", switch=True,
       level="cli"),
    _O("nproc", int, 1, "Processes per node: launches through torchrun (gloo on CPU, NCCL on GPU).", (DISTILL,),
       minimum=1, level="cli"),
    _O("nnodes", str, "1", "torchrun --nnodes (e.g. 2 or 1:4), for several machines.", (DISTILL,), level="cli"),
    _O("rdzv_endpoint", str, None, "torchrun --rdzv-endpoint HOST:PORT, for several machines.", (DISTILL,),
       level="cli"),
    _O("node_rank", int, None, "torchrun --node-rank, with --rdzv-endpoint.", (DISTILL,), level="cli"),
)
del _O


def for_command(command: str, *, levels: Iterable[str] = ("option", "run", "cli")) -> dict[str, Option]:
    """The options `command` takes, by name, in table order."""
    levels = tuple(levels)
    return {o.name: o for o in OPTIONS if command in o.commands and o.level in levels}


def get(command: str, name: str) -> Option:
    found = for_command(command).get(name)
    if found is None:
        raise KeyError(f"{command} has no option {name!r}")
    return found


def recipe_keys(command: str) -> dict[str, Option]:
    """What a recipe for `command` may set: its experiment options (not where to write, nor how to print)."""
    return for_command(command, levels=("option",))


def config_fields() -> tuple[str, ...]:
    """The DistillConfig fields: distill's API keywords but the recipe itself."""
    return tuple(n for n in for_command(DISTILL, levels=("option", "run")) if n != "config")


def is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (tuple, list, dict)) and not value)


def same_default(opt: Option, a: Any, b: Any) -> bool:
    """Two defaults agree: equal, or both "none given" for a repeatable option (None, (), [], {})."""
    if opt.repeatable and is_empty(a) and is_empty(b):
        return True
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _shown(value: Any) -> str:
    return f"'{value}'" if isinstance(value, str) else str(value)


def problem(opt: Option, value: Any) -> str | None:
    """What is wrong with `value` for `opt` by its range or choices ("must be >= 1"), else None."""
    if value is None or isinstance(value, bool) and opt.type is not bool:
        return None
    if opt.choices and isinstance(value, str) and value not in opt.choices:
        return f"valid: {', '.join(opt.choices)}"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    if opt.minimum is not None and opt.maximum is not None and not opt.minimum <= value <= opt.maximum:
        return f"must be in [{opt.minimum:g}, {opt.maximum:g}]"
    if opt.minimum is not None and not value >= opt.minimum:
        return f"must be >= {opt.minimum:g}"
    if opt.above is not None and not value > opt.above:
        return f"must be > {opt.above:g}"
    if opt.maximum is not None and not value <= opt.maximum:
        return f"must be <= {opt.maximum:g}"
    return None


def check(command: str, values: dict[str, Any]) -> None:
    """BadInput for the first value outside its option's range or choices, naming the parameter
    (`epochs 0: must be >= 1`; the CLI shows it as `--epochs`)."""
    table = for_command(command)
    for name, value in values.items():
        opt = table.get(name)
        why = None if opt is None else problem(opt, value)
        if why:
            raise BadInput(f"{name} {_shown(value)}: {why}", params=[name])
