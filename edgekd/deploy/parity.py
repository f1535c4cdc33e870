"""PyTorch against ONNX Runtime: compare every output, collect every failure, raise once.

As optimum's exporter validation does: each check that fails adds one entry
with the numbers (max diff per output, agreement against its threshold), and
the caller raises a single CheckFailed listing them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.checks import Failure
from edgekd.errors import BadInput, first_line


@dataclass
class ParityReport:
    """ONNX Runtime against PyTorch on n samples: the largest differences, top-1 agreement, the
    tolerances used, and one `Failure` per check that failed."""

    n: int
    max_abs_diff: float
    max_rel_diff: float
    top1_agreement: float
    atol: float
    rtol: float
    min_top1_agreement: float
    failures: list[Failure] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "max_abs_diff": self.max_abs_diff, "max_rel_diff": self.max_rel_diff,
                "top1_agreement": self.top1_agreement,
                "atol": self.atol if np.isfinite(self.atol) else None, "rtol": self.rtol,
                "min_top1_agreement": self.min_top1_agreement, "passed": self.passed,
                "failures": [str(f) for f in self.failures]}


def compare(reference: np.ndarray, actual: np.ndarray, *, atol: float, rtol: float,
            min_top1_agreement: float, name: str = "logits") -> ParityReport:
    """Element-wise |a − r| ≤ atol + rtol·|r| (numpy.allclose) and top-1 agreement."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise BadInput(f"output '{name}': shape {actual.shape} does not match the reference {reference.shape}")
    n = reference.shape[0]
    diff = np.abs(actual - reference)
    rel = diff / np.maximum(np.abs(reference), 1e-12)
    agree = float((actual.argmax(-1) == reference.argmax(-1)).mean()) if n else 1.0
    report = ParityReport(n=n, max_abs_diff=float(diff.max(initial=0.0)), max_rel_diff=float(rel.max(initial=0.0)),
                          top1_agreement=agree, atol=atol, rtol=rtol, min_top1_agreement=min_top1_agreement)
    # atol=inf means "top-1 only" (int8: elementwise closeness is not expected)
    bad = diff > atol + rtol * np.abs(reference) if np.isfinite(atol) else ~np.isfinite(actual)
    if bad.any() or not np.isfinite(actual).all():
        report.failures.append(Failure(
            "parity", f"{name} values outside tolerance", int(bad.sum()), 0,
            detail=f"{name}: {int(bad.sum())} of {bad.size} values outside atol={atol:g} + rtol={rtol:g}·|ref| "
                   f"(max abs diff {report.max_abs_diff:.3g}, max rel diff {report.max_rel_diff:.3g})"))
    if agree < min_top1_agreement:
        report.failures.append(Failure(
            "parity", f"{name} top1_agreement", agree, min_top1_agreement,
            detail=f"{name}: top-1 agreement {agree:.4f} < {min_top1_agreement:g} over {n} samples"))
    return report


def ort_session(model: str | Path, *, threads: int = 1):
    """A plain CPU session for checking answers (not for timing)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(str(model), so, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise BadInput(f"{model}: ONNX Runtime cannot load it ({first_line(e, limit=160)})") from None


def ort_run(session, inputs: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Run a session over `inputs` in batches; a shape mismatch is BadInput naming both shapes."""
    meta = session.get_inputs()[0]
    expected = list(meta.shape)
    fixed_batch = expected[0] if expected and isinstance(expected[0], int) else None
    inner_ok = len(expected) == inputs.ndim and all(
        not isinstance(d, int) or d == inputs.shape[i] for i, d in enumerate(expected) if i > 0)
    if not inner_ok or (fixed_batch and len(inputs) % fixed_batch):
        raise BadInput(f"input shape {list(inputs.shape)} does not match the model's input "
                       f"'{meta.name}' {[d if isinstance(d, int) else str(d) for d in expected]}")
    batch_size = fixed_batch or batch_size  # a fixed-batch model runs in chunks of its own batch
    outs = [session.run(None, {meta.name: inputs[i:i + batch_size].astype(np.float32)})[0]
            for i in range(0, len(inputs), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)
