"""Latency and memory through the target profile's execution providers, against its budgets.

The timing itself happens in the bench agent (edgekd/runtime/agent.py), a separate
process that imports only onnxruntime and numpy, so peak RSS is the runtime's
own. A runner puts it on this host, under qemu, or on a device over ssh.
The stage adds what only the host can measure: the teacher through ONNX
Runtime and the PyTorch eager student under the same thread count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import artifacts, defaults
from edgekd.checks import Failure, budget_failures, budget_limits, check_budget
from edgekd.deploy.targets import TargetProfile, load_target
from edgekd.errors import BadInput, BudgetFailed, CheckFailed, GoldenFailed
from edgekd.provenance import host_cpu
from edgekd.run.bench import load_bench, write_bench
from edgekd.run.distill import load_distill
from edgekd.run.manifest import Manifest, amend, load_manifest


def pick_target(run_dir: Path, target: str | Path | None) -> TargetProfile:
    """The `--target` given, or the only exported target of the run."""
    if target is not None:
        return load_target(target)
    exported = sorted(p.parent.name for p in run_dir.glob(f"*/{artifacts.MANIFEST}"))
    if len(exported) == 1:
        # The profile the export used, which may have been a .toml path outside targets/.
        saved = (load_manifest(artifacts.manifest_path(run_dir, exported[0])).target_profile or {}).get("path")
        if saved and Path(saved).is_file():
            return load_target(saved)
    if not exported:
        raise BadInput(f"{run_dir}: nothing exported yet; run `edgekd export --target T` first")
    if len(exported) > 1:
        raise BadInput(f"{run_dir}: several targets exported ({', '.join(exported)}); pass --target")
    return load_target(exported[0])


def eager_latency_ms(model, input_shape: tuple[int, ...], *, threads: int,
                     min_runs: int = defaults.BENCH_MIN_RUNS, min_seconds: float = defaults.BENCH_MIN_SECONDS) -> dict:
    """PyTorch eager at batch 1 with `threads` intra-op threads, timed like the agent times ORT."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(max(1, threads))
    x = torch.randn(1, *input_shape)
    try:
        with torch.inference_mode():
            for _ in range(defaults.BENCH_WARMUP):
                model(x)
            times, t_end = [], time.perf_counter() + min_seconds
            while len(times) < min_runs or time.perf_counter() < t_end:
                t0 = time.perf_counter()
                model(x)
                times.append((time.perf_counter() - t0) * 1e3)
    finally:
        torch.set_num_threads(old)
    from edgekd.runtime.agent import _raw

    a = np.asarray(times)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": len(a), "raw": _raw(np, a)}


def _teacher_onnx(run_dir: Path, out_dir: Path, input_shape, opset: int) -> Path:
    """The run's teacher as ONNX, at the teacher's own input size: exported from teacher.pt when
    the run trained it, else read as distill.json records it (edgekd.models.foreign: file or architecture)."""
    from edgekd.deploy.export import export_onnx
    from edgekd.models.checkpoints import load_teacher
    from edgekd.models.foreign import View, recorded_teacher

    path = out_dir / "teacher.onnx"
    if path.exists():
        return path
    summary = load_distill(run_dir / "distill.json") if (run_dir / "distill.json").is_file() else None
    info = (summary.teacher if summary is not None else None) or {}
    view = info.get("view")
    if view:
        input_shape = (input_shape[0], *view["input_size"])
    if (run_dir / "teacher.pt").is_file() or summary is None or "kind" not in info:
        return export_onnx(load_teacher(run_dir)[0], path, input_shape=input_shape, opset=opset)
    v = View(tuple(view["input_size"]), tuple(view["mean"]), tuple(view["std"]))
    got = recorded_teacher(info, channels=input_shape[0], num_classes=summary.data.num_classes, view=v)
    return got if isinstance(got, Path) else export_onnx(got, path, input_shape=input_shape, opset=opset)


def _recommend(manifest: Manifest, fp32: dict, int8: dict | None) -> tuple[str, list[str]]:
    """int8 only when it is within its tolerances and smaller or faster here."""
    if int8 is None or not manifest.variants or "int8" not in manifest.variants:
        return "fp32", []
    v = manifest.variants["int8"]
    ok = v.parity.get("passed") and int8.get("golden", {}).get("passed", True)
    faster = int8["latency_ms"]["p50"] < fp32["latency_ms"]["p50"]
    smaller = v.bytes < manifest.model.bytes
    notes = [] if faster else [
        f"int8 is slower than fp32 on this host ({int8['latency_ms']['p50']:.4f} ms vs "
        f"{fp32['latency_ms']['p50']:.4f} ms p50 at batch 1, {int8.get('machine', '?')})"]
    return ("int8" if ok and (faster or smaller) else "fp32"), notes


def bench_run(*, target: str | Path | None = None, run: str | Path | None = None, runner: str = "local",
              compare: bool = True, min_seconds: float = defaults.BENCH_MIN_SECONDS,
              profile: bool = False) -> dict[str, Any]:
    """Time the exported model(s) of a run on `runner`; merge results and budgets into the manifest.
    `profile` adds ONNX Runtime's top operators by total time, per provider."""
    from edgekd.bench.runners import agent_config, get_runner

    run_dir = artifacts.resolve_run(run)
    prof = pick_target(run_dir, target)
    out_dir = run_dir / prof.name
    manifest = load_manifest(artifacts.manifest_path(run_dir, prof.name))
    runner_obj = get_runner(runner, prof)
    cfg = {**agent_config(prof, min_seconds=min_seconds), "profile": profile}
    fp32 = runner_obj.run(model=out_dir / "model.onnx", config=cfg, golden=out_dir / "golden.npz")
    int8 = None
    if manifest.variants and "int8" in manifest.variants:
        # int8 is held to top-1 agreement with the fp32 golden outputs, not to fp32's atol.
        int8 = runner_obj.run(model=out_dir / "model.int8.onnx", golden=out_dir / "golden.npz",
                              config={**agent_config(prof, int8=True, min_seconds=min_seconds), "atol": 1e9,
                                      "profile": profile})
    recommended, notes = _recommend(manifest, fp32, int8)
    if fp32.get("note"):
        notes.append(fp32["note"])
    chosen = int8 if recommended == "int8" else fp32
    chosen_file = manifest.variants["int8"] if recommended == "int8" and manifest.variants else manifest.model
    size_mb = chosen_file.bytes / 2**20
    limits = budget_limits(prof.budget, emulated=bool(chosen.get("emulated")))
    checks = check_budget(limits, latency_p90_ms=chosen["latency_ms"]["p90"], peak_memory_mb=chosen["peak_rss_mb"],
                          model_size_mb=size_mb)
    result = {"runner": runner, "target": prof.name, "fp32": fp32, "int8": int8, "recommended": recommended,
              "notes": notes + ([fp32["warning"]] if fp32.get("warning") else []),
              "budget": {"passed": all(c["passed"] for c in checks), "checks": checks}, "host": host_cpu()}
    if compare:
        result["comparison"] = _compare(run_dir, out_dir, prof, manifest, fp32, cfg)
    result = write_bench(out_dir / "bench.json", result).to_json()  # what the file holds, schema_version too
    _merge(run_dir, prof, manifest, result)
    _raise_failures(prof, runner, checks, fp32, int8)
    return result


def _raise_failures(prof: TargetProfile, runner: str, checks: list[dict], fp32: dict, int8: dict | None) -> None:
    """GoldenFailed when a model disagrees with its golden outputs, else BudgetFailed on a budget miss."""
    budget = budget_failures(checks)
    golden = [Failure("golden", f"{k} top1_agreement", r["golden"].get("top1_agreement"),
                      r["golden"].get("min_top1_agreement"), detail=f"({k}): {r['golden']}")
              for k, r in (("fp32", fp32), ("int8", int8)) if r and not r.get("golden", {}).get("passed", True)]
    if not budget and not golden:
        return
    lines = [f"budget {f.name}: {f.value:.4g} > {f.limit:g}" for f in budget] + [f"golden {f.detail}" for f in golden]
    error = GoldenFailed if golden else BudgetFailed
    raise error(f"bench {prof.name} on {runner}: " + "; ".join(lines), failures=budget + golden)


def _compare(run_dir: Path, out_dir: Path, prof: TargetProfile, manifest: Manifest, fp32: dict, cfg: dict) -> dict:
    """Teacher through ONNX Runtime and the eager PyTorch student, with the student's thread count."""
    from edgekd.bench.runners import LocalRunner
    from edgekd.models.checkpoints import load_student

    shape = tuple(manifest.model.inputs[0]["shape"][1:])
    threads = int(fp32["threads"])
    local_cfg = {**cfg, "intra_op_threads": threads, "batches": [1]}
    # in the target's runtime (its runtime environment where the profile names a package), as the student
    teacher = LocalRunner(target=prof).run(model=_teacher_onnx(run_dir, out_dir, shape, prof.opset), config=local_cfg)
    eager = eager_latency_ms(load_student(run_dir)[0], shape, threads=threads)
    student_ms, teacher_ms = fp32["latency_ms"]["p50"], teacher["latency_ms"]["p50"]
    return {"threads": threads,
            "teacher_onnx_ms": teacher["latency_ms"], "student_onnx_ms": fp32["latency_ms"],
            "student_eager_ms": eager, "teacher_onnx_raw": teacher.get("latency_raw"),
            "teacher_over_student": teacher_ms / student_ms,
            "onnx_over_eager": student_ms / eager["p50"],
            "accuracy_points_lost": 100 * (manifest.accuracy.teacher - manifest.accuracy.student_onnx),
            "note": "same host and thread count; on the qemu/ssh runners the student figure is from there"
                    if fp32.get("runner", "local") != "local" else "same host and thread count"}


def _merge(run_dir: Path, prof: TargetProfile, manifest: Manifest, result: dict) -> None:
    """bench's sections of the manifest; `amend` recomputes `deployable` (it stays false after a failed
    export check, and judges the recommended model's budget and golden check)."""
    fp32 = result["fp32"]
    bench = {
        "runner": result["runner"], "provider": fp32["provider"], "provider_requested": fp32.get("provider_requested"),
        "threads": fp32["threads"], "threads_requested": fp32.get("threads_requested"),
        "emulated": bool(fp32.get("emulated", False)), "machine": fp32.get("machine"),
        "latency_ms": fp32["latency_ms"], "init_ms": fp32["init_ms"], "first_run_ms": fp32["first_run_ms"],
        "peak_rss_mb": fp32["peak_rss_mb"], "throughput": fp32.get("throughput"), "golden": fp32.get("golden"),
        "execution": fp32.get("execution"), "precision": fp32.get("precision"), "fallback": fp32.get("fallback"),
        "fallback_reasons": fp32.get("fallback_reasons", []),
    }
    sections: dict[str, Any] = {}
    if result["int8"] is not None and manifest.variants:
        int8 = {**manifest.variants["int8"].to_json(), "latency_ms": result["int8"]["latency_ms"],
                "golden": result["int8"].get("golden")}
        sections["variants"] = {**{k: v.to_json() for k, v in manifest.variants.items()}, "int8": int8}
    if "comparison" in result:
        bench["comparison"] = result["comparison"]
    amend(artifacts.manifest_path(run_dir, prof.name), bench=bench, recommended=result["recommended"],
          budget=result["budget"], notes=result["notes"], **sections)


# ---------------------------------------------------------------- several targets, one table
def side_by_side(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (target, variant): provider, precision, latency, throughput, peak RSS, parity."""
    rows = []
    for r in results:
        for variant in ("fp32", "int8"):
            x = r.get(variant)
            if not x:
                continue
            golden = x.get("golden") or {}
            tp = x.get("throughput") or {}
            rows.append({"target": r["target"], "variant": variant, "provider": x["provider"],
                         "device": (x.get("execution") or {}).get("device"), "fallback": bool(x.get("fallback")),
                         "runtime": _runtime_label(x),
                         "precision": "int8" if variant == "int8" else x.get("precision", "fp32"),
                         "latency_ms": {k: x["latency_ms"][k] for k in ("p50", "p90", "p99")},
                         "throughput": max(tp.values()) if tp else None,
                         "throughput_batch": max(tp, key=tp.get) if tp else None,
                         "peak_rss_mb": x["peak_rss_mb"], "parity_passed": golden.get("passed"),
                         "top1_agreement": golden.get("top1_agreement"), "max_abs_diff": golden.get("max_abs_diff"),
                         "budget_passed": r["budget"]["passed"]})
    return rows


def _runtime_label(x: dict[str, Any]) -> str:
    """Which onnxruntime ran: the profile's package (its runtime environment), or "host VERSION"."""
    rt = (x.get("execution") or {}).get("runtime") or {}
    return rt.get("package") or f"{rt.get('mechanism', 'host')} {x.get('onnxruntime_version', '')}".strip()


def best_row(rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The fastest (p50) row whose parity passed and whose provider really ran (no fallback)."""
    ok = [r for r in rows if r["parity_passed"] is not False and not r["fallback"]]
    return min(ok, key=lambda r: r["latency_ms"]["p50"]) if ok else None


def bench_targets(*, targets: list[str | Path], run: str | Path | None = None, runner: str = "local",
                  compare: bool = True, min_seconds: float = defaults.BENCH_MIN_SECONDS,
                  profile: bool = False) -> dict[str, Any]:
    """bench_run for each target (each writes its own bench.json and manifest), then one table
    across them; every manifest records the rows and the fastest passing target and variant."""
    run_dir = artifacts.resolve_run(run)
    results, failures, records = [], [], []
    for t in targets:
        try:
            results.append(bench_run(target=t, run=run_dir, runner=runner, compare=compare,
                                     min_seconds=min_seconds, profile=profile))
        except CheckFailed as e:  # keep going: the table shows every target, then we fail
            failures.append(str(e))
            records += [f.to_dict() for f in e.failures]
            results.append(load_bench(run_dir / load_target(t).name / "bench.json").to_json())
    rows = side_by_side(results)
    best = best_row(rows)
    across = {"targets": [r["target"] for r in results], "rows": rows,
              "recommended": None if best is None else {"target": best["target"], "variant": best["variant"]}}
    for r in results:
        amend(artifacts.manifest_path(run_dir, r["target"]), across_targets=across)
    # A failed target does not stop the others; the caller shows the table, then fails on these.
    return {"results": results, **across, "failures": failures, "failure_records": records}


# ---------------------------------------------------------------- any ONNX model
def parse_shapes(specs: list[str] | None) -> dict[str, list[int]]:
    """`NAME=1x3x48x192` (repeatable) -> {NAME: [1, 3, 48, 192]}."""
    out: dict[str, list[int]] = {}
    for spec in specs or []:
        name, eq, dims = spec.partition("=")
        parts = dims.lower().split("x")
        if not eq or not name or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise BadInput(f"--shape {spec!r}: valid form NAME=D1xD2x... with integers >= 1, e.g. input=1x3x48x192")
        out[name] = [int(p) for p in parts]
    return out


def bench_model(*, model: str | Path, targets: list[str | Path] | None = None,
                shapes: dict[str, list[int]] | None = None,
                inputs: str | Path | None = None, runner: str = "local",
                min_seconds: float = defaults.BENCH_MIN_SECONDS, profile: bool = False) -> dict[str, Any]:
    """Time any ONNX model through each target's providers, as onnxruntime_perf_test does:
    inputs from the graph (random data of each input's type, or `inputs` .npz), `shapes` for
    symbolic dimensions; the same latency, memory and budget report as a run's bench.
    Nothing is written; the caller prints or saves the result."""
    from edgekd.bench.runners import AgentFailed, agent_config, get_runner

    model = Path(model)
    if not model.is_file():
        raise BadInput(f"{model}: no such model file")
    results, failures = [], []
    for t in targets or [defaults.TARGET]:
        prof = load_target(t)
        runner_obj = get_runner(runner, prof)
        cfg = {**agent_config(prof, min_seconds=min_seconds), "shapes": shapes or {}, "profile": profile}
        try:
            x = runner_obj.run(model=model, config=cfg, inputs=Path(inputs) if inputs else None)
        except AgentFailed as e:
            raise BadInput(f"{model} on {prof.name}: {str(e).split(': ', 1)[-1]}") from None
        checks = check_budget(budget_limits(prof.budget, emulated=bool(x.get("emulated"))),
                              latency_p90_ms=x["latency_ms"]["p90"], peak_memory_mb=x["peak_rss_mb"],
                              model_size_mb=model.stat().st_size / 2**20)
        r = {"runner": runner, "target": prof.name, "fp32": x, "int8": None,
             "budget": {"passed": all(c["passed"] for c in checks), "checks": checks},
             "notes": [x["warning"]] if x.get("warning") else []}
        results.append(r)
        failures += [(prof.name, f) for f in budget_failures(checks)]
    # The caller shows the table, then fails (exit 1) on these.
    return {"model": str(model), "results": results, "rows": side_by_side(results),
            "failures": [f"bench {model}: {t} budget {f.name}: {f.value:.4g} > {f.limit:g}" for t, f in failures],
            "failure_records": [f.to_dict() for _, f in failures]}


def bench_any(*, model: str | Path | None = None, targets: list[str | Path] | None = None,
              run: str | Path | None = None, runner: str = "local", compare: bool = True,
              min_seconds: float = defaults.BENCH_MIN_SECONDS, shapes: list[str] | None = None,
              inputs: str | Path | None = None, profile: bool = False) -> dict[str, Any]:
    """`edgekd bench`: any ONNX `model`, or the run's export for one target, or several targets
    side by side. The result's `mode` says which; `failures` (checks that failed after every
    measurement was made) are for the caller to raise once the table is shown."""
    targets = list(targets or [])
    if model is not None:
        if run is not None:
            raise BadInput("bench MODEL.onnx times that file; --run is for a run's own export (give one, not both)")
        out = bench_model(model=model, targets=targets, shapes=parse_shapes(shapes), inputs=inputs,
                          runner=runner, min_seconds=min_seconds, profile=profile)
        return {"mode": "model", **out, "notes": [n for r in out["results"] for n in r["notes"]]}
    if shapes or inputs is not None:
        raise BadInput("--shape and --inputs go with bench MODEL.onnx; a run's export is fed its golden inputs")
    if len(targets) > 1:
        out = bench_targets(targets=targets, run=run, runner=runner, compare=compare, min_seconds=min_seconds,
                            profile=profile)
        return {"mode": "targets", **out, "notes": [n for r in out["results"] for n in r.get("notes", [])]}
    result = bench_run(target=targets[0] if targets else None, run=run, runner=runner, compare=compare,
                       min_seconds=min_seconds, profile=profile)
    return {"mode": "run", **result}
