"""Read everything a run folder holds, tolerating whatever is missing.

A report must work on a run that is still training (config.json and a partial
metrics.jsonl), on one never exported or benchmarked, and on files written by
older versions (schema 0). distill.json, manifest.json, bench.json and the lines of
metrics.jsonl are read through `edgekd.run` into its typed objects: an absent file is
None, and a file that breaks the contract (not JSON, a field missing or mistyped,
another schema version) is bad input naming the file and the field (exit 2). The
untyped extras (config.json, compare.json and the searches' results) are read as
JSON; one that is unreadable is listed in `RunData.problems` and its sections left
out. A RUN that is not a folder is bad input.
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput
from edgekd.run.bench import BenchFile, load_bench
from edgekd.run.config import load_config
from edgekd.run.distill import DistillSummary, load_distill
from edgekd.run.manifest import Manifest, load_manifest
from edgekd.run.metrics import MetricsLine, load_metrics

METRICS = "metrics.jsonl"
OPTIONAL_JSON = {"compare": "compare.json", "select_student": "select_student.json",
                 "select_teacher": "teacher_selection.json"}


@dataclass
class TargetData:
    """One exported target of a run: its manifest and, once benchmarked, bench.json."""

    name: str
    manifest: Manifest | None
    bench: BenchFile | None
    teacher_onnx_bytes: int | None = None


@dataclass
class RunData:
    """What one run folder holds; absent parts are None, unreadable untyped ones are listed in `problems`."""

    path: Path
    label: str
    config: dict[str, Any] | None = None
    distill: DistillSummary | None = None
    metrics: list[MetricsLine] = field(default_factory=list)
    targets: dict[str, TargetData] = field(default_factory=dict)
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    checkpoints: list[str] = field(default_factory=list)   # phases with an epoch checkpoint (a run in progress)
    problems: list[str] = field(default_factory=list)


def _json(path: Path, problems: list[str]) -> dict[str, Any] | None:
    """An untyped JSON object at `path`, or None (absent, or unreadable: then a line in `problems`)."""
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


def read_metrics(path: Path, problems: list[str]) -> list[MetricsLine]:
    """The typed lines of metrics.jsonl. A line being written as we read (the last one of a run still
    training) is skipped silently; a bad line elsewhere is counted in `problems`, the first one named."""
    got = load_metrics(path)
    if got.skipped:
        problems.append(f"{METRICS}: {got.skipped} line(s) not in the metrics schema were skipped "
                        f"(first: {got.first_problem})")
    return got.lines


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


def _target(folder: Path) -> TargetData:
    manifest = folder / "manifest.json"
    bench = folder / "bench.json"
    teacher = folder / "teacher.onnx"
    return TargetData(folder.name, load_manifest(manifest) if manifest.is_file() else None,
                      load_bench(bench) if bench.is_file() else None,
                      teacher.stat().st_size if teacher.is_file() else None)


def load_run(path: Path, *, label: str | None = None) -> RunData:
    """Everything readable in run folder `path`; BadInput for a typed file that breaks the contract."""
    path = Path(path)
    if not path.is_dir():
        raise BadInput(f"{path}: run folder not found (pass a folder made by `edgekd distill`)")
    run = RunData(path=path, label=label or path.resolve().name)
    config = path / "config.json"   # typed (BadInput names a missing field); the sections read it as a dict
    run.config = load_config(config).to_json() if config.is_file() else None
    run.distill = load_distill(path / "distill.json") if (path / "distill.json").is_file() else None
    run.metrics = read_metrics(path / METRICS, run.problems)
    run.checkpoints = sorted(p.stem for p in (path / "checkpoints").glob("*.pt"))
    for key, name in OPTIONAL_JSON.items():
        obj = _json(path / name, run.problems)
        if obj is not None:
            run.extra[key] = obj
    folders = {p.parent for p in path.glob("*/manifest.json")} | {p.parent for p in path.glob("*/bench.json")}
    for folder in sorted(folders):
        run.targets[folder.name] = _target(folder)
    if run.config is None and run.distill is None and not run.extra:
        run.problems.append("no config.json or distill.json: this folder does not look like an edgekd run")
    return run
