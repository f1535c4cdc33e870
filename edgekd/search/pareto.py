"""The evidence of a student search: Pareto fronts, the plot and the table."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekd import artifacts

if TYPE_CHECKING:
    from edgekd.search.space import Candidate

RESULT_FILE = "select_student.json"
PLOT_FILE = "select_student.png"


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
