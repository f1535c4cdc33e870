"""distill tells the user which method to try: when distillation is within spread or loses, its closing
line, distill.json and the report name the `edgekd compare` command that measures the modern logit
methods on the user's data; and that compare runs them with the teacher cached once for all.
"""

from __future__ import annotations

import html
import json
import re
import shlex

import pytest

from edgekd.errors import BadInput
from edgekd.train.advice import LOGIT, compare_command, suggestion
from edgekd.train.config import DistillConfig

NO_SPACE = re.compile(r"\s")


def test_compare_command_carries_the_users_data_teacher_student_and_budget():
    cfg = DistillConfig(data="imagefolder:/data/my photos", teacher="resnet-s", student="wide-cnn", epochs=8,
                        temperature=4.0, seeds=3, labeled_fraction=0.1, target="cpu-arm")
    cmd = compare_command(cfg)
    assert cmd == ("edgekd compare --data 'imagefolder:/data/my photos' --teacher resnet-s --student wide-cnn "
                   "--target cpu-arm --epochs 8 --temperature 4 --seeds 3 --labeled-fraction 0.1 "
                   "--method soft --method dkd --method dist --method ttm --method soft.standardize=true")
    assert shlex.split(cmd)[3] == "imagefolder:/data/my photos"


def test_suggestion_only_when_distillation_did_not_help(tmp_path):
    cfg = DistillConfig(data="digits", teacher=["cnn", "my/teacher.onnx"], student="small-cnn", epochs=30,
                        temperature=4.0, seeds=3)
    assert suggestion(cfg, tmp_path, {"distillation": "helped"}) is None
    for outcome in ("within spread", "lost"):
        cmd = suggestion(cfg, tmp_path, {"distillation": outcome})
        # the registry teacher this run trained is reused from its file, not trained again
        assert f"--teacher {tmp_path / 'teacher.pt'} --teacher my/teacher.onnx " in cmd
        assert cmd.endswith(" ".join(f"--method {m}" for m in LOGIT))


def test_the_suggestion_carries_what_each_model_sees_and_how_the_teacher_reads(tmp_path):
    """A non-square student, a foreign teacher with its own view, outputs and class order: compare must
    measure the same problem, so each of those options is in the command; a label-free run gets none
    (compare needs labels for its student-alone control)."""
    cfg = DistillConfig(data="imagefolder:strips", teacher="torchvision:resnet18", teacher_weight_files=("w.pt",),
                        input_size=(16, 64), resize="pad", teacher_input_size=(48, 192), teacher_mean="imagenet",
                        teacher_std="imagenet", teacher_outputs="probabilities", class_order="1,0", epochs=5, seeds=3)
    args = shlex.split(suggestion(cfg, tmp_path, {"distillation": "lost"}))
    pairs = dict(zip(args[2::2], args[3::2]))
    assert pairs["--input-size"] == "16x64" and pairs["--resize"] == "pad"
    assert pairs["--teacher-input-size"] == "48x192" and pairs["--teacher-mean"] == "imagenet"
    assert pairs["--teacher-weights"] == "w.pt" and pairs["--teacher"] == "torchvision:resnet18"
    assert pairs["--teacher-outputs"] == "probabilities" and pairs["--class-order"] == "1,0"
    assert suggestion(cfg, tmp_path, {"distillation": "label-free"}) is None
    from typer.testing import CliRunner

    from edgekd.cli import app

    helptext = CliRunner().invoke(app, ["compare", "--help"], terminal_width=400).output
    assert all(flag in helptext for flag in pairs), "compare must accept every flag distill suggests"


def test_distill_names_the_compare_command_when_it_does_not_help(edgekd_main, tmp_path):
    """`--method ce` trains the "distilled" student exactly as the control (same seed, data, steps), so the
    outcome is "within spread" on any machine; the closing line, distill.json and the report then name the
    compare command, whose every option compare accepts."""
    import typer

    from edgekd import cli

    run = tmp_path / "run"
    r = edgekd_main("distill", "--method", "ce", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "1",
                    "--teacher", "cnn-small", "--no-progress", "--run", run)
    assert r.code == 0, r.err
    v = json.loads((run / "distill.json").read_text())["verdict"]
    assert v["distillation"] == "within spread" and v["delta"] == 0.0
    want = (f"edgekd compare --data digits --teacher {run / 'teacher.pt'} --student small-cnn --target cpu-arm "
            f"--epochs 1 --temperature 4 --seeds 1 --labeled-fraction 1 "
            + " ".join(f"--method {m}" for m in LOGIT))
    assert v["try"] == want
    assert NO_SPACE.sub("", want) in NO_SPACE.sub("", r.out)      # the closing line (rich may wrap it)
    flags = {o for p in typer.main.get_command(cli.app).commands["compare"].params for o in p.opts}
    assert {a for a in shlex.split(want) if a.startswith("--")} <= flags
    assert edgekd_main("report", run).code == 0
    page = html.unescape((run / "report.html").read_text())
    assert "within spread" in page and want in page

    # ... and that command's table: the logit methods, the teacher's logits cached once for all five rows
    from edgekd import api

    args = shlex.split(want)
    out = api.compare(data="digits", teacher=str(run / "teacher.pt"), epochs=1, seeds=1, methods=list(LOGIT),
                      run=tmp_path / "cmp", progress=False)
    assert args[args.index("--teacher") + 1] == str(run / "teacher.pt")
    res = out.to_json()
    assert [row["method"] for row in res["rows"]] == ["teacher", "student alone", *LOGIT]
    assert res["teacher_cache"]["built"] == 1
    rows = {row["method"]: row for row in res["rows"]}
    assert rows["dkd"]["objective"] == "1·dkd + 1·ce" and rows["ttm"]["objective"] == "1·ttm + 1·ce"
    for m in LOGIT:
        assert {"gap_closed", "beats_alone_beyond_std", "seconds"} <= set(rows[m])
    # the option reached that row's loss (a bad one is refused by the loss itself: see below)
    assert rows["soft.standardize=true"]["loss_options"] == {"soft": {"standardize": True}}
    assert rows["soft"]["loss_options"] == {}


@pytest.mark.parametrize("spec,match", [
    ("dkdd", "unknown compare method 'dkdd'"),
    ("dml.peers=3", "'dml' is not one loss"),
    ("soft.standardize", "expected NAME.KEY=VALUE"),
])
def test_compare_method_specs_are_checked(spec, match):
    from edgekd.train.compare import method_overrides

    with pytest.raises(BadInput, match=match):
        method_overrides(spec)


def test_compare_method_options_reach_the_loss():
    from edgekd.train.compare import method_overrides

    assert method_overrides("ttm.wttm=true,gamma=0.1") == {"methods": ("ttm:1.0", "ce:1.0"),
                                                           "loss_options": {"ttm": {"wttm": True, "gamma": 0.1}}}
    assert method_overrides("soft") == {"methods": ("soft:0.7", "ce:0.3")}


def test_a_bad_loss_option_in_compare_is_refused_before_any_training(tmp_path):
    from edgekd import api

    with pytest.raises(BadInput, match="dkd.warmup"):
        api.compare(data="digits", methods=["dkd.warmup=2"], epochs=1, seeds=1, run=tmp_path / "cmp", progress=False)
    assert not (tmp_path / "cmp").exists()
