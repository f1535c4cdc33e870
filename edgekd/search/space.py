"""The student search space: `edgekd.models.student_net` keyword sets drawn in a seeded order.

Axes: stage widths × width multiplier, depth per stage, kernel size, block type (`conv`,
depthwise-separable `dw`, inverted residual `ir`) and activation, keeping only the blocks
and activations whose ONNX ops the target allows. The registry students named in
`include` come first. The input size is not an axis: inputs above `defaults.STRIDED_INPUT` px
(where the data rule picks a strided student too) give every candidate the strided stem that
brings them down to `models.STEM_TARGET` px, as the `-s` registry students have, so MACs don't
grow with the square of the input. `Candidate` is one draw and everything later stages learn about it.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Iterator

import numpy as np

from edgekd import defaults
from edgekd.errors import BadInput

STAGE_WIDTHS: tuple[tuple[int, ...], ...] = ((8, 16), (16, 32), (8, 16, 32), (16, 32, 64))
WIDTH_MULTS = (0.5, 0.75, 1.0, 1.5)
DEPTHS = (1, 2)
KERNELS = (3, 5)


def search_space(target_ops: frozenset[str] | None) -> dict[str, tuple]:
    """Every axis of the space, with only the blocks and activations the target's ops allow."""
    from edgekd.models import ACTIVATIONS, BLOCKS

    def allowed(ops: set[str]) -> bool:
        return target_ops is None or ops <= target_ops

    return {
        "widths": STAGE_WIDTHS, "width_mult": WIDTH_MULTS, "depth": DEPTHS, "kernel": KERNELS,
        "block": tuple(b for b, (ops, _) in BLOCKS.items() if allowed(ops)),
        "act": tuple(a for a, (ops, _) in ACTIVATIONS.items() if allowed(ops)),
    }


def channels(net_kwargs: dict[str, Any]) -> list[int]:
    """The channels per stage that `student_net` builds (same rounding)."""
    return [max(4, int(round(w * net_kwargs.get("width_mult", 1.0)))) for w in net_kwargs["widths"]]


def candidate_name(net_kwargs: dict[str, Any]) -> str:
    """'conv-16x32-k3-d1-relu' ('…-relu-s4' with a stride-4 stem): two keyword sets that build the
    same network get the same name."""
    chans = "x".join(map(str, channels(net_kwargs)))
    stem = net_kwargs.get("stem_stride", 1)
    stem = [stem] if isinstance(stem, int) else list(stem)   # (H, W) strides of a non-square input: -s4x16
    return (f"{net_kwargs['block']}-{chans}-k{net_kwargs['kernel']}-d{net_kwargs['depth']}-{net_kwargs['act']}"
            + (f"-s{'x'.join(map(str, stem))}" if max(stem) > 1 else ""))


def registry_kwargs(name: str, *, input_size: int | tuple[int, int] | None = None) -> dict[str, Any]:
    """A registry student's full `student_net` keywords (its overrides on the builder's defaults),
    with an "auto" stem stride resolved for `input_size`."""
    from edgekd.models import STUDENTS, student_kwargs

    if name not in STUDENTS:
        raise BadInput(f"unknown student '{name}' to include; valid: {', '.join(STUDENTS)}")
    base = {"widths": (8, 16), "block": "conv", "kernel": 3, "depth": 1, "width_mult": 1.0, "act": "relu"}
    kw = {**base, **student_kwargs(name, input_size=input_size)}
    return {**kw, "widths": list(kw["widths"])}


def candidate_stream(target_ops: frozenset[str] | None, *, seed: int,
                     include: tuple[str, ...] = (defaults.STUDENT,),
                     input_size: int | tuple[int, int] | None = None) -> Iterator[tuple[str, dict]]:
    """Distinct (name, student_net keywords) in a reproducible order: the registry students
    named in `include` first (when the target can build them), then the grid shuffled by `seed`,
    each with the stem `input_size` (N or (H, W)) needs: inputs of more than defaults.STRIDED_INPUT²
    pixels (as `defaults.recipe`) get a strided stem, each side reduced on its own."""
    from edgekd.models import stem_stride_for

    hw = None if input_size is None else (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    stem = stem_stride_for(hw) if hw is not None and hw[0] * hw[1] > defaults.STRIDED_INPUT ** 2 else 1
    space = search_space(target_ops)
    if not space["block"] or not space["act"]:
        raise BadInput("the target allows no student block or activation; "
                       "see edgekd.models.BLOCKS and ACTIVATIONS for the ops each needs")
    seen: set[str] = set()
    for name in include:
        kw = registry_kwargs(name, input_size=input_size)
        if kw["block"] in space["block"] and kw["act"] in space["act"] and candidate_name(kw) not in seen:
            seen.add(candidate_name(kw))
            yield name, kw
    keys = ("widths", "width_mult", "depth", "kernel", "block", "act")
    grid = list(itertools.product(*(space[k] for k in keys)))
    for i in np.random.default_rng(seed).permutation(len(grid)):
        kw = dict(zip(keys, grid[int(i)]))
        kw["widths"] = list(kw["widths"])
        if stem != 1:
            kw["stem_stride"] = list(stem) if isinstance(stem, tuple) else stem
        if candidate_name(kw) not in seen:  # two multipliers can give the same channels
            seen.add(candidate_name(kw))
            yield candidate_name(kw), kw


def sample_candidates(target_ops: frozenset[str] | None, *, trials: int, seed: int,
                      include: tuple[str, ...] = (defaults.STUDENT,)) -> tuple[list[tuple[str, dict]], list[str]]:
    """The first `trials` candidates of `candidate_stream`, and a note when the space has fewer."""
    drawn = list(itertools.islice(candidate_stream(target_ops, seed=seed, include=include), trials))
    notes = [] if len(drawn) == trials else [
        f"the search space for this target has only {len(drawn)} distinct candidates (asked for {trials})"]
    return drawn, notes


@dataclass
class Candidate:
    """One draw of the search space and everything the later stages learn about it: costs, the
    predictor's guess, the measurement, each halving rung and the control."""

    id: int
    name: str
    net_kwargs: dict[str, Any]
    cost: dict[str, int] = field(default_factory=dict)
    ops: list[str] = field(default_factory=list)
    status: str = "sampled"        # refused | skipped | over budget | trained | finalist
    reason: str = ""
    prior_ms: float | None = None
    predicted_ms: float | None = None   # the fitted predictor's value before this candidate was timed
    measured: dict[str, Any] | None = None
    loo_ms: float | None = None         # leave-one-out prediction of the final fit (timed candidates)
    rungs: list[dict[str, Any]] = field(default_factory=list)
    control: dict[str, Any] | None = None

    @property
    def p90(self) -> float:
        return self.measured["latency_p90_ms"] if self.measured else math.inf

    @property
    def val(self) -> float:
        return self.rungs[-1]["val"] if self.rungs else -1.0

    def rank_key(self) -> tuple:
        """Best first: higher val accuracy, then faster (measured p90), then drawn earlier."""
        return (-round(self.val, 9), self.p90, self.id)

    def to_dict(self) -> dict[str, Any]:
        def public(row: dict[str, Any]) -> dict[str, Any]:
            return {k: v for k, v in row.items() if not k.startswith("_")}

        d = {"id": self.id, "name": self.name, "net_kwargs": self.net_kwargs, "channels": channels(self.net_kwargs),
             "cost": self.cost, "ops": self.ops, "status": self.status, "reason": self.reason,
             "prior_ms": self.prior_ms, "predicted_ms": self.predicted_ms, "loo_predicted_ms": self.loo_ms,
             "measured": self.measured, "rungs": [public(r) for r in self.rungs],
             "control": public(self.control) if self.control else None}
        if self.rungs:
            last = self.rungs[-1]
            d.update(epochs=last["epochs"], val_accuracy=last["val"], test_accuracy=last["test"])
        if self.control:
            d["kd_gain_test"] = self.rungs[-1]["test"] - self.control["test"]
        return d


def build(c: Candidate, bundle, target_ops, *, seed: int = 0):
    import torch

    from edgekd.models import student_net

    torch.manual_seed(seed)
    return student_net(in_channels=bundle.input_shape[0], num_classes=bundle.num_classes,
                       target_ops=target_ops, **c.net_kwargs)
