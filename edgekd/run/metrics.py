"""`<run>/metrics.jsonl`: one line per phase and epoch, appended while training runs (rank 0 only).

The lines carry no `schema_version` of their own (a line is appended while a report may be reading the
file, and `edgekd report` and the resume logic read these exact keys); they follow the schema of the
run's `distill.json`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from edgekd.errors import BadInput
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


@dataclass(frozen=True)
class MetricsFile:
    """What `load_metrics` read: the lines that follow the contract, and how many did not."""

    lines: list[MetricsLine]
    skipped: int = 0
    first_problem: str | None = None   # the first skipped line's reason, naming the line and the field


def load_metrics(path: str | Path) -> MetricsFile:
    """The typed lines of a metrics.jsonl (none when it is absent). The file is appended while training
    runs, so a torn last line is dropped silently; any other line that is not JSON or breaks the contract
    (a field missing or mistyped) is skipped and counted, and `first_problem` names it."""
    path = Path(path)
    if not path.is_file():
        return MetricsFile([])
    raw = path.read_text(errors="replace").splitlines()
    lines, skipped, first = [], 0, None
    for i, text in enumerate(raw):
        if not text.strip():
            continue
        try:
            lines.append(MetricsLine.from_json(json.loads(text), source=f"{path} line {i + 1}"))
        except json.JSONDecodeError:
            if i < len(raw) - 1:
                skipped += 1
                first = first or f"file {path} line {i + 1}: not JSON"
        except BadInput as e:
            skipped += 1
            first = first or str(e)
    return MetricsFile(lines, skipped, first)


def append(path: str | Path, row: dict[str, Any]) -> MetricsLine:
    """Check `row` against the contract (only the schema's keys are kept) and append it as one line, synced."""
    typed = line(row, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(typed.to_json()) + "\n")
        f.flush()
        os.fsync(f.fileno())
    return typed


def drop(path: str | Path, doomed: Callable[[dict[str, Any]], bool]) -> int:
    """Rewrite metrics.jsonl atomically without the lines `doomed` picks and without lines cut short by a kill;
    returns how many were dropped (nothing is written when none is)."""
    from edgekd.artifacts import write_bytes

    path = Path(path)
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for text in path.read_text().splitlines():
        try:
            row = json.loads(text)
        except ValueError:
            dropped += 1  # a line cut short by a kill
            continue
        if isinstance(row, dict) and doomed(row):
            dropped += 1
        else:
            kept.append(text)
    if dropped:
        write_bytes(path, "".join(k + "\n" for k in kept).encode())
    return dropped
