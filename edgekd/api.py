"""The Python API: one keyword-only function per `edgekd` command, with the command's defaults.

Each function does what its command does (same files written, same checks) and returns a
frozen dataclass holding the numbers the command prints; ``to_json()`` gives what the
command writes (its ``--json`` output). A failed check raises a subclass of
`edgekd.errors.CheckFailed` whose ``failures`` are `edgekd.checks.Failure` records and
whose ``result`` (where the stage got that far) is the partial result; bad input raises
`edgekd.errors.BadInput` naming the parameter.

Importing this module is cheap: torch and onnxruntime load inside the functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgekd import defaults
from edgekd.errors import AuditFailed, BudgetFailed, CheckFailed, GoldenFailed

if TYPE_CHECKING:
    from edgekd.deploy.targets import TargetProfile
    from edgekd.run.bench import BenchFile
    from edgekd.run.manifest import Manifest

__all__ = ["distill", "check_teacher", "TeacherCheck",
           "compare", "select_teacher", "select_student", "export", "bench", "audit", "verify",
           "load_target", "list_targets", "runner_setup", "teachers", "TeacherCosts", "report", "Result",
           "ReportResult", "DistillResult", "CompareResult", "TeacherSelection",
           "StudentSelection", "ExportResult", "BenchResult", "AuditResult", "VerifyResult"]

PathLike = str | Path


# ---------------------------------------------------------------- results
@dataclass(frozen=True)
class Result:
    """Base of every result: `data` is what the command writes; `to_json()` a JSON-safe copy."""

    data: dict[str, Any] = field(repr=False)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(self.data, default=str))


@dataclass(frozen=True)
class DistillResult(Result):
    """`edgekd distill`: accuracies (fractions, mean over seeds) and the run folder. `data` is distill.json."""

    run: Path
    teacher_accuracy: float
    student_alone: float | None   # None with labeled_fraction 0: no control
    student: float
    student_alone_std: float | None
    student_std: float
    gap_closed: float | None
    is_main: bool = True     # False on the other ranks of a torchrun launch
    agreement: float | None = None   # labeled_fraction 0: top-1 agreement with the teacher on test


@dataclass(frozen=True)
class CompareResult(Result):
    """`edgekd compare`: test accuracy (mean over seeds) per row: teacher, student alone, each method."""

    run: Path
    accuracy: dict[str, float]


@dataclass(frozen=True)
class TeacherSelection(Result):
    """`edgekd select-teacher`: candidate teachers best first, with their GRACE scores."""

    ranking: list[str]
    grace: dict[str, float]
    val_accuracy: dict[str, float]


@dataclass(frozen=True)
class StudentSelection(Result):
    """`edgekd select-student`: the recommended student and its numbers; `run` holds it as a normal run."""

    run: Path
    recommended: str
    latency_p90_ms: float
    val_accuracy: float
    test_accuracy: float

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in super().to_json().items() if k != "summary"}


@dataclass(frozen=True)
class ExportResult(Result):
    """`edgekd export`: the checks of the exported model. `data` is the target's manifest.json."""

    target: str
    model: Path
    deployable: bool
    max_abs_diff: float
    top1_agreement: float
    student_onnx_accuracy: float


@dataclass(frozen=True)
class BenchResult(Result):
    """`edgekd bench`: batch-1 latency of the recommended precision and the budget verdict, for the
    (first) target; `mode` is run (data = bench.json), targets (side by side) or model (any ONNX file)."""

    mode: str
    target: str
    runner: str
    provider: str
    latency_p50_ms: float
    latency_p90_ms: float
    peak_rss_mb: float
    recommended: str
    budget_passed: bool
    notes: list[str]


@dataclass(frozen=True)
class AuditResult(Result):
    """`edgekd audit`: the ops the target does not run, and the share of nodes its provider takes."""

    target: str
    used: list[str]
    unsupported: list[str]
    coverage: float
    passed: bool


@dataclass(frozen=True)
class VerifyResult(Result):
    """`edgekd verify`: the files whose hashes matched their manifests."""

    run: Path
    checked: list[str]


@dataclass(frozen=True)
class ReportResult(Result):
    """`edgekd report`: where the HTML page was written."""

    path: Path


def _attach(error: CheckFailed, result: Result | None) -> CheckFailed:
    error.result = result
    return error


# ---------------------------------------------------------------- training
def _dir(data_dir: PathLike | None) -> Path | None:
    """None stays None: the data's default places (./data, then e.g. Debian's fashion-mnist folder)."""
    return None if data_dir is None else Path(data_dir)


def _teachers(teacher: str | Sequence[str] | None) -> str | tuple[str, ...] | None:
    """One name stays a string, several become a tuple; None (follow the data) stays None."""
    if teacher is None or isinstance(teacher, str):
        return teacher
    teachers = tuple(teacher)
    return teachers[0] if len(teachers) == 1 else teachers


def _teacher_options(*, teacher_weight_files: Sequence[PathLike] = (),
                     teacher_input_size: int | str | Sequence[int] | None = None,
                     teacher_mean: str | None = None, teacher_std: str | None = None,
                     teacher_outputs: str = defaults.TEACHER_OUTPUTS,
                     class_order: str | Sequence[int] | None = None) -> dict[str, Any]:
    """The teacher options every command takes (distill, compare, select_student, select_teacher,
    check_teacher), as DistillConfig fields: weights files for torchvision:/timm: teachers, the
    teacher's view, what it outputs (`edgekd.models.foreign.OUTPUT_KINDS`) and its class order."""
    from edgekd.data import parse_hw

    order = class_order if class_order is None or isinstance(class_order, str) else ",".join(map(str, class_order))
    return dict(teacher_weight_files=tuple(str(f) for f in teacher_weight_files),
                teacher_input_size=parse_hw(teacher_input_size, option="--teacher-input-size"),
                teacher_mean=teacher_mean, teacher_std=teacher_std, teacher_outputs=teacher_outputs, class_order=order)


def distill(*, config: PathLike | None = None, data: str = defaults.DATA,
            data_dir: PathLike | None = None, download: bool = False,
            teacher: str | Sequence[str] | None = None, teacher_mode: str = defaults.TEACHER_MODE,
            teacher_weights: Sequence[float] | None = None, student: str | None = None,
            target: PathLike = defaults.TARGET, methods: Sequence[str] | None = None,
            temperature: float | None = None, epochs: int | None = None,
            teacher_epochs: int | None = None, seeds: int = defaults.SEEDS, lr: float = defaults.LR,
            batch_size: int = defaults.BATCH_SIZE, labeled_fraction: float = defaults.LABELED_FRACTION,
            hint_epochs: int = 0, generations: int = 0, online: bool = False, peers: int = defaults.PEERS,
            cache_teacher: bool = True, student_taps: dict[str, str] | None = None,
            teacher_taps: dict[str, str] | None = None, loss_options: dict[str, dict[str, Any]] | None = None,
            run: PathLike | None = None, resume: bool = False, progress: bool = True,
            device: str = defaults.DEVICE, precision: str = defaults.PRECISION, channels_last: bool | None = None,
            lr_schedule: str = defaults.LR_SCHEDULE, warmup_epochs: float = defaults.WARMUP_EPOCHS,
            compile: bool = False, tensorboard: PathLike | None = None,
            teacher_weight_files: Sequence[PathLike] = (), teacher_input_size: int | str | Sequence[int] | None = None,
            teacher_mean: str | None = None, teacher_std: str | None = None,
            input_size: int | str | Sequence[int] | None = None, resize: str | None = None,
            unlabeled: Sequence[PathLike] = (), augment: bool = False, deterministic: bool = False,
            teacher_outputs: str = defaults.TEACHER_OUTPUTS,
            class_order: str | Sequence[int] | None = None) -> DistillResult:
    """Train (or load) the teacher, then per seed the student alone and distilled; writes the run.

    `device` auto|cpu|cuda|cuda:N; `lr` is the rate at batch defaults.BASE_BATCH, scaled linearly
    with `batch_size`; per-epoch metrics go to RUN/metrics.jsonl (and `tensorboard`, a folder).

    Under torchrun (WORLD_SIZE set) it joins the process group, trains its shard and leaves the
    group; only rank 0 writes (`is_main`). `edgekd distill --nproc N` launches that for you.
    teacher, student, methods, temperature, epochs and teacher_epochs left None follow the
    data (`defaults.recipe`: on digits the `defaults` values; on Fashion-MNIST resnet-s,
    wide-cnn, 5 epochs). Foreign teachers (`edgekd.models.foreign`): `teacher_weight_files` pair in order
    with `torchvision:ARCH` / `timm:NAME` teachers; `teacher_input_size`/`teacher_mean`/`teacher_std`
    give the teacher's own view; `input_size` (N, "HxW" or (H, W)), `resize` (stretch | pad | crop; None: stretch),
    `unlabeled` (folders of images without labels, added to the transfer set) and `augment` are for
    ImageFolder data; `deterministic`: deterministic kernels, so a resumed CUDA run repeats an uninterrupted one.
    `teacher_outputs` and `class_order` say how to read a foreign teacher's outputs (`edgekd.models.foreign`);
    `labeled_fraction` 0 distils from the teacher alone (no control; `ce` refused).
    `config`: a recipe or a run's config.json (`edgekd.recipe`): keywords at their default take its values.
    """
    if config is not None:
        return distill(**_with_config("distill", locals()))
    from edgekd.data import parse_hw
    from edgekd.train.config import DistillConfig

    cfg = DistillConfig(
        data=data, data_dir=_dir(data_dir), download=download, teacher=_teachers(teacher), teacher_mode=teacher_mode,
        teacher_weights=list(teacher_weights) if teacher_weights is not None else None, student=student,
        target=str(target), methods=None if methods is None else tuple(methods), temperature=temperature, epochs=epochs,
        teacher_epochs=teacher_epochs, seeds=seeds, lr=lr, batch_size=batch_size, labeled_fraction=labeled_fraction,
        hint_epochs=hint_epochs, generations=generations, online=online, peers=peers, cache_teacher=cache_teacher,
        student_taps=dict(student_taps or {}), teacher_taps=dict(teacher_taps or {}),
        loss_options=dict(loss_options or {}), run=Path(run) if run is not None else None, resume=resume,
        progress=progress, device=device, precision=precision, channels_last=channels_last, lr_schedule=lr_schedule,
        warmup_epochs=warmup_epochs, compile=compile, tensorboard=Path(tensorboard) if tensorboard else None,
        input_size=parse_hw(input_size), resize=resize, unlabeled=tuple(str(u) for u in unlabeled), augment=augment,
        deterministic=deterministic,
        **_teacher_options(teacher_weight_files=teacher_weight_files, teacher_input_size=teacher_input_size,
                           teacher_mean=teacher_mean, teacher_std=teacher_std, teacher_outputs=teacher_outputs,
                           class_order=class_order))
    return _run_distill(cfg)


def _with_config(command: str, kw: dict[str, Any]) -> dict[str, Any]:
    """The keywords of one API call with `config`'s values for those left at their default (`edgekd.recipe`)."""
    from edgekd.recipe import merge, read_recipe

    given = {k: v for k, v in kw.items() if k != "config"}
    return merge(command, given, read_recipe(kw["config"], command))


def _run_distill(cfg: Any) -> DistillResult:
    """Run one DistillConfig (joining and leaving torchrun's process group when under it)."""
    from edgekd.train import distributed as dist
    from edgekd.train.distill import distill as run_distill

    dist.init_from_env(cfg.device)
    try:
        summary = run_distill(cfg)
        main = dist.is_main()
    except BaseException:
        dist.shutdown(wait=False)  # a failing rank must not wait at a barrier its peers may never reach
        raise
    dist.shutdown()
    return _distill_result(summary, main)


def _distill_result(summary: dict[str, Any], main: bool) -> DistillResult:
    acc = summary["accuracy"]
    alone = acc["student_alone"] or {}   # None when label-free (no control)
    return DistillResult(data=summary, run=Path(summary["run"]), teacher_accuracy=acc["teacher"],
                         student_alone=alone.get("mean"), student=acc["student"]["mean"],
                         student_alone_std=alone.get("std"), student_std=acc["student"]["std"],
                         gap_closed=summary["gap_closed"], is_main=main,
                         agreement=(acc.get("agreement") or {}).get("mean"))


def compare(*, config: PathLike | None = None, data: str = defaults.DATA,
            data_dir: PathLike | None = None, download: bool = False,
            teacher: str | Sequence[str] | None = None, student: str | None = None,
            target: PathLike = defaults.TARGET, methods: Sequence[str] | None = None,
            temperature: float | None = None, epochs: int | None = None,
            teacher_epochs: int | None = None, seeds: int = defaults.SEEDS,
            labeled_fraction: float = defaults.LABELED_FRACTION, run: PathLike | None = None,
            progress: bool = True, device: str = defaults.DEVICE, teacher_weight_files: Sequence[PathLike] = (),
            teacher_input_size: int | str | Sequence[int] | None = None, teacher_mean: str | None = None,
            teacher_std: str | None = None,
            teacher_outputs: str = defaults.TEACHER_OUTPUTS, class_order: str | Sequence[int] | None = None,
            input_size: int | str | Sequence[int] | None = None, resize: str | None = None) -> CompareResult:
    """The seminar table: the teacher once, the student alone, then each method (default: all),
    same seeds and budget; writes compare.json and compare.png. Options left None follow the
    data, as in `distill`; `input_size`, `resize` and `config` as in `distill`."""
    if config is not None:
        return compare(**_with_config("compare", locals()))
    from edgekd.data import parse_hw
    from edgekd.train.compare import DEFAULT
    from edgekd.train.compare import compare as run_compare
    from edgekd.train.config import DistillConfig

    cfg = DistillConfig(data=data, data_dir=_dir(data_dir), download=download, teacher=_teachers(teacher),
                        student=student, input_size=parse_hw(input_size), resize=resize,
                        target=str(target), temperature=temperature, epochs=epochs, teacher_epochs=teacher_epochs,
                        seeds=seeds, labeled_fraction=labeled_fraction,
                        run=Path(run) if run is not None else None, progress=progress, device=device,
                        **_teacher_options(teacher_weight_files=teacher_weight_files,
                                           teacher_input_size=teacher_input_size, teacher_mean=teacher_mean,
                                           teacher_std=teacher_std, teacher_outputs=teacher_outputs,
                                           class_order=class_order))
    from edgekd.progress import quieted

    with quieted(not progress):
        result = run_compare(cfg, methods=tuple(methods or DEFAULT))
    return CompareResult(data=result, run=Path(result["run"]),
                         accuracy={r["method"]: r["accuracy"]["mean"] for r in result["rows"]})


# ---------------------------------------------------------------- choosing teacher and student
def select_teacher(*, teachers: Sequence[str], config: PathLike | None = None, student: str | None = None,
                   data: str = defaults.DATA,
                   data_dir: PathLike | None = None, download: bool = False, target: PathLike = defaults.TARGET,
                   temperature: float | None = None, n: int = defaults.SELECT_TEACHER_N,
                   warmup_steps: int = defaults.SELECT_TEACHER_WARMUP_STEPS,
                   teacher_epochs: int | None = None, labeled_fraction: float = defaults.LABELED_FRACTION,
                   higher_is_better: bool = False, seed: int = 0, run: PathLike | None = None,
                   progress: bool = True, teacher_weight_files: Sequence[PathLike] = (),
                   teacher_input_size: int | str | Sequence[int] | None = None, teacher_mean: str | None = None,
                   teacher_std: str | None = None, teacher_outputs: str = defaults.TEACHER_OUTPUTS,
                   class_order: str | Sequence[int] | None = None) -> TeacherSelection:
    """Rank candidate teachers for `student` before any distillation (GRACE score + baselines).
    student, temperature and teacher_epochs left None come from the data (`defaults.recipe`); `config` as in
    `distill`."""
    if config is not None:
        return select_teacher(**_with_config("select-teacher", locals()))
    from edgekd import options

    options.check("select-teacher", dict(n=n, warmup_steps=warmup_steps))
    from edgekd.search.teacher import select_teachers

    result = select_teachers(student=student, teachers=list(teachers), data=data, data_dir=_dir(data_dir),
                             download=download, target=str(target), run=Path(run) if run is not None else None,
                             temperature=temperature, n=n, warmup_steps=warmup_steps, teacher_epochs=teacher_epochs,
                             seed=seed, progress=progress, higher_is_better=higher_is_better,
                             labeled_fraction=labeled_fraction,
                             teacher_options=_teacher_options(
                                 teacher_weight_files=teacher_weight_files, teacher_input_size=teacher_input_size,
                                 teacher_mean=teacher_mean, teacher_std=teacher_std, teacher_outputs=teacher_outputs,
                                 class_order=class_order))
    rows = sorted(result["teachers"], key=lambda r: r["rank"])
    return TeacherSelection(data=result, ranking=[r["teacher"] for r in rows],
                            grace={r["teacher"]: r["grace"]["score"] for r in rows},
                            val_accuracy={r["teacher"]: r["val_accuracy"] for r in rows})


def select_student(*, target: PathLike, config: PathLike | None = None, teacher: str | Sequence[str] | None = None,
                   budget_ms: float | None = None, trials: int = defaults.SEARCH_TRIALS, seed: int = 0,
                   runner: str = defaults.RUNNER, data: str = defaults.DATA, data_dir: PathLike | None = None,
                   download: bool = False, epochs: int | None = None, short_epochs: int | None = None,
                   seeds: int = defaults.SEARCH_SEEDS, methods: Sequence[str] | None = None,
                   teacher_epochs: int | None = None, temperature: float | None = None,
                   include: Sequence[str] | None = None, run: PathLike | None = None,
                   progress: bool = True, input_size: int | str | Sequence[int] | None = None,
                   resize: str | None = None, teacher_weight_files: Sequence[PathLike] = (),
                   teacher_input_size: int | str | Sequence[int] | None = None, teacher_mean: str | None = None,
                   teacher_std: str | None = None, teacher_outputs: str = defaults.TEACHER_OUTPUTS,
                   class_order: str | Sequence[int] | None = None) -> StudentSelection:
    """Search students built from the target's ops under its budget; saves the pick as a run.
    teacher, epochs, teacher_epochs, methods, temperature and `include` (registry students drawn
    first) left None come from the data (`defaults.recipe`), as in `distill`.
    Raises BudgetFailed (before any training) when no candidate meets the budget. `config` as in `distill`."""
    if config is not None:
        return select_student(**_with_config("select-student", locals()))
    from edgekd import options

    options.check("select-student", dict(trials=trials, seeds=seeds, budget_ms=budget_ms, epochs=epochs,
                                         short_epochs=short_epochs, teacher_epochs=teacher_epochs,
                                         temperature=temperature))
    from edgekd.data import parse_hw
    from edgekd.search.student import select_student as run_select

    teachers = None if teacher is None else [teacher] if isinstance(teacher, str) else list(teacher)
    result = run_select(target=target, teacher=teachers[0] if teachers and len(teachers) == 1 else teachers,
                        data=data, data_dir=_dir(data_dir), download=download, budget_ms=budget_ms, trials=trials,
                        seed=seed, runner=runner, epochs=epochs, short_epochs=short_epochs, seeds=seeds,
                        methods=methods, teacher_epochs=teacher_epochs, temperature=temperature, include=include,
                        run=Path(run) if run is not None else None, progress=progress,
                        input_size=parse_hw(input_size), resize=resize,
                        teacher_options=_teacher_options(
                            teacher_weight_files=teacher_weight_files, teacher_input_size=teacher_input_size,
                            teacher_mean=teacher_mean, teacher_std=teacher_std, teacher_outputs=teacher_outputs,
                            class_order=class_order))
    rec = result["recommended"]
    return StudentSelection(data=result, run=Path(result["run"]), recommended=rec["name"],
                            latency_p90_ms=rec["latency_p90_ms"], val_accuracy=rec["val_accuracy"],
                            test_accuracy=rec["test_accuracy"])


@dataclass(frozen=True)
class TeacherCheck(Result):
    """`edgekd check-teacher`: per teacher what it takes and returns, params, MFLOPs, accuracy on
    labeled images in its view and host p50; `warnings` (a preprocessing mismatch, a class order)."""

    accuracy: float
    warnings: list[str]


def check_teacher(*, teacher: str | Sequence[str], data: str = defaults.DATA, data_dir: PathLike | None = None,
                  download: bool = False, input_size: int | str | Sequence[int] | None = None,
                  resize: str | None = None, teacher_weight_files: Sequence[PathLike] = (),
                  teacher_input_size: int | str | Sequence[int] | None = None, teacher_mean: str | None = None,
                  teacher_std: str | None = None, teacher_outputs: str = defaults.TEACHER_OUTPUTS,
                  class_order: str | Sequence[int] | None = None) -> TeacherCheck:
    """Check a teacher from outside in seconds, before any training, as distill does first.
    `accuracy` is the first teacher's, on the labeled validation images (at most
    defaults.CHECK_MAX_IMAGES) in the stated view."""
    from edgekd.data import parse_hw
    from edgekd.train.check_teacher import check_teacher as run_check
    from edgekd.train.config import DistillConfig

    cfg = DistillConfig(data=data, data_dir=_dir(data_dir), download=download, teacher=_teachers(teacher),
                        input_size=parse_hw(input_size), resize=resize, progress=False,
                        **_teacher_options(teacher_weight_files=teacher_weight_files,
                                           teacher_input_size=teacher_input_size, teacher_mean=teacher_mean,
                                           teacher_std=teacher_std, teacher_outputs=teacher_outputs,
                                           class_order=class_order))
    result = run_check(cfg)
    return TeacherCheck(data=result, accuracy=result["teachers"][0]["accuracy"], warnings=list(result["warnings"]))


# ---------------------------------------------------------------- deployment
def export(*, target: PathLike | TargetProfile = defaults.TARGET, run: PathLike | None = None,
           quantize: str | None = None, batch: int | None = None, exporter: str = defaults.EXPORTER) -> ExportResult:
    """Export the run's student to ONNX for `target`: full check, op audit, parity, golden vectors,
    manifest. Raises AuditFailed or ParityFailed (with `result`) after writing the manifest."""
    from edgekd import artifacts
    from edgekd.deploy.export import export_run
    from edgekd.run.manifest import from_json, load_manifest

    try:
        manifest = export_run(target=target, run=run, quantize=quantize, batch=batch, exporter=exporter)
    except CheckFailed as e:
        _partial(e, lambda: _export_result(load_manifest(artifacts.manifest_path(
            artifacts.resolve_run(run), _target_name(target))), artifacts.resolve_run(run)))
        raise
    return _export_result(from_json(manifest), artifacts.resolve_run(run))


def _target_name(target: PathLike | TargetProfile) -> str:
    from edgekd.deploy.targets import load_target

    return load_target(target).name


def _partial(error: CheckFailed, make: Any) -> CheckFailed:
    """Attach to `error` the result the failed stage wrote before failing (`make` reads it through
    edgekd.run). Where that file is absent or breaks the run-folder contract, `error.result` stays None
    and the reason (one line naming the file and the field) goes to `error.result_error` and to the
    message: the check's failure still stands, and nothing is dropped silently. Any other exception is a
    bug and propagates."""
    from edgekd.errors import BadInput

    try:
        return _attach(error, make())
    except BadInput as bad:
        error.result_error = str(bad)
        error.args = (f"{error.args[0] if error.args else error}; its result could not be read: {bad}",
                      *error.args[1:])
        return error


def _export_result(manifest: Manifest, run_dir: Path) -> ExportResult:
    return ExportResult(data=manifest.to_json(), target=manifest.target,
                        model=run_dir / manifest.target / manifest.model.path, deployable=manifest.deployable,
                        max_abs_diff=manifest.parity.max_abs_diff, top1_agreement=manifest.parity.top1_agreement,
                        student_onnx_accuracy=manifest.accuracy.student_onnx)


def bench(*, model: PathLike | None = None, target: PathLike | Sequence[PathLike] | None = None,
          run: PathLike | None = None, runner: str = defaults.RUNNER, min_seconds: float = defaults.BENCH_MIN_SECONDS,
          compare: bool = True, shapes: Sequence[str] | None = None, inputs: PathLike | None = None,
          profile: bool = False) -> BenchResult:
    """Time a run's exported model (or any ONNX `model`) through each target profile's execution
    providers on `runner` and check the budgets; several targets give a side-by-side table.
    Raises BudgetFailed or GoldenFailed (with `result`) after every measurement is written."""
    from edgekd.bench.run import bench_any
    from edgekd.run.bench import load_bench

    targets = [target] if isinstance(target, (str, Path)) else list(target or [])
    try:
        data = bench_any(model=model, targets=targets, run=run, runner=runner, compare=compare,
                         min_seconds=min_seconds, shapes=list(shapes or []), inputs=inputs, profile=profile)
    except CheckFailed as e:  # one run target: bench.json is written before the check fails
        _partial(e, lambda: _run_bench_result(load_bench(_bench_file(run, targets[0] if targets else None))))
        raise
    result = _bench_result(data)
    if data.get("failures"):  # several targets or a model: every row measured, then fail once
        from edgekd.checks import Failure

        failures = [Failure(**d) for d in data.get("failure_records", [])]
        error = GoldenFailed if any(f.kind == "golden" for f in failures) else BudgetFailed
        raise _attach(error("; ".join(data["failures"]), failures=failures), result)
    return result


def _bench_file(run: PathLike | None, target: PathLike | None) -> Path:
    from edgekd import artifacts
    from edgekd.bench.run import pick_target

    run_dir = artifacts.resolve_run(run)
    return run_dir / pick_target(run_dir, target).name / "bench.json"


def _run_bench_result(b: BenchFile, data: dict[str, Any] | None = None) -> BenchResult:
    """One run target's bench, from its typed bench.json (`data`: what the command returned, if it did)."""
    data = {"mode": "run", **b.to_json()} if data is None else data
    return BenchResult(data=data, mode="run", target=b.target, runner=b.runner, provider=b.chosen.provider,
                       latency_p50_ms=b.chosen.p("p50"), latency_p90_ms=b.chosen.p("p90"),
                       peak_rss_mb=b.chosen.peak_rss_mb, recommended=b.recommended,
                       budget_passed=b.budget.passed, notes=list(b.notes))


def _bench_result(data: dict[str, Any]) -> BenchResult:
    from dataclasses import replace

    from edgekd.run.bench import from_json

    mode = data.get("mode", "run")
    if mode == "run":
        return _run_bench_result(from_json({k: v for k, v in data.items() if k != "mode"}, "bench.json"), data)
    if mode == "targets":  # each result is a target's bench.json; the first one answers
        first_file = from_json(data["results"][0], f"{data['results'][0].get('target')}/bench.json")
        return replace(_run_bench_result(first_file, data), mode=mode, notes=list(data.get("notes", [])))
    first = data["results"][0]  # bench MODEL.onnx: no run folder, nothing read back
    recommended = first.get("recommended", "fp32")
    chosen = first["int8"] if recommended == "int8" and first.get("int8") else first["fp32"]
    return BenchResult(data=data, mode=data.get("mode", "run"), target=first["target"], runner=first["runner"],
                       provider=chosen["provider"], latency_p50_ms=chosen["latency_ms"]["p50"],
                       latency_p90_ms=chosen["latency_ms"]["p90"], peak_rss_mb=chosen["peak_rss_mb"],
                       recommended=recommended, budget_passed=bool(first["budget"]["passed"]),
                       notes=list(data.get("notes", [])))


def audit(*, model: PathLike, target: PathLike | TargetProfile) -> AuditResult:
    """Every operator of any ONNX `model` that `target` does not run, with node names.
    Raises AuditFailed (failures: one per op, with `result`) when there is any."""
    from edgekd.deploy.audit import audit_file
    from edgekd.errors import first_line

    report = audit_file(model, target)
    result = AuditResult(data=report.to_dict(), target=report.target, used=list(report.used),
                         unsupported=report.unsupported_ops, coverage=report.coverage, passed=report.passed)
    if not report.passed:
        failures = report.failures()
        raise _attach(AuditFailed(f"audit {model} against {report.target}: "
                                  + "; ".join(first_line(f) for f in failures), failures=failures), result)
    return result


def verify(*, run: PathLike | None = None) -> VerifyResult:
    """Hash every file the run's manifests name. Raises VerifyFailed listing each missing or changed file."""
    from edgekd.run.verify import verify_run

    result = verify_run(run)
    return VerifyResult(data=result, run=Path(result["run"]), checked=list(result["checked"]))


def report(*, runs: Sequence[PathLike] = (), out: PathLike | None = None) -> ReportResult:
    """One self-contained HTML page for a run (default: artifacts/latest), or several side by side."""
    from edgekd.report import make_report

    path = make_report([Path(r) for r in runs], out=None if out is None else Path(out))
    return ReportResult(data={"path": str(path), "runs": [str(r) for r in runs]}, path=Path(path))


@dataclass(frozen=True)
class TeacherCosts(Result):
    """`edgekd teachers`: each registry teacher's params and forward MFLOPs at the data's input
    size, and `default`, the teacher distill picks for that data."""

    default: str
    input_shape: tuple[int, ...]


def teachers(*, data: str = defaults.DATA, data_dir: PathLike | None = None) -> TeacherCosts:
    """Every registry teacher's cost at `data`'s input size (`models.teachers_for_data`)."""
    from edgekd.models import teachers_for_data

    result = teachers_for_data(data, data_dir=_dir(data_dir))
    return TeacherCosts(data=result, default=result["default"], input_shape=tuple(result["input_shape"]))


def load_target(*, name: PathLike | TargetProfile) -> TargetProfile:
    """A target profile by name (EDGEKD_TARGETS folders, then the packaged ones) or `.toml` path, validated."""
    from edgekd.deploy.targets import load_target as load

    return load(name)


def runner_setup(*, target: PathLike, wheels: PathLike | None = None, force: bool = False,
                 progress: Any = print) -> Path:
    """`edgekd runner setup`: "qemu" builds the emulated aarch64 root; a target profile whose
    `[runtime] package` names an onnxruntime build gets it in a venv of its own
    (`wheels`: install from that folder only). Returns the folder made ready."""
    if str(target) == "qemu":
        from edgekd.bench.qemu import setup_qemu

        return setup_qemu(progress=progress, force=force)
    from edgekd.deploy.runtimes import setup_runtime
    from edgekd.deploy.targets import load_target as load
    from edgekd.errors import BadInput

    try:
        profile = load(target)
    except BadInput as e:
        raise BadInput(f"runner setup: {e}; or qemu") from None
    info = setup_runtime(profile, wheels=None if wheels is None else Path(wheels), force=force, progress=progress)
    return Path(info["path"])


def list_targets() -> list[TargetProfile]:
    """Every profile `load_target` finds by name, loaded and validated, sorted by name (`edgekd targets`)."""
    from edgekd.deploy.targets import list_targets as names
    from edgekd.deploy.targets import load_target as load

    return [load(n) for n in names()]
