"""The run-level sections: recipe, accuracy, training curves, seminar table, the searches, what is missing.

Every builder takes the list of runs (one for `edgekd report RUN`, several for a
comparison page) and returns a `Section`: tables have one column per run, charts
one series per run.
"""

from __future__ import annotations

from typing import Any

from edgekd.report import svg
from edgekd.report.html import Section, chart, charts, count, esc, mark, missing, num, pct, table
from edgekd.report.load import RunData, TargetData
from edgekd.run.distill import DistillSummary
from edgekd.run.metrics import MetricsLine


def _dig(d: Any, *keys: str, default: Any = None) -> Any:
    """A nested value of an untyped file (compare.json, the searches' results), or `default`."""
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _setting(run: RunData, key: str) -> Any:
    """A recipe setting: distill.json's where it has it, else config.json's (a run still training), else
    compare.json's (a compare run)."""
    if run.distill is not None and getattr(run.distill, key, None) is not None:
        return getattr(run.distill, key)
    return (run.config or run.extra.get("compare") or {}).get(key)


def _status(run: RunData) -> str:
    if run.distill:
        return "finished"
    if "compare" in run.extra:
        return "an <code>edgekd compare</code> run: its results are in the seminar table"
    return '<span class="fail">distill not finished (no distill.json)</span>'


def _split(run: RunData) -> str:
    if run.distill is not None:
        split = run.distill.data.split or {}
    else:
        split = ((run.config or {}).get("data_info") or {}).get("split") or {}
    sizes = split.get("sizes") or {}
    if not sizes:
        return "—"
    return esc(f"{split.get('method', '')} seed {split.get('seed', '?')}: " +
               " / ".join(f"{k} {v}" for k, v in sizes.items()))


def _teacher(run: RunData) -> str:
    t = run.distill.teacher if run.distill is not None else None
    if t is not None:
        parts = [f"{i.get('arch') or i.get('path') or i.get('spec') or '?'} ({i.get('source', '?')}, "
                 f"{count(i.get('params'))} params)" for i in t.get("all", [t])]
        return esc("; ".join(parts)) + f", test accuracy {pct(t.get('accuracy'))}"
    spec = (run.config or {}).get("teacher")
    return esc(", ".join(spec) if isinstance(spec, list) else spec or "—")


def _provenance(run: RunData) -> dict[str, Any]:
    return (run.distill.provenance if run.distill is not None else None) or {}


def _training(run: RunData) -> dict[str, Any]:
    return (run.distill.training if run.distill is not None else None) or {}


def _lr(run: RunData, cfg: dict[str, Any]) -> str:
    """The learning rate used (distill.json's `training`: scaled with the batch, its schedule), else the configured
    one."""
    t = _training(run)
    if isinstance(t.get("lr"), (int, float)):
        extra = f" (base {num(t.get('lr_base'))} at batch {t.get('base_batch', '?')}, {t.get('lr_schedule', '?')}" + \
                (f", warm-up {t['warmup_epochs']} epochs" if t.get("warmup_epochs") else "") + ")"
        return esc(f"{num(t['lr'])}{extra}, batch {t.get('batch_size', cfg.get('batch_size', '—'))}")
    return esc(f"{cfg.get('lr', '—')}, batch {cfg.get('batch_size', '—')}")


def _input(run: RunData) -> str:
    """What each model sees: H×W, how images became H×W, per model (distill.json's views)."""
    out = []
    d = run.distill
    views = {"student": d.student.view, "teacher": (d.teacher or {}).get("view")} if d is not None else {}
    for who, v in views.items():
        if isinstance(v, dict) and v.get("input_size"):
            h, w = v["input_size"]
            how = v.get("resize") or "as stored"
            out.append(f"{who} {h}×{w} ({how}{', fill ' + str(v['fill']) if v.get('fill') is not None else ''})")
    return esc("; ".join(out) or "—")


def _student(run: RunData, cfg: dict[str, Any]) -> str:
    s = run.distill.student if run.distill is not None else None
    if s is None:
        return esc(cfg.get("student", "—"))
    return esc(f"{s.arch} ({count(s.params)} params, ops: {', '.join(s.ops or [])})")


def _recipe_rows(run: RunData) -> dict[str, str]:
    cfg, prov, train = run.config or run.extra.get("compare") or {}, _provenance(run), _training(run)
    data = run.distill.data.name if run.distill is not None else _setting(run, "data")
    versions = ", ".join(f"{k} {prov[k]}" for k in ("edgekd", "torch", "torchvision", "onnxruntime", "python")
                         if prov.get(k))
    device = prov.get("device") or train.get("device") or cfg.get("device")
    wall = _setting(run, "wall_seconds")
    return {
        "status": _status(run),
        "data": esc(data or "—"), "input (H×W)": _input(run), "split": _split(run), "teacher": _teacher(run),
        "student": _student(run, cfg),
        "methods (weights)": esc(_setting(run, "objective") or ", ".join(_setting(run, "methods") or []) or "—"),
        "temperature": num(_setting(run, "temperature")), "epochs": num(_setting(run, "epochs")),
        "teacher epochs": num(cfg.get("teacher_epochs")), "seeds": num(_setting(run, "seeds")),
        "labeled fraction": num(_setting(run, "labeled_fraction")),
        "learning rate, batch": _lr(run, cfg),
        "device, precision": esc(f"{device or '— (not recorded)'}, "
                                 f"{train.get('precision') or 'fp32'}"),
        "world size": esc(prov.get("world_size") or train.get("world_size") or "— (not recorded)"),
        "backend": esc(prov.get("backend") or train.get("backend") or "—"),
        "platform": esc(prov.get("platform") or "—"),
        "versions": esc(versions or "— (no provenance in distill.json)"),
        "wall time": f"{wall:.1f} s" if isinstance(wall, (int, float)) else "—",
        "folder": f"<code>{esc(run.path)}</code>",
    }


def recipe(runs: list[RunData]) -> Section:
    per_run = [_recipe_rows(r) for r in runs]
    rows = [[esc(k)] + [p[k] for p in per_run] for k in per_run[0]]
    return Section("recipe", "Recipe", table(["", *[esc(r.label) for r in runs]], rows, numeric_from=99))


def _ms(d: Any) -> str:
    if isinstance(d, dict) and isinstance(d.get("mean"), (int, float)):
        return f"{100 * d['mean']:.2f} ± {100 * d.get('std', 0):.2f}% <span class=muted>(n={d.get('n', '?')})</span>"
    return pct(d) if isinstance(d, (int, float)) else "—"


def _per_seed(d: DistillSummary) -> str:
    return esc("; ".join(f"s{p['seed']}: {100 * p['student_alone']:.1f} → {100 * p['student']:.1f}"
                         for p in d.per_seed if "student_alone" in p and "student" in p)) or "—"


def _accuracy_chart(done: list[RunData], label_free: bool) -> str:
    series = []
    for r in done:
        a = r.distill.accuracy  # type: ignore[union-attr]
        alone = a.student_alone or {}
        vals = [a.teacher, alone.get("mean"), a.student.get("mean")]
        errs = [0.0, alone.get("std", 0.0), a.student.get("std", 0.0)]
        keep = [0, 2] if label_free else [0, 1, 2]
        series.append((r.label, [100 * vals[i] if isinstance(vals[i], (int, float)) else None for i in keep],
                       [100 * (errs[i] or 0.0) for i in keep]))
    groups = ["teacher", "student alone", "distilled"]
    return svg.bar_chart([groups[0], groups[2]] if label_free else groups, series,
                         title="Test accuracy (mean ± std over seeds)", y_label="accuracy (%)")


def accuracy(runs: list[RunData]) -> Section:
    done = [r for r in runs if r.distill is not None]
    if not done:
        return Section("accuracy", "Accuracy", missing(
            "No distill.json yet: test accuracies appear when <code>edgekd distill</code> finishes "
            "(the training curves below show validation accuracy so far)."))

    def each(f) -> list[str]:
        return [f(r.distill) if r.distill is not None else "—" for r in runs]

    rows = [["teacher"] + each(lambda d: pct(d.accuracy.teacher)),
            ["student alone (control)"] + each(lambda d: _ms(d.accuracy.student_alone)),
            ["distilled student"] + each(lambda d: _ms(d.accuracy.student)),
            ["gap closed"] + each(lambda d: pct(d.gap_closed, 1)),
            ["per seed: alone → distilled"] + each(_per_seed)]
    if any(r.distill.accuracy.agreement for r in done):   # label-free runs: the student against the teacher
        rows.insert(3, ["top-1 agreement with the teacher"] + each(lambda d: _ms(d.accuracy.agreement)))
    label_free = len(done) == len(runs) and all(
        r.distill.accuracy.student_alone is None and r.distill.accuracy.agreement is not None for r in done)
    if label_free:   # no labels, no control: no student-alone row, no gap to close
        rows = [row for row in rows if not row[0].startswith(("student alone", "gap closed", "per seed"))]
    note = ('<p class="muted">Label-free (labeled fraction 0): no student-alone control can exist; the student '
            'is shown against the teacher.</p>' if label_free else
            '<p class="muted">Gap closed = (distilled − alone) / (teacher − alone), on the means.</p>')
    return Section("accuracy", "Accuracy", table(["", *[esc(r.label) for r in runs]], rows) + note +
                   charts(chart("accuracy", _accuracy_chart(done, label_free))))


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


def _by_phase(rows: list[MetricsLine]) -> dict[tuple[str, str], list[MetricsLine]]:
    out: dict[tuple[str, str], list[MetricsLine]] = {}
    for row in rows:
        out.setdefault((row.phase, row.stage), []).append(row)
    for v in out.values():
        v.sort(key=lambda r: r.epoch)
    return out


def _epoch_ticks(rows: list[MetricsLine]) -> list[float]:
    hi = max(r.epoch for r in rows)
    return [float(t) for t in svg.nice_ticks(1, hi) if 1 <= t <= hi and float(t).is_integer()] or [1.0]


def _val_chart(run: RunData, phases: dict) -> str:
    groups = list(dict.fromkeys(_series_key(*k)[0] for k in phases))
    series, seen = [], set()
    for (phase, stage), rows in phases.items():
        group, seed = _series_key(phase, stage)
        ys = [100 * r.val_acc if r.val_acc is not None else None for r in rows]
        series.append({"name": group + (" (each seed)" if seed else ""), "xs": [r.epoch for r in rows], "ys": ys,
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
        term_names = sorted({t for r in rows for t in r.terms})
        names = term_names if len(term_names) == 1 else ["total"] + term_names  # one term: it is the total
        for name in names:
            terms += [name] if name not in terms else []
            ys = [r.loss if name == "total" else r.terms.get(name) for r in rows]
            series.append({"name": name, "xs": [r.epoch for r in rows], "ys": ys, "legend": name not in seen,
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
    last = max(run.metrics, key=lambda r: r.time)
    return missing(f"Training has not finished (no distill.json): the last record is {esc(last.phase)} epoch "
                   f"{esc(last.epoch)}/{esc(last.epochs)}. Run <code>edgekd report</code> again later.")


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
                if r.val_acc is not None:
                    per_epoch.setdefault(r.epoch, []).append(100 * r.val_acc)
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
    series = [(r.label, [100 * _dig(by[r.label].get(m), "accuracy", "mean") if m in by[r.label] else None
                         for m in methods[1:]],
               [100 * _dig(by[r.label].get(m), "accuracy", "std", default=0) if m in by[r.label] else None
                for m in methods[1:]]) for r in have]
    teacher = _dig(by[have[0].label].get("teacher"), "accuracy", "mean")
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
        front = set(_dig(res, "pareto", "latency", default=[]))
        pts = [{"x": _dig(c, "measured", "latency_p90_ms"),
                "y": 100 * c["val_accuracy"] if "val_accuracy" in c else None,
                "name": f"#{c.get('id')} {c.get('name', '')}", "group": "on the front" if c.get("id") in front else
                "off the front"} for c in cands]
        idx = [i for i, c in enumerate(cands) if c.get("id") in front]
        fig = svg.scatter(pts, title=f"select-student on {res.get('target')}: accuracy vs measured latency — {r.label}",
                          x_label="latency p90 (ms)", y_label="val accuracy (%)", front=idx)
        rec = res.get("recommended") or {}
        rows = [[f"#{esc(c.get('id'))} {esc(c.get('name', ''))}"
                 + (" <b>(recommended)</b>" if c.get("id") == rec.get("id") else ""),
                 num(_dig(c, "measured", "latency_p90_ms"), 3), count(_dig(c, "cost", "params")),
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
                 num(_dig(t, "grace", "score")), num(_dig(t, "grace", "std")), pct(t.get("val_accuracy")),
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
        if t.manifest is not None and t.manifest.variants is None:
            out.append(f"{esc(name)}: no int8 variant "
                       f"(<code>edgekd export --target {esc(name)} --quantize int8</code>)")
    return out + [esc(p) for p in run.problems]


def whats_missing(runs: list[RunData]) -> Section:
    items = [(r.label, line) for r in runs for line in _missing_lines(r)]
    if not items:
        return Section("missing", "What is missing", "<p>Nothing: every stage of the run is here.</p>")
    lis = "".join(f"<li>{(esc(label) + ': ') if len(runs) > 1 else ''}{line}</li>" for label, line in items)
    return Section("missing", "What is missing", f"<ul>{lis}</ul>")


def _distill_line(d: DistillSummary) -> list[str]:
    a = d.accuracy
    if a.student_alone is None:   # label-free: no control, the teacher instead
        return [f"label-free: distilled {_ms(a.student)} (teacher {pct(a.teacher)}), top-1 "
                f"agreement with the teacher {_ms(a.agreement)}; no student-alone control (no labels)"]
    parts = [f"distilled {_ms(a.student)} against {_ms(a.student_alone)} alone "
             f"(teacher {pct(a.teacher)}), gap closed {pct(d.gap_closed, 1)}"]
    v = d.verdict or {}
    if v.get("try"):
        parts.append(f"distillation {esc(v['distillation'])} ({100 * v['delta']:+.2f} points, spread "
                     f"{100 * v['spread']:.2f}): to measure the other logit methods on this data, run "
                     f"<code>{esc(v['try'])}</code>")
    return parts


def _target_line(t: TargetData) -> str:
    m, b = t.manifest, t.bench
    rec = (b.recommended if b is not None else None) or (m.recommended if m is not None else None) or "fp32"
    measure = (b.int8 if rec == "int8" else b.fp32) if b is not None else None
    lat = measure.latency_ms.get("p90") if measure is not None else None
    return (f"<b>{esc(t.name)}</b>: deployable {mark(m.deployable) if m is not None else '—'}, "
            f"{esc(rec)} p90 {num(lat, 3)} ms" + ("" if lat is not None else " (not benchmarked)"))


def _summary_line(run: RunData) -> str:
    parts = []
    if run.distill is not None:
        parts += _distill_line(run.distill)
    elif run.metrics:
        last = max(run.metrics, key=lambda r: r.time)
        parts.append(f"training: {esc(last.phase)} epoch {esc(last.epoch)}/{esc(last.epochs)}")
    parts += [_target_line(t) for t in run.targets.values()]
    if not parts and run.checkpoints:
        parts.append(f"distill not finished; epoch checkpoints so far: {esc(', '.join(run.checkpoints))}")
    return "; ".join(parts) or "nothing recorded yet"


def summary(runs: list[RunData]) -> Section:
    """The verdict first, as a run page's header does: accuracy and, per target, deployable or not."""
    items = "".join(f"<li>{(f'<b>{esc(r.label)}</b>: ') if len(runs) > 1 else ''}{_summary_line(r)}</li>" for r in runs)
    # What distill flagged about the teacher (check-teacher): first, in red, never below the fold.
    warns = "".join(f'<p class="fail"><b>WARNING</b>: {(esc(r.label) + ": ") if len(runs) > 1 else ""}{esc(w)}</p>'
                    for r in runs for w in ((r.distill.warnings if r.distill else None) or []))
    return Section("summary", "Summary", f"{warns}<ul>{items}</ul>")
