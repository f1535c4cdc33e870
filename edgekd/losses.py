"""Distillation losses: one small `nn.Module` each, formula and citation in the docstring.

Every loss takes a `KDBatch` and returns a scalar. A method on the command line
is `NAME[:WEIGHT]`; `build_objective` turns a list of them into one weighted sum.
Adding a loss = one class + one `LOSSES` entry + one test (the registry drives
the tests, so a loss without a test fails).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgekd import defaults
from edgekd.errors import BadInput


@dataclass
class KDBatch:
    """What one training step hands to the losses.

    `labels` is -1 where a sample is unlabeled (transfer data only the teacher labels).
    `teacher_logits` is None when training a student alone.
    Feature dicts map a tapped module name to its output.
    """

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)


class CrossEntropy(nn.Module):
    """Ground-truth labels: CE(s, y), averaged over the labeled samples only.

    Unlabeled samples (y = -1) contribute nothing; a batch with none labeled gives 0.
    """

    needs_teacher = False

    def forward(self, b: KDBatch) -> torch.Tensor:
        mask = b.labels >= 0
        if not mask.any():
            return b.student_logits.sum() * 0.0
        return F.cross_entropy(b.student_logits[mask], b.labels[mask])


class HardLabel(nn.Module):
    """Teacher's hard labels: CE(s, argmax t) on every sample, labeled or not.

    The plain way to use unlabeled transfer data (pseudo-labelling by the teacher).
    """

    needs_teacher = True

    def forward(self, b: KDBatch) -> torch.Tensor:
        return F.cross_entropy(b.student_logits, b.teacher_logits.argmax(dim=1))


class SoftTarget(nn.Module):
    """Hinton's knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531).

        L = T² · KL( softmax(t/T) ‖ softmax(s/T) )
          = T² · Σ_i p_i^T (log p_i^T − log q_i^T),   averaged over the batch.

    The T² keeps the gradient scale independent of T, so it can be mixed with CE.
    """

    needs_teacher = True

    def __init__(self, temperature: float = defaults.TEMPERATURE):
        super().__init__()
        self.temperature = temperature

    def forward(self, b: KDBatch) -> torch.Tensor:
        T = self.temperature
        log_q = F.log_softmax(b.student_logits / T, dim=1)
        log_p = F.log_softmax(b.teacher_logits / T, dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T * T


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "hard": HardLabel,
    "soft": SoftTarget,
}


def parse_method(spec: str) -> tuple[str, float]:
    """'soft:0.25' → ('soft', 0.25); 'soft' → ('soft', 1.0)."""
    name, _, weight = spec.partition(":")
    if name not in LOSSES:
        near = difflib.get_close_matches(name, list(LOSSES), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise BadInput(f"unknown --method '{name}'{hint}; valid: {', '.join(LOSSES)} (as NAME or NAME:WEIGHT)")
    if not weight:
        return name, 1.0
    try:
        w = float(weight)
    except ValueError:
        raise BadInput(f"--method '{spec}': weight '{weight}' is not a number") from None
    if not (w >= 0 and w == w and w != float("inf")):
        raise BadInput(f"--method '{spec}': weight must be a finite number >= 0")
    return name, w


class Objective(nn.Module):
    """Σ_k w_k · L_k. `terms(b)` returns each weighted term, so a NaN can be traced to its loss."""

    def __init__(self, parts: list[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [n for n, _, _ in parts]
        self.weights = [w for _, w, _ in parts]
        self.losses = nn.ModuleList([m for _, _, m in parts])

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(m, "needs_teacher", False) for m in self.losses)

    def terms(self, b: KDBatch) -> dict[str, torch.Tensor]:
        return {n: w * m(b) for n, w, m in zip(self.names, self.weights, self.losses)}

    def forward(self, b: KDBatch) -> torch.Tensor:
        return sum(self.terms(b).values())

    def describe(self) -> str:
        return " + ".join(f"{w:g}·{n}" for n, w in zip(self.names, self.weights))


def build_objective(methods: list[str] | tuple[str, ...], *, temperature: float = defaults.TEMPERATURE,
                    **loss_kwargs: Any) -> Objective:
    """Build the weighted sum from `NAME[:WEIGHT]` specs."""
    parts = []
    for spec in methods:
        name, w = parse_method(spec)
        cls = LOSSES[name]
        kwargs = {"temperature": temperature} if name == "soft" else {}
        kwargs.update(loss_kwargs.get(name, {}))
        parts.append((name, w, cls(**kwargs)))
    if not parts:
        raise BadInput("no --method given; valid: " + ", ".join(LOSSES))
    return Objective(parts)
