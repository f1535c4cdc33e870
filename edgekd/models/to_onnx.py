"""The one torch → ONNX call (`write_onnx`, TorchScript or dynamo exporter) and the in-memory proto the op
audit reads (`onnx_proto`, `node_module` naming the module of an exported node).
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from edgekd import defaults
from edgekd.errors import BadInput


# ---------------------------------------------------------------- torch → ONNX
def write_onnx(model: nn.Module, f: Any, *, input_shape: tuple[int, ...], opset: int, batch: int | None = None,
               exporter: str = defaults.EXPORTER) -> None:
    """The one torch → ONNX call: 'input' → 'logits' at `opset`, in eval mode (the model's mode
    is restored). The batch axis is dynamic unless `batch` fixes it. `f` is a path or a binary
    buffer. `exporter` is "torchscript" or "dynamo" (torch.export; it writes opset >= 18 and
    down-converts to `opset` where the ONNX version converter can; see defaults.EXPORTER)."""
    if exporter not in defaults.EXPORTERS:
        raise BadInput(f"exporter {exporter!r} is not valid; valid: {', '.join(defaults.EXPORTERS)}")
    was_training = model.training
    model.eval()
    names = dict(input_names=[defaults.INPUT_NAME], output_names=[defaults.OUTPUT_NAME])
    try:
        with torch.no_grad():
            if exporter == "dynamo":
                _export_dynamo(model, f, input_shape=input_shape, opset=opset, batch=batch, names=names)
            else:
                dynamic = None if batch else {defaults.INPUT_NAME: {0: "batch"}, defaults.OUTPUT_NAME: {0: "batch"}}
                torch.onnx.export(model, (torch.zeros(batch or 1, *input_shape),), f, dynamo=False,
                                  opset_version=opset, dynamic_axes=dynamic, **names)
    finally:
        model.train(was_training)


def _export_dynamo(model: nn.Module, f: Any, *, input_shape: tuple[int, ...], opset: int, batch: int | None,
                   names: dict[str, list[str]]) -> None:
    import contextlib
    import inspect
    import logging

    # torch.export specialises a dimension of size 1, so the example batch is 2 when dynamic.
    example = torch.zeros(batch or 2, *input_shape)
    arg = next(iter(inspect.signature(model.forward).parameters))
    shapes = None if batch else {arg: {0: torch.export.Dim("batch", min=1)}}
    quiet = logging.getLogger("onnxscript")   # its version converter logs a traceback on fallback
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # progress lines on stdout
            program = torch.onnx.export(model, (example,), None, dynamo=True, opset_version=opset,
                                        dynamic_shapes=shapes, verbose=False, **names)
    finally:
        quiet.setLevel(level)
    got = next(o.version for o in program.model_proto.opset_import if o.domain in ("", "ai.onnx"))
    if got != opset:
        raise BadInput(f"exporter 'dynamo': torch.export wrote opset {got} and the ONNX version converter could "
                       f"not bring it to opset {opset}; use exporter 'torchscript' or a profile with opset {got}")
    if batch is None:
        _name_batch_axis(program.model_proto)
    data = program.model_proto.SerializeToString()
    if hasattr(f, "write"):
        f.write(data)
    else:
        with open(f, "wb") as out:
            out.write(data)


def _name_batch_axis(proto: Any) -> None:
    # torch.export names the dynamic dimension after its Dim; the contract's manifest says "batch".
    for v in (*proto.graph.input, *proto.graph.output):
        dims = v.type.tensor_type.shape.dim
        if dims and dims[0].dim_param:
            dims[0].dim_param = "batch"


def onnx_proto(model: nn.Module, input_shape: tuple[int, ...], *, opset: int = defaults.OPSET):
    """Export `model` to an in-memory ONNX ModelProto with a dynamic batch axis."""
    import onnx

    buf = io.BytesIO()
    write_onnx(model, buf, input_shape=input_shape, opset=opset)
    return onnx.load_from_string(buf.getvalue())


def node_module(node_name: str) -> str:
    """'/features/features.1/body/body.0/body.0.2/Relu' → 'features.1.body.0.2'.

    The TorchScript exporter writes one scope per module, each named relative to its
    parent; a scope that the next one extends ('body' → 'body.0') is folded into it."""
    scopes = [p for p in node_name.split("/") if p][:-1]
    kept = [s for s, nxt in zip(scopes, scopes[1:] + [""]) if not nxt.startswith(s + ".") and nxt != s]
    return ".".join(kept) or "<model>"
