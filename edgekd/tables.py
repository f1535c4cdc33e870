"""Tables (rich) and plots (matplotlib) for people; the same numbers go to JSON for tools."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from edgekd.run.bench import BenchFile, Measure
from edgekd.run.distill import DistillSummary
from edgekd.run.manifest import Manifest

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


def _typed(obj: Any, module: str) -> Any:
    """The typed run-folder object for `obj`: itself, or its JSON (what the API's `to_json()` gives) checked
    through `edgekd.run.<module>.from_json`."""
    import importlib

    from edgekd.run.schema import Record

    return obj if isinstance(obj, Record) else importlib.import_module(f"edgekd.run.{module}").from_json(obj)


def _g(x: float | None) -> str:
    return "?" if x is None else f"{x:g}"


def _distill_caption(s: DistillSummary) -> str:
    """The lines under the distill table: gap closed, speed, views, agreement and the verdict."""
    caption = f"gap closed by distillation: {pct(s.gap_closed)}   run: {s.extra.get('run', '')}"
    ips = s.images_per_s or {}
    if "student" in ips:
        alone = f"alone {ips['student_alone']:.0f}, " if "student_alone" in ips else ""
        caption += f"\ntraining images/s: {alone}distilled {ips['student']:.0f} (teacher {ips.get('teacher', '?')})"
    views = ((s.teacher or {}).get("view"), s.student.view)
    if all(views):  # never silent about what each model saw: H×W and how the images got there
        how = f" ({views[1]['resize']})" if views[1].get("resize") not in (None, "none") else ""
        caption += (f"\nteacher sees {'x'.join(map(str, views[0]['input_size']))} px, "
                    f"the student {'x'.join(map(str, views[1]['input_size']))} px{how}")
    ag = s.agreement
    if ag:
        caption += (f"\ntop-1 agreement with the teacher on {ag['n']} held-out unlabeled images: "
                    + (f"alone {mean_std(ag['student_alone'])}, " if "student_alone" in ag else "")
                    + f"distilled {mean_std(ag['student'])}")
    return caption + _verdict_lines(s.verdict)


def _verdict_lines(v: dict[str, Any] | None) -> str:
    if not v:
        return ""
    if v["distillation"] == "label-free":
        out = (f"\nlabel-free: {v['note']}; the student is {100 * v['delta']:+.2f} points from the teacher, "
               f"top-1 agreement {mean_std(v['agreement'])}")
    elif v["distillation"] == "lost":
        out = (f"\ndistillation LOST to the student alone: {100 * v['delta']:+.2f} points (spread "
               f"{100 * v['spread']:.2f}); recommended: {v['recommended_student']} (by {v['recommended_by']})")
    else:
        out = f"\ndistillation {v['distillation']} ({100 * v['delta']:+.2f} points); recommended: " \
              f"{v['recommended_student']}"
    if v.get("try"):
        out += f"\nto measure DKD, DIST, TTM and logit standardisation against it on this data:\n  {v['try']}"
    return out


def distill_table(summary: DistillSummary | dict[str, Any]) -> Table:
    """`edgekd distill`'s table, from distill.json (typed, or its JSON as the API returns it)."""
    s: DistillSummary = _typed(summary, "distill")
    t = Table(title=f"distill on {s.data.name} for {s.target} — {s.objective}, {s.epochs} epochs, {s.seeds} seeds, "
                    f"labeled fraction {_g(s.labeled_fraction)}")
    t.add_column("model")
    t.add_column("params", justify="right")
    t.add_column("test accuracy (mean ± std)", justify="right")
    acc, teacher = s.accuracy, s.teacher or {}
    mflops = teacher.get("mflops")
    cost = f", {mflops:,.3g} MFLOPs" if mflops is not None else ""
    t.add_row(f"teacher ({teacher.get('arch', '?')}{cost})", f"{teacher.get('params', 0):,}", pct(acc.teacher))
    params = f"{s.student.params:,}" if s.student.params is not None else "—"
    if acc.student_alone is not None:
        t.add_row(f"student alone ({s.student.arch})", params, mean_std(acc.student_alone))
    t.add_row(f"student distilled ({s.student.arch})", params, mean_std(acc.student))
    if acc.agreement:
        t.add_row("  top-1 agreement with the teacher", "", mean_std(acc.agreement))
    t.caption = _distill_caption(s)
    return t


def with_warnings(table: Table, warnings: list[str]):
    """The table with each warning in red above it (what a run must not hide)."""
    from rich.console import Group
    from rich.text import Text

    if not warnings:
        return table
    return Group(*[Text(f"WARNING: {w}", style="bold red") for w in warnings], table)


def check_teacher_output(r: dict[str, Any]):
    """`edgekd check-teacher`: one column per teacher, its warnings above the table."""
    t = Table(title=f"check-teacher on {r['data']['name']} ({r['data']['num_classes']} classes)")
    t.add_column("")
    for c in r["teachers"]:
        t.add_column(f"{c['teacher']} ({c['kind']})")

    def shape(d: dict[str, Any]) -> str:
        return f"{d.get('name', '') + ' ' if d.get('name') else ''}{'×'.join(map(str, d['shape']))} {d['dtype']}"

    rows = {"takes": lambda c: shape(c["takes"]),
            "returns": lambda c: f"{shape(c['returns'])}: {c['returns']['kind']} ({c['returns']['how']})",
            "view": lambda c: f"{'×'.join(map(str, c['view']['input_size']))} px, mean "
                              f"{','.join(f'{v:.3g}' for v in c['view']['mean'])}, std "
                              f"{','.join(f'{v:.3g}' for v in c['view']['std'])}",
            "params": lambda c: f"{c['params']:,}",
            "forward MFLOPs": lambda c: "—" if c.get("mflops") is None else f"{c['mflops']:,.1f}",
            "accuracy": lambda c: f"{pct(c['accuracy'])} on {c['scored_on']['n']} {c['scored_on']['split']} images "
                                  f"(chance {pct(c['chance'])})",
            "class order": lambda c: ",".join(map(str, c["class_order"])) if c["class_order"] else "as the data's",
            "host p50": lambda c: ms(c.get("host_p50_ms"))}
    for name, fn in rows.items():
        t.add_row(name, *[fn(c) for c in r["teachers"]])
    return with_warnings(t, r["warnings"])


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
        t.add_row(row["method"],
                  mean_std(row["accuracy"]) if row["accuracy"]["n"] > 1 else pct(row["accuracy"]["mean"]),
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
        t.add_row(str(row["rank"]), row["teacher"] + weak, f"{g['score']:.4g} ± {g['std']:.2g}",
                  pct(row["val_accuracy"]), pct(row["agreement_at_init"]), f"{row['params']:,}")
    t.caption = ("GRACE: trace(Σ_train⁻¹ Σ_heldout) of projected per-example KD gradients at the student's init "
                 "(arXiv 2511.02833). Measured on digits, the teacher's own accuracy predicted the student better "
                 "with few labels: read both (benchmarks/README.md).")
    return t


def export_table(manifest: Manifest | dict[str, Any]) -> Table:
    """`edgekd export`'s table, from the target's manifest (typed, or its JSON as the API returns it)."""
    m: Manifest = _typed(manifest, "manifest")
    t = Table(title=f"export {m.target} — {'DEPLOYABLE' if m.deployable else 'NOT deployable'}")
    t.add_column("check")
    t.add_column("result")
    t.add_row("model", f"{m.model.path}  {m.model.bytes:,} B  opset {m.model.opset}  {m.model.params:,} params")
    t.add_row("ops used", ", ".join(m.ops.used))
    t.add_row("audit", "passed" if not m.ops.unsupported else
              "; ".join(f"{u['op']}: {', '.join(u['nodes'])}" for u in m.ops.unsupported))
    p = m.parity
    t.add_row("parity (fp32)", f"n={p.n}  max abs {p.max_abs_diff:.2e}  max rel {_e(p.max_rel_diff)}  "
                               f"top-1 {pct(p.top1_agreement)}  {'passed' if p.passed else 'FAILED'}")
    _provider_rows(t, m)
    a = m.accuracy
    t.add_row("accuracy", f"teacher {pct(a.teacher)}  student alone {pct(a.student_alone)}  "
                          f"student {pct(a.student)}  student (ONNX) {pct(a.student_onnx)}")
    for name, v in (m.variants or {}).items():
        t.add_row(name, f"{v.path}  {v.bytes:,} B  accuracy {pct(v.accuracy)}  top-1 agreement "
                        f"{pct(v.parity['top1_agreement'])}  {'passed' if v.parity['passed'] else 'FAILED'}")
    for key, v in (m.mobile or {}).items():
        t.add_row(key, f"{v['path']}  {v['bytes']:,} B")
    for f in (m.checks.failures if m.checks is not None else []):
        t.add_row("[red]failed[/red]", f)
    return t


def _e(x: float | None) -> str:
    return "—" if x is None else f"{x:.2e}"


def _provider_rows(t: Table, m: Manifest) -> None:
    """export: which onnxruntime checked the model, parity through the target's provider, the real partition."""
    from rich.markup import escape

    rt = m.runtime or {}
    if rt:
        t.add_row("runtime", f"{rt['package']} (onnxruntime {rt.get('onnxruntime_version')}, {rt.get('path')})"
                  if rt.get("mechanism") == "package" else f"host onnxruntime {rt.get('onnxruntime_version')}")
    pp = m.parity_provider or {}
    if pp.get("ran"):
        t.add_row(f"parity ({pp['provider'].replace('ExecutionProvider', '')}, {pp.get('precision')})",
                  f"n={pp['n']}  max abs {pp['max_abs_diff']:.2e}  top-1 {pct(pp['top1_agreement'])}  "
                  f"{'passed' if pp['passed'] else 'FAILED'}")
    elif pp:
        t.add_row("parity (target's provider)", escape(f"not run here: {pp.get('reason')}"))
    part = m.ops.partition or {}
    if part:
        t.add_row("partition", escape(part["summary"] if part.get("ran") else f"not run here: {part.get('reason')}"))


def _ran(f: Measure) -> str:
    """Which provider ran, on what device, in which runtime package."""
    ex = f.execution or {}
    ran = f"{f.provider}" + (f" on {ex['device']}" if ex.get("device") else "") + (
        f" ({ex['vendor']}, EP {ex['ep_version']})" if ex.get("vendor") and ex.get("ep_version") else "")
    if (ex.get("runtime") or {}).get("package"):
        ran += f" in {ex['runtime']['package']}"
    return ran


def _bench_columns(r: BenchFile) -> list[tuple[str, dict[str, Any]]]:
    """(name, {latency_ms, init_ms, first_run_ms, peak_rss_mb, golden}) per measured model."""
    def col(x: Measure) -> dict[str, Any]:
        return {"latency_ms": x.latency_ms, "init_ms": x.init_ms, "first_run_ms": x.first_run_ms,
                "peak_rss_mb": x.peak_rss_mb, "golden": x.golden}

    cols = [("student fp32", col(r.fp32))] + ([("student int8", col(r.int8))] if r.int8 is not None else [])
    c = r.comparison
    if c:
        cols += [("teacher ONNX", {"latency_ms": c["teacher_onnx_ms"]}),
                 ("student eager", {"latency_ms": c["student_eager_ms"]})]
    return cols


def bench_table(bench: BenchFile | dict[str, Any]) -> Table:
    """Models as columns, measurements as rows: reads well in 80 columns (bench.json, typed or its JSON)."""
    r: BenchFile = _typed(bench, "bench")
    f = r.fp32
    t = Table(title=f"bench {r.target} on {r.runner}: {_ran(f)}, {f.precision or 'fp32'}, {f.threads} thread(s)"
                    + (f"\n[bold red]FELL BACK from {f.provider_requested}[/bold red]" if f.fallback else "")
                    + ("\n[bold red]EMULATED under qemu: not target timings[/bold red]" if f.emulated else ""))
    cols = _bench_columns(r)
    t.add_column("batch 1")
    for name, _ in cols:
        t.add_column(name, justify="right")
    for key in ("p50", "p90", "p99", "mean"):
        t.add_row(f"latency {key}",
                  *[ms(x["latency_ms"].get(key)) if x["latency_ms"].get(key) is not None else "—" for _, x in cols])
    t.add_row("init", *[ms(x.get("init_ms")) for _, x in cols])
    t.add_row("first run", *[ms(x.get("first_run_ms")) for _, x in cols])
    t.add_row("peak RSS", *[f"{x['peak_rss_mb']:.1f} MB" if x.get("peak_rss_mb") is not None else "—"
                            for _, x in cols])
    t.add_row("golden", *["—" if not x.get("golden") else ("ok" if x["golden"]["passed"] else "FAILED")
                          for _, x in cols])
    lines = ["throughput (samples/s): " + ", ".join(f"batch {b}: {v:,.0f}" for b, v in (f.throughput or {}).items())]
    c = r.comparison
    if c:
        lines.append(f"student is {c['teacher_over_student']:.1f}× faster than the teacher (ONNX, same threads), "
                     f"losing {c['accuracy_points_lost']:.2f} accuracy points; ONNX ÷ eager = "
                     f"{c['onnx_over_eager']:.2f}")
    for chk in r.budget.checks:
        state = f"skipped ({chk['skipped']})" if chk.get("skipped") else ("ok" if chk["passed"] else "FAILED")
        lines.append(f"budget {chk['name']}: {chk['value']:.4g} (limit {chk['limit']:g}) {state}")
    lines.append(f"recommended: {r.recommended}")
    t.caption = "\n".join(lines)
    return t


def side_by_side_table(rows: list[dict[str, Any]], *, title: str) -> Table:
    """One row per target and variant: what ran, how fast, how big, and whether it matched."""
    t = Table(title=title)
    for col in ("target", "variant", "provider", "runtime", "precision", "p50", "p90", "p99", "throughput", "peak RSS",
                "parity"):
        t.add_column(col, justify="right" if col in ("p50", "p90", "p99", "throughput", "peak RSS") else "left")
    for r in rows:
        provider = r["provider"].replace("ExecutionProvider", "") + (f" ({r['device']})" if r.get("device") else "")
        if r.get("fallback"):
            provider += " [bold red]FALLBACK[/bold red]"
        parity = "—" if r["parity_passed"] is None else (
            f"{'ok' if r['parity_passed'] else 'FAILED'} "
            f"(top-1 {r['top1_agreement']:.3f}, max {r['max_abs_diff']:.2g})")
        tp = "—" if r["throughput"] is None else f"{r['throughput']:,.0f}/s @{r['throughput_batch']}"
        t.add_row(r["target"], r["variant"], provider, r.get("runtime", "—"), r["precision"],
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
        results = [result]  # bench.json's JSON; a model's results are no run file, so these stay JSON
    else:
        title = (f"bench {result['model']}" if result["mode"] == "model"
                 else "bench " + " vs ".join(result["targets"]))
        table = side_by_side_table(result["rows"], title=title)
        if result.get("recommended"):
            table.caption = (f"recommended across targets: {result['recommended']['target']} "
                             f"{result['recommended']['variant']}")
        parts, results = [table], result["results"]
    for r in results:
        for variant in ("fp32", "int8"):
            if (r.get(variant) or {}).get("profile"):
                parts.append(profile_table(f"top operators: {r['target']} {variant}", r[variant]["profile"]))
    return Group(*parts)


def targets_table(profiles: list[Any]) -> Table:
    from rich.markup import escape

    from edgekd.deploy.runtimes import status

    t = Table(title="targets")
    for col in ("name", "arch", "opset", "providers", "runtime", "ops", "precisions", "description"):
        t.add_column(col)
    for p in profiles:
        t.add_row(p.name, p.arch, str(p.opset),
                  " → ".join(x.name.replace("ExecutionProvider", "") for x in p.providers),
                  _runtime_cell(status(p)), str(len(p.ops_allow)), ", ".join(p.precisions), escape(p.description))
    return t


def _runtime_cell(st: dict[str, Any]) -> str:
    """`edgekd targets`' runtime column: the host's onnxruntime, or the package and whether its env is ready."""
    if st["mechanism"] == "host":
        return f"host ({st.get('onnxruntime_version') or 'onnxruntime missing'})"
    state = {"ready": "[green]ready[/green]", "missing": "[yellow]not set up[/yellow]",
             "broken": "[red]broken[/red]"}[st["state"]]
    return f"{st['package']} ({state})"


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
