"""The course's seminar table: teacher, student alone, and the student with each method.

The teacher is trained once and the student alone once per seed; every method
then trains the same student on the same seeds, epochs and steps. The table
says which methods beat the student alone beyond their spread.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekd import artifacts
from edgekd.errors import BadInput

# name -> DistillConfig overrides. Weights follow the course's PyTorch tutorial where it
# gives them (0.25 feature/soft term + 0.75 CE) and the papers' own settings otherwise.
METHODS: dict[str, dict[str, Any]] = {
    "soft": dict(methods=("soft:0.7", "ce:0.3")),
    "hard": dict(methods=("hard:1.0",)),
    "cosine": dict(methods=("cosine:0.25", "ce:0.75")),
    "fitnet": dict(methods=("fitnet:0.25", "ce:0.75")),
    "fitnet+hint": dict(methods=("fitnet:0.25", "soft:0.7", "ce:0.3"), hint_epochs=5),
    "at": dict(methods=("at:1.0", "ce:1.0")),
    "rkd": dict(methods=("rkd:1.0", "ce:1.0")),
    "born-again": dict(methods=("soft:0.7", "ce:0.3"), generations=2),
    "dml": dict(online=True, peers=2),
}
DEFAULT = ("soft", "hard", "cosine", "fitnet", "fitnet+hint", "at", "rkd", "born-again", "dml")


def _beats(alone: dict, kd: dict) -> bool:
    """Above the control by more than their combined spread: mean_kd − mean_alone > √(sd_kd² + sd_alone²)."""
    return kd["mean"] - alone["mean"] > math.sqrt(kd["std"] ** 2 + alone["std"] ** 2)


def compare(cfg, *, methods: tuple[str, ...] = DEFAULT) -> dict[str, Any]:
    """Train everything for the table; write compare.json and compare.png into the run folder."""
    import torch

    from edgekd.deploy.targets import load_target
    from edgekd.models import check_student_ops
    from edgekd.train.distill import (count_params, train_mutual, gap_closed, labeled_subset, make_student, mean_std,
                                      train_control, train_students)
    from edgekd.train.losses import build_objective
    from edgekd.train.config import load_bundle
    from edgekd.train.teacher import check_teacher_paths, ensemble_accuracy, obtain_teachers

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise BadInput(f"unknown compare method(s) {', '.join(unknown)}; valid: {', '.join(METHODS)}")
    cfg.validate()
    if cfg.labeled_fraction == 0:
        raise BadInput("labeled_fraction 0: compare measures each method against the student trained alone and "
                       "with ce terms, which need labels; distill from the teacher alone with distill",
                       params=["labeled_fraction"])
    target = load_target(cfg.target)
    bundle = load_bundle(cfg)
    cfg = cfg.for_data(bundle)  # options left unset follow the data (defaults.recipe)
    probe = make_student(cfg, bundle, target, 0)
    check_student_ops(probe, input_shape=bundle.input_shape, target=target)
    loaded = check_teacher_paths(cfg, bundle)
    run_dir = artifacts.create_run(cfg.run)
    t0 = time.perf_counter()
    teachers = [m for m, _ in obtain_teachers(cfg, bundle, run_dir, loaded)]
    teacher_acc = ensemble_accuracy(cfg, teachers, bundle.test, bundle)
    teacher_s = time.perf_counter() - t0
    _, labeled_only = labeled_subset(cfg, bundle)
    controls = [train_control(cfg, bundle, target, run_dir, seed, labeled_only) for seed in range(cfg.seeds)]
    alone = mean_std([r["student_alone"] for r in controls])
    rows = [{"method": "teacher", "params": sum(count_params(t) for t in teachers), "accuracy": {"mean": teacher_acc, "std": 0.0, "n": 1},
             "seconds": teacher_s},
            {"method": "student alone", "params": count_params(probe), "accuracy": alone,
             "seconds": sum(r["student_alone_seconds"] for r in controls)}]
    for name in methods:
        mcfg = replace(cfg, **METHODS[name])
        t1 = time.perf_counter()
        if mcfg.online:
            res = train_mutual(mcfg, bundle, target, run_dir, peers=mcfg.peers, controls=controls)
        else:
            obj = build_objective(list(mcfg.methods), temperature=mcfg.temperature)
            res = train_students(mcfg, bundle, target, teachers, run_dir, obj, controls=controls)
        acc = mean_std([r["student"] for r in res])
        rows.append({"method": name, "objective": _label(mcfg), "params": count_params(probe), "accuracy": acc,
                     "gap_closed": gap_closed(teacher_acc, alone["mean"], acc["mean"]),
                     "beats_alone_beyond_std": _beats(alone, acc), "per_seed": [r["student"] for r in res],
                     "seconds": time.perf_counter() - t1})
    result = {"data": bundle.name, "target": target.name, "student": cfg.student, "teacher": cfg.teacher_list,
              "epochs": cfg.epochs, "seeds": cfg.seeds, "labeled_fraction": cfg.labeled_fraction,
              "rows": rows, "run": str(run_dir), "torch_threads": torch.get_num_threads()}
    artifacts.write_json(run_dir / "compare.json", result)
    _plot(run_dir / "compare.png", result)
    return result


def _label(cfg) -> str:
    from edgekd.train.distill import method_label

    return method_label(cfg)


def _plot(path: Path, result: dict) -> None:
    from edgekd.tables import bar_plot

    rows = result["rows"][1:]
    bar_plot(path, [r["method"] for r in rows], [r["accuracy"]["mean"] for r in rows],
             [r["accuracy"]["std"] for r in rows], hline=result["rows"][0]["accuracy"]["mean"],
             title=f"{result['student']} on {result['data']}, labeled fraction {result['labeled_fraction']:g}, "
                   f"{result['seeds']} seeds")
