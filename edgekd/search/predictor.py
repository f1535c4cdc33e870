"""Latency before timing: MACs, params and runtime nodes, a prior, and a non-negative linear fit.

MACs come from forward hooks on Conv2d/Linear; the prior (per-node dispatch plus MACs at a
nominal rate) ranks the first draws; from `CALIBRATION` timings on, NNLS fits
latency ≈ a + b·MACs + c·params + d·nodes and is refitted after every timing. The safety
factor says how far over the budget a prediction may be before a draw is skipped untimed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from edgekd.search.space import Candidate

CALIBRATION = 4                  # candidates timed before the predictor is first fitted
MIN_MEASURED = 6                 # always timed, so that Spearman's ρ means something
SAFETY = 2.0                     # skip a draw predicted slower than this × the latency budget …
MIN_SAFETY = 1.1                 # … or, once the predictor has shown how far it over-predicts, less
# A rough single-core CPU prior, used only before any timing: its ranking matters, not its scale.
PRIOR_MS_PER_NODE = 0.002
PRIOR_MACS_PER_MS = 2e6


def complexity(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Per sample (batch 1): MACs of Conv2d and Linear, params, weight layers, runtime nodes.

    MACs are `edgekd.models.layer_macs` (the counter `forward_macs` uses). Bias adds,
    BatchNorm (folded into Conv at export) and activations are not MACs. `nodes` estimates the ONNX nodes the runtime
    dispatches: every leaf module but BatchNorm/Identity/Dropout, Hardswish as two
    (HardSigmoid + Mul), plus one Add per residual connection.
    """
    import torch
    from torch import nn

    from edgekd.models import layer_macs

    counts = {"macs": 0, "layers": 0, "nodes": 0}
    skip = (nn.BatchNorm2d, nn.Identity, nn.Dropout)

    def hook(module, _inputs, output) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            counts["macs"] += layer_macs(module, output)
            counts["layers"] += 1
        if list(module.children()):  # a block with a residual connection: its Add
            counts["nodes"] += int(module.residual is True)
        elif not isinstance(module, skip):
            counts["nodes"] += 2 if isinstance(module, nn.Hardswish) else 1

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if not list(m.children()) or getattr(m, "residual", None) is not None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {"params": sum(p.numel() for p in model.parameters()), **counts}


def prior_ms(cost: dict[str, int]) -> float:
    """Latency guessed before any timing: per-node dispatch plus MACs at a nominal rate."""
    return PRIOR_MS_PER_NODE * cost["nodes"] + cost["macs"] / PRIOR_MACS_PER_MS


class LatencyPredictor:
    """latency_ms ≈ a + b·MACs + c·params + d·nodes, all coefficients ≥ 0 (NNLS).

    Non-negative because each term is a cost: fixed overhead, arithmetic, weights
    read, per-node dispatch. Columns are scaled to their largest value before the
    fit so the solver sees numbers of one size.
    """

    FEATURES = ("1", "macs", "params", "nodes")

    def __init__(self) -> None:
        self.coef: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    @staticmethod
    def features(costs: list[dict[str, int]]) -> np.ndarray:
        return np.asarray([[1.0, c["macs"], c["params"], c["nodes"]] for c in costs], dtype=float)

    def fit(self, costs: list[dict[str, int]], latency_ms: list[float]) -> "LatencyPredictor":
        from scipy.optimize import nnls

        x = self.features(costs)
        self.scale = np.maximum(np.abs(x).max(0), 1e-12)
        self.coef, _ = nnls(x / self.scale, np.asarray(latency_ms, dtype=float))
        return self

    def predict(self, costs: list[dict[str, int]]) -> np.ndarray:
        if self.coef is None:
            return np.asarray([prior_ms(c) for c in costs])
        return (self.features(costs) / self.scale) @ self.coef

    def coefficients(self) -> dict[str, float] | None:
        """Per unit of each feature (ms per MAC, per param, per node; intercept in ms)."""
        if self.coef is None:
            return None
        return {k: float(c / s) for k, c, s in zip(self.FEATURES, self.coef, self.scale)}


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None for fewer than 3 points or a constant side."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None

    def ranks(x: np.ndarray) -> np.ndarray:
        r = np.empty(len(x))
        r[np.argsort(x, kind="stable")] = np.arange(1, len(x) + 1)
        for v in np.unique(x):
            r[x == v] = r[x == v].mean()
        return r

    return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def loo_predictions(costs: list[dict[str, int]], latency_ms: list[float]) -> list[float]:
    """Each measured candidate predicted by a fit on all the others (honest, out of sample)."""
    out = []
    for i in range(len(costs)):
        rest = [j for j in range(len(costs)) if j != i]
        model = LatencyPredictor().fit([costs[j] for j in rest], [latency_ms[j] for j in rest])
        out.append(float(model.predict([costs[i]])[0]))
    return out


def safety_factor(timed: list[Candidate]) -> float:
    """How far over the budget a prediction may be before the draw is skipped: 1 + the 90th
    percentile of the predictor's own leave-one-out over-prediction so far (a candidate within
    budget is rarely predicted beyond that), kept within [MIN_SAFETY, SAFETY]."""
    measured = [c.p90 for c in timed]
    loo = loo_predictions([c.cost for c in timed], measured)
    over = float(np.quantile([p / m - 1 for p, m in zip(loo, measured)], 0.9))
    return float(np.clip(1 + over, MIN_SAFETY, SAFETY))


def predictor_report(timed: list[Candidate], cands: list[Candidate], predictor: LatencyPredictor) -> dict[str, Any]:
    measured = [c.p90 for c in timed]
    costs = [c.cost for c in timed]
    loo = loo_predictions(costs, measured) if len(timed) >= 3 else []
    for c, p in zip(timed, loo):
        c.loo_ms = p
    final = LatencyPredictor().fit(costs, measured) if timed else predictor
    online = [(c.predicted_ms, c.p90) for c in timed if c.predicted_ms is not None]
    skipped = [c.id for c in cands if c.status == "skipped"]
    return {
        "features": list(LatencyPredictor.FEATURES), "fit": "non-negative least squares",
        "coefficients": final.coefficients(), "calibration": min(CALIBRATION, len(timed)),
        "min_measured": MIN_MEASURED, "safety_range": [MIN_SAFETY, SAFETY],
        "safety_final": safety_factor(timed) if len(timed) >= 3 else None,
        "measured": len(timed), "skipped": skipped, "timings_saved": len(skipped),
        "spearman_rho": spearman(loo, measured) if loo else None,
        "spearman_rho_macs": spearman([c["macs"] for c in costs], measured),
        "spearman_rho_prior": spearman([prior_ms(c) for c in costs], measured),
        "spearman_rho_online": spearman([p for p, _ in online], [m for _, m in online]),
        "note": "spearman_rho: leave-one-out predictions of the fit on all timed candidates; "
                "_online: the predictions each skip decision used, made before that timing",
    }
