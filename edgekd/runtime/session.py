"""ONNX Runtime sessions for edgekd's own checks, built exactly as the bench agent builds them.

A session here goes through the agent's `open_session` (a profile's providers in priority order, plugin EPs,
threads, graph optimization, the CPU fallback), so a model is checked through the same provider, device and
options that bench times. `ort_run` feeds a session in chunks (the agent's `run_chunked`); `partition` reads
ONNX Runtime's node → provider assignment; `optimize` writes the model as ORT's basic optimizations leave it.
"""

from __future__ import annotations

import weakref
from pathlib import Path
from typing import Any

import numpy as np

from edgekd.errors import BadInput, first_line
from edgekd.runtime import agent

CPU = [{"name": "CPUExecutionProvider", "options": {}}]


def build_session(model: str | Path, *, threads: int = 1, providers: list[dict] | None = None,
                  graph_optimization: str = "all", assignment: bool = False) -> tuple[Any, dict]:
    """(session, what runs it) through the first of `providers` (a profile's entries; the CPU provider when
    None) that can run here. Raises the agent's AgentError, whose `kind` says what went wrong."""
    import onnxruntime as ort

    cfg = {**agent.DEFAULTS, "intra_op_threads": threads, "graph_optimization": graph_optimization,
           "providers": providers or CPU}
    return agent.open_session(ort, str(model), cfg, assignment=assignment)


def ort_session(model: str | Path, *, threads: int = 1, providers: list[dict] | None = None,
                graph_optimization: str = "all"):
    """A session for checking answers (not for timing); a model ONNX Runtime cannot load is BadInput.
    Returns the session; `session_report(session)` says what ran."""
    try:
        session, report = build_session(model, threads=threads, providers=providers,
                                        graph_optimization=graph_optimization)
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


def fixed_batch(session) -> int | None:
    """The first input's batch size when the graph fixes it, else None."""
    shape = list(session.get_inputs()[0].shape)
    return shape[0] if shape and isinstance(shape[0], int) and shape[0] > 0 else None


def ort_run(session, inputs: np.ndarray, *, batch_size: int = 256) -> np.ndarray:
    """Run a session over `inputs` in batches; a shape mismatch is BadInput naming both shapes."""
    meta = session.get_inputs()[0]
    expected = list(meta.shape)
    fixed = fixed_batch(session)
    inner_ok = len(expected) == inputs.ndim and all(
        not isinstance(d, int) or d == inputs.shape[i] for i, d in enumerate(expected) if i > 0)
    if not inner_ok or (fixed and len(inputs) % fixed):
        raise BadInput(f"input shape {list(inputs.shape)} does not match the model's input "
                       f"'{meta.name}' {[d if isinstance(d, int) else str(d) for d in expected]}")
    # a fixed-batch model runs in chunks of its own batch
    return agent.run_chunked(np, session, meta.name, inputs, fixed or batch_size)


# ---------------------------------------------------------------- the real partition
def partition(model: str | Path, *, providers: list[dict], graph_optimization: str) -> dict[str, Any]:
    """Build a session through `providers` (a profile's, as bench does) and read ONNX Runtime's
    node -> provider assignment (session.record_ep_graph_assignment_info).

    `ran` is False (with `reason`) when the first provider is not available here: then only the static
    audit speaks. A session that fails to build is a failed partition with ONNX Runtime's reason; so are
    nodes the first provider left to another one."""
    wanted = providers[0]["name"]
    try:
        session, info = build_session(model, providers=providers, graph_optimization=graph_optimization,
                                      assignment=True)
    except agent.AgentError as e:
        if e.kind == "missing_plugin":
            return {"ran": False, "provider": wanted, "reason": str(e)}
        return {"ran": True, "provider": wanted, "built": False, "passed": False, "error": str(e),
                "summary": f"the session did not build: {e}"}
    if info["provider"] != wanted:
        return {"ran": False, "provider": wanted, "reason": info.get("warning", f"{wanted} did not run")}
    return partition_summary(wanted, agent.assignment_of(session), info)


def partition_summary(wanted: str, assigned: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """The partition record from an assignment (`agent.assignment_of`, here or in a target's runtime)."""
    total = sum(v["nodes"] for v in assigned.values()) or 1
    fell_back = {p: v["ops"] for p, v in assigned.items() if p != wanted}
    out = {"ran": True, "built": True, "provider": wanted, "device": info.get("device"),
           "ep_version": info.get("ep_version"), "precision": info.get("precision"),
           "nodes": {p: v["nodes"] for p, v in assigned.items()},
           "share": {p: v["nodes"] / total for p, v in assigned.items()},
           "ops": {p: v["ops"] for p, v in assigned.items()},
           "fell_back_ops": sorted({op for ops in fell_back.values() for op in ops}),
           "passed": not fell_back}
    out["summary"] = ", ".join(f"{p} {n} node{'s' if n != 1 else ''}" for p, n in out["nodes"].items()) + (
        f"; fell back: {', '.join(out['fell_back_ops'])}" if fell_back else "")
    return out


# ---------------------------------------------------------------- the optimized model
def optimize(source: str | bytes, out: Path) -> str:
    """Write the model after ORT's basic optimizations (as the mobile checker computes them) to `out`
    (big tensors to a side file `optimized.data` beside it, so a >2 GB model can be saved).
    Returns "" on success, else ONNX Runtime's reason (no kernel for an op, custom domain, invalid graph)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    so.optimized_model_filepath = str(out)
    so.log_severity_level = 3  # unused-initializer warnings are noise here
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", "optimized.data")
    try:
        ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # no kernel for an op, custom domain, invalid graph
        return first_line(e) or type(e).__name__
    return ""
