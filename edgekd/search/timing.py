"""Timing a candidate: export it with untrained weights and time it through the target's runner,
from a helper process that has not loaded torch.

Why a helper process: Linux carries ru_maxrss across fork+exec, so a bench agent started
straight from this PyTorch process would report our RSS as its own peak. The helper is this
module run as `python -m edgekd.search.timing`: it reads {runner, model, config} as JSON on
stdin and writes the runner's result (or {"error": ...}) as one JSON line on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.errors import BadInput

if TYPE_CHECKING:
    from edgekd.search.space import Candidate

HELPER_TIMEOUT_S = 900


def main() -> None:
    """The helper: one runner call, its result as JSON; edgekd's own errors as {"error": text}."""
    from edgekd.bench.runners import get_runner
    from edgekd.deploy.targets import load_target
    from edgekd.errors import EdgekdError

    a = json.loads(sys.stdin.read())
    try:
        # The profile travels by path, so a [runtime] package times the candidate in the device's own runtime.
        target = load_target(a["target"]) if a.get("target") else None
        r = get_runner(a["runner"], target).run(model=Path(a["model"]), config=a["config"])
    except EdgekdError as e:
        r = {"error": str(e)}
    print(json.dumps(r))


def run_isolated(runner: str, model: Path, config: dict, *, target: str | None = None) -> dict[str, Any]:
    """`get_runner(runner, target).run(model=..., config=...)` from a helper process that has not loaded torch,
    through the one subprocess-with-JSON helper (`edgekd.bench.proc.run_json`)."""
    import os

    from edgekd.bench.proc import last_line, run_json

    root = str(Path(__file__).resolve().parents[2])  # the folder holding this edgekd, checkout or install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    reply = run_json([sys.executable, "-m", "edgekd.search.timing"], timeout=HELPER_TIMEOUT_S, env=env,
                     what=f"timing {model.name} on runner {runner}",
                     input=json.dumps({"runner": runner, "model": str(model), "config": config, "target": target}))
    if reply.obj is None:
        raise BadInput(f"timing {model.name} on runner {runner} failed (exit {reply.rc}): {last_line(reply.stderr)}")
    if "error" in reply.obj:
        raise BadInput(reply.obj["error"])
    return reply.obj


def time_candidate(c: Candidate, bundle, profile, runner: str, folder: Path, *, min_seconds: float) -> dict[str, Any]:
    """Export (untrained weights) at the profile's opset and batch, time through the runner."""
    from edgekd.bench.runners import agent_config
    from edgekd.deploy.export import default_batch, export_onnx
    from edgekd.search.space import build

    path = export_onnx(build(c, bundle, profile.ops_allow), folder / f"candidate{c.id}.onnx",
                       input_shape=bundle.input_shape, opset=profile.opset, batch=default_batch(profile))
    r = run_isolated(runner, path, agent_config(profile, min_seconds=min_seconds, batches=()),
                     target=str(profile.path) if profile.path else profile.name)
    path.unlink(missing_ok=True)
    return {"latency_p90_ms": r["latency_ms"]["p90"], "latency_p50_ms": r["latency_ms"]["p50"],
            "peak_rss_mb": r["peak_rss_mb"], "model_bytes": r["model_bytes"], "provider": r["provider"],
            "threads": r["threads"], "emulated": bool(r.get("emulated", False))}


if __name__ == "__main__":
    main()
