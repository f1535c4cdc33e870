"""Distillation losses: one small `nn.Module` each, formula and citation in the docstring.

Every loss takes a `KDBatch` and returns a scalar. A method on the command line
is `NAME[:WEIGHT]`; `build_objective` turns a list of them into one weighted sum.
Adding a loss = one class + one `LOSSES` entry + one hand-computed test (the
registry drives the tests, so a loss without one fails).

Each loss class declares
- `needs_teacher`: whether the step must run the teacher;
- `taps`: the feature roles it reads from `KDBatch.student_feats` / `teacher_feats`
  ("hidden", "feature_map"; see `edgekd.train.features.ROLES`). `Objective.taps` is their union.
Feature losses may own learnable parts (a projection, a regressor). They are built
on the first batch, live in the `Objective`, never in the student, so they are
trained through `Objective.extra_parameters()` and dropped at export.

Also here, outside the registry because they do not take one `KDBatch`:
`combine_teachers` (several teachers → one set of logits) and `dml_losses`
(online mutual learning between peer students).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from edgekd import defaults
from edgekd.errors import BadInput
from edgekd.train.features import (
    check_compatible,
    check_feature_map,
    check_feature_shapes,
    params_feeding,
)

COMBINE_MODES = ("mean", "weighted", "confidence")


@dataclass
class KDBatch:
    """What one training step hands to the losses.

    `labels` is -1 where a sample is unlabeled (transfer data only the teacher labels).
    `teacher_logits` is None when training a student alone.
    Feature dicts map a tap role ("hidden", "feature_map") to the tapped module's
    output, as `edgekd.train.features.FeatureTap` collects them.
    """

    student_logits: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor | None = None
    student_feats: dict[str, torch.Tensor] = field(default_factory=dict)
    teacher_feats: dict[str, torch.Tensor] = field(default_factory=dict)


def _teacher_logits(b: KDBatch, loss: str) -> torch.Tensor:
    if b.teacher_logits is None:
        raise ValueError(f"{loss} needs KDBatch.teacher_logits; the step ran no teacher")
    return b.teacher_logits


def _labeled_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    mask = labels >= 0
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], labels[mask])


# ================================================================ logit losses
class CrossEntropy(nn.Module):
    """Ground-truth labels: CE(s, y), averaged over the labeled samples only.

    Unlabeled samples (y = -1) contribute nothing; a batch with none labeled gives 0.
    """

    needs_teacher = False
    taps: tuple[str, ...] = ()

    def forward(self, b: KDBatch) -> torch.Tensor:
        return _labeled_ce(b.student_logits, b.labels)


class HardLabel(nn.Module):
    """Teacher's hard labels: CE(s, argmax t) on every sample, labeled or not.

    The plain way to use unlabeled transfer data (pseudo-labelling by the teacher).
    """

    needs_teacher = True
    taps: tuple[str, ...] = ()

    def forward(self, b: KDBatch) -> torch.Tensor:
        return F.cross_entropy(b.student_logits, _teacher_logits(b, "hard").argmax(dim=1))


class LogitLoss(nn.Module):
    """Base of the losses that read the teacher's logits alone: temperature T and logit standardisation.

    `standardize=True` (`--loss-option NAME.standardize=true`): logit standardisation (Sun et al.
    2024, arXiv 2403.01427). Each sample's logits become z-scores, (z − mean(z)) / std(z), before
    the loss's own transform (the temperature), for teacher and student alike, so the student matches
    the teacher's *ranking and relative gaps* instead of its logit scale, which a small student may not reach.
    """

    needs_teacher = True
    taps: tuple[str, ...] = ()

    def __init__(self, temperature: float = defaults.TEMPERATURE, standardize: bool = False):
        super().__init__()
        if not isinstance(standardize, bool):
            raise TypeError(f"standardize must be true or false, not {standardize!r}")
        if not temperature > 0:
            raise BadInput(f"temperature {temperature}: must be > 0")
        self.temperature, self.standardize = float(temperature), standardize

    def _z(self, z: torch.Tensor) -> torch.Tensor:
        if self.standardize:
            z = (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + 1e-7)
        return z

    def _scaled(self, z: torch.Tensor) -> torch.Tensor:
        return self._z(z) / self.temperature


class SoftTarget(LogitLoss):
    """Hinton's knowledge distillation (Hinton, Vinyals & Dean 2015, arXiv 1503.02531).

        L = T² · KL( softmax(t/T) ‖ softmax(s/T) )
          = T² · Σ_i p_i^T (log p_i^T − log q_i^T),   averaged over the batch.

    The T² keeps the gradient scale independent of T, so it can be mixed with CE.
    `standardize=True`: logit standardisation first (see `LogitLoss`).
    """

    def forward(self, b: KDBatch) -> torch.Tensor:
        T = self.temperature
        log_q = F.log_softmax(self._scaled(b.student_logits), dim=1)
        log_p = F.log_softmax(self._scaled(_teacher_logits(b, "soft")), dim=1)
        return F.kl_div(log_q, log_p, reduction="batchmean", log_target=True) * T * T


def _fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise BadInput(f"--loss-option {name}={value!r}: valid: a fraction of the run's steps in [0, 1]")
    return float(value)


def _finite(name: str, value: Any, *, positive: bool = False) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if not ok or value < 0 or (positive and value == 0):
        raise BadInput(f"--loss-option {name}={value!r}: valid: a finite number {'> 0' if positive else '>= 0'}")
    return float(value)


class DecoupledKD(LogitLoss):
    """Decoupled knowledge distillation, DKD (Zhao et al., CVPR 2022, arXiv 2203.08679).

    With p = softmax(t/T), q = softmax(s/T) and y the sample's class:
        b = (p_y, 1 − p_y)                     binary target / non-target probabilities
        p̂_j = p_j / (1 − p_y),  j ≠ y          the distribution among the non-target classes
        TCKD = KL(b^t ‖ b^s),   NCKD = KL(p̂^t ‖ p̂^s)
        L = w(step) · T² · (α · TCKD + β · NCKD),   averaged over the batch

    α = 1, β = 8, T = 4 (`--temperature`) as in the paper and mdistiller (`mdistiller/distillers/DKD.py`,
    whose total is CE + this term). Hinton's KD is TCKD + (1 − p_y^t) · NCKD: DKD frees NCKD from the
    teacher's confidence. w ramps linearly from 0 to 1 over the first `warmup` of the run's optimizer steps
    (mdistiller: min(epoch / 20, 1) over 240 epochs; here the same share of the run, `Objective.set_progress`);
    outside a training loop (no progress set) w = 1. A sample without a label (y = −1) takes the teacher's
    argmax as y. `standardize=True`: logit standardisation first (see `LogitLoss`).
    """

    def __init__(self, temperature: float = defaults.TEMPERATURE, *, alpha: float = defaults.DKD_ALPHA,
                 beta: float = defaults.DKD_BETA, warmup: float = defaults.DKD_WARMUP, standardize: bool = False):
        super().__init__(temperature, standardize)
        self.alpha, self.beta = _finite("dkd.alpha", alpha), _finite("dkd.beta", beta)
        self.warmup = _fraction("dkd.warmup", warmup)
        self.step: int | None = None
        self.total: int | None = None

    def set_progress(self, step: int, total: int) -> None:
        """The optimizer step about to run (0-based) out of the run's `total`."""
        self.step, self.total = step, total

    def ramp(self) -> float:
        if self.step is None or self.total is None or self.warmup == 0:
            return 1.0
        warm = max(1, round(self.warmup * self.total))
        return min(1.0, (self.step + 1) / warm)

    def forward(self, b: KDBatch) -> torch.Tensor:
        t = _teacher_logits(b, "dkd")
        y = torch.where(b.labels >= 0, b.labels, t.argmax(dim=1))
        zs, zt = self._scaled(b.student_logits), self._scaled(t)
        gt = F.one_hot(y, zs.shape[1]).bool()
        tckd = _kl_rows(_binary_log(zt, gt), _binary_log(zs, gt))
        # non-target distributions: the target logit pushed far down (as mdistiller, −1000 after /T)
        nckd = _kl_rows(F.log_softmax(zt - 1000.0 * gt, dim=1), F.log_softmax(zs - 1000.0 * gt, dim=1))
        T = self.temperature
        return self.ramp() * T * T * (self.alpha * tckd + self.beta * nckd).mean()


def _binary_log(z: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """(N, 2): log p_y and log(1 − p_y) of softmax(z), computed in log space."""
    log_p = F.log_softmax(z, dim=1)
    return torch.stack([log_p.masked_fill(~gt, -math.inf).logsumexp(dim=1),
                        log_p.masked_fill(gt, -math.inf).logsumexp(dim=1)], dim=1)


def _kl_rows(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p ‖ q) per row from log-probabilities; a row's zero-probability entries add nothing."""
    return F.kl_div(log_q, log_p, reduction="none", log_target=True).sum(dim=1)


def _pearson_rows(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    return (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


class DIST(LogitLoss):
    """DIST, knowledge distillation from a stronger teacher (Huang et al., NeurIPS 2022, arXiv 2205.10536).

    With Q = softmax(s/τ), P = softmax(t/τ) as (N, C) matrices and ρ the Pearson correlation:
        inter = 1 − mean_n ρ(Q_n,:, P_n,:)      each sample's class ranking (rows)
        intra = 1 − mean_c ρ(Q_:,c, P_:,c)      each class's ranking of the batch's samples (columns)
        L = τ² · (β · inter + γ · intra)

    β = γ = 1 as in the paper; τ is `--temperature` (the paper's CIFAR-100 setting is τ = 4, edgekd's
    default T; torchdistill's `DISTLoss` defaults to τ = 1, its ImageNet setting). ρ is a cosine of the
    centred vectors with 1e-8 added to the norms' product, as in torchdistill. Needs no labels.
    `standardize=True`: logit standardisation first (see `LogitLoss`).
    """

    def __init__(self, temperature: float = defaults.TEMPERATURE, *, beta: float = defaults.DIST_BETA,
                 gamma: float = defaults.DIST_GAMMA, standardize: bool = False):
        super().__init__(temperature, standardize)
        self.beta, self.gamma = _finite("dist.beta", beta), _finite("dist.gamma", gamma)

    def forward(self, b: KDBatch) -> torch.Tensor:
        q = F.softmax(self._scaled(b.student_logits), dim=1)
        p = F.softmax(self._scaled(_teacher_logits(b, "dist")), dim=1)
        inter = 1 - _pearson_rows(q, p).mean()
        intra = 1 - _pearson_rows(q.t(), p.t()).mean()
        return self.temperature ** 2 * (self.beta * inter + self.gamma * intra)


class TransformedTeacher(LogitLoss):
    """Transformed teacher matching, TTM, and its sample-weighted form WTTM (Zheng & Yang, ICLR 2024,
    arXiv 2402.11148; official code github.com/zkxufo/TTM, `distiller_zoo/ttm.py` and `wttm.py`).

    The teacher's probabilities p = softmax(t) raised to a power γ and renormalised; the student at T = 1:
        p̃ = p^γ / Σ_c p_c^γ  ( = softmax(γ·t) ),   q = softmax(s)
        TTM:  L = mean_n KL(p̃_n ‖ q_n)
        WTTM: L = mean_n U_γ(p_n) · KL(p̃_n ‖ q_n),   U_γ(p) = Σ_c p_c^γ   (`wttm=True`)

    γ = 1/T is Hinton's KD with the temperature taken off the student (the paper shows the student's
    temperature acts as a Rényi-entropy regulariser); γ defaults to 1/`--temperature`. U_γ is larger
    for a less confident teacher, so WTTM leans on the samples where the teacher says more than the label.
    `standardize=True`: logit standardisation of both logits first (see `LogitLoss`).
    """

    def __init__(self, temperature: float = defaults.TEMPERATURE, *, gamma: float | None = None,
                 wttm: bool = False, standardize: bool = False):
        super().__init__(temperature, standardize)
        if not isinstance(wttm, bool):
            raise TypeError(f"wttm must be true or false, not {wttm!r}")
        self.gamma = 1.0 / self.temperature if gamma is None else _finite("ttm.gamma", gamma, positive=True)
        self.wttm = wttm

    def forward(self, b: KDBatch) -> torch.Tensor:
        log_q = F.log_softmax(self._z(b.student_logits), dim=1)
        log_p_gamma = self.gamma * F.log_softmax(self._z(_teacher_logits(b, "ttm")), dim=1)  # log p^γ
        log_u = log_p_gamma.logsumexp(dim=1)                                                  # log U_γ(p)
        kl = _kl_rows(log_p_gamma - log_u.unsqueeze(1), log_q)
        return (log_u.exp() * kl).mean() if self.wttm else kl.mean()


# ================================================================ feature losses
class FeatureLoss(nn.Module):
    """Base of the losses that read tapped features: pairs them up, names the taps in errors.

    `tap_names[role]` = (student module, teacher module), used only in messages;
    `Objective.prepare` fills it in. `ready` is False until the learnable parts
    (if any) have been built from a first batch.
    """

    needs_teacher = True
    taps: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.tap_names: dict[str, tuple[str, str]] = {r: (r, r) for r in self.taps}

    @property
    def ready(self) -> bool:
        return True

    def bind_taps(self, student: Mapping[str, str], teacher: Mapping[str, str]) -> None:
        for role in self.taps:
            self.tap_names[role] = (student.get(role, role), teacher.get(role, role))

    def pair(self, b: KDBatch, role: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(student feature, teacher feature, detached) for `role`."""
        for side, feats in (("student", b.student_feats), ("teacher", b.teacher_feats)):
            if role not in feats:
                raise ValueError(f"{self.key}: KDBatch.{side}_feats has no '{role}' (it has: "
                                 f"{', '.join(feats) or 'nothing'}); install a FeatureTap for Objective.taps")
        return b.student_feats[role], b.teacher_feats[role].detach()

    @property
    def key(self) -> str:
        return next((k for k, c in LOSSES.items() if c is type(self)), type(self).__name__)


def _match_spatial(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Adaptive-average-pool the larger of two (N, C, H, W) maps to the smaller H and W."""
    h, w = min(a.shape[-2], b.shape[-2]), min(a.shape[-1], b.shape[-1])
    pool = lambda x: x if tuple(x.shape[-2:]) == (h, w) else F.adaptive_avg_pool2d(x, (h, w))  # noqa: E731
    return pool(a), pool(b)


class CosineHidden(FeatureLoss):
    """Cosine loss on the hidden representation before the classifier.

        L = mean_n ( 1 − cos( P·h_s(n), h_t(n) ) )   = nn.CosineEmbeddingLoss with target +1

    h_s, h_t are the flattened outputs of the "hidden" taps (the module feeding the
    classifier). When their sizes differ, P is a learned linear projection on the
    student side (Linear(D_s, D_t), as FitNets bridges widths); when equal, P = I.
    With project=False, different sizes are bad input. Cosine embedding losses for
    hidden-state distillation: e.g. DistilBERT (Sanh et al. 2019, arXiv 1910.01108).
    """

    taps = ("hidden",)

    def __init__(self, *, project: bool = True):
        super().__init__()
        self.project = project
        self.proj: nn.Module | None = None
        self.criterion = nn.CosineEmbeddingLoss()

    @property
    def ready(self) -> bool:
        return self.proj is not None

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t = self.pair(b, "hidden")
        s, t = s.flatten(1), t.flatten(1)
        if self.proj is None:
            self.proj = self._build(s, t)
        return self.criterion(self.proj(s), t, s.new_ones(len(s)))

    def _build(self, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
        if s.shape[1] == t.shape[1]:
            return nn.Identity()
        if not self.project:
            s_tap, t_tap = self.tap_names["hidden"]
            check_feature_shapes(loss=self.key, student_shape=s.shape, teacher_shape=t.shape,
                                 student_tap=s_tap, teacher_tap=t_tap, compare="flat")
        return nn.Linear(s.shape[1], t.shape[1]).to(device=s.device, dtype=s.dtype)


class FitNet(FeatureLoss):
    """FitNets hint loss (Romero et al. 2015, arXiv 1412.6550).

        L = mean( ( pool(r(F_s)) − pool(F_t) )² )

    F_s, F_t: the "feature_map" taps (student's guided layer, teacher's hint layer).
    r: the regressor, a k×k convolution C_s → C_t (k = 1 or 3, 'same' padding),
    optionally followed by BatchNorm. pool: adaptive average pooling of the larger
    map to the smaller H×W, when they differ. The paper writes ½‖u_h − r(v_g)‖²;
    the mean over elements here differs only by a constant factor (set by the weight).
    project=False drops r (channel counts must then be equal).
    Stage 1 of the paper (train the student up to F_s alone on this loss) is
    `hint_objective` + `hint_stage_params`.
    """

    taps = ("feature_map",)

    def __init__(self, *, kernel: int = 1, bn: bool = False, project: bool = True):
        super().__init__()
        if kernel not in (1, 3):
            raise BadInput(f"fitnet kernel {kernel}: valid: 1, 3")
        self.kernel, self.bn, self.project = kernel, bn, project
        self.regressor: nn.Module | None = None

    @property
    def ready(self) -> bool:
        return self.regressor is not None

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t = self.pair(b, "feature_map")
        if self.regressor is None:
            self.regressor = self._build(s, t)
        r, t = _match_spatial(self.regressor(s), t)
        return F.mse_loss(r, t)

    def _build(self, s: torch.Tensor, t: torch.Tensor) -> nn.Module:
        s_tap, t_tap = self.tap_names["feature_map"]
        check_feature_map(s.shape, loss=self.key, side="student", tap=s_tap)
        check_feature_map(t.shape, loss=self.key, side="teacher", tap=t_tap)
        if not self.project:
            check_feature_shapes(loss=self.key, student_shape=s.shape, teacher_shape=t.shape,
                                 student_tap=s_tap, teacher_tap=t_tap, compare="channels")
            return nn.Identity()
        layers: list[nn.Module] = [nn.Conv2d(s.shape[1], t.shape[1], self.kernel, padding=self.kernel // 2,
                                             bias=not self.bn)]
        if self.bn:
            layers.append(nn.BatchNorm2d(t.shape[1]))
        return nn.Sequential(*layers).to(device=s.device, dtype=s.dtype)


def attention_map(x: torch.Tensor, p: float = 2.0) -> torch.Tensor:
    """(N, C, H, W) → (N, H, W): mean over channels of |A|^p (Zagoruyko & Komodakis, F_mean^p)."""
    return x.abs().pow(p).mean(dim=1)


class AttentionTransfer(FeatureLoss):
    """Activation-based attention transfer (Zagoruyko & Komodakis 2017, arXiv 1612.03928).

        Q = vec( mean_c |A_c|^p ) / ‖ vec( mean_c |A_c|^p ) ‖₂
        L = (β/2) · mean_{n, j} ( Q_s(n)_j − Q_t(n)_j )²

    on the "feature_map" taps; p = 2, β = 1000 as in the authors' code
    (github.com/szagoruyko/attention-transfer: `(at(x) - at(y)).pow(2).mean()` times
    β/2). The paper's equation uses the unsquared ‖·‖_p; β = 1000 was tuned for the
    code's squared mean, so that is what is used here. Channel counts may differ;
    when H×W differ, the larger attention map (before normalising) is adaptive-average
    pooled to the smaller. Maps that meet at 1×1 carry no spatial information (the
    loss would be 0), so that is bad input: tap an earlier, larger layer.
    """

    taps = ("feature_map",)

    def __init__(self, *, p: float = 2.0, beta: float = 1000.0):
        super().__init__()
        self.p, self.beta = p, beta

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t = self.pair(b, "feature_map")
        s_tap, t_tap = self.tap_names["feature_map"]
        check_feature_map(s.shape, loss=self.key, side="student", tap=s_tap)
        check_feature_map(t.shape, loss=self.key, side="teacher", tap=t_tap)
        a_s, a_t = _match_spatial(attention_map(s, self.p).unsqueeze(1), attention_map(t, self.p).unsqueeze(1))
        if a_s.shape[-2:].numel() == 1:
            raise BadInput(f"at: student tap '{s_tap}' {tuple(s.shape[-2:])} and teacher tap '{t_tap}' "
                           f"{tuple(t.shape[-2:])} meet at 1×1, where attention carries nothing; "
                           f"tap a layer with larger spatial size")
        q_s, q_t = F.normalize(a_s.flatten(1), dim=1), F.normalize(a_t.flatten(1), dim=1)
        return self.beta / 2 * (q_s - q_t).pow(2).mean()


def _distances(e: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Pairwise Euclidean distances (N, N), zero diagonal, divided by their mean off-diagonal value."""
    sq = e.pow(2).sum(dim=1)
    d = (sq.unsqueeze(1) + sq.unsqueeze(0) - 2 * e @ e.t()).clamp(min=eps).sqrt()
    d = d * (1 - torch.eye(len(e), device=e.device, dtype=e.dtype))  # not in place: sqrt's backward needs d
    positive = d[d > 0]
    return d / positive.mean() if positive.numel() else d


def _angles(e: torch.Tensor) -> torch.Tensor:
    """cos ∠(e_j − e_i, e_k − e_i) for all (i, j, k), flattened; degenerate pairs give 0."""
    diff = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)  # [i, j] = unit(e_j − e_i)
    return torch.bmm(diff, diff.transpose(1, 2)).flatten()


class RelationalKD(FeatureLoss):
    """Relational knowledge distillation (Park et al. 2019, arXiv 1904.05068).

        ψ_D(i, j)    = ‖e_i − e_j‖₂ / μ,   μ = mean of the nonzero distances in the batch
        ψ_A(i, j, k) = ⟨ (e_i − e_j)/‖·‖, (e_k − e_j)/‖·‖ ⟩
        L = λ_D · mean_{i,j} huber( ψ_D^s − ψ_D^t ) + λ_A · mean_{i,j,k} huber( ψ_A^s − ψ_A^t )

    on the flattened "hidden" taps, huber = smooth-L1 with δ = 1, λ_D = 25, λ_A = 50 as
    in the paper. As in the authors' code (github.com/lenscloth/RKD), the means run over
    all N² pairs and N³ triplets, the degenerate ones included (distance 0 and cosine 0
    on both sides). Student and teacher sizes may differ: only relations are compared.
    A batch of fewer than 2 samples has no relations and gives 0 (where the reference
    code gives NaN).
    """

    taps = ("hidden",)

    def __init__(self, *, distance_weight: float = 25.0, angle_weight: float = 50.0):
        super().__init__()
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, b: KDBatch) -> torch.Tensor:
        s, t = self.pair(b, "hidden")
        s, t = s.flatten(1), t.flatten(1)
        loss = s.sum() * 0.0
        if len(s) < 2:
            return loss
        if self.distance_weight:
            loss = loss + self.distance_weight * F.smooth_l1_loss(_distances(s), _distances(t))
        if self.angle_weight:
            loss = loss + self.angle_weight * F.smooth_l1_loss(_angles(s), _angles(t))
        return loss


class RelationalDistance(RelationalKD):
    """RKD distance-wise term only: λ_D · mean huber(ψ_D^s − ψ_D^t), λ_D = 25 (see `RelationalKD`)."""

    def __init__(self, *, weight: float = 25.0):
        super().__init__(distance_weight=weight, angle_weight=0.0)


class RelationalAngle(RelationalKD):
    """RKD angle-wise term only: λ_A · mean huber(ψ_A^s − ψ_A^t), λ_A = 50 (see `RelationalKD`)."""

    def __init__(self, *, weight: float = 50.0):
        super().__init__(distance_weight=0.0, angle_weight=weight)


LOSSES: dict[str, type[nn.Module]] = {
    "ce": CrossEntropy,
    "hard": HardLabel,
    "soft": SoftTarget,
    "dkd": DecoupledKD,
    "dist": DIST,
    "ttm": TransformedTeacher,
    "cosine": CosineHidden,
    "fitnet": FitNet,
    "at": AttentionTransfer,
    "rkd": RelationalKD,
    "rkd-d": RelationalDistance,
    "rkd-a": RelationalAngle,
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


# ================================================================ the objective
class Objective(nn.Module):
    """Σ_k w_k · L_k. `terms(b)` returns each weighted term, so a NaN can be traced to its loss.

    Before training with feature losses: `prepare(first_batch, student_taps=…, teacher_taps=…)`
    checks the teacher against the student, builds the projections/regressors and
    surfaces shape errors; then `extra_parameters()` go into the optimizer beside
    the student's. Call `objective.train()` / `.eval()` with the student (a FitNet
    regressor may hold BatchNorm), and save `objective.state_dict()` in checkpoints
    (after `prepare`, it loads back into a prepared objective).
    """

    def __init__(self, parts: list[tuple[str, float, nn.Module]]):
        super().__init__()
        self.names = [n for n, _, _ in parts]
        self.weights = [w for _, w, _ in parts]
        self.losses = nn.ModuleList([m for _, _, m in parts])

    @property
    def needs_teacher(self) -> bool:
        return any(getattr(m, "needs_teacher", False) for m in self.losses)

    @property
    def taps(self) -> tuple[str, ...]:
        """The feature roles the losses read, in order of first use; () for logit-only objectives."""
        roles: list[str] = []
        for m in self.losses:
            roles += [r for r in getattr(m, "taps", ()) if r not in roles]
        return tuple(roles)

    def terms(self, b: KDBatch) -> dict[str, torch.Tensor]:
        return {n: w * m(b) for n, w, m in zip(self.names, self.weights, self.losses)}

    def forward(self, b: KDBatch) -> torch.Tensor:
        return sum(self.terms(b).values())

    def set_progress(self, step: int, total: int) -> None:
        """The training loop's position: optimizer step `step` (0-based) of `total` in this run.
        Losses with a schedule (DKD's warm-up) read it; the others ignore it."""
        for m in self.losses:
            if hasattr(m, "set_progress"):
                m.set_progress(step, total)

    def describe(self) -> str:
        return " + ".join(f"{w:g}·{n}" for n, w in zip(self.names, self.weights))

    def prepare(self, b: KDBatch, *, student_taps: Mapping[str, str] | None = None,
                teacher_taps: Mapping[str, str] | None = None) -> "Objective":
        """Dry-run one batch (no grad, eval mode): checks class counts and feature shapes
        (BadInput naming the taps), and builds the learnable parts. Returns self."""
        if b.teacher_logits is not None:
            check_compatible(b.teacher_logits.shape, b.student_logits.shape)
        for m in self.losses:
            if isinstance(m, FeatureLoss):
                m.bind_taps(student_taps or {}, teacher_taps or {})
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                self.terms(b)
        finally:
            self.train(was_training)
        return self

    def extra_parameters(self) -> list[nn.Parameter]:
        """The losses' own parameters (projections, regressors), for the optimizer. Never part
        of the student, so never exported. Needs `prepare` first when a loss builds them lazily."""
        unbuilt = [n for n, m in zip(self.names, self.losses) if not getattr(m, "ready", True)]
        if unbuilt:
            raise RuntimeError(f"call Objective.prepare(batch) before extra_parameters(): "
                               f"{', '.join(unbuilt)} build their parameters on the first batch")
        return list(self.parameters())


def build_objective(methods: list[str] | tuple[str, ...], *, temperature: float = defaults.TEMPERATURE,
                    **loss_kwargs: Any) -> Objective:
    """Build the weighted sum from `NAME[:WEIGHT]` specs; `loss_kwargs[name]` are that loss's options,
    e.g. build_objective(["fitnet"], fitnet={"kernel": 3, "bn": True})."""
    parts = []
    for spec in methods:
        name, w = parse_method(spec)
        cls = LOSSES[name]
        kwargs = {"temperature": temperature} if issubclass(cls, LogitLoss) else {}
        kwargs.update(loss_kwargs.get(name, {}))
        try:
            parts.append((name, w, cls(**kwargs)))
        except TypeError as e:
            raise BadInput(f"--method {name}: bad option ({e})") from None
    if not parts:
        raise BadInput("no --method given; valid: " + ", ".join(LOSSES))
    return Objective(parts)


# ================================================================ FitNets stage 1
def hint_objective(objective: Objective) -> Objective:
    """The objective's FitNet terms alone, weight 1, sharing their regressors (FitNets stage 1)."""
    parts = [(n, 1.0, m) for n, m in zip(objective.names, objective.losses) if isinstance(m, FitNet)]
    if not parts:
        raise BadInput(f"a hint stage needs a 'fitnet' term in --method; the objective is {objective.describe()}")
    return Objective(parts)


def hint_stage_params(objective: Objective, student: nn.Module, *, student_taps: Mapping[str, str],
                      example_input: torch.Tensor) -> list[nn.Parameter]:
    """What FitNets stage 1 trains: the student's parameters up to its FitNet tap (the ones
    that tap's output depends on) plus the regressors. `objective` must be prepared."""
    hint = hint_objective(objective)
    params = [p for role in hint.taps
              for p in params_feeding(student, student_taps[role], example_input=example_input)]
    unique = list({id(p): p for p in params}.values())
    return unique + hint.extra_parameters()


# ================================================================ several teachers
def combine_teachers(logits: Sequence[torch.Tensor], *, mode: str = "mean", weights: Sequence[float] | None = None,
                     temperature: float) -> torch.Tensor:
    """Several teachers' logits → one set of logits whose softened distribution is their mixture.

        p(c|x) = Σ_k w_k(x) · softmax(t_k(x) / T)_c,     returned: T · log p
    so that softmax(returned / T) = p, and `SoftTarget` at the same T distils the mixture
    (`HardLabel` takes its argmax). Modes:
    - mean:       w_k = 1/K, averaging softened probabilities (Hinton et al. 2015, arXiv 1503.02531, §2).
    - weighted:   w_k = weights_k / Σ weights (fixed, e.g. by each teacher's validation accuracy).
    - confidence: per sample, w_k(x) ∝ max_c softmax(t_k(x))_c, each teacher's own confidence at T = 1;
      a label-free variant of confidence-aware multi-teacher KD (Zhang et al. 2022, arXiv 2201.00007,
      which weights by each teacher's cross-entropy with the label; transfer data may have none).
    Computed in log space (logsumexp), so no probability underflows to log 0.
    """
    if not logits:
        raise BadInput("combine_teachers: no teacher logits given")
    shapes = {tuple(t.shape) for t in logits}
    if len(shapes) != 1 or len(next(iter(shapes))) != 2:
        raise BadInput(f"combine_teachers: teachers must give (batch, classes) logits of one shape; got "
                       f"{', '.join(str(tuple(t.shape)) for t in logits)}")
    if not temperature > 0:
        raise BadInput(f"combine_teachers: temperature {temperature}: must be > 0")
    K = len(logits)
    log_p = torch.stack([F.log_softmax(t / temperature, dim=1) for t in logits])  # (K, N, C)
    log_w = _teacher_log_weights(logits, mode=mode, weights=weights).to(log_p)     # (K, N, 1) or (K, 1, 1)
    assert log_w.shape[0] == K
    return temperature * torch.logsumexp(log_w + log_p, dim=0)


def _teacher_log_weights(logits: Sequence[torch.Tensor], *, mode: str,
                         weights: Sequence[float] | None) -> torch.Tensor:
    K = len(logits)
    if mode == "mean":
        return torch.full((K, 1, 1), -math.log(K))
    if mode == "weighted":
        if weights is None or len(weights) != K:
            raise BadInput(f"combine_teachers mode 'weighted': give one weight per teacher ({K}); got {weights}")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if not (torch.isfinite(w).all() and (w >= 0).all() and w.sum() > 0):
            raise BadInput(f"combine_teachers weights {list(weights)}: must be finite, >= 0, not all 0")
        return (w / w.sum()).log().view(K, 1, 1)
    if mode == "confidence":
        conf = torch.stack([F.softmax(t.detach(), dim=1).amax(dim=1) for t in logits])  # (K, N)
        return (conf / conf.sum(dim=0, keepdim=True)).log().unsqueeze(-1)
    raise BadInput(f"combine_teachers: unknown mode '{mode}'; valid: {', '.join(COMBINE_MODES)}")


# ================================================================ online distillation
def dml_losses(logits_list: Sequence[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
    """Deep mutual learning (Zhang et al. 2018, arXiv 1706.00384): K peers, each student i gets

        L_i = CE(s_i, y) + 1/(K−1) · Σ_{j≠i} KL( p_j ‖ p_i ),   p = softmax(s)

    with p_j detached (each peer is a fixed target for the others within L_i), the CE over
    labeled samples only (y = -1 is unlabeled) and the KL over all, batch-averaged. Step each
    peer's optimizer on its own L_i (or backward their sum: the detach keeps them separate).
    """
    K = len(logits_list)
    if K < 2:
        raise BadInput(f"deep mutual learning needs at least 2 students; got {K}")
    log_ps = [F.log_softmax(z, dim=1) for z in logits_list]
    out = []
    for i, z in enumerate(logits_list):
        kl = sum(F.kl_div(log_ps[i], log_ps[j].detach(), reduction="batchmean", log_target=True)
                 for j in range(K) if j != i)
        out.append(_labeled_ce(z, labels) + kl / (K - 1))
    return out


class MutualLoss(nn.Module):
    """`dml_losses` as a module: forward(logits_list, labels) → [L_1, …, L_K]."""

    def forward(self, logits_list: Sequence[torch.Tensor], labels: torch.Tensor) -> list[torch.Tensor]:
        return dml_losses(logits_list, labels)
