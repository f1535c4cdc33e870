"""`<run>/distill.json`: what `edgekd distill` (or select-student's pick) trained, and how well."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.run.schema import Record, extra_field, field, parse, read, version_field, write


@dataclass(frozen=True)
class DataInfo(Record):
    """The data set as the run read it."""

    name: str = field("the --data spec")
    num_classes: int = field("number of classes")
    input_shape: list = field("[C, H, W] of the student's input")
    labels: list = field("class names, in logit order")
    preprocessing: dict = field("size, resize policy, scale, mean and std")
    split: dict | None = field("{method, seed, fractions, sizes}: how train/val/test were drawn", optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Student(Record):
    """The student architecture and the seed whose weights are in student.pt."""

    arch: str = field("the student's registry name")
    chosen_seed: int = field("the seed whose student.pt and student_alone.pt were kept (best validation)")
    params: int | None = field("number of parameters", optional=True)
    ops: list | None = field("op types of the student's exported graph", optional=True)
    view: dict | None = field("{input_size, resize, fill, mean, std}: what the student sees", optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Accuracies(Record):
    """Test accuracies, fractions in 0..1; the students' as {mean, std, n} over seeds."""

    teacher: float = field("the teacher (or the ensemble of teachers)")
    student_alone: dict | None = field("{mean, std, n}: the student trained without a teacher; null in a "
                                       "label-free run (--labeled-fraction 0: no control)")
    student: dict = field("{mean, std, n}: the distilled student")
    agreement: dict | None = field("{mean, std, n}: top-1 agreement with the teacher (label-free runs)",
                                   optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class DistillSummary(Record):
    """`<run>/distill.json`, written by `edgekd distill` and by select-student for its pick."""

    data: DataInfo = field("the data set")
    target: str = field("the target profile the student was built for")
    student: Student = field("the student")
    accuracy: Accuracies = field("test accuracies")
    per_seed: list = field("[{seed, student_alone, student, student_val, ...}] one row per seed")
    schema_version: int | None = version_field()
    verdict: dict | None = field("did distillation beat training alone (on validation), and which student to deploy",
                                 optional=True)
    teacher: dict | None = field("{source, arch or path, params, accuracy, view, all: [...]}: the teacher(s)",
                                 optional=True)
    objective: str | None = field("the distillation objective as a formula, e.g. 0.7·soft + 0.3·ce", optional=True)
    methods: list | None = field("the --method specs", optional=True)
    temperature: float | None = field("the distillation temperature", optional=True)
    epochs: int | None = field("student epochs", optional=True)
    seeds: int | None = field("number of seeds", optional=True)
    labeled_fraction: float | None = field("share of the training labels used, 0..1", optional=True)
    gap_closed: float | None = field("(distilled − alone) / (teacher − alone) on the means", optional=True)
    training: dict | None = field("device, precision, batch size, lr (scaled, base, schedule), world size",
                                  optional=True)
    provenance: dict | None = field("versions (edgekd, torch, onnxruntime, python), platform, device, world size",
                                    optional=True)
    warnings: list | None = field("what distill flagged (check-teacher, a teacher below the control)", optional=True)
    images_per_s: dict | None = field("training images per second per role (teacher, student_alone, student)",
                                      optional=True)
    wall_seconds: float | None = field("wall time of the whole distill", optional=True)
    agreement: dict | None = field("{n, on, student_alone, student}: top-1 agreement with the teacher on the held-out "
                                   "share of the --unlabeled pool", optional=True)
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
