"""PyTorch against ONNX Runtime: compare every output, collect every failure, raise once.

As optimum's exporter validation does: each check that fails adds one entry
with the numbers (max diff per output, agreement against its threshold), and
the caller raises a single CheckFailed listing them all.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.checks import Failure
from edgekd.errors import BadInput


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

    The numbers come from the bench agent's `compare_outputs`, so that export's parity and a
    device's golden check follow one convention (relative-difference floor, atol=inf meaning
    "top-1 only")."""
    from edgekd.bench.agent import compare_outputs

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


def ort_session(model: str | Path, *, threads: int = 1, providers: list[dict] | None = None,
                graph_optimization: str = "all"):
    """A session for checking answers (not for timing): the CPU provider, or the first of
    `providers` (a profile's entries, plugin EPs included) that can run here, built exactly as
    the bench agent builds it. Returns the session; `session_report(session)` says what ran."""
    import onnxruntime as ort

    from edgekd.bench import agent

    cfg = {**agent.DEFAULTS, "intra_op_threads": threads, "graph_optimization": graph_optimization,
           "providers": providers or [{"name": "CPUExecutionProvider", "options": {}}]}
    try:
        session, report = agent.open_session(ort, str(model), cfg)
    except agent.AgentError as e:
        if e.kind in ("model", "session"):
            raise BadInput(f"{model}: ONNX Runtime cannot load it ({str(e).split(': ', 1)[-1][:200]})") from None
        raise BadInput(str(e)) from None
    _REPORTS[session] = report
    return session


# Each session's report lives exactly as long as the session: keyed weakly by the session object itself,
# so an entry goes when its session is collected and a later session can never be handed it (an id() key
# could be reused by the next object at the same address).
_REPORTS: weakref.WeakKeyDictionary[Any, dict] = weakref.WeakKeyDictionary()


def session_report(session) -> dict:
    """What a session from `ort_session` runs on: provider, device, vendor, EP version, precision, fallback
    ({} for a session that `ort_session` did not make)."""
    try:
        return _REPORTS.get(session, {})
    except TypeError:  # not weak-referenceable, so not one of ours
        return {}


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
