"""Teacher and student models and their registries: `TEACHERS`, `STUDENTS`, `create_teacher`, `create_student`.

Teachers may use any operator; students are built from `blocks` for one target's op set. Layout follows timm:
the models, then the registries and the builders.
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

import torch
from torch import nn

from edgekd import defaults
from edgekd.errors import BadInput
from edgekd.models.blocks import BLOCKS, HEADS, ConvBlock, Ops, StridedStem


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
