"""PyTorch against ONNX Runtime: compare every output, collect every failure, raise once.

As optimum's exporter validation does: each check that fails adds one entry
with the numbers (max diff per output, agreement against its threshold), and
the caller raises a single CheckFailed listing them all. The sessions that produce the outputs are
built in `edgekd.runtime.session` (`ort_session`, `ort_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekd.checks import Failure
from edgekd.errors import BadInput
from edgekd.runtime.agent import compare_outputs


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
                "failures": [str(f) for f in self.failures],
                "failure_records": [f.to_dict() for f in self.failures]}


def compare(reference: np.ndarray, actual: np.ndarray, *, atol: float, rtol: float,
            min_top1_agreement: float, name: str = "logits") -> ParityReport:
    """Element-wise |a − r| ≤ atol + rtol·|r| (numpy.allclose) and top-1 agreement.

    The numbers come from the bench agent's `compare_outputs` (edgekd.runtime.agent), so that export's parity and a
    device's golden check follow one convention (relative-difference floor, atol=inf meaning
    "top-1 only")."""
    reference = np.asarray(reference, dtype=np.float64)
    actual = np.asarray(actual, dtype=np.float64)
    if reference.shape != actual.shape:
        raise BadInput(f"output '{name}': shape {actual.shape} does not match the reference {reference.shape}")
    r = compare_outputs(np, actual, reference, atol=atol, rtol=rtol, min_top1_agreement=min_top1_agreement)
    return report_of(r, atol=atol, rtol=rtol, min_top1_agreement=min_top1_agreement, name=name)


def report_of(r: dict[str, Any], *, atol: float, rtol: float, min_top1_agreement: float,
              name: str = "logits") -> ParityReport:
    """A ParityReport from `compare_outputs`' numbers (here, or from the bench agent's golden check
    in a target's runtime environment)."""
    report = ParityReport(n=r["n"], max_abs_diff=r["max_abs_diff"], max_rel_diff=r["max_rel_diff"],
                          top1_agreement=r["top1_agreement"], atol=atol, rtol=rtol,
                          min_top1_agreement=min_top1_agreement)
    if not r["allclose"]:
        report.failures.append(Failure(
            "parity", f"{name} values outside tolerance", int(r["outside"]), 0,
            detail=f"{name}: {r['outside']} of {r['size']} values outside atol={atol:g} + rtol={rtol:g}·|ref| "
                   f"(max abs diff {report.max_abs_diff:.3g}, max rel diff {report.max_rel_diff:.3g})"))
    if r["top1_agreement"] < min_top1_agreement:
        report.failures.append(Failure(
            "parity", f"{name} top1_agreement", r["top1_agreement"], min_top1_agreement,
            detail=f"{name}: top-1 agreement {r['top1_agreement']:.4f} < {min_top1_agreement:g} over {r['n']} samples"))
    return report
