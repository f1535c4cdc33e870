"""The `edgekd` command: each command parses its options, calls one `edgekd.api` function by
keyword, and prints its result (a table, or `--json`).

torch is imported only inside commands, so `edgekd --help` answers at once.
Errors: BadInput → one line, exit 2; CheckFailed → the failing numbers, exit 1. The library
names parameters (`epochs`); `flag_text` shows them as this command's flags (`--epochs`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgekd import defaults
from edgekd.errors import BadInput, CheckFailed, EdgekdError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distil a large classifier into a small student that provably runs on one edge target.")
runner_app = typer.Typer(no_args_is_help=True, help="Prepare bench runners.")
app.add_typer(runner_app, name="runner")


def _print(table, obj, as_json: bool) -> None:
    from edgekd.tables import console

    if as_json:
        sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    else:
        console.print(table)


JSON_OPT = typer.Option(False, "--json", help="Print the result as JSON instead of a table.")


# Options shared by `distill` and `compare` (typer reads them off the signature).
DATA_OPT = typer.Option(defaults.DATA, help="digits | mnist | fashion-mnist | cifar10 | imagefolder:DIR")
DATA_DIR_OPT = typer.Option(None, help=(
    "Folder with the dataset files (IDX files, directly or under torchvision's MNIST/raw, FashionMNIST/raw; "
    "cifar-10-batches-py). Default: ./data, and for fashion-mnist also /usr/share/datasets/fashion-mnist."))
DOWNLOAD_OPT = typer.Option(False, help="Let torchvision download the dataset into --data-dir.")
TEACHER_OPT = typer.Option(None, help=(
    "Registry name, teacher file (edgekd .pt, TorchScript, .onnx), or torchvision:ARCH / timm:NAME with "
    "--teacher-weights; repeat for several teachers (default: cnn; for distill, compare and select-student resnet-s on "
    "inputs of 28x28 and more)."))
TARGET_OPT = typer.Option(defaults.TARGET, help="Target profile name or .toml path; the student uses only its ops.")
SEEDS_OPT = typer.Option(defaults.SEEDS, help="Seeds for mean ± std.")
LF_OPT = typer.Option(defaults.LABELED_FRACTION, help=(
    "Keep labels for this share of the train set; the rest only the teacher labels. 0: no training label is read "
    "(a teacher from outside; no student-alone control)."))
RUN_OPT = typer.Option(None, help="Run folder (default: a new artifacts/<run-id>).")
DEVICE_OPT = typer.Option(defaults.DEVICE, help="auto | cpu | cuda | cuda:N (auto: CUDA when available).")
QUIET_OPT = typer.Option(False, "--quiet", "-q", help="No progress bars or per-epoch lines.")
# distill and compare: unset options follow the data (defaults.recipe: teacher, student, epochs, T, losses)
_RULE = "default: from the data, see `defaults.recipe`"
AUTO_STUDENT_OPT = typer.Option(None, "--student", help=(
    f"Student name from the registry ({_RULE}: small-cnn; wide-cnn for 10k+ train images or 28-32 px inputs; "
    "small-cnn-s above 32 px)."))
AUTO_EPOCHS_OPT = typer.Option(None, "--epochs", help=(
    f"Student epochs; the control gets the same epochs and steps ({_RULE}: 30 for digits, 4 for Fashion-MNIST)."))
AUTO_T_EPOCHS_OPT = typer.Option(None, "--teacher-epochs", help=(
    f"Epochs when training a teacher ({_RULE}: 15 for digits, 4 for Fashion-MNIST)."))
AUTO_TEMP_OPT = typer.Option(None, "--temperature", help=(
    f"Softmax temperature T for soft labels ({_RULE}: {defaults.TEMPERATURE:g})."))


# Foreign teachers and their view, ImageFolder size and augmentation (edgekd.teachers).
T_FILES_OPT = typer.Option(None, "--teacher-weights", help=(
    "FILE of weights (state_dict or checkpoint) for each torchvision:ARCH / timm:NAME --teacher, in order."))
T_SIZE_OPT = typer.Option(None, help="The teacher sees each image at N (square) or HxW, e.g. 48x192 (default: an "
                          "ONNX teacher's fixed input dims, else the data's).")
T_MEAN_OPT = typer.Option(None, help=(
    "The teacher's per-channel mean, comma-separated, or 'imagenet' (default: the data's)."))
T_STD_OPT = typer.Option(None, help=(
    "The teacher's per-channel std, comma-separated, or 'imagenet' (default: the data's)."))
INPUT_SIZE_OPT = typer.Option(None, help="imagefolder: the student's input, N (square) or HxW in pixels, e.g. 16x64 "
                              "(default: the images' own HxW, scaled down keeping the aspect ratio to at most "
                              "32x32 = 1,024 pixels).")
RESIZE_OPT = typer.Option(None, help="imagefolder: how an image becomes HxW: stretch (the default) | pad (keep the "
                          "aspect, pad right/bottom with 0) | crop (resize the short side, centre crop).")
UNLABELED_OPT = typer.Option(None, help="imagefolder: a folder of unlabeled images (any tree) added to the transfer "
                             "set (the teacher labels them); repeatable. A held-out share scores agreement with the "
                             "teacher.")
AUGMENT_OPT = typer.Option(False, help=(
    "Random-resized crop + flip on the train set (imagefolder, cifar10); the teacher runs live."))
DETERMINISTIC_OPT = typer.Option(False, "--deterministic",
                                 help="Deterministic kernels (CUDA): a resumed run repeats an uninterrupted one.")
NPROC_OPT = typer.Option(1, help="Processes per node: launches through torchrun (gloo on CPU, NCCL on GPU).")
NNODES_OPT = typer.Option("1", help="torchrun --nnodes (e.g. 2 or 1:4), for several machines.")
RDZV_OPT = typer.Option(None, help="torchrun --rdzv-endpoint HOST:PORT, for several machines.")
NODE_RANK_OPT = typer.Option(None, help="torchrun --node-rank, with --rdzv-endpoint.")


def _byot(files, size, mean, std, input_size, augment, resize=None, unlabeled=None) -> dict:
    """The teacher's view and the data's shape options, sizes parsed from N / HxW."""
    return dict(teacher_weight_files=tuple(files or ()),
                teacher_input_size=input_size_text(size, "--teacher-input-size"), teacher_mean=mean, teacher_std=std,
                input_size=input_size_text(input_size), augment=augment, resize=resize,
                unlabeled=tuple(unlabeled or ()))


def input_size_text(value: Optional[str], option: str = "--input-size"):
    """An `N` / `HxW` option as (H, W) (edgekd.data.parse_hw: the one parser of sizes)."""
    from edgekd.data import parse_hw

    return parse_hw(value, option=option)


# What a teacher returns and its class order: with T_FILES_OPT, T_SIZE_OPT, T_MEAN_OPT and T_STD_OPT these are the
# teacher options of every command that takes a teacher (distill, compare, select-student, select-teacher,
# check-teacher); `_teacher_kw` turns them into the API's keywords.
T_OUTPUTS_OPT = typer.Option(defaults.TEACHER_OUTPUTS, help=(
    "What the teacher returns: auto | logits | probabilities | log-probabilities (auto: the last op, "
    "Softmax/LogSoftmax, and a sample of its outputs). Probabilities become log-probabilities before any loss."))
CLASS_ORDER_OPT = typer.Option(None, help=(
    "The data class of each teacher output, in the teacher's order: indices (2,0,1: output 0 is class 2) or "
    "class names. check-teacher names it when another order fits far better."))


def _teacher_kw(files, size, mean, std, outputs, class_order) -> dict:
    return dict(teacher_weight_files=tuple(files or ()), teacher_input_size=size, teacher_mean=mean,
                teacher_std=std, teacher_outputs=outputs, class_order=class_order)


# distill's own options (module level: the signature stays short enough to read)
METHOD_OPT = typer.Option(None, help=(
    "Loss NAME[:WEIGHT], repeatable: ce hard soft cosine fitnet at rkd rkd-d rkd-a. Default: soft:0.7 ce:0.3."))
LR_SCHEDULE_OPT = typer.Option(defaults.LR_SCHEDULE, help=(
    "auto | cosine | warmup-cosine | constant (auto: cosine; warm-up above batch 64)."))
PRECISION_OPT = typer.Option(defaults.PRECISION, help=(
    "auto | fp32 | bf16 | fp16 autocast (auto: bf16 on CUDA, fp32 on CPU)."))
CHANNELS_LAST_OPT = typer.Option(None, "--channels-last/--no-channels-last", help=(
    "NHWC memory format (default: on; it won on CPU and GPU)."))
COMPILE_OPT = typer.Option(False, "--compile", help=(
    "torch.compile the models (refused: it did not win; see benchmarks/README.md)."))
TENSORBOARD_OPT = typer.Option(None, help="Also write per-epoch scalars to this TensorBoard log folder.")
LR_OPT = typer.Option(defaults.LR, help=(
    f"Learning rate (AdamW) at batch {defaults.BASE_BATCH}; scaled linearly with --batch-size."))
HINT_EPOCHS_OPT = typer.Option(0, help="FitNets stage 1: epochs training the student up to its tap on the hint loss.")
GENERATIONS_OPT = typer.Option(0, help="Born-again self-distillation: K generations of the student teaching the next.")
ONLINE_OPT = typer.Option(False, help="Online distillation: deep mutual learning of --peers students, no teacher.")
STUDENT_TAP_OPT = typer.Option(None, help=(
    "ROLE=MODULE: tap this student module for a feature loss (roles: hidden, feature_map)."))
TEACHER_TAP_OPT = typer.Option(None, help="ROLE=MODULE: tap this teacher module (e.g. feature_map=layer3).")
LOSS_OPTION_OPT = typer.Option(None, help="LOSS.KEY=VALUE, e.g. fitnet.kernel=3 or cosine.project=false.")


@app.command()
def distill(
    data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    teacher: Optional[List[str]] = TEACHER_OPT, device: str = DEVICE_OPT,
    teacher_mode: str = typer.Option(defaults.TEACHER_MODE, help="Several teachers: mean | weighted | confidence."),
    teacher_weight: Optional[List[float]] = typer.Option(None, help="Per-teacher weight for --teacher-mode weighted."),
    teacher_weight_files: Optional[List[str]] = T_FILES_OPT, teacher_input_size: Optional[str] = T_SIZE_OPT,
    teacher_mean: Optional[str] = T_MEAN_OPT, teacher_std: Optional[str] = T_STD_OPT,
    input_size: Optional[str] = INPUT_SIZE_OPT, resize: Optional[str] = RESIZE_OPT,
    unlabeled: Optional[List[Path]] = UNLABELED_OPT, augment: bool = AUGMENT_OPT,
    teacher_outputs: str = T_OUTPUTS_OPT, class_order: Optional[str] = CLASS_ORDER_OPT,
    student: Optional[str] = AUTO_STUDENT_OPT, target: str = TARGET_OPT,
    method: Optional[List[str]] = METHOD_OPT,
    lr_schedule: str = LR_SCHEDULE_OPT,
    warmup_epochs: float = typer.Option(defaults.WARMUP_EPOCHS, help="Linear warm-up of warmup-cosine, in epochs."),
    precision: str = PRECISION_OPT,
    channels_last: Optional[bool] = CHANNELS_LAST_OPT,
    compile: bool = COMPILE_OPT,
    tensorboard: Optional[Path] = TENSORBOARD_OPT,
    deterministic: bool = DETERMINISTIC_OPT,
    temperature: Optional[float] = AUTO_TEMP_OPT, epochs: Optional[int] = AUTO_EPOCHS_OPT,
    teacher_epochs: Optional[int] = AUTO_T_EPOCHS_OPT, seeds: int = SEEDS_OPT,
    lr: float = LR_OPT,
    batch_size: int = typer.Option(defaults.BATCH_SIZE, help="Batch size (global, over all processes)."),
    hint_epochs: int = HINT_EPOCHS_OPT,
    generations: int = GENERATIONS_OPT,
    online: bool = ONLINE_OPT,
    peers: int = typer.Option(defaults.PEERS, help="Students trained together with --online."),
    cache_teacher: bool = typer.Option(True, help="Cache the teacher's outputs when inputs are deterministic."),
    student_tap: Optional[List[str]] = STUDENT_TAP_OPT,
    teacher_tap: Optional[List[str]] = TEACHER_TAP_OPT,
    loss_option: Optional[List[str]] = LOSS_OPTION_OPT,
    run: Optional[Path] = RUN_OPT, quiet: bool = QUIET_OPT, labeled_fraction: float = LF_OPT,
    resume: bool = typer.Option(False, help="Continue from the run's last epoch checkpoints (needs --run)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    nproc: int = NPROC_OPT, nnodes: str = NNODES_OPT,
    rdzv_endpoint: Optional[str] = RDZV_OPT, node_rank: Optional[int] = NODE_RANK_OPT, as_json: bool = JSON_OPT,
) -> None:
    """Train or load the teacher, then the student alone and distilled, over --seeds seeds."""
    _launch_if_asked(nproc, nnodes, rdzv_endpoint, node_rank, device)
    from edgekd import api
    from edgekd.tables import distill_table, with_warnings

    result = api.distill(
        data=data, data_dir=data_dir, download=download, teacher=teacher or None,  # None: from the data
        teacher_mode=teacher_mode, teacher_weights=teacher_weight or None, student=student, target=target,
        methods=method or None, temperature=temperature, epochs=epochs, teacher_epochs=teacher_epochs,
        seeds=seeds, lr=lr, batch_size=batch_size, labeled_fraction=labeled_fraction, hint_epochs=hint_epochs,
        generations=generations, online=online, peers=peers, cache_teacher=cache_teacher,
        student_taps=_pairs("--student-tap", student_tap), teacher_taps=_pairs("--teacher-tap", teacher_tap),
        loss_options=_loss_options(loss_option), run=run, resume=resume,
        progress=progress and not as_json and not quiet, device=device, precision=precision,
        channels_last=channels_last, lr_schedule=lr_schedule,
        warmup_epochs=warmup_epochs, compile=compile, tensorboard=tensorboard, deterministic=deterministic,
        teacher_outputs=teacher_outputs, class_order=class_order,
        **_byot(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std, input_size, augment, resize,
                unlabeled))
    if result.is_main:
        _print(with_warnings(distill_table(result.to_json()), result.data.get("warnings", [])), result.to_json(),
               as_json)


def _launch_if_asked(nproc: int, nnodes: str, rdzv_endpoint: Optional[str], node_rank: Optional[int],
                     device: str) -> None:
    """--nproc N / --nnodes: re-launch this command through torchrun, and exit with its code."""
    if (nproc > 1 or nnodes != "1") and "WORLD_SIZE" not in os.environ:
        from edgekd.train import distributed as dist

        dist.check_launch(nproc, device)
        raise typer.Exit(dist.launch(_without_launch_options(sys.argv[1:]), nproc=nproc, nnodes=nnodes,
                                     rdzv_endpoint=rdzv_endpoint, node_rank=node_rank))


def _pairs(option: str, items: Optional[List[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise BadInput(f"{option} '{item}': expected ROLE=MODULE, e.g. feature_map=layer3")
        out[key] = value
    return out


def _loss_options(items: Optional[List[str]]) -> dict[str, dict]:
    """LOSS.KEY=VALUE → {LOSS: {KEY: value}}; values are JSON when they parse (3, 0.5, false), else text."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, sep, raw = item.partition("=")
        loss, dot, key = target.partition(".")
        if not (sep and dot and loss and key):
            raise BadInput(f"--loss-option '{item}': expected LOSS.KEY=VALUE, e.g. fitnet.kernel=3")
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out.setdefault(loss, {})[key] = value
    return out


LAUNCH_OPTIONS = ("--nproc", "--nnodes", "--rdzv-endpoint", "--node-rank")


def _without_launch_options(argv: list[str]) -> list[str]:
    """The command line each torchrun worker gets: ours minus the launcher's own options."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a in LAUNCH_OPTIONS:
            skip = True
        elif not a.startswith(tuple(o + "=" for o in LAUNCH_OPTIONS)):
            out.append(a)
    return out


@app.command()
def compare(
    data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    teacher: Optional[List[str]] = TEACHER_OPT, student: Optional[str] = AUTO_STUDENT_OPT, target: str = TARGET_OPT,
    teacher_weight_files: Optional[List[str]] = T_FILES_OPT, teacher_input_size: Optional[str] = T_SIZE_OPT,
    teacher_mean: Optional[str] = T_MEAN_OPT, teacher_std: Optional[str] = T_STD_OPT,
    teacher_outputs: str = T_OUTPUTS_OPT, class_order: Optional[str] = CLASS_ORDER_OPT,
    input_size: Optional[str] = INPUT_SIZE_OPT, resize: Optional[str] = RESIZE_OPT,
    only: Optional[List[str]] = typer.Option(
        None, "--method", help="Methods for the table (repeatable): soft dkd dist ttm hard cosine fitnet fitnet+hint "
        "at rkd born-again dml, or NAME.KEY=VALUE with a loss option (soft.standardize=true, ttm.wttm=true); "
        "default: all but dkd dist ttm."),
    temperature: Optional[float] = AUTO_TEMP_OPT, epochs: Optional[int] = AUTO_EPOCHS_OPT,
    teacher_epochs: Optional[int] = AUTO_T_EPOCHS_OPT, seeds: int = SEEDS_OPT,
    labeled_fraction: float = LF_OPT, run: Optional[Path] = RUN_OPT,
    device: str = DEVICE_OPT,
    progress: bool = typer.Option(True, help="Show progress bars."),
    quiet: bool = QUIET_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """The seminar table: teacher once, student alone, then the student with each method (same seeds and budget)."""
    from edgekd import api
    from edgekd.tables import compare_table

    result = api.compare(data=data, data_dir=data_dir, download=download, teacher=teacher or None,
                         student=student, target=target, methods=only or None, temperature=temperature,
                         epochs=epochs, teacher_epochs=teacher_epochs, seeds=seeds, labeled_fraction=labeled_fraction,
                         run=run, progress=progress and not as_json and not quiet, device=device,
                         input_size=input_size_text(input_size), resize=resize,
                         **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std,
                                       teacher_outputs, class_order))
    _print(compare_table(result.to_json()), result.to_json(), as_json)


@app.command("select-teacher")
def select_teacher(
    student: Optional[str] = AUTO_STUDENT_OPT,
    teacher: List[str] = typer.Option(..., help=("Candidate teacher (as for distill: name, file, torchvision:ARCH / "
                                                 "timm:NAME with --teacher-weights); repeat for each.")),
    teacher_weight_files: Optional[List[str]] = T_FILES_OPT, teacher_input_size: Optional[str] = T_SIZE_OPT,
    teacher_mean: Optional[str] = T_MEAN_OPT, teacher_std: Optional[str] = T_STD_OPT,
    teacher_outputs: str = T_OUTPUTS_OPT, class_order: Optional[str] = CLASS_ORDER_OPT,
    data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    target: str = TARGET_OPT, temperature: Optional[float] = AUTO_TEMP_OPT,
    n: int = typer.Option(defaults.SELECT_TEACHER_N, help="Examples whose per-example gradients are scored."),
    warmup_steps: int = typer.Option(defaults.SELECT_TEACHER_WARMUP_STEPS, help="CE steps on the student before "
                                                                                "scoring (0 = at initialisation)."),
    teacher_epochs: Optional[int] = AUTO_T_EPOCHS_OPT, labeled_fraction: float = LF_OPT,
    higher_is_better: bool = typer.Option(False, help="Rank a higher GRACE score first (default: lower first, as "
                                                      "measured)."),
    seed: int = typer.Option(0, help="Seed for the projection and the splits."),
    run: Optional[Path] = typer.Option(None, help="Keep the trained teachers and teacher_selection.json here."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = JSON_OPT,
) -> None:
    """Rank candidate teachers for a student before paying for distillation (GRACE-style score + baselines)."""
    from edgekd import api
    from edgekd.tables import teacher_selection_table

    result = api.select_teacher(student=student, teachers=list(teacher), data=data, data_dir=data_dir,
                                download=download, target=target, run=run, temperature=temperature, n=n,
                                warmup_steps=warmup_steps, teacher_epochs=teacher_epochs, seed=seed,
                                progress=progress and not as_json, higher_is_better=higher_is_better,
                                labeled_fraction=labeled_fraction,
                                **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std,
                                              teacher_outputs, class_order))
    _print(teacher_selection_table(result.to_json()), result.to_json(), as_json)


@app.command("select-student")
def select_student_cmd(
    target: str = typer.Option(..., help="Target profile name or .toml path; every candidate uses only its ops."),
    teacher: Optional[List[str]] = TEACHER_OPT,
    teacher_weight_files: Optional[List[str]] = T_FILES_OPT, teacher_input_size: Optional[str] = T_SIZE_OPT,
    teacher_mean: Optional[str] = T_MEAN_OPT, teacher_std: Optional[str] = T_STD_OPT,
    teacher_outputs: str = T_OUTPUTS_OPT, class_order: Optional[str] = CLASS_ORDER_OPT,
    budget_ms: Optional[float] = typer.Option(None, help="Latency budget (p90, ms); default: the profile's."),
    trials: int = typer.Option(defaults.SEARCH_TRIALS, help="Candidates to time (the predictor skips hopeless draws "
                                                            "without timing)."),
    seed: int = typer.Option(0, help="Seed for sampling the search space (same seed, same result)."),
    runner: str = typer.Option(defaults.RUNNER, help="local | qemu | ssh://USER@HOST[:PORT]"),
    data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    epochs: Optional[int] = AUTO_EPOCHS_OPT,
    short_epochs: Optional[int] = typer.Option(None, help="Epochs of the first successive-halving round."),
    seeds: int = typer.Option(defaults.SEARCH_SEEDS, help="Seeds per finalist."),
    method: Optional[List[str]] = typer.Option(None, help="Loss NAME[:WEIGHT], repeatable (default: soft:0.7 ce:0.3)."),
    teacher_epochs: Optional[int] = AUTO_T_EPOCHS_OPT, temperature: Optional[float] = AUTO_TEMP_OPT,
    include: Optional[List[str]] = typer.Option(None, help=f"Registry student drawn first, repeatable ({_RULE}: the "
                                                           f"student distill would use)."),
    run: Optional[Path] = RUN_OPT, input_size: Optional[str] = INPUT_SIZE_OPT, resize: Optional[str] = RESIZE_OPT,
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = JSON_OPT,
) -> None:
    """Search students built from the target's ops: predict, time, drop what misses the budget, distil the rest with \
successive halving."""
    from edgekd import api
    from edgekd.search.pareto import select_table

    result = api.select_student(target=target, teacher=teacher or None, data=data, data_dir=data_dir,
                                download=download, budget_ms=budget_ms, trials=trials, seed=seed, runner=runner,
                                epochs=epochs, short_epochs=short_epochs, seeds=seeds, methods=method or None,
                                teacher_epochs=teacher_epochs, temperature=temperature, include=include or None,
                                run=run, progress=progress and not as_json, input_size=input_size_text(input_size),
                                resize=resize,
                                **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std,
                                              teacher_outputs, class_order))
    _print(select_table(result.to_json()), result.to_json(), as_json)


@app.command("check-teacher")
def check_teacher_cmd(
    teacher: List[str] = typer.Option(..., help=("The teacher to check (file, or torchvision:ARCH / timm:NAME with "
                                                 "--teacher-weights); repeatable.")),
    data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    input_size: Optional[str] = INPUT_SIZE_OPT, resize: Optional[str] = RESIZE_OPT,
    teacher_weight_files: Optional[List[str]] = T_FILES_OPT, teacher_input_size: Optional[str] = T_SIZE_OPT,
    teacher_mean: Optional[str] = T_MEAN_OPT, teacher_std: Optional[str] = T_STD_OPT,
    teacher_outputs: str = T_OUTPUTS_OPT, class_order: Optional[str] = CLASS_ORDER_OPT,
    as_json: bool = JSON_OPT,
) -> None:
    """Check a teacher in seconds before distilling: what it takes and returns, params, MFLOPs, accuracy in its
    view, host p50."""
    from edgekd import api
    from edgekd.tables import check_teacher_output

    result = api.check_teacher(teacher=list(teacher), data=data, data_dir=data_dir, download=download,
                               input_size=input_size, resize=resize,
                               **_teacher_kw(teacher_weight_files, teacher_input_size,
                                                                    teacher_mean, teacher_std, teacher_outputs,
                                                                    class_order))
    _print(check_teacher_output(result.to_json()), result.to_json(), as_json)


@app.command()
def export(
    target: str = typer.Option(..., help="Target profile name or .toml path."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: artifacts/latest)."),
    quantize: Optional[str] = typer.Option(None, help="Also make a static int8 QDQ variant: int8."),
    batch: Optional[int] = typer.Option(None, help="Fix the batch axis to N (0 = dynamic). Default: dynamic, 1 for "
                                                   "NNAPI."),
    exporter: str = typer.Option(defaults.EXPORTER, help="torch → ONNX exporter: torchscript | dynamo (torch.export)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Export the student to ONNX, audit its ops, check parity, write golden vectors and the manifest."""
    from edgekd import api
    from edgekd.tables import export_table

    result = api.export(target=target, run=run, quantize=quantize, batch=batch, exporter=exporter)
    _print(export_table(result.to_json()), result.to_json(), as_json)


@app.command()
def bench(
    model: Optional[Path] = typer.Argument(None, help="Any ONNX model to time instead of a run's export."),
    target: Optional[List[str]] = typer.Option(None, help="Target profile; repeat for a side-by-side table "
                                                          "(default: the run's only exported target)."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: artifacts/latest)."),
    runner: str = typer.Option(defaults.RUNNER, help="local | qemu | ssh://USER@HOST[:PORT]"),
    min_seconds: float = typer.Option(defaults.BENCH_MIN_SECONDS, help="Time each model for at least this long."),
    compare: bool = typer.Option(True, help="Also time the teacher (ONNX) and the eager student."),
    shape: Optional[List[str]] = typer.Option(None, help="MODEL only: NAME=1x3x48x192 for symbolic dimensions."),
    inputs: Optional[Path] = typer.Option(None, help="MODEL only: .npz with one array per graph input."),
    profile: bool = typer.Option(False, "--profile", help="Top operators by total time per provider (ORT profiler)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Time the exported model (or any ONNX MODEL) through the profile's execution providers; check the budgets."""
    from edgekd import api
    from edgekd.tables import bench_output, err_console

    try:
        result = api.bench(model=model, target=list(target or []), run=run, runner=runner, compare=compare,
                           min_seconds=min_seconds, shapes=list(shape or []), inputs=inputs, profile=profile)
    except CheckFailed as e:  # several targets or a model: the table of every row, then exit 1
        if e.result is not None and e.result.mode != "run":
            _print(bench_output(e.result.to_json()), e.result.to_json(), as_json)
        raise
    for note in result.notes:
        err_console.print(f"[yellow]note:[/yellow] {note}")
    _print(bench_output(result.to_json()), result.to_json(), as_json)


@app.command()
def audit(
    model: Path = typer.Argument(..., help="Any ONNX model."),
    target: str = typer.Option(..., help="Target profile name or .toml path."),
    as_json: bool = JSON_OPT,
) -> None:
    """List every operator of MODEL the target does not support, with node names (exit 1 if any)."""
    from edgekd import api
    from edgekd.tables import audit_table

    try:
        result = api.audit(model=model, target=target)
    except CheckFailed as e:  # the table still shows what the audit found, then exit 1
        if e.result is not None:
            _print(audit_table(e.result.to_json()), e.result.to_json(), as_json)
        raise
    _print(audit_table(result.to_json()), result.to_json(), as_json)


@app.command()
def targets(
    name: Optional[str] = typer.Argument(None, help="Show this profile in full."),
    as_json: bool = JSON_OPT,
) -> None:
    """List the target profiles, or show one."""
    from edgekd import api
    from edgekd.tables import console, targets_table

    if name is None:
        profiles = api.list_targets()
        _print(targets_table(profiles), [p.to_json() for p in profiles], as_json)
        return
    prof = api.load_target(name=name)
    if as_json:
        _print(None, prof.to_json(), True)
    else:
        console.print_json(json.dumps(prof.to_json(), default=str))


@app.command()
def teachers(data: str = DATA_OPT, data_dir: Optional[Path] = DATA_DIR_OPT, as_json: bool = JSON_OPT) -> None:
    """List the registry teachers with their cost (params, MFLOPs) at the data's input size."""
    from edgekd import api
    from edgekd.tables import teachers_table

    result = api.teachers(data=data, data_dir=data_dir)
    _print(teachers_table(result.to_json()), result.to_json(), as_json)


@app.command()
def verify(run: Optional[Path] = typer.Argument(None, help="Run folder (default: artifacts/latest)."),
           as_json: bool = JSON_OPT) -> None:
    """Hash every file the run's manifests name; exit 1 if any is missing or differs."""
    from edgekd import api
    from edgekd.tables import console

    result = api.verify(run=run)
    if as_json:
        _print(None, result.to_json(), True)
    else:
        console.print(f"verified {len(result.checked)} files in {result.run}: all match their manifests")


REPORT_RUNS_ARG = typer.Argument(None, metavar="RUN", help=(
    "Run folders (default: artifacts/latest); several make one comparison page."))
REPORT_OUT_OPT = typer.Option(None, help=(
    "Output file (default: RUN/report.html; several runs: artifacts/report-compare.html)."))


@app.command()
def report(runs: Optional[List[Path]] = REPORT_RUNS_ARG,
           out: Optional[Path] = REPORT_OUT_OPT,
           ) -> None:
    """Write one self-contained HTML page for a run, or several runs side by side (opens offline)."""
    from edgekd import api

    typer.echo(f"report: {api.report(runs=list(runs or []), out=out).path}")


@runner_app.command("setup")
def runner_setup(
    kind: str = typer.Argument(..., help="qemu, or a target profile (name or .toml) whose [runtime] names a package"),
    wheels: Optional[Path] = typer.Option(None, help="Install from this folder of wheels only (pip --no-index)."),
    force: bool = typer.Option(False, "--force", help="Build it again even if it is ready."),
) -> None:
    """Prepare a runner: `qemu` builds an aarch64 ONNX Runtime root under qemu-user; a TARGET whose
    profile names `[runtime] package` gets that onnxruntime build in a venv of its own."""
    from edgekd import api

    path = api.runner_setup(target=kind, wheels=wheels, force=force, progress=lambda m: typer.echo(m, err=True))
    typer.echo(f"{kind} runner ready: {path}")


# Parameters whose flag is not `--` + the name with dashes (repeatable options are singular).
FLAGS = {"methods": "--method", "teacher_weights": "--teacher-weight", "loss_options": "--loss-option",
         "student_taps": "--student-tap", "teacher_taps": "--teacher-tap", "teachers": "--teacher",
         "name": "NAME", "model": "MODEL"}


def one_line(e: Exception) -> str:
    """The error as one line. A BadInput raised in a DataLoader worker comes back with the
    worker's traceback in its message: the line that matters is the last one. Any other
    newline (a file name holding one) is shown escaped."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Traceback" in text:
        return text.splitlines()[-1].split("BadInput: ", 1)[-1]
    return text.replace("\n", "\\n") or type(e).__name__


def flag_text(e: Exception) -> str:
    """`one_line(e)` with the parameters it names (BadInput.params) shown as flags: the one place
    where library names (`teacher_epochs`) become the command's (`--teacher-epochs`)."""
    text = one_line(e)
    for param in getattr(e, "params", ()):
        flag = FLAGS.get(param, "--" + param.replace("_", "-"))
        text = re.sub(rf"(?<![\w-]){re.escape(param)}(?![\w-])", lambda _: flag, text, count=1)
    return text


def main() -> None:
    """Entry point: one line and the right exit code for edgekd's own errors, never a traceback."""
    try:
        code = app(standalone_mode=False)  # standalone_mode=False returns typer.Exit's code instead of exiting
        if isinstance(code, int) and code:
            sys.exit(code)
    except EdgekdError as e:
        head = getattr(e, "head", None) or ("error" if e.exit_code == 2 else "check failed")
        typer.echo(f"edgekd: {head}: {flag_text(e)}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        typer.echo("edgekd: interrupted; the last epoch checkpoint is kept (continue with --resume)", err=True)
        sys.exit(130)
    except Exception as e:
        # Usage errors come from the click that typer bundles; recognise them by shape.
        if hasattr(e, "format_message") and isinstance(getattr(e, "exit_code", None), int):
            ctx = getattr(e, "ctx", None)
            where = ctx.command_path.replace("python -m edgekd.cli", "edgekd") if ctx else "edgekd"
            msg = " ".join(e.format_message().split())
            if not msg:  # a bare `edgekd`: the help was printed
                sys.exit(0)
            typer.echo(f"edgekd: error: {msg} (see '{where} --help')", err=True)
            sys.exit(e.exit_code if e.exit_code in (0, 1) else 2)
        if type(e).__name__ == "Abort":
            sys.exit(1)
        raise


if __name__ == "__main__":
    main()
