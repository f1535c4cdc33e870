"""edgekd.deploy.mobile: ORT-format conversion and required_operators.config."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.deploy.mobile import (
    convert_to_ort,
    optimization_style_for,
    read_required_ops,
)
from edgekd.deploy.quantize import quantize_int8
from edgekd.errors import BadInput


def conv_relu_net(path: Path) -> Path:
    """Conv-Relu-GlobalAveragePool-Flatten-Gemm on 1x8x8 inputs, 10 logits."""
    rng = np.random.default_rng(0)
    inits = [
        numpy_helper.from_array((rng.normal(size=(8, 1, 3, 3)) * 0.5).astype(np.float32), "w1"),
        numpy_helper.from_array((rng.normal(size=8) * 0.1).astype(np.float32), "b1"),
        numpy_helper.from_array((rng.normal(size=(10, 8)) * 0.5).astype(np.float32), "w2"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b2"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r1"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w2", "b2"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def outputs(path: Path, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]


def inputs(n: int = 16, seed: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    return conv_relu_net(tmp_path_factory.mktemp("src") / "model.onnx")


@pytest.fixture(scope="module")
def converted(float_model, tmp_path_factory) -> dict:
    return convert_to_ort(model=float_model, out_dir=tmp_path_factory.mktemp("mobile") / "cpu-arm")


def test_writes_ort_model_and_config_and_nothing_else(converted, float_model):
    out_dir = converted["ort"].parent
    assert converted["ort"] == out_dir / "model.ort"
    assert converted["required_operators"] == out_dir / "required_operators.config"
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.ort", "required_operators.config"]
    assert sorted(p.name for p in float_model.parent.iterdir()) == ["model.onnx"]
    assert (converted["optimization_style"], converted["target_platform"]) == ("Fixed", "arm")
    # The config names the final file, not the converter's temporary path.
    assert "# - model.ort" in converted["required_operators"].read_text()


def test_ort_model_loads_and_matches_the_onnx_model(converted, float_model):
    x = inputs()
    np.testing.assert_allclose(outputs(converted["ort"], x), outputs(float_model, x), rtol=1e-5, atol=1e-5)


def test_config_lists_the_ops_the_optimized_model_runs(converted):
    # At level 'all' ORT fuses Conv+Relu into its own FusedConv kernel.
    ops = read_required_ops(converted["required_operators"])
    assert ops == {"ai.onnx": ["Flatten", "Gemm", "GlobalAveragePool"], "com.microsoft": ["FusedConv"]}


def test_basic_level_keeps_the_model_s_own_ops(float_model, tmp_path):
    result = convert_to_ort(model=float_model, out_dir=tmp_path, optimization_level="basic")
    assert read_required_ops(result["required_operators"]) == {
        "ai.onnx": ["Conv", "Flatten", "Gemm", "GlobalAveragePool", "Relu"],
    }


def test_int8_model_converts_to_int8_kernels(float_model, tmp_path):
    int8 = quantize_int8(model=float_model, out=tmp_path / "model.int8.onnx", calibration=inputs(32, seed=1))
    result = convert_to_ort(model=int8, out_dir=tmp_path / "mobile", optimization_style="Runtime")
    assert result["ort"].name == "model.int8.ort"
    assert "QLinearConv" in read_required_ops(result["required_operators"]).get("com.microsoft", [])
    x = inputs()
    got, ref = outputs(result["ort"], x), outputs(int8, x)
    np.testing.assert_allclose(got, ref, atol=0.05 * np.abs(ref).max())
    assert (got.argmax(1) == ref.argmax(1)).all()


def test_converter_failure_is_bad_input_with_its_last_line(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="example.custom")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("example.custom", 1)])
    path = tmp_path / "src" / "custom.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path))
    out_dir = tmp_path / "out"
    with pytest.raises(BadInput, match="custom.onnx: ONNX Runtime's ORT-format converter failed: .*NoSuchOp") as err:
        convert_to_ort(model=path, out_dir=out_dir)
    assert "\n" not in str(err.value)
    assert list(out_dir.iterdir()) == []
    assert sorted(p.name for p in path.parent.iterdir()) == ["custom.onnx"]


def test_bad_arguments_are_bad_input(float_model, tmp_path):
    with pytest.raises(BadInput, match="target_platform: 'x86' is not valid; valid: arm, amd64"):
        convert_to_ort(model=float_model, out_dir=tmp_path, target_platform="x86")
    with pytest.raises(BadInput, match="optimization_style: 'fixed' is not valid; valid: Fixed, Runtime"):
        convert_to_ort(model=float_model, out_dir=tmp_path, optimization_style="fixed")
    with pytest.raises(BadInput, match="no such model file"):
        convert_to_ort(model=tmp_path / "missing.onnx", out_dir=tmp_path)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(BadInput, match="not a readable ONNX model"):
        convert_to_ort(model=corrupt, out_dir=tmp_path / "out")


def test_read_required_ops_parses_opsets_types_and_comments(tmp_path):
    config = tmp_path / "required_operators_and_types.config"
    config.write_text(
        "# Generated from model/s:\n"
        "# - model.ort\n"
        "ai.onnx;13;Flatten,Gemm\n"
        'ai.onnx;1,11;Conv{"inputs": {"0": ["float"]}},GlobalAveragePool\n'
        "com.microsoft;1;QLinearConv\n"
    )
    assert read_required_ops(config) == {
        "ai.onnx": ["Conv", "Flatten", "Gemm", "GlobalAveragePool"],
        "com.microsoft": ["QLinearConv"],
    }
    bad = tmp_path / "bad.config"
    bad.write_text("just some words\n")
    with pytest.raises(BadInput, match="not a valid operator config"):
        read_required_ops(bad)
    with pytest.raises(BadInput, match="no such operator config file"):
        read_required_ops(tmp_path / "missing.config")


def test_optimization_style_follows_the_first_provider():
    assert optimization_style_for(["CPUExecutionProvider"]) == "Fixed"
    assert optimization_style_for(["NnapiExecutionProvider", "CPUExecutionProvider"]) == "Runtime"
    assert optimization_style_for(["XnnpackExecutionProvider", "CPUExecutionProvider"]) == "Runtime"
    assert optimization_style_for([]) == "Fixed"
