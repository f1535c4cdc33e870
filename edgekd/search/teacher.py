"""Choosing the teacher before any distillation is paid for: the GRACE score.

GRACE (Panigrahi, Liu, Malladi, Kakade & Goel, "In Good GRACEs: Principled
Teacher Selection for Knowledge Distillation", arXiv 2511.02833, ICLR 2026)
looks only at the *student's* gradients on what a teacher would teach it. We
follow the authors' reference code (github.com/abhishekpanigrahi1996/GRACE,
`GRACE/GRACE_computation.py`) and adapt one thing: they fine-tune on text a
teacher generated, we distil soft labels, so the loss is Hinton's KD loss
(`edgekd.train.losses.SoftTarget`) on the teacher's logits.

For one teacher, on n train examples x_i with teacher logits t_i:

1. g_i = ∇_θ KD_T(student_θ(x_i), t_i), one gradient per example (torch.func:
   functional_call + vmap + grad), student in eval mode so BatchNorm uses its
   running statistics and one example cannot see another.
2. Random projection to k dims: ĝ_i = g_i R, R ∈ {±1/√k}^{D×k} (Rademacher,
   fixed seed), built in blocks of rows so the D×k matrix never exists at once.
   With 1/√k, E‖ĝ‖² = ‖g‖². The authors divide by √D instead; that multiplies
   every score of one student by the same k/D, so no ranking changes. When
   D ≤ k there is nothing to compress and ĝ = g.
3. For each of `n_splits` random splits into train (1 − f) and held-out (f):
       Σ_tr = (1/n_tr) Σ_{i∈tr} ĝ_i ĝ_iᵀ / ‖ĝ_i‖²    (train rows normalised to unit norm)
       Σ_te = (1/n_te) Σ_{j∈te} ĝ_j ĝ_jᵀ             (held-out rows NOT normalised)
   eigenvalues of Σ_tr smoothed towards their mean, λ' = (1 − c)λ + c·mean(λ),
   and score = trace(Σ_tr'⁻¹ Σ_te). GRACE is the mean over splits.
   The k×k second-moment form (not the n×n Gram kernel) is what the reference
   code computes; normalising only the train rows is its default too, so the
   score sees the held-out gradients' *directions* relative to the train
   spectrum and their *magnitudes*. Defaults as in the reference code:
   f = 0.1, c = 1e-3, 10 splits, k = 512.

GRACE tracks a leave-one-out generalisation bound, so a *lower* score reads as
the better teacher (our reading of the paper; its reference code computes the
score and leaves the ranking to the user). benchmarks/bench_teacher_selection.py
measured both directions on digits (6 teachers, tiny-cnn, 3 seeds, warm-up 0):
lower-first gave Spearman ρ = +0.70 with the student accuracy at labeled
fraction 1.0 but ρ = −0.26 at fraction 0.1, where it ranks first a
10%-accuracy teacher (near-uniform soft labels give the smallest gradients,
hence the lowest score) and costs 24 points of student accuracy. There the
teacher's own val accuracy predicted far better (ρ = +0.88). The score
follows the mean KD-gradient norm closely. `higher_is_better` defaults to
False: the direction with the strongest correlation measured (higher-first
peaked at ρ = +0.26). Show GRACE beside the teacher's accuracy, not instead of it.
"""

from __future__ import annotations

import copy
import math
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekd import artifacts, defaults
from edgekd.errors import BadInput

# Defaults of this stage (the reference code's values where it has one).
N_EXAMPLES = 256          # examples the gradients are taken on
PROJ_DIM = 512            # k, the projected dimension
N_SPLITS = 10             # random train/held-out splits averaged over
TEST_FRACTION = 0.1       # share of the n examples held out in each split
SMOOTH = 1e-3             # c: eigenvalues λ → (1 − c)λ + c·mean(λ)
WARMUP_STEPS = 0          # CE-only steps on labeled data before the gradients are taken
GRAD_BATCH = 64           # examples per vmap call
PROJ_BLOCK = 4096         # rows of R generated at a time
# Lower GRACE ranks first: the direction that correlated with the student's accuracy in
# benchmarks/bench_teacher_selection.py (see the module docstring).
HIGHER_IS_BETTER = False
RESULT_FILE = "teacher_selection.json"


# ---------------------------------------------------------------- per-example gradients
def _trainable(model) -> dict[str, Any]:
    return {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}


def _kd_gradient_batches(model, inputs, teacher_logits, *, temperature: float,
                         batch_size: int = GRAD_BATCH) -> Iterator[Any]:
    """Yield per-example gradients of the KD loss as flattened (B, D) blocks, B ≤ batch_size."""
    import torch
    from torch.func import functional_call, grad, vmap

    from edgekd.train.losses import KDBatch, SoftTarget

    kd = SoftTarget(temperature)
    params = _trainable(model)
    frozen = {k: v.detach() for k, v in model.named_parameters() if not v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    no_label = torch.full((1,), -1, dtype=torch.long)

    def loss_one(p, x, t):
        out = functional_call(model, ({**p, **frozen}, buffers), (x.unsqueeze(0),))
        return kd(KDBatch(student_logits=out, labels=no_label, teacher_logits=t.unsqueeze(0)))

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))
    was_training = model.training
    model.eval()  # BatchNorm on running stats: no in-place updates under vmap, no cross-example mixing
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start:start + batch_size]
            t = teacher_logits[start:start + batch_size].detach()
            g = per_example(params, x, t)
            yield torch.cat([g[k].reshape(len(x), -1) for k in params], dim=1)
    finally:
        model.train(was_training)


def per_example_gradients(model, inputs, teacher_logits, *, temperature: float,
                          batch_size: int = GRAD_BATCH):
    """All per-example KD gradients as one (n, D) tensor; for small students and tests."""
    import torch

    return torch.cat(list(_kd_gradient_batches(model, inputs, teacher_logits, temperature=temperature,
                                               batch_size=batch_size)))


# ---------------------------------------------------------------- random projection
class RademacherProjection:
    """x ↦ x R with R ∈ {+1/√k, −1/√k}^{D×k}, generated block by block from a fixed seed.

    Block b holds rows [b·block, (b+1)·block) of R and is drawn from its own
    generator seeded by (seed, b), so R does not depend on how the input is
    batched and is never held in full.
    """

    def __init__(self, dim_in: int, dim_out: int, *, seed: int = 0, block: int = PROJ_BLOCK):
        if dim_in < 1 or dim_out < 1:
            raise BadInput(f"projection {dim_in}→{dim_out}: both dimensions must be >= 1")
        self.dim_in, self.dim_out, self.seed, self.block = dim_in, dim_out, seed, block

    def _rows(self, b: int):
        import torch

        rows = min(self.block, self.dim_in - b * self.block)
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + b)
        signs = torch.randint(0, 2, (rows, self.dim_out), generator=g).float() * 2 - 1
        return signs / math.sqrt(self.dim_out)

    def __call__(self, x):
        import torch

        if x.shape[-1] != self.dim_in:
            raise BadInput(f"projection expects vectors of {self.dim_in} values, got {x.shape[-1]}")
        out = torch.zeros(*x.shape[:-1], self.dim_out, dtype=torch.float64)
        for b in range(math.ceil(self.dim_in / self.block)):
            lo = b * self.block
            out += x[..., lo:lo + self.block].double() @ self._rows(b).double()
        return out

    def matrix(self):
        """R in full (D×k). Only for small D: tests and inspection."""
        import torch

        return torch.cat([self._rows(b) for b in range(math.ceil(self.dim_in / self.block))])


def projected_gradients(model, inputs, teacher_logits, *, temperature: float, proj_dim: int = PROJ_DIM,
                        seed: int = 0, batch_size: int = GRAD_BATCH) -> tuple[Any, int]:
    """(n, k) projected per-example gradients (float64) and D, the student's gradient size.

    Each batch of B gradients is projected as soon as it is made: memory is B×D, not n×D.
    """
    import torch

    dim = sum(p.numel() for p in _trainable(model).values())
    project = RademacherProjection(dim, proj_dim, seed=seed) if dim > proj_dim else None
    blocks = [project(g) if project else g.double()
              for g in _kd_gradient_batches(model, inputs, teacher_logits, temperature=temperature,
                                            batch_size=batch_size)]
    return torch.cat(blocks), dim


# ---------------------------------------------------------------- the score
def smooth_eigenvalues(w, smooth: float = SMOOTH, eps: float = 1e-12):
    """λ → (1 − c)·λ + c·mean(λ), after clipping round-off negatives to eps (as the reference code)."""
    w = w.clamp_min(eps)
    return ((1.0 - smooth) * w + smooth * w.mean()).clamp_min(eps)


def grace_split_score(train, test, *, smooth: float = SMOOTH, eps: float = 1e-12) -> float:
    """trace(Σ_tr'⁻¹ Σ_te) for one split; rows are gradients (train rows get unit-normalised).

    With Σ_tr = V diag(λ) Vᵀ the trace is Σ_k ‖G_te v_k‖² / (n_te λ'_k): no k×k inverse is formed.
    Done in torch (float64), not numpy: numpy's BLAS threads fight torch's for the same cores.
    """
    import torch

    train = torch.as_tensor(train, dtype=torch.float64)
    test = torch.as_tensor(test, dtype=torch.float64)
    train = train / train.norm(dim=1, keepdim=True).clamp_min(eps)
    w, v = torch.linalg.eigh(train.T @ train / len(train))
    energy = (test @ v).square().sum(0) / len(test)   # v_kᵀ Σ_te v_k for each eigenvector
    return float((energy / smooth_eigenvalues(w, smooth, eps)).sum())


def grace_splits(n: int, *, n_splits: int = N_SPLITS, test_fraction: float = TEST_FRACTION,
                 seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, held-out) index pairs: `n_splits` permutations from one seeded generator."""
    n_test = max(1, int(n * test_fraction))
    if n - n_test < 1:
        raise BadInput(f"GRACE needs at least 2 examples for a train/held-out split, got n={n}")
    rng = np.random.default_rng(seed)
    splits = []
    for _ in range(n_splits):
        perm = rng.permutation(n)
        splits.append((np.sort(perm[n_test:]), np.sort(perm[:n_test])))
    return splits


def grace_from_gradients(grads, *, n_splits: int = N_SPLITS, test_fraction: float = TEST_FRACTION,
                         smooth: float = SMOOTH, seed: int = 0) -> dict[str, Any]:
    """GRACE of an (n, k) gradient matrix: the mean of `grace_split_score` over the splits."""
    import torch

    g = torch.as_tensor(grads, dtype=torch.float64)
    scores = [grace_split_score(g[tr], g[te], smooth=smooth)
              for tr, te in grace_splits(len(g), n_splits=n_splits, test_fraction=test_fraction, seed=seed)]
    return {"score": float(np.mean(scores)), "std": float(np.std(scores)), "per_split": scores}


def grace_score(*, student, teacher_logits, inputs, labels=None, temperature: float,
                proj_dim: int = PROJ_DIM, n_splits: int = N_SPLITS, seed: int = 0,
                test_fraction: float = TEST_FRACTION, smooth: float = SMOOTH,
                batch_size: int = GRAD_BATCH) -> dict[str, Any]:
    """GRACE of one teacher (its logits on `inputs`) for `student` as it is now.

    `labels` (−1 = unknown) only adds the teacher's top-1 accuracy on these
    examples to the result; the score itself never looks at labels.
    """
    import torch

    if not temperature > 0:
        raise BadInput(f"temperature {temperature}: must be > 0")
    if proj_dim < 1 or n_splits < 1 or not 0 < test_fraction < 1:
        raise BadInput(f"proj_dim {proj_dim}, n_splits {n_splits}, test_fraction {test_fraction}: "
                       "need proj_dim >= 1, n_splits >= 1, 0 < test_fraction < 1")
    with torch.no_grad():
        classes = student.eval()(inputs[:1]).shape[1]
    if teacher_logits.ndim != 2 or teacher_logits.shape != (len(inputs), classes):
        raise BadInput(f"teacher logits of shape {tuple(teacher_logits.shape)}; the student needs "
                       f"({len(inputs)}, {classes}): one row per input, one column per class")
    grads, dim = projected_gradients(student, inputs, teacher_logits, temperature=temperature,
                                     proj_dim=proj_dim, seed=seed, batch_size=batch_size)
    result = grace_from_gradients(grads, n_splits=n_splits, test_fraction=test_fraction, smooth=smooth, seed=seed)
    result.update(n=len(inputs), grad_dim=dim, proj_dim=min(dim, proj_dim), n_splits=n_splits,
                  test_fraction=test_fraction, smooth=smooth, temperature=temperature,
                  mean_grad_norm=float(grads.norm(dim=1).mean()))
    if labels is not None:
        known = labels >= 0
        if known.any():
            result["teacher_accuracy_on_sample"] = float(
                (teacher_logits.argmax(1)[known] == labels[known]).float().mean())
    return result


# ---------------------------------------------------------------- the stage
def _sample(bundle, n: int, seed: int):
    """n train examples (all when the train set is smaller), chosen by `seed`: inputs and labels."""
    import torch

    from edgekd.train.datasets import dataset_labels

    total = len(bundle.train)
    idx = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
    x = torch.stack([torch.as_tensor(bundle.train[int(i)][0]) for i in idx]).float()
    y = torch.as_tensor(dataset_labels(bundle.train)[idx], dtype=torch.long)
    return x, y, idx


def warm_up(model, bundle, *, steps: int, labeled_fraction: float, lr: float, batch_size: int, seed: int):
    """`steps` CE-only AdamW steps at a constant LR on the labeled share of the train set (same mask
    as distill), through the one training loop (`Phase.max_steps`); no validation, no checkpoint."""
    import math

    import torch

    from edgekd.train.datasets import Indexed, dataset_labels, labeled_mask
    from edgekd.train.loop import Phase, TrainOptions, fit
    from edgekd.train.losses import build_objective

    if steps <= 0:
        return model.eval()
    mask = labeled_mask(dataset_labels(bundle.train), labeled_fraction)
    labeled = Indexed(torch.utils.data.Subset(bundle.train, np.flatnonzero(mask).tolist()))
    epochs = math.ceil(steps / math.ceil(len(labeled) / batch_size))
    ph = Phase("warm-up", model, build_objective(["ce"]), labeled, None, epochs, seed, lr, batch_size,
               max_steps=steps, options=TrainOptions(schedule="constant", base_batch=None))
    return fit(ph, progress=False)


def _slug(spec: str) -> str:
    name = Path(spec).stem if spec.endswith(".pt") else spec
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]


def _check_args(teachers: list[str], n: int, warmup_steps: int) -> None:
    if not teachers:
        raise BadInput("no --teacher given; name one or more (registry names or teacher .pt paths)")
    seen = [t for i, t in enumerate(teachers) if t in teachers[:i]]
    if seen:
        raise BadInput(f"--teacher '{seen[0]}' given twice; each candidate once")
    if n < 4:
        raise BadInput(f"--n {n}: must be >= 4 (GRACE splits the examples into train and held-out)")
    if warmup_steps < 0:
        raise BadInput(f"--warmup-steps {warmup_steps}: must be >= 0")


def _paired_weights(teachers: list[str], files: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    """Each candidate's --teacher-weights (one file per torchvision:/timm: candidate, in order)."""
    from edgekd.models.foreign import parse_specs

    return {spec.ref: (spec.weights,) if spec.weights else () for spec in parse_specs(teachers, files)}


def rank_rows(rows: list[dict[str, Any]], *, higher_is_better: bool) -> list[dict[str, Any]]:
    """Rows sorted best first by GRACE score (ties keep the order given), each with its `rank`."""
    sign = -1.0 if higher_is_better else 1.0
    ranked = sorted(enumerate(rows), key=lambda ir: (sign * ir[1]["grace"]["score"], ir[0]))
    for rank, (_, row) in enumerate(ranked, start=1):
        row["rank"] = rank
    return [row for _, row in ranked]


def _score_teacher(spec: str, cfg, bundle, root: Path, *, x, y, init_pred, warm, proj_dim: int, n_splits: int,
                   seed: int, weights: tuple[str, ...] = ()) -> dict[str, Any]:
    """One candidate: obtain it (a registry teacher is built with its own explicit seed,
    `defaults.TEACHER_SEED`, so it gets the weights `edgekd distill` gives it), then score it."""
    import torch

    from edgekd.models.foreign import convert
    from edgekd.train.teacher import ensemble_accuracy, obtain_teacher, views

    teacher, info = obtain_teacher(replace(cfg, teacher=spec, teacher_weight_files=weights), bundle,
                                   root / _slug(spec))
    with torch.no_grad():
        t_logits = teacher.eval()(convert(x, *views(cfg, bundle)))   # in the teacher's own view
    if t_logits.shape[1] != bundle.num_classes:
        raise BadInput(f"teacher '{spec}' has {t_logits.shape[1]} classes, "
                       f"data {bundle.name} has {bundle.num_classes}", params=["data"])
    grace = grace_score(student=warm, teacher_logits=t_logits, inputs=x, labels=y, temperature=cfg.temperature,
                        proj_dim=proj_dim, n_splits=n_splits, seed=seed)
    return {"teacher": spec, **{k: v for k, v in info.items() if k != "source"}, "source": info.get("source"),
            "params": sum(p.numel() for p in teacher.parameters()),
            "val_accuracy": ensemble_accuracy(cfg, [teacher], bundle.val, bundle),
            "agreement_at_init": float((t_logits.argmax(1) == init_pred).float().mean()), "grace": grace}


def _predict(model, x):
    import torch

    with torch.no_grad():
        return model(x).argmax(1)


def _score_all(teachers: list[str], cfg, bundle, run: Path | None, *, progress: bool,
               **score: Any) -> list[dict[str, Any]]:
    """Score every candidate (`_score_teacher`, `score` its keywords): one row per teacher, in order.
    With `run`, trained teachers are kept under run/teachers/<name>/; else in a scratch folder."""
    from tqdm.auto import tqdm

    paired = _paired_weights(teachers, cfg.teacher_weight_files)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgekd-teachers-") as scratch:
        root = Path(run) / "teachers" if run is not None else Path(scratch)
        for spec in tqdm(teachers, desc="teachers", unit="teacher", disable=None if progress else True,
                         leave=False):
            rows.append(_score_teacher(spec, cfg, bundle, root, weights=paired[spec], **score))
    return rows


def select_teachers(*, student: str | None = None, teachers: list[str], data: str = defaults.DATA,
                    target: str = defaults.TARGET, run: Path | None = None,
                    temperature: float | None = None, n: int = N_EXAMPLES,
                    warmup_steps: int = WARMUP_STEPS, teacher_epochs: int | None = None,
                    seed: int = 0, progress: bool = True, higher_is_better: bool = HIGHER_IS_BETTER,
                    labeled_fraction: float = defaults.LABELED_FRACTION, proj_dim: int = PROJ_DIM,
                    n_splits: int = N_SPLITS, data_dir: Path | None = None, download: bool = False,
                    lr: float = defaults.LR, batch_size: int = defaults.BATCH_SIZE,
                    teacher_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Rank candidate teachers for `student` by GRACE, with two plain baselines beside it.

    Each teacher is a registry name (trained as `edgekd distill` trains it) or a teacher .pt
    path. For each: `grace` (score and spread), `val_accuracy` (the teacher's own) and
    `agreement_at_init` (top-1 agreement of the untrained student with it on the same n
    examples). With `run`, trained teachers are kept under run/teachers/<name>/ and the
    result goes to run/teacher_selection.json. `ranking` orders by GRACE, lowest first unless
    `higher_is_better`. student, temperature, teacher_epochs left None: from `defaults.recipe`.
    """
    from edgekd.data import load_data
    from edgekd.deploy.targets import load_target
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import make_student

    t0 = time.perf_counter()
    _check_args(teachers, n, warmup_steps)
    cfg = DistillConfig(data=data, data_dir=None if data_dir is None else Path(data_dir), download=download,
                        student=student, target=target, temperature=temperature, teacher_epochs=teacher_epochs,
                        lr=lr, batch_size=batch_size, labeled_fraction=labeled_fraction, progress=progress,
                        **(teacher_options or {}))
    cfg.validate()
    profile, bundle = load_target(target), load_data(data, data_dir=data_dir, download=download)
    cfg = cfg.for_data(bundle)
    x, y, _ = _sample(bundle, n, seed)
    init = make_student(cfg, bundle, profile, seed).eval()
    init_pred = _predict(init, x)
    warm = warm_up(copy.deepcopy(init), bundle, steps=warmup_steps, labeled_fraction=labeled_fraction,
                   lr=lr, batch_size=batch_size, seed=seed)

    rows = _score_all(teachers, cfg, bundle, run, progress=progress, x=x, y=y, init_pred=init_pred, warm=warm,
                      proj_dim=proj_dim, n_splits=n_splits, seed=seed)
    ranked = rank_rows(rows, higher_is_better=higher_is_better)
    result = {
        "student": cfg.student, "data": bundle.name, "target": profile.name, "temperature": cfg.temperature,
        "teacher_epochs": cfg.teacher_epochs,
        "n": len(x), "seed": seed, "warmup_steps": warmup_steps, "labeled_fraction": labeled_fraction,
        "score": "GRACE (Panigrahi et al. 2025, arXiv 2511.02833) on the Hinton KD loss",
        "higher_is_better": higher_is_better,
        "ranking": [r["teacher"] for r in ranked], "best": ranked[0]["teacher"],
        "teachers": ranked, "seconds": time.perf_counter() - t0,
    }
    if run is not None:
        artifacts.write_json(Path(run) / RESULT_FILE, result)
        result["path"] = str(Path(run) / RESULT_FILE)
    return result
