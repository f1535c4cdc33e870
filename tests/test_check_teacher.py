"""check-teacher and the check distill runs first: what the teacher takes and returns, its cost,
its accuracy in the stated view, its host p50; a wrong mean/std is flagged with the accuracy, a
permuted class order is detected and named, and `--class-order` fixes it.

The teacher is a small CNN trained on a generated 3-class ImageFolder at 16 px with mean = std =
0.5 (not the data's statistics), exported to ONNX with a Softmax at the end.
"""

from __future__ import annotations

import json

import pytest
import torch

from edgekd.models import count_params, model_mflops
from edgekd.train.check_teacher import below_control, class_order_check

from helpers.imagegen import CLASSES, export_onnx_teacher, make_imagefolder, tiny_teacher

VIEW = ("--teacher-mean", "0.5", "--teacher-std", "0.5")
ORDER = [2, 0, 1]   # the permuted teacher's output i is data class ORDER[i]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("check")
    data = make_imagefolder(root / "images", n=20, size=16)
    torch.set_num_threads(1)
    net = tiny_teacher(data)
    permuted = tiny_teacher(data)   # same seed: the same weights, then its head's rows reordered
    with torch.no_grad():
        head = permuted[-1]
        head.weight.copy_(net[-1].weight[ORDER])
        head.bias.copy_(net[-1].bias[ORDER])
    return {"data": f"imagefolder:{data}", "net": net, "root": root,
            "onnx": export_onnx_teacher(net, root / "probs.onnx", head="probabilities"),
            "permuted": export_onnx_teacher(permuted, root / "permuted.onnx", head="probabilities")}


def check(edgekd_main, world, teacher, *extra):
    r = edgekd_main("check-teacher", "--teacher", str(teacher), "--data", world["data"], "--input-size", "16",
                    *extra, "--json")
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_check_teacher_reports_io_cost_accuracy_and_host_p50(edgekd_main, world):
    out = check(edgekd_main, world, world["onnx"], *VIEW)
    c = out["teachers"][0]
    assert c["takes"] == {"name": "input", "shape": ["batch", 3, 16, 16], "dtype": "tensor(float)"}
    assert c["returns"]["kind"] == "probabilities" and "Softmax" in c["returns"]["how"]
    assert c["params"] == count_params(world["net"])
    assert c["mflops"] == pytest.approx(model_mflops(world["net"], (3, 16, 16)), abs=0.01)
    assert c["accuracy"] >= 0.9 and c["scored_on"]["split"] == "val" and c["scored_on"]["n"] == 12
    assert c["host_p50_ms"] > 0
    assert out["warnings"] == [] and c["best_class_order"] == [0, 1, 2]


def test_wrong_mean_std_is_flagged_with_the_accuracy(edgekd_main, world):
    good = check(edgekd_main, world, world["onnx"], *VIEW)["teachers"][0]["accuracy"]
    out = check(edgekd_main, world, world["onnx"], "--teacher-mean", "0.9", "--teacher-std", "0.05")
    acc = out["teachers"][0]["accuracy"]
    assert acc < good and acc <= 2 / len(CLASSES)
    [w] = out["warnings"]
    assert f"{100 * acc:.1f}%" in w and "preprocessing mismatch" in w and "mean 0.9,0.9,0.9" in w
    table = edgekd_main("check-teacher", "--teacher", str(world["onnx"]), "--data", world["data"], "--input-size", "16",
                        "--teacher-mean", "0.9", "--teacher-std", "0.05")
    assert table.code == 0 and "WARNING" in table.out and "preprocessing mismatch" in table.out


def test_distill_runs_the_check_first_and_reports_the_warning(edgekd_main, world, tmp_path):
    r = edgekd_main("distill", "--teacher", str(world["onnx"]), "--data", world["data"], "--input-size", "16",
                    "--teacher-mean", "0.9", "--teacher-std", "0.05", "--student", "tiny-cnn", "--epochs", "1",
                    "--seeds", "1", "--run", str(tmp_path / "run"), "--quiet")
    assert r.code == 0, r.err
    assert "WARNING" in r.err and "preprocessing mismatch" in r.err      # before training, on stderr
    assert "WARNING" in r.out                                             # and above the table
    s = json.loads((tmp_path / "run" / "distill.json").read_text())
    assert s["teacher_check"][0]["accuracy"] <= 2 / 3
    assert any("preprocessing mismatch" in w for w in s["warnings"])
    page = edgekd_main("report", str(tmp_path / "run"))
    assert page.code == 0
    assert "preprocessing mismatch" in (tmp_path / "run" / "report.html").read_text()


def test_a_permuted_class_order_is_detected_named_and_fixed(edgekd_main, world):
    out = check(edgekd_main, world, world["permuted"], *VIEW)
    c = out["teachers"][0]
    assert c["best_class_order"] == ORDER and c["best_order_accuracy"] >= 0.9 and c["accuracy"] < 0.5
    [w] = out["warnings"]
    assert "--class-order 2,0,1" in w and "stripes_v,blob,stripes_h" in w
    for given in ("2,0,1", "stripes_v,blob,stripes_h"):
        fixed = check(edgekd_main, world, world["permuted"], *VIEW, "--class-order", given)
        assert fixed["warnings"] == [] and fixed["teachers"][0]["accuracy"] == c["best_order_accuracy"]
        assert fixed["teachers"][0]["class_order"] == ORDER


def test_class_order_is_applied_to_what_distill_learns_from(edgekd_main, world, tmp_path):
    r = edgekd_main("distill", "--teacher", str(world["permuted"]), "--data", world["data"], "--input-size", "16",
                    *VIEW, "--class-order", "2,0,1", "--student", "tiny-cnn", "--epochs", "1", "--seeds", "1",
                    "--run", str(tmp_path / "run"), "--quiet", "--json")
    assert r.code == 0, r.err
    s = json.loads(r.out)
    assert s["teacher"]["class_order"] == ORDER and s["warnings"] == []
    assert s["accuracy"]["teacher"] >= 0.9


@pytest.mark.parametrize("order", ["0,0,1", "0,1", "0,1,3", "blob,stripes_h,nope"])
def test_a_bad_class_order_is_exit_2_one_line(edgekd_main, world, order):
    r = edgekd_main("check-teacher", "--teacher", str(world["onnx"]), "--data", world["data"], "--input-size", "16",
                    "--class-order", order)
    [line] = [x for x in r.err.splitlines() if x.startswith("edgekd:")]
    assert r.code == 2 and "Traceback" not in r.err and "--class-order" in line and "permutation" in line


def test_a_registry_teacher_is_not_checked(edgekd_main, world):
    r = edgekd_main("check-teacher", "--teacher", "cnn-small", "--data", world["data"])
    assert r.code == 2 and "trained by distill" in r.err


def test_class_order_check_is_an_assignment_over_the_confusion_matrix():
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 2]).numpy()
    pred = torch.tensor([1, 1, 2, 2, 0, 0, 1]).numpy()   # the teacher calls class 0 "1", 1 "2", 2 "0"
    r = class_order_check(pred, labels, 3, None)
    assert r["accuracy"] == 0 and r["best_accuracy"] == pytest.approx(6 / 7)
    assert r["best_order"] == [2, 0, 1]   # output 0 is class 2, output 1 class 0, output 2 class 1
    # in the terms of an order already given: composed with it
    assert class_order_check(pred, labels, 3, [1, 2, 0])["best_order"] == [0, 1, 2]


def test_below_the_control_is_flagged():
    assert below_control(0.80, 0.90, "t.onnx") and "below the student trained alone" in below_control(0.8, 0.9, "t")[0]
    assert below_control(0.95, 0.90, "t.onnx") == [] and below_control(0.5, None, "t") == []


def test_check_teacher_api(world):
    import edgekd

    r = edgekd.check_teacher(teacher=str(world["onnx"]), data=world["data"], input_size=16, teacher_mean="0.5",
                             teacher_std="0.5")
    assert r.accuracy >= 0.9 and r.warnings == [] and r.to_json()["teachers"][0]["returns"]["kind"] == "probabilities"


@pytest.mark.parametrize("option", [("--class-order", "1,0,2,3,4,5,6,7,8,9"),
                                    ("--teacher-outputs", "probabilities")])
def test_teacher_output_options_for_a_registry_teacher_are_refused(edgekd_main, tmp_path, option):
    r = edgekd_main("distill", "--teacher", "cnn-small", *option, "--run", str(tmp_path / "run"))
    assert r.code == 2 and option[0] in r.err and "trained by this run" in r.err
    assert not (tmp_path / "run").exists()
