"""Static int8 quantization through onnxruntime.quantization, behind one function.

`quantize_int8` writes a QDQ model (QuantizeLinear/DequantizeLinear pairs around
float ops) calibrated on real samples. QDQ is the format ONNX Runtime recommends
since 1.11: the graph stays a plain ONNX graph that any runtime can read, and
each execution provider fuses the QDQ patterns into its own int8 kernels (the
CPU provider into QLinearConv and friends, XNNPACK and NNAPI into theirs).

How the model was made (preprocessing, types, calibration size) is recorded in
the output model's metadata_props under `edgekd.quant.*`; `read_quant_info`
reads it back for the manifest.

onnx and onnxruntime are imported inside the functions: the CLI imports this
module at startup, and onnxruntime.quantization pulls in sympy.
"""

from __future__ import annotations

import logging
import os
import tempfile
import uuid
from pathlib import Path

import numpy as np

from edgekd.errors import BadInput, first_line

log = logging.getLogger(__name__)

# Activations as signed int8 (S8S8 with int8 weights). ORT's quantization guide
# makes S8S8 in QDQ "the first choice", and its quantize_static guidance for
# Arm cores (our deployment targets: Cortex-A, XNNPACK) is symmetric QInt8 for
# both activations and weights without reduce_range. U8S8 is the x86-without-VNNI
# recommendation; on such hosts ORT converts S8 activations to U8 at load time
# itself (QDQS8ToU8Transformer unless session.qdqisint8allowed=1), so one int8
# model serves both kinds of host.
ACTIVATION_TYPE = "int8"
ACTIVATION_TYPES = ("int8", "uint8")
# Calibration batches when the model's batch dimension is dynamic. Small, so a
# calibration run holds little in memory; min/max do not depend on batch size.
CALIBRATION_BATCH = 16
# 7-bit weights (reduce_range) by default. On x86 ONNX Runtime rewrites our S8S8
# QDQ model to U8S8 at load time, and MLAS's U8S8 kernel on x86 without VNNI
# (AVX2's VPMADDUBSW) adds pairs of u8*s8 products in a saturating int16:
# 255*127*2 = 64770 overflows 32767. Per-channel scales stretch every channel's
# weights to the full +-127, so first layers (few input channels, inputs far
# from the zero point) saturate: on an AVX2 host the int8 model's logits were
# off by 0.10 on average instead of 0.011, and the default student's int8
# top-1 agreement fell to 0.967. With 7-bit weights 255*63*2 = 32130 fits.
# ORT's quantization guide recommends exactly this for non-VNNI x86; the cost
# is one bit of weight precision on hosts that would not have saturated.
REDUCE_RANGE = True
METADATA_PREFIX = "edgekd.quant."


def quantize_int8(
    *,
    model: Path,
    out: Path,
    calibration: np.ndarray,
    per_channel: bool = True,
    input_name: str = "input",
    activation_type: str = ACTIVATION_TYPE,
    reduce_range: bool = REDUCE_RANGE,
) -> Path:
    """Quantize `model` to a static int8 QDQ model at `out` and return `out`.

    `calibration` holds float samples shaped like the model's input, batch
    first. Weights are int8 (per output channel when `per_channel`; 7-bit when
    `reduce_range`, see REDUCE_RANGE), activations
    `activation_type`, with ranges from min/max over the calibration samples.
    `out` is written to a temporary name beside it and renamed, so a failure
    leaves any existing `out` as it was.
    """
    model, out = Path(model), Path(out)
    if activation_type not in ACTIVATION_TYPES:
        raise BadInput(f"activation_type: {activation_type!r} is not valid; valid: {', '.join(ACTIVATION_TYPES)}")
    samples = _check_samples(calibration, input_name)
    batches = _batches(samples, input_name, _input_batch_dim(model, input_name, samples))

    out.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would carry over to the final file.
    tmp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        with tempfile.TemporaryDirectory(prefix="edgekd-quant-") as work:
            source, preprocess = _preprocess(model, Path(work) / "preprocessed.onnx")
            _quantize(source, tmp, batches, per_channel=per_channel,
                      activation_type=activation_type, reduce_range=reduce_range)
        _record(tmp, {
            "format": "QDQ",
            "weights": "int8",
            "activations": activation_type,
            "per_channel": str(per_channel).lower(),
            "reduce_range": str(reduce_range).lower(),
            "calibration_method": "MinMax",
            "calibration_samples": str(sum(len(feed[input_name]) for feed in batches)),
            "preprocess": preprocess,
        })
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def read_quant_info(model: Path) -> dict[str, str]:
    """The `edgekd.quant.*` metadata of a model made by `quantize_int8` (empty if none)."""
    proto = _load(Path(model), load_external_data=False)
    return {
        p.key[len(METADATA_PREFIX):]: p.value
        for p in proto.metadata_props
        if p.key.startswith(METADATA_PREFIX)
    }


# --- checks -----------------------------------------------------------------


def _load(path: Path, *, load_external_data: bool = True):
    import onnx

    if not path.is_file():
        raise BadInput(f"{path}: no such model file")
    try:
        return onnx.load(str(path), load_external_data=load_external_data)
    except Exception as exc:  # protobuf's DecodeError and friends: all mean "not an ONNX file"
        raise BadInput(f"{path}: not a readable ONNX model ({_first_line(exc)})") from exc


def _check_samples(calibration: np.ndarray, input_name: str) -> np.ndarray:
    if not isinstance(calibration, np.ndarray) or not np.issubdtype(calibration.dtype, np.floating):
        kind = getattr(calibration, "dtype", type(calibration).__name__)
        raise BadInput(f"calibration: {kind} is not valid; valid: a float32 numpy array shaped like {input_name!r}")
    if calibration.ndim == 0 or len(calibration) == 0:
        raise BadInput(f"calibration: no samples (shape {calibration.shape}); valid: at least one sample, batch first")
    if not np.isfinite(calibration).all():
        # One NaN or inf would make a min/max range, and so every scale after it, meaningless.
        raise BadInput("calibration: contains NaN or inf; valid: finite float32 samples")
    return np.ascontiguousarray(calibration, dtype=np.float32)


def _input_batch_dim(model: Path, input_name: str, samples: np.ndarray) -> int | None:
    """The model input's fixed batch size (None when dynamic), after checking that
    the samples' rank and other dimensions fit that input."""
    graph = _load(model, load_external_data=False).graph
    initializers = {init.name for init in graph.initializer}
    inputs = {i.name: i for i in graph.input if i.name not in initializers}
    if input_name not in inputs:
        raise BadInput(f"{model}: has no input {input_name!r}; inputs: {', '.join(inputs) or 'none'}")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in inputs[input_name].type.tensor_type.shape.dim]
    if len(samples.shape) != len(dims) or any(
        isinstance(want, int) and want != got for want, got in zip(dims[1:], samples.shape[1:])
    ):
        raise BadInput(
            f"calibration: shape {list(samples.shape)} does not fit input {input_name!r} of {model}, "
            f"which is {_shape_text(dims)} (batch first)"
        )
    fixed = dims[0] if isinstance(dims[0], int) else None
    if fixed is not None and len(samples) < fixed:
        raise BadInput(f"calibration: {len(samples)} samples; {model} has a fixed batch of {fixed}")
    return fixed


def _batches(samples: np.ndarray, input_name: str, fixed_batch: int | None) -> list[dict[str, np.ndarray]]:
    """Calibration feeds: batches of the model's fixed batch size (a short
    remainder is dropped, as the model cannot take it), else of CALIBRATION_BATCH."""
    size = fixed_batch or CALIBRATION_BATCH
    stop = len(samples) - len(samples) % size if fixed_batch else len(samples)
    return [{input_name: samples[i:i + size]} for i in range(0, stop, size)]


def _shape_text(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _first_line(exc: BaseException) -> str:
    line = first_line(exc)
    return f"{type(exc).__name__}: {line}" if str(exc).strip() else line


# --- steps ------------------------------------------------------------------


def _preprocess(model: Path, dest: Path) -> tuple[Path, str]:
    """ORT's recommended pre-quantization pass: shape inference (so every tensor
    has a shape and can be quantized) and ORT's basic graph optimizations
    (BatchNorm folded into Conv, etc.). It can fail on unusual models; the
    quantizer then works from the model as it is, and the reason is recorded."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        quant_pre_process(str(model), str(dest))
    except Exception as exc:  # any failure here only costs some quantization quality
        reason = f"skipped: {_first_line(exc)}"
        log.warning("%s: quantization preprocessing %s; quantizing the model as it is", model, reason)
        return model, reason
    return dest, "quant_pre_process"


def _quantize(source: Path, dest: Path, batches: list[dict[str, np.ndarray]], *,
              per_channel: bool, activation_type: str, reduce_range: bool) -> None:
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    activations = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}[activation_type]
    try:
        quantize_static(
            str(source),
            str(dest),
            _reader(batches),
            quant_format=QuantFormat.QDQ,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=activations,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    except Exception as exc:  # ORT raises bare ValueError/RuntimeError/Fail for models it cannot quantize
        raise BadInput(f"{source}: onnxruntime could not quantize it ({_first_line(exc)})") from exc


def _reader(batches: list[dict[str, np.ndarray]]):
    """A CalibrationDataReader over prepared feeds (ORT's calibrator may rewind it)."""
    from onnxruntime.quantization import CalibrationDataReader

    class ArrayReader(CalibrationDataReader):
        def __init__(self) -> None:
            self.rewind()

        def get_next(self):
            return next(self._feeds, None)

        def rewind(self) -> None:
            self._feeds = iter(batches)

    return ArrayReader()


def _record(path: Path, info: dict[str, str]) -> None:
    """Store `info` in the model's metadata_props and fsync it before the rename."""
    import onnx

    proto = onnx.load(str(path))
    kept = [p for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    for key, value in info.items():
        proto.metadata_props.add(key=METADATA_PREFIX + key, value=value)
    with open(path, "wb") as f:
        f.write(proto.SerializeToString())
        f.flush()
        os.fsync(f.fileno())
