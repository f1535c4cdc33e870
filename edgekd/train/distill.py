"""The distill stage: the control and the distilled student per seed, then the summary.

Read top to bottom: students and taps → control and distilled student per seed → `distill` → summary.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts
from edgekd.data import DataBundle
from edgekd.deploy.audit import check_student_ops
from edgekd.deploy.targets import TargetProfile, load_target
from edgekd.errors import BadInput
from edgekd.models import (
    count_params,
    create_student,
    create_teacher,
)
from edgekd.models.checkpoints import save_student
from edgekd.provenance import provenance
from edgekd.run.config import write_config
from edgekd.run.distill import write_distill
from edgekd.train.config import DistillConfig, check_resume, load_bundle
from edgekd.train.datasets import (
    Indexed,
    Repeated,
    accuracy,
    dataset_labels,
    labeled_mask,
)
from edgekd.train.distributed import make_deterministic, note_run
from edgekd.train.loop import Phase, fit, fit_scored
from edgekd.train.losses import KDBatch, Objective, build_objective
from edgekd.train.source import TeacherSource
from edgekd.train.teacher import (
    check_teacher_paths,
    ensemble_accuracy,
    obtain_teachers,
    pool_agreement,
    resolve_taps,
    teacher_source,
    views,
    views_text,
)


def check_taps(cfg: DistillConfig, bundle: DataBundle, student: nn.Module, objective: Objective,
               loaded: list | None = None) -> None:
    """Tap names resolve on the student and on each PyTorch teacher, before any folder is made.
    `loaded`: the teachers check_teacher_paths read from outside (None where the registry trains one)."""
    from edgekd.train.features import ROLES

    for side, taps in (("--student-tap", cfg.student_taps), ("--teacher-tap", cfg.teacher_taps)):
        for role in taps:
            if role not in ROLES:
                raise BadInput(f"{side} {role}=...: unknown role; valid: {', '.join(ROLES)}")
            if role not in objective.taps:
                raise BadInput(f"{side} {role}=...: no --method reads '{role}' (the objective is "
                               f"{objective.describe()})")
    if not objective.taps:
        return
    resolve_taps(student, objective, cfg.student_taps)
    from edgekd.models import TEACHERS

    loaded = loaded or [None] * len(cfg.teacher_list)
    for name, lt in zip(cfg.teacher_list, loaded):
        if lt is not None and lt.spec.eager:
            _dry_prepare(cfg, bundle, student, lt.model)
        elif name in TEACHERS:
            teacher = create_teacher(name, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes)
            _dry_prepare(cfg, bundle, student, teacher)


def _dry_prepare(cfg: DistillConfig, bundle: DataBundle, student: nn.Module, teacher: nn.Module) -> None:
    """One batch through a fresh objective with the real taps: feature shapes that cannot be
    matched are refused here, before the run folder exists, not after a teacher is trained."""
    from edgekd.train.features import FeatureTap, forward_with_taps

    obj = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
    s_taps, t_taps = resolve_taps(student, obj, cfg.student_taps), resolve_taps(teacher, obj, cfg.teacher_taps)
    x, y, *_ = next(iter(DataLoader(bundle.train, batch_size=4)))
    with FeatureTap(student.eval(), s_taps) as tap, torch.no_grad():
        s_logits = student(x)
    from edgekd.models.foreign import convert

    t_logits, t_feats = forward_with_taps(teacher.eval(), convert(x, *views(cfg, bundle)), t_taps)
    obj.prepare(KDBatch(student_logits=s_logits, labels=y, teacher_logits=t_logits, student_feats=dict(tap.outputs),
                        teacher_feats=t_feats), student_taps=s_taps, teacher_taps=t_taps)


def make_student(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, seed: int) -> nn.Module:
    torch.manual_seed(seed)
    name = cfg.student if cfg.student is not None else cfg.for_data(bundle).student
    return create_student(name, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes,
                          target_ops=target.ops_allow, input_size=tuple(bundle.input_shape[1:]))




def _student_taps(model: nn.Module, objective: Objective, cfg: DistillConfig | None = None) -> dict[str, str]:
    return resolve_taps(model, objective, cfg.student_taps if cfg else None)


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
                  Indexed(labeled_only), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size,
                  options=cfg.train_options(run_dir))
    _fit_into(row, "student_alone", alone, cfg, bundle, run_dir)
    return row


def control_row(cfg: DistillConfig, bundle: DataBundle, target: TargetProfile, run_dir: Path, seed: int,
                labeled_only: Dataset | None, controls: list[dict[str, Any]] | None) -> dict[str, Any]:
    """The seed's control row: trained here, reused from `controls`, or (no labels) none at all."""
    if cfg.labeled_fraction == 0:
        return {"seed": seed}   # label-free: no student-alone control can exist
    if controls is None:
        return train_control(cfg, bundle, target, run_dir, seed, labeled_only)
    return {k: v for k, v in controls[seed].items() if k.startswith(("seed", "student_alone", "_student_alone"))}


def labeled_subset(cfg: DistillConfig, bundle: DataBundle) -> tuple[np.ndarray, Dataset | None]:
    """The labeled mask over the train set and the labeled samples cycled to its length; with
    labeled_fraction 0 an all-False mask and no subset, and no training label is read."""
    if cfg.labeled_fraction == 0:
        return np.zeros(len(bundle.train), dtype=bool), None
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
        row = control_row(cfg, bundle, target, run_dir, seed, labeled_only, controls)
        gens = [(None, source)] if cfg.generations == 0 else [
            (g, None) for g in range(1, cfg.generations + 1)]
        prev = row.get("_student_alone_model")
        for gen, src in gens:
            # Born-again: generation g learns from generation g-1 of the same architecture,
            # starting from the student trained alone (generation 0).
            obj = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
            if gen is not None:
                src = teacher_source(cfg, bundle, [prev], obj, own_view=True)
            model = make_student(cfg, bundle, target, seed + 1000 * (gen or 0))
            name = f"kd/seed{seed}" if gen is None else f"kd/seed{seed}/gen{gen}"
            kd = Phase(name, model, obj, Indexed(bundle.train, mask), bundle.val, cfg.epochs, seed, cfg.lr,
                       cfg.batch_size, source=src, student_taps=_student_taps(model, obj, cfg),
                       hint_epochs=cfg.hint_epochs,
                       options=cfg.train_options(run_dir))
            _fit_into(row, "student", kd, cfg, bundle, run_dir)
            if gen is not None:
                row.setdefault("generations", []).append({"generation": gen, "accuracy": row["student"]})
            prev = kd.model
        results.append(row)
    return results



def train_mutual(cfg, bundle, target, run_dir: Path, *, peers: int = 2,
                 controls: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Online distillation, deep mutual learning (Zhang et al. 2018, arXiv 1706.00384): no pretrained
    teacher; the peers train together from scratch, each distilling from the others at every step.

    Per seed: the student alone (control) and `peers` DML students, trained together through the
    one loop (`fit` with `Phase.peers`); the peer with the best val accuracy is 'student'.

    Under torch.distributed every peer is wrapped in DDP: the ranks share each batch and average
    each peer's gradients, so the peers stay identical across ranks."""
    mask, labeled_only = labeled_subset(cfg, bundle)
    rows = []
    for seed in range(cfg.seeds):
        row = train_control(cfg, bundle, target, run_dir, seed, labeled_only) if controls is None else \
            {k: v for k, v in controls[seed].items() if k.startswith(("seed", "student_alone", "_student_alone"))}
        models = [make_student(cfg, bundle, target, seed + 7919 * k) for k in range(peers)]
        ph = Phase(f"dml/seed{seed}", models[0], build_objective(["ce"]), Indexed(bundle.train, mask), bundle.val,
                   cfg.epochs, seed, cfg.lr, cfg.batch_size, peers=models[1:], options=cfg.train_options(run_dir))
        t0 = time.perf_counter()
        fit(ph, ckpt=run_dir / "checkpoints" / f"dml-seed{seed}.pt", resume=cfg.resume, progress=cfg.progress)
        vals = ph.history[-1]["peers_val_acc"]
        best = max(range(peers), key=lambda i: (vals[i], -i))
        row.update({"student": accuracy(models[best], bundle.test), "student_val": vals[best],
                    "student_seconds": time.perf_counter() - t0, "_student_model": models[best],
                    "peers": [accuracy(m, bundle.test) for m in models]})
        rows.append(row)
    return rows

def mean_std(xs: list[float]) -> dict[str, float]:
    a = np.asarray(xs, dtype=float)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0, "n": len(a)}


def gap_closed(teacher: float, alone: float, student: float) -> float | None:
    """Share of the teacher–student gap that distillation closed (None when there is no gap)."""
    gap = teacher - alone
    return None if gap <= 1e-9 else (student - alone) / gap


def distill(cfg: DistillConfig) -> dict[str, Any]:
    """Run the whole distill stage; returns the summary written to distill.json."""
    from edgekd.progress import quieted

    with quieted(not cfg.progress):
        return _distill(cfg)


def _distill(cfg: DistillConfig) -> dict[str, Any]:
    cfg.validate()
    if cfg.deterministic:
        make_deterministic()
    t_start = time.perf_counter()
    target = load_target(cfg.target)
    if cfg.methods is not None:  # a bad --method is refused before the data is read
        build_objective(list(cfg.methods), temperature=cfg.temperature or 1.0, **cfg.loss_options)
    bundle = load_bundle(cfg)
    cfg = cfg.for_data(bundle)  # options left unset follow the data (defaults.recipe)
    cfg.validate()
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
    probe = make_student(cfg, bundle, target, 0)
    ops = check_student_ops(probe, input_shape=bundle.input_shape, target=target)
    loaded = check_teacher_paths(cfg, bundle)  # before any folder is made
    checks = teacher_checks(cfg, bundle, loaded)
    check_taps(cfg, bundle, probe, objective, loaded)
    if cfg.resume:
        check_resume(cfg)
    from edgekd.progress import stage

    stage(views_text(cfg, bundle))  # never squash silently: what each model sees, before anything trains
    run_dir = artifacts.create_run(cfg.run, resume=cfg.resume)
    note_run(run_dir)  # under `--nproc`: the launcher keeps the workers' logs in RUN/logs/
    write_config(run_dir / "config.json", asdict(cfg), bundle.describe())  # every resolved option: replayable
    teachers = obtain_teachers(cfg, bundle, run_dir, loaded)
    models = [m for m, _ in teachers]
    teacher_acc = ensemble_accuracy(cfg, models, bundle.test, bundle)
    if cfg.online:
        rows = train_mutual(cfg, bundle, target, run_dir, peers=cfg.peers)
    else:
        rows = train_students(cfg, bundle, target, models, run_dir, objective)
    if cfg.labeled_fraction == 0:
        add_agreement(cfg, bundle, models, rows)
    best = max(rows, key=lambda r: (r["student_val"], -r["seed"]))
    kw = getattr(probe, "net_kwargs", None)  # a strided stem's stride is not in the weights
    keep = dict(seed=best["seed"], ops=ops, target_ops=target.ops_allow, net_kwargs=kw)
    save_student(run_dir / "student.pt", cfg, bundle, best["_student_model"], **keep)
    if "_student_alone_model" in best:  # none when label-free
        save_student(run_dir / "student_alone.pt", cfg, bundle, best["_student_alone_model"], **keep)
    summary = summarise(cfg, bundle, target, teachers, teacher_acc, rows, best, probe, ops)
    kinds = [k for k in ("student_alone", "student") if f"_{k}_model" in best]  # no control when label-free
    agree = pool_agreement(cfg, bundle, models, {k: [r[f"_{k}_model"] for r in rows] for k in kinds})
    if agree is not None:  # scored without labels: the held-out share of the --unlabeled pool
        summary["agreement"] = {"n": agree["n"], "on": "held-out share of the --unlabeled pool",
                                **{k: mean_std(agree[k]) for k in kinds}}
    summary.update(teacher_check_record(checks, summary, cfg))
    from edgekd.train.advice import suggestion

    summary["verdict"]["try"] = suggestion(cfg, run_dir, summary["verdict"])  # None when distillation helped
    summary["training"] = cfg.training_record()
    summary["wall_seconds"] = time.perf_counter() - t_start
    summary = write_distill(run_dir / "distill.json", summary).to_json()  # checked against the run-folder contract
    artifacts.set_latest(run_dir)
    summary["run"] = str(run_dir)
    return summary


def teacher_checks(cfg: DistillConfig, bundle: DataBundle, loaded: list) -> list[dict[str, Any]]:
    """check-teacher's check of every teacher from outside, before any training; what it flags
    is printed at once (rank 0), whatever --quiet says, and recorded in distill.json."""
    import sys

    from edgekd.train import distributed as dist
    from edgekd.train.check_teacher import check_teachers

    checks = check_teachers(cfg, bundle, loaded)
    for w in (w for c in checks for w in c["warnings"]):
        if dist.is_main():
            print(f"edgekd: WARNING: {w}", file=sys.stderr, flush=True)
    return checks


def teacher_check_record(checks: list[dict[str, Any]], summary: dict[str, Any], cfg: DistillConfig) -> dict:
    """distill.json's `teacher_check` and `warnings` (the check's, and a teacher below the control)."""
    from edgekd.train.check_teacher import below_control

    alone = summary["accuracy"]["student_alone"]
    warns = [w for c in checks for w in c["warnings"]] + below_control(
        summary["accuracy"]["teacher"], alone["mean"] if alone else None, cfg.teacher_list[0])
    return {"teacher_check": checks, "warnings": warns}


def add_agreement(cfg: DistillConfig, bundle: DataBundle, models: list[nn.Module], rows: list[dict[str, Any]]) -> None:
    """Label-free runs: each seed's top-1 agreement with the teacher on the test images."""
    from edgekd.train.datasets import predict
    from edgekd.train.teacher import ensemble_predictions

    t = ensemble_predictions(cfg, models, bundle.test, bundle)
    for row in rows:
        row["agreement"] = float((predict(row["_student_model"], bundle.test).argmax(1) == t).float().mean())


def method_label(cfg: DistillConfig) -> str:
    if cfg.online:
        return f"online: deep mutual learning, {cfg.peers} peers"
    label = build_objective(list(cfg.methods), temperature=cfg.temperature).describe()
    if cfg.generations:
        label += f", born-again x{cfg.generations}"
    if len(cfg.teacher_list) > 1:
        label += f", {len(cfg.teacher_list)} teachers ({cfg.teacher_mode})"
    return label


def verdict(rows: list[dict[str, Any]], alone: dict[str, float], kd: dict[str, float]) -> dict[str, Any]:
    """Did distillation beat the student trained alone, and which of the two students to deploy.

    The outcome compares test means against their spread, √(sd² + sd_alone²), as `compare`
    does. The recommendation reads the mean *validation* accuracy, so the test set chooses
    nothing: student.pt unless the control did better on validation."""
    spread = float(np.hypot(alone["std"], kd["std"]))
    delta = kd["mean"] - alone["mean"]
    outcome = "helped" if delta > spread else "lost" if delta < -spread else "within spread"
    val_kd = float(np.mean([r["student_val"] for r in rows]))
    val_alone = float(np.mean([r["student_alone_val"] for r in rows]))
    return {"distillation": outcome, "delta": delta, "spread": spread,
            "val": {"student": val_kd, "student_alone": val_alone},
            "recommended_student": "student.pt" if val_kd >= val_alone else "student_alone.pt",
            "recommended_by": "mean validation accuracy over seeds"}


def label_free_verdict(kd: dict[str, float], agreement: dict[str, float], teacher_acc: float) -> dict[str, Any]:
    """--labeled-fraction 0: no control to beat; the student against the teacher instead."""
    return {"distillation": "label-free", "delta": kd["mean"] - teacher_acc, "spread": kd["std"],
            "agreement": agreement, "recommended_student": "student.pt",
            "recommended_by": "the only student (no labels: no student-alone control)",
            "note": "student-alone control skipped: --labeled-fraction 0 leaves no training label"}


def summarise(cfg, bundle, target, teachers, teacher_acc, rows, best, probe, ops) -> dict[str, Any]:
    label_free = cfg.labeled_fraction == 0
    alone = None if label_free else mean_std([r["student_alone"] for r in rows])
    kd = mean_std([r["student"] for r in rows])
    clean_rows = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    sview, tview = views(cfg, bundle)
    infos = [{**info, **_teacher_cost(m, (bundle.input_shape[0], *tview.size))} for m, info in teachers]
    resize = {"resize": bundle.resize, "fill": bundle.fill if bundle.resize == "pad" else None}
    return {
        "data": bundle.describe(), "target": target.name, "methods": list(cfg.methods),
        "objective": method_label(cfg), "temperature": cfg.temperature, "epochs": cfg.epochs, "seeds": cfg.seeds,
        "labeled_fraction": cfg.labeled_fraction,
        "teacher": {**infos[0], "accuracy": teacher_acc, "all": infos, "view": {**tview.to_dict(), **resize}},
        "student": {"arch": cfg.student, "params": count_params(probe), "ops": ops,
                    "view": {**sview.to_dict(), **resize},
                    "ops_notes": getattr(probe, "ops_notes", []), "chosen_seed": best["seed"]},
        "accuracy": {"teacher": teacher_acc, "student_alone": alone, "student": kd,
                     **({"agreement": mean_std([r["agreement"] for r in rows])} if label_free else {})},
        "gap_closed": None if label_free else gap_closed(teacher_acc, alone["mean"], kd["mean"]),
        "verdict": label_free_verdict(kd, mean_std([r["agreement"] for r in rows]), teacher_acc) if label_free
        else verdict(rows, alone, kd),
        "per_seed": clean_rows,
        "seconds": {"student_alone": sum(r.get("student_alone_seconds", 0.0) for r in rows),
                    "student": sum(r["student_seconds"] for r in rows)},
        "images_per_s": images_per_s(cfg, bundle, rows),
        "provenance": provenance(device=getattr(cfg, "device", "cpu")),
    }


def _teacher_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Params and MFLOPs at the teacher's own input size: counted from the graph for an ONNX
    teacher, params only for TorchScript (no forward hooks to count with)."""
    from edgekd.train.check_teacher import cost

    return cost(model, input_shape)


def images_per_s(cfg: DistillConfig, bundle: DataBundle, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Training images per second of each phase kind, over all seeds (per-epoch validation included)."""
    n = (cfg.epochs + cfg.hint_epochs) * len(bundle.train)
    out: dict[str, Any] = {"teacher": "cached" if cfg.cache_teacher and not bundle.augmented else "live"}
    for key in ("student_alone", "student"):
        secs = [r[f"{key}_seconds"] for r in rows if r.get(f"{key}_seconds")]
        if secs:
            out[key] = n * len(secs) / sum(secs)
    return out
