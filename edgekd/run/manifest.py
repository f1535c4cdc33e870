"""`<run>/<target>/manifest.json`: what a target's model is, how it was checked, and whether to deploy it.

`amend` is the one way to write it: export starts it (`new=True`), bench and bench-across-targets add
their sections, and every write recomputes `deployable` from what the manifest then holds.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edgekd.run.schema import SCHEMA_VERSION, Record, extra_field, field, parse, plain, read, version_field


@dataclass(frozen=True)
class FileRef(Record):
    """A file the manifest names (relative to the target folder); `edgekd verify` hashes it."""

    path: str = field("file name, relative to the target folder")
    sha256: str = field("hex SHA-256 of the file's bytes")
    bytes: int = field("size in bytes")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Model(Record):
    """The exported fp32 model and what a device needs to feed it."""

    path: str = field("the ONNX file, relative to the target folder (model.onnx)")
    sha256: str = field("hex SHA-256 of the ONNX file")
    bytes: int = field("size in bytes")
    opset: int = field("ONNX opset (the target profile's)")
    params: int = field("number of parameters")
    inputs: list = field("[{name, shape, dtype}]; 'batch' names a dynamic axis")
    outputs: list = field("[{name, shape, dtype}] (one output: the logits)")
    preprocessing: dict = field("input size, resize policy, scale, mean and std: enough for a device-side preprocessor")
    labels: list = field("class names, in logit order")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Ops(Record):
    """The op audit of the graph the target's runtime sees (after ONNX Runtime's basic optimizations)."""

    used: list = field("op types in the graph")
    unsupported: list = field("ops the target's providers do not run: [{op, nodes, ...}]; empty to pass")
    partition: dict | None = field("the real partition over providers (ran, passed, nodes, share, summary)",
                                   optional=True)
    coverage: float | None = field("share of nodes the target's providers take, 0..1", optional=True)
    notes: list | None = field("the audit's notes", optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Parity(Record):
    """ONNX Runtime against PyTorch on the held-out test set."""

    max_abs_diff: float = field("largest |onnx - torch| over every logit")
    top1_agreement: float = field("share of samples whose arg-max agrees, 0..1")
    passed: bool = field("within the profile's atol/rtol and min_top1_agreement")
    n: int | None = field("number of test samples compared", optional=True)
    max_rel_diff: float | None = field("largest relative difference", optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Accuracy(Record):
    """Test accuracies, fractions in 0..1."""

    teacher: float = field("the teacher")
    student_alone: float | None = field("the same student trained without a teacher (the control); null in a "
                                        "label-free run")
    student: float = field("the distilled student in PyTorch")
    student_onnx: float = field("the distilled student through ONNX Runtime")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Checks(Record):
    """Export's verdict: audit, parity and provider parity (an int8 variant's miss is listed, not counted)."""

    passed: bool = field("no fp32 check failed")
    failures: list = field("one line per failed check")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Bench(Record):
    """The fp32 model's timing on the runner (`edgekd bench`); latency at batch 1."""

    runner: str = field("local, qemu or ssh://...")
    provider: str = field("the execution provider that ran it")
    threads: int | None = field("intra-op threads actually used")
    latency_ms: dict = field("{p50, p90, p99, mean} at batch 1")
    peak_rss_mb: float | None = field("peak resident memory of the runner process")
    golden: dict | None = field("the golden check on the runner: {passed, top1_agreement, ...}", optional=True)
    comparison: dict | None = field("teacher (ONNX) and eager student on the same host (bench.json's)",
                                    optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Variant(Record):
    """A variant of the model (int8): its file, its parity with fp32 and, after bench, its timing."""

    path: str = field("file, relative to the target folder")
    sha256: str = field("hex SHA-256")
    bytes: int = field("size in bytes")
    parity: dict = field("{max_abs_diff, top1_agreement, passed} against the fp32 model")
    golden: dict | None = field("the golden check on the runner, after bench", optional=True)
    accuracy: float | None = field("test accuracy through ONNX Runtime, 0..1", optional=True)
    latency_ms: dict | None = field("{p50, p90, p99, mean} at batch 1, after bench", optional=True)
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Budget(Record):
    """The target's budget (latency p90, peak memory, model size) for the recommended model."""

    passed: bool = field("every check within its limit (a skipped check is not a failure)")
    checks: list = field("[{name, value, limit, passed, ...}]")
    extra: dict[str, Any] = extra_field()


@dataclass(frozen=True)
class Manifest(Record):
    """`<run>/<target>/manifest.json`, written by export and amended by bench."""

    edgekd_version: str = field("the edgekd that wrote it")
    target: str = field("the target profile's name (also the folder's name)")
    model: Model = field("the exported model")
    ops: Ops = field("the op audit")
    parity: Parity = field("fp32 parity")
    accuracy: Accuracy = field("test accuracies")
    recommended: str = field("fp32 or int8: the model to deploy")
    deployable: bool = field("checks, parity, audit, and where present budget and golden all passed (recomputed)")
    schema_version: int | None = version_field()
    golden: FileRef | None = field("golden.npz: inputs and PyTorch's outputs for a device to check itself",
                                   optional=True)
    checks: Checks | None = field("export's verdict (absent in the oldest manifests)", optional=True)
    variants: dict[str, Variant] | None = field("present only when a variant was made", optional=True)
    bench: Bench | None = field("present after `edgekd bench`", optional=True)
    budget: Budget | None = field("present after `edgekd bench`", optional=True)
    target_profile: dict | None = field("the target profile export used (its budget, runtime, ...)", optional=True)
    runtime: dict | None = field("which onnxruntime checked the model: {mechanism, package, onnxruntime_version, "
                                 "path}", optional=True)
    parity_provider: dict | None = field("parity through the target's own provider: {ran, provider, n, "
                                         "max_abs_diff, top1_agreement, passed} or {ran: false, reason}",
                                         optional=True)
    mobile: dict | None = field("{model.ort, required_operators.config: {path, sha256, bytes}} for mobile targets",
                                optional=True)
    notes: list | None = field("export's notes", optional=True)
    extra: dict[str, Any] = extra_field()

    def failed(self) -> list[str]:
        """Why the manifest is not deployable: one short reason per failed part (empty: deployable)."""
        why = []
        if self.checks is not None and not self.checks.passed:
            why.append("export checks failed")
        if not self.parity.passed:
            why.append("parity failed")
        if self.ops.unsupported or (self.ops.partition or {}).get("passed") is False:
            why.append("audit failed")
        if self.budget is not None and not self.budget.passed:
            why.append("budget failed")
        if golden_passed(self) is False:
            why.append(f"golden check of the {self.recommended} model failed")
        return why


def golden_passed(m: Manifest) -> bool | None:
    """The recommended model's golden check on the runner, None where bench has not run it."""
    if m.recommended == "int8" and m.variants and "int8" in m.variants:
        g = m.variants["int8"].golden
    else:
        g = m.bench.golden if m.bench is not None else None
    return None if not isinstance(g, dict) or "passed" not in g else bool(g["passed"])


def from_json(obj: Any, source: str | Path = "<memory>") -> Manifest:
    return parse(Manifest, obj, source)


def load_manifest(path: str | Path) -> Manifest:
    """Read and check a manifest; BadInput names the file and the field that is missing or mistyped."""
    return read(Manifest, path)


def amend(path: str | Path, *, new: bool = False, **sections: Any) -> Manifest:
    """The one writer of manifest.json: replace top-level `sections` (JSON values) of the manifest at
    `path` (or start one with `new`), recompute `deployable` from the result, write it atomically."""
    from edgekd.artifacts import read_json, write_json

    base = {} if new else from_json(read_json(path), path).to_json()
    merged = {**base, **plain(sections), "schema_version": SCHEMA_VERSION}
    merged.setdefault("deployable", False)  # recomputed below; a value given by the caller is ignored
    manifest = from_json(merged, path)
    manifest = replace(manifest, deployable=not manifest.failed())
    write_json(path, manifest.to_json())
    return manifest
