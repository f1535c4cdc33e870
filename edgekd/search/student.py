"""Choosing the student for the hardware: a measured accuracy–latency Pareto front under a budget.

In the spirit of hardware-aware searches (MCUNet/TinyNAS, Once-for-All), at the
scale of one machine. Read top to bottom:

1. **Search space.** Candidates are `edgekd.models.student_net` keyword sets:
   stage widths × width multiplier, depth per stage, kernel size, block type
   (`conv`, depthwise-separable `dw`, inverted residual `ir`) and activation,
   keeping only the blocks and activations whose ONNX ops the target allows.
   They are drawn in an order fixed by the seed (the pipeline's default student
   first, unless told otherwise). Every candidate that is timed or trained is
   first audited (`check_student_ops`); a draw the predictor rejects costs one
   forward pass and is neither exported nor audited.
2. **Cheap predictor first.** MACs (forward hooks on Conv2d/Linear), params and
   the number of nodes the runtime runs give a rough prior. The first
   `CALIBRATION` candidates are timed; from then on a non-negative least squares
   fit, latency ≈ a + b·MACs + c·params + d·nodes, refitted after every timing,
   predicts each new draw. A draw predicted slower than the budget × a safety
   factor (1 + how far the predictor has over-predicted so far, leave-one-out 90th
   percentile, within [`MIN_SAFETY`, `SAFETY`]) is skipped untimed (a timing
   saved) and the next one is drawn, as hardware-aware
   searches reject architectures by a latency model before evaluating them;
   drawing stops when `trials` candidates have been timed. At least
   `MIN_MEASURED` are always timed so that Spearman's ρ between predicted and
   measured latency means something. ρ is reported for the leave-one-out
   predictions of the final fit, for MACs alone, and for the predictions made
   before each timing.
3. **Timing.** Each candidate (untrained weights: fp32 latency does not depend
   on the values) is exported at the profile's opset and timed through the
   target's runner (`bench` agent: p90 latency, peak RSS, model bytes); one
   that misses the latency budget by less than `RETIME_BAND` is timed again and
   the better run kept, so that a burst of load does not drop it.
   Candidates over the latency, memory or size budget are dropped before any
   training. Under emulation (qemu) time and memory are not the target's, so
   only `--budget-ms`, when given, and the size budget apply (as `bench` does).
4. **Successive halving.** The teacher is trained (or loaded) once and its
   outputs cached; every survivor is distilled for `short_epochs` (same seeds,
   method, teacher), the best 1/`ETA` by val accuracy are retrained from
   scratch at `ETA`× the epochs, …, and the finalists get the full `epochs`
   with the same schedule `edgekd distill` uses. Each rung trains from scratch
   so a rung's accuracy means "after E epochs of the standard schedule".
   The finalists also get the student-alone control ("teacher capacity": how
   much distillation adds at that size).
5. **Output.** The Pareto front of val accuracy (at the budget each candidate
   reached) against latency, and against latency and size; the recommended
   student (highest val accuracy among the finalists, ties → lower measured
   p90); `select_student.json`, `select_student.png`; and a normal run
   (`teacher.pt`, `student.pt` with the candidate's `student_net` keywords,
   `student_alone.pt`, `config.json`, `distill.json`) that `edgekd export`
   and `edgekd bench` continue from.
"""

from __future__ import annotations

import itertools
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgekd import artifacts, defaults
from edgekd.errors import BadInput, CheckFailed

# ---------------------------------------------------------------- defaults of this stage
TRIALS = 12                      # candidates timed (draws the predictor skips come on top)
STAGE_WIDTHS: tuple[tuple[int, ...], ...] = ((8, 16), (16, 32), (8, 16, 32), (16, 32, 64))
WIDTH_MULTS = (0.5, 0.75, 1.0, 1.5)
DEPTHS = (1, 2)
KERNELS = (3, 5)
CALIBRATION = 4                  # candidates timed before the predictor is first fitted
MAX_DRAWS = 10                   # draw at most MAX_DRAWS × trials candidates (skips included)
MIN_MEASURED = 6                 # always timed, so that Spearman's ρ means something
SAFETY = 2.0                     # skip a draw predicted slower than this × the latency budget …
MIN_SAFETY = 1.1                 # … or, once the predictor has shown how far it over-predicts, less
RETIME_BAND = 1.5                # a candidate up to this × over the latency budget is timed twice
ETA = 3                          # successive halving: keep 1/ETA, give them ETA× the epochs
SHORT_FRACTION = 6               # default short budget: epochs / SHORT_FRACTION (5 of 30)
TIMING_MIN_SECONDS = 0.3         # per candidate; the bench stage times the final model longer
# A rough single-core CPU prior, used only before any timing: its ranking matters, not its scale.
PRIOR_MS_PER_NODE = 0.002
PRIOR_MACS_PER_MS = 2e6
RESULT_FILE = "select_student.json"
PLOT_FILE = "select_student.png"


# ---------------------------------------------------------------- the search space
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
    """'conv-16x32-k3-d1-relu': two keyword sets that build the same network get the same name."""
    chans = "x".join(map(str, channels(net_kwargs)))
    return f"{net_kwargs['block']}-{chans}-k{net_kwargs['kernel']}-d{net_kwargs['depth']}-{net_kwargs['act']}"


def registry_kwargs(name: str) -> dict[str, Any]:
    """A registry student's full `student_net` keywords (its overrides on the builder's defaults)."""
    from edgekd.models import STUDENTS

    if name not in STUDENTS:
        raise BadInput(f"unknown student '{name}' to include; valid: {', '.join(STUDENTS)}")
    base = {"widths": (8, 16), "block": "conv", "kernel": 3, "depth": 1, "width_mult": 1.0, "act": "relu"}
    kw = {**base, **STUDENTS[name]}
    return {**kw, "widths": list(kw["widths"])}


def candidate_stream(target_ops: frozenset[str] | None, *, seed: int,
                     include: tuple[str, ...] = (defaults.STUDENT,)) -> Iterator[tuple[str, dict]]:
    """Distinct (name, student_net keywords) in a reproducible order: the registry students
    named in `include` first (when the target can build them), then the grid shuffled by `seed`."""
    space = search_space(target_ops)
    if not space["block"] or not space["act"]:
        raise BadInput("the target allows no student block or activation; "
                       "see edgekd.models.BLOCKS and ACTIVATIONS for the ops each needs")
    seen: set[str] = set()
    for name in include:
        kw = registry_kwargs(name)
        if kw["block"] in space["block"] and kw["act"] in space["act"] and candidate_name(kw) not in seen:
            seen.add(candidate_name(kw))
            yield name, kw
    keys = ("widths", "width_mult", "depth", "kernel", "block", "act")
    grid = list(itertools.product(*(space[k] for k in keys)))
    for i in np.random.default_rng(seed).permutation(len(grid)):
        kw = dict(zip(keys, grid[int(i)]))
        kw["widths"] = list(kw["widths"])
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


# ---------------------------------------------------------------- cost without timing
def complexity(model, input_shape: tuple[int, ...]) -> dict[str, int]:
    """Per sample (batch 1): MACs of Conv2d and Linear, params, weight layers, runtime nodes.

    Conv MACs = output elements × (in_channels / groups) × kh × kw; Linear MACs =
    output elements × in_features. Bias adds, BatchNorm (folded into Conv at export)
    and activations are not MACs. `nodes` estimates the ONNX nodes the runtime
    dispatches: every leaf module but BatchNorm/Identity/Dropout, Hardswish as two
    (HardSigmoid + Mul), plus one Add per residual connection.
    """
    import torch
    from torch import nn

    counts = {"macs": 0, "layers": 0, "nodes": 0}
    skip = (nn.BatchNorm2d, nn.Identity, nn.Dropout)

    def hook(module, _inputs, output) -> None:
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            counts["macs"] += output.numel() * (module.in_channels // module.groups) * kh * kw
            counts["layers"] += 1
        elif isinstance(module, nn.Linear):
            counts["macs"] += output.numel() * module.in_features
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


def count_macs(model, input_shape: tuple[int, ...]) -> int:
    return complexity(model, input_shape)["macs"]


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


# ---------------------------------------------------------------- candidates
@dataclass
class Candidate:
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


def cost_of(c: Candidate, bundle, profile):
    """Build the candidate and count its costs: one forward pass, no export, no runtime.
    Returns the model, or None (refused, with the reason) when the target cannot build it."""
    try:
        model = build(c, bundle, profile.ops_allow)
    except BadInput as e:
        c.status, c.reason = "refused", str(e)
        return None
    c.cost = complexity(model, bundle.input_shape)
    c.prior_ms = prior_ms(c.cost)
    return model


def audit_candidate(c: Candidate, model, bundle, profile) -> bool:
    """The op audit (`check_student_ops`) before anything is paid for; a refusal is kept, with its reason."""
    from edgekd.models import check_student_ops

    try:
        c.ops = check_student_ops(model, input_shape=bundle.input_shape, target=profile)
    except BadInput as e:
        c.status, c.reason = "refused", str(e)
        return False
    return True


# ---------------------------------------------------------------- timing
@dataclass
class Budget:
    latency_ms: float | None
    memory_mb: float | None
    size_mb: float | None
    latency_source: str
    emulated: bool = False

    def misses(self, m: dict[str, Any]) -> list[str]:
        rows = [("latency p90", m["latency_p90_ms"], self.latency_ms, "ms"),
                ("peak RSS", m["peak_rss_mb"], self.memory_mb, "MB"),
                ("model size", m["model_bytes"] / 2**20, self.size_mb, "MB")]
        return [f"{what} {v:.4g} {unit} > {lim:g} {unit}" for what, v, lim, unit in rows
                if lim is not None and v > lim]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def make_budget(profile, budget_ms: float | None, *, emulated: bool) -> Budget:
    """`--budget-ms` or the profile's budgets; under emulation the profile's time and memory
    budgets do not apply (they are the target's, not the emulator's), as in `bench`."""
    b = profile.budget
    lat = budget_ms if budget_ms is not None else (None if b is None or emulated else b.latency_p90_ms)
    source = "--budget-ms" if budget_ms is not None else ("profile" if lat is not None else "none")
    return Budget(latency_ms=lat, memory_mb=None if b is None or emulated else b.peak_memory_mb,
                  size_mb=None if b is None else b.model_size_mb, latency_source=source, emulated=emulated)


# Runs the runner in a small helper process: Linux carries ru_maxrss across fork+exec, so the
# bench agent started straight from this PyTorch process reports our RSS as its own peak.
_HELPER = """
import json, sys
from pathlib import Path
from edgekd.errors import EdgekdError
from edgekd.bench.runners import get_runner
a = json.loads(sys.stdin.read())
try:
    r = get_runner(a["runner"]).run(model=Path(a["model"]), config=a["config"])
except EdgekdError as e:
    r = {"error": str(e)}
print(json.dumps(r))
"""
HELPER_TIMEOUT_S = 900


def run_isolated(runner: str, model: Path, config: dict) -> dict[str, Any]:
    """`get_runner(runner).run(model=..., config=...)` from a helper process that has not loaded torch."""
    import json
    import os
    import subprocess
    import sys

    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
    try:
        proc = subprocess.run([sys.executable, "-c", _HELPER], capture_output=True, text=True, env=env,
                              input=json.dumps({"runner": runner, "model": str(model), "config": config}),
                              timeout=HELPER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BadInput(f"timing {model.name} on runner {runner} took over {HELPER_TIMEOUT_S} s") from None
    lines = proc.stdout.strip().splitlines()
    try:
        result = json.loads(lines[-1]) if lines else None
    except ValueError:
        result = None
    if not isinstance(result, dict):
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise BadInput(f"timing {model.name} on runner {runner} failed (exit {proc.returncode}): {last}")
    if "error" in result:
        raise BadInput(result["error"])
    return result


def time_candidate(c: Candidate, bundle, profile, runner: str, folder: Path, *, min_seconds: float) -> dict[str, Any]:
    """Export (untrained weights) at the profile's opset and batch, time through the runner."""
    from edgekd.bench.runners import agent_config
    from edgekd.deploy.export import default_batch, export_onnx

    path = export_onnx(build(c, bundle, profile.ops_allow), folder / f"candidate{c.id}.onnx",
                       input_shape=bundle.input_shape, opset=profile.opset, batch=default_batch(profile))
    r = run_isolated(runner, path, agent_config(profile, min_seconds=min_seconds, batches=()))
    path.unlink(missing_ok=True)
    return {"latency_p90_ms": r["latency_ms"]["p90"], "latency_p50_ms": r["latency_ms"]["p50"],
            "peak_rss_mb": r["peak_rss_mb"], "model_bytes": r["model_bytes"], "provider": r["provider"],
            "threads": r["threads"], "emulated": bool(r.get("emulated", False))}


def search(stream: Iterator[tuple[str, dict]], bundle, profile, *, trials: int, runner: str,
           budget_ms: float | None, min_seconds: float, progress: bool) -> tuple[list[Candidate], Budget, dict]:
    """Draw candidates until `trials` have been timed: count each one's costs, predict its latency
    and skip it when the prediction is hopeless (a timing saved; the next one is drawn); audit
    the others, then time them.

    The first CALIBRATION are timed unconditionally, and at least MIN_MEASURED in all, so that
    the predictor has data and Spearman's ρ means something. At most MAX_DRAWS × `trials`
    candidates are drawn, so a budget nothing meets ends the search.
    """
    from tqdm.auto import tqdm

    cands: list[Candidate] = []
    timed: list[Candidate] = []
    predictor = LatencyPredictor()
    budget = make_budget(profile, budget_ms, emulated=False)
    bar = tqdm(total=trials, desc="audit, predict, time", unit="timed", disable=None if progress else True, leave=False)
    with tempfile.TemporaryDirectory(prefix="edgekd-select-") as tmp:
        for name, kw in stream:
            if len(timed) >= trials or len(cands) >= MAX_DRAWS * trials:
                break
            c = Candidate(id=len(cands), name=name, net_kwargs=kw)
            cands.append(c)
            model = cost_of(c, bundle, profile)
            if model is None:
                continue
            if len(timed) >= CALIBRATION:
                predictor.fit([t.cost for t in timed], [t.p90 for t in timed])
                c.predicted_ms = float(predictor.predict([c.cost])[0])
                if budget.latency_ms is not None and len(timed) >= MIN_MEASURED:
                    limit = budget.latency_ms * safety_factor(timed)
                    if c.predicted_ms > limit:
                        c.status = "skipped"
                        c.reason = (f"predicted p90 {c.predicted_ms:.4g} ms > {limit:.4g} ms "
                                    f"({limit / budget.latency_ms:.2f} × budget)")
                        continue
            if not audit_candidate(c, model, bundle, profile):
                continue
            c.measured = time_candidate(c, bundle, profile, runner, Path(tmp), min_seconds=min_seconds)
            if len(timed) == 0:  # the runner says whether it emulates; emulated time is not the target's
                budget = make_budget(profile, budget_ms, emulated=c.measured["emulated"])
            lim = budget.latency_ms
            if lim is not None and lim < c.p90 <= RETIME_BAND * lim:
                # A near miss is timed once more and the better run kept: a burst of load on a
                # shared host should not drop a candidate that fits.
                again = time_candidate(c, bundle, profile, runner, Path(tmp), min_seconds=min_seconds)
                runs = [c.measured["latency_p90_ms"], again["latency_p90_ms"]]
                c.measured = {**min(c.measured, again, key=lambda m: m["latency_p90_ms"]), "p90_runs": runs}
            timed.append(c)
            bar.update()
    bar.close()
    for c in timed:
        miss = budget.misses(c.measured)
        c.status, c.reason = ("over budget", "; ".join(miss)) if miss else ("timed", "")
    return cands, budget, predictor_report(timed, cands, predictor)


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


# ---------------------------------------------------------------- training
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
        log.append({"epochs": e, "candidates": [c.id for c in alive], "promoted": [c.id for c in keep] if not last else [],
                    "seconds": time.perf_counter() - t0})
        alive = keep
    for c in alive:
        c.status = "finalist"
    return alive, log


# ---------------------------------------------------------------- Pareto front
def pareto(points: list[dict[str, float]], *, maximize: str, minimize: tuple[str, ...]) -> list[int]:
    """Indices of the points no other point dominates (≥ on `maximize`, ≤ on each of
    `minimize`, strictly better on one)."""
    def dominates(a: dict, b: dict) -> bool:
        no_worse = a[maximize] >= b[maximize] and all(a[k] <= b[k] for k in minimize)
        better = a[maximize] > b[maximize] or any(a[k] < b[k] for k in minimize)
        return no_worse and better

    return [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]


def fronts(trained: list[Candidate]) -> dict[str, list[int]]:
    pts = [{"acc": c.val, "lat": c.p90, "size": c.measured["model_bytes"]} for c in trained]
    by_lat = sorted(pareto(pts, maximize="acc", minimize=("lat",)), key=lambda i: pts[i]["lat"])
    return {"latency": [trained[i].id for i in by_lat],
            "latency_size": [trained[i].id for i in pareto(pts, maximize="acc", minimize=("lat", "size"))]}


# ---------------------------------------------------------------- report
def _panel(ax, result: dict[str, Any], x_of, *, label: str, front_key: str, budget_ms: float | None) -> None:
    """One scatter of val accuracy against `x_of(candidate)`, on a log axis."""
    from matplotlib import ticker

    trained = [c for c in result["candidates"] if c.get("rungs")]
    by_id = {c["id"]: c for c in trained}
    epochs = sorted({c["epochs"] for c in trained})
    for e in epochs:
        group = [c for c in trained if c["epochs"] == e]
        ax.scatter([x_of(c) for c in group], [c["val_accuracy"] for c in group], s=18 + 50 * e / max(epochs),
                   alpha=0.75, label=f"{e} epochs")
    # timed but not trained (over budget): where they sit, along the bottom edge
    untrained = [x_of(c) for c in result["candidates"] if c["measured"] and not c.get("rungs")]
    if untrained:
        ax.scatter(untrained, [0.03] * len(untrained), marker="x", color="grey", s=25,
                   label="over budget (not trained)", transform=ax.get_xaxis_transform())
    front = sorted((x_of(by_id[i]), by_id[i]["val_accuracy"]) for i in result["pareto"][front_key])
    if front_key == "latency":
        ax.step(*zip(*front), where="post", color="#C44E52", lw=1.2, label="Pareto front")
    else:
        ax.scatter(*zip(*front), facecolors="none", edgecolors="#C44E52", s=120, label="Pareto (latency, size)")
    xs = [x_of(c) for c in trained] + untrained
    if budget_ms is not None and budget_ms < 3 * max(xs):
        ax.axvline(budget_ms, color="grey", ls="--", lw=1, label=f"budget {budget_ms:.3g} ms")
        xs.append(budget_ms)
    rec = by_id[result["recommended"]["id"]]
    ax.scatter(x_of(rec), rec["val_accuracy"], marker="*", s=260, color="gold", edgecolors="black", zorder=5,
               label=f"recommended: {rec['name']}")
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.15, max(xs) * 1.15)  # points on a blended transform do not autoscale
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    # minor ticks labelled at 2× and 5× each decade, so that a narrow range still has numbers
    ax.xaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and min(abs(v / 10 ** math.floor(math.log10(v)) - m)
                                               for m in (2, 5)) < 1e-6 else ""))
    ax.set_xlabel(label)
    ax.set_ylabel("val accuracy (at the epochs reached)")
    ax.grid(alpha=0.3)


def plot(path: Path, result: dict[str, Any]) -> Path:
    """Val accuracy against latency (left) and model size (right); the fronts and the pick marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    _panel(axes[0], result, lambda c: c["measured"]["latency_p90_ms"], label="latency p90 (ms)",
           front_key="latency", budget_ms=result["budget"]["latency_ms"])
    _panel(axes[1], result, lambda c: c["measured"]["model_bytes"] / 1024, label="model size (KiB)",
           front_key="latency_size", budget_ms=None)
    axes[0].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"select-student: {result['data']} on {result['target']} ({result['runner']} runner)")
    fig.tight_layout()
    with artifacts.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def _k(n: float) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else (f"{n / 1e3:.1f}k" if n >= 1e3 else str(int(n)))


def _acc(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def select_table(result: dict[str, Any]):
    """One row per candidate: cost, prediction, measurement, what happened, accuracy.
    ★ = recommended, • = on the accuracy–latency Pareto front."""
    from rich.table import Table

    from edgekd.tables import pct

    b = result["budget"]
    lim = f"{b['latency_ms']:.4g} ms ({b['latency_source']})" if b["latency_ms"] is not None else "none"
    t = Table(title=f"select-student on {result['data']} for {result['target']} — runner {result['runner']}, "
                    f"latency budget {lim}, {result['epochs']} epochs, {result['seeds']} seed(s)")
    t.add_column("candidate", no_wrap=True)
    for col in ("params", "MACs", "pred. ms", "p90 ms", "KiB", "status", "ep.", "val", "test", "alone"):
        t.add_column(col, justify="left" if col == "status" else "right", no_wrap=True)
    rec, front = result["recommended"]["id"], set(result["pareto"]["latency"])
    for c in result["candidates"]:
        m = c["measured"] or {}
        # timed: the leave-one-out prediction; skipped: the prediction that skipped it
        pred = c["loo_predicted_ms"] if c["loo_predicted_ms"] is not None else c["predicted_ms"]
        status = {"over budget": "over: " + ",".join(k for k, w in (("lat", "latency"), ("mem", "RSS"),
                                                                     ("size", "size")) if w in c["reason"]),
                  "skipped": "skipped"}.get(c["status"], c["status"])
        mark = "★ " if c["id"] == rec else ("• " if c["id"] in front else "  ")
        t.add_row(mark + c["name"], _k(c["cost"].get("params", 0)), _k(c["cost"].get("macs", 0)),
                  "" if pred is None else f"{pred:.4f}", f"{m['latency_p90_ms']:.4f}" if m else "",
                  f"{m['model_bytes'] / 1024:.0f}" if m else "", status, str(c.get("epochs", "")),
                  _acc(c.get("val_accuracy")), _acc(c.get("test_accuracy")),
                  _acc(c["control"]["test"]) if c.get("control") else "")
    p, s = result["predictor"], result["seconds"]
    rho = "—" if p["spearman_rho"] is None else f"{p['spearman_rho']:.3f}"
    rho_m = "—" if p["spearman_rho_macs"] is None else f"{p['spearman_rho_macs']:.3f}"
    r = result["recommended"]
    t.caption = "\n".join([
        f"recommended ★ {r['name']}: val {pct(r['val_accuracy'])}, test {pct(r['test_accuracy'])} "
        f"(alone {pct(r['student_alone_test'])}), p90 {r['latency_p90_ms']:.4f} ms, {r['params']:,} params",
        f"predictor: Spearman ρ {rho} (leave-one-out; MACs alone {rho_m}) over {p['measured']} timed; "
        f"timings saved {p['timings_saved']}",
        f"successive halving {' → '.join(str(x['epochs']) for x in result['halving']['rungs'])} epochs; "
        f"wall {s['total']:.0f} s ({s['total_excluding_teacher']:.0f} s without the teacher) vs "
        f"~{s['full_training_estimate']:.0f} s to train every trained candidate fully",
        f"{result['run']}/{RESULT_FILE}, {PLOT_FILE}"])
    return t


# ---------------------------------------------------------------- the run others continue from
def save_run(run_dir: Path, cfg, bundle, profile, teachers, teacher_acc: float, rec: Candidate,
             trainer: Trainer) -> dict[str, Any]:
    """student.pt, student_alone.pt and distill.json as `edgekd distill` writes them."""
    from edgekd.checkpoints import save_student
    from edgekd.train.distill import summarise

    kd_models = rec.rungs[-1]["_models"]
    rows = []
    for i, kd in enumerate(rec.rungs[-1]["per_seed"]):
        alone = rec.control["per_seed"][i]
        rows.append({"seed": kd["seed"], "student_alone": alone["test"], "student_alone_val": alone["val"],
                     "student_alone_seconds": alone["seconds"], "student": kd["test"], "student_val": kd["val"],
                     "student_seconds": kd["seconds"], "_student_model": kd_models[i],
                     "_student_alone_model": rec.control["_models"][i]})
    best = max(rows, key=lambda r: (r["student_val"], -r["seed"]))
    net_kwargs = {**rec.net_kwargs, "widths": list(rec.net_kwargs["widths"])}
    for key, model in (("student.pt", best["_student_model"]), ("student_alone.pt", best["_student_alone_model"])):
        # the candidate's student_net keywords: load_student rebuilds the custom architecture from them
        save_student(run_dir / key, cfg, bundle, model, seed=best["seed"], ops=rec.ops, net_kwargs=net_kwargs)
    summary = summarise(cfg, bundle, profile, teachers, teacher_acc, rows, best, best["_student_model"], rec.ops)
    summary["student"]["net_kwargs"] = net_kwargs
    summary["selected_by"] = RESULT_FILE
    return summary


# ---------------------------------------------------------------- the stage
def seed_like_distill(bundle, profile) -> None:
    """Leave torch's RNG as `edgekd distill` leaves it when it builds the teacher (right after its
    seed-0 probe of the default student), so a registry teacher trained here gets the very weights
    distill would give it, whatever the search drew and timed before."""
    import torch

    from edgekd.models import create_student

    torch.manual_seed(0)
    try:
        create_student(defaults.STUDENT, in_channels=bundle.input_shape[0], num_classes=bundle.num_classes,
                       target_ops=profile.ops_allow)
    except BadInput:  # the target cannot build the default student: seed 0 alone
        torch.manual_seed(0)


def _check_args(*, trials: int, epochs: int, short_epochs: int | None, seeds: int, budget_ms: float | None,
                min_seconds: float) -> int:
    if trials < 1:
        raise BadInput(f"--trials {trials}: must be >= 1")
    if epochs < 1:
        raise BadInput(f"--epochs {epochs}: must be >= 1")
    if seeds < 1:
        raise BadInput(f"--seeds {seeds}: must be >= 1")
    short = short_epochs if short_epochs is not None else max(1, round(epochs / SHORT_FRACTION))
    if not 1 <= short <= epochs:
        raise BadInput(f"--short-epochs {short}: must be in 1..{epochs} (--epochs)")
    if budget_ms is not None and not (budget_ms > 0 and math.isfinite(budget_ms)):
        raise BadInput(f"--budget-ms {budget_ms}: must be a positive number of milliseconds")
    if not min_seconds >= 0:
        raise BadInput(f"min_seconds {min_seconds}: must be >= 0")
    return short


def _no_candidate(cands: list[Candidate], budget: Budget, profile) -> CheckFailed:
    timed = [c for c in cands if c.measured]
    if not timed:
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in cands[:3])
        return CheckFailed(f"select-student {profile.name}: no candidate passed the audit ({reasons})")
    fastest = min(timed, key=lambda c: c.p90)
    smallest = min(timed, key=lambda c: c.measured["model_bytes"])
    lim = f"{budget.latency_ms:g} ms ({budget.latency_source})" if budget.latency_ms is not None else "none"
    skipped = sum(c.status == "skipped" for c in cands)
    return CheckFailed(
        f"select-student {profile.name}: no candidate meets the budget; smallest latency found "
        f"p90 {fastest.p90:.4g} ms ({fastest.name}), latency budget {lim}; smallest model "
        f"{smallest.measured['model_bytes'] / 2**20:.3g} MB (size budget {budget.size_mb} MB); "
        f"{len(timed)} timed, {skipped} skipped by the predictor; failing: "
        + "; ".join(f"{c.name}: {c.reason}" for c in sorted(timed, key=lambda c: c.p90)[:3]))


def select_student(*, target: str | Path, teacher: str | list[str] = defaults.TEACHER, data: str = defaults.DATA,
                   budget_ms: float | None = None, trials: int = TRIALS, seed: int = 0, runner: str = "local",
                   epochs: int = defaults.EPOCHS, short_epochs: int | None = None, seeds: int = 1,
                   methods: tuple[str, ...] | list[str] = defaults.METHODS, run: Path | None = None,
                   progress: bool = True, teacher_epochs: int = defaults.TEACHER_EPOCHS,
                   temperature: float = defaults.TEMPERATURE, min_seconds: float = TIMING_MIN_SECONDS,
                   include: tuple[str, ...] = (defaults.STUDENT,), data_dir: Path | None = None,
                   download: bool = False) -> dict[str, Any]:
    """Search the student for `target`: audit, predict, time, successive halving; write the run.

    Raises CheckFailed (before any training) when no candidate meets the budget.
    Returns the result written to `select_student.json`, plus `run` and `summary`
    (the distill.json of the recommended student).
    """
    from edgekd.bench.runners import get_runner
    from edgekd.data import load_data
    from edgekd.deploy.targets import load_target
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import labeled_subset
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import (
        check_teacher_paths,
        ensemble_accuracy,
        obtain_teachers,
        teacher_source,
    )

    t_start = time.perf_counter()
    short = _check_args(trials=trials, epochs=epochs, short_epochs=short_epochs, seeds=seeds,
                        budget_ms=budget_ms, min_seconds=min_seconds)
    profile = load_target(target)
    get_runner(runner)  # a bad runner spec is bad input before anything is paid for
    cfg = DistillConfig(data=data, data_dir=None if data_dir is None else Path(data_dir), download=download,
                        teacher=teacher if isinstance(teacher, str) else tuple(teacher),
                        target=str(target), methods=tuple(methods), temperature=temperature, epochs=epochs,
                        teacher_epochs=teacher_epochs, seeds=seeds, run=run, progress=progress)
    cfg.validate()
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature)
    check_teacher_paths(cfg)
    bundle = load_data(data, data_dir=data_dir, download=download)

    # 1–3. candidates drawn, audited, predicted, timed; budget misses dropped before any training
    t0 = time.perf_counter()
    stream = candidate_stream(profile.ops_allow, seed=seed, include=include)
    cands, budget, predictor = search(stream, bundle, profile, trials=trials, runner=runner, budget_ms=budget_ms,
                                      min_seconds=min_seconds, progress=progress)
    t_search = time.perf_counter() - t0
    notes = []
    if predictor["measured"] < trials:
        notes.append(f"{predictor['measured']} of {trials} trials timed: " + (
            f"the predictor rejected the rest of {len(cands)} draws (at most {MAX_DRAWS} × trials)"
            if len(cands) >= MAX_DRAWS * trials else f"the search space has only {len(cands)} distinct candidates"))
    if budget.emulated:
        notes.append("timings are under emulation: the profile's latency and memory budgets were not applied")
    survivors = [c for c in cands if c.status == "timed"]
    if not survivors:
        raise _no_candidate(cands, budget, profile)

    # 4. one teacher for every candidate, then successive halving
    run_dir = artifacts.create_run(run)
    t0 = time.perf_counter()
    seed_like_distill(bundle, profile)
    teachers = obtain_teachers(cfg, bundle, run_dir)
    models = [m for m, _ in teachers]
    teacher_acc = ensemble_accuracy(cfg, models, bundle.test)
    mask, labeled_only = labeled_subset(cfg, bundle)
    source = teacher_source(cfg, bundle, models, objective) if objective.needs_teacher else None
    t_teacher = time.perf_counter() - t0
    trainer = Trainer(cfg, bundle, profile, source, mask, labeled_only)

    t0 = time.perf_counter()
    finalists, halving = successive_halving(trainer, survivors, epochs=epochs, short=short, progress=progress)
    t_training = time.perf_counter() - t0
    t0 = time.perf_counter()
    rec = min(finalists, key=Candidate.rank_key)
    # Teacher capacity: what distillation adds at the chosen size (the control is paid once, for it).
    runs = [trainer.alone(rec, epochs=epochs, seed=s) for s in range(seeds)]
    rec.control = {"epochs": epochs, "val": float(np.mean([r["val"] for _, r in runs])),
                   "test": float(np.mean([r["test"] for _, r in runs])),
                   "seconds": float(sum(r["seconds"] for _, r in runs)),
                   "per_seed": [r for _, r in runs], "_models": [m for m, _ in runs]}
    t_control = time.perf_counter() - t0

    # 5. the run others continue from, and the evidence
    cfg.student = rec.name
    artifacts.write_json(run_dir / "config.json", {
        **asdict(cfg), "data_info": bundle.describe(), "student_net": rec.net_kwargs,
        "select_student": {"target": profile.name, "budget_ms": budget_ms, "trials": trials, "seed": seed,
                           "runner": runner, "short_epochs": short, "include": list(include)}})
    summary = save_run(run_dir, cfg, bundle, profile, teachers, teacher_acc, rec, trainer)
    trained = [c for c in cands if c.rungs]
    full_estimate = sum(c.rungs[0]["seconds_per_epoch"] * epochs * seeds for c in trained)
    total = time.perf_counter() - t_start
    result = {
        "target": profile.name, "data": bundle.name, "runner": runner, "seed": seed, "trials": trials,
        "epochs": epochs, "short_epochs": short, "seeds": seeds, "methods": list(cfg.methods),
        "teacher": {"spec": list(cfg.teacher_list), "accuracy": teacher_acc},
        "budget": budget.to_dict(), "notes": notes,
        "search_space": {k: [list(v) if isinstance(v, tuple) else v for v in vals]
                         for k, vals in search_space(profile.ops_allow).items()},
        "candidates": [c.to_dict() for c in cands],
        "predictor": predictor,
        "halving": {"eta": ETA, "rungs": halving, "finalists": [c.id for c in finalists]},
        "pareto": fronts(trained),
        "recommended": {"id": rec.id, "name": rec.name, "net_kwargs": rec.net_kwargs,
                        "params": rec.cost["params"], "macs": rec.cost["macs"],
                        "latency_p90_ms": rec.p90, "model_bytes": rec.measured["model_bytes"],
                        "val_accuracy": rec.val, "test_accuracy": rec.rungs[-1]["test"],
                        "student_alone_test": rec.control["test"], "student_alone_val": rec.control["val"],
                        "kd_gain_test": rec.rungs[-1]["test"] - rec.control["test"]},
        "teacher_capacity": [{"id": c.id, "name": c.name, "params": c.cost["params"], "macs": c.cost["macs"],
                              "student_test": c.rungs[-1]["test"], "student_alone_test": c.control["test"],
                              "kd_gain_test": c.rungs[-1]["test"] - c.control["test"]}
                             for c in sorted(finalists, key=lambda c: c.cost["params"]) if c.control],
        "seconds": {"audit_predict_time": t_search, "teacher": t_teacher, "training": t_training,
                    "control": t_control, "total": total, "total_excluding_teacher": total - t_teacher,
                    "full_training_estimate": full_estimate,
                    "note": "full_training_estimate: per-epoch time measured at the first rung × epochs × "
                            "seeds, over the candidates that were trained (those within budget)"},
        "run": str(run_dir),
    }
    summary["wall_seconds"] = total
    artifacts.write_json(run_dir / "distill.json", summary)
    artifacts.write_json(run_dir / RESULT_FILE, result)
    plot(run_dir / PLOT_FILE, result)
    artifacts.set_latest(run_dir)
    return {**result, "summary": summary}
