"""Successive halving over the candidates within budget (Hyperband-style continuation).

Every survivor is distilled for the short budget; the best 1/`ETA` by val accuracy go on
to `ETA`× the epochs *continuing from their weights* (no epoch is paid twice), …, and the
finalists reach the full `epochs` of the schedule `edgekd distill` uses.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekd.search.space import Candidate, build

ETA = 3                          # successive halving: keep 1/ETA, give them ETA× the epochs
SHORT_FRACTION = 6               # default short budget: epochs / SHORT_FRACTION (5 of 30)


@dataclass
class Trainer:
    """Everything one distillation of a candidate needs; the teacher's outputs are computed once."""

    cfg: Any                        # edgekd.train.config.DistillConfig
    bundle: Any
    profile: Any
    source: Any                     # TeacherSource (cached) or None
    mask: np.ndarray
    labeled_only: Any

    def _objective(self):
        from edgekd.train.losses import build_objective

        return build_objective(list(self.cfg.methods), temperature=self.cfg.temperature, **self.cfg.loss_options)

    def distil(self, c: Candidate, *, epochs: int, seed: int, init: dict | None = None):
        """Exactly the distilled phase of `edgekd.train.distill.train_students`, for a custom architecture;
        with `init` (the previous rung's weights) it continues training instead of starting over."""
        from edgekd.train.datasets import Indexed
        from edgekd.train.features import default_taps
        from edgekd.train.loop import Phase

        model = build(c, self.bundle, self.profile.ops_allow, seed=seed)
        if init is not None:
            model.load_state_dict(init)
        obj = self._objective()
        taps = default_taps(model, roles=obj.taps) if obj.taps else {}
        ph = Phase(f"kd/{c.name}/seed{seed}", model, obj, Indexed(self.bundle.train, self.mask), self.bundle.val,
                   epochs, seed, self.cfg.lr, self.cfg.batch_size, source=self.source, student_taps=taps,
                   hint_epochs=self.cfg.hint_epochs)
        return self._train(ph, seed)

    def alone(self, c: Candidate, *, epochs: int, seed: int):
        """The control of `edgekd.train.distill.train_control`: labeled data only, same epochs and steps."""
        from edgekd.train.datasets import Indexed
        from edgekd.train.loop import Phase
        from edgekd.train.losses import build_objective

        model = build(c, self.bundle, self.profile.ops_allow, seed=seed)
        ph = Phase(f"alone/{c.name}/seed{seed}", model, build_objective(["ce"]), Indexed(self.labeled_only),
                   self.bundle.val, epochs, seed, self.cfg.lr, self.cfg.batch_size)
        return self._train(ph, seed)

    def _train(self, ph, seed: int):
        from edgekd.train.loop import fit_scored

        return ph.model, {"seed": seed, **fit_scored(ph, self.bundle.test, progress=False)}

    def rung(self, c: Candidate, epochs: int, *, keep_models: bool = False) -> dict[str, Any]:
        """Train `c` up to `epochs` in total: a promoted candidate continues from its previous
        rung's weights for the remaining epochs (Hyperband-style), so no epoch is paid twice."""
        prev = c.rungs[-1] if c.rungs else None
        done = prev["epochs"] if prev else 0
        inits = prev["_states"] if prev else [None] * self.cfg.seeds
        runs = [self.distil(c, epochs=epochs - done, seed=s, init=inits[s]) for s in range(self.cfg.seeds)]
        row = {"epochs": epochs, "val": float(np.mean([r["val"] for _, r in runs])),
               "test": float(np.mean([r["test"] for _, r in runs])),
               "seconds": float(sum(r["seconds"] for _, r in runs)),
               "seconds_per_epoch": float(sum(r["seconds"] for _, r in runs)) / ((epochs - done) * len(runs)),
               "continued_from": done,
               "per_seed": [r for _, r in runs]}
        row["_states"] = [{k: v.detach().clone() for k, v in m.state_dict().items()} for m, _ in runs]
        if keep_models:
            row["_models"] = [m for m, _ in runs]
        c.rungs.append(row)
        return row


def rung_epochs(epochs: int, short: int, eta: int = ETA) -> list[int]:
    """short, short·eta, short·eta², … capped at `epochs` (the last rung is always `epochs`)."""
    out = [min(short, epochs)]
    while out[-1] < epochs:
        out.append(min(epochs, out[-1] * eta))
    return out


def successive_halving(trainer: Trainer, survivors: list[Candidate], *, epochs: int, short: int,
                       progress: bool) -> tuple[list[Candidate], list[dict[str, Any]]]:
    """Train every survivor briefly; the best 1/ETA go on to ETA× the epochs, continuing from their
    weights; the finalists reach `epochs`. A lone candidate skips the intermediate rungs."""
    from tqdm.auto import tqdm

    alive = list(survivors)
    budgets = rung_epochs(epochs, short)
    log = []
    for i, e in enumerate(budgets):
        last = i == len(budgets) - 1
        if not last and len(alive) == 1:
            continue
        t0 = time.perf_counter()
        for c in tqdm(alive, desc=f"rung {i + 1}/{len(budgets)} ({e} epochs)", unit="candidate",
                      disable=None if progress else True, leave=False):
            trainer.rung(c, e, keep_models=last)
            c.status = "trained"
        ranked = sorted(alive, key=Candidate.rank_key)
        keep = ranked if last else ranked[:max(1, math.ceil(len(alive) / ETA))]
        log.append({"epochs": e, "candidates": [c.id for c in alive],
                    "promoted": [c.id for c in keep] if not last else [], "seconds": time.perf_counter() - t0})
        alive = keep
    for c in alive:
        c.status = "finalist"
    return alive, log
