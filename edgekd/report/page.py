"""Assemble the sections into one page and write it atomically."""

from __future__ import annotations

from pathlib import Path

from edgekd import artifacts, defaults
from edgekd.errors import BadInput
from edgekd.report import sections, targets
from edgekd.report.html import Section, esc, missing, page
from edgekd.report.load import RunData, load_run


def _labels(paths: list[Path]) -> list[str]:
    """Column names: the folder names, made unique when two runs share one."""
    names = [p.resolve().name for p in paths]
    return [n if names.count(n) == 1 else f"{n} ({i + 1})" for i, n in enumerate(names)]


BUILDERS = ((sections.summary, "summary", "Summary"), (sections.recipe, "recipe", "Recipe"),
            (sections.accuracy, "accuracy", "Accuracy"), (sections.curves, "curves", "Training curves"),
            (targets.deployment, "targets", "Deployment targets"),
            (targets.teacher_vs_student, "teacher-vs-student", "Teacher against student"),
            (sections.seminar, "seminar", "Seminar table (edgekd compare)"),
            (sections.select_student, "select-student", "Student search (edgekd select-student)"),
            (sections.select_teacher, "select-teacher", "Teacher selection (edgekd select-teacher)"),
            (sections.whats_missing, "missing", "What is missing"))


def _section(build, key: str, title: str, runs: list[RunData]) -> Section | None:
    """One section; a file whose values have shapes this version does not know (written by an older or
    newer edgekd, or edited by hand) costs that section, never the page."""
    try:
        return build(runs)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, ZeroDivisionError, OverflowError) as e:
        return Section(key, title, missing(f"This section could not be drawn from the run's files "
                                           f"({esc(type(e).__name__)}: {esc(e)}); the other sections are unaffected."))


def render(runs: list[RunData]) -> str:
    """The whole page for `runs` (one or several)."""
    parts = [_section(build, key, title, runs) for build, key, title in BUILDERS]
    if len(runs) == 1:
        title, sub = f"edgekd run {runs[0].label}", f"<code>{runs[0].path}</code>"
    else:
        title, sub = f"edgekd: {len(runs)} runs side by side", ", ".join(f"<code>{r.path}</code>" for r in runs)
    return page(title, sub, [s for s in parts if s is not None],
                side_by_side=("recipe", "accuracy") if len(runs) == 1 else None)


def build(paths: list[Path], *, out: Path | None = None) -> Path:
    if not paths:
        paths = [artifacts.resolve_run(None)]
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise BadInput(f"{missing[0]}: run folder not found (pass folders made by `edgekd distill`)")
    if out is not None and out.is_dir():
        raise BadInput(f"--out {out}: is a folder; give a file name such as {out / defaults.REPORT_FILE}")
    runs = [load_run(p, label=lab) for p, lab in zip(paths, _labels(paths))]
    if out is None:
        out = paths[0] / defaults.REPORT_FILE if len(paths) == 1 else defaults.ARTIFACTS / defaults.REPORT_COMPARE_FILE
    try:
        artifacts.write_bytes(out, render(runs).encode())
    except OSError as e:
        raise BadInput(f"--out {out}: cannot write ({e.strerror})") from None
    return out
