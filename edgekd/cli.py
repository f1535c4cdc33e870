"""The `edgekd` command: each command parses its options, calls one library function, prints.

torch is imported only inside commands, so `edgekd --help` answers at once.
Errors: BadInput → one line, exit 2; CheckFailed → the failing numbers, exit 1.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import List, Optional

import typer

from edgekd import defaults
from edgekd.errors import EdgekdError

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


def _distill_config(*, teacher, teacher_weight, method, resume: bool, run, teacher_weight_files=None, **kw):
    """CLI options → DistillConfig (repeatable options become tuples)."""
    from edgekd.errors import BadInput
    from edgekd.train.config import DistillConfig

    if resume and run is None:
        raise BadInput("--resume needs --run DIR (the run folder to continue)")
    teachers = teacher or [defaults.TEACHER]
    return DistillConfig(teacher=teachers[0] if len(teachers) == 1 else tuple(teachers),
                         teacher_weights=list(teacher_weight) if teacher_weight else None,
                         methods=tuple(method or defaults.METHODS), resume=resume, run=run,
                         teacher_weight_files=tuple(teacher_weight_files or ()), **kw)


# Options shared by `distill` and `compare` (typer reads them off the signature).
DATA_OPT = typer.Option(defaults.DATA, help="digits | mnist | fashion-mnist | cifar10 | imagefolder:DIR")
DATA_DIR_OPT = typer.Option(defaults.DATA_DIR, help="Folder holding torchvision datasets.")
DOWNLOAD_OPT = typer.Option(False, help="Let torchvision download the dataset into --data-dir.")
TEACHER_OPT = typer.Option(None, help="Registry name, teacher file (edgekd .pt, TorchScript, .onnx), or torchvision:ARCH / timm:NAME with --teacher-weights; repeat for several teachers (default: cnn).")
STUDENT_OPT = typer.Option(defaults.STUDENT, help="Student name from the registry.")
TARGET_OPT = typer.Option(defaults.TARGET, help="Target profile name or .toml path; the student uses only its ops.")
EPOCHS_OPT = typer.Option(defaults.EPOCHS, help="Student epochs (the control gets the same epochs and steps).")
T_EPOCHS_OPT = typer.Option(defaults.TEACHER_EPOCHS, help="Epochs when training a teacher.")
SEEDS_OPT = typer.Option(defaults.SEEDS, help="Seeds for mean ± std.")
LF_OPT = typer.Option(defaults.LABELED_FRACTION, help="Keep labels for this share of the train set; the rest only the teacher labels.")
RUN_OPT = typer.Option(None, help="Run folder (default: a new artifacts/<run-id>).")
TEMP_OPT = typer.Option(defaults.TEMPERATURE, help="Softmax temperature T for soft labels.")


@app.command()
def distill(
    data: str = DATA_OPT, data_dir: Path = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    teacher: Optional[List[str]] = TEACHER_OPT,
    teacher_mode: str = typer.Option("mean", help="Several teachers: mean | weighted | confidence."),
    teacher_weight: Optional[List[float]] = typer.Option(None, help="Per-teacher weight for --teacher-mode weighted."),
    teacher_weight_files: Optional[List[str]] = typer.Option(None, "--teacher-weights", help="FILE of weights (state_dict or checkpoint) for each torchvision:ARCH / timm:NAME --teacher, in order."),
    teacher_input_size: Optional[int] = typer.Option(None, help="The teacher sees each image at this H = W (default: the data's)."),
    teacher_mean: Optional[str] = typer.Option(None, help="The teacher's per-channel mean, comma-separated, or 'imagenet' (default: the data's)."),
    teacher_std: Optional[str] = typer.Option(None, help="The teacher's per-channel std, comma-separated, or 'imagenet' (default: the data's)."),
    input_size: Optional[int] = typer.Option(None, help="imagefolder: the student's input H = W in pixels (default: 32)."),
    augment: bool = typer.Option(False, help="Random-resized crop + flip on the train set (imagefolder, cifar10); the teacher runs live."),
    student: str = STUDENT_OPT, target: str = TARGET_OPT,
    method: Optional[List[str]] = typer.Option(None, help="Loss NAME[:WEIGHT], repeatable: ce hard soft cosine fitnet at rkd rkd-d rkd-a. Default: soft:0.7 ce:0.3."),
    temperature: float = TEMP_OPT, epochs: int = EPOCHS_OPT, teacher_epochs: int = T_EPOCHS_OPT, seeds: int = SEEDS_OPT,
    lr: float = typer.Option(defaults.LR, help="Learning rate (AdamW, cosine schedule)."),
    batch_size: int = typer.Option(defaults.BATCH_SIZE, help="Batch size."),
    labeled_fraction: float = LF_OPT,
    hint_epochs: int = typer.Option(0, help="FitNets stage 1: epochs training the student up to its tap on the hint loss."),
    generations: int = typer.Option(0, help="Born-again self-distillation: K generations of the student teaching the next."),
    online: bool = typer.Option(False, help="Online distillation: deep mutual learning of --peers students, no teacher."),
    peers: int = typer.Option(2, help="Students trained together with --online."),
    cache_teacher: bool = typer.Option(True, help="Cache the teacher's outputs when inputs are deterministic."),
    student_tap: Optional[List[str]] = typer.Option(None, help="ROLE=MODULE: tap this student module for a feature loss (roles: hidden, feature_map)."),
    teacher_tap: Optional[List[str]] = typer.Option(None, help="ROLE=MODULE: tap this teacher module (e.g. feature_map=layer3)."),
    loss_option: Optional[List[str]] = typer.Option(None, help="LOSS.KEY=VALUE, e.g. fitnet.kernel=3 or cosine.project=false."),
    run: Optional[Path] = RUN_OPT,
    resume: bool = typer.Option(False, help="Continue from the run's last epoch checkpoints (needs --run)."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    nproc: int = typer.Option(1, help="Processes per node: launches through torchrun (gloo on CPU, NCCL on GPU)."),
    nnodes: str = typer.Option("1", help="torchrun --nnodes (e.g. 2 or 1:4), for several machines."),
    rdzv_endpoint: Optional[str] = typer.Option(None, help="torchrun --rdzv-endpoint HOST:PORT, for several machines."),
    node_rank: Optional[int] = typer.Option(None, help="torchrun --node-rank, with --rdzv-endpoint."),
    as_json: bool = JSON_OPT,
) -> None:
    """Train or load the teacher, then the student alone and distilled, over --seeds seeds."""
    from edgekd.train import distributed as dist
    if (nproc > 1 or nnodes != "1") and "WORLD_SIZE" not in os.environ:
        if nproc < 1:
            raise EdgekdError(f"--nproc {nproc}: must be >= 1")
        raise typer.Exit(dist.launch(_without_launch_options(sys.argv[1:]), nproc=nproc, nnodes=nnodes,
                                     rdzv_endpoint=rdzv_endpoint, node_rank=node_rank))
    from edgekd.tables import distill_table
    from edgekd.train.distill import distill as run_distill

    kw = {k: v for k, v in locals().items() if k not in (
        "as_json", "run_distill", "distill_table", "dist", "nproc", "nnodes", "rdzv_endpoint", "node_rank",
        "student_tap", "teacher_tap", "loss_option")}
    kw["progress"] = progress and not as_json
    kw["student_taps"] = _pairs("--student-tap", student_tap)
    kw["teacher_taps"] = _pairs("--teacher-tap", teacher_tap)
    kw["loss_options"] = _loss_options(loss_option)
    dist.init_from_env()
    try:
        summary = run_distill(_distill_config(**kw))
        main_rank = dist.is_main()
    finally:
        dist.shutdown()
    if main_rank:
        _print(distill_table(summary), summary, as_json)


def _pairs(option: str, items: Optional[List[str]]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key or not value:
            raise EdgekdError(f"{option} '{item}': expected ROLE=MODULE, e.g. feature_map=layer3")
        out[key] = value
    return out


def _loss_options(items: Optional[List[str]]) -> dict[str, dict]:
    """LOSS.KEY=VALUE → {LOSS: {KEY: value}}; values are JSON when they parse (3, 0.5, false), else text."""
    out: dict[str, dict] = {}
    for item in items or []:
        target, sep, raw = item.partition("=")
        loss, dot, key = target.partition(".")
        if not (sep and dot and loss and key):
            raise EdgekdError(f"--loss-option '{item}': expected LOSS.KEY=VALUE, e.g. fitnet.kernel=3")
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
    data: str = DATA_OPT, data_dir: Path = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    teacher: Optional[List[str]] = TEACHER_OPT, student: str = STUDENT_OPT, target: str = TARGET_OPT,
    only: Optional[List[str]] = typer.Option(None, "--method", help="Methods for the table (repeatable); default: all of soft hard cosine fitnet fitnet+hint at rkd born-again dml."),
    temperature: float = TEMP_OPT, epochs: int = EPOCHS_OPT, teacher_epochs: int = T_EPOCHS_OPT, seeds: int = SEEDS_OPT,
    labeled_fraction: float = LF_OPT, run: Optional[Path] = RUN_OPT,
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = JSON_OPT,
) -> None:
    """The seminar table: teacher once, student alone, then the student with each method (same seeds and budget)."""
    from edgekd.tables import compare_table
    from edgekd.train.compare import DEFAULT
    from edgekd.train.compare import compare as run_compare

    cfg = _distill_config(data=data, data_dir=data_dir, download=download, teacher=teacher, teacher_weight=None,
                          student=student, target=target, method=None, temperature=temperature, epochs=epochs,
                          teacher_epochs=teacher_epochs, seeds=seeds, labeled_fraction=labeled_fraction, run=run,
                          resume=False, progress=progress and not as_json)
    result = run_compare(cfg, methods=tuple(only or DEFAULT))
    _print(compare_table(result), result, as_json)


@app.command("select-teacher")
def select_teacher(
    student: str = STUDENT_OPT,
    teacher: List[str] = typer.Option(..., help="Candidate teacher (name or .pt path); repeat for each."),
    data: str = DATA_OPT, data_dir: Path = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT, target: str = TARGET_OPT,
    temperature: float = TEMP_OPT,
    n: int = typer.Option(256, help="Examples whose per-example gradients are scored."),
    warmup_steps: int = typer.Option(0, help="CE steps on the student before scoring (0 = at initialisation)."),
    teacher_epochs: int = T_EPOCHS_OPT, labeled_fraction: float = LF_OPT,
    higher_is_better: bool = typer.Option(False, help="Rank a higher GRACE score first (default: lower first, as measured)."),
    seed: int = typer.Option(0, help="Seed for the projection and the splits."),
    run: Optional[Path] = typer.Option(None, help="Keep the trained teachers and teacher_selection.json here."),
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = JSON_OPT,
) -> None:
    """Rank candidate teachers for a student before paying for distillation (GRACE-style score + baselines)."""
    from edgekd.search.teacher import select_teachers
    from edgekd.tables import teacher_selection_table

    result = select_teachers(student=student, teachers=list(teacher), data=data, data_dir=data_dir, download=download,
                             target=target, run=run, temperature=temperature, n=n, warmup_steps=warmup_steps,
                             teacher_epochs=teacher_epochs, seed=seed, progress=progress and not as_json,
                             higher_is_better=higher_is_better, labeled_fraction=labeled_fraction)
    result.setdefault("student", student)
    _print(teacher_selection_table(result), result, as_json)


@app.command("select-student")
def select_student_cmd(
    target: str = typer.Option(..., help="Target profile name or .toml path; every candidate uses only its ops."),
    teacher: Optional[List[str]] = TEACHER_OPT,
    budget_ms: Optional[float] = typer.Option(None, help="Latency budget (p90, ms); default: the profile's."),
    trials: int = typer.Option(12, help="Candidates to time (the predictor skips hopeless draws without timing)."),
    seed: int = typer.Option(0, help="Seed for sampling the search space (same seed, same result)."),
    runner: str = typer.Option("local", help="local | qemu | ssh://USER@HOST[:PORT]"),
    data: str = DATA_OPT, data_dir: Path = DATA_DIR_OPT, download: bool = DOWNLOAD_OPT,
    epochs: int = EPOCHS_OPT,
    short_epochs: Optional[int] = typer.Option(None, help="Epochs of the first successive-halving round."),
    seeds: int = typer.Option(1, help="Seeds per finalist."),
    method: Optional[List[str]] = typer.Option(None, help="Loss NAME[:WEIGHT], repeatable (default: soft:0.7 ce:0.3)."),
    teacher_epochs: int = T_EPOCHS_OPT, run: Optional[Path] = RUN_OPT,
    progress: bool = typer.Option(True, help="Show progress bars."),
    as_json: bool = JSON_OPT,
) -> None:
    """Search students built from the target's ops: predict, time, drop what misses the budget, distil the rest with successive halving."""
    from edgekd.search.student import select_student, select_table

    teachers = teacher or [defaults.TEACHER]
    result = select_student(target=target, teacher=teachers[0] if len(teachers) == 1 else list(teachers),
                            data=data, data_dir=data_dir, download=download, budget_ms=budget_ms, trials=trials,
                            seed=seed, runner=runner, epochs=epochs, short_epochs=short_epochs, seeds=seeds,
                            methods=tuple(method or defaults.METHODS), teacher_epochs=teacher_epochs, run=run,
                            progress=progress and not as_json)
    _print(select_table(result), {k: v for k, v in result.items() if k != "summary"}, as_json)


@app.command()
def export(
    target: str = typer.Option(..., help="Target profile name or .toml path."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: artifacts/latest)."),
    quantize: Optional[str] = typer.Option(None, help="Also make a static int8 QDQ variant: int8."),
    batch: Optional[int] = typer.Option(None, help="Fix the batch axis to N (0 = dynamic). Default: dynamic, 1 for NNAPI."),
    exporter: str = typer.Option(defaults.EXPORTER, help="torch → ONNX exporter: torchscript | dynamo (torch.export)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Export the student to ONNX, audit its ops, check parity, write golden vectors and the manifest."""
    from edgekd.deploy.export import export_run
    from edgekd.tables import export_table

    manifest = export_run(target=target, run=run, quantize=quantize, batch=batch, exporter=exporter)
    _print(export_table(manifest), manifest, as_json)


@app.command()
def bench(
    model: Optional[Path] = typer.Argument(None, help="Any ONNX model to time instead of a run's export."),
    target: Optional[List[str]] = typer.Option(None, help="Target profile; repeat for a side-by-side table "
                                                          "(default: the run's only exported target)."),
    run: Optional[Path] = typer.Option(None, help="Run folder (default: artifacts/latest)."),
    runner: str = typer.Option("local", help="local | qemu | ssh://USER@HOST[:PORT]"),
    min_seconds: float = typer.Option(defaults.BENCH_MIN_SECONDS, help="Time each model for at least this long."),
    compare: bool = typer.Option(True, help="Also time the teacher (ONNX) and the eager student."),
    shape: Optional[List[str]] = typer.Option(None, help="MODEL only: NAME=1x3x48x192 for symbolic dimensions."),
    inputs: Optional[Path] = typer.Option(None, help="MODEL only: .npz with one array per graph input."),
    profile: bool = typer.Option(False, "--profile", help="Top operators by total time per provider (ORT profiler)."),
    as_json: bool = JSON_OPT,
) -> None:
    """Time the exported model (or any ONNX MODEL) through the profile's execution providers; check the budgets."""
    from edgekd.bench.run import bench_any
    from edgekd.errors import CheckFailed
    from edgekd.tables import bench_output, err_console

    result = bench_any(model=model, targets=list(target or []), run=run, runner=runner, compare=compare,
                       min_seconds=min_seconds, shapes=list(shape or []), inputs=inputs, profile=profile)
    for note in result.get("notes", []):
        err_console.print(f"[yellow]note:[/yellow] {note}")
    _print(bench_output(result), result, as_json)
    if result.get("failures"):
        raise CheckFailed("; ".join(result["failures"]))


@app.command()
def audit(
    model: Path = typer.Argument(..., help="Any ONNX model."),
    target: str = typer.Option(..., help="Target profile name or .toml path."),
    as_json: bool = JSON_OPT,
) -> None:
    """List every operator of MODEL the target does not support, with node names (exit 1 if any)."""
    from edgekd.deploy.audit import audit_file
    from edgekd.errors import CheckFailed
    from edgekd.tables import audit_table

    report = audit_file(model, target)
    _print(audit_table(report), report.to_dict(), as_json)
    if not report.passed:
        raise CheckFailed(f"audit {model} against {report.target}: " + "; ".join(report.format_lines()))


@app.command()
def targets(
    name: Optional[str] = typer.Argument(None, help="Show this profile in full."),
    as_json: bool = JSON_OPT,
) -> None:
    """List the target profiles, or show one."""
    from edgekd.deploy.targets import list_targets, load_target
    from edgekd.tables import console, targets_table

    if name is None:
        profiles = [load_target(n) for n in list_targets()]
        _print(targets_table(profiles), [p.to_dict() for p in profiles], as_json)
        return
    prof = load_target(name)
    if as_json:
        _print(None, prof.to_dict(), True)
    else:
        console.print_json(json.dumps(prof.to_dict(), default=str))


@app.command()
def verify(run: Optional[Path] = typer.Argument(None, help="Run folder (default: artifacts/latest)."),
           as_json: bool = JSON_OPT) -> None:
    """Hash every file the run's manifests name; exit 1 if any is missing or differs."""
    from edgekd.artifacts import verify_run
    from edgekd.tables import console

    result = verify_run(run)
    if as_json:
        _print(None, result, True)
    else:
        console.print(f"verified {len(result['checked'])} files in {result['run']}: all match their manifests")


@app.command()
def report(runs: Optional[List[Path]] = typer.Argument(None, metavar="RUN", help="Run folders (default: artifacts/latest); several make one comparison page."),
           out: Optional[Path] = typer.Option(None, help="Output file (default: RUN/report.html; several runs: artifacts/report-compare.html)."),
           ) -> None:
    """Write one self-contained HTML page for a run, or several runs side by side (opens offline)."""
    from edgekd.report import make_report

    typer.echo(f"report: {make_report(list(runs or []), out=out)}")


@runner_app.command("setup")
def runner_setup(kind: str = typer.Argument(..., help="qemu")) -> None:
    """Prepare a runner: `qemu` builds an aarch64 ONNX Runtime root under qemu-user in a user cache."""
    from edgekd.bench.qemu import setup_qemu
    from edgekd.errors import BadInput

    if kind != "qemu":
        raise BadInput(f"unknown runner to set up '{kind}'; valid: qemu")
    path = setup_qemu(progress=lambda m: typer.echo(m, err=True))
    typer.echo(f"qemu runner ready: {path}")


def one_line(e: Exception) -> str:
    """The error as one line. A BadInput raised in a DataLoader worker comes back with the
    worker's traceback in its message: the line that matters is the last one. Any other
    newline (a file name holding one) is shown escaped."""
    text = str(e).strip()
    if text.startswith("Caught ") and "Traceback" in text:
        return text.splitlines()[-1].split("BadInput: ", 1)[-1]
    return text.replace("\n", "\\n") or type(e).__name__


def main() -> None:
    """Entry point: one line and the right exit code for edgekd's own errors, never a traceback."""
    try:
        app(standalone_mode=False)
    except EdgekdError as e:
        head = "error" if e.exit_code == 2 else "check failed"
        typer.echo(f"edgekd: {head}: {one_line(e)}", err=True)
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
