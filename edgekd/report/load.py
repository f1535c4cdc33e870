"""Read everything a run folder holds, tolerating whatever is missing or half-written.

A report must work on a run that is still training (config.json and a partial
metrics.jsonl), on one never exported or benchmarked, and on files written by
older versions. So nothing here raises for a missing or unreadable file: it is
recorded in `RunData.problems` and the page says so. Only a RUN that is not a
folder at all is bad input.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput

METRICS = "metrics.jsonl"
OPTIONAL_JSON = {"compare": "compare.json", "select_student": "select_student.json",
                 "select_teacher": "teacher_selection.json"}


@dataclass
class TargetData:
    """One exported target of a run: its manifest and, once benchmarked, bench.json."""

    name: str
    manifest: dict[str, Any] | None
    bench: dict[str, Any] | None
    teacher_onnx_bytes: int | None = None


@dataclass
class RunData:
    """What one run folder holds; absent parts are None, unreadable ones are listed in `problems`."""

    path: Path
    label: str
    config: dict[str, Any] | None = None
    distill: dict[str, Any] | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    targets: dict[str, TargetData] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)   # phases with an epoch checkpoint (a run in progress)
    problems: list[str] = field(default_factory=list)


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """The JSON object at `path`, or None (absent, or unreadable: then a line in `problems`)."""
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        problems.append(f"{path.name}: unreadable ({type(e).__name__}: {e}); its sections are left out")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path.name}: not a JSON object; its sections are left out")
        return None
    return obj


def read_metrics(path: Path, problems: list[str]) -> list[dict[str, Any]]:
    """Lines of metrics.jsonl that parse. A line being written as we read (the last one of a
    run still training) is skipped silently; a bad line elsewhere is counted in `problems`."""
    if not path.is_file():
        return []
    rows, bad = [], 0
    lines = path.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            bad += i < len(lines) - 1
            continue
        if isinstance(row, dict) and isinstance(row.get("phase"), str) and isinstance(row.get("epoch"), (int, float)):
            rows.append(row)
        else:
            bad += 1
    if bad:
        problems.append(f"{METRICS}: {bad} line(s) not in the metrics schema were skipped")
    return rows


def decode_raw(entry: Any) -> list[float] | None:
    """Per-run latencies from a bench entry's `latency_raw` ({"encoding": "float32-zlib-base64", ...})."""
    if not isinstance(entry, dict) or entry.get("encoding") != "float32-zlib-base64":
        return None
    try:
        import numpy as np

        data = zlib.decompress(base64.b64decode(entry["data"]))
        return np.frombuffer(data, dtype="<f4").astype(float).tolist()
    except (KeyError, TypeError, ValueError, zlib.error):
        return None


def _target(folder: Path, problems: list[str]) -> TargetData:
    p: list[str] = []
    manifest = _json(folder / "manifest.json", p)
    bench = _json(folder / "bench.json", p)
    problems += [f"{folder.name}/{line}" for line in p]
    teacher = folder / "teacher.onnx"
    return TargetData(folder.name, manifest, bench, teacher.stat().st_size if teacher.is_file() else None)


def load_run(path: Path, *, label: str | None = None) -> RunData:
    """Everything readable in run folder `path`."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: run folder not found (pass a folder made by `edgekd distill`)")
    run = RunData(path=path, label=label or path.resolve().name)
    run.config = _json(path / "config.json", run.problems)
    run.distill = _json(path / "distill.json", run.problems)
    run.metrics = read_metrics(path / METRICS, run.problems)
    run.checkpoints = sorted(p.stem for p in (path / "checkpoints").glob("*.pt"))
    for key, name in OPTIONAL_JSON.items():
        obj = _json(path / name, run.problems)
        if obj is not None:
            run.extra[key] = obj
    for folder in sorted(p.parent for p in path.glob("*/manifest.json")):
        run.targets[folder.name] = _target(folder, run.problems)
    for folder in sorted(p.parent for p in path.glob("*/bench.json")):
        run.targets.setdefault(folder.name, _target(folder, run.problems))
    if run.config is None and run.distill is None and not run.extra:
        run.problems.append("no config.json or distill.json: this folder does not look like an edgekd run")
    return run
