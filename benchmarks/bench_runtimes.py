"""Issue 21's benchmarks: OpenVINO through onnxruntime-openvino in its runtime environment.

    .venv/bin/python benchmarks/bench_runtimes.py [--rounds 3] [--min-seconds 0.5]
        [--out benchmarks/results/runtimes.json]

Needs `edgekd runner setup intel-openvino` (and, for section 4, the wheel cache that `.ci/run` fills).

1. p50 latency, OpenVINO EP ÷ CPU EP, for the default student (small-cnn, 1x8x8), the Fashion-MNIST
   student (wide-cnn, 1x28x28), the default teacher (cnn, 1x8x8) and resnet-s (1x28x28), fp32 and int8
   (QDQ). Both EPs run in the same runtime (onnxruntime-openvino 1.24.1; the CPU EP is its own), through
   the bench agent as `edgekd bench` runs it (the intel-openvino profile's threads and options); the
   host's onnxruntime CPU EP is timed alongside for reference. Interleaved: each round times every
   variant in turn; the ratio is the median over rounds of the per-round ratios.
2. Parity of each against PyTorch on 256 inputs (the agent's golden check: fp32 tolerances for fp32,
   top-1 only for int8).
3. The share of nodes OpenVINO takes, from ONNX Runtime's own assignment in the runtime, for every
   registered student.
4. Runtime setup time, cold (no environment; wheels from the local cache) and warm (already set up).

Weights are random and seeded: latency, parity and partition do not depend on training (int8 top-1
agreement on random weights and random inputs is a lower bound of what a trained model gives).
Writes a JSON file; prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODELS = (("default student", "student", "small-cnn", (1, 8, 8)),
          ("Fashion-MNIST student", "student", "wide-cnn", (1, 28, 28)),
          ("default teacher", "teacher", "cnn", (1, 8, 8)),
          ("resnet-s", "teacher", "resnet-s", (1, 28, 28)))
WHEELS = Path(os.environ.get("EDGEKD_WHEELS") or "~/.cache/edgekd/wheels").expanduser()


def _models(tmp: Path) -> dict[str, dict]:
    """label -> {fp32, int8 paths, golden npz}: ONNX at opset 17, 256 inputs and PyTorch's outputs."""
    import torch

    from edgekd.deploy.quantize import quantize_int8
    from edgekd.models import create_student, create_teacher, write_onnx

    out = {}
    for label, kind, name, shape in MODELS:
        torch.manual_seed(0)
        make = create_student if kind == "student" else create_teacher
        model = make(name, in_channels=1, num_classes=10).eval()
        x = np.random.default_rng(0).standard_normal((256, *shape)).astype(np.float32)
        path = tmp / f"{name}.onnx"
        write_onnx(model, str(path), input_shape=shape, opset=17)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        golden = tmp / f"{name}.golden.npz"
        np.savez(golden, inputs=x, outputs=ref)
        q = quantize_int8(model=path, out=tmp / f"{name}.int8.onnx", calibration=x[:128])
        out[label] = {"fp32": path, "int8": q, "golden": golden, "name": name, "shape": list(shape)}
    return out


def _profiles(tmp: Path) -> dict:
    """OpenVINO EP and the same runtime's CPU EP (intel-openvino with its CPU entry only), and the host's CPU EP."""
    from edgekd.deploy.targets import load_target

    ov = load_target("intel-openvino")
    text = (ROOT / "targets" / "intel-openvino.toml").read_text()
    start = text.index("providers = [")
    end = text.index("]\n", text.index("CPUExecutionProvider", start)) + 2
    cpu_text = text[:start] + 'providers = [{ name = "CPUExecutionProvider" }]\n' + text[end:]
    (tmp / "ov-cpu.toml").write_text(cpu_text.replace('name = "intel-openvino"', 'name = "ov-cpu"', 1))
    return {"OpenVINO EP": ov, "CPU EP (same runtime)": load_target(tmp / "ov-cpu.toml"),
            "CPU EP (host onnxruntime)": load_target("cpu-x86")}


def latency_section(models: dict, profiles: dict, rounds: int, min_seconds: float) -> dict:
    from edgekd.bench.runners import LocalRunner, agent_config

    runners = {k: LocalRunner(target=p) for k, p in profiles.items()}
    section = {}
    for label, m in models.items():
        rows: dict = {}
        for variant in ("fp32", "int8"):
            p50 = {k: [] for k in profiles}
            last = {}
            for _ in range(rounds):
                for k, prof in profiles.items():
                    cfg = {**agent_config(prof, min_seconds=min_seconds, batches=(1,), int8=variant == "int8")}
                    if variant == "int8":
                        cfg["atol"] = 1e9
                    r = runners[k].run(model=m[variant], config=cfg, golden=m["golden"])
                    p50[k].append(r["latency_ms"]["p50"])
                    last[k] = r
            base = p50["CPU EP (same runtime)"]
            rows[variant] = {k: {"p50_ms": statistics.median(v),
                                 "ratio_to_cpu_same_runtime": statistics.median(a / b for a, b in zip(v, base)),
                                 "provider": last[k]["provider"], "fallback": last[k]["fallback"],
                                 "onnxruntime": last[k]["onnxruntime_version"],
                                 "precision": "int8" if variant == "int8" else last[k]["precision"],
                                 "parity": {x: last[k]["golden"][x]
                                            for x in ("max_abs_diff", "top1_agreement", "passed")}}
                             for k, v in p50.items()}
        section[label] = {"model": m["name"], "input": m["shape"], **rows}
    return section


def partition_section(tmp: Path) -> dict:
    import torch

    from edgekd.deploy.audit import real_partition
    from edgekd.deploy.targets import load_target
    from edgekd.models import STUDENTS, create_student, write_onnx

    prof = load_target("intel-openvino")
    out = {}
    for name in STUDENTS:
        torch.manual_seed(0)
        path = tmp / f"part-{name}.onnx"
        write_onnx(create_student(name, in_channels=1, num_classes=10), str(path), input_shape=(1, 8, 8), opset=17)
        p = real_partition(path, prof)
        out[name] = ({"share": p["share"], "nodes": p["nodes"], "fell_back_ops": p["fell_back_ops"]}
                     if p.get("built") else {"unavailable": p.get("reason") or p.get("error")})
    return out


def setup_section(tmp: Path) -> dict:
    """`edgekd runner setup T --wheels CACHE` into an empty EDGEKD_RUNTIMES (cold), then again (warm)."""
    if not WHEELS.is_dir():
        return {"unavailable": f"no wheel cache at {WHEELS}"}
    env = {**os.environ, "EDGEKD_RUNTIMES": str(tmp / "runtimes"),
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    out = {}
    for target in ("intel-openvino", "cpu-x86-ort120"):
        times = {}
        for state in ("cold", "warm"):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-m", "edgekd.cli", "runner", "setup", target, "--wheels", str(WHEELS)],
                           env=env, check=True, capture_output=True)
            times[f"{state}_s"] = round(time.perf_counter() - t0, 1)
        out[target] = times
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--min-seconds", type=float, default=0.5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtimes.json")
    args = ap.parse_args()
    from edgekd.deploy.runtimes import require
    from edgekd.deploy.targets import load_target

    require(load_target("intel-openvino"))
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        result = {"host": _host(), "rounds": args.rounds, "min_seconds": args.min_seconds,
                  "latency": latency_section(_models(tmp), _profiles(tmp), args.rounds, args.min_seconds),
                  "partition": partition_section(tmp), "setup": setup_section(tmp)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for label, m in result["latency"].items():
        for variant in ("fp32", "int8"):
            row = m[variant]
            ov, cpu = row["OpenVINO EP"], row["CPU EP (same runtime)"]
            print(f"{label:22s} {variant}: OpenVINO {ov['p50_ms']:.4f} ms ÷ CPU {cpu['p50_ms']:.4f} ms = "
                  f"{ov['ratio_to_cpu_same_runtime']:.2f}×; "
                  f"host CPU {row['CPU EP (host onnxruntime)']['p50_ms']:.4f} ms; "
                  f"parity OV {ov['parity']}")
    print(json.dumps(result["partition"], indent=1))
    print(json.dumps(result["setup"]))


def _host() -> dict:
    from edgekd.provenance import host_cpu

    return host_cpu()


if __name__ == "__main__":
    main()
