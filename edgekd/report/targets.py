"""The per-target sections: audit, parity, latency, throughput, budgets, operator profile, fp32 vs int8,
and the teacher against the student.

Each reads `RUN/<target>/manifest.json` and `bench.json`. A run that lacks the
target, or was exported but not benchmarked, gets a column saying so.
"""

from __future__ import annotations

import math
from typing import Any

from edgekd.report import svg
from edgekd.report.html import Section, chart, charts, count, esc, mark, missing, num, pct, size, table
from edgekd.report.load import RunData, TargetData, decode_raw
from edgekd.run.bench import BenchFile, Measure
from edgekd.run.manifest import Manifest

VARIANTS = ("fp32", "int8")


def _t(run: RunData, name: str) -> TargetData | None:
    return run.targets.get(name)


def _m(run: RunData, name: str) -> Manifest | None:
    t = _t(run, name)
    return t.manifest if t else None


def _b(run: RunData, name: str) -> BenchFile | None:
    t = _t(run, name)
    return t.bench if t else None


def _measure(b: BenchFile | None, variant: str) -> Measure | None:
    """A variant's measurement in bench.json (None: not benchmarked, or no such variant)."""
    if b is None:
        return None
    return b.fp32 if variant == "fp32" else b.int8


def _unsupported(m: Manifest | None) -> str:
    if m is None:
        return "—"
    if not m.ops.unsupported:
        return '<span class="pass">none</span>'
    return "<br>".join(f'<span class="fail">{esc(u.get("op"))}</span> at {esc(", ".join(u.get("nodes", [])[:5]))}'
                       f' <span class=muted>{esc(u.get("reason", ""))}</span>' for u in m.ops.unsupported)


def _assignment(m: Manifest | None, b: BenchFile | None) -> str:
    """ONNX Runtime's real node → provider assignment, where export or audit could build the target's session."""
    part = m.ops.partition if m is not None else None
    if part is None:
        return '<span class="muted">not recorded (static audit only)</span>'
    if not part.get("ran", True):
        return f'<span class="muted">not run here: {esc(part.get("reason", "provider unavailable"))}</span>'
    nodes, share = part.get("nodes") or {}, part.get("share") or {}
    lines = [f"{esc(p)}: {esc(n)} nodes ({pct(share.get(p), 0)})" for p, n in nodes.items()]
    if part.get("fell_back_ops"):
        lines.append(f'<span class="fail">fell back: {esc(", ".join(part["fell_back_ops"]))}</span>')
    if part.get("error"):
        lines.append(f'<span class="fail">{esc(part["error"])}</span>')
    return mark(part.get("passed")) + "<br>" + "<br>".join(lines or [esc(part.get("summary", ""))])


def _host(b: BenchFile | None) -> str:
    """bench.json's `host`: the CPU model and which ISA extensions it has (what ORT's kernels dispatch on)."""
    if b is None:
        return "—"
    h = b.host
    if h is None:
        return '<span class="muted">not recorded</span>'
    flags = h.get("flags") or {}
    have = ", ".join(k for k, v in flags.items() if v) if isinstance(flags, dict) else ""
    return esc(f"{h.get('model') or '?'} ({h.get('machine', '?')}, {h.get('logical_cpus', '?')} CPUs)"
               + (f"; {have}" if have else ""))


def _or(value: Any, default: str = "—") -> Any:
    return default if value is None else value


def _model_cell(m: Manifest | None, b: BenchFile | None) -> str:
    if m is None:
        return "—"
    return esc(f"{m.model.path}, {size(m.model.bytes)}, {count(m.model.params)} params, opset {m.model.opset}")


def _ran_cell(m: Manifest | None, b: BenchFile | None) -> str:
    if b is None:
        return '<span class="muted">not benchmarked</span>'
    return esc(f"{_or(b.fp32.provider_requested, '?')} → {b.fp32.provider}")


def _runner_cell(m: Manifest | None, b: BenchFile | None) -> str:
    if b is None:
        return "—"
    return esc(b.runner) + (" <b>(emulated: timings are not the target's)</b>" if b.fp32.emulated else "")


def _threads_cell(m: Manifest | None, b: BenchFile | None) -> str:
    f = b.fp32 if b is not None else None
    return esc(f"{_or(f and f.threads)} ({_or(f and f.threads_requested)})")


def _notes_cell(m: Manifest | None, b: BenchFile | None) -> str:
    notes = ((m.ops.notes or []) + (m.notes or [])) if m is not None else []
    return "<br>".join(esc(n) for n in notes) or "—"


def _checks_cell(m: Manifest | None, b: BenchFile | None) -> str:
    checks = m.checks if m is not None else None
    if checks is None:
        return mark(None)
    return mark(checks.passed) + "".join(f"<br>{esc(f)}" for f in checks.failures)


def audit_table(runs: list[RunData], name: str) -> str:
    def row(label: str, f) -> list[str]:
        return [label] + [f(_m(r, name), _b(r, name)) if _t(r, name) else "not exported" for r in runs]

    rows = [
        row("model", _model_cell),
        row("ops used", lambda m, b: esc(", ".join(m.ops.used) or "—") if m is not None else "—"),
        row("unsupported", lambda m, b: _unsupported(m)),
        row("coverage (nodes the target takes)", lambda m, b: pct(m.ops.coverage, 1) if m is not None else "—"),
        row("provider requested → ran", _ran_cell),
        row("runner", _runner_cell),
        row("host CPU", lambda m, b: _host(b)),
        row("provider assignment", _assignment),
        row("threads used (requested)", _threads_cell),
        row("notes", _notes_cell),
        row("export checks", _checks_cell),
        row("deployable", lambda m, b: mark(m.deployable) if m is not None else "—"),
    ]
    return table(["", *[esc(r.label) for r in runs]], rows, numeric_from=99)


def _parity_cell(p: Any) -> str:
    """A parity record: the manifest's typed `Parity`, or a {max_abs_diff, top1_agreement, passed, ...} dict."""
    if p is not None and not isinstance(p, dict):
        p = p.to_json()
    if not isinstance(p, dict):
        return "—"
    return (f"n {p.get('n', '—')}, max abs {num(p.get('max_abs_diff'), 3)}, max rel "
            f"{num(p.get('max_rel_diff'), 3)}, "
            f"top-1 {pct(p.get('top1_agreement'))} {mark(p.get('passed'))}")


def _int8(m: Manifest | None):
    return (m.variants or {}).get("int8") if m is not None else None


def parity_table(runs: list[RunData], name: str) -> str:
    def golden(r: RunData, v: str) -> str:
        e = _measure(_b(r, name), v)
        return _parity_cell(e.golden if e is not None else None)

    rows = [["fp32 vs PyTorch (test split)"] + [_parity_cell(m.parity if (m := _m(r, name)) else None) for r in runs],
            ["int8 vs PyTorch"] + [_parity_cell(v.parity if (v := _int8(_m(r, name))) else None) for r in runs],
            ["golden vectors on the runtime (fp32)"] + [golden(r, "fp32") for r in runs],
            ["golden vectors on the runtime (int8)"] + [golden(r, "int8") for r in runs]]
    return table(["", *[esc(r.label) for r in runs]], rows, numeric_from=99)


def _box(label: str, entry: Any, raw: list[float] | None) -> dict | None:
    if raw:
        import numpy as np

        a = np.asarray(raw)
        q = np.percentile(a, [1, 25, 50, 75, 90, 99])
        return dict(zip(("p1", "q1", "p50", "q3", "p90", "p99"), map(float, q)), name=label, n=len(a))
    if isinstance(entry, dict) and isinstance(entry.get("p50"), (int, float)):
        return {"name": label,
                **{k: float(entry[k]) for k in ("p50", "p90", "p99") if isinstance(entry.get(k), (int, float))}}
    return None


def _latency_boxes(run: RunData, name: str, prefix: str) -> list[dict]:
    b = _b(run, name)
    if b is None:
        return []
    out = []
    for v in VARIANTS:
        e = _measure(b, v)
        if e is not None:
            out.append(_box(f"{prefix}{v}", e.latency_ms, decode_raw(e.latency_raw)))
    comp = b.comparison or {}
    out.append(_box(f"{prefix}teacher (ONNX)", comp.get("teacher_onnx_ms"), decode_raw(comp.get("teacher_onnx_raw"))))
    out.append(_box(f"{prefix}student eager", comp.get("student_eager_ms"), None))
    return [x for x in out if x]


def latency_charts(runs: list[RunData], name: str) -> str:
    multi = len(runs) > 1
    boxes = [{**bx, "color": svg.color(i)} if multi else bx
             for i, r in enumerate(runs) for bx in _latency_boxes(r, name, f"{r.label}: " if multi else "")]
    if not boxes:
        return missing("No latency yet: run <code>edgekd bench</code>.")
    spread = max(b.get("p99", b["p50"]) for b in boxes) / max(1e-9, min(b.get("p1", b["p50"]) for b in boxes))
    figs = [chart(f"latency-box-{name}", svg.box_plot(
        boxes, title="Latency at batch 1 (box: quartiles; whiskers p1–p99)", x_label="ms per inference" +
        (" (log scale)" if spread > 20 else ""), log_x=spread > 20, width=860 if multi else 620))]
    notes = []
    for r in runs:
        e = _measure(_b(r, name), "fp32")
        if e is None:
            continue
        raw = decode_raw(e.latency_raw)
        if raw:
            figs.append(chart(f"latency-hist-{name}-{r.label}", svg.histogram(
                raw, title=f"fp32 per-run latency{' — ' + r.label if multi else ''}", x_label="ms",
                width=540 if multi else 480)))
        else:
            notes.append(f"{esc(r.label)}: bench.json has no raw per-run timings (made before they were kept); "
                         "the boxes are drawn from its percentiles (median tick, whiskers to p90/p99)")
    return charts(*figs) + "".join(missing(n) for n in notes)


def throughput_chart(runs: list[RunData], name: str) -> str:
    series = []
    for i, r in enumerate(runs):
        for v, dash in zip(VARIANTS, (False, True)):
            e = _measure(_b(r, name), v)
            tp = e.throughput if e is not None else None
            if tp:
                pts = sorted((int(k), float(x)) for k, x in tp.items() if str(k).isdigit())
                label = f"{r.label}: {v}" if len(runs) > 1 else v
                series.append({"name": label, "xs": [math.log2(k) for k, _ in pts], "ys": [x for _, x in pts],
                               "color": svg.color(i if len(runs) > 1 else VARIANTS.index(v)), "dash": dash,
                               "batches": pts})
    if not series:
        return missing("No throughput yet: run <code>edgekd bench</code>.")
    batches = sorted({k for s in series for k, _ in s["batches"]})
    return charts(chart(f"throughput-{name}", svg.line_chart(
        series, title="Throughput against batch size", x_label="batch size", y_label="samples / s",
        x_ticks=[math.log2(b) for b in batches], x_texts=[str(b) for b in batches])))



def _checks(r: RunData, name: str) -> list[dict]:
    b = _b(r, name)
    return b.budget.checks if b is not None else []


def budget_table(runs: list[RunData], name: str) -> str:
    names = list(dict.fromkeys(c["name"] for r in runs for c in _checks(r, name)))
    manifests = [(r, m) for r in runs if (m := _m(r, name)) is not None]
    if not names:
        lim = next(((m.target_profile or {}).get("budget") for _, m in manifests), None)
        text = "No bench yet, so no budget verdict" if lim else "The profile sets no budget"
        return missing(f"{text}. Model size: " + ", ".join(f"{esc(r.label)} {size(m.model.bytes)}"
                                                           for r, m in manifests))

    def cell(r: RunData, n: str) -> str:
        c = next((c for c in _checks(r, name) if c["name"] == n), None)
        if c is None:
            return "—"
        return f"{num(c['value'])} / {num(c['limit'])} {mark(c.get('passed'), skipped=c.get('skipped'))}"

    rows = [[esc(n)] + [cell(r, n) for r in runs] for n in names]
    rows.append(["recommended variant judged"] + [esc(b.recommended if (b := _b(r, name)) else "—") for r in runs])
    rows.append(["all budgets"] + [mark(b.budget.passed if (b := _b(r, name)) else None) for r in runs])
    figs = [chart(f"budget-{name}-{r.label}", svg.budget_bars(
        _checks(r, name), title=f"Budgets (recommended variant){' — ' + r.label if len(runs) > 1 else ''}"))
        for r in runs]
    return table(["budget: value / limit", *[esc(r.label) for r in runs]], rows) + charts(*figs)


def _profile_rows(prof: Any) -> list[dict]:
    """Rows {provider, op, total_ms, share, calls, mean_us} from the agent's
    {provider: {"total_ms", "runs", "ops": [{op, total_ms, share, calls, mean_us}]}}; a plain list of rows passes."""
    if isinstance(prof, list):
        return [r for r in prof if isinstance(r, dict)]
    if not isinstance(prof, dict):
        return []
    return [{"provider": provider, **op} for provider, v in prof.items() if isinstance(v, dict)
            for op in v.get("ops", []) if isinstance(op, dict)]


def profile_tables(runs: list[RunData], name: str) -> str:
    """Top operators by time per provider, for each variant the bench profiled (`edgekd bench --profile`)."""
    out = ""
    for r in runs:
        for v in VARIANTS:
            e = _measure(_b(r, name), v)
            rows = sorted(_profile_rows(e.profile if e is not None else None),
                          key=lambda x: -float(x.get("total_ms") or 0))
            if not rows:
                continue
            cols = [c for c in ("provider", "op", "total_ms", "share", "calls", "mean_us") if any(c in x for x in rows)]
            cols += [c for c in dict.fromkeys(k for x in rows for k in x) if c not in cols]
            body = [[pct(x.get(c), 1) if c == "share" else num(x.get(c)) if isinstance(x.get(c), (int, float))
                     else esc(x.get(c, "")) for c in cols] for x in rows[:15]]
            out += f"<p><b>{esc(r.label + ': ' if len(runs) > 1 else '')}{v}</b></p>" + table(
                [esc(c) for c in cols], body, numeric_from=2)
    return out or ('<p class="muted">No per-operator profile in bench.json '
                   '(taken with <code>edgekd bench --profile</code>).</p>')


def _variant_cell(m: Manifest, b: BenchFile | None, v: str) -> str:
    """One variant of a target: size, accuracy, latency (bench's, else the manifest's) and parity."""
    rec = (b.recommended if b is not None else None) or m.recommended
    e = _measure(b, v)
    if v == "fp32":
        nbytes, acc, par = m.model.bytes, m.accuracy.student_onnx, m.parity.to_json()
        lat = e.latency_ms if e is not None else (m.bench.latency_ms if m.bench is not None else {})
    else:
        q = _int8(m)
        if q is None:
            return "—"
        nbytes, acc, par = q.bytes, q.accuracy, q.parity
        lat = e.latency_ms if e is not None else (q.latency_ms or {})
    return (f"{'<b>recommended</b><br>' if rec == v else ''}{size(nbytes)}, accuracy {pct(acc)}, "
            f"p50 {num(lat.get('p50'), 3)} ms, p90 {num(lat.get('p90'), 3)} ms, "
            f"top-1 vs PyTorch {pct(par.get('top1_agreement'))} {mark(par.get('passed'))}")


def variants_table(runs: list[RunData], name: str) -> str:
    if not any(_int8(_m(r, name)) for r in runs):
        return missing("No int8 variant: <code>edgekd export --target " + esc(name) + " --quantize int8</code> makes "
                                                                                      "one.")
    per = [[_variant_cell(m, _b(r, name), v) if (m := _m(r, name)) is not None else "—" for v in VARIANTS]
           for r in runs]
    rows = [[v] + [p[i] for p in per] for i, v in enumerate(VARIANTS)]
    return table(["variant", *[esc(r.label) for r in runs]], rows, numeric_from=99)


def _row(*cells: tuple[str, str]) -> str:
    """Blocks side by side where the page is wide enough, stacked where not."""
    return ('<div class="row">' + "".join(f'<div class="cell"><h3>{esc(t)}</h3>{html}</div>' for t, html in cells)
            + "</div>")


def target_names(runs: list[RunData]) -> list[str]:
    return sorted({n for r in runs for n in r.targets})


def deployment(runs: list[RunData]) -> Section:
    names = target_names(runs)
    if not names:
        return Section("targets", "Deployment targets", missing(
            "Nothing exported yet: <code>edgekd export --target cpu-arm</code> then <code>edgekd bench</code>."))
    body = ""
    for n in names:
        body += (f'<div class="target" data-target="{esc(n)}"><h3 class="tname">Target {esc(n)}</h3>'
                 + _row(("Audit", audit_table(runs, n)), ("Parity", parity_table(runs, n)))
                 + _row(("Latency distribution", latency_charts(runs, n)))
                 + _row(("Throughput", throughput_chart(runs, n)),
                        ("Peak memory and model size against the budgets", budget_table(runs, n)))
                 + _row(("fp32 and int8", variants_table(runs, n)), ("Per-operator time", profile_tables(runs, n)))
                 + "</div>")
    return Section("targets", "Deployment targets", body)


def _vs_cells(r: RunData, name: str) -> list[str]:
    m, b, t = _m(r, name), _b(r, name), _t(r, name)
    comp = (b.comparison if b is not None else None) or (m.bench.comparison if m and m.bench else None) or {}
    ratio = comp.get("teacher_over_student")
    model_bytes = m.model.bytes if m is not None else None
    size_ratio = (t.teacher_onnx_bytes / model_bytes) if t and t.teacher_onnx_bytes and model_bytes else None
    tp = (r.distill.teacher or {}).get("params") if r.distill is not None else None
    sp = (m.model.params if m is not None else None) or (r.distill.student.params if r.distill else None)
    acc_t, acc_s = (m.accuracy.teacher, m.accuracy.student_onnx) if m is not None else (None, None)
    diff = 100 * (acc_t - acc_s) if acc_t is not None and acc_s is not None else None
    return [f"student {num(ratio, 3)}× faster" if ratio else "— (bench without the teacher)",
            f"student {num(size_ratio, 3)}× smaller" if size_ratio else "—",
            f"student {num(tp / sp, 3)}× fewer" if tp and sp else "—",
            f"{diff:+.2f} points (teacher {pct(acc_t)}, student ONNX {pct(acc_s)})" if diff is not None else "—"]


def teacher_vs_student(runs: list[RunData]) -> Section:
    names = target_names(runs)
    if not names:
        return Section("teacher-vs-student", "Teacher against student", missing(
            "Needs an exported and benchmarked target."))
    labels = ["latency p50 ratio (teacher / student, same host and threads)", "ONNX size ratio", "parameters",
              "accuracy given up"]
    body = ""
    for n in names:
        per = [_vs_cells(r, n) if _t(r, n) else ["not exported"] * 4 for r in runs]
        body += f"<h3>{esc(n)}</h3>" + table(["", *[esc(r.label) for r in runs]],
                                                [[lab] + [p[i] for p in per] for i, lab in enumerate(labels)],
                                                numeric_from=99)
    return Section("teacher-vs-student", "Teacher against student", body)
