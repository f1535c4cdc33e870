"""Teacher and student registries.

Teachers may use any operator. Students are assembled from blocks whose ONNX
operators the target allows: each choice below declares the ops it exports to,
the builder picks the first choice the target has, and `check_student_ops`
exports the finished student and refuses it, naming the module and the op, if
anything slipped through. Layout follows timm: blocks, then models, then the
registries and `create_teacher` / `create_student`.
"""

from __future__ import annotations

import difflib
import io
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from edgekd import defaults
from edgekd.errors import BadInput

# ---------------------------------------------------------------- op choices
# name -> (ONNX ops it exports to, module factory). Order = preference.
ACTIVATIONS: dict[str, tuple[set[str], Callable[[], nn.Module]]] = {
    "hardswish": ({"HardSigmoid", "Mul"}, nn.Hardswish),  # how the exporter writes it at opset 17,
    "relu6": ({"Clip"}, nn.ReLU6),
    "relu": ({"Relu"}, nn.ReLU),
}
POOLS: dict[str, tuple[set[str], Callable[[], nn.Module]]] = {
    "max": ({"MaxPool"}, lambda: nn.MaxPool2d(2)),
    "avg": ({"AveragePool"}, lambda: nn.AvgPool2d(2)),
}
class ToVector(nn.Module):
    """(N, C, 1, 1) → (N, C) as one Reshape with a constant shape, for targets without Flatten."""

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.channels)


# name -> (ONNX ops, factory(channels)) for the pooled-vector head; order = preference.
HEADS: dict[str, tuple[set[str], Callable[[int], nn.Module]]] = {
    "flatten": ({"GlobalAveragePool", "Flatten", "Gemm"}, lambda c: nn.Flatten()),
    "reshape": ({"GlobalAveragePool", "Reshape", "Gemm"}, ToVector),
}
CONV_OPS = {"Conv"}  # BatchNormalization is folded into Conv at export (eval mode)


def _pick(choices: dict, allow: frozenset[str] | None, prefer: tuple[str, ...], what: str) -> str:
    for name in prefer:
        ops, _ = choices[name]
        if allow is None or ops <= allow:
            return name
    wanted = ", ".join(f"{n} ({'/'.join(sorted(choices[n][0]))})" for n in prefer)
    raise BadInput(f"the target allows no {what}; a student needs one of: {wanted}")


@dataclass(frozen=True)
class Ops:
    """The concrete op choices for one target; `notes` says what was substituted."""

    act: str = "relu"
    pool: str = "max"
    head: str = "flatten"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def for_target(cls, allow: frozenset[str] | None, *, act: str = "hardswish") -> "Ops":
        if act not in ACTIVATIONS:
            raise BadInput(f"unknown activation '{act}'; valid: {', '.join(ACTIVATIONS)}")
        prefer = (act, *[a for a in ACTIVATIONS if a != act])
        chosen = _pick(ACTIVATIONS, allow, prefer, "activation")
        notes = []
        if chosen != act:
            notes.append(f"activation {act} ({'/'.join(ACTIVATIONS[act][0])}) is not on the target; using {chosen}")
        pool = _pick(POOLS, allow, ("max", "avg"), "2x2 pooling")
        head = _pick(HEADS, allow, tuple(HEADS), "classifier head")
        if head != "flatten":
            notes.append(f"Flatten is not on the target; the head reshapes instead ({head})")
        return cls(act=chosen, pool=pool, head=head, notes=tuple(notes))

    def act_module(self) -> nn.Module:
        return ACTIVATIONS[self.act][1]()

    def pool_module(self) -> nn.Module:
        return POOLS[self.pool][1]()


# ---------------------------------------------------------------- blocks
class ConvBlock(nn.Sequential):
    """Conv → BN → act: plain convolution."""

    def __init__(self, cin: int, cout: int, ops: Ops, *, kernel: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(cout), ops.act_module(),
        )


class DepthwiseSeparable(nn.Sequential):
    """Depthwise k×k conv → pointwise 1×1 conv (MobileNet v1)."""

    def __init__(self, cin: int, cout: int, ops: Ops, *, kernel: int = 3, stride: int = 1):
        super().__init__(
            ConvBlock(cin, cin, ops, kernel=kernel, stride=stride, groups=cin),
            ConvBlock(cin, cout, ops, kernel=1),
        )


class InvertedResidual(nn.Module):
    """1×1 expand → depthwise → 1×1 project, with a residual Add when shapes match (MobileNet v2)."""

    def __init__(self, cin: int, cout: int, ops: Ops, *, kernel: int = 3, stride: int = 1, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(
            ConvBlock(cin, mid, ops, kernel=1),
            ConvBlock(mid, mid, ops, kernel=kernel, stride=stride, groups=mid),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.body(x)
        return x + y if self.residual else y


class StridedStem(nn.Sequential):
    """Early downsampling by `stride` (a power of 2) for large inputs: a non-overlapping 4×4
    stride-4 "patchify" conv (ConvNeXt's stem; a 3×3 stride-2 conv when stride is 2), then
    depthwise-separable stride-2 convs for the rest. Only its first layer sees every pixel, with few channels, so
    the network's MACs grow far slower than the square of the input (tests/test_resolution.py)."""

    def __init__(self, cin: int, cout: int, ops: Ops, *, stride: int | tuple[int, int]):
        if not isinstance(stride, int) and stride[0] == stride[1]:
            stride = stride[0]
        if isinstance(stride, int):
            first = 4 if stride >= 4 else 2
            layers: list[nn.Module] = [
                nn.Sequential(nn.Conv2d(cin, cout, first, first, 0, bias=False), nn.BatchNorm2d(cout), ops.act_module())
                if first == 4 else ConvBlock(cin, cout, ops, stride=2)]
            for _ in range(stride.bit_length() - first.bit_length()):
                layers.append(DepthwiseSeparable(cout, cout, ops, stride=2))
            super().__init__(*layers)
            return
        # H ≠ W strides (a 48×192 strip: (4, 16)): each side is reduced on its own. A patchify conv
        # of min(stride, 4) per side, then stride-2 steps on the sides that still need them.
        first = tuple(min(s, 4) for s in stride)
        layers = [nn.Sequential(nn.Conv2d(cin, cout, first, first, 0, bias=False), nn.BatchNorm2d(cout),
                                ops.act_module())]
        left = [s // f for s, f in zip(stride, first)]
        while max(left) > 1:
            step = tuple(2 if v > 1 else 1 for v in left)
            layers.append(DepthwiseSeparable(cout, cout, ops, stride=step))
            left = [v // s for v, s in zip(left, step)]
        super().__init__(*layers)


BLOCKS: dict[str, tuple[set[str], type[nn.Module]]] = {
    "conv": (CONV_OPS, ConvBlock),
    "dw": (CONV_OPS, DepthwiseSeparable),
    "ir": (CONV_OPS | {"Add"}, InvertedResidual),
}


# ---------------------------------------------------------------- models
class Classifier(nn.Module):
    """features → global pool → flatten → linear. `features` and `pool` are the hook points."""

    def __init__(self, features: nn.Module, width: int, num_classes: int, dropout: float = 0.0,
                 head: str = "flatten"):
        super().__init__()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), HEADS[head][1](width))
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        self.feature_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.pool(self.features(x))))


def conv_teacher(*, in_channels: int, num_classes: int, width: int = 128) -> Classifier:
    """A VGG-style CNN: 5 conv layers, two 2×2 pools; 2.2M params at width 128."""
    ops = Ops(act="relu", pool="max")
    w = width
    features = nn.Sequential(
        ConvBlock(in_channels, w, ops), ConvBlock(w, w, ops), nn.MaxPool2d(2),
        ConvBlock(w, 2 * w, ops), ConvBlock(2 * w, 2 * w, ops), nn.MaxPool2d(2),
        ConvBlock(2 * w, 4 * w, ops),
    )
    return Classifier(features, 4 * w, num_classes, dropout=0.2)


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 convs with BN and a shortcut (1×1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, *, stride: int = 1):
        super().__init__()
        relu = Ops(act="relu")
        self.body = nn.Sequential(ConvBlock(cin, cout, relu, stride=stride),
                                  nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


def strided_resnet(*, in_channels: int, num_classes: int, width: int = 32,
                   blocks: tuple[int, ...] = (1, 1, 1)) -> Classifier:
    """A ResNet-style teacher that downsamples early, for inputs of 28×28 and more.

    A cheap full-resolution stem (width channels), then stages of BasicBlocks at 2·width,
    4·width, 8·width channels, each starting with a stride-2 block: 28×28 is 14×14 after the
    stem's first block, where most of the work happens. At width 32 on 1×28×28: 1.2M params,
    75 MFLOPs per image (the VGG-style `cnn`: 2.2M params, 695 MFLOPs). One block per stage:
    on real Fashion-MNIST, 4 epochs gave 93.3% test, and (2, 2, 1) blocks cost 1.8× the time
    (benchmarks/README.md, "Fashion-MNIST")."""
    layers: list[nn.Module] = [ConvBlock(in_channels, width, Ops(act="relu"))]
    cin = width
    for stage, n in enumerate(blocks):
        cout = width * 2 ** (stage + 1)
        for i in range(n):
            layers.append(BasicBlock(cin, cout, stride=2 if i == 0 else 1))
            cin = cout
    return Classifier(nn.Sequential(*layers), cin, num_classes, dropout=0.1)


def _resnet18(*, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import resnet18

    m = resnet18(weights=None, num_classes=num_classes)
    # Small inputs (8×8..32×32): a 3×3 stride-1 stem and no max-pool keep spatial detail.
    m.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
    m.maxpool = nn.Identity()
    return m


def _mobilenet_v3_small(*, in_channels: int, num_classes: int) -> nn.Module:
    from torchvision.models import mobilenet_v3_small

    m = mobilenet_v3_small(weights=None, num_classes=num_classes)
    old = m.features[0][0]
    m.features[0][0] = nn.Conv2d(in_channels, old.out_channels, 3, 1, 1, bias=False)
    return m


def student_net(*, in_channels: int, num_classes: int, target_ops: frozenset[str] | None = None,
                widths: tuple[int, ...] = (8, 16), block: str = "conv", kernel: int = 3,
                depth: int = 1, width_mult: float = 1.0, act: str = "relu",
                stem_stride: int | tuple[int, int] = 1) -> Classifier:
    """A student from `block`s: stage i has `depth` blocks of widths[i]·width_mult channels,
    with a 2×2 pool between stages. Every op comes from what `target_ops` allows.
    `stem_stride` (a power of 2, or one per side (H, W)): the stem strides that much, so a large
    input is brought down to a small map before the stages (see `stem_stride_for`)."""
    if block not in BLOCKS:
        raise BadInput(f"unknown block '{block}'; valid: {', '.join(BLOCKS)}")
    need = BLOCKS[block][0]
    if target_ops is not None and not need <= target_ops:
        missing = ", ".join(sorted(need - target_ops))
        raise BadInput(f"block '{block}' needs ops the target lacks: {missing}")
    ops = Ops.for_target(target_ops, act=act)
    chans = [max(4, int(round(w * width_mult))) for w in widths]
    strides = (stem_stride,) if isinstance(stem_stride, int) else tuple(stem_stride)
    if len(strides) not in (1, 2) or any(s < 1 or s & (s - 1) for s in strides):
        raise BadInput(f"stem_stride {stem_stride}: must be a power of 2 (1, 2, 4, ...), or one per side (H, W)")
    stem = StridedStem(in_channels, chans[0], ops, stride=stem_stride) if max(strides) > 1 else \
        ConvBlock(in_channels, chans[0], ops, kernel=kernel)
    layers: list[nn.Module] = [stem]
    cin = chans[0]
    for i, c in enumerate(chans):
        if i > 0:
            layers.append(ops.pool_module())
        for _ in range(depth):
            layers.append(BLOCKS[block][1](cin, c, ops, kernel=kernel))
            cin = c
    model = Classifier(nn.Sequential(*layers), cin, num_classes, head=ops.head)
    model.ops_notes = list(ops.notes)  # type: ignore[attr-defined]
    return model


# ---------------------------------------------------------------- registries
TEACHERS: dict[str, Callable[..., nn.Module]] = {
    "resnet-s": strided_resnet,
    "cnn": conv_teacher,
    "cnn-small": lambda **kw: conv_teacher(width=16, **kw),
    "resnet18": _resnet18,
    "mobilenet_v3_small": _mobilenet_v3_small,
}

# name -> keyword arguments of `student_net`
STUDENTS: dict[str, dict[str, Any]] = {
    "tiny-cnn": dict(widths=(8, 16), block="conv"),
    "small-cnn": dict(widths=(16, 32), block="conv"),
    "dsconv": dict(widths=(16, 32), block="dw"),
    "mbv2-tiny": dict(widths=(8, 16), block="ir", act="hardswish"),
    # three stages to 7×7 at 28×28 (59k params, 17 MFLOPs): for train sets of 10k+ images. On real
    # Fashion-MNIST, 5 epochs of it (91.7%) beat 3 epochs of (32, 64, 128) (91.1%) in the same time.
    "wide-cnn": dict(widths=(24, 48, 96), block="conv"),
    # Strided stems for large inputs (32..224 px): the stem halves the input until it is at most
    # STEM_TARGET pixels, so the stages cost the same at any input size (`stem_stride_for`).
    "small-cnn-s": dict(widths=(16, 32), block="conv", stem_stride="auto"),
    "dsconv-s": dict(widths=(16, 32), block="dw", stem_stride="auto"),
    "mbv2-tiny-s": dict(widths=(8, 16), block="ir", act="hardswish", stem_stride="auto"),
}
STEM_TARGET = 16  # pixels: a strided stem brings the input down to at most this


def stem_stride_for(input_size: int | tuple[int, int] | None) -> int | tuple[int, int]:
    """The power-of-2 stride that brings `input_size` down to at most STEM_TARGET (1 when unknown).
    For (H, W), each side on its own: an int where both need the same, else (stride_h, stride_w)."""
    if input_size is not None and not isinstance(input_size, int):
        h, w = (stem_stride_for(int(v)) for v in input_size)
        return h if h == w else (h, w)
    stride = 1
    while input_size is not None and input_size / stride > STEM_TARGET:
        stride *= 2
    return stride


def student_kwargs(name: str, *, input_size: int | tuple[int, int] | None = None) -> dict[str, Any]:
    """A registry student's `student_net` keywords, with stem_stride="auto" resolved for `input_size`."""
    if name not in STUDENTS:
        raise _unknown("student", name, list(STUDENTS))
    kw = dict(STUDENTS[name])
    if kw.get("stem_stride") == "auto":
        kw["stem_stride"] = stem_stride_for(input_size)
    return kw


def _unknown(kind: str, name: str, valid: list[str]) -> BadInput:
    near = difflib.get_close_matches(name, valid, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return BadInput(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid)}")


def create_teacher(name: str = defaults.TEACHER, *, in_channels: int, num_classes: int) -> nn.Module:
    if name not in TEACHERS:
        raise _unknown("teacher", name, list(TEACHERS) + ["a .pt path"])
    return TEACHERS[name](in_channels=in_channels, num_classes=num_classes)


def create_student(name: str = defaults.STUDENT, *, in_channels: int, num_classes: int,
                   target_ops: frozenset[str] | None = None, input_size: int | tuple[int, int] | None = None,
                   **overrides: Any) -> Classifier:
    """`input_size` (N or (H, W)) sizes a strided stem (students whose stem_stride is "auto")."""
    kw = {**student_kwargs(name, input_size=input_size), **overrides}
    model = student_net(in_channels=in_channels, num_classes=num_classes, target_ops=target_ops, **kw)
    if "stem_stride" in STUDENTS[name]:
        model.net_kwargs = kw  # type: ignore[attr-defined]  # saved with the student: the stride is not in the weights
    return model


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_macs(mod: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one module's forward, from its output: Conv2d output elements ×
    (in_channels / groups) × kh × kw, Linear output elements × in_features, 0 for anything else
    (BN, activations and pools are < 5% of a CNN's work)."""
    if isinstance(mod, nn.Conv2d):
        return out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    return 0


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one input of `input_shape` (C, H, W), counted on a
    real pass (`layer_macs` of every Conv2d and Linear)."""
    macs = 0

    def count(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += layer_macs(mod, out)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    # The input on the model's own device (a teacher already on CUDA, a model on `meta`), CPU when it has no tensors.
    where = next(iter([*model.parameters(), *model.buffers()]), None)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=where.device if where is not None else "cpu"))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs


def model_mflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Forward MFLOPs for one input: 2 × `forward_macs`. Training costs about 3× this per image."""
    return 2 * forward_macs(model, input_shape) / 1e6


def model_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """{"params", "mflops"} of a model at one input size: what the teacher listing shows."""
    return {"params": count_params(model), "mflops": round(model_mflops(model, input_shape), 2)}


def teacher_costs(input_shape: tuple[int, ...], num_classes: int = 10) -> list[dict[str, Any]]:
    """Every registry teacher's cost at `input_shape`: name, params, forward MFLOPs."""
    out = []
    for name in TEACHERS:
        torch.manual_seed(0)
        model = create_teacher(name, in_channels=input_shape[0], num_classes=num_classes)
        out.append({"teacher": name, **model_cost(model, input_shape)})
    return out


def teachers_for_data(data: str = defaults.DATA, *, data_dir: Any = None) -> dict[str, Any]:
    """`edgekd teachers`: every registry teacher's cost at the data's input size, and which
    one distill picks by default for it (`defaults.recipe`)."""
    from edgekd.data import load_data

    bundle = load_data(data, data_dir=data_dir)
    rule = defaults.recipe(n_train=len(bundle.train), input_shape=bundle.input_shape, num_classes=bundle.num_classes)
    return {"data": bundle.name, "input_shape": list(bundle.input_shape), "default": rule["teacher"],
            "teachers": teacher_costs(bundle.input_shape, bundle.num_classes)}


# ---------------------------------------------------------------- op check before training
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


def check_student_ops(model: nn.Module, *, input_shape: tuple[int, ...], target) -> list[str]:
    """Export the student and audit it as the target's runtime will see it, before any
    training is paid for. Refuses it (BadInput) naming each module and op the target lacks;
    returns the ops it uses."""
    from edgekd.deploy.audit import audit_model

    report = audit_model(onnx_proto(model, input_shape, opset=target.opset), target)
    if not report.passed:
        bad = [f"module '{node_module(n)}' needs {u.op} ({u.reason})" for u in report.unsupported for n in u.nodes]
        more = f" (+{len(bad) - 5} more)" if len(bad) > 5 else ""
        raise BadInput(f"student refused for target {target.name}: {'; '.join(bad[:5])}{more}")
    return report.used
