"""Operator audit: which nodes of an ONNX model a target's runtime will not take.

The audit reads the graph the target's runtime will see, not the graph the
exporter wrote: like onnxruntime's mobile usability checker
(``onnxruntime.tools.check_onnx_model_mobile_usability``), it first runs the
model through ONNX Runtime's *basic* optimizations on the CPU EP and saves the
result (``SessionOptions.optimized_model_filepath``). That pass folds
constants, drops redundant nodes, fuses Conv+BatchNormalization and
Conv+Add/Mul, and inlines function ops that have no kernel (ORT 1.32 inlines
``HardSwish`` into ``HardSigmoid`` + ``Mul``). Basic level creates no
``com.microsoft`` ops: those fusions (FusedConv, QuickGelu, ...) belong to the
*extended* level, which the mobile tools do not apply before partitioning, so
neither do we. A ``com.microsoft`` op in an audited graph therefore came from
the model itself.

A node is supported when its op is in the profile's ``ops.allow`` and it keeps
every caveat in ``ops.caveats`` that can be checked from the graph (rank of a
Conv, constant weights, Pad mode, ...; see ``RULES``). A caveat sentence no
rule understands is listed in ``AuditReport.notes`` as not checked, as the
upstream checker does.

Nodes an optimization created get no name; the audit names them after the
node of the original graph they came from (same output, else same inputs),
failing that after their position: ``<unnamed Conv #3>``.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd.deploy.ep_support import op_id
from edgekd.deploy.targets import TargetProfile, load_target
from edgekd.errors import BadInput, first_line

if TYPE_CHECKING:
    from edgekd.checks import Failure

NOT_ALLOWED = "not in ops.allow"
# Providers that take only nodes whose inputs have fixed shapes (the upstream
# checker's require_fixed_input_sizes); the audit notes dynamic shapes for them.
FIXED_SHAPE_PROVIDERS = ("NnapiExecutionProvider",)


# ---------------------------------------------------------------- report
@dataclass
class UnsupportedOp:
    """One op type the target does not run, the nodes that use it, and why (not allowed, or a caveat)."""

    op: str
    nodes: list[str]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "nodes": list(self.nodes), "reason": self.reason}


@dataclass
class AuditReport:
    """What the target's runtime would see: ops used, unsupported ops, and provider coverage."""

    target: str
    used: list[str]
    unsupported: list[UnsupportedOp]
    n_nodes: int
    n_supported_nodes: int
    graph: str = "optimized"          # 'optimized' (ORT basic) or 'as exported'
    notes: list[str] = field(default_factory=list)
    partition: dict[str, Any] | None = None   # ONNX Runtime's own assignment (see real_partition)

    @property
    def coverage(self) -> float:
        """Share of nodes the target's provider would take (1.0 for an empty graph)."""
        return self.n_supported_nodes / self.n_nodes if self.n_nodes else 1.0

    @property
    def passed(self) -> bool:
        """No unsupported op in the static audit, and, where the target's provider ran here,
        a session that built with no node left to the fallback provider."""
        real = self.partition or {}
        return not self.unsupported and not (real.get("ran") and not real.get("passed"))

    @property
    def unsupported_ops(self) -> list[str]:
        return sorted({u.op for u in self.unsupported})

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target, "graph": self.graph,
            "used": list(self.used),
            "unsupported": [u.to_dict() for u in self.unsupported],
            "n_nodes": self.n_nodes, "n_supported_nodes": self.n_supported_nodes,
            "coverage": round(self.coverage, 6), "passed": self.passed,
            "notes": list(self.notes), "partition": self.partition,
        }

    def format_lines(self) -> list[str]:
        """One line per unsupported op and reason, with its node names, for error messages."""
        lines = [
            f"{u.op} ({len(u.nodes)} node{'s' if len(u.nodes) != 1 else ''}): {u.reason}: {', '.join(u.nodes)}"
            for u in self.unsupported
        ]
        real = self.partition or {}
        if real.get("ran") and not real.get("passed"):
            lines.append(f"ONNX Runtime's partition: {real['summary']}")
        return lines

    def failures(self) -> list["Failure"]:
        """One `Failure` per unsupported op: value = its node count, limit 0."""
        from edgekd.checks import Failure

        lines = self.format_lines()
        out = [Failure("audit", u.op, len(u.nodes), 0, detail=line) for u, line in zip(self.unsupported, lines)]
        real = self.partition or {}
        if real.get("ran") and not real.get("passed"):  # ONNX Runtime left nodes to another provider
            out.append(Failure("audit", "partition", len(real.get("fallback_nodes") or []) if real.get("built", True)
                               else None, 0, detail=lines[-1]))
        return out


# ---------------------------------------------------------------- graph facts
class _Graph:
    """What the caveat rules need to know about a (flattened) graph."""

    def __init__(self, model: Any) -> None:
        import onnx

        self.onnx = onnx
        self.tensors: dict[str, Any] = {}     # constant name -> TensorProto
        self.value_info: dict[str, Any] = {}  # value name -> ValueInfoProto
        self.producer: dict[str, Any] = {}    # value name -> node that makes it
        self.consumers: dict[str, list[Any]] = {}
        graph_inputs: set[str] = set()
        for g in _graphs(model.graph):
            graph_inputs.update(i.name for i in g.input)
            for init in g.initializer:
                self.tensors[init.name] = init
            for vi in (*g.input, *g.output, *g.value_info):
                self.value_info[vi.name] = vi
            for node in g.node:
                for o in node.output:
                    self.producer[o] = node
                for i in node.input:
                    self.consumers.setdefault(i, []).append(node)
                if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
                    for a in node.attribute:
                        if a.name == "value" and a.HasField("t"):
                            self.tensors[node.output[0]] = a.t
        # an initializer that is also a graph input can be overridden at run time: not constant
        for name in graph_inputs:
            self.tensors.pop(name, None)

    def is_const(self, name: str) -> bool:
        """A constant, or a QDQ weight: DequantizeLinear of constants, which the EPs' QDQ
        node units take as a constant quantized weight."""
        return name in self.tensors or self._dq_source(name) is not None

    def _dq_source(self, name: str) -> str | None:
        node = self.producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.domain not in ("", "ai.onnx"):
            return None
        ok = all(i in self.tensors for i in node.input if i)
        return node.input[0] if ok else None

    def value(self, name: str) -> Any | None:
        """The constant's values as numpy, None when unknown or stored outside the model."""
        from onnx import numpy_helper

        t = self.tensors.get(name)
        if t is None:
            return None
        try:
            return numpy_helper.to_array(t)
        except Exception:  # external data not loaded: the caveat stays unchecked
            return None

    def rank(self, name: str) -> int | None:
        dims = self.dims(name)
        return None if dims is None else len(dims)

    def dims(self, name: str) -> list[int | None] | None:
        name = self._dq_source(name) or name
        if name in self.tensors:
            return list(self.tensors[name].dims)
        vi = self.value_info.get(name)
        if vi is None or not vi.type.HasField("tensor_type") or not vi.type.tensor_type.HasField("shape"):
            return None
        return [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]

    def elem_type(self, name: str) -> int | None:
        if name in self.tensors:
            return self.tensors[name].data_type
        vi = self.value_info.get(name)
        if vi is None or not vi.type.HasField("tensor_type"):
            return None
        return vi.type.tensor_type.elem_type or None

    def is_fixed(self, name: str) -> bool:
        dims = self.dims(name)
        return dims is not None and all(d for d in dims)


def _graphs(graph: Any):
    """The graph and every subgraph (If/Loop/Scan bodies), outermost first."""
    yield graph
    for node in graph.node:
        for a in node.attribute:
            if a.HasField("g"):
                yield from _graphs(a.g)
            for g in a.graphs:
                yield from _graphs(g)


def _attr(node: Any, name: str, default: Any = None) -> Any:
    import onnx

    for a in node.attribute:
        if a.name == name:
            value = onnx.helper.get_attribute_value(a)
            return value.decode() if isinstance(value, bytes) else value
    return default


def _has_attr(node: Any, name: str) -> bool:
    return any(a.name == name for a in node.attribute)


def _inp(node: Any, i: int) -> str:
    """Input i's name, '' when the optional input is absent."""
    return node.input[i] if i < len(node.input) else ""


# ---------------------------------------------------------------- caveat rules
# Each rule finds a sentence in a caveat (the tables' wording, see ep_support)
# and says whether a node breaks it. A rule returns False when the graph does not
# tell (unknown shape, external data): the audit only fails what it can show.
Check = Callable[[Any, _Graph], bool]

_WEIGHT_INPUTS = {"Conv": (1, 2), "ConvTranspose": (1, 2), "QLinearConv": (3, 8)}
_BIAS_INPUT = {"Conv": 2, "ConvTranspose": 2, "QLinearConv": 8}
_QPARAM_INPUTS = {
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
    "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "QLinearAdd": (1, 2, 4, 5, 6, 7), "QLinearMul": (1, 2, 4, 5, 6, 7),
    "QLinearAveragePool": (1, 2, 3, 4), "QLinearGlobalAveragePool": (1, 2, 3, 4),
    "QLinearSigmoid": (1, 2, 3, 4), "QLinearLeakyRelu": (1, 2, 3, 4),
}
_FLOAT, _FLOAT16, _INT32 = 1, 10, 6  # onnx.TensorProto enum values


def _not_const(g: _Graph, node: Any, indices: tuple[int, ...]) -> bool:
    return any(_inp(node, i) and not g.is_const(_inp(node, i)) for i in indices)


def _spatial_rank(node: Any, g: _Graph) -> int | None:
    """Spatial dimensions of a conv/pool/resize node: weight rank, kernel_shape, or input rank."""
    weight = _WEIGHT_INPUTS.get(node.op_type, (None,))[0]
    if weight is not None and (r := g.rank(_inp(node, weight))) is not None:
        return r - 2
    kernel = _attr(node, "kernel_shape")
    if kernel:
        return len(kernel)
    r = g.rank(_inp(node, 0))
    return None if r is None else r - 2


def _spatial_not(*ok: int) -> Check:
    def check(node: Any, g: _Graph) -> bool:
        r = _spatial_rank(node, g)
        return r is not None and r not in ok
    return check


def _inputs_not_const(*indices: int) -> Check:
    return lambda node, g: _not_const(g, node, indices)


def _attr_not(name: str, default: Any, *ok: Any) -> Check:
    return lambda node, g: _attr(node, name, default) not in ok


def _pads_negative(node: Any, g: _Graph) -> bool:
    pads = g.value(_inp(node, 1))
    return pads is not None and bool((pads < 0).any())


def _pads_beyond_last_two(node: Any, g: _Graph) -> bool:
    pads = g.value(_inp(node, 1))
    if pads is None or _inp(node, 3):  # explicit axes: cannot map pads to dims here
        return False
    r = len(pads) // 2
    return bool((pads[: r - 2] != 0).any() or (pads[r : 2 * r - 2] != 0).any())


def _inputs_over_2d_or_not_fp32(node: Any, g: _Graph) -> bool:
    ranks = [g.rank(_inp(node, i)) for i in (0, 1)]
    return any(r is not None and r > 2 for r in ranks) or _types_not((0,), (_FLOAT,))(node, g)


def _chw_not_fixed(node: Any, g: _Graph) -> bool:
    dims = g.dims(_inp(node, 0))
    return dims is not None and len(dims) == 4 and not all(dims[1:])


def _split_uneven(node: Any, g: _Graph) -> bool:
    if _inp(node, 1):  # explicit split sizes
        return False
    dims = g.dims(_inp(node, 0))
    if not dims:
        return False
    axis = _attr(node, "axis", 0)
    size = dims[axis] if -len(dims) <= axis < len(dims) else None
    return size is not None and size % len(node.output) != 0


def _crd_dynamic(node: Any, g: _Graph) -> bool:
    return _attr(node, "mode", "DCR") == "CRD" and not g.is_fixed(_inp(node, 0))


# ops XNNPACK has kernels for: an activation fuses into, and a QDQ group forms around, these
_XNNPACK_FUSE_INTO = ("Conv", "MaxPool", "AveragePool")
_XNNPACK_QDQ_TARGETS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "Softmax", "Resize", "Gemm", "MatMul")


def _not_fused(node: Any, g: _Graph) -> bool:
    producer = g.producer.get(_inp(node, 0))
    return producer is None or producer.op_type not in _XNNPACK_FUSE_INTO


def _not_in_qdq_group(node: Any, g: _Graph) -> bool:
    if node.op_type == "DequantizeLinear":
        return not any(c.op_type in _XNNPACK_QDQ_TARGETS for c in g.consumers.get(node.output[0], []))
    producer = g.producer.get(_inp(node, 0))
    return producer is None or producer.op_type not in _XNNPACK_QDQ_TARGETS


def _gemm_b(node: Any, g: _Graph) -> bool:
    return not g.is_const(_inp(node, 1)) and _attr(node, "transB", 0) != 1


def _slope_shape(node: Any, g: _Graph) -> bool:
    dims = g.dims(_inp(node, 1))
    if dims is None or None in dims:
        return False
    n = 1
    for d in dims:
        n *= d
    return not (n == 1 or (len(dims) == 3 and dims[1:] == [1, 1]))


def _input_rank_not(i: int, rank: int) -> Check:
    def check(node: Any, g: _Graph) -> bool:
        r = g.rank(_inp(node, i))
        return r is not None and r != rank
    return check


def _input_rank_over(i: int, rank: int) -> Check:
    def check(node: Any, g: _Graph) -> bool:
        r = g.rank(_inp(node, i))
        return r is not None and r > rank
    return check


def _types_not(indices: tuple[int, ...], ok: tuple[int, ...]) -> Check:
    def check(node: Any, g: _Graph) -> bool:
        types = [g.elem_type(_inp(node, i)) for i in indices if _inp(node, i)]
        return any(t is not None and t not in ok for t in types)
    return check


def _gather_indices(node: Any, g: _Graph) -> bool:
    return not g.is_const(_inp(node, 1)) and g.elem_type(_inp(node, 1)) not in (None, _INT32)


def _resize_nearest_mode(node: Any, g: _Graph) -> bool:
    return _attr(node, "mode", "nearest") == "nearest" and _attr(node, "nearest_mode", "round_prefer_floor") != "floor"


def _resize_scales_sizes(node: Any, g: _Graph) -> bool:
    return _not_const(g, node, (2, 3))


@dataclass(frozen=True)
class Rule:
    """A caveat rule: a caveat text matching `pattern` is broken when `broken(node, graph)` holds."""

    pattern: re.Pattern[str]
    broken: Callable[[Any, _Graph], bool]


def _rule(pattern: str, broken: Check) -> Rule:
    return Rule(re.compile(pattern), broken)


RULES: tuple[Rule, ...] = (
    _rule(r"Only 2D (Conv|Pool|Resize) is supported", _spatial_not(2)),
    _rule(r"Only 1D/2D Conv is supported", _spatial_not(1, 2)),
    _rule(r"Weights? and bias (should|must) be constant",
          lambda n, g: _not_const(g, n, _WEIGHT_INPUTS.get(n.op_type, (1, 2)))),
    _rule(r"Bias if provided must be constant", lambda n, g: _not_const(g, n, (_BIAS_INPUT.get(n.op_type, 2),))),
    _rule(r"Only constant mode", _attr_not("mode", "constant", "constant")),
    _rule(r"last two dim padding", _pads_beyond_last_two),
    _rule(r"Input pads and constant_value should be constant", _inputs_not_const(1, 2)),
    _rule(r"pads values should be non-negative", _pads_negative),
    _rule(r"If provided, axes should be constant", _inputs_not_const(3)),
    _rule(r"Only DCR mode DepthToSpace", _attr_not("mode", "DCR", "DCR")),
    _rule(r"quantization scales and zero points should be constant",
          lambda n, g: _not_const(g, n, _QPARAM_INPUTS.get(n.op_type, (1, 2)))),
    _rule(r"If input B is not constant, transB should be 1", _gemm_b),
    _rule(r"Input B (should|must) be constant", _inputs_not_const(1)),
    _rule(r"Number of splits must evenly divide split axis size", _split_uneven),
    _rule(r"If 'mode' is 'CRD' the input must have a fixed shape", _crd_dynamic),
    _rule(r"Runs in XNNPACK only fused into a preceding Conv, MaxPool or AveragePool", _not_fused),
    _rule(r"Taken only as part of a QDQ node group around an op XNNPACK runs", _not_in_qdq_group),
    _rule(r"Input C if provided must be constant", _inputs_not_const(2)),
    _rule(r"Only alpha == 1\.0 and beta == 1\.0",
          lambda n, g: (_attr(n, "alpha", 1.0), _attr(n, "beta", 1.0)) != (1.0, 1.0)),
    _rule(r"Only fp32 inputs of at most 2 dimensions", _inputs_over_2d_or_not_fp32),
    _rule(r"Input min and max should be constant", _inputs_not_const(1, 2)),
    _rule(r"Input channels, height and width must be fixed", _chw_not_fixed),
    _rule(r"Input axes should be constant", _inputs_not_const(1)),
    _rule(r"[Ii]nput split should be constant if provided|If provided, `splits` must be constant",
          _inputs_not_const(1)),
    _rule(r"starts/ends/axes/steps must be constant|`starts`, `ends`, `axes`, and `steps` should be constant",
          _inputs_not_const(1, 2, 3, 4)),
    _rule(r"batch_dims must be 0", _attr_not("batch_dims", 0, 0)),
    _rule(r"Input slope should be constant", _inputs_not_const(1)),
    _rule(r"slope should either have shape \[C, 1, 1\] or have 1 element", _slope_shape),
    _rule(r"SAME_UPPER/SAME_LOWER is not supported", _attr_not("auto_pad", "NOTSET", "NOTSET", "VALID")),
    _rule(r"output_shape is not supported", lambda n, g: _has_attr(n, "output_shape")),
    _rule(r"output_padding must have default values", lambda n, g: any(_attr(n, "output_padding", []))),
    _rule(r"Attribute `start` with non-default value", _attr_not("start", 0, 0)),
    _rule(r"Attribute `end` is not supported", lambda n, g: _has_attr(n, "end")),
    _rule(r"\b4D input\b", _input_rank_not(0, 4)),
    _rule(r"`indices` with scalar value is not supported", lambda n, g: g.rank(_inp(n, 1)) == 0),
    _rule(r"Input indices should be constant if not int32", _gather_indices),
    _rule(r"both inputs are fp32", _types_not((0, 1), (_FLOAT,))),
    _rule(r"`X`/`Y` branches must be float or float16", _types_not((1, 2), (_FLOAT, _FLOAT16))),
    _rule(r"Input rank up to 5", _input_rank_over(0, 5)),
    _rule(r"`coordinate_transformation_mode` == `asymmetric`",
          _attr_not("coordinate_transformation_mode", "half_pixel", "asymmetric")),
    _rule(r"`mode` == `linear` or `nearest`", _attr_not("mode", "nearest", "linear", "nearest")),
    _rule(r"`nearest_mode` == `floor`", _resize_nearest_mode),
    _rule(r"`exclude_outside` == false", _attr_not("exclude_outside", 0, 0)),
    _rule(r"`scales` or `sizes` must be constant", _resize_scales_sizes),
)

_SENTENCE_END = re.compile(r"(?<=[.])\s+")


def _sentence_at(text: str, pos: int) -> str:
    """The sentence of a caveat that holds character pos."""
    start = 0
    for m in _SENTENCE_END.finditer(text):
        if m.start() >= pos:
            return text[start:m.start()].strip()
        start = m.end()
    return text[start:].strip()


def _rules_for(caveat: str) -> list[tuple[Rule, str]]:
    """The rules a caveat text asks for, each with the sentence it came from."""
    out = []
    for rule in RULES:
        m = rule.pattern.search(caveat)
        if m:
            out.append((rule, _sentence_at(caveat, m.start())))
    return out


# Sentences in the tables that explain rather than restrict.
_INFORMATIONAL = re.compile(r"support can be added if needed|^Produced by ORT's|^Decomposed into")


def unchecked_caveats(caveat: str) -> list[str]:
    """Sentences of a caveat that restrict a node but that no rule checks."""
    covered = {s for _, s in _rules_for(caveat)}
    return [s for s in _SENTENCE_END.split(caveat.strip())
            if s and s not in covered and not _INFORMATIONAL.search(s)]


# ---------------------------------------------------------------- node names
def _node_names(nodes: list[Any], original: list[Any] | None) -> list[str]:
    """A name for every node: its own, else its origin's in the original graph, else its position."""
    by_output: dict[str, str] = {}
    named_originals: list[tuple[set[str], str]] = []
    for n in original or []:
        if n.name:
            for o in n.output:
                by_output.setdefault(o, n.name)
            named_originals.append(({i for i in n.input if i}, n.name))
    names = []
    for index, n in enumerate(nodes):
        if n.name:
            names.append(n.name)
            continue
        name = next((by_output[o] for o in n.output if o in by_output), None)
        if name is None:
            data_inputs = {i for i in n.input if i}
            name = next((nm for ins, nm in named_originals if data_inputs and data_inputs <= ins), None)
        names.append(name or f"<unnamed {n.op_type} #{index}>")
    return names


# ---------------------------------------------------------------- loading
def _load(model: str | Path | Any) -> tuple[Any, str]:
    """(ModelProto, label for messages). A missing or corrupt file is bad input."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, "<in-memory model>"
    path = Path(model)
    if not path.is_file():
        raise BadInput(f"{path}: ONNX model not found")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as e:  # DecodeError and friends: one line, no traceback
        raise BadInput(f"{path}: not a readable ONNX model ({type(e).__name__}: {first_line(e)})") from None
    if not proto.HasField("graph") or not (proto.graph.node or proto.graph.output):
        raise BadInput(f"{path}: not an ONNX model (no graph found)")
    return proto, str(path)


def _optimize(model: Any, path: str | None, tmp: Path) -> tuple[Any | None, str]:
    """The model after ORT basic optimizations, as the mobile checker computes it; (None, why) if ORT refuses."""
    import onnx

    from edgekd.runtime.session import optimize

    why = optimize(path if path is not None else model.SerializeToString(), tmp / "optimized.onnx")
    if why:
        return None, why
    return onnx.load(str(tmp / "optimized.onnx"), load_external_data=False), ""


def _with_shapes(model: Any) -> Any:
    import onnx

    try:
        return onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is a help, not a requirement
        return model


# ---------------------------------------------------------------- audit
def _audit_graph(model: Any, original: Any | None, target: TargetProfile) -> AuditReport:
    g = _Graph(model)
    nodes = [n for graph in _graphs(model.graph) for n in graph.node]
    orig_nodes = [n for graph in _graphs(original.graph) for n in graph.node] if original is not None else None
    names = _node_names(nodes, orig_nodes)

    groups: dict[tuple[str, str], list[str]] = {}
    unsupported_nodes = 0
    used: set[str] = set()
    unchecked: dict[str, list[str]] = {}
    for node, name in zip(nodes, names):
        op = op_id(node.domain, node.op_type)
        used.add(op)
        if op not in target.ops_allow:
            reasons = [NOT_ALLOWED]
        else:
            caveat = target.ops_caveats.get(op, "")
            reasons = [f"caveat: {s}" for rule, s in _rules_for(caveat) if rule.broken(node, g)]
            if caveat and op not in unchecked:
                unchecked[op] = unchecked_caveats(caveat)
        for reason in reasons:
            groups.setdefault((op, reason), []).append(name)
        unsupported_nodes += bool(reasons)

    notes = [f"{op}: caveat not checked: {s}" for op, ss in sorted(unchecked.items()) for s in ss]
    dynamic = sum(1 for n in nodes if not all(g.is_fixed(i) or g.is_const(i) for i in n.input if i))
    if dynamic and any(p.name in FIXED_SHAPE_PROVIDERS for p in target.providers):
        notes.append(f"{dynamic} of {len(nodes)} nodes have inputs without a fixed shape; NNAPI takes only "
                     "fixed shapes (python -m onnxruntime.tools.make_dynamic_shape_fixed)")
    return AuditReport(
        target=target.name,
        used=sorted(used),
        unsupported=[UnsupportedOp(op, nodes_, reason) for (op, reason), nodes_ in sorted(groups.items())],
        n_nodes=len(nodes),
        n_supported_nodes=len(nodes) - unsupported_nodes,
        notes=notes,
    )


def audit_model(model: str | Path | Any, target: TargetProfile | str | Path, *, optimized: bool = True) -> AuditReport:
    """Audit a model (path or onnx.ModelProto) against a target's operators.

    With ``optimized`` (the default) the graph is the one ONNX Runtime's basic
    optimizations leave, as the target's runtime sees it. Where ORT cannot load
    the model (an op it has no kernel for), the exported graph is audited and a
    note says why.
    """
    target = load_target(target)
    proto, label = _load(model)
    if not optimized:
        report = _audit_graph(_with_shapes(proto), None, target)
        report.graph = "as exported"
        return report
    with tempfile.TemporaryDirectory(prefix="edgekd-audit-") as tmp:
        path = None if label == "<in-memory model>" else label
        opt, why = _optimize(proto, path, Path(tmp))
        if opt is None:
            report = _audit_graph(_with_shapes(proto), None, target)
            report.graph = "as exported"
            report.notes.insert(0, f"ONNX Runtime could not load the model, so it was audited as exported: {why}")
            return report
        return _audit_graph(_with_shapes(opt), proto, target)


def audit_file(path: str | Path, target_name_or_path: str | Path | TargetProfile) -> AuditReport:
    """`edgekd audit MODEL.onnx --target T`: the static audit plus, where the target's provider
    can run here, ONNX Runtime's real partition. The CLI exits 1 when ``not report.passed``."""
    target = load_target(target_name_or_path)
    report = audit_model(path, target)
    report.partition = real_partition(path, target)
    return report


def real_partition(model: str | Path, target: TargetProfile) -> dict[str, Any]:
    """Build a session through the target's providers (as bench does) and read ONNX Runtime's
    node -> provider assignment (edgekd.runtime.session.partition): here, or with the device's own
    onnxruntime build in its runtime environment when the profile names a `package`.

    `ran` is False (with `reason`) when the target's first provider is not available here:
    then only the static audit speaks. A session that fails to build is a failed partition
    with ONNX Runtime's reason; so are nodes the target's provider left to another one."""
    from edgekd.runtime.session import partition, partition_summary

    if target.package:  # the device's own onnxruntime build, in its runtime environment
        from edgekd.deploy.runtimes import partition_in_runtime

        got = partition_in_runtime(Path(model), target)
        if "assignment" not in got:
            return got
        return {**partition_summary(target.providers[0].name, got["assignment"], got["info"]),
                "runtime": got["runtime"]}
    return partition(model, providers=[p.to_dict() for p in target.providers],
                     graph_optimization=target.graph_optimization)


# ---------------------------------------------------------------- a student, before training
def check_student_ops(model: Any, *, input_shape: tuple[int, ...], target: TargetProfile) -> list[str]:
    """Export the student and audit it as the target's runtime will see it, before any
    training is paid for. Refuses it (BadInput) naming each module and op the target lacks;
    returns the ops it uses."""
    from edgekd.models.to_onnx import node_module, onnx_proto

    report = audit_model(onnx_proto(model, input_shape, opset=target.opset), target)
    if not report.passed:
        bad = [f"module '{node_module(n)}' needs {u.op} ({u.reason})" for u in report.unsupported for n in u.nodes]
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise BadInput(f"student refused for target {target.name}: {'; '.join(bad[:5])}{more}")
    return report.used
