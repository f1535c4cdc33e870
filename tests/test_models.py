"""edgekd.models: the registries drive the tests. Students are built only from a target's ops,
checked by exporting them, and refused naming the module and the op; teachers give logits."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from edgekd.deploy.audit import check_student_ops
from edgekd.deploy.targets import list_targets, load_target
from edgekd.errors import BadInput
from edgekd.models import (
    ACTIVATIONS,
    STUDENTS,
    TEACHERS,
    Ops,
    count_params,
    create_student,
    create_teacher,
    model_mflops,
    node_module,
    student_net,
    teacher_costs,
)

torch.set_num_threads(1)
# torch's TorchScript exporter (which check_student_ops uses on purpose) warns on every export
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

DIGITS = (1, 8, 8)


def ops_of(model: nn.Module) -> set[type]:
    return {type(m) for m in model.modules()}


def onnx_op_names() -> set[str]:
    import onnx

    return {schema.name for schema in onnx.defs.get_all_schemas()}


# enough for every choice Ops.for_target makes: an activation, a pool and a head
BASIC = frozenset({"Conv", "Relu", "MaxPool", "GlobalAveragePool", "Flatten", "Gemm"})


# ---------------------------------------------------------------- every student × every profile
@pytest.mark.parametrize("target", list_targets())
@pytest.mark.parametrize("student", list(STUDENTS))
def test_student_builds_for_every_profile_that_can_host_it(student: str, target: str) -> None:
    prof = load_target(target)
    try:
        torch.manual_seed(0)
        model = create_student(student, in_channels=1, num_classes=10, target_ops=prof.ops_allow)
    except BadInput as e:
        # refused only for a reason, and the reason names ONNX ops the profile really lacks
        named = set(re.findall(r"\b[A-Z][A-Za-z]+\b", str(e))) & onnx_op_names()
        assert named - prof.ops_allow, f"{student} refused for {target} without naming a missing op: {e}"
        return
    used = check_student_ops(model, input_shape=DIGITS, target=prof)
    assert used and set(used) <= prof.ops_allow
    with torch.no_grad():
        assert model.eval()(torch.zeros(2, *DIGITS)).shape == (2, 10)


def test_some_student_fits_the_default_target() -> None:
    prof = load_target("cpu-arm")
    for name in STUDENTS:
        model = create_student(name, in_channels=1, num_classes=10, target_ops=prof.ops_allow)
        assert check_student_ops(model, input_shape=DIGITS, target=prof)


def test_x86_student_is_refused_for_cpu_arm_naming_module_and_op() -> None:
    x86, arm = load_target("cpu-x86"), load_target("cpu-arm")
    model = create_student("mbv2-tiny", in_channels=1, num_classes=10, target_ops=x86.ops_allow)
    assert nn.Hardswish in ops_of(model)                         # x86 has HardSigmoid: keeps hardswish
    assert check_student_ops(model, input_shape=DIGITS, target=x86)
    with pytest.raises(BadInput) as e:
        check_student_ops(model, input_shape=DIGITS, target=arm)
    msg = str(e.value)
    assert msg.startswith("student refused for target cpu-arm")
    assert "module 'features.0.2' needs HardSigmoid" in msg      # the stem's activation
    assert "\n" not in msg


def test_refusal_names_each_module_by_its_full_path() -> None:
    x86, arm = load_target("cpu-x86"), load_target("cpu-arm")
    model = create_student("mbv2-tiny", in_channels=1, num_classes=10, target_ops=x86.ops_allow)
    names = {n for n, _ in model.named_modules()}
    with pytest.raises(BadInput) as e:
        check_student_ops(model, input_shape=DIGITS, target=arm)
    named = re.findall(r"module '([^']+)'", str(e.value))
    assert named and all(n in names for n in named), f"{named} are not module paths of the model"
    assert len(set(named)) == len(named)


def test_node_module_reads_torchscript_scopes() -> None:
    assert node_module("/features/features.0/features.0.2/Relu") == "features.0.2"
    assert node_module("Relu_3") == "<model>"


def test_check_catches_an_op_that_slipped_through() -> None:
    """A model not built by the registry: the export-based check still finds the op."""
    arm = load_target("cpu-arm")
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Sigmoid(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(BadInput, match=r"module '1' needs Sigmoid"):
        check_student_ops(model, input_shape=DIGITS, target=arm)
    assert model.training, "the check must give the model back in the mode it found it"


# ---------------------------------------------------------------- op substitution
def test_hardswish_becomes_relu6_where_hardsigmoid_is_missing() -> None:
    arm = load_target("cpu-arm")
    assert "HardSigmoid" not in arm.ops_allow and "Clip" in arm.ops_allow
    ops = Ops.for_target(arm.ops_allow, act="hardswish")
    assert ops.act == "relu6"
    assert len(ops.notes) == 1 and "hardswish" in ops.notes[0] and "relu6" in ops.notes[0]
    model = create_student("mbv2-tiny", in_channels=1, num_classes=10, target_ops=arm.ops_allow)
    kinds = ops_of(model)
    assert nn.ReLU6 in kinds and nn.Hardswish not in kinds
    assert model.ops_notes == list(ops.notes)
    used = check_student_ops(model, input_shape=DIGITS, target=arm)
    assert "Clip" in used and "HardSigmoid" not in used


def test_hardswish_kept_where_the_target_has_it() -> None:
    ops = Ops.for_target(BASIC | {"HardSigmoid", "Mul"}, act="hardswish")
    assert (ops.act, ops.pool, ops.notes) == ("hardswish", "max", ())
    assert Ops.for_target(None, act="hardswish").act == "hardswish"  # no target: no restriction


def test_substitution_falls_through_to_relu_and_avg_pool() -> None:
    ops = Ops.for_target(BASIC - {"MaxPool"} | {"AveragePool"}, act="hardswish")
    assert (ops.act, ops.pool) == ("relu", "avg")
    assert isinstance(ops.act_module(), nn.ReLU) and isinstance(ops.pool_module(), nn.AvgPool2d)
    assert Ops.for_target(BASIC, act="relu").notes == ()


def test_head_reshapes_where_flatten_is_missing() -> None:
    coreml = load_target("apple-coreml")
    assert "Flatten" not in coreml.ops_allow
    ops = Ops.for_target(coreml.ops_allow, act="relu")
    assert any("Flatten" in n for n in ops.notes)
    model = create_student("tiny-cnn", in_channels=1, num_classes=10, target_ops=coreml.ops_allow)
    used = check_student_ops(model, input_shape=DIGITS, target=coreml)
    assert "Flatten" not in used and "Reshape" in used
    with pytest.raises(BadInput, match="head"):
        Ops.for_target(BASIC - {"Flatten"})  # neither Flatten nor Reshape


def test_no_activation_or_pool_is_bad_input_listing_the_choices() -> None:
    with pytest.raises(BadInput) as e:
        Ops.for_target(frozenset({"Conv", "MaxPool"}))
    for name in ACTIVATIONS:
        assert name in str(e.value)
    assert "Clip" in str(e.value) and "Relu" in str(e.value)
    with pytest.raises(BadInput, match="pooling.*MaxPool.*AveragePool"):
        Ops.for_target(frozenset({"Relu"}))


def test_unknown_activation_is_bad_input() -> None:
    with pytest.raises(BadInput, match="relu6"):
        student_net(in_channels=1, num_classes=10, act="gelu")


def test_unknown_names_are_bad_input_listing_the_valid_ones() -> None:
    with pytest.raises(BadInput) as e:
        create_student("tiny-cnnn", in_channels=1, num_classes=10)
    assert "did you mean 'tiny-cnn'" in str(e.value) and all(s in str(e.value) for s in STUDENTS)
    with pytest.raises(BadInput) as e:
        create_teacher("resnet19", in_channels=1, num_classes=10)
    assert all(t in str(e.value) for t in TEACHERS)
    with pytest.raises(BadInput, match="unknown block 'transformer'; valid: conv, dw, ir"):
        student_net(in_channels=1, num_classes=10, block="transformer")


# ---------------------------------------------------------------- teachers
@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)], ids=["1x8x8", "1x28x28", "3x32x32"])
@pytest.mark.parametrize("name", list(TEACHERS))
def test_every_teacher_gives_logits(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_teacher(name, in_channels=shape[0], num_classes=7).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *shape))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


def test_model_mflops_counts_conv_and_linear_by_hand() -> None:
    # conv 1→4, 3×3, pad 1 on 6×6: 36 outputs × 4 channels × 9 MACs; stride 2 → 3×3 outputs; linear 4→5
    m = nn.Sequential(nn.Conv2d(1, 4, 3, 1, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1, groups=4),
                      nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).train()
    macs = 36 * 4 * 9 + 9 * 4 * 9 + 4 * 5
    assert model_mflops(m, (1, 6, 6)) == pytest.approx(2 * macs / 1e6)
    assert m.training  # the count runs in eval mode and restores the mode


def test_teacher_costs_list_every_teacher_and_resnet_s_downsamples_early() -> None:
    costs = {r["teacher"]: r for r in teacher_costs((1, 28, 28))}
    assert set(costs) == set(TEACHERS)
    assert all(r["params"] > 0 and r["mflops"] > 0 for r in costs.values())
    # the point of resnet-s: at 28×28 it costs under a fifth of the full-resolution VGG-style cnn
    assert costs["resnet-s"]["mflops"] < costs["cnn"]["mflops"] / 5
    # cost scales with the input: 4× the pixels, about 4× the work
    big = {r["teacher"]: r for r in teacher_costs((1, 56, 56))}
    assert big["resnet-s"]["mflops"] == pytest.approx(4 * costs["resnet-s"]["mflops"], rel=0.15)
    # after the stem, resnet-s works at 14×14 and below
    model = create_teacher("resnet-s", in_channels=1, num_classes=10)
    sizes = []
    hooks = [b.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1])) for b in model.features]
    model.eval()(torch.zeros(1, 1, 28, 28))
    for h in hooks:
        h.remove()
    assert sizes[0] == 28 and max(sizes[1:]) == 14 and sizes[-1] == 4


def test_teachers_command_lists_costs_and_the_default(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from edgekd.cli import app

    r = CliRunner().invoke(app, ["teachers", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["input_shape"] == [1, 8, 8] and out["default"] == "cnn"
    assert [t["teacher"] for t in out["teachers"]] == list(TEACHERS)


# ---------------------------------------------------------------- params
def test_count_params() -> None:
    assert count_params(nn.Linear(3, 4)) == 16
    assert count_params(nn.Conv2d(1, 2, 3, bias=False)) == 18
    assert count_params(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))) == 16 + 8  # BN: weight + bias
    # tiny-cnn on 1 channel, 10 classes, by hand: stem conv 1→8 (72) + BN (16), conv 8→8 (576) + BN (16),
    # conv 8→16 (1152) + BN (32), head 16→10 (170)
    model = create_student("tiny-cnn", in_channels=1, num_classes=10, target_ops=load_target("cpu-arm").ops_allow)
    assert count_params(model) == 72 + 16 + 576 + 16 + 1152 + 32 + 170


def test_width_multiplier_changes_the_size() -> None:
    small = create_student("small-cnn", in_channels=1, num_classes=10)
    wide = create_student("small-cnn", in_channels=1, num_classes=10, width_mult=2.0)
    assert count_params(wide) > 3 * count_params(small)
