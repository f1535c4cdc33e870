"""Which operators an ONNX Runtime mobile execution provider takes, from the tables the wheel ships.

The onnxruntime wheel carries the support tables its own mobile usability
checker reads (``onnxruntime/tools/mobile_helpers/*.md``): one markdown row
per operator, ``|domain:Op|caveats|``. We parse them the way that checker
(``usability_checker._SupportedOpsChecker``) does, so that an edgekd audit and
``python -m onnxruntime.tools.check_onnx_model_mobile_usability`` agree:

- only rows whose first cell holds ``domain:Op`` count;
- ``<br/>`` in a caveat becomes a space (the checker does the same); the rest
  of the caveat text is kept verbatim;
- op names use edgekd's spelling: default-domain (``ai.onnx``) ops bare
  (``Conv``), others as ``domain:Op`` (``com.microsoft:FusedConv``).

Two typos in the shipped tables are repaired, because keeping them would fail
models the provider runs (the upstream checker has the same false negatives):

- an op whose name is not an ONNX op but matches one ignoring case is renamed
  (the CoreML MLProgram table spells ``ArgMax`` as ``Argmax``);
- ``ai.onnx.Op`` (a dot where the colon belongs) is read as ``ai.onnx:Op``
  (the CoreML NeuralNetwork table has ``ai.onnx.ReduceSum``).

``repairs(provider)`` lists what was repaired so the generated profiles can
say so.

CoreML has two tables: NeuralNetwork (the EP's default model format, which
Apple has deprecated) and MLProgram (what the EP builds with provider option
``ModelFormat = "MLProgram"``; ORT >= 1.20 checks it first and it covers more
ops, e.g. LayerNormalization and Gelu). The checker reports both. edgekd's
``CoreMLExecutionProvider`` means MLProgram, and the apple-coreml profile sets
``ModelFormat = "MLProgram"`` so the profile and the runtime agree; the
NeuralNetwork table stays reachable as ``CoreMLExecutionProvider:NeuralNetwork``.
"""

from __future__ import annotations

import functools
from pathlib import Path

from edgekd.errors import BadInput

# provider name -> table file in onnxruntime/tools/mobile_helpers/
TABLES: dict[str, str] = {
    "NnapiExecutionProvider": "nnapi_supported_ops.md",
    "CoreMLExecutionProvider": "coreml_supported_mlprogram_ops.md",
    "CoreMLExecutionProvider:MLProgram": "coreml_supported_mlprogram_ops.md",
    "CoreMLExecutionProvider:NeuralNetwork": "coreml_supported_neuralnetwork_ops.md",
}

DEFAULT_DOMAINS = ("", "ai.onnx")

# XNNPACK has no table in the wheel. This is what its GetCapability takes, read
# from the onnxruntime sources (core/providers/xnnpack/xnnpack_execution_provider.cc
# registers the kernels, detail/node_support_checker.cc and each kernel's
# IsOnnxNodeSupported say when): fp32/int8 NHWC kernels only. Caveats use the
# NNAPI/CoreML tables' wording where it means the same, so the audit checks them.
XNNPACK_SOURCE = "onnxruntime source core/providers/xnnpack (xnnpack_execution_provider.cc, node_support_checker.cc)"
XNNPACK_SUPPORT: dict[str, str] = {
    "Conv": "Only 2D Conv is supported. Weights and bias should be constant. "
            "Input channels, height and width must be fixed.",
    "ConvTranspose": "Only 2D Conv is supported. Weight and bias must be constant.",
    "QLinearConv": "Only 2D Conv is supported. Weights and bias should be constant. "
                   "All quantization scales and zero points should be constant.",
    "MaxPool": "Only 2D Pool is supported.",
    "AveragePool": "Only 2D Pool is supported.",
    "Softmax": "",
    "Resize": "Only 2D Resize is supported.",
    "Gemm": "Input B must be constant. Input C if provided must be constant. "
            "Only alpha == 1.0 and beta == 1.0 are supported. Only fp32 inputs of at most 2 dimensions.",
    "MatMul": "Input B must be constant. Only fp32 inputs of at most 2 dimensions.",
    # taken only when fused into the Conv/MaxPool/AveragePool before them (ClipReluChecker)
    "Relu": "Runs in XNNPACK only fused into a preceding Conv, MaxPool or AveragePool.",
    "Clip": "Runs in XNNPACK only fused into a preceding Conv, MaxPool or AveragePool. "
            "Input min and max should be constant.",
    # QDQ node groups around a supported op become its quantized kernel
    "QuantizeLinear": "Taken only as part of a QDQ node group around an op XNNPACK runs. "
                      "All quantization scales and zero points should be constant.",
    "DequantizeLinear": "Taken only as part of a QDQ node group around an op XNNPACK runs. "
                        "All quantization scales and zero points should be constant.",
}


def op_id(domain: str, op_type: str) -> str:
    """edgekd's name for an operator: bare for the default domain, else 'domain:Op'."""
    return op_type if domain in DEFAULT_DOMAINS else f"{domain}:{op_type}"


def tables_dir() -> Path:
    import onnxruntime  # lazy: the CLI imports this module at startup

    return Path(onnxruntime.__file__).parent / "tools" / "mobile_helpers"


PROVIDERS = (*TABLES, "XnnpackExecutionProvider")


def table_path(provider: str) -> Path:
    if provider not in TABLES:
        raise BadInput(f"no operator support table for provider '{provider}'; valid: {', '.join(TABLES)}")
    path = tables_dir() / TABLES[provider]
    if not path.is_file():
        raise BadInput(f"{path}: support table missing from the installed onnxruntime wheel")
    return path


def table_source(provider: str) -> str:
    """Where a table came from, for a profile's ``ops.source``."""
    import onnxruntime

    if provider == "XnnpackExecutionProvider":
        return f"onnxruntime {onnxruntime.__version__}; {XNNPACK_SOURCE}"
    return f"onnxruntime {onnxruntime.__version__} tools/mobile_helpers/{table_path(provider).name}"


def _onnx_op_names() -> dict[str, str]:
    """lower-case name -> proper name, for every op in every domain onnx knows."""
    import onnx.defs

    names: dict[str, str] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        names.setdefault(schema.name.lower(), schema.name)
    return names


def _parse_row(line: str) -> tuple[str, str, str, str] | None:
    """(domain, op, caveat, repair-note) for a table row, None for anything else."""
    if not line.startswith("|"):
        return None
    pieces = line.strip().split("|")
    if len(pieces) != 4:  # '', op, caveat, ''
        return None
    cell, caveat = pieces[1], pieces[2].replace("<br/>", " ")
    note = ""
    if ":" not in cell:
        # the header, the separator, or the 'ai.onnx.Op' typo
        if not cell.startswith("ai.onnx.") or cell.count(".") != 2:
            return None
        note = f"'{cell}' read as 'ai.onnx:{cell.rsplit('.', 1)[1]}'"
        cell = "ai.onnx:" + cell.rsplit(".", 1)[1]
    domain, op = cell.split(":", 1)
    return domain, op, caveat, note


@functools.cache
def _load(provider: str) -> tuple[dict[str, str], tuple[str, ...]]:
    known = _onnx_op_names()
    support: dict[str, str] = {}
    repaired: list[str] = []
    for line in table_path(provider).read_text(encoding="utf-8").splitlines():
        row = _parse_row(line)
        if row is None:
            continue
        domain, op, caveat, note = row
        if domain in DEFAULT_DOMAINS and op.lower() in known and known[op.lower()] != op:
            note = f"'{op}' read as '{known[op.lower()]}'"
            op = known[op.lower()]
        if note:
            repaired.append(note)
        support[op_id(domain, op)] = caveat
    if not support:
        raise BadInput(f"{table_path(provider)}: no operator rows found; expected '|domain:Op|caveats|' lines")
    return support, tuple(repaired)


def load_support(provider: str) -> dict[str, str]:
    """Operators the provider takes -> their caveat text ('' where there is none)."""
    if provider == "XnnpackExecutionProvider":
        return dict(XNNPACK_SUPPORT)
    if provider not in TABLES:
        raise BadInput(f"no operator support data for provider '{provider}'; valid: {', '.join(PROVIDERS)}")
    return dict(_load(provider)[0])


def repairs(provider: str) -> list[str]:
    """Typos in the shipped table that load_support repaired (see the module docstring)."""
    return [] if provider == "XnnpackExecutionProvider" else list(_load(provider)[1])
