"""`<run>/distill.json`: what `edgekd distill` (or select-student's pick) trained, and how well."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.run.schema import SCHEMA_VERSION, Record, extra_field, field, parse, read, write


@dataclass(frozen=True)
class DataInfo(Record):
    """The data set as the run read it."""

    name: str = field("the --data spec")
    num_classes: int = field("number of classes")
    input_shape: list = field("[C, H, W] of the student's input")
    labels: list = field("class names, in logit order")
    preprocessing: dict = field("size, resize policy, scale, mean and std")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Student(Record):
    """The student architecture and the seed whose weights are in student.pt."""

    arch: str = field("the student's registry name")
    chosen_seed: int = field("the seed whose student.pt and student_alone.pt were kept (best validation)")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Accuracies(Record):
    """Test accuracies, fractions in 0..1; the students' as {mean, std, n} over seeds."""

    teacher: float = field("the teacher (or the ensemble of teachers)")
    student_alone: dict | None = field("{mean, std, n}: the student trained without a teacher; null in a "
                                       "label-free run (--labeled-fraction 0: no control)")
    student: dict = field("{mean, std, n}: the distilled student")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class DistillSummary(Record):
    """`<run>/distill.json`, written by `edgekd distill` and by select-student for its pick."""

    data: DataInfo = field("the data set")
    target: str = field("the target profile the student was built for")
    student: Student = field("the student")
    accuracy: Accuracies = field("test accuracies")
    per_seed: list = field("[{seed, student_alone, student, student_val, ...}] one row per seed")
    schema_version: int | None = field(f"{SCHEMA_VERSION}; absent in files written before it (read as 0)",
                                       optional=True)
    verdict: dict | None = field("did distillation beat training alone (on validation), and which student to deploy",
                                 optional=True)
    extra: dict[str, Any] = extra_field()

    def chosen(self, source: str | Path = "distill.json") -> dict[str, Any]:
        """The per-seed row of the seed that was kept; BadInput when the file has none."""
        row = next((r for r in self.per_seed if isinstance(r, dict) and r.get("seed") == self.student.chosen_seed),
                   None)
        if row is None:
            raise BadInput(f"file {source}: field 'per_seed' has no row for student.chosen_seed "
                           f"{self.student.chosen_seed}")
        return row


def from_json(obj: Any, source: str | Path = "<memory>") -> DistillSummary:
    return parse(DistillSummary, obj, source)


def load_distill(path: str | Path) -> DistillSummary:
    """Read and check a distill.json; BadInput names the file and the field that is missing or mistyped."""
    return read(DistillSummary, path)


def write_distill(path: str | Path, summary: dict[str, Any]) -> DistillSummary:
    """Check `summary` against the contract, stamp the schema version and write it atomically."""
    return write(DistillSummary, path, summary)
