"""The course's seminar table: teacher, student alone, and the student with each method.

The teacher is trained once and the student alone once per seed; every method
then trains the same student on the same seeds, epochs and steps. The table
says which methods beat the student alone beyond their spread.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgekd import artifacts, defaults
from edgekd.errors import BadInput
from edgekd.train.advice import LOGIT  # the modern logit methods' rows  # noqa: F401

# name -> DistillConfig overrides. Weights follow the course's PyTorch tutorial where it
# gives them (0.25 feature/soft term + 0.75 CE) and the papers' own settings otherwise
# (DKD: CE + DKD as mdistiller; DIST: CE + β·inter + γ·intra; TTM: CE + the TTM term).
METHODS: dict[str, dict[str, Any]] = {
    "soft": dict(methods=defaults.HINTON),
    "dkd": dict(methods=("dkd:1.0", "ce:1.0")),
    "dist": dict(methods=("dist:1.0", "ce:1.0")),
    "ttm": dict(methods=("ttm:1.0", "ce:1.0")),
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


def method_overrides(spec: str) -> dict[str, Any]:
    """A compare row: `NAME` (a METHODS key) or `NAME.KEY=VALUE[,KEY=VALUE]`, the options of loss NAME,
    e.g. `soft.standardize=true`, `ttm.wttm=true,gamma=0.1`. Returns its DistillConfig overrides."""
    name, dot, opts = spec.partition(".")
    if name not in METHODS:
        raise BadInput(f"unknown compare method '{spec}'; valid: {', '.join(METHODS)}, or NAME.KEY=VALUE for a "
                       f"loss option (e.g. soft.standardize=true)")
    over = dict(METHODS[name])
    if not dot:
        return over
    from edgekd.train.losses import LOSSES

    if name not in LOSSES:
        raise BadInput(f"compare method '{spec}': '{name}' is not one loss, so it takes no options; options go to "
                       f"one of {', '.join(k for k in METHODS if k in LOSSES)}")
    options: dict[str, Any] = {}
    for item in opts.split(","):
        key, eq, raw = item.partition("=")
        if not (eq and key and raw):
            raise BadInput(f"compare method '{spec}': expected NAME.KEY=VALUE, e.g. soft.standardize=true")
        try:
            options[key] = json.loads(raw)
        except ValueError:
            options[key] = raw
    over["loss_options"] = {name: options}
    return over


def _objective(mcfg):
    from edgekd.train.losses import build_objective

    return build_objective(list(mcfg.methods), temperature=mcfg.temperature, **mcfg.loss_options)


def compare(cfg, *, methods: tuple[str, ...] = DEFAULT) -> dict[str, Any]:
    """Train everything for the table; write compare.json and compare.png into the run folder."""
    import torch

    from edgekd.deploy.audit import check_student_ops
    from edgekd.deploy.targets import load_target
    from edgekd.train.config import load_bundle
    from edgekd.train.distill import count_params, labeled_subset, make_student, mean_std, train_control
    from edgekd.train.teacher import check_teacher_paths, ensemble_accuracy, obtain_teachers

    overrides = {m: method_overrides(m) for m in methods}
    cfg.validate()
    if cfg.labeled_fraction == 0:
        raise BadInput("labeled_fraction 0: compare measures each method against the student trained alone and "
                       "with ce terms, which need labels; distill from the teacher alone with distill",
                       params=["labeled_fraction"])
    target = load_target(cfg.target)
    bundle = load_bundle(cfg)
    cfg = cfg.for_data(bundle)  # options left unset follow the data (defaults.recipe)
    for over in overrides.values():   # a bad loss option is refused before anything is trained
        if not over.get("online"):
            _objective(replace(cfg, **over))
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
    rows = [{"method": "teacher", "params": sum(count_params(t) for t in teachers),
             "accuracy": {"mean": teacher_acc, "std": 0.0, "n": 1},
             "seconds": teacher_s},
            {"method": "student alone", "params": count_params(probe), "accuracy": alone,
             "per_seed": [r["student_alone"] for r in controls],
             "seconds": sum(r["student_alone_seconds"] for r in controls)}]
    shared = _SharedCache(cfg, bundle, teachers, run_dir)
    for name, over in overrides.items():
        rows.append(_method_row(name, replace(cfg, **over), bundle, target, teachers, run_dir, controls, shared,
                                teacher_acc=teacher_acc, alone=alone, params=count_params(probe)))
    result = {"data": bundle.name, "target": target.name, "student": cfg.student, "teacher": cfg.teacher_list,
              "epochs": cfg.epochs, "seeds": cfg.seeds, "labeled_fraction": cfg.labeled_fraction,
              "rows": rows, "run": str(run_dir), "torch_threads": torch.get_num_threads(),
              "teacher_cache": {"built": shared.built, "seconds": shared.seconds}}
    artifacts.write_json(run_dir / "compare.json", result)
    _plot(run_dir / "compare.png", result)
    return result


class _SharedCache:
    """The teacher's logits, cached once for every row whose objective reads logits alone (soft, hard,
    dkd, dist, ttm and their options): those rows then train at the student-alone cost. Rows that
    tap features, born-again and DML build their own source, as `distill` does."""

    def __init__(self, cfg, bundle, teachers, run_dir: Path):
        self.cfg, self.bundle, self.teachers, self.run_dir = cfg, bundle, teachers, run_dir
        self.source = None
        self.built, self.seconds = 0, 0.0

    def get(self, mcfg, objective):
        if mcfg.online or mcfg.generations or not objective.needs_teacher or objective.taps:
            return None
        if self.source is None:
            from edgekd.train.teacher import teacher_source

            t0 = time.perf_counter()
            self.source = teacher_source(self.cfg, self.bundle, self.teachers, objective,
                                         cache_dir=self.run_dir / "cache", overrides=self.cfg.teacher_taps)
            self.built, self.seconds = self.built + 1, time.perf_counter() - t0
        return self.source


def _method_row(name: str, mcfg, bundle, target, teachers, run_dir: Path, controls, shared: _SharedCache, *,
                teacher_acc: float, alone: dict, params: int) -> dict[str, Any]:
    from edgekd.train.distill import gap_closed, mean_std, train_mutual, train_students

    t1 = time.perf_counter()
    if mcfg.online:
        res = train_mutual(mcfg, bundle, target, run_dir, peers=mcfg.peers, controls=controls)
    else:
        obj = _objective(mcfg)
        res = train_students(mcfg, bundle, target, teachers, run_dir, obj, source=shared.get(mcfg, obj),
                             controls=controls)
    acc = mean_std([r["student"] for r in res])
    return {"method": name, "objective": _label(mcfg), "loss_options": mcfg.loss_options, "params": params,
            "accuracy": acc,
            "gap_closed": gap_closed(teacher_acc, alone["mean"], acc["mean"]),
            "beats_alone_beyond_std": _beats(alone, acc), "per_seed": [r["student"] for r in res],
            "seconds": time.perf_counter() - t1}


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
