"""`edgekd bench MODEL.onnx`: any ONNX model, as onnxruntime_perf_test times it; and several
targets side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench.run import bench_any, parse_shapes, side_by_side
from edgekd.errors import BadInput
from edgekd.runtime.agent import RAW_ENCODING, decode_raw

FAST = dict(min_seconds=0.02)


def multi_io_model(path: Path) -> Path:
    """Five inputs of five types, two outputs, symbolic dims 'batch' and 'width':
    image float32 [batch,3,'height',8], half float16 [batch,4], ids int64 [batch,'width'],
    count int32 [batch], mask bool [batch,4]."""
    inputs = [
        helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 3, "height", 8]),
        helper.make_tensor_value_info("half", TensorProto.FLOAT16, ["batch", 4]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "width"]),
        helper.make_tensor_value_info("count", TensorProto.INT32, ["batch"]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch", 4]),
    ]
    table = numpy_helper.from_array(np.arange(40, dtype=np.float32).reshape(10, 4), "table")
    nodes = [
        helper.make_node("ReduceMean", ["image"], ["pooled"], axes=[2, 3], keepdims=0),   # [batch,3]
        helper.make_node("Gather", ["table", "ids"], ["emb"]),                              # [batch,width,4]
        helper.make_node("ReduceSum", ["emb", "axes1"], ["emb_sum"], keepdims=0),           # [batch,4]
        helper.make_node("Cast", ["half"], ["half32"], to=TensorProto.FLOAT),
        helper.make_node("Cast", ["mask"], ["mask32"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["half32", "mask32"], ["masked"]),
        helper.make_node("Add", ["masked", "emb_sum"], ["summed"], name="add"),
        helper.make_node("Cast", ["count"], ["count32"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["pooled", "axes1"], ["pooled_sum"], keepdims=0),    # [batch]
        helper.make_node("Add", ["pooled_sum", "count32"], ["score"]),
    ]
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes1")
    graph = helper.make_graph(
        nodes, "multi", inputs,
        [helper.make_tensor_value_info("summed", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("score", TensorProto.FLOAT, ["batch"])],
        [table, axes])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def multi(tmp_path_factory) -> Path:
    return multi_io_model(tmp_path_factory.mktemp("multi") / "multi.onnx")


SHAPES = ["image=1x3x16x8", "ids=1x5"]


def test_symbolic_dimension_without_shape_is_one_line_naming_it(multi: Path) -> None:
    with pytest.raises(BadInput) as e:
        bench_any(model=multi, targets=["cpu-x86"], **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "'image'" in msg and "height" in msg and "--shape image=" in msg


def test_every_input_type_is_fed_and_timed(multi: Path) -> None:
    out = bench_any(model=multi, targets=["cpu-x86"], shapes=SHAPES, **FAST)
    x = out["results"][0]["fp32"]
    fed = {i["name"]: (i["dtype"], i["fed"]) for i in x["inputs"]}
    assert fed == {"image": ("float32", [1, 3, 16, 8]), "half": ("float16", [1, 4]), "ids": ("int64", [1, 5]),
                   "count": ("int32", [1]), "mask": ("bool", [1, 4])}
    assert x["input_source"] == "random" and x["provider"] == "CPUExecutionProvider"
    assert x["latency_ms"]["p50"] > 0 and x["peak_rss_mb"] > 0
    # --shape fixed the batch dimension of two inputs, so throughput is measured at that batch only
    assert set(x["throughput"]) == {"1"} and "fixed at 1" in x["throughput_note"]
    assert out["failures"] == [] and out["rows"][0]["target"] == "cpu-x86"


def test_latency_raw_holds_every_run(multi: Path) -> None:
    x = bench_any(model=multi, targets=["cpu-x86"], shapes=SHAPES, **FAST)["results"][0]["fp32"]
    raw = x["latency_raw"]
    assert raw["encoding"] == RAW_ENCODING and raw["unit"] == "ms"
    t = decode_raw(np, raw)
    assert len(t) == raw["n"] == x["latency_ms"]["n"]
    assert float(np.percentile(t, 50)) == pytest.approx(x["latency_ms"]["p50"], rel=1e-5)
    assert float(t.max()) == pytest.approx(x["latency_ms"]["max"], rel=1e-5)


def test_user_inputs_from_npz_are_used_and_checked(multi: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {"image": rng.standard_normal((2, 3, 4, 8)).astype(np.float32),
              "half": np.ones((2, 4), np.float16), "ids": np.array([[1, 2, 3], [4, 5, 6]], np.int64),
              "count": np.array([1, 2], np.int32), "mask": np.ones((2, 4), bool)}
    np.savez(tmp_path / "in.npz", **arrays)
    x = bench_any(model=multi, targets=["cpu-x86"], inputs=tmp_path / "in.npz", **FAST)["results"][0]["fp32"]
    assert x["input_source"] == "npz" and set(x["throughput"]) == {"2"}
    del arrays["mask"]
    np.savez(tmp_path / "short.npz", **arrays)
    with pytest.raises(BadInput, match="no array named 'mask'"):
        bench_any(model=multi, targets=["cpu-x86"], inputs=tmp_path / "short.npz", **FAST)


def test_an_op_the_provider_rejects_is_one_line(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom", name="custom")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.custom", 1)])
    onnx.save(model, str(tmp_path / "custom.onnx"))
    with pytest.raises(BadInput) as e:
        bench_any(model=tmp_path / "custom.onnx", targets=["cpu-x86"], **FAST)
    assert "\n" not in str(e.value) and "NoSuchOp" in str(e.value) and "cpu-x86" in str(e.value)


def test_profile_lists_the_models_operators_by_time(multi: Path) -> None:
    x = bench_any(model=multi, targets=["cpu-x86"], shapes=SHAPES, profile=True, **FAST)["results"][0]["fp32"]
    cpu = x["profile"]["CPUExecutionProvider"]
    ops = [r["op"] for r in cpu["ops"]]
    assert {"Gather", "ReduceMean", "Cast"} <= set(ops)
    totals = [r["total_ms"] for r in cpu["ops"]]
    assert totals == sorted(totals, reverse=True)
    assert sum(r["share"] for r in cpu["ops"]) == pytest.approx(1.0, abs=1e-6)   # fewer ops than the top-N cut
    gather = next(r for r in cpu["ops"] if r["op"] == "Gather")
    assert gather["calls"] == cpu["runs"]                                        # one Gather node, once per run


def test_shape_syntax_and_misuse_are_bad_input(multi: Path) -> None:
    assert parse_shapes(["image=1x3x48x192"]) == {"image": [1, 3, 48, 192]}
    for bad in ("image", "image=1x0", "=1x2", "image=1xa"):
        with pytest.raises(BadInput, match="NAME=D1xD2"):
            parse_shapes([bad])
    with pytest.raises(BadInput, match="does not fit"):
        bench_any(model=multi, targets=["cpu-x86"], shapes=["image=1x4x16x8", "ids=1x5"], **FAST)
    with pytest.raises(BadInput, match="no such input"):
        bench_any(model=multi, targets=["cpu-x86"], shapes=SHAPES + ["nope=1"], **FAST)
    with pytest.raises(BadInput, match="go with bench MODEL"):
        bench_any(targets=["cpu-x86"], shapes=SHAPES)


def test_budget_miss_is_reported_after_the_table(multi: Path, tmp_path: Path) -> None:
    text = (Path(__file__).resolve().parent.parent / "targets" / "cpu-x86.toml").read_text()
    prof = tmp_path / "tight.toml"
    prof.write_text(text.replace('name = "cpu-x86"', 'name = "tight"').replace("peak_memory_mb = 512",
                                                                                "peak_memory_mb = 1"))
    out = bench_any(model=multi, targets=[prof], shapes=SHAPES, **FAST)
    assert out["rows"] and len(out["failures"]) == 1 and "peak_memory_mb" in out["failures"][0]


def test_cli_bench_model_exit_codes(edgekd_main, multi: Path) -> None:
    ok = edgekd_main("bench", str(multi), "--target", "cpu-x86", "--shape", "image=1x3x16x8",
                     "--shape", "ids=1x5", "--min-seconds", "0.02", "--json")
    assert ok.code == 0, ok
    assert json.loads(ok.out)["rows"][0]["provider"] == "CPUExecutionProvider"
    bad = edgekd_main("bench", str(multi), "--target", "cpu-x86", "--min-seconds", "0.02")
    assert bad.code == 2 and "--shape image=" in bad.err and "Traceback" not in bad.err


# ---------------------------------------------------------------- several targets
def _fake_run(root: Path, model: Path, targets: list[str]) -> Path:
    """A run folder with an exported model and golden vectors for each target (no training)."""
    from edgekd import artifacts

    run = root / "run"
    x = np.random.default_rng(1).standard_normal((16, 1, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    y = sess.run(None, {"input": x})[0]
    for t in targets:
        d = run / t
        d.mkdir(parents=True)
        (d / "model.onnx").write_bytes(model.read_bytes())
        np.savez(d / "golden.npz", inputs=x, outputs=y)
        # every field the run-folder contract (edgekd/run/manifest.py) requires, as export writes them
        artifacts.write_json(d / "manifest.json", {
            "edgekd_version": "0.1.0", "target": t,
            "model": {**artifacts.file_entry(d / "model.onnx", d), "opset": 17, "params": 0,
                      "inputs": [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}],
                      "outputs": [], "preprocessing": {}, "labels": []},
            "ops": {"used": [], "unsupported": []},
            "parity": {"max_abs_diff": 0.0, "top1_agreement": 1.0, "passed": True},
            "accuracy": {"teacher": 0.0, "student_alone": 0.0, "student": 0.0, "student_onnx": 0.0},
            "recommended": "fp32", "deployable": True, "variants": {}, "checks": {"passed": True, "failures": []}})
    return run


def test_targets_side_by_side_in_one_table_and_one_recommendation(tmp_path: Path) -> None:
    from helpers.onnx_models import tiny_convnet

    model = tiny_convnet(tmp_path / "m.onnx")
    run = _fake_run(tmp_path, model, ["cpu-x86", "cpu-arm"])
    out = bench_any(targets=["cpu-x86", "cpu-arm"], run=run, compare=False, **FAST)
    assert out["mode"] == "targets" and [r["target"] for r in out["rows"]] == ["cpu-x86", "cpu-arm"]
    for row in out["rows"]:
        assert row["parity_passed"] is True and row["throughput"] > 0 and row["peak_rss_mb"] > 0
    # cpu-arm asks for XNNPACK first, which this onnxruntime build lacks (no plugin needed to show a fallback)
    arm = out["rows"][1]
    ran_xnnpack = arm["provider"] == "XnnpackExecutionProvider"
    assert arm["fallback"] is (not ran_xnnpack)
    # A provider that fell back is never the recommendation: it is not what the target runs.
    best = out["recommended"]
    assert best is not None and (ran_xnnpack or best["target"] == "cpu-x86")
    from edgekd import artifacts
    for t in ("cpu-x86", "cpu-arm"):
        assert artifacts.read_json(run / t / "manifest.json")["across_targets"]["recommended"] == best
    assert side_by_side(out["results"]) == out["rows"]
