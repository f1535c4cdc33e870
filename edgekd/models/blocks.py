"""The students' building blocks, each choice declaring the ONNX ops it exports to.

Students are assembled from blocks whose ONNX operators the target allows: each choice below (activation,
pooling, head) declares the ops it exports to, and `Ops.for_target` picks the first choice the target has.
`edgekd.deploy.audit.check_student_ops` exports the finished student and refuses it, naming the module and
the op, if anything slipped through. Layout follows timm: op choices, then blocks (`BLOCKS`); the models
and registries that use them are in `registry`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

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
