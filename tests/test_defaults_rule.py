"""The data-dependent defaults (`defaults.recipe`), how distill applies them, and the verdict
distill gives when distillation loses to training alone."""

from __future__ import annotations

import pytest

from edgekd import defaults
from edgekd.errors import BadInput
from edgekd.train.config import FROM_DATA, DistillConfig
from edgekd.train.distill import verdict


class FakeBundle:
    def __init__(self, n: int, shape: tuple[int, int, int]):
        self.train, self.input_shape, self.num_classes = range(n), shape, 10


def test_digits_keep_the_defaults_they_were_tuned_with():
    r = defaults.recipe(n_train=1077, input_shape=(1, 8, 8), num_classes=10)
    assert r == {"teacher": defaults.TEACHER, "student": defaults.STUDENT, "epochs": defaults.EPOCHS,
                 "teacher_epochs": defaults.TEACHER_EPOCHS, "temperature": defaults.TEMPERATURE,
                 "methods": defaults.METHODS}


def test_fashion_mnist_gets_the_strided_teacher_a_wider_student_and_fewer_epochs():
    r = defaults.recipe(n_train=54_000, input_shape=(1, 28, 28), num_classes=10)
    assert (r["teacher"], r["student"]) == ("resnet-s", "wide-cnn")
    assert r["epochs"] == 4 and r["teacher_epochs"] == 4     # 216k / 54k images
    # the epoch budget is in images: a bigger set gets fewer epochs, never fewer than the floor
    assert defaults.recipe(n_train=10**7, input_shape=(3, 32, 32), num_classes=10)["epochs"] == defaults.EPOCH_RANGE[0]
    # a small set of 28-32 px images: the strided teacher and the wider student too (capacity, not labels)
    r = defaults.recipe(n_train=500, input_shape=(3, 32, 32), num_classes=2)
    assert (r["teacher"], r["student"], r["epochs"]) == ("resnet-s", "wide-cnn", defaults.EPOCHS)
    # larger inputs (--input-size 64 and up): a student whose strided stem keeps its MACs flat
    for side in (33, 64, 224):
        assert defaults.recipe(n_train=500, input_shape=(3, side, side), num_classes=2)["student"] == "small-cnn-s"
    # a small set of small images (the 16x16 RGB re-encoding of digits) keeps both small
    r = defaults.recipe(n_train=1077, input_shape=(3, 16, 16), num_classes=10)
    assert (r["teacher"], r["student"]) == (defaults.TEACHER, defaults.STUDENT)


def test_every_default_the_rule_names_is_registered():
    from edgekd.models import STUDENTS, TEACHERS
    from edgekd.train.losses import build_objective

    for n, shape in ((1077, (1, 8, 8)), (54_000, (1, 28, 28)), (50_000, (3, 32, 32))):
        r = defaults.recipe(n_train=n, input_shape=shape, num_classes=10)
        assert r["teacher"] in TEACHERS and r["student"] in STUDENTS
        build_objective(list(r["methods"]), temperature=r["temperature"])


def test_for_data_fills_only_what_was_left_unset():
    unset = DistillConfig(**{k: None for k in FROM_DATA})
    filled = unset.for_data(FakeBundle(54_000, (1, 28, 28)))
    assert (filled.teacher, filled.student, filled.epochs) == ("resnet-s", "wide-cnn", 4)
    given = DistillConfig(teacher="cnn", student=None, epochs=2, methods=None, temperature=None, teacher_epochs=None)
    filled = given.for_data(FakeBundle(54_000, (1, 28, 28)))
    assert (filled.teacher, filled.student, filled.epochs, filled.teacher_epochs) == ("cnn", "wide-cnn", 2, 4)
    # the API's plain DistillConfig() keeps its concrete (digits) values
    assert DistillConfig().for_data(FakeBundle(54_000, (1, 28, 28))).teacher == defaults.TEACHER
    DistillConfig(**{k: None for k in FROM_DATA}).validate()   # unset options pass validation


def test_cli_leaves_the_rule_options_unset(monkeypatch, edgekd_main):
    """`edgekd distill` without --teacher/--student/--epochs/...: those reach distill as None."""
    import edgekd.train.distill as d

    seen = {}

    def capture(cfg):
        seen["cfg"] = cfg
        raise BadInput("captured")

    monkeypatch.setattr(d, "distill", capture)
    assert edgekd_main("distill", "--no-progress").code == 2
    assert all(getattr(seen["cfg"], k) is None for k in FROM_DATA)
    assert edgekd_main("distill", "--epochs", "2", "--teacher", "cnn-small", "--no-progress").code == 2
    assert (seen["cfg"].epochs, seen["cfg"].teacher, seen["cfg"].student) == (2, "cnn-small", None)


def row(seed, alone, kd, alone_val, kd_val):
    return {"seed": seed, "student_alone": alone, "student": kd, "student_alone_val": alone_val, "student_val": kd_val}


def ms(xs):
    import numpy as np

    return {"mean": float(np.mean(xs)), "std": float(np.std(xs, ddof=1))}


def test_verdict_says_when_distillation_lost_and_recommends_the_control():
    rows = [row(0, 0.90, 0.86, 0.91, 0.87), row(1, 0.91, 0.87, 0.90, 0.86)]
    v = verdict(rows, ms([0.90, 0.91]), ms([0.86, 0.87]))
    assert v["distillation"] == "lost" and v["delta"] == pytest.approx(-0.04)
    assert v["recommended_student"] == "student_alone.pt"


def test_verdict_within_spread_and_helped():
    rows = [row(0, 0.90, 0.91, 0.90, 0.91), row(1, 0.92, 0.90, 0.92, 0.90)]
    v = verdict(rows, ms([0.90, 0.92]), ms([0.91, 0.90]))
    assert v["distillation"] == "within spread" and v["recommended_student"] == "student_alone.pt"
    rows = [row(0, 0.80, 0.90, 0.80, 0.90), row(1, 0.81, 0.91, 0.81, 0.91)]
    v = verdict(rows, ms([0.80, 0.81]), ms([0.90, 0.91]))
    assert v["distillation"] == "helped" and v["recommended_student"] == "student.pt"


def test_the_table_says_distillation_lost():
    from rich.console import Console

    from edgekd.tables import distill_table

    rows = [row(0, 0.90, 0.86, 0.91, 0.87)]
    s = {"data": {"name": "digits", "num_classes": 10, "input_shape": [1, 8, 8], "labels": [], "preprocessing": {}},
         "target": "cpu-arm", "objective": "kd", "epochs": 1, "seeds": 1, "per_seed": [],
         "labeled_fraction": 1.0, "teacher": {"arch": "cnn", "params": 10, "mflops": 57.0},
         "student": {"arch": "small-cnn", "params": 5, "chosen_seed": 0},
         "accuracy": {"teacher": 0.95, "student_alone": ms([0.90, 0.90]), "student": ms([0.86, 0.86])},
         "gap_closed": -0.8, "verdict": verdict(rows, {"mean": 0.90, "std": 0.0}, {"mean": 0.86, "std": 0.0})}
    console = Console(width=200, record=True)
    console.print(distill_table(s))
    text = console.export_text()
    assert "distillation LOST to the student alone: -4.00 points" in text and "student_alone.pt" in text
    assert "57 MFLOPs" in text


def test_the_manifest_names_the_student_distill_recommends():
    from types import SimpleNamespace

    from edgekd.deploy.export import _student_choice

    def run(verdict):  # the one attribute of a DistillSummary that _student_choice reads
        return SimpleNamespace(verdict=verdict)

    lost = verdict([row(0, 0.90, 0.86, 0.91, 0.87)], {"mean": 0.90, "std": 0.0}, {"mean": 0.86, "std": 0.0})
    c = _student_choice(run(lost))
    assert (c["exported"], c["recommended"], c["distillation"]) == ("student.pt", "student_alone.pt", "lost")
    assert "student_alone.pt" in c["note"]
    helped = verdict([row(0, 0.80, 0.90, 0.80, 0.90)], {"mean": 0.80, "std": 0.0}, {"mean": 0.90, "std": 0.0})
    assert _student_choice(run(helped))["recommended"] == "student.pt"
    assert _student_choice(run(None))["recommended"] == "student.pt"   # a run from before the verdict existed
