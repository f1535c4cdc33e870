"""The standalone bench agent: JSON fields, golden parity, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import edgekd

AGENT = Path(edgekd.__file__).resolve().parent / "runtime" / "agent.py"
FAST = {"min_runs": 5, "min_seconds": 0.01, "warmup": 1, "batches": [1, 4],
        "intra_op_threads": 1, "inter_op_threads": 1}


def tiny_model(path: Path, *, batch: object = "batch") -> Path:
    """Conv(1→4, 3x3) → Relu → Flatten → Gemm(256→10): 'input' [batch,1,8,8] → 'logits' [batch,10]."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.standard_normal((10, 256)).astype(np.float32) * 0.1, "fw")
    fb = numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fb")
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Flatten", ["r"], ["f"], axis=1, name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1, name="fc"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        initializer=[w, b, fw, fb])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def reference(x: np.ndarray, model_path: Path) -> np.ndarray:
    """The model's outputs computed with numpy, independent of onnxruntime."""
    init = {t.name: numpy_helper.to_array(t) for t in onnx.load(model_path).graph.initializer}
    n = len(x)
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    patches = np.stack([pad[:, 0, i:i + 8, j:j + 8] for i in range(3) for j in range(3)], -1)
    conv = patches @ init["w"].reshape(4, 9).T + init["b"]          # n,8,8,4
    relu = np.maximum(conv, 0).transpose(0, 3, 1, 2).reshape(n, -1)  # NCHW flatten
    return relu @ init["fw"].T + init["fb"]


def make_golden(path: Path, model_path: Path, *, n: int = 16, shape=(1, 8, 8), perturb: float = 0.0) -> Path:
    x = np.random.default_rng(1).standard_normal((n, *shape)).astype(np.float32)
    y = reference(x, model_path) if shape == (1, 8, 8) else np.zeros((n, 10), np.float32)
    np.savez(path, inputs=x, outputs=(y + perturb).astype(np.float32))
    return path


def run_agent(tmp_path: Path, model: Path, config: dict, golden: Path | None = None,
              python: str = sys.executable) -> tuple[int, dict, str]:
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(config))
    cmd = [python, str(AGENT), "--model", str(model), "--config", str(cfg)]
    if golden:
        cmd += ["--golden", str(golden)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, f"stdout must be one JSON line, got {proc.stdout!r}"
    return proc.returncode, json.loads(lines[0]), proc.stderr


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return tiny_model(tmp_path / "model.onnx")


def test_agent_reports_every_field(tmp_path: Path, model: Path) -> None:
    rc, out, err = run_agent(tmp_path, model, {**FAST, "providers": [{"name": "CPUExecutionProvider"}]})
    assert rc == 0, out
    assert "Traceback" not in err
    assert out["provider"] == out["provider_requested"] == "CPUExecutionProvider"
    assert out["providers_active"][0] == "CPUExecutionProvider"
    assert out["fallback"] is False and "warning" not in out
    lat = out["latency_ms"]
    assert lat["n"] >= 5
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert set(out["throughput"]) == {"1", "4"} and all(v > 0 for v in out["throughput"].values())
    assert out["init_ms"] > 0 and out["first_run_ms"] > 0
    assert out["peak_rss_mb"] > 1
    assert out["threads"] == 1 and out["threads_requested"] == 1
    assert out["input"] == {"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32",
                            "sample_shape": [1, 8, 8], "batch_dynamic": True}
    assert out["machine"] and out["python"] and out["onnxruntime_version"]
    assert out["emulated"] is False and "golden" not in out


def test_min_seconds_extends_the_run_count(tmp_path: Path, model: Path) -> None:
    # With min_runs=1 the count comes from min_seconds alone: far more than one run.
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "min_runs": 1, "min_seconds": 0.2,
                                             "providers": [{"name": "CPUExecutionProvider"}]})
    assert rc == 0, out
    assert out["latency_ms"]["n"] > 1
    # The loop's own wall clock, not the sum of the timed runs (which leaves out the time
    # between runs, a sizeable share of a 40 µs model's loop on a busy host).
    assert out["latency_ms"]["wall_s"] >= 0.2
    assert out["latency_ms"]["n"] * out["latency_ms"]["mean"] <= out["latency_ms"]["wall_s"] * 1000


def test_unavailable_provider_falls_back_with_a_warning(tmp_path: Path, model: Path) -> None:
    providers = [{"name": "XnnpackExecutionProvider", "options": {"intra_op_num_threads": "64"}},
                 {"name": "CPUExecutionProvider"}]
    import onnxruntime as ort
    if "XnnpackExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime build has XNNPACK; nothing to fall back from")
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "providers": providers})
    assert rc == 0, out
    assert out["provider_requested"] == "XnnpackExecutionProvider"
    assert out["provider"] == "CPUExecutionProvider"
    assert out["fallback"] is True and "XnnpackExecutionProvider" in out["warning"]


def test_threads_are_capped_at_the_cpu_count(tmp_path: Path, model: Path) -> None:
    import os
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "intra_op_threads": 4096,
                                             "providers": [{"name": "CPUExecutionProvider"}]})
    assert rc == 0, out
    assert out["threads_requested"] == 4096
    assert out["threads"] == os.cpu_count()
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "intra_op_threads": 0,
                                             "providers": [{"name": "CPUExecutionProvider"}]})
    assert out["threads_requested"] == 0 and out["threads"] == os.cpu_count()


def test_golden_parity_passes_on_true_outputs(tmp_path: Path, model: Path) -> None:
    golden = make_golden(tmp_path / "golden.npz", model)
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "atol": 1e-4, "rtol": 1e-3}, golden)
    assert rc == 0, out
    g = out["golden"]
    assert g["n"] == 16 and g["passed"] is True and g["top1_agreement"] == 1.0
    assert g["max_abs_diff"] < 1e-4


def test_golden_parity_fails_on_perturbed_outputs(tmp_path: Path, model: Path) -> None:
    golden = make_golden(tmp_path / "golden.npz", model, perturb=0.01)
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "atol": 1e-4, "rtol": 1e-3}, golden)
    assert rc == 0, out  # a failed parity is a result for the caller to judge, not an agent error
    g = out["golden"]
    assert g["passed"] is False and g["allclose"] is False
    assert g["max_abs_diff"] == pytest.approx(0.01, rel=0.05)


def test_golden_fails_on_top1_disagreement_even_within_tolerance(tmp_path: Path, model: Path) -> None:
    # Outputs swapped between two classes: a huge atol makes them "close", top-1 must still fail.
    golden = make_golden(tmp_path / "golden.npz", model)
    with np.load(golden) as z:
        x, y = z["inputs"], z["outputs"].copy()
    y = -y
    np.savez(golden, inputs=x, outputs=y)
    rc, out, _ = run_agent(tmp_path, model, {**FAST, "atol": 1e9, "min_top1_agreement": 1.0}, golden)
    assert rc == 0, out
    assert out["golden"]["allclose"] is True
    assert out["golden"]["top1_agreement"] < 1.0 and out["golden"]["passed"] is False


def test_golden_shape_mismatch_is_exit_2(tmp_path: Path, model: Path) -> None:
    golden = make_golden(tmp_path / "golden.npz", model, shape=(3, 8, 8))
    rc, out, err = run_agent(tmp_path, model, FAST, golden)
    assert rc == 2
    assert set(out) == {"error"} and out["error"]["kind"] == "golden"
    assert "[3, 8, 8]" in out["error"]["message"] and "'input'" in out["error"]["message"]
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["missing_model", "corrupt_model", "bad_golden", "golden_keys",
                                  "bad_config", "unknown_key"])
def test_failures_are_one_line_json_exit_2(tmp_path: Path, model: Path, case: str) -> None:
    golden = None
    config = dict(FAST)
    if case == "missing_model":
        model = tmp_path / "nope.onnx"
    elif case == "corrupt_model":
        model = tmp_path / "corrupt.onnx"
        model.write_bytes(b"\x00not an onnx model")
    elif case == "bad_golden":
        golden = tmp_path / "g.npz"
        golden.write_bytes(b"garbage")
    elif case == "golden_keys":
        golden = tmp_path / "g.npz"
        np.savez(golden, x=np.zeros(3))
    elif case == "bad_config":
        config["graph_optimization"] = "max"
    elif case == "unknown_key":
        config["min_run"] = 3
    rc, out, err = run_agent(tmp_path, model, config, golden)
    assert rc == 2
    assert list(out) == ["error"] and set(out["error"]) == {"kind", "message"}
    assert "\n" not in out["error"]["message"]
    assert "Traceback" not in err
    kind = {"missing_model": "model", "corrupt_model": "model", "bad_golden": "golden", "golden_keys": "golden",
            "bad_config": "config", "unknown_key": "config"}[case]
    assert out["error"]["kind"] == kind
    expected = {"missing_model": "model not found", "corrupt_model": "cannot load the model",
                "bad_golden": "not a readable .npz", "golden_keys": "lacks array 'inputs'",
                "bad_config": "valid: disable, basic, extended, all",
                "unknown_key": "unknown config key 'min_run'"}[case]
    assert expected in out["error"]["message"]


def test_missing_onnxruntime_is_named(tmp_path: Path, model: Path) -> None:
    # A python without numpy/onnxruntime (the system one here) must say which module is missing.
    sys_python = "/usr/bin/python3"
    probe = subprocess.run([sys_python, "-c", "import onnxruntime"], capture_output=True)
    if not Path(sys_python).exists() or probe.returncode == 0:
        pytest.skip(f"need a python without onnxruntime at {sys_python}")
    rc, out, err = run_agent(tmp_path, model, FAST, python=sys_python)
    assert rc == 2 and out["error"]["kind"] == "missing_runtime"
    message = out["error"]["message"]
    assert "ModuleNotFoundError" in message and "pip install onnxruntime numpy" in message
    assert "Traceback" not in err


def test_agent_imports_nothing_but_stdlib_numpy_onnxruntime() -> None:
    import ast
    tree = ast.parse(AGENT.read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    allowed = set(sys.stdlib_module_names) | {"numpy", "onnxruntime"}
    assert names <= allowed, names - allowed
    assert "edgekd" not in names and "torch" not in names


def test_fixed_batch_model_times_only_its_batch(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "fixed.onnx", batch=1)
    golden = make_golden(tmp_path / "golden.npz", model, n=4)
    rc, out, _ = run_agent(tmp_path, model, FAST, golden)
    assert rc == 0, out
    assert out["input"]["batch_dynamic"] is False
    assert set(out["throughput"]) == {"1"} and "fixed at 1" in out["throughput_note"]
    assert out["golden"]["passed"] is True and out["golden"]["n"] == 4


def test_golden_vectors_give_the_shape_of_symbolic_inner_dims(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, "h", "w"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1, "h", "w"])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "sym.onnx"
    onnx.save(m, str(path))
    rc, out, _ = run_agent(tmp_path, path, FAST)
    assert rc == 2 and out["error"]["kind"] == "symbolic_dim" and "--shape input=Nx1xNxN" in out["error"]["message"]
    xs = np.random.default_rng(0).standard_normal((6, 1, 5, 7)).astype(np.float32)
    np.savez(tmp_path / "golden.npz", inputs=xs, outputs=np.maximum(xs, 0))
    rc, out, _ = run_agent(tmp_path, path, FAST, tmp_path / "golden.npz")
    assert rc == 0, out
    assert out["golden"]["passed"] is True and out["golden"]["n"] == 6 and out["input_source"] == "golden"
