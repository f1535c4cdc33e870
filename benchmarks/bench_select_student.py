"""Does `edgekd select-student` pick a student at least as good as the default, for less than brute force?

On digits against `cpu-arm` (local runner), with one teacher (cnn, trained once with the weights
`edgekd distill` would give it, shared by everything below), in two scenarios: the latency budget
set to `--margin` × the default student's measured p90 ("tight", the issue's benchmark), and the
profile's own budget ("profile", 5 ms: every candidate fits, so successive halving does the work).

(a) the pipeline's default student (`small-cnn`, `edgekd distill` with defaults: soft:0.7 + ce:0.3,
    T=4, 30 epochs, 3 seeds) against the student the search recommends, distilled the same way
    (3 seeds, same epochs, the same training loop). Test accuracy mean ± std over the seeds; p50/p90
    of both ONNX models timed interleaved over `--rounds` rounds (median), so that both see the
    same machine load. Goal: at least as accurate and no slower.
(b) the search's total wall time (teacher loaded, not trained: it is shared) against training
    every candidate the search timed fully (distilled for `--epochs`, seed 0, as the search's
    finalists are), measured here, not estimated. Draws the predictor rejected untimed cost one
    forward pass each and are not counted. Goal: ≤ 0.35×. Also reported: against the candidates
    within budget only, and the pick's rank among them when every one is trained fully (the
    regret of successive halving).
(c) the latency predictor's Spearman ρ (leave-one-out over the timed candidates; MACs alone too).

    .venv/bin/python benchmarks/bench_select_student.py [--trials 12] [--seed 0] [--margin 1.1]

Prints the searches and a summary table; writes benchmarks/results/select_student.json. About
6 minutes with one torch thread on a 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd import artifacts  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "select_student.json"


def time_models(paths: dict[str, Path], profile, *, rounds: int, min_seconds: float) -> dict[str, dict]:
    """p50/p90 of each model, interleaved round by round; the median over rounds."""
    from edgekd.bench.runners import agent_config
    from edgekd.search.timing import run_isolated

    got: dict[str, list[dict]] = {k: [] for k in paths}
    for _ in range(rounds):
        for name, path in paths.items():
            r = run_isolated("local", path, agent_config(profile, min_seconds=min_seconds, batches=()))
            got[name].append(r["latency_ms"])
    return {k: {"p50": float(np.median([x["p50"] for x in v])), "p90": float(np.median([x["p90"] for x in v])),
                "p90_rounds": [x["p90"] for x in v]} for k, v in got.items()}


def export(model, path: Path, bundle, profile) -> Path:
    from edgekd.deploy.export import export_onnx

    return export_onnx(model, path, input_shape=bundle.input_shape, opset=profile.opset)


def stats(xs: list[float]) -> dict:
    from edgekd.train.distill import mean_std

    return {**mean_std(xs), "values": list(xs)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--margin", type=float, default=1.1, help="latency budget = margin × default's p90")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--seeds", type=int, default=3, help="seeds for the accuracy comparison (a)")
    ap.add_argument("--teacher-epochs", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds for (a)")
    args = ap.parse_args()

    import onnxruntime
    import torch

    import edgekd
    from edgekd.data import load_data
    from edgekd.models.checkpoints import load_student
    from edgekd.search.halving import Trainer
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import labeled_subset
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import obtain_teachers, teacher_source

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="bench-select-"))
    os.chdir(work)  # `artifacts/latest` of the runs below lands in the scratch folder
    profile, bundle = edgekd.load_target(name="cpu-arm"), load_data("digits")
    t_all = time.perf_counter()

    # the shared teacher, with the weights `edgekd distill` gives it (its seed is explicit)
    t0 = time.perf_counter()
    teacher = obtain_teachers(DistillConfig(teacher="cnn", teacher_epochs=args.teacher_epochs, progress=False),
                              bundle, work / "teacher")[0][0]
    teacher_pt = str(work / "teacher" / "teacher.pt")
    t_teacher = time.perf_counter() - t0
    print(f"teacher trained in {t_teacher:.0f} s", flush=True)

    # the default student, exactly as `edgekd distill` trains it
    default = edgekd.distill(teacher=teacher_pt, student="small-cnn", epochs=args.epochs, seeds=args.seeds,
                             run=work / "default", progress=False).to_json()
    default_onnx = export(load_student(work / "default")[0], work / "default.onnx", bundle, profile)
    base = time_models({"default": default_onnx}, profile, rounds=3, min_seconds=1.0)["default"]
    print(f"default small-cnn: test {default['accuracy']['student']['mean']:.4f}, p90 {base['p90']:.4f} ms", flush=True)

    # one training loop for every candidate from here on (the one the search and distill use)
    cfg = DistillConfig(teacher=teacher_pt, epochs=args.epochs, seeds=args.seeds, progress=False)
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature)
    mask, labeled_only = labeled_subset(cfg, bundle)
    trainer = Trainer(cfg, bundle, profile, teacher_source(cfg, bundle, [teacher], objective), mask, labeled_only)
    full_cache: dict[str, dict] = {}
    common = dict(args=args, work=work, bundle=bundle, profile=profile, teacher_pt=teacher_pt, trainer=trainer,
                  default=default, default_onnx=default_onnx, full_cache=full_cache)
    scenarios = {
        "tight": scenario(name="tight", budget_ms=args.margin * base["p90"], **common),
        "profile": scenario(name="profile", budget_ms=None, **common),
    }
    result = {
        "command": "python benchmarks/bench_select_student.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "onnxruntime": onnxruntime.__version__, "runner": "local"},
        "settings": vars(args),
        "teacher": {"arch": "cnn", "epochs": args.teacher_epochs, "seconds": t_teacher,
                    "test_accuracy": default["accuracy"]["teacher"]},
        "default": {"name": "small-cnn", "test": stats([r["student"] for r in default["per_seed"]]),
                    "student_alone": stats([r["student_alone"] for r in default["per_seed"]]),
                    "p90_when_budget_set": base["p90"], "params": default["student"]["params"]},
        "scenarios": scenarios,
        "wall_seconds": time.perf_counter() - t_all,
    }
    artifacts.write_json(RESULTS, result)
    report(result)


def scenario(*, name: str, budget_ms: float | None, args, work: Path, bundle, profile, teacher_pt: str, trainer,
             default: dict, default_onnx: Path, full_cache: dict) -> dict:
    """One search, the pick against the default (a), its cost against full training (b), ρ (c)."""
    import edgekd
    from edgekd.models.checkpoints import load_student
    from edgekd.search.pareto import select_table
    from edgekd.search.space import Candidate
    from edgekd.tables import console

    t0 = time.perf_counter()
    res = edgekd.select_student(target="cpu-arm", teacher=teacher_pt, budget_ms=budget_ms, trials=args.trials,
                                seed=args.seed, epochs=args.epochs, seeds=1, run=work / f"search-{name}",
                                progress=False).to_json()
    t_search = time.perf_counter() - t0
    console.print(select_table(res))
    cands = {c["id"]: Candidate(id=c["id"], name=c["name"], net_kwargs=c["net_kwargs"]) for c in res["candidates"]}

    # (a) the pick over the same seeds, and both latencies interleaved
    rec = res["recommended"]
    if rec["name"] == "small-cnn":
        picked = {"student": [r["student"] for r in default["per_seed"]],
                  "student_alone": [r["student_alone"] for r in default["per_seed"]]}
    else:
        c = cands[rec["id"]]
        picked = {"student": [trainer.distil(c, epochs=args.epochs, seed=s)[1]["test"] for s in range(args.seeds)],
                  "student_alone": [trainer.alone(c, epochs=args.epochs, seed=s)[1]["test"] for s in range(args.seeds)]}
    picked_onnx = export(load_student(Path(res["run"]))[0], work / f"picked-{name}.onnx", bundle, profile)
    lat = time_models({"default": default_onnx, "picked": picked_onnx}, profile, rounds=args.rounds, min_seconds=1.0)
    acc_default, acc_picked = stats([r["student"] for r in default["per_seed"]]), stats(picked["student"])

    # (b) every candidate the search timed trained fully, measured (draws the predictor rejected
    # cost the search one forward pass each, so they are not counted as candidates here)
    full = {}
    for c in res["candidates"]:
        if not c["measured"]:
            continue
        if c["name"] not in full_cache:
            _, r = trainer.distil(cands[c["id"]], epochs=args.epochs, seed=0)
            full_cache[c["name"]] = {"val": r["val"], "test": r["test"], "seconds": r["seconds"]}
            print(f"  full {c['name']:30s} {r['seconds']:6.1f} s  val {r['val']:.4f}  test {r['test']:.4f}", flush=True)
        full[c["id"]] = {"name": c["name"], "status": c["status"], **full_cache[c["name"]]}
    t_timed = sum(f["seconds"] for f in full.values())
    within = [i for i, f in full.items() if f["status"] in ("trained", "finalist")]
    t_within = sum(full[i]["seconds"] for i in within)
    by_val = sorted(within, key=lambda i: (-full[i]["val"], i))
    best = by_val[0]
    p = res["predictor"]
    return {
        "budget_ms": res["budget"]["latency_ms"], "budget_source": res["budget"]["latency_source"],
        "a": {"default": {"test": acc_default, "latency_ms": lat["default"]},
              "picked": {"name": rec["name"], "net_kwargs": rec["net_kwargs"], "params": rec["params"],
                         "test": acc_picked, "student_alone": stats(picked["student_alone"]),
                         "latency_ms": lat["picked"]},
              "same_architecture": rec["name"] == "small-cnn",
              "latency_p90_ratio": lat["picked"]["p90"] / lat["default"]["p90"],
              "at_least_as_accurate": acc_picked["mean"] >= acc_default["mean"],
              "no_slower_p90": lat["picked"]["p90"] <= lat["default"]["p90"],
              "no_slower_p50": lat["picked"]["p50"] <= lat["default"]["p50"]},
        "b": {"search_seconds": t_search, "search_breakdown": res["seconds"],
              "n_drawn": len(res["candidates"]), "n_timed": len(full), "n_within_budget": len(within),
              "full_training_timed_seconds": t_timed, "ratio": t_search / t_timed,
              "full_training_within_budget_seconds": t_within, "ratio_within_budget": t_search / t_within,
              "goal": "ratio <= 0.35", "met": t_search / t_timed <= 0.35,
              "halving": res["halving"], "full_training": full,
              "pick_rank_among_within_budget_by_full_training_val": by_val.index(rec["id"]) + 1,
              "best_within_budget_by_full_training_val": full[best],
              "regret_test_vs_best": full[best]["test"] - full[rec["id"]]["test"]},
        "c": {"spearman_rho_loo": p["spearman_rho"], "spearman_rho_macs": p["spearman_rho_macs"],
              "spearman_rho_online": p["spearman_rho_online"], "measured": p["measured"],
              "timings_saved": p["timings_saved"], "safety_final": p["safety_final"],
              "coefficients": p["coefficients"]},
        "search": {k: res[k] for k in ("pareto", "recommended", "teacher_capacity", "notes")},
    }


def report(r: dict) -> None:
    from rich.table import Table

    from edgekd.tables import console

    def acc(x: dict) -> str:
        return f"{100 * x['mean']:.2f} ± {100 * x['std']:.2f}%"

    def rho(x: float | None) -> str:
        return "—" if x is None else f"{x:.3f}"

    s = r["settings"]
    t = Table(title=f"select-student on digits for cpu-arm (local runner): {s['trials']} timed candidates, "
                    f"seed {s['seed']}, {s['epochs']} epochs; accuracy over {s['seeds']} seeds")
    for col in ("budget", "student", "test acc.", "alone", "p50 ms", "p90 ms", "params"):
        t.add_column(col, justify="left" if col in ("budget", "student") else "right")
    d = r["default"]
    lines = []
    for name, sc in r["scenarios"].items():
        a, b, c = sc["a"], sc["b"], sc["c"]
        label = f"{name}: {sc['budget_ms']:.4g} ms"
        t.add_row(label, "default small-cnn", acc(d["test"]), acc(d["student_alone"]),
                  f"{a['default']['latency_ms']['p50']:.4f}", f"{a['default']['latency_ms']['p90']:.4f}",
                  f"{d['params']:,}")
        x = a["picked"]
        t.add_row("", f"picked {x['name']}", acc(x["test"]), acc(x["student_alone"]), f"{x['latency_ms']['p50']:.4f}",
                  f"{x['latency_ms']['p90']:.4f}", f"{x['params']:,}", end_section=True)
        lines += [
            f"{name}: (a) at least as accurate: {'yes' if a['at_least_as_accurate'] else 'NO'}; no slower: p90 "
            f"{'yes' if a['no_slower_p90'] else 'NO'}, p50 {'yes' if a['no_slower_p50'] else 'NO'} "
            f"(picked/default p90 {a['latency_p90_ratio']:.2f}"
            + (", same architecture: the difference is timing noise)" if a["same_architecture"] else ")"),
            f"{name}: (b) search {b['search_seconds']:.0f} s vs training every timed candidate ({b['n_timed']}; "
            f"{b['n_drawn']} drawn) fully {b['full_training_timed_seconds']:.0f} s = {b['ratio']:.2f}× (goal ≤ 0.35: "
            f"{'met' if b['met'] else 'NOT met'}); vs the {b['n_within_budget']} within budget only "
            f"{b['ratio_within_budget']:.2f}×",
            f"{name}:     pick ranks {b['pick_rank_among_within_budget_by_full_training_val']} of "
            f"{b['n_within_budget']} within budget by full-training val (regret {100 * b['regret_test_vs_best']:.2f} "
            f"test points vs {b['best_within_budget_by_full_training_val']['name']})",
            f"{name}: (c) Spearman ρ {rho(c['spearman_rho_loo'])} (leave-one-out, {c['measured']} timed; MACs alone "
            f"{rho(c['spearman_rho_macs'])}); timings saved {c['timings_saved']}"]
    t.caption = "\n".join(lines + [str(RESULTS.relative_to(ROOT))])
    console.print(t)


if __name__ == "__main__":
    main()
