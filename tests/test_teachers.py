"""Bring your own teacher: torchvision/timm architecture + weights, TorchScript, ONNX, edgekd .pt.

One torchvision resnet18 is fine-tuned (a few steps, standard stem) on a generated 3-class
ImageFolder and saved in every form a user might bring; every kind distils end to end, the three
forms of the same teacher give the same logits and the same student, and every malformed input
is exit 2 with one line and no run folder.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from edgekd.errors import BadInput
from edgekd.models.foreign import TeacherSpec, View, load_teacher_spec, parse_specs, read_state_dict
from edgekd.train.config import DistillConfig, load_bundle
from edgekd.train.distill import distill

from helpers.imagegen import finetune_resnet18, make_imagefolder

STUDENT_PX, TEACHER_PX = 16, 32   # resolution distillation: the teacher sees 2× the student's size


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The data, and one fine-tuned resnet18 saved as every kind of teacher file."""
    from edgekd.models import create_teacher, write_onnx

    root = tmp_path_factory.mktemp("byot")
    data = make_imagefolder(root / "images", n=12, size=TEACHER_PX)
    torch.set_num_threads(1)
    model = finetune_resnet18(data, size=TEACHER_PX, steps=4)
    sd = model.state_dict()
    files = {"state_dict": root / "r18.pt", "checkpoint": root / "r18_ckpt.pth", "compiled": root / "r18_compiled.pt",
             "torchscript": root / "r18.ts", "onnx": root / "r18.onnx", "edgekd": root / "edgekd_teacher.pt"}
    torch.save(sd, files["state_dict"])
    torch.save({"epoch": 4, "model_state_dict": {f"module.{k}": v for k, v in sd.items()}}, files["checkpoint"])
    torch.save({"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}}, files["compiled"])
    torch.jit.trace(model, torch.zeros(1, 3, TEACHER_PX, TEACHER_PX)).save(str(files["torchscript"]))
    write_onnx(model, str(files["onnx"]), input_shape=(3, TEACHER_PX, TEACHER_PX), opset=17)
    torch.manual_seed(0)
    small = create_teacher("cnn-small", in_channels=3, num_classes=3)
    torch.save({"kind": "teacher", "arch": "cnn-small", "in_channels": 3, "num_classes": 3,
                "model": small.state_dict()}, files["edgekd"])
    return {"data": data, "model": model, "root": root, **files}


def cfg_for(world, tmp_path: Path, teacher, weights=(), **kw) -> DistillConfig:
    base = dict(data=f"imagefolder:{world['data']}", input_size=STUDENT_PX, teacher_input_size=TEACHER_PX,
                teacher_mean="imagenet", teacher_std="imagenet", student="tiny-cnn", epochs=1, seeds=1,
                teacher_epochs=1, batch_size=12, run=tmp_path / "run", progress=False,
                teacher=teacher if isinstance(teacher, str) else tuple(teacher),
                teacher_weight_files=tuple(str(w) for w in weights))
    return DistillConfig(**{**base, **kw})


# ---------------------------------------------------------------- every kind, end to end
KINDS = {
    "torchvision": ("torchvision:resnet18", "state_dict"),
    "torchvision-checkpoint-ddp": ("torchvision:resnet18", "checkpoint"),
    "torchvision-compiled": ("torchvision:resnet18", "compiled"),
    "torchscript": ("torchscript", None),
    "onnx": ("onnx", None),
    "edgekd": ("edgekd", None),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_teacher_kind_distils_end_to_end(world, tmp_path, kind):
    teacher, weights = KINDS[kind]
    if weights is None:
        teacher, weights = str(world[teacher]), ()
    else:
        weights = (world[weights],)
    extra = {"teacher_input_size": None, "teacher_mean": None, "teacher_std": None} if kind == "edgekd" else {}
    s = distill(cfg_for(world, tmp_path, teacher, weights, **extra))
    assert s["teacher"]["kind"] == kind.split("-")[0]
    assert s["teacher"]["view"]["input_size"] == ([STUDENT_PX] * 2 if kind == "edgekd" else [TEACHER_PX] * 2)
    assert s["student"]["view"]["input_size"] == [STUDENT_PX] * 2
    assert (tmp_path / "run" / "student.pt").is_file() and (tmp_path / "run" / "distill.json").is_file()
    assert not (tmp_path / "run" / "teacher.pt").exists()  # nothing trained: the user's teacher is used as given
    if kind.startswith("torchvision"):
        # the fine-tuned teacher is far above chance on its own classes, through its own view
        assert s["accuracy"]["teacher"] > 0.5


def test_timm_teacher_distils_when_timm_is_installed(world, tmp_path):
    timm = pytest.importorskip("timm")  # an optional extra: tested where installed
    torch.manual_seed(0)
    m = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    torch.save({"model": m.state_dict()}, tmp_path / "timm.pt")
    s = distill(cfg_for(world, tmp_path, "timm:resnet10t", [tmp_path / "timm.pt"]))
    assert s["teacher"]["kind"] == "timm" and s["teacher"]["arch"] == "resnet10t"


def test_all_kinds_together_as_a_multi_teacher(world, tmp_path):
    teachers = ["torchvision:resnet18", str(world["onnx"]), str(world["torchscript"]), "torchvision:resnet18"]
    s = distill(cfg_for(world, tmp_path, teachers, [world["state_dict"], world["checkpoint"]]))
    assert [t["kind"] for t in s["teacher"]["all"]] == ["torchvision", "onnx", "torchscript", "torchvision"]
    assert "4 teachers" in s["objective"]


# ---------------------------------------------------------------- equivalence of the three forms
def _train_logits(cfg: DistillConfig, bundle) -> torch.Tensor:
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import check_teacher_paths, teacher_source

    models = [lt.model for lt in check_teacher_paths(cfg, bundle)]
    return teacher_source(cfg, bundle, models, build_objective(["soft"])).cache["logits"]


def test_same_teacher_as_torchvision_torchscript_and_onnx_gives_the_same_logits_and_student(world, tmp_path):
    forms = {"torchvision": ("torchvision:resnet18", [world["state_dict"]]),
             "torchscript": (str(world["torchscript"]), []), "onnx": (str(world["onnx"]), [])}
    cfgs = {k: cfg_for(world, tmp_path / k, t, w, methods=("soft:1.0",), epochs=2) for k, (t, w) in forms.items()}
    bundle = load_bundle(cfgs["torchvision"])
    logits = {k: _train_logits(c, bundle) for k, c in cfgs.items()}
    assert logits["torchvision"].shape == (len(bundle.train), 3)
    for k in ("torchscript", "onnx"):
        assert torch.allclose(logits[k], logits["torchvision"], atol=1e-4, rtol=0), \
            (k, float((logits[k] - logits["torchvision"]).abs().max()))
    # and the eager model itself, fed the train images at its own size and normalisation by hand, agrees
    from edgekd.models.foreign import convert
    from edgekd.train.teacher import data_view, teacher_data, views

    hi = teacher_data(cfgs["torchvision"], bundle)
    x = torch.stack([hi.train[i][0] for i in range(len(hi.train))])
    assert x.shape[-1] == TEACHER_PX
    with torch.no_grad():
        direct = world["model"](convert(x, data_view(hi), views(cfgs["torchvision"], bundle)[1]))
    assert torch.allclose(direct, logits["torchvision"], atol=1e-4)

    summaries = {k: distill(c) for k, c in cfgs.items()}
    states = {k: torch.load(tmp_path / k / "run" / "student.pt", weights_only=True)["model"] for k in forms}
    for k in ("torchscript", "onnx"):
        assert summaries[k]["accuracy"]["student"] == summaries["torchvision"]["accuracy"]["student"]
        worst = max(float((states[k][n].float() - v.float()).abs().max()) for n, v in states["torchvision"].items())
        assert worst < 1e-3, (k, worst)


def test_an_onnx_teacher_with_a_fixed_batch_runs_in_chunks_of_it(world, tmp_path):
    """The ONNX teacher's session is edgekd.runtime's; a graph whose batch axis is fixed at 1 is fed one
    sample at a time (the agent's run_chunked) and gives the eager model's logits for a batch of 5."""
    from edgekd.models import write_onnx

    path = tmp_path / "r18_b1.onnx"
    write_onnx(world["model"], str(path), input_shape=(3, TEACHER_PX, TEACHER_PX), opset=17, batch=1)
    view = View((TEACHER_PX, TEACHER_PX), (0.0,) * 3, (1.0,) * 3)
    loaded = load_teacher_spec(parse_specs([str(path)])[0], channels=3, num_classes=3, view=view)
    assert loaded.model.fixed_batch == 1
    x = torch.randn(5, 3, TEACHER_PX, TEACHER_PX, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.model(x), world["model"].eval()(x), atol=1e-4)


def test_a_recorded_teacher_is_its_onnx_file_or_its_loaded_model(world):
    """What bench times for a run's foreign teacher: the ONNX file itself, else the model (bench exports it)."""
    from edgekd.models.foreign import recorded_teacher

    view = View((TEACHER_PX, TEACHER_PX), (0.0,) * 3, (1.0,) * 3)
    onnx_spec = parse_specs([str(world["onnx"])])[0].to_dict()
    assert recorded_teacher(onnx_spec, channels=3, num_classes=3, view=view) == world["onnx"].resolve()
    tv_spec = parse_specs(["torchvision:resnet18"], [str(world["state_dict"])])[0].to_dict()
    model = recorded_teacher(tv_spec, channels=3, num_classes=3, view=view)
    assert isinstance(model, torch.nn.Module)
    x = torch.randn(2, 3, TEACHER_PX, TEACHER_PX)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), world["model"].eval()(x), atol=1e-5)


# ---------------------------------------------------------------- weights files
def test_weights_prefixes_and_checkpoint_keys_are_unwrapped(world):
    plain = read_state_dict(world["state_dict"])
    for form in ("checkpoint", "compiled"):
        got = read_state_dict(world[form])
        assert list(got) == list(plain) and all(torch.equal(got[k], plain[k]) for k in plain)


class Boom:
    """Unpickling this would write a marker file: the safe loader must refuse it instead."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).write_text, ("pwned",))


def test_loading_never_unpickles_code(tmp_path):
    marker = tmp_path / "marker"
    with open(tmp_path / "evil.pt", "wb") as f:
        pickle.dump(Boom(str(marker)), f)
    torch.save({"state_dict": Boom(str(marker))}, tmp_path / "evil2.pt")
    for name in ("evil.pt", "evil2.pt"):
        with pytest.raises(BadInput):
            read_state_dict(tmp_path / name)
        with pytest.raises(BadInput):
            parse_specs([str(tmp_path / name)])
    assert not marker.exists()


def test_class_count_is_read_from_the_head(world, tmp_path):
    import torchvision

    for arch, k in (("mobilenet_v3_small", 3), ("resnet18", 7)):
        torch.save(torchvision.models.get_model(arch, num_classes=k).state_dict(), tmp_path / f"{arch}.pt")
        spec = TeacherSpec("torchvision", f"torchvision:{arch}", str(tmp_path / f"{arch}.pt"))
        view = View((32, 32), (0.5,) * 3, (0.25,) * 3)
        if k == 3:
            lt = load_teacher_spec(spec, channels=3, num_classes=3, view=view)
            assert lt.model(torch.zeros(1, 3, 32, 32)).shape == (1, 3)
        else:
            with pytest.raises(BadInput, match="7 classes, the data has 3"):
                load_teacher_spec(spec, channels=3, num_classes=3, view=view)


# ---------------------------------------------------------------- malformed input: exit 2, one line, no run
def _bad_inputs(world, tmp: Path) -> dict[str, tuple[list[str], str]]:
    """case -> (extra CLI args, text the one line must hold)."""
    import torchvision

    (tmp / "noise.bin").write_bytes(b"\x00\x13 this is no model at all" * 50)
    sd = read_state_dict(world["state_dict"])
    bad = dict(sd, **{"layer1.0.conv1.weight": torch.zeros(32, 64, 3, 3)})
    torch.save(bad, tmp / "misfit.pt")
    torch.save(torchvision.models.resnet18(num_classes=5).state_dict(), tmp / "five.pt")
    torch.save({"optimizer": {"lr": 0.1}}, tmp / "nosd.pt")
    gray = make_imagefolder(tmp / "gray", n=12, size=TEACHER_PX, gray=True)
    tv = ["--teacher", "torchvision:resnet18"]
    return {
        "not-a-model": (["--teacher", str(tmp / "noise.bin")],
                        "not an edgekd checkpoint, a TorchScript file or an ONNX model"),
        "bare-state-dict": (["--teacher", str(world["state_dict"])], "bare state_dict"),
        "weights-misfit": (tv + ["--teacher-weights", str(tmp / "misfit.pt")],
                           "'layer1.0.conv1.weight' is (32, 64, 3, 3) in the file, (64, 64, 3, 3)"),
        "class-count": (tv + ["--teacher-weights", str(tmp / "five.pt")], "5 classes, the data has 3"),
        "channels": (tv + ["--teacher-weights", str(world["state_dict"]), "--data", f"imagefolder:{gray}"],
                     "3 input channels, the data has 1"),
        "onnx-channels": (["--teacher", str(world["onnx"]), "--data", f"imagefolder:{gray}"],
                          "3 input channels, the data has 1"),
        "no-state-dict": (tv + ["--teacher-weights", str(tmp / "nosd.pt")], "no state_dict in it"),
        "weights-missing": (tv, "0 file(s) for 1 torchvision:/timm: teacher"),
        "weights-extra": (["--teacher-weights", str(world["state_dict"])], "1 file(s) for 0"),
        "weights-not-found": (tv + ["--teacher-weights", str(tmp / "nope.pt")], "nope.pt: file not found"),
        "unknown-arch": (["--teacher", "torchvision:resnet81", "--teacher-weights", str(world["state_dict"])],
                         "not a torchvision classification model"),
        "onnx-features": (["--teacher", str(world["onnx"]), "--method", "at:1", "--method", "ce"],
                          "--method at:1"),
        "torchscript-features": (["--teacher", str(world["torchscript"]), "--method", "cosine:1", "--method", "ce"],
                                 "--method cosine:1"),
        "onnx-size": (["--teacher", str(world["onnx"]), "--teacher-input-size", "24"],
                      "has a fixed 32x32 input"),
        "bad-mean": (tv + ["--teacher-weights", str(world["state_dict"]), "--teacher-mean", "0.1,x"],
                     "--teacher-mean '0.1,x'"),
        "mean-count": (tv + ["--teacher-weights", str(world["state_dict"]), "--teacher-mean", "0.1,0.2"],
                       "2 values for 3 channel(s)"),
        "bad-tap": (tv + ["--teacher-weights", str(world["state_dict"]), "--method", "at:1", "--method", "ce",
                          "--teacher-tap", "feature_map=layer9"], "nearest module names: layer4, layer3"),
        "missing-file": (["--teacher", str(tmp / "absent.onnx")], "file not found"),
    }


def test_every_malformed_input_is_exit_2_one_line_and_no_run_folder(world, tmp_path, edgekd_main, monkeypatch):
    from conftest import snapshot

    cases = _bad_inputs(world, tmp_path)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    for case, (args, text) in cases.items():
        before = snapshot(tmp_path)
        base = ["distill", "--data", f"imagefolder:{world['data']}", "--input-size", str(STUDENT_PX),
                "--teacher-input-size", str(TEACHER_PX), "--student", "tiny-cnn", "--epochs", "1", "--seeds", "1",
                "--no-progress", "--run", str(tmp_path / "run")]
        r = edgekd_main(*base, *args)
        assert r.code == 2, (case, r.err)
        assert len(r.err_lines) == 1 and "Traceback" not in r.err, (case, r.err)
        assert text in r.err, (case, text, r.err)
        assert not (tmp_path / "run").exists() and not (work / "artifacts").exists(), case
        assert snapshot(tmp_path) == before, case


def test_without_timm_one_line_says_how(world, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(BadInput, match=r"pip install timm"):
        load_teacher_spec(TeacherSpec("timm", "timm:resnet18", str(world["state_dict"])), channels=3,
                          num_classes=3, view=View((32, 32), (0.5,) * 3, (0.2,) * 3))


# ---------------------------------------------------------------- taps on foreign teachers
@pytest.mark.parametrize("tap", [("hidden=avgpool", "cosine:0.5"), ("feature_map=layer3", "at:1")])
def test_taps_by_module_name_on_a_torchvision_teacher(world, tmp_path, tap):
    role, module = tap[0].split("=")
    cfg = cfg_for(world, tmp_path, "torchvision:resnet18", [world["state_dict"]], methods=(tap[1], "ce:0.5"),
                  teacher_taps={role: module})
    s = distill(cfg)
    assert s["teacher"]["kind"] == "torchvision"


def test_taps_on_a_timm_teacher(world, tmp_path):
    timm = pytest.importorskip("timm")
    m = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    torch.save(m.state_dict(), tmp_path / "t.pt")
    base = cfg_for(world, tmp_path, "timm:resnet10t", [tmp_path / "t.pt"], methods=("at:1", "ce"),
                   teacher_taps={"feature_map": "layer3"})
    distill(base)
    with pytest.raises(BadInput, match="nearest module names"):
        distill(replace(base, teacher_taps={"feature_map": "stages.3"}, run=tmp_path / "run2"))
    assert not (tmp_path / "run2").exists()


# ---------------------------------------------------------------- the README's worked example
def readme_example() -> str:
    from conftest import REPO

    text = (REPO / "README.md").read_text()
    after = text.split("<!-- byot-example -->", 1)[1]
    return after.split("```bash\n", 1)[1].split("\n```", 1)[0]


@pytest.mark.integration
def test_readme_worked_example(tmp_path):
    """The README's bring-your-own-teacher block, verbatim, at small scale: fine-tune resnet18,
    save its state_dict, distil at half its resolution for cpu-arm, export, bench."""
    import json
    import os
    import subprocess
    import sys

    from conftest import REPO

    env = {**os.environ, "SIZE": "16", "N": "8", "STEPS": "3", "EPOCHS": "1", "SEEDS": "1", "BENCH_SECONDS": "0.05",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(["bash", "-euo", "pipefail", "-c", readme_example()], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    run = tmp_path / "runs" / "byot"
    summary = json.loads((run / "distill.json").read_text())
    assert summary["teacher"]["kind"] == "torchvision" and summary["teacher"]["arch"] == "resnet18"
    assert summary["teacher"]["view"]["input_size"] == [32, 32] and summary["student"]["view"]["input_size"] == [16, 16]
    manifest = json.loads((run / "cpu-arm" / "manifest.json").read_text())
    assert manifest["views"]["teacher"]["mean"] == [0.485, 0.456, 0.406]
    assert manifest["model"]["inputs"][0]["shape"][1:] == [3, 16, 16]
    assert manifest["bench"]["latency_ms"]["p50"] > 0 and manifest["deployable"]


# ---------------------------------------------------------------- what a teacher returns (--teacher-outputs)
PERMUTED = [2, 0, 1]   # the permuted teacher's output i is data class PERMUTED[i]


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    """One small CNN teacher (trained at 16 px, mean = std = 0.5) as ONNX and TorchScript files
    returning logits, probabilities (Softmax at the end) and log-probabilities (LogSoftmax)."""
    from helpers.imagegen import HEADS, export_onnx_teacher, tiny_teacher, with_head

    root = tmp_path_factory.mktemp("heads")
    data = make_imagefolder(root / "images", n=10, size=16)
    torch.set_num_threads(1)
    net = tiny_teacher(data, epochs=10)
    out = {"data": f"imagefolder:{data}", "net": net, "root": root}
    permuted = tiny_teacher(data, epochs=10)   # the same weights, its head's rows in PERMUTED order
    with torch.no_grad():
        permuted[-1].weight.copy_(net[-1].weight[PERMUTED])
        permuted[-1].bias.copy_(net[-1].bias[PERMUTED])
    out["permuted"] = export_onnx_teacher(permuted, root / "permuted.onnx", head="probabilities")
    for h in HEADS:
        out[("onnx", h)] = export_onnx_teacher(net, root / f"{h}.onnx", head=h)
        ts = root / f"{h}.ts"
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(with_head(net, h), torch.zeros(1, 3, 16, 16)).save(str(ts))
        out[("torchscript", h)] = ts
    return out


def heads_cfg(heads, teacher, tmp_path, **kw) -> DistillConfig:
    return DistillConfig(**{**dict(data=heads["data"], input_size=16, teacher=str(teacher), teacher_mean="0.5",
                                   teacher_std="0.5", student="tiny-cnn", epochs=1, seeds=1, run=tmp_path / "run",
                                   progress=False), **kw})


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_auto_detects_each_output_kind_and_soft_kd_gets_the_same_targets(heads, tmp_path, fmt):
    """Probabilities and log-probabilities become logits up to a per-row constant: the cached
    teacher outputs give soft KD (T = 4) the same targets as the logits teacher, within 1e-5."""
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import check_teacher_paths, teacher_source

    from helpers.imagegen import HEADS

    T = 4.0
    targets = {}
    for h in HEADS:
        cfg = heads_cfg(heads, heads[(fmt, h)], tmp_path, temperature=T)
        bundle = load_bundle(cfg)
        [lt] = check_teacher_paths(cfg, bundle)
        assert lt.info["outputs"] == h, lt.info["outputs_how"]
        if h != "logits":   # the graph's last op is named (ONNX and TorchScript)
            assert ("Softmax" if h == "probabilities" else "LogSoftmax") in lt.info["outputs_how"]
        src = teacher_source(cfg, bundle, [lt.model], build_objective(["soft"], temperature=T))
        targets[h] = torch.softmax(src.cache["logits"] / T, dim=1)
    for h in ("probabilities", "log-probabilities"):
        gap = (targets[h] - targets["logits"]).abs().max()
        assert torch.allclose(targets[h], targets["logits"], atol=1e-5), (h, gap)
    # Without the conversion, the same probabilities read as logits give a much flatter target.
    flat = torch.softmax(torch.softmax(torch.log(targets["logits"]) * T, dim=1) / T, dim=1)
    assert (flat.max(1).values < targets["logits"].max(1).values - 0.1).float().mean() > 0.5


def test_distill_records_the_output_kind_in_distill_json_and_the_manifest(heads, tmp_path):
    from edgekd.deploy.export import export_run

    s = distill(heads_cfg(heads, heads[("onnx", "probabilities")], tmp_path))
    assert s["teacher"]["outputs"] == "probabilities" and s["teacher"]["class_order"] is None
    assert s["teacher"]["params"] == sum(p.numel() for p in heads["net"].parameters()) > 0
    m = export_run(target="cpu-arm", run=tmp_path / "run")
    assert m["teacher"] == {"outputs": "probabilities", "class_order": None}


@pytest.mark.parametrize("given,head", [("probabilities", "logits"), ("logits", "probabilities"),
                                        ("log-probabilities", "logits")])
def test_an_output_kind_the_sample_contradicts_is_exit_2_and_no_run_folder(heads, tmp_path, edgekd_main, given, head):
    r = edgekd_main("distill", "--teacher", str(heads[("onnx", head)]), "--data", heads["data"], "--input-size", "16",
                    "--teacher-outputs", given, "--student", "tiny-cnn", "--epochs", "1", "--seeds", "1",
                    "--run", str(tmp_path / "run"))
    assert r.code == 2 and f"--teacher-outputs {given}" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "run").exists()


def test_an_output_kind_given_and_consistent_is_used(heads, tmp_path):
    from edgekd.train.teacher import check_teacher_paths

    cfg = heads_cfg(heads, heads[("onnx", "log-probabilities")], tmp_path, teacher_outputs="log-probabilities")
    [lt] = check_teacher_paths(cfg, load_bundle(cfg))
    assert lt.info["outputs"] == "log-probabilities" and lt.info["outputs_how"].startswith("given")


def test_onnx_teacher_params_and_mflops_are_counted_from_the_graph(heads):
    from edgekd.models import count_params, model_mflops
    from edgekd.models.foreign import onnx_cost

    for h in ("logits", "probabilities"):
        c = onnx_cost(heads[("onnx", h)], (3, 16, 16))
        assert c["params"] == count_params(heads["net"])
        assert c["mflops"] == pytest.approx(model_mflops(heads["net"], (3, 16, 16)), abs=0.005)


# ---------------------------------------------------------------- every command takes every teacher
FOREIGN = dict(teacher_mean="0.5", teacher_std="0.5", teacher_outputs="probabilities", class_order="2,0,1")


def test_compare_takes_the_teacher_options(heads, tmp_path):
    """A teacher that needs its own view, outputs probabilities and orders its classes differently:
    right only if compare applies all three."""
    import edgekd

    out = edgekd.compare(data=heads["data"], teacher=str(heads["permuted"]), student="tiny-cnn", methods=["soft"],
                         epochs=1, seeds=1, run=tmp_path / "cmp", progress=False, **FOREIGN)
    assert out.accuracy["teacher"] >= 0.9
    wrong = edgekd.compare(data=heads["data"], teacher=str(heads["permuted"]), student="tiny-cnn", methods=["soft"],
                           epochs=1, seeds=1, run=tmp_path / "cmp2", progress=False,
                           **{**FOREIGN, "class_order": None})
    assert wrong.accuracy["teacher"] < 0.5


def test_select_teacher_takes_the_teacher_options(heads):
    import edgekd

    out = edgekd.select_teacher(teachers=[str(heads["permuted"]), str(heads[("onnx", "logits")])], data=heads["data"],
                                student="tiny-cnn", n=16, progress=False, **{**FOREIGN, "teacher_outputs": "auto"})
    acc = out.val_accuracy
    assert acc[str(heads["permuted"])] >= 0.9
    # one --class-order for every candidate: the logits teacher, in the data's order, is now scrambled
    assert acc[str(heads[("onnx", "logits")])] < 0.5


def test_select_student_takes_the_teacher_options(heads, tmp_path, monkeypatch):
    import edgekd
    from edgekd.search import timing

    def fake(runner, model, config, target=None):
        return {"latency_ms": {"p50": 0.01, "p90": 0.01}, "peak_rss_mb": 50.0, "model_bytes": model.stat().st_size,
                "provider": "CPUExecutionProvider", "threads": 1}

    monkeypatch.setattr(timing, "run_isolated", fake)
    out = edgekd.select_student(target="cpu-arm", data=heads["data"], teacher=str(heads["permuted"]), trials=2,
                                epochs=1, short_epochs=1, methods=["soft"], run=tmp_path / "sel", progress=False,
                                **FOREIGN)
    s = json.loads((out.run / "distill.json").read_text())
    assert s["teacher"]["accuracy"] >= 0.9 and s["teacher"]["class_order"] == PERMUTED
    assert s["teacher"]["outputs"] == "probabilities"


@pytest.mark.parametrize("command", ["distill", "compare", "select-student", "select-teacher", "check-teacher"])
def test_every_command_has_the_same_teacher_options(command):
    from typer.main import get_command

    from edgekd.cli import app

    cmd = get_command(app).commands[command]
    names = {o for p in cmd.params for o in getattr(p, "opts", [])}
    assert {"--teacher", "--teacher-weights", "--teacher-input-size", "--teacher-mean", "--teacher-std",
            "--teacher-outputs", "--class-order"} <= names
