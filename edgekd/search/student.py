"""Choosing the student for the hardware: a measured accuracy–latency Pareto front under a budget.

In the spirit of hardware-aware searches (MCUNet/TinyNAS, Once-for-All), at the
scale of one machine. This module is the stage; its parts live beside it:

1. **Search space** (`edgekd.search.space`). Candidates are `student_net` keyword sets
   drawn in an order fixed by the seed (the pipeline's default student first, unless
   told otherwise), built only from blocks whose ops the target allows. Every candidate
   that is timed or trained is first audited (`check_student_ops`); a draw the
   predictor rejects costs one forward pass and is neither exported nor audited.
2. **Cheap predictor first** (`edgekd.search.predictor`). MACs, params and runtime nodes
   give a prior; from `CALIBRATION` timings on, a non-negative least-squares fit predicts
   each new draw. A draw predicted slower than the budget × a safety factor (1 + how far
   the predictor has over-predicted so far, leave-one-out 90th percentile, within
   [`MIN_SAFETY`, `SAFETY`]) is skipped untimed. At least `MIN_MEASURED` are timed so
   that Spearman's ρ between predicted and measured latency means something.
3. **Timing** (here). Each candidate (untrained weights: fp32 latency does not depend
   on the values) is exported at the profile's opset and timed through the target's
   runner in a helper process (`edgekd.search.timing`); a near miss (within `RETIME_BAND`) is timed again and
   the better run kept. Candidates over the latency, memory or size budget
   (`edgekd.checks.check_budget`, the same check `bench` uses) are dropped before any
   training; under emulation only `budget_ms`, when given, and the size budget apply.
4. **Successive halving** (`edgekd.search.halving`). The teacher is trained (or loaded)
   once, with an explicit seed, and its outputs cached; every survivor is distilled for
   `short_epochs`; the best 1/`ETA` continue *from their weights* to `ETA`× the epochs
   (no epoch is paid twice), …, and the finalists reach the full `epochs`. The
   recommended student also gets the student-alone control.
5. **Output** (`edgekd.search.pareto`). The Pareto fronts of val accuracy against latency,
   and against latency and size; the recommended student (highest val accuracy among the
   finalists, ties → lower measured p90); `select_student.json`, `select_student.png`; and
   a normal run (`teacher.pt`, `student.pt` with the candidate's `student_net` keywords,
   `student_alone.pt`, `config.json`, `distill.json`) that `edgekd export` and
   `edgekd bench` continue from.
"""

from __future__ import annotations

import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekd import artifacts, defaults
from edgekd.checks import BudgetLimits, budget_failures, budget_limits, check_budget
from edgekd.errors import AuditFailed, BadInput, BudgetFailed, CheckFailed
from edgekd.run.config import write_config
from edgekd.run.distill import write_distill
from edgekd.search.halving import ETA, SHORT_FRACTION, Trainer, successive_halving
from edgekd.search.pareto import PLOT_FILE, RESULT_FILE, fronts, plot, select_table
from edgekd.search.predictor import (
    CALIBRATION,
    MIN_MEASURED,
    LatencyPredictor,
    complexity,
    predictor_report,
    prior_ms,
    safety_factor,
)
from edgekd.search.space import Candidate, build, candidate_stream, search_space
from edgekd.search.timing import run_isolated, time_candidate  # noqa: F401  (run_isolated: re-exported)

__all__ = ["select_student", "select_table", "search", "time_candidate", "run_isolated", "Candidate", "Trainer"]

# ---------------------------------------------------------------- defaults of this stage
TRIALS = defaults.SEARCH_TRIALS  # candidates timed (draws the predictor skips come on top)
MAX_DRAWS = 10                   # draw at most MAX_DRAWS × trials candidates (skips included)
RETIME_BAND = 1.5                # a candidate up to this × over the latency budget is timed twice
TIMING_MIN_SECONDS = 0.3         # per candidate; the bench stage times the final model longer


def cost_of(c: Candidate, bundle, profile):
    """Build the candidate and count its costs: one forward pass, no export, no runtime.
    Returns the model, or None (refused, with the reason) when the target cannot build it."""
    try:
        model = build(c, bundle, profile.ops_allow)
    except BadInput as e:
        c.status, c.reason = "refused", str(e)
        return None
    c.cost = complexity(model, bundle.input_shape)
    c.prior_ms = prior_ms(c.cost)
    return model


def audit_candidate(c: Candidate, model, bundle, profile) -> bool:
    """The op audit (`check_student_ops`) before anything is paid for; a refusal is kept, with its reason."""
    from edgekd.deploy.audit import check_student_ops

    try:
        c.ops = check_student_ops(model, input_shape=bundle.input_shape, target=profile)
    except BadInput as e:
        c.status, c.reason = "refused", str(e)
        return False
    return True


def search(stream: Iterator[tuple[str, dict]], bundle, profile, *, trials: int, runner: str,
           budget_ms: float | None, min_seconds: float, progress: bool) -> tuple[list[Candidate], BudgetLimits, dict]:
    """Draw candidates until `trials` have been timed: count each one's costs, predict its latency
    and skip it when the prediction is hopeless (a timing saved; the next one is drawn); audit
    the others, then time them.

    The first CALIBRATION are timed unconditionally, and at least MIN_MEASURED in all, so that
    the predictor has data and Spearman's ρ means something. At most MAX_DRAWS × `trials`
    candidates are drawn, so a budget nothing meets ends the search.
    """
    from tqdm.auto import tqdm

    cands: list[Candidate] = []
    timed: list[Candidate] = []
    predictor = LatencyPredictor()
    budget = budget_limits(profile.budget, latency_ms=budget_ms)
    bar = tqdm(total=trials, desc="audit, predict, time", unit="timed", disable=None if progress else True, leave=False)
    with tempfile.TemporaryDirectory(prefix="edgekd-select-") as tmp:
        for name, kw in stream:
            if len(timed) >= trials or len(cands) >= MAX_DRAWS * trials:
                break
            c = Candidate(id=len(cands), name=name, net_kwargs=kw)
            cands.append(c)
            model = cost_of(c, bundle, profile)
            if model is None:
                continue
            if len(timed) >= CALIBRATION:
                predictor.fit([t.cost for t in timed], [t.p90 for t in timed])
                c.predicted_ms = float(predictor.predict([c.cost])[0])
                lat_budget = budget.effective("latency_p90_ms")
                if lat_budget is not None and len(timed) >= MIN_MEASURED:
                    limit = lat_budget * safety_factor(timed)
                    if c.predicted_ms > limit:
                        c.status = "skipped"
                        c.reason = (f"predicted p90 {c.predicted_ms:.4g} ms > {limit:.4g} ms "
                                    f"({limit / lat_budget:.2f} × budget)")
                        continue
            if not audit_candidate(c, model, bundle, profile):
                continue
            c.measured = time_candidate(c, bundle, profile, runner, Path(tmp), min_seconds=min_seconds)
            if len(timed) == 0:  # the runner says whether it emulates; emulated time is not the target's
                budget = budget_limits(profile.budget, latency_ms=budget_ms, emulated=c.measured["emulated"])
            lim = budget.effective("latency_p90_ms")
            if lim is not None and lim < c.p90 <= RETIME_BAND * lim:
                # A near miss is timed once more and the better run kept: a burst of load on a
                # shared host should not drop a candidate that fits.
                again = time_candidate(c, bundle, profile, runner, Path(tmp), min_seconds=min_seconds)
                runs = [c.measured["latency_p90_ms"], again["latency_p90_ms"]]
                c.measured = {**min(c.measured, again, key=lambda m: m["latency_p90_ms"]), "p90_runs": runs}
            timed.append(c)
            bar.update()
    bar.close()
    for c in timed:
        miss = budget_misses(budget, c.measured)
        c.status, c.reason = ("over budget", "; ".join(map(str, miss))) if miss else ("timed", "")
    return cands, budget, predictor_report(timed, cands, predictor)


# ---------------------------------------------------------------- the run others continue from
def save_run(run_dir: Path, cfg, bundle, profile, teachers, teacher_acc: float, rec: Candidate,
             trainer: Trainer) -> dict[str, Any]:
    """student.pt, student_alone.pt and distill.json as `edgekd distill` writes them."""
    from edgekd.models.checkpoints import save_student
    from edgekd.train.distill import summarise

    kd_models = rec.rungs[-1]["_models"]
    rows = []
    for i, kd in enumerate(rec.rungs[-1]["per_seed"]):
        alone = rec.control["per_seed"][i]
        rows.append({"seed": kd["seed"], "student_alone": alone["test"], "student_alone_val": alone["val"],
                     "student_alone_seconds": alone["seconds"], "student": kd["test"], "student_val": kd["val"],
                     "student_seconds": kd["seconds"], "_student_model": kd_models[i],
                     "_student_alone_model": rec.control["_models"][i]})
    best = max(rows, key=lambda r: (r["student_val"], -r["seed"]))
    net_kwargs = {**rec.net_kwargs, "widths": list(rec.net_kwargs["widths"])}
    for key, model in (("student.pt", best["_student_model"]), ("student_alone.pt", best["_student_alone_model"])):
        # the candidate's student_net keywords: load_student rebuilds the custom architecture from them
        save_student(run_dir / key, cfg, bundle, model, seed=best["seed"], ops=rec.ops,
                     target_ops=profile.ops_allow, net_kwargs=net_kwargs)
    summary = summarise(cfg, bundle, profile, teachers, teacher_acc, rows, best, best["_student_model"], rec.ops)
    summary["student"]["net_kwargs"] = net_kwargs
    summary["selected_by"] = RESULT_FILE
    return summary


# ---------------------------------------------------------------- the stage
def _check_args(*, trials: int, epochs: int | None, short_epochs: int | None, seeds: int, budget_ms: float | None,
                min_seconds: float) -> int | None:
    """The first round's epochs; None while epochs is None (the data sets it later: `_for_data`)."""
    for name, value in (("trials", trials), ("epochs", epochs), ("seeds", seeds), ("short_epochs", short_epochs)):
        if value is not None and value < 1:
            raise BadInput(f"{name} {value}: must be >= 1", params=[name])
    if budget_ms is not None and not (budget_ms > 0 and math.isfinite(budget_ms)):
        raise BadInput(f"budget_ms {budget_ms}: must be a positive number of milliseconds", params=["budget_ms"])
    if not min_seconds >= 0:
        raise BadInput(f"min_seconds {min_seconds}: must be >= 0", params=["min_seconds"])
    if epochs is None:
        return None
    short = short_epochs if short_epochs is not None else max(1, round(epochs / SHORT_FRACTION))
    if not 1 <= short <= epochs:
        raise BadInput(f"short_epochs {short}: must be in 1..{epochs} (epochs)", params=["short_epochs", "epochs"])
    return short


def budget_misses(budget: BudgetLimits, measured: dict[str, Any]) -> list:
    """The budget `Failure`s of one timed candidate (the check `bench` applies to the final model)."""
    return budget_failures(check_budget(budget, latency_p90_ms=measured["latency_p90_ms"],
                                        peak_memory_mb=measured["peak_rss_mb"],
                                        model_size_mb=measured["model_bytes"] / 2**20))


def _no_candidate(cands: list[Candidate], budget: BudgetLimits, profile) -> CheckFailed:
    timed = [c for c in cands if c.measured]
    if not timed:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in cands[:3])
        return AuditFailed(f"select-student {profile.name}: no candidate passed the audit ({reasons})")
    fastest = min(timed, key=lambda c: c.p90)
    smallest = min(timed, key=lambda c: c.measured["model_bytes"])
    lat = budget.effective("latency_p90_ms")
    lim = f"{lat:g} ms ({budget.latency_source})" if lat is not None else "none"
    skipped = sum(c.status == "skipped" for c in cands)
    return BudgetFailed(
        f"select-student {profile.name}: no candidate meets the budget; smallest latency found "
        f"p90 {fastest.p90:.4g} ms ({fastest.name}), latency budget {lim}; smallest model "
        f"{smallest.measured['model_bytes'] / 2**20:.3g} MB (size budget {budget.effective('model_size_mb')} MB); "
        f"{len(timed)} timed, {skipped} skipped by the predictor; failing: "
        + "; ".join(f"{c.name}: {c.reason}" for c in sorted(timed, key=lambda c: c.p90)[:3]),
        failures=budget_misses(budget, fastest.measured))


def select_student(*, target: str | Path, teacher: str | list[str] | None = None, data: str = defaults.DATA,
                   budget_ms: float | None = None, trials: int = TRIALS, seed: int = 0, runner: str = defaults.RUNNER,
                   epochs: int | None = None, short_epochs: int | None = None, seeds: int = defaults.SEARCH_SEEDS,
                   methods: tuple[str, ...] | list[str] | None = None, run: Path | None = None,
                   progress: bool = True, teacher_epochs: int | None = None,
                   temperature: float | None = None, min_seconds: float = TIMING_MIN_SECONDS,
                   include: tuple[str, ...] | None = None, data_dir: Path | None = None,
                   download: bool = False, input_size: tuple[int, int] | None = None,
                   resize: str | None = None, teacher_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Search the student for `target`: audit, predict, time, successive halving; write the run.

    teacher, epochs, teacher_epochs, methods, temperature and `include` (registry students drawn
    first) left None come from the data (`defaults.recipe`), as in distill. Inputs above 32 px give
    every candidate a strided stem (each side on its own); `input_size`, `resize`: as in distill.
    Raises BudgetFailed (before any training) when no candidate meets the budget. Returns the
    result written to `select_student.json`, plus `run` and `summary` (the pick's distill.json).
    """
    from edgekd.bench.runners import get_runner
    from edgekd.deploy.targets import load_target

    t_start = time.perf_counter()
    check = dict(trials=trials, short_epochs=short_epochs, seeds=seeds, budget_ms=budget_ms, min_seconds=min_seconds)
    _check_args(epochs=epochs, **check)
    profile = load_target(target)
    get_runner(runner, profile)  # a bad runner spec or a missing runtime is bad input before anything is paid for
    cfg = _config(data=data, data_dir=data_dir, download=download, target=str(target), epochs=epochs, teacher=teacher,
                  methods=methods, temperature=temperature, teacher_epochs=teacher_epochs, seeds=seeds, run=run,
                  progress=progress, input_size=input_size, resize=resize, **(teacher_options or {}))
    cfg, bundle, short, include = _for_data(cfg, check, include)

    # 1–3. candidates drawn, audited, predicted, timed; budget misses dropped before any training
    t0 = time.perf_counter()
    stream = candidate_stream(profile.ops_allow, seed=seed, include=include, input_size=tuple(bundle.input_shape[-2:]))
    cands, budget, predictor = search(stream, bundle, profile, trials=trials, runner=runner, budget_ms=budget_ms,
                                      min_seconds=min_seconds, progress=progress)
    seconds = {"audit_predict_time": time.perf_counter() - t0}
    if not (survivors := [c for c in cands if c.status == "timed"]):
        raise _no_candidate(cands, budget, profile)

    # 4. one teacher for every candidate, then successive halving and the control
    run_dir = artifacts.create_run(run)
    teachers, teacher_acc, finalists, halving, rec, trainer = _train(cfg, bundle, profile, survivors, run_dir,
                                                                     short=short, seconds=seconds)

    # 5. the run others continue from, and the evidence
    cfg.student = rec.name
    write_config(run_dir / "config.json", asdict(cfg), bundle.describe(), student_net=rec.net_kwargs,
                 select_student={"target": profile.name, "budget_ms": budget_ms, "trials": trials, "seed": seed,
                                 "runner": runner, "short_epochs": short, "include": list(include)})
    summary = save_run(run_dir, cfg, bundle, profile, teachers, teacher_acc, rec, trainer)
    seconds["total"] = time.perf_counter() - t_start
    result = _result(cfg, bundle, profile, cands, budget, predictor, finalists, halving, rec, seconds,
                     teacher_acc=teacher_acc, runner=runner, seed=seed, trials=trials, short=short, run_dir=run_dir)
    summary["wall_seconds"] = seconds["total"]
    summary = write_distill(run_dir / "distill.json", summary).to_json()  # as `edgekd distill` writes it
    artifacts.write_json(run_dir / RESULT_FILE, result)
    plot(run_dir / PLOT_FILE, result)
    artifacts.set_latest(run_dir)
    return {**result, "summary": summary}


def _config(*, teacher: Any, methods: Any, data_dir: Any, **kw: Any):
    """The DistillConfig every candidate trains under, validated, with its teachers checked;
    what is None here is filled from the data later (`_for_data`)."""
    from edgekd.train.config import DistillConfig
    from edgekd.train.teacher import check_teacher_paths

    cfg = DistillConfig(teacher=teacher if teacher is None or isinstance(teacher, str) else tuple(teacher),
                        methods=None if methods is None else tuple(methods),
                        data_dir=None if data_dir is None else Path(data_dir), student=None, **kw)
    cfg.validate()
    check_teacher_paths(cfg)
    return cfg


def _for_data(cfg, check: dict[str, Any], include: tuple[str, ...] | None) -> tuple:
    """The data loaded, the options left None set by `defaults.recipe`, the first round's epochs,
    and the registry students drawn first (the rule's student unless `include` names others)."""
    from edgekd.train.config import load_bundle

    bundle = load_bundle(cfg)   # its input size and resize policy too (H×W: the images' own by default)
    cfg = cfg.for_data(bundle)
    include = (cfg.student,) if include is None else tuple(include)
    return cfg, bundle, _check_args(epochs=cfg.epochs, **check), include


def _train(cfg, bundle, profile, survivors: list[Candidate], run_dir: Path, *, short: int, seconds: dict) -> tuple:
    """The teacher once (seeded explicitly), successive halving, then the recommended student's control."""
    from edgekd.train.distill import labeled_subset
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import ensemble_accuracy, obtain_teachers, teacher_source

    t0 = time.perf_counter()
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature)
    teachers = obtain_teachers(cfg, bundle, run_dir)
    models = [m for m, _ in teachers]
    teacher_acc = ensemble_accuracy(cfg, models, bundle.test, bundle)   # in the teacher's view
    mask, labeled_only = labeled_subset(cfg, bundle)
    source = teacher_source(cfg, bundle, models, objective) if objective.needs_teacher else None
    seconds["teacher"] = time.perf_counter() - t0
    trainer = Trainer(cfg, bundle, profile, source, mask, labeled_only)

    t0 = time.perf_counter()
    finalists, halving = successive_halving(trainer, survivors, epochs=cfg.epochs, short=short, progress=cfg.progress)
    seconds["training"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = min(finalists, key=Candidate.rank_key)
    # Teacher capacity: what distillation adds at the chosen size (the control is paid once, for it).
    runs = [trainer.alone(rec, epochs=cfg.epochs, seed=s) for s in range(cfg.seeds)]
    rec.control = {"epochs": cfg.epochs, "val": float(np.mean([r["val"] for _, r in runs])),
                   "test": float(np.mean([r["test"] for _, r in runs])),
                   "seconds": float(sum(r["seconds"] for _, r in runs)),
                   "per_seed": [r for _, r in runs], "_models": [m for m, _ in runs]}
    seconds["control"] = time.perf_counter() - t0
    return teachers, teacher_acc, finalists, halving, rec, trainer


def _notes(cands: list[Candidate], budget: BudgetLimits, predictor: dict, trials: int) -> list[str]:
    notes = []
    if predictor["measured"] < trials:
        notes.append(f"{predictor['measured']} of {trials} trials timed: " + (
            f"the predictor rejected the rest of {len(cands)} draws (at most {MAX_DRAWS} × trials)"
            if len(cands) >= MAX_DRAWS * trials else f"the search space has only {len(cands)} distinct candidates"))
    if budget.emulated:
        notes.append("timings are under emulation: the profile's latency and memory budgets were not applied")
    return notes


def _result(cfg, bundle, profile, cands, budget, predictor, finalists, halving, rec, seconds: dict, *,
            teacher_acc: float, runner: str, seed: int, trials: int, short: int, run_dir: Path) -> dict[str, Any]:
    """What select_student.json holds."""
    trained = [c for c in cands if c.rungs]
    full_estimate = sum(c.rungs[0]["seconds_per_epoch"] * cfg.epochs * cfg.seeds for c in trained)
    return {
        "target": profile.name, "data": bundle.name, "runner": runner, "seed": seed, "trials": trials,
        "epochs": cfg.epochs, "short_epochs": short, "seeds": cfg.seeds, "methods": list(cfg.methods),
        "teacher": {"spec": list(cfg.teacher_list), "accuracy": teacher_acc},
        "budget": budget.to_dict(), "notes": _notes(cands, budget, predictor, trials),
        "search_space": {k: [list(v) if isinstance(v, tuple) else v for v in vals]
                         for k, vals in search_space(profile.ops_allow).items()},
        "candidates": [c.to_dict() for c in cands],
        "predictor": predictor,
        "halving": {"eta": ETA, "rungs": halving, "finalists": [c.id for c in finalists]},
        "pareto": fronts(trained),
        "recommended": {"id": rec.id, "name": rec.name, "net_kwargs": rec.net_kwargs,
                        "params": rec.cost["params"], "macs": rec.cost["macs"],
                        "latency_p90_ms": rec.p90, "model_bytes": rec.measured["model_bytes"],
                        "val_accuracy": rec.val, "test_accuracy": rec.rungs[-1]["test"],
                        "student_alone_test": rec.control["test"], "student_alone_val": rec.control["val"],
                        "kd_gain_test": rec.rungs[-1]["test"] - rec.control["test"]},
        "teacher_capacity": [{"id": c.id, "name": c.name, "params": c.cost["params"], "macs": c.cost["macs"],
                              "student_test": c.rungs[-1]["test"], "student_alone_test": c.control["test"],
                              "kd_gain_test": c.rungs[-1]["test"] - c.control["test"]}
                             for c in sorted(finalists, key=lambda c: c.cost["params"]) if c.control],
        "seconds": {**seconds, "total_excluding_teacher": seconds["total"] - seconds["teacher"],
                    "full_training_estimate": full_estimate,
                    "note": "full_training_estimate: per-epoch time measured at the first rung × epochs × "
                            "seeds, over the candidates that were trained (those within budget)"},
        "run": str(run_dir),
    }
