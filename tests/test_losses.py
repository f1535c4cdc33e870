"""edgekd.train.losses: every registered loss against a value computed by hand (numpy / plain Python).

`HAND_CHECKED` maps each registry key to its check; a loss added to `LOSSES`
without one fails `test_every_registered_loss_is_hand_checked`.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from edgekd.errors import BadInput
from edgekd.train import losses
from edgekd.train.losses import (
    LOSSES,
    KDBatch,
    build_objective,
    combine_teachers,
    dml_losses,
)

torch.set_num_threads(1)

# Three samples, three classes; the last sample is unlabeled (-1).
S = np.array([[1.0, 0.5, -0.3], [0.2, 0.1, 0.9], [-1.0, 2.0, 0.0]])
T = np.array([[2.0, 0.0, -1.0], [0.5, 0.3, 0.4], [0.0, 1.5, 0.5]])
Y = np.array([0, 2, -1])


def t(a) -> torch.Tensor:
    return torch.tensor(np.asarray(a), dtype=torch.float32)


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


def huber(x: np.ndarray) -> np.ndarray:  # smooth-L1, delta 1
    a = np.abs(x)
    return np.where(a < 1, 0.5 * x * x, a - 0.5)


def batch(**feats) -> KDBatch:
    return KDBatch(student_logits=t(S), labels=torch.tensor(Y), teacher_logits=t(T),
                   student_feats={k: t(v[0]) for k, v in feats.items()},
                   teacher_feats={k: t(v[1]) for k, v in feats.items()})


def run(name: str, b: KDBatch, **kwargs) -> float:
    with torch.no_grad():
        return float(build_objective([name], **kwargs)(b))


# ---------------------------------------------------------------- hand checks, one per key
def check_ce():
    lp = log_softmax(S)
    want = -(lp[0, 0] + lp[1, 2]) / 2  # sample 2 is unlabeled
    assert run("ce", batch()) == pytest.approx(want, rel=1e-5)


def check_hard():
    lp = log_softmax(S)
    want = -np.mean([lp[i, T[i].argmax()] for i in range(3)])
    assert run("hard", batch()) == pytest.approx(want, rel=1e-5)


def check_soft():
    tau = 2.0
    p, lq = softmax(T / tau), log_softmax(S / tau)
    want = tau * tau * np.mean(np.sum(p * (np.log(p) - lq), axis=1))
    assert run("soft", batch(), temperature=tau) == pytest.approx(want, rel=1e-5)
    # logit standardisation (Sun et al. 2024): z-scores (sample std, ddof=1) before the temperature
    def z(a):
        return (a - a.mean(axis=1, keepdims=True)) / a.std(axis=1, ddof=1, keepdims=True)

    p, lq = softmax(z(T) / tau), log_softmax(z(S) / tau)
    want_ls = tau * tau * np.mean(np.sum(p * (np.log(p) - lq), axis=1))
    got = run("soft", batch(), temperature=tau, soft={"standardize": True})
    assert got == pytest.approx(want_ls, rel=1e-5) and got != pytest.approx(want, rel=1e-3)
    # invariant to each sample's logit scale and shift, which plain KD is not
    b2 = KDBatch(student_logits=t(3 * S + 1), labels=torch.tensor(Y), teacher_logits=t(T - 2))
    assert run("soft", b2, temperature=tau, soft={"standardize": True}) == pytest.approx(want_ls, rel=1e-4)
    with pytest.raises(BadInput, match="--method soft: bad option"):
        build_objective(["soft"], soft={"standardize": "yes"})


def zscore(a: np.ndarray) -> np.ndarray:  # logit standardisation: sample std (ddof=1), as torch.std
    return (a - a.mean(axis=1, keepdims=True)) / a.std(axis=1, ddof=1, keepdims=True)


def kl_rows(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.sum(np.where(p > 0, p * (np.log(np.where(p > 0, p, 1)) - np.log(q)), 0.0), axis=1)


def dkd_hand(s: np.ndarray, t_: np.ndarray, y: np.ndarray, tau: float, alpha: float = 1.0, beta: float = 8.0):
    y = np.where(y >= 0, y, t_.argmax(axis=1))          # unlabeled: the teacher's argmax
    p, q = softmax(t_ / tau), softmax(s / tau)
    out = []
    for i in range(len(s)):
        py, qy = p[i, y[i]], q[i, y[i]]
        tckd = py * np.log(py / qy) + (1 - py) * np.log((1 - py) / (1 - qy))
        others = [j for j in range(s.shape[1]) if j != y[i]]
        ph, qh = p[i, others] / (1 - py), q[i, others] / (1 - qy)
        out.append(alpha * tckd + beta * np.sum(ph * np.log(ph / qh)))
    return tau * tau * np.mean(out)


def check_dkd():
    tau = 2.0
    want = dkd_hand(S, T, Y, tau)
    assert run("dkd", batch(), temperature=tau) == pytest.approx(want, rel=1e-5)
    assert run("dkd", batch(), temperature=tau, dkd={"alpha": 0.5, "beta": 2.0}) == pytest.approx(
        dkd_hand(S, T, Y, tau, 0.5, 2.0), rel=1e-5)
    # α = 1, β = 1 − p_y^t per sample would be Hinton's KD; with β = 1 it is not (the decoupling)
    assert run("dkd", batch(), temperature=tau, dkd={"beta": 1.0}) != pytest.approx(
        run("soft", batch(), temperature=tau), rel=1e-3)
    got = run("dkd", batch(), temperature=tau, dkd={"standardize": True})
    assert got == pytest.approx(dkd_hand(zscore(S), zscore(T), Y, tau), rel=1e-5)
    assert got != pytest.approx(want, rel=1e-3)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a, b)[0, 1])


def dist_hand(s: np.ndarray, t_: np.ndarray, tau: float, beta: float = 1.0, gamma: float = 1.0) -> float:
    q, p = softmax(s / tau), softmax(t_ / tau)
    inter = 1 - np.mean([pearson(q[i], p[i]) for i in range(len(q))])
    intra = 1 - np.mean([pearson(q[:, c], p[:, c]) for c in range(q.shape[1])])
    return tau * tau * (beta * inter + gamma * intra)


def check_dist():
    tau = 2.0
    want = dist_hand(S, T, tau)
    assert run("dist", batch(), temperature=tau) == pytest.approx(want, rel=1e-5)
    assert run("dist", batch(), temperature=tau, dist={"beta": 2.0, "gamma": 0.0}) == pytest.approx(
        dist_hand(S, T, tau, 2.0, 0.0), rel=1e-5)
    got = run("dist", batch(), temperature=tau, dist={"standardize": True})
    assert got == pytest.approx(dist_hand(zscore(S), zscore(T), tau), rel=1e-5) and got != pytest.approx(want, rel=1e-3)
    # a student whose softened probabilities equal the teacher's gives 0
    b0 = KDBatch(student_logits=t(T), labels=torch.tensor(Y), teacher_logits=t(T))
    assert run("dist", b0, temperature=tau) == pytest.approx(0.0, abs=1e-4)  # float32, times τ²


def ttm_hand(s: np.ndarray, t_: np.ndarray, gamma: float, weighted: bool) -> float:
    pg = softmax(t_) ** gamma
    u = pg.sum(axis=1)
    kl = kl_rows(pg / u[:, None], softmax(s))
    return float(np.mean(u * kl if weighted else kl))


def check_ttm():
    tau = 2.0
    want = ttm_hand(S, T, 1 / tau, False)  # γ defaults to 1/T
    assert run("ttm", batch(), temperature=tau) == pytest.approx(want, rel=1e-5)
    # γ = 1/T is KD with the temperature on the teacher only: KL(softmax(t/T) ‖ softmax(s))
    assert want == pytest.approx(np.mean(kl_rows(softmax(T / tau), softmax(S))), rel=1e-9)
    assert run("ttm", batch(), ttm={"gamma": 0.1}) == pytest.approx(ttm_hand(S, T, 0.1, False), rel=1e-5)
    w = run("ttm", batch(), ttm={"gamma": 0.1, "wttm": True})
    assert w == pytest.approx(ttm_hand(S, T, 0.1, True), rel=1e-5) and w > 1.5 * run("ttm", batch(), ttm={"gamma": 0.1})
    got = run("ttm", batch(), temperature=tau, ttm={"standardize": True})
    assert got == pytest.approx(ttm_hand(zscore(S), zscore(T), 1 / tau, False), rel=1e-5)
    with pytest.raises(BadInput, match="ttm.gamma"):
        build_objective(["ttm"], ttm={"gamma": 0})
    with pytest.raises(BadInput, match="--method ttm: bad option"):
        build_objective(["ttm"], ttm={"wttm": "yes"})


HS = np.array([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]])             # student hidden, D=2
HT = np.array([[2.0, 1.0], [1.0, 1.0], [-1.0, 2.0]])             # teacher hidden, D=2
HT3 = np.array([[1.0, 0.0, 2.0], [0.5, 1.0, 0.0], [1.0, 1.0, 1.0]])  # teacher hidden, D=3


def cos_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def check_cosine():
    # equal sizes: no projection, 1 − cos
    assert run("cosine", batch(hidden=(HS, HT))) == pytest.approx(np.mean(1 - cos_rows(HS, HT)), rel=1e-5)
    # different sizes: a Linear(2, 3) on the student side, set to known weights
    b = batch(hidden=(HS, HT3))
    obj = build_objective(["cosine"]).prepare(b)
    proj = obj.losses[0].proj
    assert isinstance(proj, nn.Linear) and (proj.in_features, proj.out_features) == (2, 3)
    W, bias = np.array([[1.0, 0.0], [0.5, -1.0], [0.0, 2.0]]), np.array([0.1, 0.0, -0.2])
    with torch.no_grad():
        proj.weight.copy_(t(W)), proj.bias.copy_(t(bias))
    want = np.mean(1 - cos_rows(HS @ W.T + bias, HT3))
    with torch.no_grad():
        assert float(obj(b)) == pytest.approx(want, rel=1e-5)


# feature maps: student (2, 2, 4, 4), teacher (2, 3, 2, 2)
RNG = np.random.default_rng(0)
FS = RNG.normal(size=(2, 2, 4, 4)).round(2)
FT = RNG.normal(size=(2, 3, 2, 2)).round(2)


def avg_pool_2x2(x: np.ndarray) -> np.ndarray:
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def check_fitnet():
    b = batch(feature_map=(FS, FT))
    obj = build_objective(["fitnet"]).prepare(b)
    conv = obj.losses[0].regressor[0]
    assert isinstance(conv, nn.Conv2d) and conv.kernel_size == (1, 1)
    assert (conv.in_channels, conv.out_channels) == (2, 3)
    W, bias = np.array([[1.0, -1.0], [0.5, 0.5], [0.0, 2.0]]), np.array([0.0, 0.1, -0.1])
    with torch.no_grad():
        conv.weight.copy_(t(W).view(3, 2, 1, 1)), conv.bias.copy_(t(bias))
    r = np.einsum("oc,nchw->nohw", W, FS) + bias[None, :, None, None]   # 1×1 conv
    want = np.mean((avg_pool_2x2(r) - FT) ** 2)                         # 4×4 pooled to the teacher's 2×2
    with torch.no_grad():
        assert float(obj(b)) == pytest.approx(want, rel=1e-5)


def attention_hand(x: np.ndarray) -> np.ndarray:
    q = (np.abs(x) ** 2).mean(axis=1)       # mean over channels of |A|^2
    return q


def check_at():
    # student 4×4 attention pooled to the teacher's 2×2; channels 2 vs 3 do not matter
    qs = avg_pool_2x2(attention_hand(FS)[:, None])[:, 0].reshape(2, -1)
    qt = attention_hand(FT).reshape(2, -1)
    qs, qt = qs / np.linalg.norm(qs, axis=1, keepdims=True), qt / np.linalg.norm(qt, axis=1, keepdims=True)
    want = 1000 / 2 * np.mean((qs - qt) ** 2)
    assert run("at", batch(feature_map=(FS, FT))) == pytest.approx(want, rel=1e-5)


def rkd_distance_hand(e: np.ndarray) -> np.ndarray:
    n = len(e)
    d = np.array([[math.dist(e[i], e[j]) for j in range(n)] for i in range(n)])
    return d / d[d > 0].mean()


def rkd_angle_hand(e: np.ndarray) -> np.ndarray:
    n, out = len(e), []
    for i in range(n):          # vertex
        for j in range(n):
            for k in range(n):
                u, v = e[j] - e[i], e[k] - e[i]
                nu, nv = np.linalg.norm(u), np.linalg.norm(v)
                out.append(0.0 if nu == 0 or nv == 0 else float(u @ v / (nu * nv)))
    return np.array(out)


def rkd_hand(distance_weight: float, angle_weight: float) -> float:
    # student D=2, teacher D=3: only relations are compared
    d = np.mean(huber(rkd_distance_hand(HS) - rkd_distance_hand(HT3)))
    a = np.mean(huber(rkd_angle_hand(HS) - rkd_angle_hand(HT3)))
    return distance_weight * d + angle_weight * a


def check_rkd():
    assert run("rkd", batch(hidden=(HS, HT3))) == pytest.approx(rkd_hand(25, 50), rel=1e-4)


def check_rkd_d():
    assert run("rkd-d", batch(hidden=(HS, HT3))) == pytest.approx(rkd_hand(25, 0), rel=1e-4)


def check_rkd_a():
    assert run("rkd-a", batch(hidden=(HS, HT3))) == pytest.approx(rkd_hand(0, 50), rel=1e-4)


HAND_CHECKED = {
    "ce": check_ce, "hard": check_hard, "soft": check_soft, "dkd": check_dkd, "dist": check_dist, "ttm": check_ttm,
    "cosine": check_cosine,
    "fitnet": check_fitnet, "at": check_at, "rkd": check_rkd, "rkd-d": check_rkd_d, "rkd-a": check_rkd_a,
}


def test_every_registered_loss_is_hand_checked():
    missing = set(LOSSES) - set(HAND_CHECKED)
    assert not missing, f"losses without a hand-computed test: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(HAND_CHECKED))
def test_loss_matches_hand_computation(name):
    assert name in LOSSES
    HAND_CHECKED[name]()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_declares_teacher_and_taps(name):
    cls = LOSSES[name]
    assert isinstance(cls.needs_teacher, bool)
    assert isinstance(cls.taps, tuple) and set(cls.taps) <= {"hidden", "feature_map"}
    assert cls.__doc__ and len(cls.__doc__) > 40  # formula + citation live there


# ---------------------------------------------------------------- objective
def test_objective_taps_and_teacher():
    obj = build_objective(["soft:0.5", "ce:0.2", "rkd:0.1", "fitnet:0.1", "cosine"])
    assert obj.taps == ("hidden", "feature_map")
    assert obj.needs_teacher
    assert build_objective(["ce"]).taps == () and not build_objective(["ce"]).needs_teacher
    assert obj.describe() == "0.5·soft + 0.2·ce + 0.1·rkd + 0.1·fitnet + 1·cosine"


def test_weights_and_terms():
    b = batch(hidden=(HS, HT))
    obj = build_objective(["ce:0.3", "cosine:2"])
    terms = obj.terms(b)
    assert float(terms["cosine"]) == pytest.approx(2 * np.mean(1 - cos_rows(HS, HT)), rel=1e-5)
    assert float(obj(b)) == pytest.approx(float(terms["ce"] + terms["cosine"]))


def test_extra_parameters_need_prepare_and_get_gradients():
    b = batch(hidden=(HS, HT3), feature_map=(FS, FT))
    obj = build_objective(["cosine", "fitnet"], fitnet={"kernel": 3, "bn": True})
    with pytest.raises(RuntimeError, match="prepare"):
        obj.extra_parameters()
    obj.prepare(b).train()
    params = obj.extra_parameters()
    # Linear(2→3): weight + bias; Conv3×3 (no bias, BN follows) + BN weight + bias
    assert [tuple(p.shape) for p in params] == [(3, 2), (3,), (3, 2, 3, 3), (3,), (3,)]
    obj(b).backward()
    for p in params:
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_feature_loss_gradients_reach_the_student_and_parts_stay_out_of_it():
    from edgekd.models import create_student
    from edgekd.train.features import FeatureTap, default_taps

    torch.manual_seed(0)
    student = create_student("tiny-cnn", in_channels=1, num_classes=3)
    keys_before = set(student.state_dict())
    x = torch.randn(4, 1, 8, 8)
    taps = default_taps(student)
    with FeatureTap(student, taps) as st:
        logits = student(x)
    teacher_feats = {"hidden": torch.randn(4, 5), "feature_map": torch.randn(4, 7, 2, 2)}
    b = KDBatch(logits, torch.tensor([0, 1, 2, -1]), torch.randn(4, 3), st.outputs, teacher_feats)
    obj = build_objective(["cosine", "fitnet", "at", "rkd"]).prepare(b, student_taps=taps)
    obj(b).backward()
    assert student.features[0][0].weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in obj.extra_parameters())
    assert set(student.state_dict()) == keys_before  # projections never join the student


def test_project_false_with_different_sizes_names_shapes_and_taps():
    b = batch(hidden=(HS, HT3))
    with pytest.raises(BadInput) as e:
        build_objective(["cosine"], cosine={"project": False}).prepare(
            b, student_taps={"hidden": "pool"}, teacher_taps={"hidden": "avgpool"})
    msg = str(e.value)
    assert "'pool'" in msg and "'avgpool'" in msg and "(3, 2)" in msg and "(3, 3)" in msg and "\n" not in msg
    with pytest.raises(BadInput, match="channel counts"):
        build_objective(["fitnet"], fitnet={"project": False}).prepare(batch(feature_map=(FS, FT)))


def test_prepare_refuses_teacher_with_other_class_count():
    b = KDBatch(t(S), torch.tensor(Y), torch.zeros(3, 10))
    with pytest.raises(BadInput, match="10 classes and the student 3"):
        build_objective(["soft"]).prepare(b)


def test_at_refuses_maps_that_meet_at_1x1():
    with pytest.raises(BadInput, match="1×1"):
        run("at", batch(feature_map=(FS, np.ones((2, 3, 1, 1)))))


def test_feature_map_loss_refuses_a_flat_tap():
    with pytest.raises(BadInput, match="not a \\(N, C, H, W\\) feature map"):
        build_objective(["fitnet"]).prepare(batch(feature_map=(HS, FT)))


def test_missing_inputs_say_what_is_missing():
    with pytest.raises(ValueError, match="FeatureTap"):
        run("cosine", batch())
    with pytest.raises(ValueError, match="soft needs KDBatch.teacher_logits"):
        run("soft", KDBatch(t(S), torch.tensor(Y)))


def test_rkd_on_one_sample_is_zero_not_nan():
    b = KDBatch(t(S[:1]), torch.tensor(Y[:1]), t(T[:1]), {"hidden": t(HS[:1])}, {"hidden": t(HT[:1])})
    assert run("rkd", b) == 0.0


def test_unknown_option_is_bad_input():
    with pytest.raises(BadInput, match="fitnet"):
        build_objective(["fitnet"], fitnet={"kernal": 3})
    with pytest.raises(BadInput, match="valid: 1, 3"):
        build_objective(["fitnet"], fitnet={"kernel": 5})


def test_parse_method_lists_new_keys():
    assert losses.parse_method("rkd-d:0.5") == ("rkd-d", 0.5)
    with pytest.raises(BadInput, match="did you mean 'fitnet'"):
        losses.parse_method("fitnets")


# ---------------------------------------------------------------- FitNets hint stage
def test_hint_stage_trains_the_student_up_to_the_tap_and_the_regressor():
    from edgekd.models import create_student
    from edgekd.train.features import FeatureTap, default_taps

    torch.manual_seed(0)
    student = create_student("tiny-cnn", in_channels=1, num_classes=3)
    x = torch.randn(4, 1, 8, 8)
    taps = default_taps(student, roles=["feature_map"])
    with FeatureTap(student, taps) as st:
        logits = student(x)
    b = KDBatch(logits, torch.tensor([0, 1, 2, 0]), torch.randn(4, 3), st.outputs,
                {"feature_map": torch.randn(4, 6, 2, 2)})
    obj = build_objective(["soft:0.7", "fitnet:0.3"]).prepare(b, student_taps=taps)
    hint = losses.hint_objective(obj)
    assert hint.names == ["fitnet"] and hint.weights == [1.0] and hint.losses[0] is obj.losses[1]
    params = losses.hint_stage_params(obj, student, student_taps=taps, example_input=x)
    ids = {id(p) for p in params}
    assert ids == {id(p) for p in student.features.parameters()} | {id(p) for p in obj.extra_parameters()}
    assert id(student.head.weight) not in ids
    with pytest.raises(BadInput, match="fitnet"):
        losses.hint_objective(build_objective(["soft"]))


# ---------------------------------------------------------------- several teachers
T2 = np.array([[0.0, 1.0, 0.0], [3.0, 0.0, 0.0], [0.2, 0.2, 0.2]])


@pytest.mark.parametrize("mode,weights", [("mean", None), ("weighted", [3.0, 1.0]), ("confidence", None)])
def test_combine_teachers_softmax_of_result_is_the_mixture(mode, weights):
    tau = 2.0
    p1, p2 = softmax(T / tau), softmax(T2 / tau)
    if mode == "mean":
        w1 = w2 = np.full((3, 1), 0.5)
    elif mode == "weighted":
        w1, w2 = np.full((3, 1), 0.75), np.full((3, 1), 0.25)
    else:  # per sample ∝ each teacher's max probability at T = 1
        c1, c2 = softmax(T).max(axis=1, keepdims=True), softmax(T2).max(axis=1, keepdims=True)
        w1, w2 = c1 / (c1 + c2), c2 / (c1 + c2)
    want = w1 * p1 + w2 * p2
    out = combine_teachers([t(T), t(T2)], mode=mode, weights=weights, temperature=tau)
    assert out.shape == (3, 3)
    np.testing.assert_allclose(torch.softmax(out / tau, dim=1).numpy(), want, rtol=1e-5)
    np.testing.assert_allclose(out.numpy(), tau * np.log(want), rtol=1e-5, atol=1e-6)


def test_combine_one_teacher_keeps_its_distribution_and_soft_loss_uses_it():
    tau = 4.0
    out = combine_teachers([t(T)], temperature=tau)
    np.testing.assert_allclose(torch.softmax(out / tau, 1).numpy(), softmax(T / tau), rtol=1e-5)
    b = KDBatch(t(S), torch.tensor(Y), out)
    assert run("soft", b, temperature=tau) == pytest.approx(run("soft", batch(), temperature=tau), rel=1e-5)


def test_combine_teachers_bad_input():
    with pytest.raises(BadInput, match="valid: mean, weighted, confidence"):
        combine_teachers([t(T)], mode="median", temperature=1.0)
    with pytest.raises(BadInput, match="one weight per teacher"):
        combine_teachers([t(T), t(T2)], mode="weighted", weights=[1.0], temperature=1.0)
    with pytest.raises(BadInput, match="not all 0"):
        combine_teachers([t(T), t(T2)], mode="weighted", weights=[0.0, 0.0], temperature=1.0)
    with pytest.raises(BadInput, match="one shape"):
        combine_teachers([t(T), torch.zeros(3, 4)], temperature=1.0)
    with pytest.raises(BadInput, match="no teacher"):
        combine_teachers([], temperature=1.0)


# ---------------------------------------------------------------- deep mutual learning
def test_dml_matches_hand_and_detaches_peers():
    Z3 = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [2.0, -2.0, 0.0]])
    logits = [t(S).requires_grad_(), t(T).requires_grad_(), t(Z3).requires_grad_()]
    out = dml_losses(logits, torch.tensor(Y))

    def kl(p_logits, q_logits):  # KL(p ‖ q), batch mean
        lp, lq = log_softmax(p_logits), log_softmax(q_logits)
        return np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1))

    def ce(z):
        lz = log_softmax(z)
        return -(lz[0, 0] + lz[1, 2]) / 2

    peers = [S, T, Z3]
    for i, zi in enumerate(peers):
        want = ce(zi) + np.mean([kl(zj, zi) for j, zj in enumerate(peers) if j != i])
        assert float(out[i].detach()) == pytest.approx(want, rel=1e-5)
    out[0].backward()
    assert logits[0].grad.abs().sum() > 0
    assert logits[1].grad is None and logits[2].grad is None  # peers are targets, not trained by L_0
    assert ([float(v.detach()) for v in losses.MutualLoss()(logits, torch.tensor(Y))]
            == pytest.approx([float(v.detach()) for v in out]))


def test_dml_needs_two_students():
    with pytest.raises(BadInput, match="at least 2"):
        dml_losses([t(S)], torch.tensor(Y))


# ---------------------------------------------------------------- against the reference implementations
# Each function below is the reference code's formula, transcribed (names kept, framework glue removed), run
# on the same random tensors as edgekd's loss. Float64, so the comparison is of formulas, not of rounding.
import torch.nn.functional as F  # noqa: E402


def mdistiller_dkd_loss(logits_student, logits_teacher, target, alpha, beta, temperature):
    """megvii-research/mdistiller, mdistiller/distillers/DKD.py: dkd_loss (size_average=False → reduction='sum')."""
    gt_mask = torch.zeros_like(logits_student).scatter_(1, target.reshape(-1).unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(logits_student).scatter_(1, target.reshape(-1).unsqueeze(1), 0).bool()

    def cat_mask(t_, mask1, mask2):
        return torch.cat([(t_ * mask1).sum(dim=1, keepdims=True), (t_ * mask2).sum(1, keepdims=True)], dim=1)

    pred_student = cat_mask(F.softmax(logits_student / temperature, dim=1), gt_mask, other_mask)
    pred_teacher = cat_mask(F.softmax(logits_teacher / temperature, dim=1), gt_mask, other_mask)
    log_pred_student = torch.log(pred_student)
    tckd_loss = F.kl_div(log_pred_student, pred_teacher, reduction="sum") * (temperature**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(logits_teacher / temperature - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(logits_student / temperature - 1000.0 * gt_mask, dim=1)
    nckd_loss = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (temperature**2) \
        / target.shape[0]
    return alpha * tckd_loss + beta * nckd_loss


def torchdistill_dist_loss(student_logits, teacher_logits, beta=1.0, gamma=1.0, tau=1.0, eps=1e-8):
    """yoshitomo-matsubara/torchdistill, torchdistill/losses/mid_level.py: DISTLoss.forward."""
    def pearson_correlation(y_s, y_t, eps):
        return F.cosine_similarity(y_s - y_s.mean(1).unsqueeze(1), y_t - y_t.mean(1).unsqueeze(1), eps=eps)

    def inter_class_relation(y_s, y_t):
        return 1 - pearson_correlation(y_s, y_t, eps).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))

    y_s = (student_logits / tau).softmax(dim=1)
    y_t = (teacher_logits / tau).softmax(dim=1)
    inter_loss = tau ** 2 * inter_class_relation(y_s, y_t)
    intra_loss = tau ** 2 * intra_class_relation(y_s, y_t)
    return beta * inter_loss + gamma * intra_loss


def official_ttm(y_s, y_t, exponent, weighted):
    """zkxufo/TTM, distiller_zoo/ttm.py (TTM.forward) and distiller_zoo/wttm.py (WTTM.forward)."""
    p_s = F.log_softmax(y_s, dim=1)
    p_t = torch.pow(torch.softmax(y_t, dim=1), exponent)  # the paper's l (gamma)
    norm = torch.sum(p_t, dim=1)
    p_t = p_t / norm.unsqueeze(1)
    KL = torch.sum(F.kl_div(p_s, p_t, reduction="none"), dim=1)
    return torch.mean(norm * KL) if weighted else torch.mean(KL)


def ls_normalize(logit):
    """sunshangquan/logit-standardization-KD, mdistiller/distillers/KD.py: normalize (z-score, torch.std)."""
    mean = logit.mean(dim=-1, keepdims=True)
    stdv = logit.std(dim=-1, keepdims=True)
    return (logit - mean) / (1e-7 + stdv)


def _random_batch(seed: int, n: int = 16, c: int = 10, scale: float = 3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    t_ = torch.randn(n, c, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, c, (n,), generator=g)
    return s, t_, y


def _ours(name: str, s, t_, y, **kwargs) -> float:
    with torch.no_grad():
        return float(build_objective([name], **kwargs)(KDBatch(student_logits=s, labels=y, teacher_logits=t_)))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("standardize", [False, True])
def test_dkd_matches_mdistiller(seed, standardize):
    s, t_, y = _random_batch(seed)
    f = ls_normalize if standardize else (lambda z: z)
    for tau, alpha, beta in ((4.0, 1.0, 8.0), (1.0, 2.0, 0.5)):
        want = float(mdistiller_dkd_loss(f(s), f(t_), y, alpha, beta, tau))
        got = _ours("dkd", s, t_, y, temperature=tau, dkd={"alpha": alpha, "beta": beta, "standardize": standardize})
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("standardize", [False, True])
def test_dist_matches_torchdistill(seed, standardize):
    s, t_, y = _random_batch(seed)
    f = ls_normalize if standardize else (lambda z: z)
    for tau, beta, gamma in ((4.0, 1.0, 1.0), (1.0, 2.0, 0.5)):
        want = float(torchdistill_dist_loss(f(s), f(t_), beta, gamma, tau))
        got = _ours("dist", s, t_, y, temperature=tau, dist={"beta": beta, "gamma": gamma, "standardize": standardize})
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("weighted", [False, True])
def test_ttm_and_wttm_match_the_official_code(seed, weighted):
    s, t_, y = _random_batch(seed)
    for gamma in (0.1, 0.25, 1.0):
        want = float(official_ttm(s, t_, gamma, weighted))
        assert _ours("ttm", s, t_, y, ttm={"gamma": gamma, "wttm": weighted}) == pytest.approx(want, rel=1e-6)
    want = float(official_ttm(ls_normalize(s), ls_normalize(t_), 0.25, weighted))
    assert _ours("ttm", s, t_, y, temperature=4.0, ttm={"wttm": weighted, "standardize": True}) == pytest.approx(
        want, rel=1e-6)


def test_soft_standardize_matches_the_logit_standardization_code():
    s, t_, y = _random_batch(3)
    tau = 2.0
    want = float(F.kl_div(F.log_softmax(ls_normalize(s) / tau, 1), F.softmax(ls_normalize(t_) / tau, 1),
                          reduction="batchmean") * tau * tau)
    assert _ours("soft", s, t_, y, temperature=tau, soft={"standardize": True}) == pytest.approx(want, rel=1e-6)


# ---------------------------------------------------------------- DKD's warm-up, scaled to the run
def test_dkd_warmup_is_a_linear_ramp_over_a_fraction_of_the_run():
    b = batch()
    full = run("dkd", b)
    obj = build_objective(["dkd"], dkd={"warmup": 0.25})
    ramp = []
    for step in range(40):                  # a run of 40 steps: the warm-up is its first 10
        obj.set_progress(step, 40)
        with torch.no_grad():
            ramp.append(float(obj(b)) / full)
    assert ramp[:10] == pytest.approx([(k + 1) / 10 for k in range(10)], rel=1e-5)
    assert ramp[10:] == pytest.approx([1.0] * 30, rel=1e-6)
    # the same fraction of a 400-step run: 100 warm-up steps, whatever the epochs
    obj.set_progress(49, 400)
    with torch.no_grad():
        assert float(obj(b)) / full == pytest.approx(0.5, rel=1e-5)
    # the default is mdistiller's 20 of 240 epochs; 0 turns it off
    d = build_objective(["dkd"]).losses[0]
    d.set_progress(0, 240)
    assert d.warmup == pytest.approx(20 / 240) and d.ramp() == pytest.approx(1 / 20)
    off = build_objective(["dkd"], dkd={"warmup": 0}).losses[0]
    off.set_progress(0, 240)
    assert off.ramp() == 1.0
    with pytest.raises(BadInput, match="dkd.warmup"):
        build_objective(["dkd"], dkd={"warmup": 1.5})


def test_the_training_loop_drives_the_dkd_warmup():
    from edgekd.models import create_student
    from edgekd.train.datasets import Indexed
    from edgekd.train.loop import Phase, fit

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 1, 8, 8, generator=g), torch.randint(0, 3, (48,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)
    obj = build_objective(["dkd", "ce"], dkd={"warmup": 0.5})
    seen: list[tuple[int, int]] = []
    dkd = obj.losses[0]
    original = dkd.set_progress
    dkd.set_progress = lambda step, total: (seen.append((step, total)), original(step, total))  # type: ignore
    ph = Phase("kd/seed0", create_student("tiny-cnn", in_channels=1, num_classes=3), obj, Indexed(ds), None,
               epochs=3, seed=0, batch_size=16, teacher_logits=torch.randn(48, 3, generator=g))
    fit(ph, progress=False)
    assert seen == [(k, 9) for k in range(9)]           # 3 epochs × 3 steps, in order
    assert dkd.ramp() == 1.0 and dkd.step == 8
    dkd.set_progress(3, 9)                               # warm-up: round(0.5 × 9) = 4 steps
    assert dkd.ramp() == pytest.approx(1.0)
    dkd.set_progress(1, 9)
    assert dkd.ramp() == pytest.approx(0.5)
