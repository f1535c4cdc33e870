"""edgekd.train.features: forward-hook taps, default tap points, and the compatibility checks."""

from __future__ import annotations

import pytest
import torch

from edgekd.errors import BadInput
from edgekd.models import create_student, create_teacher
from edgekd.train.features import (
    FeatureTap,
    check_compatible,
    check_feature_map,
    check_feature_shapes,
    default_taps,
    forward_with_taps,
    params_feeding,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return create_student("tiny-cnn", in_channels=1, num_classes=3).eval()


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return create_teacher("resnet18", in_channels=1, num_classes=3).eval()  # weights=None: no download


def test_default_taps_for_each_known_model(student, resnet):
    assert default_taps(student) == {"hidden": "pool", "feature_map": "features"}
    assert default_taps(resnet) == {"hidden": "avgpool", "feature_map": "layer4"}
    mbv3 = create_teacher("mobilenet_v3_small", in_channels=1, num_classes=3)
    assert default_taps(mbv3) == {"hidden": "avgpool", "feature_map": "features"}
    assert default_taps(student, roles=("feature_map",)) == {"feature_map": "features"}
    with pytest.raises(BadInput, match="valid: hidden, feature_map"):
        default_taps(student, roles=("logits",))
    with pytest.raises(BadInput, match="no default feature taps for a Linear"):
        default_taps(torch.nn.Linear(2, 2))


def test_tap_on_an_edgekd_student_collects_by_role_and_removes_hooks(student):
    x = torch.randn(2, 1, 8, 8)
    with FeatureTap(student, default_taps(student)) as tap:
        logits = student(x)
    assert tap.outputs["hidden"].shape == (2, 16)              # pool: after flatten
    assert tap.outputs["feature_map"].shape == (2, 16, 4, 4)   # one 2×2 pool on 8×8
    # the hidden tap is exactly what the head reads
    torch.testing.assert_close(student.head(tap.outputs["hidden"]), logits)
    assert all(not m._forward_hooks for m in student.modules())


def test_tap_on_resnet18_by_name_list(resnet):
    with FeatureTap(resnet, ["layer4", "avgpool", "layer2.1.conv1"]) as tap:
        resnet(torch.randn(2, 1, 8, 8))
    assert tap.outputs["layer4"].shape == (2, 512, 1, 1)
    assert tap.outputs["avgpool"].shape == (2, 512, 1, 1)
    assert tap.outputs["layer2.1.conv1"].shape == (2, 128, 4, 4)
    assert all(not m._forward_hooks for m in resnet.modules())


def test_bad_name_lists_nearest_module_names(resnet, student):
    with pytest.raises(BadInput) as e:
        FeatureTap(resnet, {"feature_map": "layer5"})
    msg = str(e.value)
    assert "no module 'layer5'" in msg and "tap 'feature_map'" in msg and "layer4" in msg and "\n" not in msg
    nearest = msg.split("nearest module names: ")[1].split(", ")
    assert len(nearest) == 5 and nearest[0] == "layer4"
    assert all(not m._forward_hooks for m in resnet.modules())  # nothing half-installed
    with pytest.raises(BadInput, match="nearest module names: .*pool"):
        FeatureTap(student, ["poool"])


def test_detach_and_forward_with_taps(student):
    x = torch.randn(3, 1, 8, 8)
    logits, feats = forward_with_taps(student, x, {"hidden": "pool"})
    assert not logits.requires_grad and not feats["hidden"].requires_grad
    assert feats["hidden"].shape == (3, 16)
    logits, feats = forward_with_taps(student, x, {"hidden": "pool"}, grad=True)
    assert logits.requires_grad and feats["hidden"].requires_grad


def test_params_feeding_is_the_network_up_to_the_tap(student, resnet):
    x = torch.randn(2, 1, 8, 8)
    student.train()
    bn = student.features[0][1]
    stats = bn.running_mean.clone()
    got = {id(p) for p in params_feeding(student, "features.1", example_input=x)}
    assert student.training and torch.equal(bn.running_mean, stats)  # mode restored, BN statistics untouched
    student.eval()
    want = {id(p) for p in student.features[0].parameters()} | {id(p) for p in student.features[1].parameters()}
    assert got == want
    got = {id(p) for p in params_feeding(resnet, "layer1", example_input=x)}
    want = {id(p) for m in (resnet.conv1, resnet.bn1, resnet.layer1) for p in m.parameters()}
    assert got == want


def test_check_compatible():
    check_compatible((4, 10), (4, 10))
    with pytest.raises(BadInput, match="teacher predicts 10 classes and the student 3"):
        check_compatible((4, 10), (4, 3))
    with pytest.raises(BadInput, match="\\(batch, classes\\)"):
        check_compatible((4, 10, 1), (4, 10))


def test_check_feature_shapes_names_both_shapes_and_taps():
    check_feature_shapes(loss="cosine", student_shape=(2, 8, 1, 1), teacher_shape=(2, 8),
                         student_tap="pool", teacher_tap="avgpool")  # same flattened size
    with pytest.raises(BadInput) as e:
        check_feature_shapes(loss="cosine", student_shape=(2, 16), teacher_shape=(2, 512, 1, 1),
                             student_tap="pool", teacher_tap="avgpool")
    msg = str(e.value)
    for part in ("cosine", "'pool'", "'avgpool'", "(2, 16)", "(2, 512, 1, 1)", "16 vs 512", "project=False"):
        assert part in msg
    with pytest.raises(BadInput, match="channel counts differ \\(4 vs 8\\)"):
        check_feature_shapes(loss="fitnet", student_shape=(2, 4, 4, 4), teacher_shape=(2, 8, 4, 4),
                             student_tap="features", teacher_tap="layer4", compare="channels")
    with pytest.raises(BadInput, match="student tap 'pool' gives shape \\(2, 16\\)"):
        check_feature_map((2, 16), loss="at", side="student", tap="pool")


def test_teacher_and_student_taps_feed_feature_losses_end_to_end(student, resnet):
    from edgekd.train.losses import KDBatch, build_objective

    x = torch.randn(4, 1, 8, 8)
    obj = build_objective(["soft:0.5", "cosine:0.5", "rkd:0.1"])
    s_taps, t_taps = default_taps(student, roles=obj.taps), default_taps(resnet, roles=obj.taps)
    t_logits, t_feats = forward_with_taps(resnet, x, t_taps)
    with FeatureTap(student, s_taps) as st:
        s_logits = student(x)
    b = KDBatch(s_logits, torch.tensor([0, 1, -1, 2]), t_logits, st.outputs, t_feats)
    obj.prepare(b, student_taps=s_taps, teacher_taps=t_taps)
    assert obj.losses[1].proj.weight.shape == (512, 16)  # student 16 → teacher 512 (avgpool, flattened)
    loss = obj(b)
    assert torch.isfinite(loss)
    loss.backward()
    assert obj.losses[1].proj.weight.grad.abs().sum() > 0
