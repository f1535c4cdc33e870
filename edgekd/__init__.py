"""edgekd: distil a large classifier into a small student that provably runs on one edge target.

The Python API mirrors the `edgekd` command, one keyword-only function per command::

    import edgekd

    run = edgekd.distill(epochs=2, teacher_epochs=2, seeds=1)
    exported = edgekd.export(target="cpu-arm", run=run.run)
    timed = edgekd.bench(target="cpu-arm", run=run.run)

Names load lazily (PEP 562), so `import edgekd` and `edgekd --help` do not import torch.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name → the module that defines it
_LAZY = {
    **{name: "edgekd.api" for name in (
        "distill", "check_teacher", "TeacherCheck", "compare", "select_teacher", "select_student", "export", "audit",
        "verify", "load_target", "list_targets", "teachers", "TeacherCosts", "Result", "DistillResult", "CompareResult",
        "TeacherSelection", "StudentSelection", "ExportResult", "BenchResult", "AuditResult", "VerifyResult")},
    **{name: "edgekd.errors" for name in (
        "EdgekdError", "BadInput", "CheckFailed", "ParityFailed", "AuditFailed", "BudgetFailed", "GoldenFailed",
        "VerifyFailed")},
    "Failure": "edgekd.checks",
    "TargetProfile": "edgekd.deploy.targets",
    "TEACHERS": "edgekd.models",
    "STUDENTS": "edgekd.models",
    "LOSSES": "edgekd.train.losses",
}
# `bench` is both the API function and the subpackage edgekd.bench: the subpackage's module is a
# `CallableModule` (edgekd/bench/__init__.py sets its class) whose call is `edgekd.api.bench`, so
# `edgekd.bench(...)` works whichever was imported first.
__all__ = sorted([*_LAZY, "bench", "__version__"])


class CallableModule(types.ModuleType):
    """A module whose call is the API function of the same name, resolved lazily like every name here:
    the subpackage never imports the API above it."""

    def __call__(self, **kwargs: Any) -> Any:
        return getattr(importlib.import_module("edgekd.api"), self.__name__.rpartition(".")[2])(**kwargs)


def __getattr__(name: str) -> Any:
    if name == "bench":
        return importlib.import_module("edgekd.bench")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'edgekd' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup does not come here
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # what type checkers and IDEs see
    from edgekd.api import (  # noqa: F401
        AuditResult,
        BenchResult,
        CompareResult,
        DistillResult,
        ExportResult,
        Result,
        StudentSelection,
        TeacherSelection,
        VerifyResult,
        audit,
        bench,
        compare,
        distill,
        export,
        list_targets,
        load_target,
        select_student,
        select_teacher,
        verify,
    )
    from edgekd.checks import Failure  # noqa: F401
    from edgekd.deploy.targets import TargetProfile  # noqa: F401
    from edgekd.errors import (  # noqa: F401
        AuditFailed,
        BadInput,
        BudgetFailed,
        CheckFailed,
        EdgekdError,
        GoldenFailed,
        ParityFailed,
        VerifyFailed,
    )
    from edgekd.models import STUDENTS, TEACHERS  # noqa: F401
    from edgekd.train.losses import LOSSES  # noqa: F401
