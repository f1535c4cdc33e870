"""Latency and memory through the target profile's execution providers, against its budgets.

The timing itself happens in the bench agent (edgekd/agent.py), a separate
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
from edgekd.deploy.targets import TargetProfile, load_target
from edgekd.errors import BadInput, CheckFailed


def pick_target(run_dir: Path, target: str | Path | None) -> TargetProfile:
    """The `--target` given, or the only exported target of the run."""
    if target is not None:
        return load_target(target)
    exported = sorted(p.parent.name for p in run_dir.glob(f"*/{artifacts.MANIFEST}"))
    if len(exported) == 1:
        # The profile the export used, which may have been a .toml path outside targets/.
        saved = artifacts.load_manifest(run_dir, exported[0]).get("target_profile", {}).get("path")
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
    a = np.asarray(times)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": len(a)}


def _teacher_onnx(run_dir: Path, out_dir: Path, input_shape, opset: int) -> Path:
    """The run's teacher as ONNX, at the teacher's own input size: exported from teacher.pt when
    the run trained it, else read as distill.json records it (edgekd.teachers: file or architecture)."""
    from edgekd.checkpoints import load_teacher
    from edgekd.deploy.export import export_onnx
    from edgekd.teachers import View, teacher_onnx

    path = out_dir / "teacher.onnx"
    if path.exists():
        return path
    summary = artifacts.read_json(run_dir / "distill.json") if (run_dir / "distill.json").is_file() else {}
    info, view = summary.get("teacher", {}), summary.get("teacher", {}).get("view")
    if view:
        input_shape = (input_shape[0], *view["input_size"])
    if (run_dir / "teacher.pt").is_file() or "kind" not in info:
        return export_onnx(load_teacher(run_dir)[0], path, input_shape=input_shape, opset=opset)
    v = View(tuple(view["input_size"]), tuple(view["mean"]), tuple(view["std"]))
    return teacher_onnx(info, path, channels=input_shape[0], num_classes=summary["data"]["num_classes"], view=v,
                        opset=opset)


def budget_checks(target: TargetProfile, *, p90_ms: float, peak_rss_mb: float, size_mb: float,
                  emulated: bool = False) -> list[dict]:
    """One row per budget. Under emulation, time and memory are not the target's, so those
    rows are recorded as skipped (they neither pass nor fail the run)."""
    if target.budget is None:
        return []
    b = target.budget
    rows = [("latency_p90_ms", p90_ms, b.latency_p90_ms, emulated), ("peak_memory_mb", peak_rss_mb, b.peak_memory_mb, emulated),
            ("model_size_mb", size_mb, b.model_size_mb, False)]
    return [{"name": n, "value": v, "limit": lim, "passed": True, "skipped": "emulated"} if skip else
            {"name": n, "value": v, "limit": lim, "passed": bool(v <= lim)}
            for n, v, lim, skip in rows if lim is not None]


def _recommend(manifest: dict, fp32: dict, int8: dict | None) -> tuple[str, list[str]]:
    """int8 only when it is within its tolerances and smaller or faster here."""
    if int8 is None:
        return "fp32", []
    v = manifest["variants"]["int8"]
    ok = v["parity"]["passed"] and int8.get("golden", {}).get("passed", True)
    faster = int8["latency_ms"]["p50"] < fp32["latency_ms"]["p50"]
    smaller = v["bytes"] < manifest["model"]["bytes"]
    notes = [] if faster else [
        f"int8 is slower than fp32 on this host ({int8['latency_ms']['p50']:.4f} ms vs "
        f"{fp32['latency_ms']['p50']:.4f} ms p50 at batch 1, {int8.get('machine', '?')})"]
    return ("int8" if ok and (faster or smaller) else "fp32"), notes


def bench_run(*, target: str | Path | None = None, run: str | Path | None = None, runner: str = "local",
              compare: bool = True, min_seconds: float = defaults.BENCH_MIN_SECONDS) -> dict[str, Any]:
    """Time the exported model(s) of a run on `runner`; merge results and budgets into the manifest."""
    from edgekd.bench.runners import agent_config, get_runner

    run_dir = artifacts.resolve_run(run)
    prof = pick_target(run_dir, target)
    out_dir = run_dir / prof.name
    manifest = artifacts.load_manifest(run_dir, prof.name)
    runner_obj = get_runner(runner)
    cfg = agent_config(prof, min_seconds=min_seconds)
    fp32 = runner_obj.run(model=out_dir / "model.onnx", config=cfg, golden=out_dir / "golden.npz")
    int8 = None
    if "int8" in manifest.get("variants", {}):
        # int8 is held to top-1 agreement with the fp32 golden outputs, not to fp32's atol.
        int8 = runner_obj.run(model=out_dir / "model.int8.onnx", golden=out_dir / "golden.npz",
                              config={**agent_config(prof, int8=True, min_seconds=min_seconds), "atol": 1e9})
    recommended, notes = _recommend(manifest, fp32, int8)
    if fp32.get("note"):
        notes.append(fp32["note"])
    chosen = int8 if recommended == "int8" else fp32
    size_mb = (manifest["variants"]["int8"] if recommended == "int8" else manifest["model"])["bytes"] / 2**20
    checks = budget_checks(prof, p90_ms=chosen["latency_ms"]["p90"], peak_rss_mb=chosen["peak_rss_mb"],
                           size_mb=size_mb, emulated=bool(chosen.get("emulated")))
    result = {"runner": runner, "target": prof.name, "fp32": fp32, "int8": int8, "recommended": recommended,
              "notes": notes + ([fp32["warning"]] if fp32.get("warning") else []),
              "budget": {"passed": all(c["passed"] for c in checks), "checks": checks}}
    if compare:
        result["comparison"] = _compare(run_dir, out_dir, prof, manifest, fp32, cfg)
    artifacts.write_json(out_dir / "bench.json", result)
    _merge(run_dir, prof, manifest, result)
    failures = [f"budget {c['name']}: {c['value']:.4g} > {c['limit']:g}" for c in checks if not c["passed"]]
    failures += [f"golden ({k}): {r['golden']}" for k, r in (("fp32", fp32), ("int8", int8))
                 if r and not r.get("golden", {}).get("passed", True)]
    if failures:
        raise CheckFailed(f"bench {prof.name} on {runner}: " + "; ".join(failures))
    return result


def _compare(run_dir: Path, out_dir: Path, prof: TargetProfile, manifest: dict, fp32: dict, cfg: dict) -> dict:
    """Teacher through ONNX Runtime and the eager PyTorch student, with the student's thread count."""
    from edgekd.bench.runners import LocalRunner
    from edgekd.checkpoints import load_student

    shape = tuple(manifest["model"]["inputs"][0]["shape"][1:])
    threads = int(fp32["threads"])
    local_cfg = {**cfg, "intra_op_threads": threads, "batches": [1]}
    teacher = LocalRunner().run(model=_teacher_onnx(run_dir, out_dir, shape, prof.opset), config=local_cfg)
    eager = eager_latency_ms(load_student(run_dir)[0], shape, threads=threads)
    student_ms, teacher_ms = fp32["latency_ms"]["p50"], teacher["latency_ms"]["p50"]
    return {"threads": threads,
            "teacher_onnx_ms": teacher["latency_ms"], "student_onnx_ms": fp32["latency_ms"],
            "student_eager_ms": eager,
            "teacher_over_student": teacher_ms / student_ms,
            "onnx_over_eager": student_ms / eager["p50"],
            "accuracy_points_lost": 100 * (manifest["accuracy"]["teacher"] - manifest["accuracy"]["student_onnx"]),
            "note": "same host and thread count; on the qemu/ssh runners the student figure is from there"
                    if fp32.get("runner", "local") != "local" else "same host and thread count"}


def _merge(run_dir: Path, prof: TargetProfile, manifest: dict, result: dict) -> None:
    fp32 = result["fp32"]
    manifest["bench"] = {
        "runner": result["runner"], "provider": fp32["provider"], "provider_requested": fp32.get("provider_requested"),
        "threads": fp32["threads"], "threads_requested": fp32.get("threads_requested"),
        "emulated": bool(fp32.get("emulated", False)), "machine": fp32.get("machine"),
        "latency_ms": fp32["latency_ms"], "init_ms": fp32["init_ms"], "first_run_ms": fp32["first_run_ms"],
        "peak_rss_mb": fp32["peak_rss_mb"], "throughput": fp32.get("throughput"), "golden": fp32.get("golden"),
    }
    if result["int8"] is not None:
        manifest["variants"]["int8"]["latency_ms"] = result["int8"]["latency_ms"]
        manifest["variants"]["int8"]["golden"] = result["int8"].get("golden")
    if "comparison" in result:
        manifest["bench"]["comparison"] = result["comparison"]
    manifest["recommended"] = result["recommended"]
    manifest["budget"] = result["budget"]
    manifest["notes"] = result["notes"]
    # Deployability is about the model we recommend; a failed int8 variant is reported, not fatal.
    chosen = result["int8"] if result["recommended"] == "int8" else result["fp32"]
    golden_ok = chosen.get("golden", {}).get("passed", True)
    manifest["deployable"] = bool(manifest.get("checks", {}).get("passed", True) and result["budget"]["passed"] and golden_ok)
    artifacts.write_json(artifacts.manifest_path(run_dir, prof.name), manifest)
