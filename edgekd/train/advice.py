"""What distill suggests when distillation did not help: the `edgekd compare` command that measures
the alternatives (the modern logit methods) on the user's own data, teacher and student.

A module of its own: `compare` and `distill` both read it, and `compare` already imports `distill`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# compare's rows for the modern logit methods: Hinton, DKD, DIST, TTM and Hinton with logit standardisation
LOGIT = ("soft", "dkd", "dist", "ttm", "soft.standardize=true")


def compare_command(cfg, *, methods: tuple[str, ...] = LOGIT, teachers: list[str] | None = None) -> str:
    """The `edgekd compare` command line that measures `methods` on the same data, teacher, student,
    target, epochs, seeds and labels as `cfg` (a distill run's config). `teachers`: teacher files to
    reuse (the run's teacher.pt) instead of the config's teachers, which a registry name would retrain."""
    import shlex

    parts = ["edgekd", "compare", "--data", cfg.data]
    if cfg.data_dir is not None:
        parts += ["--data-dir", str(cfg.data_dir)]
    for t in teachers or cfg.teacher_list:
        parts += ["--teacher", str(t)]
    for flag, value in (("--student", cfg.student), ("--target", cfg.target), ("--epochs", cfg.epochs),
                        ("--temperature", cfg.temperature), ("--seeds", cfg.seeds),
                        ("--labeled-fraction", cfg.labeled_fraction)):
        if value is not None:
            parts += [flag, f"{value:g}" if isinstance(value, float) else str(value)]
    parts += _view_flags(cfg, reused=teachers is not None and teachers != list(cfg.teacher_list))
    for m in methods:
        parts += ["--method", m]
    return " ".join(shlex.quote(p) for p in parts)


def _hw(size: int | tuple[int, int] | None) -> str | None:
    """A size as compare's flag takes it: N (a teacher's view may hold one number) or HxW."""
    if size is None or isinstance(size, int):
        return None if size is None else str(size)
    return f"{size[0]}x{size[1]}"


def _view_flags(cfg, *, reused: bool) -> list[str]:
    """The options that say what the models see and how the teacher's outputs read, so compare measures
    the same problem. Weight files pair with torchvision:/timm: teachers, which a reused teacher.pt is not."""
    flags: list[tuple[str, Any]] = [
        ("--input-size", _hw(cfg.input_size)), ("--resize", cfg.resize),
        ("--teacher-input-size", _hw(cfg.teacher_input_size)), ("--teacher-mean", cfg.teacher_mean),
        ("--teacher-std", cfg.teacher_std), ("--class-order", cfg.class_order)]
    if cfg.teacher_outputs != "auto":
        flags.append(("--teacher-outputs", cfg.teacher_outputs))
    out = [] if reused else [x for f in cfg.teacher_weight_files for x in ("--teacher-weights", f)]
    return out + [x for flag, value in flags if value is not None for x in (flag, str(value))]


def suggestion(cfg, run_dir: Path, verdict: dict[str, Any]) -> str | None:
    """When distillation did not help (within spread or lost): the compare command that measures the
    modern logit methods against it on this run's data, reusing the teacher(s) this run trained."""
    if verdict.get("distillation") in ("helped", "label-free"):  # compare needs labels for its control
        return None
    from edgekd.models import TEACHERS

    files = [str(run_dir / ("teacher.pt" if i == 0 else f"teacher{i}.pt")) if name in TEACHERS else name
             for i, name in enumerate(cfg.teacher_list)]
    return compare_command(cfg, teachers=files)
