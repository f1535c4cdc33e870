"""edgekd.deploy.quantize: static int8 QDQ quantization through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, numpy_helper

from edgekd.deploy.quantize import quantize_int8, read_quant_info
from edgekd.errors import BadInput

from helpers.onnx_models import tiny_convnet


def samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 1, 8, 8)).astype(np.float32)


def run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


def weight_scales(path: Path) -> dict[str, int]:
    """For each Conv weight, the number of elements in its DequantizeLinear scale."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_by_output = {n.output[0]: n for n in model.graph.node if n.op_type == "DequantizeLinear"}
    sizes = {}
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        dq = dq_by_output[conv.input[1]]
        assert dq.input[0] in inits, "conv weight should be a quantized initializer"
        assert inits[dq.input[0]].dtype == np.int8
        sizes[conv.name or conv.output[0]] = inits[dq.input[1]].size
    return sizes


@pytest.fixture(scope="module")
def float_model(tmp_path_factory) -> Path:
    return tiny_convnet(tmp_path_factory.mktemp("float") / "model.onnx")


@pytest.fixture(scope="module")
def int8_model(float_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "model.int8.onnx"
    return quantize_int8(model=float_model, out=out, calibration=samples(64, seed=1))


def test_writes_qdq_model_with_int8_weights_and_metadata(int8_model):
    ops = {n.op_type for n in onnx.load(str(int8_model)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv", "Gemm"} <= ops
    info = read_quant_info(int8_model)
    assert info["format"] == "QDQ"
    assert info["activations"] == "int8"
    assert info["per_channel"] == "true"
    assert info["calibration_samples"] == "64"
    assert info["preprocess"] == "quant_pre_process"


def test_per_channel_gives_one_scale_per_output_channel(int8_model, float_model, tmp_path):
    assert sorted(weight_scales(int8_model).values()) == [8, 16]
    per_tensor = quantize_int8(model=float_model, out=tmp_path / "pt.onnx",
                               calibration=samples(64, seed=1), per_channel=False)
    assert sorted(weight_scales(per_tensor).values()) == [1, 1]
    # The model's channels differ 30x in weight magnitude: per-channel scales must help.
    x = samples(200, seed=2)
    ref = run(float_model, x)
    assert np.abs(run(int8_model, x) - ref).mean() < np.abs(run(per_tensor, x) - ref).mean()


def test_int8_outputs_track_the_float_model_on_held_out_inputs(int8_model, float_model):
    x = samples(200, seed=2)  # not the calibration samples
    ref, got = run(float_model, x), run(int8_model, x)
    err, scale = np.abs(got - ref), np.abs(ref).max()
    # Held-out inputs beyond the calibrated ranges are clipped, so the worst
    # case is looser than the typical error.
    assert err.mean() <= 0.01 * scale
    assert err.max() <= 0.1 * scale
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95


def test_fixed_batch_model_is_calibrated_in_its_own_batch_size(tmp_path):
    model = tiny_convnet(tmp_path / "b1.onnx", batch=1)
    out = quantize_int8(model=model, out=tmp_path / "b1.int8.onnx", calibration=samples(5, seed=1))
    assert read_quant_info(out)["calibration_samples"] == "5"
    assert run(out, samples(3, seed=2)).shape == (3, 10)


def test_leaves_no_temporary_files(float_model, tmp_path):
    out_dir = tmp_path / "out"
    quantize_int8(model=float_model, out=out_dir / "model.int8.onnx", calibration=samples(8, seed=1))
    assert sorted(p.name for p in out_dir.iterdir()) == ["model.int8.onnx"]
    assert sorted(p.name for p in float_model.parent.iterdir()) == ["model.onnx"]


def test_failure_leaves_existing_output_untouched(float_model, tmp_path, monkeypatch):
    import onnxruntime.quantization as oq

    out = tmp_path / "model.int8.onnx"
    out.write_bytes(b"previous model")

    def half_written(model_input, model_output, *args, **kwargs):
        Path(model_output).write_bytes(b"half a model")
        raise RuntimeError("interrupted\nsecond line")

    monkeypatch.setattr(oq, "quantize_static", half_written)
    with pytest.raises(BadInput, match="could not quantize.*interrupted") as err:
        quantize_int8(model=float_model, out=out, calibration=samples(8, seed=1))
    assert "\n" not in str(err.value)
    assert out.read_bytes() == b"previous model"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.int8.onnx"]


def test_failed_preprocessing_falls_back_and_is_recorded(float_model, tmp_path, monkeypatch):
    import onnxruntime.quantization.shape_inference as si

    def broken(*args, **kwargs):
        raise ValueError("cannot infer shapes")

    monkeypatch.setattr(si, "quant_pre_process", broken)
    out = quantize_int8(model=float_model, out=tmp_path / "m.onnx", calibration=samples(8, seed=1))
    assert read_quant_info(out)["preprocess"] == "skipped: ValueError: cannot infer shapes"
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(out)).graph.node}


@pytest.mark.parametrize(
    ("calibration", "message"),
    [
        (np.zeros((0, 1, 8, 8), np.float32), "no samples"),
        (np.zeros((4, 1, 9, 9), np.float32), r"shape \[4, 1, 9, 9\] does not fit input 'input'.*\[batch, 1, 8, 8\]"),
        (np.zeros((4, 8, 8), np.float32), "does not fit"),
        (np.zeros((4, 1, 8, 8), np.int64), "int64 is not valid"),
        (np.full((4, 1, 8, 8), np.nan, np.float32), "NaN or inf"),
        ([[0.0]], "list is not valid"),
    ],
)
def test_bad_calibration_is_bad_input(float_model, tmp_path, calibration, message):
    out = tmp_path / "m.onnx"
    with pytest.raises(BadInput, match=message):
        quantize_int8(model=float_model, out=out, calibration=calibration)
    assert not out.exists()


def test_bad_model_or_input_name_is_bad_input(float_model, tmp_path):
    x = samples(4, seed=1)
    with pytest.raises(BadInput, match="has no input 'image'; inputs: input"):
        quantize_int8(model=float_model, out=tmp_path / "m.onnx", calibration=x, input_name="image")
    with pytest.raises(BadInput, match="no such model file"):
        quantize_int8(model=tmp_path / "missing.onnx", out=tmp_path / "m.onnx", calibration=x)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not a protobuf\xff" * 10)
    with pytest.raises(BadInput, match="not a readable ONNX model"):
        quantize_int8(model=corrupt, out=tmp_path / "m.onnx", calibration=x)
    with pytest.raises(BadInput, match="activation_type: 'int4' is not valid; valid: int8, uint8"):
        quantize_int8(model=float_model, out=tmp_path / "m.onnx", calibration=x, activation_type="int4")


def test_fused_int8_kernels_match_the_qdq_math_on_this_host(int8_model, float_model):
    """ORT fuses QDQ groups into int8 kernels (QLinearConv, QGemm); on x86 without
    VNNI those add u8*s8 pairs in a saturating int16, which full 8-bit per-channel
    weights overflow. 7-bit weights (reduce_range) must keep the fused kernels equal
    to the plain dequantize-then-float graph, on whatever host runs the test."""
    weights = [i for i in onnx.load(str(int8_model)).graph.initializer if i.data_type == TensorProto.INT8
               and i.name.endswith("_quantized")]
    assert weights and all(np.abs(numpy_helper.to_array(w)).max() <= 64 for w in weights)
    assert read_quant_info(int8_model)["reduce_range"] == "true"
    x = samples(200, seed=2)
    ref = run(float_model, x)

    def run_at(level):
        so = ort.SessionOptions()
        so.graph_optimization_level = level
        session = ort.InferenceSession(str(int8_model), so, providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])

    plain = run_at(ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    fused = run_at(ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    assert np.abs(fused - plain).max() < 0.05 * np.abs(ref).max()
    assert np.abs(fused - ref).mean() < 2 * np.abs(plain - ref).mean()
