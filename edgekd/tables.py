"""Tables (rich) and plots (matplotlib) for people; the same numbers go to JSON for tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output gets a fixed, roomy width instead of rich's 80-column fallback.
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}%"


def ms(x: dict | float | None, key: str = "p50") -> str:
    if x is None:
        return "—"
    v = x[key] if isinstance(x, dict) else x
    return f"{v:.4f} ms" if v < 1 else f"{v:.2f} ms"


def mean_std(d: dict) -> str:
    return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}%"


def distill_table(s: dict[str, Any]) -> Table:
    t = Table(title=f"distill on {s['data']['name']} for {s['target']} — {s['objective']}, "
                    f"{s['epochs']} epochs, {s['seeds']} seeds, labeled fraction {s['labeled_fraction']:g}")
    t.add_column("model")
    t.add_column("params", justify="right")
    t.add_column("test accuracy (mean ± std)", justify="right")
    acc = s["accuracy"]
    mflops = s["teacher"].get("mflops")
    cost = f", {mflops:,.0f} MFLOPs" if mflops is not None else ""
    t.add_row(f"teacher ({s['teacher']['arch']}{cost})", f"{s['teacher']['params']:,}", pct(acc["teacher"]))
    t.add_row(f"student alone ({s['student']['arch']})", f"{s['student']['params']:,}", mean_std(acc["student_alone"]))
    t.add_row(f"student distilled ({s['student']['arch']})", f"{s['student']['params']:,}", mean_std(acc["student"]))
    t.caption = f"gap closed by distillation: {pct(s['gap_closed'])}   run: {s.get('run', '')}"
    ips = s.get("images_per_s", {})
    if "student" in ips:
        t.caption += (f"\ntraining images/s: alone {ips.get('student_alone', 0):.0f}, distilled {ips['student']:.0f} "
                      f"(teacher {ips.get('teacher', '?')})")
    views = (s["teacher"].get("view"), s["student"].get("view"))
    if all(views) and views[0] != views[1]:
        t.caption += f"\nteacher sees {views[0]['input_size'][0]} px, the student {views[1]['input_size'][0]} px"
    v = s.get("verdict")
    if v and v["distillation"] == "lost":
        t.caption += (f"\ndistillation LOST to the student alone: {100 * v['delta']:+.2f} points (spread "
                      f"{100 * v['spread']:.2f}); recommended: {v['recommended_student']} (by {v['recommended_by']})")
    elif v:
        t.caption += f"\ndistillation {v['distillation']} ({100 * v['delta']:+.2f} points); recommended: {v['recommended_student']}"
    if v and v.get("try"):
        t.caption += f"\nto measure DKD, DIST, TTM and logit standardisation against it on this data:\n  {v['try']}"
    return t


def teachers_table(r: dict[str, Any]) -> Table:
    """The teacher registry with each teacher's cost at the data's input size; ★ = distill's default."""
    t = Table(title=f"teachers for {r['data']} (input {'x'.join(map(str, r['input_shape']))})")
    for col, j in (("teacher", "left"), ("params", "right"), ("MFLOPs / image (forward)", "right")):
        t.add_column(col, justify=j)
    for row in r["teachers"]:
        star = " ★" if row["teacher"] == r["default"] else ""
        t.add_row(row["teacher"] + star, f"{row['params']:,}", f"{row['mflops']:,.1f}")
    t.caption = "★ = distill's default for this data; training costs about 3x the forward MFLOPs per image"
    return t


def compare_table(r: dict[str, Any]) -> Table:
    t = Table(title=f"seminar table: {r['student']} on {r['data']} for {r['target']}, {r['epochs']} epochs, "
                    f"{r['seeds']} seeds, labeled fraction {r['labeled_fraction']:g}")
    for col, j in (("method", "left"), ("test accuracy", "right"), ("gap closed", "right"),
                   ("beats alone", "center"), ("params", "right"), ("wall time", "right")):
        t.add_column(col, justify=j)
    for row in r["rows"]:
        beats = row.get("beats_alone_beyond_std")
        t.add_row(row["method"], mean_std(row["accuracy"]) if row["accuracy"]["n"] > 1 else pct(row["accuracy"]["mean"]),
                  pct(row.get("gap_closed")) if "gap_closed" in row else "",
                  "" if beats is None else ("yes" if beats else "no"), f"{row['params']:,}", f"{row['seconds']:.1f} s")
    t.caption = ("'beats alone' = mean − alone mean > √(sd² + sd_alone²); gap closed = (student − alone) / "
                 f"(teacher − alone).  {r['run']}/compare.json, compare.png")
    cache = r.get("teacher_cache")
    if cache and cache.get("built"):
        t.caption += f"\nteacher logits cached once for every logit-only row ({cache['seconds']:.1f} s)"
    return t


def teacher_selection_table(r: dict[str, Any]) -> Table:
    direction = "higher" if r.get("higher_is_better") else "lower"
    t = Table(title=f"teacher selection for {r.get('student', 'the student')} (GRACE: {direction} ranks first)")
    for col, j in (("rank", "right"), ("teacher", "left"), ("GRACE", "right"), ("val accuracy", "right"),
                   ("agreement at init", "right"), ("params", "right")):
        t.add_column(col, justify=j)
    best_val = max(row["val_accuracy"] for row in r["teachers"])
    for row in r["teachers"]:
        g = row["grace"]
        # GRACE can rank a near-useless teacher first (its soft labels are nearly uniform): flag it.
        weak = " [yellow](weak: val far below the best)[/yellow]" if row["val_accuracy"] < best_val - 0.10 else ""
        t.add_row(str(row["rank"]), row["teacher"] + weak, f"{g['score']:.4g} ± {g['std']:.2g}", pct(row["val_accuracy"]),
                  pct(row["agreement_at_init"]), f"{row['params']:,}")
    t.caption = ("GRACE: trace(Σ_train⁻¹ Σ_heldout) of projected per-example KD gradients at the student's init "
                 "(arXiv 2511.02833). Measured on digits, the teacher's own accuracy predicted the student better "
                 "with few labels: read both (benchmarks/README.md).")
    return t


def export_table(m: dict[str, Any]) -> Table:
    t = Table(title=f"export {m['target']} — {'DEPLOYABLE' if m['deployable'] else 'NOT deployable'}")
    t.add_column("check")
    t.add_column("result")
    ops = m["ops"]
    t.add_row("model", f"{m['model']['path']}  {m['model']['bytes']:,} B  opset {m['model']['opset']}  "
                       f"{m['model']['params']:,} params")
    t.add_row("ops used", ", ".join(ops["used"]))
    t.add_row("audit", "passed" if not ops["unsupported"] else
              "; ".join(f"{u['op']}: {', '.join(u['nodes'])}" for u in ops["unsupported"]))
    p = m["parity"]
    t.add_row("parity (fp32)", f"n={p['n']}  max abs {p['max_abs_diff']:.2e}  max rel {p['max_rel_diff']:.2e}  "
                               f"top-1 {pct(p['top1_agreement'])}  {'passed' if p['passed'] else 'FAILED'}")
    a = m["accuracy"]
    t.add_row("accuracy", f"teacher {pct(a['teacher'])}  student alone {pct(a['student_alone'])}  "
                          f"student {pct(a['student'])}  student (ONNX) {pct(a['student_onnx'])}")
    for name, v in m.get("variants", {}).items():
        t.add_row(name, f"{v['path']}  {v['bytes']:,} B  accuracy {pct(v['accuracy'])}  top-1 agreement "
                        f"{pct(v['parity']['top1_agreement'])}  {'passed' if v['parity']['passed'] else 'FAILED'}")
    for key, v in m.get("mobile", {}).items():
        t.add_row(key, f"{v['path']}  {v['bytes']:,} B")
    for f in m.get("checks", {}).get("failures", []):
        t.add_row("[red]failed[/red]", f)
    return t


def bench_table(r: dict[str, Any]) -> Table:
    """Models as columns, measurements as rows: reads well in 80 columns."""
    f = r["fp32"]
    ex = f.get("execution") or {}
    ran = f"{f['provider']}" + (f" on {ex['device']}" if ex.get("device") else "") + (
        f" ({ex['vendor']}, EP {ex['ep_version']})" if ex.get("vendor") and ex.get("ep_version") else "")
    t = Table(title=f"bench {r['target']} on {r['runner']}: {ran}, {f.get('precision', 'fp32')}, "
                    f"{f['threads']} thread(s)"
                    + (f"\n[bold red]FELL BACK from {f['provider_requested']}[/bold red]" if f.get("fallback") else "")
                    + ("\n[bold red]EMULATED under qemu: not target timings[/bold red]" if f.get("emulated") else ""))
    cols: list[tuple[str, dict]] = [("student fp32", f)]
    if r.get("int8"):
        cols.append(("student int8", r["int8"]))
    c = r.get("comparison")
    if c:
        cols += [("teacher ONNX", {"latency_ms": c["teacher_onnx_ms"]}), ("student eager", {"latency_ms": c["student_eager_ms"]})]
    t.add_column("batch 1")
    for name, _ in cols:
        t.add_column(name, justify="right")
    for key in ("p50", "p90", "p99", "mean"):
        t.add_row(f"latency {key}", *[ms(x["latency_ms"].get(key)) if x["latency_ms"].get(key) is not None else "—" for _, x in cols])
    t.add_row("init", *[ms(x.get("init_ms")) for _, x in cols])
    t.add_row("first run", *[ms(x.get("first_run_ms")) for _, x in cols])
    t.add_row("peak RSS", *[f"{x['peak_rss_mb']:.1f} MB" if "peak_rss_mb" in x else "—" for _, x in cols])
    t.add_row("golden", *["—" if not x.get("golden") else ("ok" if x["golden"]["passed"] else "FAILED") for _, x in cols])
    lines = ["throughput (samples/s): " + ", ".join(f"batch {b}: {v:,.0f}" for b, v in (f.get("throughput") or {}).items())]
    if c:
        lines.append(f"student is {c['teacher_over_student']:.1f}× faster than the teacher (ONNX, same threads), "
                     f"losing {c['accuracy_points_lost']:.2f} accuracy points; ONNX ÷ eager = {c['onnx_over_eager']:.2f}")
    for chk in r["budget"]["checks"]:
        state = f"skipped ({chk['skipped']})" if chk.get("skipped") else ("ok" if chk["passed"] else "FAILED")
        lines.append(f"budget {chk['name']}: {chk['value']:.4g} (limit {chk['limit']:g}) {state}")
    lines.append(f"recommended: {r['recommended']}")
    t.caption = "\n".join(lines)
    return t


def side_by_side_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    """One row per target and variant: what ran, how fast, how big, and whether it matched."""
    t = Table(title=title)
    for col in ("target", "variant", "provider", "precision", "p50", "p90", "p99", "throughput", "peak RSS", "parity"):
        t.add_column(col, justify="right" if col in ("p50", "p90", "p99", "throughput", "peak RSS") else "left")
    for r in rows:
        provider = r["provider"].replace("ExecutionProvider", "") + (f" ({r['device']})" if r.get("device") else "")
        if r.get("fallback"):
            provider += " [bold red]FALLBACK[/bold red]"
        parity = "—" if r["parity_passed"] is None else (
            f"{'ok' if r['parity_passed'] else 'FAILED'} (top-1 {r['top1_agreement']:.3f}, max {r['max_abs_diff']:.2g})")
        tp = "—" if r["throughput"] is None else f"{r['throughput']:,.0f}/s @{r['throughput_batch']}"
        t.add_row(r["target"], r["variant"], provider, r["precision"],
                  *[ms(r["latency_ms"][k]) for k in ("p50", "p90", "p99")], tp, f"{r['peak_rss_mb']:.1f} MB", parity)
    return t


def profile_table(title: str, profile: dict[str, Any]) -> Table:
    """ONNX Runtime's top operators by total kernel time, per provider."""
    t = Table(title=title)
    for col in ("provider", "op", "total", "share", "calls", "mean"):
        t.add_column(col, justify="left" if col in ("provider", "op") else "right")
    for provider, p in profile.items():
        for row in p["ops"]:
            t.add_row(provider.replace("ExecutionProvider", ""), row["op"], ms(row["total_ms"]), pct(row["share"]),
                      str(row["calls"]), f"{row['mean_us']:.1f} µs")
    return t


def bench_output(result: dict[str, Any]) -> Any:
    """What `edgekd bench` prints for each of bench_any's modes, profiles included."""
    from rich.console import Group

    if result["mode"] == "run":
        parts: list[Any] = [bench_table(result)]
        results = [result]
    else:
        title = (f"bench {result['model']}" if result["mode"] == "model"
                 else "bench " + " vs ".join(result["targets"]))
        table = side_by_side_table(result["rows"], title=title)
        if result.get("recommended"):
            table.caption = f"recommended across targets: {result['recommended']['target']} {result['recommended']['variant']}"
        parts, results = [table], result["results"]
    for r in results:
        for variant in ("fp32", "int8"):
            if (r.get(variant) or {}).get("profile"):
                parts.append(profile_table(f"top operators: {r['target']} {variant}", r[variant]["profile"]))
    return Group(*parts)


def targets_table(profiles: list[Any]) -> Table:
    t = Table(title="targets")
    for col in ("name", "arch", "opset", "providers", "ops", "precisions", "description"):
        t.add_column(col)
    for p in profiles:
        t.add_row(p.name, p.arch, str(p.opset), " → ".join(x.name.replace("ExecutionProvider", "") for x in p.providers),
                  str(len(p.ops_allow)), ", ".join(p.precisions), p.description)
    return t


def audit_table(r: dict[str, Any]) -> Table:
    """`edgekd audit`: from the audit's JSON (`AuditReport.to_dict()`)."""
    t = Table(title=f"audit against {r['target']}: {r['n_supported_nodes']}/{r['n_nodes']} nodes supported "
                    f"({pct(r['coverage'])}) — {'passed' if r['passed'] else 'FAILED'}")
    t.add_column("unsupported op")
    t.add_column("reason")
    t.add_column("nodes")
    for u in r["unsupported"]:
        t.add_row(u["op"], u["reason"], ", ".join(u["nodes"]))
    t.caption = "ops used: " + ", ".join(r["used"])
    real = r.get("partition")
    if real:
        t.caption += ("\nONNX Runtime's partition: " + real["summary"] if real.get("ran")
                      else f"\nONNX Runtime's partition: not run here ({real['reason']})")
    return t


def bar_plot(path: Path, labels: list[str], means: list[float], stds: list[float], *, title: str,
             ylabel: str = "test accuracy", hline: float | None = None) -> Path:
    """A bar chart with error bars, written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgekd.artifacts import atomic_path

    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(labels)), 4))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=4, color="#4C72B0")
    if hline is not None:
        ax.axhline(hline, color="#C44E52", ls="--", label="teacher")
        ax.legend()
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    lo = min(m - s for m, s in zip(means, stds)) if means else 0
    ax.set_ylim(max(0, lo - 0.05), 1.0)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path
