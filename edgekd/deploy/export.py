"""torch → ONNX for one target: export, full checker, op audit, parity, golden vectors, manifest.

`export_run` is the stage. Every check runs and is recorded before anything is
raised, so a failed run still leaves a complete manifest saying `deployable: false`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgekd import __version__, artifacts, defaults
from edgekd.checks import Failure
from edgekd.deploy.targets import TargetProfile, load_target
from edgekd.errors import AuditFailed, BadInput, ParityFailed
from edgekd.run.distill import DistillSummary, load_distill
from edgekd.run.manifest import amend

MOBILE_PROVIDERS = {"NnapiExecutionProvider", "CoreMLExecutionProvider", "QNNExecutionProvider",
                    "XnnpackExecutionProvider"}


def export_onnx(model, path: Path, *, input_shape: tuple[int, ...], opset: int, batch: int | None = None,
                exporter: str = defaults.EXPORTER) -> Path:
    """Write `model` to `path` (atomically), then run onnx's full check. The batch axis is
    dynamic unless `batch` fixes it (NNAPI takes only nodes with fixed shapes)."""
    import onnx

    from edgekd.models import write_onnx

    with artifacts.atomic_path(path) as tmp:
        write_onnx(model, str(tmp), input_shape=input_shape, opset=opset, batch=batch, exporter=exporter)
        onnx.checker.check_model(str(tmp), full_check=True)
    return path


def io_spec(path: Path) -> tuple[list[dict], list[dict]]:
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph

    def spec(v) -> dict:
        dims = [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims,
                "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}

    inits = {i.name for i in g.initializer}
    return [spec(v) for v in g.input if v.name not in inits], [spec(v) for v in g.output]


def _test_arrays(run_dir: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """Reload the run's data (same split) and return the bundle with the test split as arrays."""
    from edgekd.data import load_data, to_arrays
    from edgekd.run.config import load_config

    cfg = load_config(run_dir / "config.json")  # BadInput names the file and any missing field
    size, resize = cfg.input_size, None
    if cfg.data.startswith("imagefolder:"):
        # the H×W the run trained at, whatever the default is now (it follows the images' own size),
        # made by the run's resize policy; the --unlabeled pool is not needed (test split only)
        shape = cfg.data_info.get("input_shape")
        size = size or (shape[1:] if shape else None)
        resize = cfg.resize
    bundle = load_data(cfg.data, data_dir=cfg.data_dir, image_size=size, resize=resize)
    x, y = to_arrays(bundle.test)
    return bundle, x, y


def torch_outputs(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + 256])).numpy() for i in range(0, len(x), 256)])


def _parity(model_path: Path, ref: np.ndarray, x: np.ndarray, y: np.ndarray, *, atol: float, rtol: float,
            min_top1: float, name: str):
    from edgekd.deploy.parity import compare
    from edgekd.runtime.session import ort_run, ort_session

    out = ort_run(ort_session(model_path), x)
    report = compare(ref, out, atol=atol, rtol=rtol, min_top1_agreement=min_top1, name=name)
    return report, float((out.argmax(1) == y).mean())


def provider_parity(model_path: Path, ref: np.ndarray, x: np.ndarray, target: TargetProfile, *,
                    int8: bool = False) -> dict[str, Any]:
    """Parity through the provider the target runs the model on, when it can run here.

    The session is built as bench builds it (plugin EPs, device, options, precision). The
    tolerances are those of the precision the provider computes in ([parity] for fp32,
    [parity.bf16] ...); int8 variants keep the top-1-only rule. A provider that is not here
    gives {"ran": false, "reason": ...}: the CPU parity then stands alone."""
    from edgekd.deploy.parity import compare
    from edgekd.runtime.session import ort_run, ort_session, session_report

    first = target.providers[0]
    if target.package:  # the device's own onnxruntime build, in its runtime environment (any provider)
        from edgekd.deploy.runtimes import parity_in_runtime

        return parity_in_runtime(model_path, ref, x, target, int8=int8)
    if first.name == "CPUExecutionProvider":
        return {"ran": False, "provider": first.name, "reason": "the target's provider is the CPU provider"}
    try:
        session = ort_session(model_path, providers=[p.to_dict() for p in target.providers],
                              graph_optimization=target.graph_optimization)
    except BadInput as e:
        return {"ran": False, "provider": first.name, "reason": str(e)}
    info = session_report(session)
    if info.get("provider") != first.name:
        return {"ran": False, "provider": first.name, "reason": info.get("warning", f"{first.name} did not run")}
    tol = target.parity.for_precision(info.get("precision", "fp32"))
    atol, rtol = (float("inf"), 0.0) if int8 else (tol.atol, tol.rtol)
    int8_min = target.parity.int8_min_top1_agreement
    min_top1 = (0.99 if int8_min is None else int8_min) if int8 else tol.min_top1_agreement
    report = compare(ref, ort_run(session, x), atol=atol, rtol=rtol, min_top1_agreement=min_top1,
                     name=f"{first.name} {'int8 ' if int8 else ''}logits")
    return {"ran": True, **{k: info.get(k) for k in ("provider", "device", "vendor", "ep_version", "precision",
                                                     "plugin", "plugin_version")},
            "options": dict(first.options), **report.to_dict()}


def _through_failures(through: dict[str, Any]) -> list[Failure]:
    """`provider_parity`'s failures as records, saying which provider they ran through."""
    return [Failure(**{**d, "detail": f"through {through['provider']}: {d['detail']}"})
            for d in through.get("failure_records", [])]


def _int8_variant(out_dir: Path, model_path: Path, bundle, ref, x, y,
                  target: TargetProfile) -> tuple[dict, list[Failure]]:
    from edgekd.data import to_arrays
    from edgekd.deploy.audit import audit_model
    from edgekd.deploy.quantize import quantize_int8, read_quant_info

    calib, _ = to_arrays(bundle.train, limit=256)  # calibrated on training samples, never test
    q_path = quantize_int8(model=model_path, out=out_dir / "model.int8.onnx", calibration=calib,
                           per_channel=True, input_name=defaults.INPUT_NAME)
    p = target.parity
    report, acc = _parity(q_path, ref, x, y, atol=float("inf"), rtol=0.0,
                          min_top1=0.99 if p.int8_min_top1_agreement is None else p.int8_min_top1_agreement,
                          name="int8 logits")
    audit = audit_model(q_path, target)
    through = provider_parity(q_path, ref, x, target, int8=True)
    entry = {**artifacts.file_entry(q_path, out_dir), "parity": report.to_dict(), "accuracy": acc,
             "parity_provider": through,
             "quantization": read_quant_info(q_path),
             "ops": {"used": audit.used, "unsupported": [u.to_dict() for u in audit.unsupported],
                     "coverage": audit.coverage}}
    return entry, report.failures + audit.failures() + _through_failures(through)


def _mobile_files(out_dir: Path, model_path: Path, target: TargetProfile) -> dict[str, Any]:
    from edgekd.deploy.mobile import convert_to_ort, optimization_style_for

    res = convert_to_ort(model=model_path, out_dir=out_dir,
                         optimization_style=optimization_style_for([p.name for p in target.providers]))
    return {"ort": artifacts.file_entry(Path(res["ort"]), out_dir),
            "required_operators": artifacts.file_entry(Path(res["required_operators"]), out_dir)}


def is_mobile(target: TargetProfile) -> bool:
    return target.providers[0].name in MOBILE_PROVIDERS - {"XnnpackExecutionProvider"}


def default_batch(target: TargetProfile) -> int | None:
    """A fixed batch of 1 for providers that take only fixed shapes (NNAPI); else dynamic."""
    from edgekd.deploy.audit import FIXED_SHAPE_PROVIDERS

    return 1 if target.providers[0].name in FIXED_SHAPE_PROVIDERS else None


def export_run(*, target: str | Path | TargetProfile = defaults.TARGET, run: str | Path | None = None,
               quantize: str | None = None, batch: int | None = None,
               exporter: str = defaults.EXPORTER) -> dict[str, Any]:
    """Export the run's student for `target`; raise CheckFailed (after writing the manifest) on any failed check.
    `batch` fixes the batch axis (0 = dynamic; None = the target's default, see `default_batch`).
    `exporter`: "torchscript" (default) or "dynamo" (torch.export)."""
    from edgekd.deploy.audit import audit_model, real_partition
    from edgekd.models import count_params
    from edgekd.models.checkpoints import load_student

    target = _check_options(load_target(target), quantize=quantize, exporter=exporter)
    run_dir = artifacts.resolve_run(run)
    distilled = _distilled(run_dir)  # read before anything is written, so a bad run writes nothing
    student, state = load_student(run_dir)
    bundle, x, y = _test_arrays(run_dir)
    if tuple(x.shape[1:]) != tuple(bundle.input_shape) or state["in_channels"] != bundle.input_shape[0]:
        raise BadInput(f"{run_dir / 'student.pt'}: student takes {state['in_channels']} channels, "
                       f"data gives {list(x.shape[1:])}")
    if batch is not None and batch < 0:
        raise BadInput(f"--batch {batch}: must be >= 1, or 0 for a dynamic batch axis")
    batch = default_batch(target) if batch is None else (batch or None)
    out_dir = run_dir / target.name
    model_path = export_onnx(student, out_dir / "model.onnx", input_shape=bundle.input_shape, opset=target.opset,
                             batch=batch, exporter=exporter)
    audit = audit_model(model_path, target)
    ref = torch_outputs(student, x)
    p = target.parity
    parity, onnx_acc = _parity(model_path, ref, x, y, atol=p.atol, rtol=p.rtol,
                               min_top1=p.min_top1_agreement, name="logits")
    through = provider_parity(model_path, ref, x, target)
    audit.partition = real_partition(model_path, target)
    failures = audit.failures() + parity.failures + _through_failures(through)
    int8_failures: list[Failure] = []
    n_golden = min(defaults.GOLDEN_SAMPLES, len(x))
    if batch:
        n_golden -= n_golden % batch  # a fixed-batch model reads whole batches
    golden = artifacts.save_npz(out_dir / "golden.npz", inputs=x[:n_golden].astype(np.float32),
                                outputs=ref[:n_golden].astype(np.float32), labels=y[:n_golden])
    manifest = _manifest(run_dir, out_dir, target, model_path, golden, student, bundle, audit, parity,
                         onnx_acc, count_params(student), y, ref, distilled)
    manifest["parity_provider"] = through
    manifest["runtime"] = _runtime_record(target)
    manifest["model"]["exporter"] = exporter
    if quantize == "int8":
        manifest["variants"] = {}
        manifest["variants"]["int8"], q_fail = _int8_variant(out_dir, model_path, bundle, ref, x, y, target)
        int8_failures = q_fail
    if is_mobile(target):
        manifest["mobile"] = _mobile_files(out_dir, model_path, target)
    # An int8 variant that misses its tolerances is a failed check (exit 1), but the fp32
    # model is still deployable and stays the recommendation.
    lines = [f"{f.kind}: {f}" for f in failures] + [f"int8 {f.kind}: {f}" for f in int8_failures]
    manifest["checks"] = {"passed": not failures, "failures": lines}
    # amend recomputes `deployable` from the checks, parity and audit it holds
    manifest = amend(artifacts.manifest_path(run_dir, target.name), new=True, **manifest).to_json()
    if lines:
        error = AuditFailed if any(f.kind == "audit" for f in failures + int8_failures) else ParityFailed
        raise error(f"export {target.name}: " + "; ".join(lines), failures=failures + int8_failures)
    return manifest


def _runtime_record(target: TargetProfile) -> dict[str, Any]:
    """Which onnxruntime the target's checks ran on: its package's runtime environment, or the host's."""
    from edgekd.deploy.runtimes import runtime_record

    return runtime_record(target)


def _check_options(target: TargetProfile, *, quantize: str | None, exporter: str) -> TargetProfile:
    if quantize not in (None, "int8"):
        raise BadInput(f"--quantize '{quantize}': valid: int8")
    if exporter not in defaults.EXPORTERS:
        raise BadInput(f"--exporter '{exporter}': valid: {', '.join(defaults.EXPORTERS)}")
    if quantize == "int8" and "int8" not in target.precisions:
        raise BadInput(f"--quantize int8: target {target.name} allows only {', '.join(target.precisions)} "
                       f"(precision.allowed in {target.path})")
    if target.package:  # before anything is written: a missing runtime environment is bad input
        from edgekd.deploy.runtimes import require

        require(target)
    return target


def _distilled(run_dir: Path) -> DistillSummary:
    """distill.json, checked against the run-folder contract (BadInput names the file and the field)."""
    summary = load_distill(run_dir / "distill.json")
    summary.chosen(run_dir / "distill.json")  # the kept seed has its row
    return summary


def _manifest(run_dir, out_dir, target, model_path, golden, student, bundle, audit, parity, onnx_acc,
              params, y, ref, distilled) -> dict[str, Any]:
    inputs, outputs = io_spec(model_path)
    chosen = distilled.chosen()
    return {
        "edgekd_version": __version__,
        "target": target.name,
        "target_profile": target.to_dict(),
        "model": {**artifacts.file_entry(model_path, out_dir), "opset": target.opset, "params": params,
                  "inputs": inputs, "outputs": outputs,
                  # H, W, resize policy (and pad fill), scale, mean/std: enough to write a device-side preprocessor
                  "preprocessing": bundle.preprocessing(),
                  "labels": bundle.labels},
        "golden": {**artifacts.file_entry(golden, out_dir), "n": int(np.load(golden)["inputs"].shape[0])},
        "ops": {"used": audit.used, "unsupported": [u.to_dict() for u in audit.unsupported],
                "coverage": audit.coverage, "graph": audit.graph, "notes": audit.notes,
                "partition": audit.partition},
        "parity": parity.to_dict(),
        # What the student sees (the model's input) and what its teacher saw: resolution distillation.
        "views": {"student": distilled.student.view, "teacher": (distilled.teacher or {}).get("view")},
        # How the teacher's outputs were read (logits / probabilities / log-probabilities, class order).
        "teacher": {"outputs": (distilled.teacher or {}).get("outputs", "logits"),  # edgekd's: logits
                    "class_order": (distilled.teacher or {}).get("class_order")},
        "accuracy": {"teacher": distilled.accuracy.teacher,
                     "student_alone": chosen.get("student_alone"), "student": chosen["student"],
                     **({"agreement": chosen["agreement"]} if "agreement" in chosen else {}),
                     "student_torch_recomputed": float((ref.argmax(1) == y).mean()),
                     "student_onnx": onnx_acc, "n_test": int(len(y))},
        "recommended": "fp32",
        "student_choice": _student_choice(distilled),
    }


def _student_choice(distilled: DistillSummary) -> dict[str, Any]:
    """Which of the run's two students to deploy: distill's verdict (mean validation accuracy,
    distilled vs alone). The exported model is student.pt; where the control did better, the
    manifest says so and names student_alone.pt."""
    v = distilled.verdict or {}
    rec = v.get("recommended_student", "student.pt")
    return {"exported": "student.pt", "recommended": rec, "distillation": v.get("distillation"),
            "by": v.get("recommended_by"), "val": v.get("val"),
            "note": "" if rec == "student.pt" else
            "distillation did worse than training alone on validation: deploy student_alone.pt instead"}
