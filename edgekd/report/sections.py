"""The run-level sections: recipe, accuracy, training curves, seminar table, the searches, what is missing.

Every builder takes the list of runs (one for `edgekd report RUN`, several for a
comparison page) and returns a `Section`: tables have one column per run, charts
one series per run.
"""

from __future__ import annotations

from typing import Any

from edgekd.report import svg
from edgekd.report.html import Section, chart, charts, count, esc, mark, missing, num, pct, table
from edgekd.report.load import RunData


def _get(d: Any, *keys: str, default: Any = None) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _src(run: RunData) -> dict[str, Any]:
    """distill.json where it exists, else config.json (a run still training), else compare.json (a compare run)."""
    return run.distill or run.config or run.extra.get("compare") or {}


def _status(run: RunData) -> str:
    if run.distill:
        return "finished"
    if "compare" in run.extra:
        return "an <code>edgekd compare</code> run: its results are in the seminar table"
    return '<span class="fail">distill not finished (no distill.json)</span>'


def _split(run: RunData) -> str:
    info = _get(run.distill, "data") if isinstance(_get(run.distill, "data"), dict) else _get(run.config, "data_info")
    split = _get(info, "split") or {}
    sizes = split.get("sizes") or {}
    if not sizes:
        return "—"
    return esc(f"{split.get('method', '')} seed {split.get('seed', '?')}: " +
               " / ".join(f"{k} {v}" for k, v in sizes.items()))


def _teacher(run: RunData) -> str:
    t = _get(run.distill, "teacher")
    if isinstance(t, dict):
        parts = [f"{i.get('arch') or i.get('path') or i.get('spec') or '?'} ({i.get('source', '?')}, "
                 f"{count(i.get('params'))} params)" for i in t.get("all", [t])]
        return esc("; ".join(parts)) + f", test accuracy {pct(t.get('accuracy'))}"
    spec = _get(run.config, "teacher")
    return esc(", ".join(spec) if isinstance(spec, list) else spec or "—")


def _provenance(run: RunData) -> dict[str, Any]:
    return _get(run.distill, "provenance") or {}


def _lr(run: RunData, cfg: dict[str, Any]) -> str:
    """The learning rate used (distill.json's `training`: scaled with the batch, its schedule), else the configured
    one."""
    t = _get(run.distill, "training") or {}
    if isinstance(t.get("lr"), (int, float)):
        extra = f" (base {num(t.get('lr_base'))} at batch {t.get('base_batch', '?')}, {t.get('lr_schedule', '?')}" + \
                (f", warm-up {t['warmup_epochs']} epochs" if t.get("warmup_epochs") else "") + ")"
        return esc(f"{num(t['lr'])}{extra}, batch {t.get('batch_size', cfg.get('batch_size', '—'))}")
    return esc(f"{cfg.get('lr', '—')}, batch {cfg.get('batch_size', '—')}")


def _input(run: RunData) -> str:
    """What each model sees: H×W, how images became H×W, per model (distill.json's views)."""
    out = []
    for who in ("student", "teacher"):
        v = _get(run.distill, who, "view")
        if isinstance(v, dict) and v.get("input_size"):
            h, w = v["input_size"]
            how = v.get("resize") or "as stored"
            out.append(f"{who} {h}×{w} ({how}{', fill ' + str(v['fill']) if v.get('fill') is not None else ''})")
    return esc("; ".join(out) or "—")


def _recipe_rows(run: RunData) -> dict[str, str]:
    s, cfg, prov = _src(run), run.config or run.extra.get("compare") or {}, _provenance(run)
    train = _get(run.distill, "training") or {}
    data = s.get("data")
    data_name = data.get("name") if isinstance(data, dict) else data
    student = _get(run.distill, "student")
    versions = ", ".join(f"{k} {prov[k]}" for k in ("edgekd", "torch", "torchvision", "onnxruntime", "python")
                         if prov.get(k))
    device = prov.get("device") or train.get("device") or cfg.get("device")
    return {
        "status": _status(run),
        "data": esc(data_name or "—"), "input (H×W)": _input(run), "split": _split(run), "teacher": _teacher(run),
        "student": esc(f"{student['arch']} ({count(student.get('params'))} params, ops: "
                       f"{', '.join(student.get('ops', []))})")
        if isinstance(student, dict) else esc(cfg.get("student", "—")),
        "methods (weights)": esc(s.get("objective") or ", ".join(s.get("methods", [])) or "—"),
        "temperature": num(s.get("temperature")), "epochs": num(s.get("epochs")),
        "teacher epochs": num(cfg.get("teacher_epochs")), "seeds": num(s.get("seeds")),
        "labeled fraction": num(s.get("labeled_fraction")),
        "learning rate, batch": _lr(run, cfg),
        "device, precision": esc(f"{device or '— (not recorded)'}, "
                                 f"{train.get('precision') or 'fp32'}"),
        "world size": esc(prov.get("world_size") or train.get("world_size") or "— (not recorded)"),
        "backend": esc(prov.get("backend") or train.get("backend") or "—"),
        "platform": esc(prov.get("platform") or "—"),
        "versions": esc(versions or "— (no provenance in distill.json)"),
        "wall time": f"{s['wall_seconds']:.1f} s" if isinstance(s.get("wall_seconds"), (int, float)) else "—",
        "folder": f"<code>{esc(run.path)}</code>",
    }


def recipe(runs: list[RunData]) -> Section:
    per_run = [_recipe_rows(r) for r in runs]
    rows = [[esc(k)] + [p[k] for p in per_run] for k in per_run[0]]
    return Section("recipe", "Recipe", table(["", *[esc(r.label) for r in runs]], rows, numeric_from=99))


def _acc(run: RunData) -> dict[str, Any]:
    return _get(run.distill, "accuracy") or {}


def _ms(d: Any) -> str:
    if isinstance(d, dict) and isinstance(d.get("mean"), (int, float)):
        return f"{100 * d['mean']:.2f} ± {100 * d.get('std', 0):.2f}% <span class=muted>(n={d.get('n', '?')})</span>"
    return pct(d) if isinstance(d, (int, float)) else "—"


def accuracy(runs: list[RunData]) -> Section:
    if not any(r.distill for r in runs):
        return Section("accuracy", "Accuracy", missing(
            "No distill.json yet: test accuracies appear when <code>edgekd distill</code> finishes "
            "(the training curves below show validation accuracy so far)."))
    rows = [["teacher"] + [pct(_acc(r).get("teacher")) for r in runs],
            ["student alone (control)"] + [_ms(_acc(r).get("student_alone")) for r in runs],
            ["distilled student"] + [_ms(_acc(r).get("student")) for r in runs],
            ["gap closed"] + [pct(_get(r.distill, "gap_closed"), 1) for r in runs],
            ["per seed: alone → distilled"] + [esc("; ".join(
                f"s{p['seed']}: {100 * p['student_alone']:.1f} → {100 * p['student']:.1f}"
                for p in _get(r.distill, "per_seed", default=[]) if "student_alone" in p and "student" in p)) or "—"
                for r in runs]]
    if any(_acc(r).get("agreement") for r in runs):   # label-free runs: the student against the teacher
        rows.insert(3, ["top-1 agreement with the teacher"] + [_ms(_acc(r).get("agreement")) for r in runs])
    label_free = all(_acc(r).get("student_alone") is None and "agreement" in _acc(r) for r in runs)
    if label_free:   # no labels, no control: no student-alone row, no gap to close
        rows = [row for row in rows if not row[0].startswith(("student alone", "gap closed", "per seed"))]
    series = []
    for r in runs:
        a = _acc(r)
        vals = [a.get("teacher"), _get(a, "student_alone", "mean"), _get(a, "student", "mean")]
        errs = [0.0, _get(a, "student_alone", "std", default=0.0), _get(a, "student", "std", default=0.0)]
        keep = [0, 2] if label_free else [0, 1, 2]
        series.append((r.label, [100 * vals[i] if isinstance(vals[i], (int, float)) else None for i in keep],
                       [100 * (errs[i] or 0.0) for i in keep]))
    groups = ["teacher", "student alone", "distilled"]
    fig = svg.bar_chart([groups[0], groups[2]] if label_free else groups, series,
                        title="Test accuracy (mean ± std over seeds)", y_label="accuracy (%)")
    note = ('<p class="muted">Label-free (labeled fraction 0): no student-alone control can exist; the student '
            'is shown against the teacher.</p>' if label_free else
            '<p class="muted">Gap closed = (distilled − alone) / (teacher − alone), on the means.</p>')
    return Section("accuracy", "Accuracy", table(["", *[esc(r.label) for r in runs]], rows) + note +
                   charts(chart("accuracy", fig)))


ROLE_NAMES = {"teacher": "teacher", "alone": "student alone", "kd": "distilled", "dml": "mutual learning"}


def _series_key(phase: str, stage: str) -> tuple[str, str]:
    """(group, seed) of a metrics phase: 'kd/seed1/gen2' → ('distilled gen2', 'seed1')."""
    parts = phase.split("/")
    role = ROLE_NAMES.get(parts[0].rstrip("0123456789"), parts[0])
    if parts[0].startswith("teacher") and parts[0] != "teacher":
        role += " " + parts[0][len("teacher"):]
    seed = next((p for p in parts if p.startswith("seed")), "")
    rest = " ".join(p for p in parts[1:] if not p.startswith("seed"))
    group = " ".join(x for x in (role, rest, "(hint stage)" if stage == "hint" else "") if x)
    return group, seed


def _by_phase(rows: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        out.setdefault((row["phase"], str(row.get("stage", "main"))), []).append(row)
    for v in out.values():
        v.sort(key=lambda r: r["epoch"])
    return out


def _epoch_ticks(rows: list[dict[str, Any]]) -> list[float]:
    hi = max(int(r["epoch"]) for r in rows)
    return [float(t) for t in svg.nice_ticks(1, hi) if 1 <= t <= hi and float(t).is_integer()] or [1.0]


def _val_chart(run: RunData, phases: dict) -> str:
    groups = list(dict.fromkeys(_series_key(*k)[0] for k in phases))
    series, seen = [], set()
    for (phase, stage), rows in phases.items():
        group, seed = _series_key(phase, stage)
        ys = [100 * r["val_acc"] if isinstance(r.get("val_acc"), (int, float)) else None for r in rows]
        series.append({"name": group + (" (each seed)" if seed else ""), "xs": [r["epoch"] for r in rows], "ys": ys,
                       "color": svg.color(groups.index(group)), "legend": group not in seen,
                       "opacity": 1 if group not in seen else 0.6})
        seen.add(group)
    return svg.line_chart(series, title=f"Validation accuracy per epoch — {run.label}", x_label="epoch",
                          y_label="val accuracy (%)",
                          x_ticks=_epoch_ticks([r for rows in phases.values() for r in rows]))


def _loss_chart(run: RunData, group: str, phases: dict) -> str:
    """Train loss of one group (e.g. every seed of the distilled student): total and each term."""
    series, seen, terms, mine = [], set(), [], []
    for (phase, stage), rows in phases.items():
        if _series_key(phase, stage)[0] != group:
            continue
        mine += rows
        term_names = sorted({t for r in rows for t in (r.get("terms") or {})})
        names = term_names if len(term_names) == 1 else ["total"] + term_names  # one term: it is the total
        for name in names:
            terms += [name] if name not in terms else []
            ys = [r.get("loss") if name == "total" else (r.get("terms") or {}).get(name) for r in rows]
            series.append({"name": name, "xs": [r["epoch"] for r in rows], "ys": ys, "legend": name not in seen,
                           "color": svg.color(terms.index(name)), "dash": name == "total",
                           "opacity": 1 if name not in seen else 0.6})
            seen.add(name)
    positive = all(y is None or y > 0 for s in series for y in s["ys"])
    return svg.line_chart(series, title=f"Train loss per term — {group} — {run.label}", x_label="epoch",
                          y_label="loss (log scale)" if positive else "loss", x_ticks=_epoch_ticks(mine),
                          log_y=positive)


def _progress_note(run: RunData) -> str:
    if run.distill or not run.metrics:
        return ""
    last = max(run.metrics, key=lambda r: r.get("time", 0))
    return missing(f"Training has not finished (no distill.json): the last record is {esc(last['phase'])} epoch "
                   f"{esc(last['epoch'])}/{esc(last.get('epochs', '?'))}. Run <code>edgekd report</code> again later.")


def _run_curves(run: RunData) -> str:
    if not run.metrics:
        return missing("No training curves recorded (run made before curves were recorded, or nothing has "
                       "finished an epoch yet): no metrics.jsonl in the run folder.")
    phases = _by_phase(run.metrics)
    groups = list(dict.fromkeys(_series_key(*k)[0] for k in phases))
    figs = [chart(f"val-acc-{run.label}", _val_chart(run, phases))]
    figs += [chart(f"loss-{g}-{run.label}", _loss_chart(run, g, phases)) for g in groups]
    note = ('<p class="muted">Lines of the same colour are the seeds; dashed = total loss. Where a seed\'s line is '
            'lighter, it is the second or later seed.</p>')
    return _progress_note(run) + charts(*figs) + note


def _mean_curve(run: RunData, group: str) -> tuple[list[float], list[float]]:
    per_epoch: dict[float, list[float]] = {}
    for (phase, stage), rows in _by_phase(run.metrics).items():
        if _series_key(phase, stage)[0] == group:
            for r in rows:
                if isinstance(r.get("val_acc"), (int, float)):
                    per_epoch.setdefault(r["epoch"], []).append(100 * r["val_acc"])
    xs = sorted(per_epoch)
    return xs, [sum(per_epoch[x]) / len(per_epoch[x]) for x in xs]


def curves(runs: list[RunData]) -> Section:
    body = ""
    if len(runs) > 1 and sum(bool(r.metrics) for r in runs) > 1:
        series = []
        for i, r in enumerate(runs):
            for group, dash in (("distilled", False), ("student alone", True)):
                xs, ys = _mean_curve(r, group)
                if xs:
                    series.append({"name": f"{r.label}: {group}", "xs": xs, "ys": ys, "color": svg.color(i),
                                   "dash": dash})
        body += charts(chart("val-acc-runs", svg.line_chart(
            series, title="Validation accuracy per epoch, mean over seeds, per run", x_label="epoch",
            y_label="val accuracy (%)", width=760, x_ticks=_epoch_ticks([m for r in runs for m in r.metrics]))))
    for r in runs:
        body += (f"<h3>{esc(r.label)}</h3>" if len(runs) > 1 else "") + _run_curves(r)
    return Section("curves", "Training curves", body)


def seminar(runs: list[RunData]) -> Section | None:
    """compare.json: one accuracy column per run, one row per method, and the bar chart."""
    have = [r for r in runs if "compare" in r.extra]
    if not have:
        return None
    methods = list(dict.fromkeys(row["method"] for r in have for row in r.extra["compare"].get("rows", [])))
    by = {r.label: {row["method"]: row for row in r.extra["compare"].get("rows", [])} for r in have}
    rows = []
    for m in methods:
        cells = []
        for r in have:
            row = by[r.label].get(m)
            if row is None:
                cells.append("—")
                continue
            beats = row.get("beats_alone_beyond_std")
            cells.append(_ms(row.get("accuracy"))
                         + (f", gap closed {pct(row.get('gap_closed'), 0)}" if "gap_closed" in row else "")
                         + (' <span class="pass">beats alone</span>' if beats else ""))
        objective = next((by[r.label][m].get("objective") for r in have if m in by[r.label]), "") or ""
        rows.append([f"{esc(m)}<br><span class=muted>{esc(objective)}</span>", *cells])
    series = [(r.label, [100 * _get(by[r.label].get(m), "accuracy", "mean") if m in by[r.label] else None
                         for m in methods[1:]],
               [100 * _get(by[r.label].get(m), "accuracy", "std", default=0) if m in by[r.label] else None
                for m in methods[1:]]) for r in have]
    teacher = _get(by[have[0].label].get("teacher"), "accuracy", "mean")
    c = have[0].extra["compare"]
    fig = svg.bar_chart(methods[1:], series, title=f"Seminar table: {c.get('student')} on {c.get('data')}, "
                        f"labeled fraction {c.get('labeled_fraction')}", y_label="test accuracy (%)",
                        hline=(100 * teacher, "teacher") if isinstance(teacher, (int, float)) else None)
    note = ('<p class="muted">"beats alone": above the student alone by more than the combined spread '
            '(√(sd² + sd_alone²)).</p>')
    return Section("seminar", "Seminar table (edgekd compare)",
                   table(["method", *[esc(r.label) for r in have]], rows) + note + charts(chart("seminar", fig)))


def select_student(runs: list[RunData]) -> Section | None:
    have = [r for r in runs if "select_student" in r.extra]
    if not have:
        return None
    body = ""
    for r in have:
        res = r.extra["select_student"]
        cands = res.get("candidates", [])
        front = set(_get(res, "pareto", "latency", default=[]))
        pts = [{"x": _get(c, "measured", "latency_p90_ms"),
                "y": 100 * c["val_accuracy"] if "val_accuracy" in c else None,
                "name": f"#{c.get('id')} {c.get('name', '')}", "group": "on the front" if c.get("id") in front else
                "off the front"} for c in cands]
        idx = [i for i, c in enumerate(cands) if c.get("id") in front]
        fig = svg.scatter(pts, title=f"select-student on {res.get('target')}: accuracy vs measured latency — {r.label}",
                          x_label="latency p90 (ms)", y_label="val accuracy (%)", front=idx)
        rec = res.get("recommended") or {}
        rows = [[f"#{esc(c.get('id'))} {esc(c.get('name', ''))}"
                 + (" <b>(recommended)</b>" if c.get("id") == rec.get("id") else ""),
                 num(_get(c, "measured", "latency_p90_ms"), 3), count(_get(c, "cost", "params")),
                 pct(c.get("val_accuracy")), pct(c.get("test_accuracy")), esc(c.get("status", ""))]
                for c in cands if c.get("id") in front]
        body += (f"<h3>{esc(r.label)}</h3>" if len(have) > 1 else "") + charts(chart(f"pareto-{r.label}", fig, empty=
                 "no candidate was trained")) + "<h3>Pareto front</h3>" + table(
            ["candidate", "p90 ms", "params", "val acc", "test acc", "status"], rows)
    return Section("select-student", "Student search (edgekd select-student)", body)


def select_teacher(runs: list[RunData]) -> Section | None:
    have = [r for r in runs if "select_teacher" in r.extra]
    if not have:
        return None
    body = ""
    for r in have:
        res = r.extra["select_teacher"]
        rows = [[esc(t.get("teacher")) + (" <b>(best)</b>" if t.get("teacher") == res.get("best") else ""),
                 num(_get(t, "grace", "score")), num(_get(t, "grace", "std")), pct(t.get("val_accuracy")),
                 pct(t.get("agreement_at_init")), count(t.get("params"))] for t in res.get("teachers", [])]
        body += (f"<h3>{esc(r.label)}</h3>" if len(have) > 1 else "") + table(
            ["teacher", "GRACE score", "± std", "val acc", "agreement at init", "params"], rows) + (
            f'<p class="muted">{esc(res.get("score", ""))}; '
            f'{"higher" if res.get("higher_is_better") else "lower"} ranks first.</p>')
    return Section("select-teacher", "Teacher selection (edgekd select-teacher)", body)


def _missing_lines(run: RunData) -> list[str]:
    out = []
    if run.config is None and run.distill is None:
        out.append("no config.json or distill.json")
    elif run.distill is None and "compare" not in run.extra:
        out.append("distill has not finished: no distill.json (accuracy, student and teacher details missing)")
    if not run.metrics:
        out.append("no metrics.jsonl: no training curves")
    if not run.targets:
        out.append("nothing exported: run <code>edgekd export --target T</code>")
    for name, t in run.targets.items():
        if t.bench is None:
            out.append(f"{esc(name)}: not benchmarked: run <code>edgekd bench --target {esc(name)}</code>")
        if t.manifest and "variants" not in t.manifest:
            out.append(f"{esc(name)}: no int8 variant "
                       f"(<code>edgekd export --target {esc(name)} --quantize int8</code>)")
    return out + [esc(p) for p in run.problems]


def whats_missing(runs: list[RunData]) -> Section:
    items = [(r.label, line) for r in runs for line in _missing_lines(r)]
    if not items:
        return Section("missing", "What is missing", "<p>Nothing: every stage of the run is here.</p>")
    lis = "".join(f"<li>{(esc(label) + ': ') if len(runs) > 1 else ''}{line}</li>" for label, line in items)
    return Section("missing", "What is missing", f"<ul>{lis}</ul>")


def _summary_line(run: RunData) -> str:
    a = _acc(run)
    parts = []
    if a and a.get("student_alone") is None and "student" in a:   # label-free: no control, the teacher instead
        parts.append(f"label-free: distilled {_ms(a.get('student'))} (teacher {pct(a.get('teacher'))}), top-1 "
                     f"agreement with the teacher {_ms(a.get('agreement'))}; no student-alone control (no labels)")
    elif a:
        parts.append(f"distilled {_ms(a.get('student'))} against {_ms(a.get('student_alone'))} alone "
                     f"(teacher {pct(a.get('teacher'))}), gap closed {pct(_get(run.distill, 'gap_closed'), 1)}")
        v = _get(run.distill, "verdict") or {}
        if v.get("try"):
            parts.append(f"distillation {esc(v['distillation'])} ({100 * v['delta']:+.2f} points, spread "
                         f"{100 * v['spread']:.2f}): to measure the other logit methods on this data, run "
                         f"<code>{esc(v['try'])}</code>")
    elif run.metrics:
        last = max(run.metrics, key=lambda r: r.get("time", 0))
        parts.append(f"training: {esc(last['phase'])} epoch {esc(last['epoch'])}/{esc(last.get('epochs', '?'))}")
    for name, t in run.targets.items():
        m, b = t.manifest or {}, t.bench or {}
        rec = b.get("recommended") or m.get("recommended") or "fp32"
        lat = _get(b, rec, "latency_ms", "p90")
        parts.append(f"<b>{esc(name)}</b>: deployable {mark(m.get('deployable')) if 'deployable' in m else '—'}, "
                     f"{esc(rec)} p90 {num(lat, 3)} ms" + ("" if lat is not None else " (not benchmarked)"))
    if not parts and run.checkpoints:
        parts.append(f"distill not finished; epoch checkpoints so far: {esc(', '.join(run.checkpoints))}")
    return "; ".join(parts) or "nothing recorded yet"


def summary(runs: list[RunData]) -> Section:
    """The verdict first, as a run page's header does: accuracy and, per target, deployable or not."""
    items = "".join(f"<li>{(f'<b>{esc(r.label)}</b>: ') if len(runs) > 1 else ''}{_summary_line(r)}</li>" for r in runs)
    # What distill flagged about the teacher (check-teacher): first, in red, never below the fold.
    warns = "".join(f'<p class="fail"><b>WARNING</b>: {(esc(r.label) + ": ") if len(runs) > 1 else ""}{esc(w)}</p>'
                    for r in runs for w in (_get(r.distill, "warnings") or []))
    return Section("summary", "Summary", f"{warns}<ul>{items}</ul>")
