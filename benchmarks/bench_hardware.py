"""Issue 4's benchmarks on digits.

1. int8 ÷ fp32 latency (batch 1, p50, through the local runner) and the accuracy change.
2. The max abs diff between the ARM build's outputs (PyPI's aarch64 onnxruntime under
   qemu-user) and PyTorch's, through the qemu runner (needs `edgekd runner setup qemu`).

    .venv/bin/python benchmarks/bench_hardware.py [--repeats 5] [--run DIR]

Without --run it makes a run first (distill with the defaults). Medians over repeats;
writes benchmarks/results/hardware.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--run", type=Path)
    args = ap.parse_args()
    import edgekd
    from edgekd.bench.runners import (
        LocalRunner,
        QemuRunner,
        agent_config,
        qemu_setup_info,
    )

    with tempfile.TemporaryDirectory() as tmp:
        run = args.run
        if run is None:
            run = Path(tmp) / "run"
            with contextlib.chdir(tmp):  # artifacts/latest goes to the temporary folder, not the checkout
                edgekd.distill(run=run, progress=False)
        target = edgekd.load_target(name="cpu-arm")
        manifest = edgekd.export(target=target, run=run, quantize="int8").to_json()
        out = run / "cpu-arm"
        cfg = {**agent_config(target, min_seconds=1.0), "batches": [1]}
        local = LocalRunner()
        rows = []
        for _ in range(args.repeats):  # interleaved, so drift on a shared machine hits both
            f = local.run(model=out / "model.onnx", config=cfg)["latency_ms"]["p50"]
            q = local.run(model=out / "model.int8.onnx", config=cfg)["latency_ms"]["p50"]
            rows.append({"fp32_p50_ms": f, "int8_p50_ms": q})
        result = {
            "int8_over_fp32": statistics.median(r["int8_p50_ms"] / r["fp32_p50_ms"] for r in rows),
            "per_repeat": rows, "threads": min(target.intra_op_threads, __import__("os").cpu_count()),
            "accuracy_fp32_onnx": manifest["accuracy"]["student_onnx"],
            "accuracy_int8": manifest["variants"]["int8"]["accuracy"],
            "accuracy_change_points": 100 * (manifest["variants"]["int8"]["accuracy"]
                                             - manifest["accuracy"]["student_onnx"]),
            "bytes": {"fp32": manifest["model"]["bytes"], "int8": manifest["variants"]["int8"]["bytes"]},
        }
        if qemu_setup_info() is None:
            result["qemu"] = "not set up: run `edgekd runner setup qemu`"
        else:
            qcfg = {**agent_config(target, min_runs=20, min_seconds=0.0, warmup=2), "batches": [1]}
            arm = QemuRunner().run(model=out / "model.onnx", config=qcfg, golden=out / "golden.npz")
            arm8 = QemuRunner().run(model=out / "model.int8.onnx", golden=out / "golden.npz",
                                    config={**qcfg, "atol": 1e9, "min_top1_agreement": 0.99})
            result["qemu"] = {"machine": arm["machine"], "onnxruntime": arm["onnxruntime_version"],
                              "fp32_vs_pytorch": arm["golden"], "int8_vs_pytorch": arm8["golden"]}
    dest = ROOT / "benchmarks" / "results" / "hardware.json"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(result, indent=2) + "\n")
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"int8 ÷ fp32 latency, batch 1, local, {result['threads']} threads: {result['int8_over_fp32']:.3f} "
          f"[fp32 {med['fp32_p50_ms']:.4f} ms, int8 {med['int8_p50_ms']:.4f} ms, median of {args.repeats}]")
    print(f"accuracy: fp32 ONNX {100 * result['accuracy_fp32_onnx']:.2f}%, int8 {100 * result['accuracy_int8']:.2f}% "
          f"({result['accuracy_change_points']:+.2f} points); "
          f"size {result['bytes']['fp32']:,} B → {result['bytes']['int8']:,} B")
    q = result["qemu"]
    if isinstance(q, dict):
        fp32, int8 = q["fp32_vs_pytorch"], q["int8_vs_pytorch"]
        print(f"ARM build ({q['machine']}, onnxruntime {q['onnxruntime']}) vs PyTorch on {fp32['n']} golden "
              f"samples: fp32 max abs diff {fp32['max_abs_diff']:.3g}, top-1 {fp32['top1_agreement']:.4f}; "
              f"int8 max abs diff {int8['max_abs_diff']:.3g}, top-1 {int8['top1_agreement']:.4f}")
    else:
        print(f"qemu: {q}")


if __name__ == "__main__":
    main()
