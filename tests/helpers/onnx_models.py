"""Small hand-built ONNX models for the quantization, plugin-EP and bench tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def tiny_convnet(path: Path, *, batch: int | str = "batch", seed: int = 0) -> Path:
    """Conv-Relu-Conv-Relu-GlobalAveragePool-Flatten-Gemm on 1x8x8 inputs, 10 logits.

    Each conv's output channels get very different weight magnitudes, so
    per-tensor weight scales would waste most of the int8 range on small
    channels and per-channel scales matter.
    """
    rng = np.random.default_rng(seed)

    def conv_weight(name, out_ch, in_ch):
        w = rng.normal(size=(out_ch, in_ch, 3, 3)) * np.sqrt(2.0 / (in_ch * 9))
        w *= np.geomspace(0.1, 3.0, out_ch)[:, None, None, None]
        return numpy_helper.from_array(w.astype(np.float32), name)

    inits = [
        conv_weight("w1", 8, 1), numpy_helper.from_array(rng.normal(size=8).astype(np.float32) * 0.1, "b1"),
        conv_weight("w2", 16, 8), numpy_helper.from_array(rng.normal(size=16).astype(np.float32) * 0.1, "b2"),
        numpy_helper.from_array((rng.normal(size=(10, 16)) * 0.5).astype(np.float32), "w3"),
        numpy_helper.from_array(np.zeros(10, np.float32), "b3"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["r2"], name="relu2"),
        helper.make_node("GlobalAveragePool", ["r2"], ["gap"], name="gap"),
        helper.make_node("Flatten", ["gap"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "w3", "b3"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
