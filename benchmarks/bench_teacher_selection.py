"""Does a score computed before distillation pick the teacher that makes the best student?

A pool of digits teachers that differ in size and training length is built
once; each score of `edgekd.search.teacher` ranks them (GRACE read both ways,
the teacher's own val accuracy, the untrained student's top-1 agreement with
the teacher, and the mean KD-gradient norm as a diagnostic); then the default
student is distilled from every teacher (soft:0.7 + ce:0.3, T=4, 30 epochs,
3 seeds, exactly as `edgekd distill` trains its distilled student) and each
ranking is compared with the student test accuracy actually reached:
Spearman ρ over the pool, and the regret of taking the score's top teacher
(best student accuracy in the pool minus the accuracy reached from the pick).

    .venv/bin/python benchmarks/bench_teacher_selection.py [--fractions 1.0 0.1] [--warmups 0 50 200]

Prints a table per labeled fraction and writes benchmarks/results/teacher_selection.json.
About 5 minutes with one thread on a 2-core machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgekd import artifacts, defaults  # noqa: E402

# (registry name, teacher epochs): large and small, trained long and briefly.
POOL = [("cnn", 20), ("cnn", 2), ("cnn-small", 20), ("cnn-small", 3), ("resnet18", 3), ("mobilenet_v3_small", 5)]
RESULTS = ROOT / "benchmarks" / "results" / "teacher_selection.json"


def spearman(a: list[float], b: list[float]) -> float | None:
    """Spearman's ρ (average ranks for ties); None when either side is constant."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    try:
        from scipy.stats import spearmanr

        return float(spearmanr(a, b).statistic)
    except ImportError:
        def ranks(x):
            order = np.argsort(x, kind="stable")
            r = np.empty(len(x))
            r[order] = np.arange(1, len(x) + 1)
            for v in np.unique(x):  # ties share their mean rank
                r[x == v] = r[x == v].mean()
            return r
        return float(np.corrcoef(ranks(a), ranks(b))[0, 1])


def build_pool(cfg, bundle, target, folder: Path) -> list[dict]:
    """Train every POOL teacher as `edgekd distill` would and save it as a teacher .pt."""
    from edgekd.train.datasets import accuracy
    from edgekd.train.distill import make_student
    from edgekd.train.teacher import obtain_teacher

    pool = []
    for arch, epochs in POOL:
        label = f"{arch}@{epochs}ep"
        t0 = time.perf_counter()
        make_student(cfg, bundle, target, 0)  # the RNG state distill builds its teacher in
        teacher, _ = obtain_teacher(replace(cfg, teacher=arch, teacher_epochs=epochs), bundle, folder / label)
        pool.append({"label": label, "arch": arch, "epochs": epochs, "path": str(folder / label / "teacher.pt"),
                     "params": sum(p.numel() for p in teacher.parameters()),
                     "teacher_test_accuracy": accuracy(teacher, bundle.test),
                     "train_seconds": time.perf_counter() - t0, "_model": teacher})
        print(f"  teacher {label:24s} test acc {pool[-1]['teacher_test_accuracy']:.3f} "
              f"({pool[-1]['train_seconds']:.0f}s)", flush=True)
    return pool


def distil_from(teacher, cfg, bundle, target, *, fraction: float, seeds: int) -> list[float]:
    """Student test accuracy per seed, trained as distill.train_students trains the distilled student
    (its teacher source, labeled mask, seeds and Phase), minus the control and the checkpoints."""
    from edgekd.train.datasets import Indexed, accuracy
    from edgekd.train.distill import labeled_subset, make_student
    from edgekd.train.loop import Phase, fit
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import teacher_source

    cfg = replace(cfg, labeled_fraction=fraction)
    mask, _ = labeled_subset(cfg, bundle)
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature, **cfg.loss_options)
    source = teacher_source(cfg, bundle, [teacher], objective)
    accs = []
    for seed in range(seeds):
        ph = Phase(f"kd/seed{seed}", make_student(cfg, bundle, target, seed), objective,
                   Indexed(bundle.train, mask), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size, source=source)
        accs.append(accuracy(fit(ph, progress=False), bundle.test))
    return accs


def student_alone(cfg, bundle, target, *, fraction: float, seeds: int) -> list[float]:
    """The control, as distill.train_control trains it: CE on the labeled share, same steps per epoch."""
    from edgekd.train.datasets import Indexed, accuracy
    from edgekd.train.distill import labeled_subset, make_student
    from edgekd.train.loop import Phase, fit
    from edgekd.train.losses import build_objective

    _, labeled_only = labeled_subset(replace(cfg, labeled_fraction=fraction), bundle)
    accs = []
    for seed in range(seeds):
        ph = Phase(f"alone/seed{seed}", make_student(cfg, bundle, target, seed), build_objective(["ce"]),
                   Indexed(labeled_only), bundle.val, cfg.epochs, seed, cfg.lr, cfg.batch_size)
        accs.append(accuracy(fit(ph, progress=False), bundle.test))
    return accs


PREDICTORS = {  # name -> (value taken from a select_teachers row, sign: +1 = higher ranks first)
    "GRACE, higher first": (lambda r: r["grace"]["score"], +1),
    "GRACE, lower first (paper)": (lambda r: r["grace"]["score"], -1),
    "teacher val accuracy": (lambda r: r["val_accuracy"], +1),
    "agreement at init": (lambda r: r["agreement_at_init"], +1),
    "mean KD-gradient norm": (lambda r: r["grace"]["mean_grad_norm"], +1),
}


def evaluate(rows: list[dict], student_acc: dict[str, float]) -> dict[str, dict]:
    """ρ between each predictor and the student accuracy, and the regret of its top pick."""
    accs = [student_acc[r["teacher"]] for r in rows]
    best = max(accs)
    out = {}
    for name, (value, sign) in PREDICTORS.items():
        vals = [sign * value(r) for r in rows]
        pick = rows[int(np.argmax(vals))]["teacher"]
        out[name] = {"spearman": spearman(vals, accs), "pick": pick, "regret": best - student_acc[pick]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.1], help="labeled fractions to test")
    ap.add_argument("--warmups", type=int, nargs="+", default=[0, 50, 200], help="GRACE warm-up steps to test")
    ap.add_argument("--seeds", type=int, default=defaults.SEEDS)
    ap.add_argument("--epochs", type=int, default=defaults.EPOCHS)
    ap.add_argument("--n", type=int, default=256, help="examples GRACE takes gradients on")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--quick", action="store_true", help="smoke test: 1-epoch teachers, 2-epoch students, 1 seed")
    args = ap.parse_args()
    if args.quick:
        global POOL
        POOL = [(arch, max(1, epochs // 10)) for arch, epochs in POOL]
        args.epochs, args.seeds = 2, 1

    import torch

    import edgekd
    from edgekd.data import load_data
    from edgekd.deploy.targets import load_target
    from edgekd.search.teacher import HIGHER_IS_BETTER, WARMUP_STEPS
    from edgekd.train.config import DistillConfig

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cfg = DistillConfig(epochs=args.epochs, seeds=args.seeds, progress=False)
    bundle, target = load_data(cfg.data), load_target(cfg.target)
    report: dict = {"student": cfg.student, "methods": list(cfg.methods), "temperature": cfg.temperature,
                    "epochs": cfg.epochs, "seeds": cfg.seeds, "n": args.n, "threads": args.threads,
                    "torch": torch.__version__, "library_defaults": {"higher_is_better": HIGHER_IS_BETTER,
                                                                     "warmup_steps": WARMUP_STEPS},
                    "fractions": {}}
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-teachers-") as tmp:
        print("building the teacher pool", flush=True)
        pool = build_pool(cfg, bundle, target, Path(tmp))
        report["pool"] = [{k: v for k, v in p.items() if not k.startswith("_")} for p in pool]
        by_path = {p["path"]: p for p in pool}
        for fraction in args.fractions:
            print(f"\nlabeled fraction {fraction}", flush=True)
            t0 = time.perf_counter()
            alone = student_alone(cfg, bundle, target, fraction=fraction, seeds=cfg.seeds)
            kd = {p["path"]: distil_from(p["_model"], cfg, bundle, target, fraction=fraction, seeds=cfg.seeds)
                  for p in pool}
            distil_seconds = time.perf_counter() - t0
            student_acc = {path: float(np.mean(a)) for path, a in kd.items()}
            per_warmup = {}
            for warmup in args.warmups:
                t1 = time.perf_counter()
                sel = edgekd.select_teacher(student=cfg.student, teachers=list(by_path), temperature=cfg.temperature,
                                            n=args.n, warmup_steps=warmup, teacher_epochs=1,
                                            labeled_fraction=fraction, progress=False).to_json()
                rows = sel["teachers"]
                per_warmup[str(warmup)] = {
                    "seconds": time.perf_counter() - t1,
                    "scores": {by_path[r["teacher"]]["label"]: {
                        "grace": r["grace"]["score"], "grace_std": r["grace"]["std"],
                        "mean_grad_norm": r["grace"]["mean_grad_norm"], "val_accuracy": r["val_accuracy"],
                        "agreement_at_init": r["agreement_at_init"]} for r in rows},
                    "predictors": {name: {**e, "pick": by_path[e["pick"]]["label"]}
                                   for name, e in evaluate(rows, student_acc).items()},
                }
            report["fractions"][str(fraction)] = {
                "student_alone": {"mean": float(np.mean(alone)), "per_seed": alone},
                "students": {by_path[p]["label"]: {"mean": student_acc[p], "per_seed": a} for p, a in kd.items()},
                "distil_seconds": distil_seconds, "warmups": per_warmup,
            }
            print_fraction(fraction, report["fractions"][str(fraction)], pool)
    report["wall_seconds"] = time.perf_counter() - t_start
    artifacts.write_json(args.out, report)
    print(f"\nwall {report['wall_seconds']:.0f}s; wrote {args.out}")


def print_fraction(fraction: float, res: dict, pool: list[dict]) -> None:
    warmups = list(res["warmups"])
    print(f"student alone: {res['student_alone']['mean']:.4f}")
    head = f"{'teacher':24s} {'params':>9s} {'t.val':>6s} {'agree':>6s} " + \
        " ".join(f"{'GRACE w' + w:>10s}" for w in warmups) + f" {'student':>8s}"
    print(head)
    first = res["warmups"][warmups[0]]["scores"]
    for p in pool:
        s = first[p["label"]]
        graces = " ".join(f"{res['warmups'][w]['scores'][p['label']]['grace']:10.2f}" for w in warmups)
        print(f"{p['label']:24s} {p['params']:9d} {s['val_accuracy']:6.3f} {s['agreement_at_init']:6.3f} "
              f"{graces} {res['students'][p['label']]['mean']:8.4f}")
    print(f"\n{'predictor':28s} " + " ".join(f"{'rho w' + w:>8s} {'regret':>7s}" for w in warmups))
    for name in PREDICTORS:
        cells = []
        for w in warmups:
            e = res["warmups"][w]["predictors"][name]
            rho = "n/a" if e["spearman"] is None else f"{e['spearman']:+.2f}"
            cells.append(f"{rho:>8s} {e['regret']:7.4f}")
        print(f"{name:28s} " + " ".join(cells))


if __name__ == "__main__":
    main()
