"""Getting the teacher(s): train a registry teacher, or load one from a file (edgekd .pt, torchvision/timm
architecture + weights, TorchScript, ONNX: see `edgekd.models.foreign`); then the source the student reads."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import artifacts, defaults
from edgekd.data import DataBundle
from edgekd.errors import BadInput
from edgekd.models import create_teacher
from edgekd.models.foreign import LoadedTeacher, View, convert, load_teacher_spec, parse_specs, teacher_view
from edgekd.progress import stage
from edgekd.train.config import DistillConfig
from edgekd.train.datasets import Indexed, accuracy, dataset_labels
from edgekd.train.loop import Phase, fit
from edgekd.train.losses import LOSSES, Objective, build_objective, parse_method
from edgekd.train.source import TeacherSource


def data_view(bundle: DataBundle) -> View:
    """What the student sees: the data's size and normalisation."""
    return View(size=tuple(bundle.input_shape[1:]), mean=tuple(bundle.mean), std=tuple(bundle.std))


def views(cfg: DistillConfig, bundle: DataBundle) -> tuple[View, View]:
    """(student view, teacher view): --teacher-input-size/-mean/-std replace the data's."""
    s = data_view(bundle)
    return s, teacher_view(s, input_size=cfg.teacher_input_size, mean=cfg.teacher_mean, std=cfg.teacher_std)


def teacher_data(cfg: DistillConfig, bundle: DataBundle) -> DataBundle | None:
    """The same images at the teacher's own H×W, when the data can be read at any size
    (imagefolder) and the teacher's size differs from the student's: then the teacher sees each
    image made H×W from its file by the run's resize policy (and the same --unlabeled pool), not
    the student's smaller tensor resized up (which blurs what a teacher trained at its own size
    expects, and stretches what the policy pads or crops). Same split, same order. Read once per bundle."""
    sview, tview = views(cfg, bundle)
    if tview.size == sview.size or not cfg.data.startswith("imagefolder:"):
        return None
    memo = bundle.__dict__.setdefault("_teacher_data", {})
    size = tuple(tview.size)
    if size not in memo:
        from edgekd.train.config import load_bundle

        hi = load_bundle(cfg, image_size=size)
        if list(dataset_labels(hi.train)) != list(dataset_labels(bundle.train)):
            raise BadInput(f"--data {cfg.data}: the train split differs at {size[0]}x{size[1]} px")  # never
        memo[size] = hi
    return memo[size]


def views_text(cfg: DistillConfig, bundle: DataBundle) -> str:
    """What each model sees, printed before training: H×W, how images become H×W, mean/std."""
    how = {"none": "as stored", "stretch": "stretched", "pad": f"padded right/bottom with {bundle.fill}",
           "crop": "short side resized, centre-cropped"}[bundle.resize]

    def one(who: str, v: View) -> str:
        return (f"{who} sees {v.size[0]}x{v.size[1]} ({how}), mean {', '.join(f'{m:.3g}' for m in v.mean)}, "
                f"std {', '.join(f'{s:.3g}' for s in v.std)}")
    sview, tview = views(cfg, bundle)
    return "; ".join([one("student", sview), *([one("teacher", tview)] if cfg.teacher_list else [])])


class ViewedData(Dataset):
    """`base` with each input converted from the student's view to the teacher's (for training
    a registry teacher at the teacher's own size and normalisation)."""

    def __init__(self, base: Dataset, src: View, dst: View):
        self.base, self.src, self.dst = base, src, dst
        if hasattr(base, "targets"):
            self.targets = base.targets

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, *rest = self.base[i]
        return (convert(torch.as_tensor(x)[None], self.src, self.dst)[0], *rest)


def _train_teacher(name: str, cfg: DistillConfig, bundle: DataBundle, run_dir: Path, slot: str):
    C = bundle.input_shape[0]
    sview, tview = views(cfg, bundle)
    train, val = bundle.train, bundle.val
    hi = teacher_data(cfg, bundle)
    if hi is not None:  # the images at the teacher's size, renormalised for it
        train, val = ViewedData(hi.train, data_view(hi), tview), ViewedData(hi.val, data_view(hi), tview)
    elif tview != sview:
        train, val = ViewedData(train, sview, tview), ViewedData(val, sview, tview)
    # Seeded here, explicitly: the teacher's weights never depend on what the caller drew before.
    torch.manual_seed(defaults.TEACHER_SEED)
    model = create_teacher(name, in_channels=C, num_classes=bundle.num_classes)
    ph = Phase(slot, model, build_objective(["ce"]), Indexed(train), val,
               cfg.teacher_epochs, seed=defaults.TEACHER_SEED, lr=cfg.lr, batch_size=cfg.batch_size,
               options=cfg.train_options(run_dir))
    stage(f"{slot}: training {name} for {cfg.teacher_epochs} epochs on {ph.options.device}")
    fit(ph, ckpt=run_dir / "checkpoints" / f"{slot}.pt", resume=cfg.resume, progress=cfg.progress)
    artifacts.save_torch(run_dir / f"{slot}.pt", {
        "kind": "teacher", "arch": name, "in_channels": C,
        "num_classes": bundle.num_classes, "model": {k: v.cpu() for k, v in model.state_dict().items()}})
    return model.eval(), {"kind": "registry", "source": "trained", "arch": name, "epochs": cfg.teacher_epochs}


def check_teacher_paths(cfg: DistillConfig, bundle: DataBundle | None = None) -> list[LoadedTeacher | None]:
    """Parse every --teacher; with the data, load each one from outside and check it fits
    (classes, channels, weights, input size). Returns one entry per teacher: the loaded teacher,
    or None for a registry name (trained later). All of this runs before a run folder exists."""
    specs = parse_specs(cfg.teacher_list, list(cfg.teacher_weight_files))
    if bundle is None:
        return []
    _, tview = views(cfg, bundle)
    if not specs[0].eager and not cfg.online and cfg.generations == 0:
        feats = [m for m in cfg.methods if getattr(LOSSES.get(parse_method(m)[0]), "taps", ())]
        if feats:
            raise BadInput(f"--method {feats[0]}: a feature loss taps the first teacher's modules, and "
                           f"--teacher {specs[0].ref} is {specs[0].kind} (no modules to tap); use a PyTorch "
                           f"teacher first, or logit losses (soft, hard, ce)")
    loaded = [load_teacher_spec(s, channels=bundle.input_shape[0], num_classes=bundle.num_classes, view=tview)
              for s in specs]
    return adapt_loaded(cfg, bundle, loaded)


def adapt_loaded(cfg: DistillConfig, bundle: DataBundle, loaded: list[LoadedTeacher | None]) -> list:
    """Each teacher from outside hooked to return logits in the data's class order
    (--teacher-outputs, --class-order; `edgekd.models.foreign.adapt_outputs`), decided on a few
    validation images in the teacher's view (never a training label)."""
    from edgekd.models.foreign import adapt_outputs, parse_class_order

    order = parse_class_order(cfg.class_order, bundle.labels)
    if not any(lt is not None for lt in loaded):
        if order is not None:   # a teacher edgekd trains learns the data's own order
            raise BadInput(f"--class-order {cfg.class_order}: for a teacher from outside; --teacher "
                           f"{cfg.teacher_list[0]} is trained by this run in the data's class order")
        if cfg.teacher_outputs not in ("auto", "logits"):
            raise BadInput(f"--teacher-outputs {cfg.teacher_outputs}: for a teacher from outside; --teacher "
                           f"{cfg.teacher_list[0]} is trained by this run and returns logits")
        return loaded
    sample = teacher_sample(cfg, bundle)
    return [lt if lt is None else adapt_outputs(lt, sample, outputs=cfg.teacher_outputs, class_order=order)
            for lt in loaded]


def teacher_sample(cfg: DistillConfig, bundle: DataBundle, n: int = 16) -> torch.Tensor:
    """The first `n` validation images (test where there is no val) in the teacher's view."""
    from edgekd.train.datasets import _indexed_batches

    ds = bundle.val if bundle.val is not None and len(bundle.val) else bundle.test
    x, _ = next(_indexed_batches(ds, list(range(min(n, len(ds))))))
    return convert(x, *views(cfg, bundle))


def obtain_teachers(cfg: DistillConfig, bundle: DataBundle, run_dir: Path,
                    loaded: list[LoadedTeacher | None] | None = None) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Each teacher loaded from outside (`loaded`, from check_teacher_paths) or the registry one trained
    (seed 0) and saved as teacher.pt, teacher1.pt, …"""
    if not loaded:
        loaded = check_teacher_paths(cfg, bundle)
    out = []
    for i, (name, lt) in enumerate(zip(cfg.teacher_list, loaded)):
        slot = "teacher" if i == 0 else f"teacher{i}"
        out.append((lt.model, dict(lt.info)) if lt is not None else _train_teacher(name, cfg, bundle, run_dir, slot))
    return out


def obtain_teacher(cfg: DistillConfig, bundle: DataBundle, run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    return obtain_teachers(cfg, bundle, run_dir)[0]


def _view_fn(cfg: DistillConfig | None, bundle: DataBundle):
    if cfg is None:
        return None
    sview, tview = views(cfg, bundle)
    return None if sview == tview else partial(convert, src=sview, dst=tview)


def teacher_source(cfg: DistillConfig, bundle: DataBundle, teachers: list[nn.Module], objective: Objective,
                   cache_dir: Path | None = None, overrides: dict[str, str] | None = None,
                   *, own_view: bool = False) -> TeacherSource:
    """`own_view=True` for a teacher that sees the student's view (a born-again generation)."""
    taps = resolve_taps(teachers[0], objective, overrides)
    src = TeacherSource(teachers, taps=taps, mode=cfg.teacher_mode, weights=cfg.teacher_weights,
                        temperature=cfg.temperature, view=None if own_view else _view_fn(cfg, bundle))
    opts = cfg.train_options()
    src.to(opts.device, channels_last=opts.channels_last)   # the cache runs where and as the run trains
    if bundle.augmented or not cfg.cache_teacher:
        # Random inputs: the teacher runs live on each (augmented) batch of the student, in its view.
        return src
    # Deterministic inputs: the teacher's outputs are computed once, not every epoch; from the
    # images at the teacher's own size when the data can be read at it.
    hi = None if own_view else teacher_data(cfg, bundle)
    if hi is None:
        return src.build_cache(bundle.train, cache_dir=cache_dir)
    live_view, src.view = src.view, partial(convert, src=data_view(hi), dst=views(cfg, bundle)[1])
    src.build_cache(hi.train, cache_dir=cache_dir)
    src.view = live_view
    return src


def ensemble_accuracy(cfg: DistillConfig, teachers: list[nn.Module], ds: Dataset,
                      bundle: DataBundle | None = None) -> float:
    """Test accuracy of what the student learns from: the teacher, or the teachers' mixture, through their view."""
    view = _view_fn(cfg, bundle) if bundle is not None else None
    hi = teacher_data(cfg, bundle) if bundle is not None and ds is bundle.test else None
    if hi is not None:
        ds, view = hi.test, partial(convert, src=data_view(hi), dst=views(cfg, bundle)[1])
    if len(teachers) == 1 and view is None:
        return accuracy(teachers[0], ds)
    src = TeacherSource(teachers, mode=cfg.teacher_mode, weights=cfg.teacher_weights, temperature=cfg.temperature,
                        view=view)
    logits = torch.cat([src.live(x)[0] for x, *_ in DataLoader(ds, batch_size=256)])
    return float((logits.argmax(1) == torch.as_tensor(dataset_labels(ds))).float().mean())


def pool_agreement(cfg: DistillConfig, bundle: DataBundle, teachers: list[nn.Module],
                   students: dict[str, list[nn.Module]]) -> dict[str, Any] | None:
    """Top-1 agreement with the teacher(s) on the held-out share of the --unlabeled pool (no labels
    needed): {key: [one value per student model]}, and n; None without a pool."""
    from edgekd.train.datasets import predict

    pool = bundle.unlabeled_test
    if pool is None or not len(pool):
        return None
    hi = teacher_data(cfg, bundle)
    tds, view = (hi.unlabeled_test, partial(convert, src=data_view(hi), dst=views(cfg, bundle)[1])) \
        if hi is not None else (pool, _view_fn(cfg, bundle))
    src = TeacherSource(teachers, mode=cfg.teacher_mode, weights=cfg.teacher_weights, temperature=cfg.temperature,
                        view=view)
    t = torch.cat([src.live(x)[0].cpu() for x, *_ in DataLoader(tds, batch_size=256)]).argmax(1)
    out: dict[str, Any] = {"n": len(pool)}
    for key, models in students.items():
        out[key] = [float((predict(m, pool).argmax(1) == t).float().mean()) for m in models]
    return out

def ensemble_predictions(cfg: DistillConfig, teachers: list[nn.Module], ds: Dataset,
                         bundle: DataBundle) -> torch.Tensor:
    """Top-1 of what the student learns from (the teacher or the mixture, in its view) on `ds`:
    what a label-free run's student is scored against (top-1 agreement)."""
    view = _view_fn(cfg, bundle)
    hi = teacher_data(cfg, bundle) if ds is bundle.test else None
    if hi is not None:
        ds, view = hi.test, partial(convert, src=data_view(hi), dst=views(cfg, bundle)[1])
    src = TeacherSource(teachers, mode=cfg.teacher_mode, weights=cfg.teacher_weights, temperature=cfg.temperature,
                        view=view)
    from edgekd.train.datasets import _indexed_batches

    return torch.cat([src.live(x)[0].argmax(1).cpu() for x, _ in _indexed_batches(ds, list(range(len(ds))))])


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
