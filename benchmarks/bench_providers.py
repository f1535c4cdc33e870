"""Issue 12's benchmarks: execution providers, precision, partition, `bench MODEL.onnx`, exporters.

    .venv/bin/python benchmarks/bench_providers.py [--rounds 7] [--out benchmarks/results/providers.json]

1. p50 latency of each provider variant ÷ the CPU provider's (fp32), for the default student
   (small-cnn) and the default teacher (cnn) on digits-shaped inputs (1x8x8): CPU EP fp32,
   CPU EP int8 (QDQ, 7-bit weights), OpenVINO EP fp32 (explicit precision) and OpenVINO EP
   at its default precision. Interleaved: each round times every variant in turn; the ratio
   is the median over rounds of the per-round ratios.
2. Parity of each variant against PyTorch (max abs diff, top-1 agreement) at the provider's
   default precision and at the profile's.
3. Share of nodes per provider, from ONNX Runtime's own assignment, for every registered
   student under intel-openvino (and cpu-x86, which runs anywhere).
4. `edgekd bench MODEL.onnx` (the agent in its own process) ÷ an independent in-process
   InferenceSession loop, p50, on three models of different shapes; interleaved rounds.
5. Export time, TorchScript ÷ dynamo (torch.export), for the default student and teacher.

A variant whose provider cannot run here (OpenVINO's plugin offers Intel devices only) is
listed with the reason instead of a number. Weights are random (seeded): latency, parity and
partition do not depend on training. Writes a JSON file; prints a summary.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SHAPE = (1, 8, 8)


def _models(tmp: Path) -> dict[str, tuple[Path, np.ndarray, np.ndarray]]:
    """Default student and teacher: ONNX file, 256 inputs, PyTorch outputs."""
    import torch

    from edgekd import defaults
    from edgekd.models import create_student, create_teacher, write_onnx

    x = np.random.default_rng(0).standard_normal((256, *SHAPE)).astype(np.float32)
    out = {}
    for kind, make, name in (("student", create_student, defaults.STUDENT),
                             ("teacher", create_teacher, defaults.TEACHER)):
        torch.manual_seed(0)
        model = make(name, in_channels=1, num_classes=10).eval()
        path = tmp / f"{kind}.onnx"
        write_onnx(model, str(path), input_shape=SHAPE, opset=17)
        with torch.no_grad():
            ref = model(torch.from_numpy(x)).numpy()
        out[f"{kind} ({name})"] = (path, x, ref)
    return out


def _variants(model: Path, x: np.ndarray, tmp: Path) -> dict[str, dict]:
    """name -> {"session", "report"} or {"unavailable": reason}."""
    import onnxruntime as ort

    from edgekd.deploy.quantize import quantize_int8
    from edgekd.deploy.targets import load_target
    from edgekd.runtime import agent

    ov = load_target("intel-openvino-plugin").providers[0].to_dict()   # the plugin in the host onnxruntime
    ov_default = {**ov, "options": {k: v for k, v in ov["options"].items() if k != "precision"}}
    q = quantize_int8(model=model, out=tmp / f"{model.stem}.int8.onnx", calibration=x[:128])
    specs = {"CPU EP fp32": (model, {"name": "CPUExecutionProvider"}),
             "CPU EP int8": (q, {"name": "CPUExecutionProvider"}),
             "OpenVINO EP fp32 (profile)": (model, ov),
             "OpenVINO EP default precision": (model, ov_default)}
    out = {}
    for name, (path, provider) in specs.items():
        cfg = {**agent.DEFAULTS, "providers": [provider], "intra_op_threads": 1}
        try:
            sess, report = agent.open_session(ort, str(path), cfg)
        except agent.AgentError as e:
            out[name] = {"unavailable": str(e)}
            continue
        if report["provider"] != provider["name"]:
            out[name] = {"unavailable": report.get("warning", "fell back")}
            continue
        out[name] = {"session": sess, "report": report}
    return out


def _p50(sess, feed: dict, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def providers_section(models: dict, tmp: Path, rounds: int) -> dict:
    from edgekd.deploy.parity import compare

    section = {}
    for label, (path, x, ref) in models.items():
        variants = _variants(path, x, tmp)
        live = {k: v for k, v in variants.items() if "session" in v}
        feed = {"input": x[:1]}
        for v in live.values():
            _p50(v["session"], feed, 50)  # warm-up
        per_round: dict[str, list[float]] = {k: [] for k in live}
        for _ in range(rounds):
            for k, v in live.items():
                per_round[k].append(_p50(v["session"], feed, 200))
        base = per_round["CPU EP fp32"]
        rows = {}
        for k, v in variants.items():
            if k not in live:
                rows[k] = {"unavailable": v["unavailable"]}
                continue
            out = np.concatenate([v["session"].run(None, {"input": x[i:i + 64]})[0] for i in range(0, len(x), 64)])
            int8 = "int8" in k
            par = compare(ref, out, atol=float("inf") if int8 else 1e-4, rtol=0.0 if int8 else 1e-3,
                          min_top1_agreement=0.99 if int8 else 1.0)
            rows[k] = {"p50_ms": statistics.median(per_round[k]),
                       "p50_ratio_to_cpu": statistics.median(a / b for a, b in zip(per_round[k], base)),
                       "device": v["report"].get("device"), "ep_version": v["report"].get("ep_version"),
                       "precision": "int8" if int8 else v["report"].get("precision"),
                       "parity": {"max_abs_diff": par.max_abs_diff, "top1_agreement": par.top1_agreement,
                                  "passed": par.passed}}
        section[label] = rows
    return section


def partition_section(tmp: Path) -> dict:
    import torch

    from edgekd.deploy.audit import real_partition
    from edgekd.deploy.targets import load_target
    from edgekd.models import STUDENTS, create_student, write_onnx

    out = {}
    for target in ("intel-openvino", "cpu-x86"):
        prof = load_target(target)
        out[target] = {}
        for name in STUDENTS:
            torch.manual_seed(0)
            path = tmp / f"part-{name}.onnx"
            write_onnx(create_student(name, in_channels=1, num_classes=10), str(path), input_shape=SHAPE, opset=17)
            p = real_partition(path, prof)
            out[target][name] = ({"share": p["share"], "nodes": p["nodes"]} if p.get("ran")
                                 else {"unavailable": p["reason"]})
    return out


def _shape_models(tmp: Path) -> dict[str, tuple[Path, dict]]:
    """Three models of different shapes: a small conv net, a wider conv net on 3x64x64, an MLP."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sys.path.insert(0, str(ROOT / "tests"))
    from test_quantize import tiny_convnet

    rng = np.random.default_rng(0)
    out = {"conv 1x1x8x8": (tiny_convnet(tmp / "conv8.onnx"), {"input": rng.standard_normal((1, 1, 8, 8))})}
    w = numpy_helper.from_array((rng.standard_normal((32, 3, 3, 3)) * 0.1).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                           helper.make_node("Relu", ["c"], ["y"])], "conv64",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32, 64, 64])], [w])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / "conv64.onnx"))
    out["conv 1x3x64x64"] = (tmp / "conv64.onnx", {"x": rng.standard_normal((1, 3, 64, 64))})
    a = numpy_helper.from_array((rng.standard_normal((256, 512)) * 0.05).astype(np.float32), "a")
    b = numpy_helper.from_array((rng.standard_normal((512, 64)) * 0.05).astype(np.float32), "b")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "a"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
                           helper.make_node("MatMul", ["r", "b"], ["y"])], "mlp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 128, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 128, 64])], [a, b])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp / "mlp.onnx"))
    out["mlp 1x128x256"] = (tmp / "mlp.onnx", {"x": rng.standard_normal((1, 128, 256))})
    return {k: (p, {n: v.astype(np.float32) for n, v in feed.items()}) for k, (p, feed) in out.items()}


def bench_any_section(tmp: Path, rounds: int) -> dict:
    import onnxruntime as ort

    from edgekd.bench.run import bench_any

    out = {}
    for label, (path, feed) in _shape_models(tmp).items():
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        _p50(sess, feed, 20)
        ours, theirs = [], []
        for _ in range(rounds):
            r = bench_any(model=path, targets=[_one_thread_profile(tmp)],
                          min_seconds=0.3)["results"][0]["fp32"]
            ours.append(r["latency_ms"]["p50"])
            theirs.append(_p50(sess, feed, max(50, r["latency_ms"]["n"] // 4)))
        out[label] = {"bench_p50_ms": statistics.median(ours), "loop_p50_ms": statistics.median(theirs),
                      "ratio": statistics.median(a / b for a, b in zip(ours, theirs))}
    return out


def _one_thread_profile(tmp: Path) -> Path:
    """cpu-x86 with one intra-op thread, the same as the independent loop's session."""
    path = tmp / "cpu-x86-1t.toml"
    if not path.exists():
        text = (ROOT / "targets" / "cpu-x86.toml").read_text()
        path.write_text(text.replace('name = "cpu-x86"', 'name = "cpu-x86-1t"').replace(
            "intra_op_threads = 0", "intra_op_threads = 1"))
    return path


def exporter_section(tmp: Path, rounds: int) -> dict:
    import torch

    from edgekd import defaults
    from edgekd.models import create_student, create_teacher, write_onnx

    out = {}
    for label, make, name in (("student", create_student, defaults.STUDENT),
                              ("teacher", create_teacher, defaults.TEACHER)):
        model = make(name, in_channels=1, num_classes=10)
        times: dict[str, list[float]] = {e: [] for e in defaults.EXPORTERS}
        for _ in range(rounds):
            for exporter in defaults.EXPORTERS:   # interleaved; dynamo at 18: it cannot reach 17
                t0 = time.perf_counter()
                write_onnx(model, str(tmp / f"x-{exporter}.onnx"), input_shape=SHAPE, opset=18, exporter=exporter)
                times[exporter].append(time.perf_counter() - t0)
        torch.manual_seed(0)
        out[f"{label} ({name})"] = {**{f"{e}_s": statistics.median(t) for e, t in times.items()},
                                    "dynamo_over_torchscript": statistics.median(
                                        d / t for d, t in zip(times["dynamo"], times["torchscript"]))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--export-rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "providers.json")
    args = ap.parse_args()
    import os
    import platform

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        result = {"host": {"machine": platform.machine(), "cpu_count": os.cpu_count(),
                           "cpu": next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                                        if ln.startswith("model name")), "?")},
                  "providers": providers_section(_models(tmp), tmp, args.rounds),
                  "partition": partition_section(tmp),
                  "bench_model_vs_loop": bench_any_section(tmp, args.rounds),
                  "exporters": exporter_section(tmp, args.export_rounds)}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
