"""edgekd.search.teacher: per-example gradients, the projection, the GRACE score by hand, the stage."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekd import artifacts
from edgekd.errors import BadInput
from edgekd.models import create_teacher
from edgekd.search.teacher import (
    RademacherProjection,
    grace_from_gradients,
    grace_score,
    grace_split_score,
    grace_splits,
    per_example_gradients,
    projected_gradients,
    select_teachers,
)
from edgekd.train.losses import KDBatch, SoftTarget

torch.set_num_threads(1)


def tiny_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2), nn.ReLU(), nn.Flatten(),
                      nn.Linear(2 * 4 * 4, 3))
    # Non-trivial running statistics: eval-mode BatchNorm must use them in both computations.
    m[1].running_mean.fill_(0.3)
    m[1].running_var.fill_(2.0)
    return m


def random_gradients(n: int = 40, k: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)) * np.linspace(0.5, 3, k)


# ---------------------------------------------------------------- per-example gradients
def test_per_example_gradients_match_a_loop_of_plain_autograd():
    model, T = tiny_model(), 3.0
    x = torch.randn(5, 1, 4, 4)
    t = torch.randn(5, 3) * 2
    got = per_example_gradients(model, x, t, temperature=T, batch_size=2)  # batches of 2 cover the seam
    model.eval()
    kd = SoftTarget(T)
    for i in range(5):
        model.zero_grad()
        kd(KDBatch(student_logits=model(x[i:i + 1]), labels=torch.tensor([-1]), teacher_logits=t[i:i + 1])).backward()
        want = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        torch.testing.assert_close(got[i], want, rtol=1e-5, atol=1e-6)
    assert got.shape == (5, sum(p.numel() for p in model.parameters()))


def test_gradients_leave_the_model_and_its_mode_as_found():
    model = tiny_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    per_example_gradients(model, torch.randn(3, 1, 4, 4), torch.randn(3, 3), temperature=4.0)
    assert model.training
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_student_that_already_matches_the_teacher_has_zero_gradients():
    model = tiny_model().eval()
    x = torch.randn(4, 1, 4, 4)
    with torch.no_grad():
        t = model(x)
    assert per_example_gradients(model, x, t, temperature=2.0).abs().max() < 1e-6


# ---------------------------------------------------------------- projection
def test_projection_is_rademacher_over_root_k_and_seeded():
    p = RademacherProjection(10, 8, seed=3, block=4)  # 3 blocks of rows
    r = p.matrix()
    assert r.shape == (10, 8)
    assert set(np.unique(r.numpy() * math.sqrt(8)).round(6)) == {-1.0, 1.0}
    assert torch.equal(r, RademacherProjection(10, 8, seed=3, block=4).matrix())
    assert not torch.equal(r, RademacherProjection(10, 8, seed=4, block=4).matrix())


def test_blockwise_projection_equals_the_full_matrix_product_and_ignores_batching():
    p = RademacherProjection(10, 8, seed=1, block=3)
    x = torch.randn(5, 10)
    full = x.double() @ p.matrix().double()
    torch.testing.assert_close(p(x), full)
    torch.testing.assert_close(p(x[:2]), full[:2])


def test_projection_keeps_norms_on_average():
    # E‖xR‖² = ‖x‖² with entries ±1/√k: over many seeds the mean ratio is close to 1.
    x = torch.randn(1, 50)
    ratios = [float(RademacherProjection(50, 16, seed=s)(x).norm() ** 2 / x.double().norm() ** 2) for s in range(200)]
    assert abs(np.mean(ratios) - 1) < 0.1


def test_small_students_are_not_projected():
    model = tiny_model()
    x, t = torch.randn(6, 1, 4, 4), torch.randn(6, 3)
    g, dim = projected_gradients(model, x, t, temperature=4.0, proj_dim=10_000)
    assert dim == g.shape[1] == sum(p.numel() for p in model.parameters())
    torch.testing.assert_close(g, per_example_gradients(model, x, t, temperature=4.0).double())
    g_small, _ = projected_gradients(model, x, t, temperature=4.0, proj_dim=7)
    assert g_small.shape == (6, 7)


# ---------------------------------------------------------------- the score
def test_split_score_by_hand_full_rank():
    # train rows normalise to e1, e2: Σ_tr = I/2, so Σ_tr⁻¹ = 2I (mean-smoothing leaves equal eigenvalues alone).
    # test rows (1,1), (2,0): Σ_te = [[2.5, .5], [.5, .5]], trace 3 → score 2·3 = 6.
    train, test = np.array([[3.0, 0.0], [0.0, 2.0]]), np.array([[1.0, 1.0], [2.0, 0.0]])
    assert grace_split_score(train, test) == pytest.approx(6.0)


def test_split_score_by_hand_smoothing_fills_a_missing_direction():
    # Σ_tr = diag(1, 0): eigenvalues (0, 1), mean 1/2 → smoothed (c/2, 1 − c/2).
    # A held-out gradient along the missing direction e2 scores 1 / (c/2) = 2/c.
    for c in (1e-3, 0.1):
        got = grace_split_score(np.array([[5.0, 0.0], [2.0, 0.0]]), np.array([[0.0, 1.0]]), smooth=c)
        assert got == pytest.approx(2 / c, rel=1e-6)


def test_score_counts_held_out_magnitude_but_not_train_magnitude():
    g = random_gradients()
    tr, te = g[:30], g[30:]
    base = grace_split_score(tr, te)
    assert grace_split_score(tr * 7.0, te) == pytest.approx(base)      # train rows are unit-normalised
    assert grace_split_score(tr, te * 3.0) == pytest.approx(9 * base)  # held-out second moment is not


def test_score_does_not_depend_on_the_basis():
    g = random_gradients()
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 6)))
    assert grace_from_gradients(g @ q)["score"] == pytest.approx(grace_from_gradients(g)["score"], rel=1e-9)


def test_score_depends_on_which_examples_not_their_order():
    g = random_gradients()
    perm = np.random.default_rng(2).permutation(len(g))
    inv = np.argsort(perm)  # row i of g[perm] is row perm[i] of g
    for tr, te in grace_splits(len(g), n_splits=3, seed=5):
        assert grace_split_score(g[perm][inv[tr]], g[perm][inv[te]]) == pytest.approx(grace_split_score(g[tr], g[te]))


def test_splits_are_seeded_disjoint_and_sized():
    a = grace_splits(20, n_splits=4, test_fraction=0.25, seed=0)
    assert [(len(tr), len(te)) for tr, te in a] == [(15, 5)] * 4
    assert all(set(tr).isdisjoint(te) and len(set(tr) | set(te)) == 20 for tr, te in a)
    b = grace_splits(20, n_splits=4, test_fraction=0.25, seed=0)
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    assert grace_from_gradients(random_gradients(), seed=0) == grace_from_gradients(random_gradients(), seed=0)


def test_grace_score_refuses_logits_of_the_wrong_shape():
    with pytest.raises(BadInput, match="teacher logits"):
        grace_score(student=tiny_model(), teacher_logits=torch.randn(4, 5), inputs=torch.randn(4, 1, 4, 4),
                    temperature=4.0)


# ---------------------------------------------------------------- the stage
def save_teacher(path, *, num_classes: int = 10, seed: int = 0):
    torch.manual_seed(seed)
    m = create_teacher("cnn-small", in_channels=1, num_classes=num_classes)
    artifacts.save_torch(path, {"kind": "teacher", "arch": "cnn-small", "in_channels": 1,
                                "num_classes": num_classes, "model": m.state_dict()})
    return path


FAST = dict(student="tiny-cnn", data="digits", target="cpu-arm", temperature=4.0, n=32, teacher_epochs=1,
            progress=False, proj_dim=64, n_splits=3)


def test_select_teachers_ranks_with_baselines_and_writes_json(tmp_path):
    untrained = save_teacher(tmp_path / "untrained.pt")
    run = tmp_path / "run"
    res = select_teachers(teachers=["cnn-small", str(untrained)], run=run, warmup_steps=2, **FAST)
    rows = res["teachers"]
    assert sorted(res["ranking"]) == sorted(["cnn-small", str(untrained)])
    assert [r["teacher"] for r in rows] == res["ranking"] and res["best"] == res["ranking"][0]
    assert [r["rank"] for r in rows] == [1, 2]
    scores = [r["grace"]["score"] for r in rows]
    assert scores[0] >= scores[1] if res["higher_is_better"] else scores[0] <= scores[1]
    for r in rows:
        assert 0 <= r["val_accuracy"] <= 1 and 0 <= r["agreement_at_init"] <= 1
        assert r["grace"]["n"] == 32 and len(r["grace"]["per_split"]) == 3 and math.isfinite(r["grace"]["score"])
    by_name = {r["teacher"]: r for r in rows}
    assert by_name["cnn-small"]["source"] == "trained" and by_name["cnn-small"]["epochs"] == 1
    assert (run / "teachers" / "cnn-small" / "teacher.pt").is_file()  # kept for `edgekd distill --teacher`
    assert json.loads((run / "teacher_selection.json").read_text())["ranking"] == res["ranking"]

    flipped = select_teachers(teachers=["cnn-small", str(untrained)], warmup_steps=2,
                              higher_is_better=not res["higher_is_better"], **FAST)
    assert flipped["ranking"] == res["ranking"][::-1]


def test_teacher_with_another_class_count_is_bad_input(tmp_path):
    wrong = save_teacher(tmp_path / "three.pt", num_classes=3)
    with pytest.raises(BadInput) as e:
        select_teachers(teachers=[str(wrong)], **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "3 classes" in msg and "10" in msg and "three.pt" in msg


@pytest.mark.parametrize("kwargs, match", [
    (dict(teachers=[]), "no --teacher"),
    (dict(teachers=["cnn-small", "cnn-small"]), "given twice"),
    (dict(teachers=["cnn-small"], n=3), "--n 3"),
    (dict(teachers=["cnn-small"], warmup_steps=-1), "--warmup-steps"),
    (dict(teachers=["no-such-net"]), "unknown teacher"),
])
def test_bad_arguments_are_one_line_bad_input(kwargs, match):
    with pytest.raises(BadInput, match=match) as e:
        select_teachers(**{**FAST, **kwargs})
    assert "\n" not in str(e.value)


def test_select_teachers_takes_student_temperature_and_teacher_epochs_from_the_data(monkeypatch, tmp_path):
    """What is left out comes from `defaults.recipe`, as in distill: 28x28 data gets wide-cnn."""
    import edgekd.search.teacher as st
    from edgekd import defaults
    from edgekd.train.config import DistillConfig

    from helpers.data import write_mnist

    seen = {}
    for_data = DistillConfig.for_data

    def record(self, bundle):
        seen["cfg"] = for_data(self, bundle)
        return seen["cfg"]

    def stop(*a, **k):
        raise BadInput("stopped before any scoring")

    monkeypatch.setattr(DistillConfig, "for_data", record)
    monkeypatch.setattr(st, "_sample", stop)
    write_mnist(tmp_path / "m", n_train=200, n_test=20)
    for kw, want in ((dict(data="digits"), (defaults.STUDENT, defaults.TEMPERATURE, defaults.TEACHER_EPOCHS)),
                     (dict(data="mnist", data_dir=tmp_path / "m"), ("wide-cnn", defaults.TEMPERATURE, 15)),
                     (dict(data="digits", student="dsconv", temperature=2.0, teacher_epochs=3), ("dsconv", 2.0, 3))):
        with pytest.raises(BadInput, match="stopped"):
            select_teachers(teachers=["cnn-small"], progress=False, **kw)
        c = seen["cfg"]
        assert (c.student, c.temperature, c.teacher_epochs) == want
