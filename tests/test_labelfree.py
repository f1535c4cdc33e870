"""--labeled-fraction 0: distillation from the teacher alone.

No training label is read: the train split's labels are replaced by values that raise when
anything touches them (reading `targets`, comparing, converting to int), and the run still
finishes. There is no student-alone control: distill.json, the table and the report show the
student against the teacher (accuracy on the labeled test images, top-1 agreement), and what
needs a label (ce, deep mutual learning, born-again, a registry teacher) is refused with one line.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch.utils.data import Dataset

import edgekd.train.distill as distill_mod
from edgekd.train.config import DistillConfig, load_bundle
from edgekd.train.distill import distill

from helpers.imagegen import export_onnx_teacher, make_imagefolder, tiny_teacher


class Poison:
    """A label that fails the test the moment anything reads it."""

    def _read(self, *_):
        raise AssertionError("a training label was read in a label-free run")

    __int__ = __index__ = __eq__ = __ne__ = __lt__ = __hash__ = __bool__ = __float__ = _read


class NoLabels(Dataset):
    """The train split with every label poisoned (and no `targets` to read them from)."""

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        return self.base[i][0], Poison()

    @property
    def targets(self):
        raise AssertionError("the train labels were read in a label-free run")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("labelfree")
    data = make_imagefolder(root / "images", n=20, size=16)
    torch.set_num_threads(1)
    net = tiny_teacher(data)
    return {"data": f"imagefolder:{data}", "onnx": export_onnx_teacher(net, root / "t.onnx", head="probabilities")}


def cfg_for(world, tmp_path, **kw) -> DistillConfig:
    return DistillConfig(**{**dict(data=world["data"], input_size=16, teacher=str(world["onnx"]), teacher_mean="0.5",
                                   teacher_std="0.5", student="tiny-cnn", epochs=3, seeds=2, labeled_fraction=0.0,
                                   methods=None, run=tmp_path / "run", progress=False), **kw})


def test_no_training_label_is_read_and_there_is_no_control(world, tmp_path, monkeypatch):
    real = load_bundle

    def poisoned(cfg):
        b = real(cfg)
        return replace(b, train=NoLabels(b.train))

    monkeypatch.setattr(distill_mod, "load_bundle", poisoned)
    s = distill(cfg_for(world, tmp_path))
    assert s["methods"] == ["soft:1.0"]                      # the default without labels: no ce term
    assert s["accuracy"]["student_alone"] is None and s["gap_closed"] is None
    assert all("student_alone" not in r for r in s["per_seed"])
    assert s["verdict"]["distillation"] == "label-free" and "skipped" in s["verdict"]["note"]
    agree = s["accuracy"]["agreement"]
    assert agree["n"] == 2 and 0 <= agree["mean"] <= 1
    assert not (tmp_path / "run" / "student_alone.pt").exists() and (tmp_path / "run" / "student.pt").exists()
    phases = {json.loads(line)["phase"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()}
    assert not any(p.startswith("alone") for p in phases)


def test_table_and_report_show_the_student_against_the_teacher(world, tmp_path, edgekd_main):
    r = edgekd_main("distill", "--data", world["data"], "--input-size", "16", "--teacher", str(world["onnx"]),
                    "--teacher-mean", "0.5", "--teacher-std", "0.5", "--student", "tiny-cnn", "--epochs", "1",
                    "--seeds", "1", "--labeled-fraction", "0", "--run", str(tmp_path / "run"), "--quiet")
    assert r.code == 0, r.err
    assert "student alone" not in r.out and "agreement with the teacher" in r.out and "label-free" in r.out
    assert edgekd_main("report", str(tmp_path / "run")).code == 0
    page = (tmp_path / "run" / "report.html").read_text()
    assert "student alone" not in page and "top-1 agreement with the teacher" in page and "label-free" in page
    assert edgekd_main("export", "--target", "cpu-arm", "--run", str(tmp_path / "run")).code == 0
    m = json.loads((tmp_path / "run" / "cpu-arm" / "manifest.json").read_text())
    assert m["accuracy"]["student_alone"] is None and 0 <= m["accuracy"]["agreement"] <= 1


@pytest.mark.parametrize("extra,named", [
    (("--method", "soft", "--method", "ce"), "--method ce"),
    (("--online",), "--online"),
    (("--generations", "1"), "--generations"),
])
def test_what_needs_labels_is_refused_with_one_line(world, tmp_path, edgekd_main, extra, named):
    r = edgekd_main("distill", "--data", world["data"], "--input-size", "16", "--teacher", str(world["onnx"]),
                    "--labeled-fraction", "0", "--run", str(tmp_path / "run"), *extra)
    [line] = [x for x in r.err.splitlines() if x.startswith("edgekd:")]
    assert r.code == 2 and named in line and "--labeled-fraction 0" in line and "Traceback" not in r.err
    assert not (tmp_path / "run").exists()


def test_a_registry_teacher_is_refused_without_labels(tmp_path, edgekd_main):
    r = edgekd_main("distill", "--teacher", "cnn-small", "--labeled-fraction", "0", "--run", str(tmp_path / "run"))
    assert r.code == 2 and "registry teacher is trained on labels" in r.err and not (tmp_path / "run").exists()


def test_labeled_fraction_out_of_range_names_the_range(tmp_path, edgekd_main):
    r = edgekd_main("distill", "--labeled-fraction", "-0.1", "--run", str(tmp_path / "run"))
    assert r.code == 2 and "in [0, 1]" in r.err


def test_compare_refuses_no_labels_with_one_line(world, tmp_path, edgekd_main):
    r = edgekd_main("compare", "--data", world["data"], "--teacher", str(world["onnx"]), "--labeled-fraction", "0",
                    "--run", str(tmp_path / "run"))
    assert r.code == 2 and "--labeled-fraction 0" in r.err and not (tmp_path / "run").exists()
