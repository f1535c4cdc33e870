"""Getting the teacher(s): load an edgekd checkpoint or train a registry teacher; then the source the student reads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd.checkpoints import load_checkpoint
from edgekd.data import DataBundle
from edgekd.errors import BadInput
from edgekd.models import (
    create_teacher,
)
from edgekd.progress import stage
from edgekd.train.config import DistillConfig
from edgekd.train.datasets import Indexed, accuracy, dataset_labels
from edgekd.train.loop import Phase, fit
from edgekd.train.losses import Objective, build_objective
from edgekd.train.source import TeacherSource


def _named_teacher(name: str, cfg: DistillConfig, bundle: DataBundle, run_dir: Path, slot: str):
    C = bundle.input_shape[0]
    if name.endswith(".pt") or Path(name).is_file():
        state = load_checkpoint(Path(name), kind="teacher")
        if state["num_classes"] != bundle.num_classes:
            raise BadInput(f"{name}: teacher has {state['num_classes']} classes, "
                           f"--data {bundle.name} has {bundle.num_classes}")
        model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
        model.load_state_dict(state["model"])
        return model.eval(), {"source": name, "arch": state["arch"]}
    # Seeded here, explicitly: the teacher's weights never depend on what the caller drew before.
    torch.manual_seed(defaults.TEACHER_SEED)
    model = create_teacher(name, in_channels=C, num_classes=bundle.num_classes)
    ph = Phase(slot, model, build_objective(["ce"]), Indexed(bundle.train), bundle.val,
               cfg.teacher_epochs, seed=defaults.TEACHER_SEED, lr=cfg.lr, batch_size=cfg.batch_size,
               options=cfg.train_options(run_dir))
    stage(f"{slot}: training {name} for {cfg.teacher_epochs} epochs on {ph.options.device}")
    fit(ph, ckpt=run_dir / "checkpoints" / f"{slot}.pt", resume=cfg.resume, progress=cfg.progress)
    artifacts.save_torch(run_dir / f"{slot}.pt", {
        "kind": "teacher", "arch": name, "in_channels": C,
        "num_classes": bundle.num_classes, "model": {k: v.cpu() for k, v in model.state_dict().items()}})
    return model.eval(), {"source": "trained", "arch": name, "epochs": cfg.teacher_epochs}


def check_teacher_paths(cfg: DistillConfig, bundle: DataBundle | None = None) -> None:
    """Every --teacher is a registry name or an edgekd teacher checkpoint that fits the data."""
    from edgekd.models import TEACHERS

    for name in cfg.teacher_list:
        if name in TEACHERS:
            continue
        if name.endswith(".pt") or os.sep in name:
            state = load_checkpoint(Path(name), kind="teacher")
            if state["arch"] not in TEACHERS:
                raise BadInput(f"{name}: teacher arch '{state['arch']}' is unknown; valid: {', '.join(TEACHERS)}")
            if bundle is not None and (state["num_classes"], state["in_channels"]) != (bundle.num_classes, bundle.input_shape[0]):
                raise BadInput(f"{name}: teacher takes {state['in_channels']} channels and has {state['num_classes']} "
                               f"classes; --data {bundle.name} has {bundle.input_shape[0]} and {bundle.num_classes}")
            continue
        create_teacher(name, in_channels=1, num_classes=2)  # raises BadInput listing the valid names


def obtain_teachers(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Load each teacher from a .pt path, or train the named one (seed `defaults.TEACHER_SEED`);
    saved as teacher.pt, teacher1.pt, …"""
    return [_named_teacher(name, cfg, bundle, run_dir, "teacher" if i == 0 else f"teacher{i}")
            for i, name in enumerate(cfg.teacher_list)]


def obtain_teacher(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    return obtain_teachers(cfg, bundle, run_dir)[0]


def teacher_source(cfg: DistillConfig, bundle: DataBundle, teachers: list[nn.Module], objective: Objective,
                   cache_dir: Path | None = None, overrides: dict[str, str] | None = None) -> TeacherSource:
    taps = resolve_taps(teachers[0], objective, overrides)
    src = TeacherSource(teachers, taps=taps, mode=cfg.teacher_mode, weights=cfg.teacher_weights,
                        temperature=cfg.temperature)
    # Deterministic inputs: the teacher's outputs are computed once, not every epoch.
    return src if bundle.augmented or not cfg.cache_teacher else src.build_cache(bundle.train, cache_dir=cache_dir)


def ensemble_accuracy(cfg: DistillConfig, teachers: list[nn.Module], ds: Dataset) -> float:
    """Test accuracy of what the student learns from: the teacher, or the teachers' mixture."""
    if len(teachers) == 1:
        return accuracy(teachers[0], ds)
    src = TeacherSource(teachers, mode=cfg.teacher_mode, weights=cfg.teacher_weights, temperature=cfg.temperature)
    logits = torch.cat([src.live(x)[0] for x, *_ in DataLoader(ds, batch_size=256)])
    return float((logits.argmax(1) == torch.as_tensor(dataset_labels(ds))).float().mean())


def resolve_taps(model: nn.Module, objective: Objective, overrides: dict[str, str] | None = None) -> dict[str, str]:
    """{role: module name} for the roles the objective reads: `overrides` (--student-tap /
    --teacher-tap ROLE=MODULE) first, the model's defaults for the rest. A name that matches
    no module is BadInput listing the nearest module names."""
    from edgekd.train.features import default_taps, find_module

    overrides = overrides or {}
    taps = {}
    for role in objective.taps:
        if role in overrides:
            find_module(model, overrides[role], tap=role)
            taps[role] = overrides[role]
        else:
            taps.update(default_taps(model, roles=[role]))
    return taps
