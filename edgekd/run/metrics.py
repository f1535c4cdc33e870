"""`<run>/metrics.jsonl`: one line per phase and epoch, appended while training runs (rank 0 only).

The lines carry no `schema_version` of their own (a line is appended while a report may be reading the
file, and `edgekd report` and the resume logic read these exact keys); they follow the schema of the
run's `distill.json`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgekd.run.schema import Record, extra_field, field


@dataclass(frozen=True)
class MetricsLine(Record):
    """One line of `<run>/metrics.jsonl`: one epoch of one phase."""

    phase: str = field("teacher, alone/seed0, kd/seed0, kd/seed0/gen1, dml/seed0/peer1, ...")
    stage: str = field("main or hint (the feature-hint warm-up)")
    epoch: int = field("1-based epoch")
    epochs: int = field("epochs of this stage")
    loss: float = field("mean training loss over the epoch")
    terms: dict = field("{term: mean over the epoch} for each term of the objective")
    val_acc: float | None = field("validation accuracy after the epoch, 0..1 (null without a validation split)")
    lr: float = field("learning rate at the end of the epoch")
    seconds: float = field("wall time of the epoch, validation included")
    images_per_s: float = field("training images per second")
    time: float = field("Unix time at the end of the epoch")
    extra: dict[str, Any] = extra_field()


KEYS = tuple(f.name for f in dataclasses.fields(MetricsLine) if f.name != "extra")


def line(row: dict[str, Any], source: str | Path = "metrics.jsonl") -> MetricsLine:
    """The typed line for `row`, keeping only the schema's keys (a phase's summary row holds more)."""
    return MetricsLine.from_json({k: row[k] for k in KEYS if k in row}, source=source)
