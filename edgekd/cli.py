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
from edgekd import options as opts
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


# ---------------------------------------------------------------- options from edgekd.options
# distill, compare, select-teacher and select-student build every option from the one table
# (`edgekd.options.OPTIONS`: flag, default, help); tests/test_options.py checks that the commands, the API
# and DistillConfig agree with it.
def _opt(command: str, name: str):
    """The typer option `name` of `command`, made from its `edgekd.options` entry."""
    o = opts.get(command, name)
    decls = [o.cli_flag if o.type is not bool or o.switch else f"{o.cli_flag}/--no-{o.cli_flag[2:]}"]
    decls += [o.short] if o.short else []
    default = ... if o.required else None if o.repeatable and opts.is_empty(o.default) else o.default
    return typer.Option(default, *decls, help=o.help)


def _given(ctx: typer.Context, command: str) -> set[str]:
    """The options given on the command line (click's parameter source), by their API names."""
    flags = {o.cli_flag: o.name for o in opts.for_command(command).values()}
    return {flags[f] for p in ctx.command.params for f in p.opts if f in flags and p.name is not None
            and getattr(ctx.get_parameter_source(p.name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")}


def _with_recipe(ctx: typer.Context, command: str, kw: dict) -> dict:
    """`kw` (the API's keywords from the command line) with --config's values for every option not given."""
    config = ctx.params.get("config")
    if config is None:
        return kw
    from edgekd.recipe import read_recipe

    given = _given(ctx, command)
    return {**kw, **{k: v for k, v in read_recipe(config, command).items() if k not in given}}


D, C, ST, SS = opts.DISTILL, opts.COMPARE, opts.SELECT_TEACHER, opts.SELECT_STUDENT
# check-teacher and teachers take these as distill does
DATA_OPT, DATA_DIR_OPT, DOWNLOAD_OPT = _opt(D, "data"), _opt(D, "data_dir"), _opt(D, "download")
INPUT_SIZE_OPT, RESIZE_OPT = _opt(D, "input_size"), _opt(D, "resize")
T_FILES_OPT, T_SIZE_OPT = _opt(D, "teacher_weight_files"), _opt(D, "teacher_input_size")
T_MEAN_OPT, T_STD_OPT = _opt(D, "teacher_mean"), _opt(D, "teacher_std")
T_OUTPUTS_OPT, CLASS_ORDER_OPT = _opt(D, "teacher_outputs"), _opt(D, "class_order")


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


def _teacher_kw(files, size, mean, std, outputs, class_order) -> dict:
    """The teacher options of every command that takes a teacher, as the API's keywords."""
    return dict(teacher_weight_files=tuple(files or ()), teacher_input_size=size, teacher_mean=mean,
                teacher_std=std, teacher_outputs=outputs, class_order=class_order)


@app.command()
def distill(
    ctx: typer.Context, config: Optional[Path] = _opt(D, "config"),
    data: str = _opt(D, "data"), data_dir: Optional[Path] = _opt(D, "data_dir"), download: bool = _opt(D, "download"),
    teacher: Optional[List[str]] = _opt(D, "teacher"), device: str = _opt(D, "device"),
    teacher_mode: str = _opt(D, "teacher_mode"), teacher_weight: Optional[List[float]] = _opt(D, "teacher_weights"),
    teacher_weight_files: Optional[List[str]] = _opt(D, "teacher_weight_files"),
    teacher_input_size: Optional[str] = _opt(D, "teacher_input_size"),
    teacher_mean: Optional[str] = _opt(D, "teacher_mean"), teacher_std: Optional[str] = _opt(D, "teacher_std"),
    input_size: Optional[str] = _opt(D, "input_size"), resize: Optional[str] = _opt(D, "resize"),
    unlabeled: Optional[List[Path]] = _opt(D, "unlabeled"), augment: bool = _opt(D, "augment"),
    teacher_outputs: str = _opt(D, "teacher_outputs"), class_order: Optional[str] = _opt(D, "class_order"),
    student: Optional[str] = _opt(D, "student"), target: str = _opt(D, "target"),
    method: Optional[List[str]] = _opt(D, "methods"), lr_schedule: str = _opt(D, "lr_schedule"),
    warmup_epochs: float = _opt(D, "warmup_epochs"), precision: str = _opt(D, "precision"),
    channels_last: Optional[bool] = _opt(D, "channels_last"), compile: bool = _opt(D, "compile"),
    tensorboard: Optional[Path] = _opt(D, "tensorboard"), deterministic: bool = _opt(D, "deterministic"),
    temperature: Optional[float] = _opt(D, "temperature"), epochs: Optional[int] = _opt(D, "epochs"),
    teacher_epochs: Optional[int] = _opt(D, "teacher_epochs"), seeds: int = _opt(D, "seeds"),
    lr: float = _opt(D, "lr"), batch_size: int = _opt(D, "batch_size"), hint_epochs: int = _opt(D, "hint_epochs"),
    generations: int = _opt(D, "generations"), online: bool = _opt(D, "online"), peers: int = _opt(D, "peers"),
    cache_teacher: bool = _opt(D, "cache_teacher"), student_tap: Optional[List[str]] = _opt(D, "student_taps"),
    teacher_tap: Optional[List[str]] = _opt(D, "teacher_taps"),
    loss_option: Optional[List[str]] = _opt(D, "loss_options"),
    run: Optional[Path] = _opt(D, "run"), quiet: bool = _opt(D, "quiet"),
    labeled_fraction: float = _opt(D, "labeled_fraction"), resume: bool = _opt(D, "resume"),
    progress: bool = _opt(D, "progress"), nproc: int = _opt(D, "nproc"), nnodes: str = _opt(D, "nnodes"),
    rdzv_endpoint: Optional[str] = _opt(D, "rdzv_endpoint"), node_rank: Optional[int] = _opt(D, "node_rank"),
    as_json: bool = _opt(D, "as_json"),
) -> None:
    """Train or load the teacher, then the student alone and distilled, over --seeds seeds."""
    _launch_if_asked(nproc, nnodes, rdzv_endpoint, node_rank, device)
    from edgekd import api
    from edgekd.tables import distill_table, with_warnings

    kw = dict(
        data=data, data_dir=data_dir, download=download, teacher=teacher or None,  # None: from the data
        teacher_mode=teacher_mode, teacher_weights=teacher_weight or None, student=student, target=target,
        methods=method or None, temperature=temperature, epochs=epochs, teacher_epochs=teacher_epochs,
        seeds=seeds, lr=lr, batch_size=batch_size, labeled_fraction=labeled_fraction, hint_epochs=hint_epochs,
        generations=generations, online=online, peers=peers, cache_teacher=cache_teacher,
        student_taps=_pairs("--student-tap", student_tap), teacher_taps=_pairs("--teacher-tap", teacher_tap),
        loss_options=_loss_options(loss_option), device=device, precision=precision,
        channels_last=channels_last, lr_schedule=lr_schedule,
        warmup_epochs=warmup_epochs, compile=compile, tensorboard=tensorboard, deterministic=deterministic,
        teacher_outputs=teacher_outputs, class_order=class_order,
        **_byot(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std, input_size, augment, resize,
                unlabeled))
    result = api.distill(**_with_recipe(ctx, D, kw), run=run, resume=resume,
                         progress=progress and not as_json and not quiet)
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
    ctx: typer.Context, config: Optional[Path] = _opt(C, "config"),
    data: str = _opt(C, "data"), data_dir: Optional[Path] = _opt(C, "data_dir"), download: bool = _opt(C, "download"),
    teacher: Optional[List[str]] = _opt(C, "teacher"), student: Optional[str] = _opt(C, "student"),
    target: str = _opt(C, "target"), teacher_weight_files: Optional[List[str]] = _opt(C, "teacher_weight_files"),
    teacher_input_size: Optional[str] = _opt(C, "teacher_input_size"),
    teacher_mean: Optional[str] = _opt(C, "teacher_mean"), teacher_std: Optional[str] = _opt(C, "teacher_std"),
    teacher_outputs: str = _opt(C, "teacher_outputs"), class_order: Optional[str] = _opt(C, "class_order"),
    input_size: Optional[str] = _opt(C, "input_size"), resize: Optional[str] = _opt(C, "resize"),
    method: Optional[List[str]] = _opt(C, "methods"),
    temperature: Optional[float] = _opt(C, "temperature"), epochs: Optional[int] = _opt(C, "epochs"),
    teacher_epochs: Optional[int] = _opt(C, "teacher_epochs"), seeds: int = _opt(C, "seeds"),
    labeled_fraction: float = _opt(C, "labeled_fraction"), run: Optional[Path] = _opt(C, "run"),
    device: str = _opt(C, "device"), progress: bool = _opt(C, "progress"), quiet: bool = _opt(C, "quiet"),
    as_json: bool = _opt(C, "as_json"),
) -> None:
    """The seminar table: teacher once, student alone, then the student with each method (same seeds and budget)."""
    from edgekd import api
    from edgekd.tables import compare_table

    kw = dict(data=data, data_dir=data_dir, download=download, teacher=teacher or None,
              student=student, target=target, methods=method or None, temperature=temperature,
              epochs=epochs, teacher_epochs=teacher_epochs, seeds=seeds, labeled_fraction=labeled_fraction,
              device=device, input_size=input_size_text(input_size), resize=resize,
              **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std,
                            teacher_outputs, class_order))
    result = api.compare(**_with_recipe(ctx, C, kw), run=run, progress=progress and not as_json and not quiet)
    _print(compare_table(result.to_json()), result.to_json(), as_json)


@app.command("select-teacher")
def select_teacher(
    ctx: typer.Context, config: Optional[Path] = _opt(ST, "config"),
    student: Optional[str] = _opt(ST, "student"), teacher: List[str] = _opt(ST, "teachers"),
    teacher_weight_files: Optional[List[str]] = _opt(ST, "teacher_weight_files"),
    teacher_input_size: Optional[str] = _opt(ST, "teacher_input_size"),
    teacher_mean: Optional[str] = _opt(ST, "teacher_mean"), teacher_std: Optional[str] = _opt(ST, "teacher_std"),
    teacher_outputs: str = _opt(ST, "teacher_outputs"), class_order: Optional[str] = _opt(ST, "class_order"),
    data: str = _opt(ST, "data"), data_dir: Optional[Path] = _opt(ST, "data_dir"),
    download: bool = _opt(ST, "download"), target: str = _opt(ST, "target"),
    temperature: Optional[float] = _opt(ST, "temperature"), n: int = _opt(ST, "n"),
    warmup_steps: int = _opt(ST, "warmup_steps"), teacher_epochs: Optional[int] = _opt(ST, "teacher_epochs"),
    labeled_fraction: float = _opt(ST, "labeled_fraction"), higher_is_better: bool = _opt(ST, "higher_is_better"),
    seed: int = _opt(ST, "seed"), run: Optional[Path] = _opt(ST, "run"), progress: bool = _opt(ST, "progress"),
    as_json: bool = _opt(ST, "as_json"),
) -> None:
    """Rank candidate teachers for a student before paying for distillation (GRACE-style score + baselines)."""
    from edgekd import api
    from edgekd.tables import teacher_selection_table

    kw = dict(student=student, teachers=list(teacher), data=data, data_dir=data_dir, download=download,
              target=target, temperature=temperature, n=n, warmup_steps=warmup_steps, teacher_epochs=teacher_epochs,
              seed=seed, higher_is_better=higher_is_better, labeled_fraction=labeled_fraction,
              **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std, teacher_outputs,
                            class_order))
    result = api.select_teacher(**_with_recipe(ctx, ST, kw), run=run, progress=progress and not as_json)
    _print(teacher_selection_table(result.to_json()), result.to_json(), as_json)


@app.command("select-student")
def select_student_cmd(
    ctx: typer.Context, config: Optional[Path] = _opt(SS, "config"), target: str = _opt(SS, "target"),
    teacher: Optional[List[str]] = _opt(SS, "teacher"),
    teacher_weight_files: Optional[List[str]] = _opt(SS, "teacher_weight_files"),
    teacher_input_size: Optional[str] = _opt(SS, "teacher_input_size"),
    teacher_mean: Optional[str] = _opt(SS, "teacher_mean"), teacher_std: Optional[str] = _opt(SS, "teacher_std"),
    teacher_outputs: str = _opt(SS, "teacher_outputs"), class_order: Optional[str] = _opt(SS, "class_order"),
    budget_ms: Optional[float] = _opt(SS, "budget_ms"), trials: int = _opt(SS, "trials"),
    seed: int = _opt(SS, "seed"), runner: str = _opt(SS, "runner"),
    data: str = _opt(SS, "data"), data_dir: Optional[Path] = _opt(SS, "data_dir"),
    download: bool = _opt(SS, "download"), epochs: Optional[int] = _opt(SS, "epochs"),
    short_epochs: Optional[int] = _opt(SS, "short_epochs"), seeds: int = _opt(SS, "seeds"),
    method: Optional[List[str]] = _opt(SS, "methods"), teacher_epochs: Optional[int] = _opt(SS, "teacher_epochs"),
    temperature: Optional[float] = _opt(SS, "temperature"), include: Optional[List[str]] = _opt(SS, "include"),
    run: Optional[Path] = _opt(SS, "run"), input_size: Optional[str] = _opt(SS, "input_size"),
    resize: Optional[str] = _opt(SS, "resize"), progress: bool = _opt(SS, "progress"),
    as_json: bool = _opt(SS, "as_json"),
) -> None:
    """Search students built from the target's ops: predict, time, drop what misses the budget, distil the rest with \
successive halving."""
    from edgekd import api
    from edgekd.search.pareto import select_table

    kw = dict(target=target, teacher=teacher or None, data=data, data_dir=data_dir, download=download,
              budget_ms=budget_ms, trials=trials, seed=seed, runner=runner, epochs=epochs, short_epochs=short_epochs,
              seeds=seeds, methods=method or None, teacher_epochs=teacher_epochs, temperature=temperature,
              include=include or None, input_size=input_size_text(input_size), resize=resize,
              **_teacher_kw(teacher_weight_files, teacher_input_size, teacher_mean, teacher_std, teacher_outputs,
                            class_order))
    result = api.select_student(**_with_recipe(ctx, SS, kw), run=run, progress=progress and not as_json)
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


# Each parameter's flag: the option table's (repeatable options are singular: methods → --method), and the
# arguments; any other parameter is `--` + the name with dashes.
FLAGS = {**{o.name: o.cli_flag for o in opts.OPTIONS}, "name": "NAME", "model": "MODEL"}


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
