"""edgekd.search (student, space, predictor, halving, pareto): search space from the target's ops, MACs by hand,
the latency predictor, successive halving, the budget failure, reproducibility and the run that export continues from.

Timing goes through a fake runner (latency from the exported graph) except in one test,
so the searches are deterministic and fast; the real local runner is checked on its own.
"""

from __future__ import annotations

import dataclasses
import json
import resource
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from edgekd import artifacts
from edgekd.deploy.audit import audit_model
from edgekd.deploy.targets import load_target
from edgekd.errors import BadInput, CheckFailed
from edgekd.models import forward_macs, onnx_proto, student_net
from edgekd.search import halving, pareto, predictor, timing
from edgekd.search import space as sspace
from edgekd.search import student as ss

from helpers.timing import fake_latency

torch.set_num_threads(1)

TINY = dict(teacher="cnn-small", teacher_epochs=1, epochs=2, trials=5, progress=False, include=())


@pytest.fixture
def fake_runner(monkeypatch):
    calls = []

    def run(runner: str, model: Path, config: dict, target: str | None = None) -> dict:
        calls.append(model.name)
        lat = fake_latency(model)
        return {"latency_ms": {"p50": lat, "p90": lat}, "peak_rss_mb": 50.0,
                "model_bytes": model.stat().st_size, "provider": "CPUExecutionProvider", "threads": 1}

    monkeypatch.setattr(timing, "run_isolated", run)
    return calls


@pytest.fixture(scope="module")
def digits():
    from edgekd.data import load_data

    return load_data("digits")


# ---------------------------------------------------------------- search space
@pytest.mark.parametrize("target", ["cpu-arm", "android-nnapi"])
def test_every_candidate_of_a_small_space_passes_the_audit(target, monkeypatch):
    monkeypatch.setattr(sspace, "STAGE_WIDTHS", ((4, 8),))
    monkeypatch.setattr(sspace, "WIDTH_MULTS", (1.0,))
    monkeypatch.setattr(sspace, "DEPTHS", (2,))  # depth 2: the inverted residual's Add is exercised
    profile = load_target(target)
    drawn, notes = sspace.sample_candidates(profile.ops_allow, trials=100, seed=0, include=())
    space = sspace.search_space(profile.ops_allow)
    assert len(drawn) == len(space["block"]) * len(space["act"]) * len(sspace.KERNELS) >= 12
    assert notes and "only" in notes[0]
    assert set(space["block"]) == {"conv", "dw", "ir"}
    for name, kw in drawn:
        model = student_net(in_channels=1, num_classes=10, target_ops=profile.ops_allow, **kw)
        report = audit_model(onnx_proto(model, (1, 8, 8), opset=profile.opset), profile)
        assert report.passed, (target, name, report.format_lines())


def test_the_space_keeps_only_blocks_and_activations_the_target_runs():
    profile = load_target("cpu-arm")
    no_add = frozenset(profile.ops_allow - {"Add"})
    space = sspace.search_space(no_add)
    assert "ir" not in space["block"] and {"conv", "dw"} <= set(space["block"])
    assert "hardswish" not in space["act"]  # cpu-arm has no HardSigmoid
    drawn, _ = sspace.sample_candidates(no_add, trials=30, seed=1)
    assert drawn and all(kw["block"] != "ir" and kw["act"] != "hardswish" for _, kw in drawn)
    with pytest.raises(BadInput, match="no student block or activation"):
        sspace.sample_candidates(frozenset({"Gemm"}), trials=3, seed=0)


def test_sampling_is_reproducible_distinct_and_starts_with_the_default():
    ops = load_target("cpu-arm").ops_allow
    a, _ = sspace.sample_candidates(ops, trials=10, seed=7)
    b, _ = sspace.sample_candidates(ops, trials=10, seed=7)
    c, _ = sspace.sample_candidates(ops, trials=10, seed=8)
    assert a == b and [n for n, _ in a] != [n for n, _ in c]
    assert a[0][0] == "small-cnn" and sspace.channels(a[0][1]) == [16, 32]
    assert len({sspace.candidate_name(kw) for _, kw in a}) == 10


# ---------------------------------------------------------------- cost counts
def test_macs_of_a_hand_computed_model():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),             # 4·8·8 outputs × 1·3·3        = 2304
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, groups=4),   # depthwise: 256 × 1·3·3       = 2304
        nn.Conv2d(4, 8, 1),                        # pointwise: 8·8·8 × 4         = 2048
        nn.Conv2d(8, 2, 3, stride=2, padding=1),   # 2·4·4 outputs × 8·3·3        = 2304
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(2, 10),                          # 10 × 2                       = 20
    )
    cost = predictor.complexity(model, (1, 8, 8))
    assert cost["macs"] == 2304 + 2304 + 2048 + 2304 + 20 == forward_macs(model, (1, 8, 8))
    assert cost["layers"] == 5
    assert cost["nodes"] == 8
    assert cost["params"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("kw", [dict(widths=(8, 16), block="ir", depth=2, act="hardswish"),
                                dict(widths=(8, 16, 32), block="dw", kernel=5),
                                dict(widths=(16, 32), block="conv", act="relu6")])
def test_node_estimate_is_the_graph_the_runtime_sees(kw):
    model = student_net(in_channels=1, num_classes=10, **kw)
    report = audit_model(onnx_proto(model, (1, 8, 8)), load_target("cpu-arm"))
    assert predictor.complexity(model, (1, 8, 8))["nodes"] == report.n_nodes


# ---------------------------------------------------------------- predictor
def test_predictor_recovers_a_non_negative_cost_model_and_ranks_out_of_sample():
    rng = np.random.default_rng(0)
    costs = [{"macs": int(m), "params": int(p), "nodes": int(n)}
             for m, p, n in zip(rng.integers(1e4, 1e6, 12), rng.integers(500, 5e4, 12), rng.integers(8, 50, 12))]
    lat = [0.01 + 2e-8 * c["macs"] + 0.001 * c["nodes"] for c in costs]
    fit = predictor.LatencyPredictor().fit(costs[:8], lat[:8])
    np.testing.assert_allclose(fit.predict(costs[8:]), lat[8:], rtol=1e-6)
    coef = fit.coefficients()
    assert all(v >= 0 for v in coef.values()) and coef["nodes"] == pytest.approx(0.001, rel=1e-6)
    assert predictor.spearman(predictor.loo_predictions(costs, lat), lat) == pytest.approx(1.0)


def test_spearman_by_hand():
    assert predictor.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert predictor.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (1.5, 1.5, 3) vs (1, 2, 3) → ρ = 0.866
    assert predictor.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(np.sqrt(3) / 2)
    assert predictor.spearman([1, 2], [1, 2]) is None and predictor.spearman([1, 1, 1], [1, 2, 3]) is None


def fake_latency_of(c, bundle, profile, folder: Path) -> float:
    model = sspace.build(c, bundle, profile.ops_allow)
    onnx_bytes = onnx_proto(model, (1, 8, 8)).SerializeToString()
    return fake_latency(artifacts.write_bytes(folder / f"{c.name}.onnx", onnx_bytes))


def test_safety_factor_follows_the_predictors_over_prediction():
    costs = [{"macs": 1000 * i, "params": 10 * i, "nodes": 10 + i} for i in range(1, 9)]
    exact = [sspace.Candidate(id=i, name=str(i), net_kwargs={}, cost=c,
                          measured={"latency_p90_ms": 0.01 + 0.001 * c["nodes"]}) for i, c in enumerate(costs)]
    assert predictor.safety_factor(exact) == pytest.approx(predictor.MIN_SAFETY)  # a perfect predictor: the floor
    noisy = [dataclasses.replace(c, measured={"latency_p90_ms": c.p90 * (3.0 if i % 2 else 0.3)})
             for i, c in enumerate(exact)]
    assert predictor.safety_factor(noisy) == pytest.approx(predictor.SAFETY)  # a poor one: the ceiling


def test_hopeless_draws_are_skipped_untimed_and_replaced(fake_runner, digits, tmp_path):
    profile = load_target("cpu-arm")
    # What each of the first draws would measure, to set a budget that about a third of them meet.
    first, _ = sspace.sample_candidates(profile.ops_allow, trials=12, seed=3)
    true = []
    for i, (_, kw) in enumerate(first):
        model = student_net(in_channels=1, num_classes=10, target_ops=profile.ops_allow, **kw)
        onnx_bytes = onnx_proto(model, (1, 8, 8)).SerializeToString()
        true.append(fake_latency(artifacts.write_bytes(tmp_path / f"{i}.onnx", onnx_bytes)))
    budget = float(np.quantile(true, 0.3))
    stream = sspace.candidate_stream(profile.ops_allow, seed=3)
    cands, _, report = ss.search(stream, digits, profile, trials=8, runner="local", budget_ms=budget,
                                 min_seconds=0, progress=False)
    timed = [c for c in cands if c.measured]
    skipped = [c for c in cands if c.status == "skipped"]
    near = sum(budget < c.p90 <= ss.RETIME_BAND * budget for c in timed)
    assert len(timed) == report["measured"] == 8 and len(fake_runner) == 8 + near  # near misses timed twice
    assert report["timings_saved"] == len(skipped) > 0 and len(cands) == 8 + len(skipped)
    assert all(c.measured is None and c.predicted_ms > predictor.MIN_SAFETY * budget for c in skipped)
    assert all(fake_latency_of(c, digits, profile, tmp_path) > budget for c in skipped)  # truly hopeless
    assert all(c.status == ("over budget" if c.p90 > budget else "timed") for c in timed)
    sampled = sspace.sample_candidates(profile.ops_allow, trials=len(cands), seed=3)[0]
    assert [c.name for c in cands] == [n for n, _ in sampled]
    assert report["spearman_rho"] is not None and report["spearman_rho"] > 0.5


def test_a_near_miss_is_timed_again_and_a_far_miss_is_not(monkeypatch, digits):
    budget = 1.0
    calls: dict[str, int] = {}
    # candidate 0 measures 1.2 then 0.9 × budget (a burst of load, then the truth); candidate 1 always 2 ×
    plan = {"candidate0.onnx": [1.2, 0.9], "candidate1.onnx": [2.0, 2.0]}

    def run(runner, model, config, target=None):
        k = calls[model.name] = calls.get(model.name, 0) + 1
        lat = plan[model.name][k - 1] * budget
        return {"latency_ms": {"p50": lat, "p90": lat}, "peak_rss_mb": 50.0, "model_bytes": 1000,
                "provider": "CPUExecutionProvider", "threads": 1}

    monkeypatch.setattr(timing, "run_isolated", run)
    stream = sspace.candidate_stream(load_target("cpu-arm").ops_allow, seed=0)
    cands, _, _ = ss.search(stream, digits, load_target("cpu-arm"), trials=2, runner="local", budget_ms=budget,
                            min_seconds=0, progress=False)
    assert calls == {"candidate0.onnx": 2, "candidate1.onnx": 1}
    assert cands[0].status == "timed" and cands[0].measured["p90_runs"] == [1.2, 0.9] and cands[0].p90 == 0.9
    assert cands[1].status == "over budget" and "latency p90 2 ms > 1 ms" in cands[1].reason


def test_a_candidate_the_audit_refuses_is_never_timed(monkeypatch, digits, fake_runner):
    from edgekd.deploy import audit as models  # where search/student.py finds check_student_ops

    real = models.check_student_ops

    def audit(model, *, input_shape, target):
        if len(list(model.features)) > 4:  # refuse every candidate deeper than the default (4 layers)
            raise BadInput("student refused for target cpu-arm: module 'features.3' needs Foo (not in ops.allow)")
        return real(model, input_shape=input_shape, target=target)

    monkeypatch.setattr(models, "check_student_ops", audit)
    profile = load_target("cpu-arm")
    cands, _, _ = ss.search(sspace.candidate_stream(profile.ops_allow, seed=0), digits, profile, trials=3,
                            runner="local", budget_ms=None, min_seconds=0, progress=False)
    refused = [c for c in cands if c.status == "refused"]
    assert refused and all("needs Foo" in c.reason and c.measured is None for c in refused)
    assert len(fake_runner) == sum(c.measured is not None for c in cands) == 3
    assert all(c.ops for c in cands if c.measured)


# ---------------------------------------------------------------- halving and the front
def test_rung_epochs():
    assert halving.rung_epochs(30, 5) == [5, 15, 30]
    assert halving.rung_epochs(2, 1) == [1, 2]
    assert halving.rung_epochs(6, 6) == [6]


def test_pareto_front_by_hand():
    pts = [{"acc": 0.9, "lat": 1.0, "size": 5}, {"acc": 0.95, "lat": 2.0, "size": 1},
           {"acc": 0.85, "lat": 1.5, "size": 9}, {"acc": 0.95, "lat": 3.0, "size": 1}]
    assert pareto.pareto(pts, maximize="acc", minimize=("lat",)) == [0, 1]
    assert pareto.pareto(pts, maximize="acc", minimize=("lat", "size")) == [0, 1]
    assert pareto.pareto(pts, maximize="acc", minimize=("size",)) == [1, 3]  # equals do not dominate


def test_a_candidate_distils_exactly_as_distill_trains_the_registry_student(tmp_path, digits):
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import labeled_subset, train_students
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import obtain_teachers, teacher_source

    profile = load_target("cpu-arm")
    cfg = DistillConfig(teacher="cnn-small", teacher_epochs=1, epochs=1, seeds=1, progress=False)
    teacher = obtain_teachers(cfg, digits, tmp_path)[0][0]
    objective = build_objective(list(cfg.methods), temperature=cfg.temperature)
    source = teacher_source(cfg, digits, [teacher], objective)
    row = train_students(cfg, digits, profile, teacher, tmp_path, objective, source=source)[0]
    mask, labeled_only = labeled_subset(cfg, digits)
    trainer = halving.Trainer(cfg, digits, profile, source, mask, labeled_only)
    cand = sspace.Candidate(id=0, name="small-cnn", net_kwargs=sspace.registry_kwargs("small-cnn"))
    _, kd = trainer.distil(cand, epochs=1, seed=0)
    _, alone = trainer.alone(cand, epochs=1, seed=0)
    assert kd["val"] == row["student_val"] and kd["test"] == row["student"]
    assert alone["test"] == row["student_alone"]


# ---------------------------------------------------------------- the stage
def test_no_candidate_within_budget_is_check_failed_naming_the_smallest_latency(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckFailed) as e:
        ss.select_student(target="cpu-arm", budget_ms=1e-4, trials=4, seed=0, run=tmp_path / "run",
                          **{k: v for k, v in TINY.items() if k != "trials"})
    msg = str(e.value)
    assert "no candidate meets the budget" in msg and "latency budget 0.0001 ms (budget_ms)" in msg
    assert e.value.exit_code == 1
    assert not (tmp_path / "run").exists() and not (tmp_path / "artifacts").exists()  # nothing trained


def test_check_failed_names_the_fastest_candidate_and_its_latency(tmp_path, monkeypatch, fake_runner):
    monkeypatch.chdir(tmp_path)
    seen: dict[str, float] = {}
    real_search = ss.search

    def spy(*a, **kw):
        cands, budget, report = real_search(*a, **kw)
        seen.update({c.name: c.p90 for c in cands if c.measured})
        return cands, budget, report

    monkeypatch.setattr(ss, "search", spy)
    with pytest.raises(CheckFailed) as e:
        ss.select_student(target="cpu-arm", budget_ms=1e-4, seed=0, **TINY)
    fastest = min(seen, key=seen.get)
    assert f"smallest latency found p90 {seen[fastest]:.4g} ms ({fastest})" in str(e.value)


@pytest.mark.parametrize("bad, match", [(dict(trials=0), "^trials 0"), (dict(budget_ms=-1.0), "^budget_ms -1"),
                                        (dict(short_epochs=5), "^short_epochs 5"), (dict(runner="nope"), "runner")])
def test_bad_arguments_are_bad_input_naming_the_parameter(bad, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(BadInput, match=match):  # the library names parameters; the CLI shows flags
        ss.select_student(target="cpu-arm", **{**TINY, **bad})


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """Two searches with the same seed (fake, deterministic timings), each in its own folder."""
    out = []
    for i in range(2):
        root = tmp_path_factory.mktemp(f"search{i}")
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            mp.setattr(timing, "run_isolated", lambda runner, model, config, target=None: {
                "latency_ms": {"p50": fake_latency(model), "p90": fake_latency(model)}, "peak_rss_mb": 50.0,
                "model_bytes": model.stat().st_size, "provider": "CPUExecutionProvider", "threads": 1})
            torch.set_num_threads(1)
            out.append((root, ss.select_student(target="cpu-arm", seed=3, run=root / "run", **TINY)))
    return out


def test_search_is_reproducible_with_a_seed(searched):
    (_, a), (_, b) = searched
    assert [c["name"] for c in a["candidates"]] == [c["name"] for c in b["candidates"]]
    assert [c.get("val_accuracy") for c in a["candidates"]] == [c.get("val_accuracy") for c in b["candidates"]]
    assert a["recommended"]["name"] == b["recommended"]["name"]
    assert a["halving"]["rungs"][0]["promoted"] == b["halving"]["rungs"][0]["promoted"]


def test_halving_gives_finalists_the_full_budget_and_picks_the_best(searched):
    _, r = searched[0]
    trained = [c for c in r["candidates"] if c["rungs"]]
    assert len(trained) == 5 and all(c["status"] in ("trained", "finalist") for c in trained)
    assert [x["epochs"] for x in r["halving"]["rungs"]] == [1, 2]
    finalists = [c for c in trained if c["status"] == "finalist"]
    assert {c["id"] for c in finalists} == set(r["halving"]["finalists"]) == set(r["halving"]["rungs"][0]["promoted"])
    assert len(finalists) == 2 and all(c["epochs"] == 2 for c in finalists)
    # promoted candidates continue from their first rung's weights: 1 more epoch, not 2 from scratch
    assert all(c["rungs"][-1]["continued_from"] == 1 for c in finalists)
    best = max(finalists, key=lambda c: (c["val_accuracy"], -c["measured"]["latency_p90_ms"]))
    assert r["recommended"]["id"] == best["id"]
    # the control is paid once, for the recommended student only
    assert [c["id"] for c in finalists if c["control"]] == [best["id"]] and best["control"]["epochs"] == 2
    assert r["recommended"]["id"] in r["pareto"]["latency"]
    assert r["teacher_capacity"] and all("kd_gain_test" in t for t in r["teacher_capacity"])


def test_the_run_has_what_export_and_bench_read(searched):
    root, r = searched[0]
    run = Path(r["run"])
    assert (root / "artifacts" / "latest").resolve() == run.resolve()
    saved = json.loads((run / pareto.RESULT_FILE).read_text())
    assert saved["recommended"] == r["recommended"]
    assert (run / pareto.PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["data"] == "digits" and "data_dir" in cfg and cfg["student"] == r["recommended"]["name"]
    d = json.loads((run / "distill.json").read_text())
    chosen = next(row for row in d["per_seed"] if row["seed"] == d["student"]["chosen_seed"])
    assert d["accuracy"]["teacher"] == r["teacher"]["accuracy"]
    assert chosen["student"] == r["recommended"]["test_accuracy"]
    assert chosen["student_alone"] == r["recommended"]["student_alone_test"]
    state = torch.load(run / "student.pt", weights_only=True)
    assert state["kind"] == "student" and state["net_kwargs"]["block"] == r["recommended"]["net_kwargs"]["block"]
    model = student_net(in_channels=state["in_channels"], num_classes=state["num_classes"],
                        target_ops=frozenset(state["target_ops"]), **state["net_kwargs"])
    model.load_state_dict(state["model"])
    assert (run / "teacher.pt").exists() and (run / "student_alone.pt").exists()


def test_the_teacher_is_the_one_distill_trains(searched, tmp_path, monkeypatch):
    from edgekd.train.config import DistillConfig
    from edgekd.train.distill import distill

    monkeypatch.chdir(tmp_path)
    distill(DistillConfig(teacher="cnn-small", teacher_epochs=1, epochs=1, seeds=1, run=tmp_path / "d", progress=False))
    ours = torch.load(Path(searched[0][1]["run"]) / "teacher.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "d" / "teacher.pt", weights_only=True)["model"]
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_the_saved_run_exports(searched):
    from edgekd.deploy.export import export_run

    _, r = searched[0]
    assert not r["recommended"]["name"].endswith("-cnn")  # a custom architecture, not a registry name
    manifest = export_run(target="cpu-arm", run=r["run"])
    assert manifest["deployable"] and manifest["ops"]["unsupported"] == []
    assert manifest["accuracy"]["student"] == r["recommended"]["test_accuracy"]
    assert manifest["accuracy"]["student_onnx"] == pytest.approx(r["recommended"]["test_accuracy"], abs=1e-9)


def test_the_local_runner_times_a_candidate_outside_this_process(tmp_path, digits):
    profile = load_target("cpu-arm")
    c = sspace.Candidate(id=0, name="small-cnn", net_kwargs=sspace.registry_kwargs("small-cnn"))
    m = ss.time_candidate(c, digits, profile, "local", tmp_path, min_seconds=0.01)
    assert 0 < m["latency_p50_ms"] <= m["latency_p90_ms"]
    assert m["model_bytes"] > 4 * 7514  # fp32 weights at least
    own_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # The agent's peak RSS is the runtime's, not this PyTorch process's (inherited over fork+exec).
    assert m["peak_rss_mb"] < own_mb
    assert not list(tmp_path.iterdir())  # the candidate's ONNX file is removed after timing


# ---------------------------------------------------------------- the data rule, and large inputs
def test_inputs_above_32_px_give_every_candidate_a_strided_stem():
    import itertools

    from edgekd.models import stem_stride_for

    ops = load_target("cpu-arm").ops_allow
    for size, stem in ((8, 1), (28, 1), (32, 1), (64, 4), (224, 16)):
        drawn = list(itertools.islice(
            sspace.candidate_stream(ops, seed=0, include=("small-cnn-s", "wide-cnn"), input_size=size), 12))
        assert drawn[0][1]["stem_stride"] == stem_stride_for(size)       # the registry student, resolved
        assert "stem_stride" not in drawn[1][1]                           # wide-cnn has no stem of its own
        grid = drawn[2:]
        assert all(kw.get("stem_stride", 1) == stem and name.endswith(f"-s{stem}") == (stem > 1)
                   for name, kw in grid)
        net = student_net(in_channels=1, num_classes=10, target_ops=ops, **grid[0][1])
        assert net.features[0](torch.zeros(1, 1, size, size)).shape[-1] == size // stem


def test_select_student_takes_what_it_is_not_given_from_the_data(monkeypatch, tmp_path):
    """As distill does: on 28x28 data the strided teacher and wide-cnn drawn first; on digits the
    digits defaults; what is given is kept."""
    from edgekd import defaults
    from edgekd.train.config import DistillConfig

    from helpers.data import write_mnist

    seen: dict = {}
    for_data = DistillConfig.for_data

    def record(self, bundle):
        seen["cfg"] = for_data(self, bundle)
        return seen["cfg"]

    def stop(ops, *, seed, include, input_size):
        seen.update(include=include, input_size=input_size)
        raise BadInput("stopped before any timing")

    monkeypatch.setattr(DistillConfig, "for_data", record)
    monkeypatch.setattr(ss, "candidate_stream", stop)
    write_mnist(tmp_path / "mnist", n_train=200, n_test=20)
    for kw, want in (
        (dict(data="mnist", data_dir=tmp_path / "mnist"), ("resnet-s", 15, 30, "wide-cnn", (28, 28))),
        (dict(data="digits"), (defaults.TEACHER, defaults.TEACHER_EPOCHS, defaults.EPOCHS, defaults.STUDENT, (8, 8))),
        (dict(data="digits", teacher="cnn-small", teacher_epochs=2, epochs=3, include=["dsconv"]),
         ("cnn-small", 2, 3, "dsconv", (8, 8))),   # (H, W): the search space is sized per side (issue 20)
    ):
        with pytest.raises(BadInput, match="stopped"):
            ss.select_student(target="cpu-arm", progress=False, run=tmp_path / "run", **kw)
        c = seen["cfg"]
        assert (c.teacher, c.teacher_epochs, c.epochs, seen["include"][0], seen["input_size"]) == want
        assert (c.temperature, tuple(c.methods)) == (defaults.TEMPERATURE, defaults.METHODS)
