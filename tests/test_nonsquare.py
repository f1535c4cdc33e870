"""Issue 20 (part A): any H×W input, resize policies, never squash silently, unlabeled pools.

Each resize policy is checked pixel by pixel against PIL (the same bilinear filter), in memory and
streamed; a non-square ImageFolder goes through distill → export → bench; an ONNX teacher with fixed
48×192 dims sets the teacher's view, and a conflicting --teacher-input-size is exit 2 with no run folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd import defaults
from edgekd.data import Fit, load_data, native_size, parse_hw
from edgekd.errors import BadInput

from helpers.imagegen import make_imagefolder

TINY = ["--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--teacher", "cnn-small", "--no-progress"]


# ---------------------------------------------------------------- sizes
def test_parse_hw_takes_n_hxw_and_pairs_and_names_the_option():
    assert parse_hw("48x192") == (48, 192) and parse_hw("48×192") == (48, 192) and parse_hw(" 16 X 64 ") == (16, 64)
    assert parse_hw("32") == (32, 32) and parse_hw(32) == (32, 32) and parse_hw([16, 48]) == (16, 48)
    assert parse_hw(None) is None
    for bad in ("16by48", "x48", "16x", "1x2x3", "-4", "4.5"):
        with pytest.raises(BadInput, match="--teacher-input-size .*expected N or HxW"):
            parse_hw(bad, option="--teacher-input-size")


def test_default_size_keeps_the_aspect_ratio_and_scales_down_to_the_pixel_cap():
    from PIL import Image

    def ims(w, h):
        return [Image.new("RGB", (w, h))] * 3
    assert native_size(ims(192, 48)) == (16, 64)        # 48×192 strips: 16×64, not a squashed 32×32
    assert native_size(ims(48, 16)) == (16, 48)         # small enough: the images' own, never upsampled
    assert native_size(ims(64, 64)) == (32, 32)         # square: as before (32 px)
    assert native_size(ims(98, 40)) == (20, 50)         # a keyword spotter's 40×98 spectrogram: 1,000 px
    h, w = native_size(ims(700, 1))                     # degenerate strips: 4 px high, still within the cap
    assert h == 4 and h * w <= defaults.INPUT_PIXELS


# ---------------------------------------------------------------- resize policies against PIL
def _photo(w: int, h: int, seed: int):
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8))


def _expected(image, policy: str, fill: int) -> np.ndarray:
    """What a 60×20 (W×H) image must become at 16×64 (H×W), computed with PIL by hand."""
    from PIL import Image

    if policy == "stretch":
        return np.asarray(image.resize((64, 16), Image.BILINEAR))
    if policy == "pad":   # scale min(16/20, 64/60) = 0.8: 48×16, padded right with `fill`
        out = np.full((16, 64, 3), fill, np.uint8)
        out[:, :48] = np.asarray(image.resize((48, 16), Image.BILINEAR))
        return out
    # crop: scale max(0.8, 64/60): 64×21 (21.33 rounded), rows 2..17 (the centre 16)
    return np.asarray(image.resize((64, 21), Image.BILINEAR))[2:18]


@pytest.mark.parametrize("policy", ["stretch", "pad", "crop"])
def test_fit_matches_pil_pixel_for_pixel(policy):
    image = _photo(60, 20, 0)
    got = np.asarray(Fit((16, 64), policy, fill=255)(image))
    assert got.shape == (16, 64, 3)
    assert np.array_equal(got, _expected(image, policy, 255))


@pytest.mark.parametrize("in_memory", [True, False])
@pytest.mark.parametrize("policy", ["stretch", "pad", "crop"])
def test_the_loaders_apply_each_policy_pixel_for_pixel(tmp_path, policy, in_memory):
    root = tmp_path / "strips"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(5):
            _photo(60, 20, 10 * (c == "b") + k).save(root / c / f"{k}.png")
    b = load_data(f"imagefolder:{root}", image_size="16x64", resize=policy, in_memory=in_memory)
    assert b.input_shape == (3, 16, 64) and b.preprocessing()["resize"] == policy
    mean, std = np.asarray(b.mean).reshape(3, 1, 1), np.asarray(b.std).reshape(3, 1, 1)
    from PIL import Image

    for split in (b.train, b.val, b.test):
        for i in range(len(split)):
            x, y = split[i]
            k = int(split.indices[i]) % 5        # ImageFolder's order: classes sorted, then files
            src = root / b.labels[y] / f"{k}.png"
            want = _expected(Image.open(src).convert("RGB"), policy, defaults.PAD_FILL).transpose(2, 0, 1)
            got = (x.numpy() * std + mean) / b.scale
            assert np.abs(got - want).max() < 1e-3, (policy, in_memory, src)


def test_pad_fill_is_recorded_and_the_manifest_preprocessing_says_how_to_rebuild_the_input(tmp_path):
    root = make_imagefolder(tmp_path / "d", n=6, size=(16, 60))
    b = load_data(f"imagefolder:{root}", resize="pad", fill=255)
    assert b.input_shape == (3, 16, 60)
    pre = b.preprocessing()
    assert pre == {"height": 16, "width": 60, "channels": 3, "resize": "pad", "fill": 255, "scale": b.scale,
                   "mean": b.mean, "std": b.std}
    assert load_data("digits").preprocessing()["resize"] == "none"
    with pytest.raises(BadInput, match="--resize 'squash': valid: stretch, pad, crop"):
        load_data(f"imagefolder:{root}", resize="squash")
    with pytest.raises(BadInput, match="--resize applies to --data imagefolder:DIR only"):
        load_data("digits", resize="pad")


# ---------------------------------------------------------------- students and views
def test_strided_stems_reduce_each_side_on_their_own():
    from edgekd.models import create_student, stem_stride_for

    assert stem_stride_for((48, 192)) == (4, 16) and stem_stride_for((64, 64)) == 4
    assert stem_stride_for((16, 48)) == (1, 4)
    for name in ("small-cnn-s", "dsconv-s", "mbv2-tiny-s"):
        for h, w in ((48, 192), (16, 48), (200, 40)):
            net = create_student(name, in_channels=3, num_classes=2, input_size=(h, w)).eval()
            stride = net.net_kwargs["stem_stride"]
            sh, sw = (stride, stride) if isinstance(stride, int) else stride
            fmap = net.features[0](torch.zeros(1, 3, h, w))
            assert tuple(fmap.shape[-2:]) == (-(-h // sh), -(-w // sw)) and max(fmap.shape[-2:]) <= 16
            assert net(torch.zeros(2, 3, h, w)).shape == (2, 2)


def test_teacher_view_and_convert_take_hxw():
    from edgekd.models.foreign import View, convert, teacher_view

    s = View((16, 48), (0.5,) * 3, (0.25,) * 3)
    t = teacher_view(s, input_size="48x192", mean="0.5", std="0.5")
    assert t.size == (48, 192) and t.to_dict()["input_size"] == [48, 192]
    assert convert(torch.zeros(2, 3, 16, 48), s, t).shape == (2, 3, 48, 192)
    with pytest.raises(BadInput, match="each side must be in 8..1024"):
        teacher_view(s, input_size="4x64")


def test_select_student_search_space_is_sized_per_side():
    import itertools

    from edgekd.deploy.targets import load_target
    from edgekd.search import space

    ops = load_target("cpu-arm").ops_allow
    drawn = list(itertools.islice(space.candidate_stream(ops, seed=0, include=("small-cnn-s",),
                                                         input_size=(48, 192)), 6))
    assert drawn[0][1]["stem_stride"] == (4, 16)
    assert all(name.endswith("-s4x16") for name, _ in drawn[1:])
    from edgekd.models import student_net

    net = student_net(in_channels=3, num_classes=2, target_ops=ops, **drawn[1][1])
    assert net.features[0](torch.zeros(1, 3, 48, 192)).shape[-2:] == (12, 12)
    # by pixels, as defaults.recipe: a 16×512 strip (8,192 px) gets a stem on its long side only; 16×48 none
    strip = list(itertools.islice(space.candidate_stream(ops, seed=0, include=(), input_size=(16, 512)), 2))
    assert all(kw["stem_stride"] == [1, 32] and name.endswith("-s1x32") for name, kw in strip)
    assert all("stem_stride" not in kw for _, kw in itertools.islice(
        space.candidate_stream(ops, seed=0, include=(), input_size=(16, 48)), 3))
    assert defaults.recipe(n_train=100, input_shape=(3, 16, 512), num_classes=2)["student"] == "small-cnn-s"
    assert defaults.recipe(n_train=100, input_shape=(3, 16, 64), num_classes=2)["student"] == defaults.STUDENT


# ---------------------------------------------------------------- an ONNX teacher with fixed dims
def _fixed_onnx_teacher(path: Path, size=(48, 192)) -> Path:
    from torch import nn

    from edgekd.deploy.export import export_onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, 4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, 3)).eval()
    return export_onnx(model, path, input_shape=(3, *size), opset=17)


def test_an_onnx_teachers_fixed_dims_set_its_view_and_a_conflicting_size_is_exit_2(tmp_path, edgekd_main):
    from edgekd.train.config import DistillConfig, load_bundle

    root = make_imagefolder(tmp_path / "strips", n=6, size=(48, 192))
    onnx_file = _fixed_onnx_teacher(tmp_path / "t.onnx")
    cfg = DistillConfig(data=f"imagefolder:{root}", teacher=str(onnx_file))
    bundle = load_bundle(cfg)
    assert bundle.input_shape == (3, 16, 64)
    resolved = cfg.for_data(bundle)
    assert resolved.teacher_input_size == (48, 192)      # from the graph, not the student's size
    from edgekd.train.teacher import views_text

    said = views_text(resolved, bundle)                  # printed by distill before training
    assert said.startswith("student sees 16x64 (stretched), mean ") and "; teacher sees 48x192 (stretched)" in said
    run = tmp_path / "run"
    r = edgekd_main("distill", "--data", f"imagefolder:{root}", "--teacher", onnx_file, "--teacher-input-size", "32x32",
                    "--run", run, *TINY[:6], "--no-progress")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and "fixed 48x192 input" in r.err and "--teacher-input-size 32x32" in r.err
    assert not run.exists() and not (Path.cwd() / "artifacts").exists()
    # left out, the graph's dims set the teacher's view: it reads the files at 48×192, the student at 16×64
    r = edgekd_main("distill", "--data", f"imagefolder:{root}", "--teacher", onnx_file, "--run", run, *TINY[:6],
                    "--no-progress")
    assert r.code == 0, r.err
    s = json.loads((run / "distill.json").read_text())
    assert s["teacher"]["view"]["input_size"] == [48, 192] and s["student"]["view"]["input_size"] == [16, 64]
    assert "teacher sees 48x192 px, the student 16x64 px (stretch)" in r.out


# ---------------------------------------------------------------- unlabeled pools
def test_unlabeled_pool_joins_the_train_split_unlabeled_with_a_held_out_share(tmp_path, monkeypatch):
    from edgekd.train.datasets import dataset_labels, labeled_mask

    root = make_imagefolder(tmp_path / "d", n=10, size=(16, 48))
    pool = tmp_path / "pool" / "deep" / "er"
    make_imagefolder(pool, n=10, size=(30, 90), seed=4)          # class-like folders: their names are ignored
    plain = load_data(f"imagefolder:{root}")
    b = load_data(f"imagefolder:{root}", unlabeled=[tmp_path / "pool"])
    held = int(round(defaults.UNLABELED_HOLDOUT * 30))
    assert len(b.train) == len(plain.train) + 30 - held and len(b.unlabeled_test) == held
    labels = dataset_labels(b.train)
    assert (labels == -1).sum() == 30 - held and np.array_equal(labels[:len(plain.train)], dataset_labels(plain.train))
    assert (b.mean, b.std, b.input_shape) == (plain.mean, plain.std, plain.input_shape)  # export reloads without it
    assert np.array_equal(b.test[0][0].numpy(), plain.test[0][0].numpy())
    mask = labeled_mask(labels, 1.0)
    assert not mask[labels == -1].any() and mask[labels >= 0].all()
    assert not labeled_mask(labels, 0.5)[labels == -1].any()
    assert b.split["unlabeled"]["images"] == 30
    # streamed when it does not fit: the same pixels
    monkeypatch.setattr(defaults, "IN_MEMORY_BYTES", 1)
    s = load_data(f"imagefolder:{root}", unlabeled=[tmp_path / "pool"])
    assert not hasattr(s.train, "batch") and len(s.train) == len(b.train)
    for i in (0, len(b.train) - 1):
        assert torch.allclose(s.train[i][0], b.train[i][0], atol=1e-6) and s.train[i][1] == b.train[i][1]
    assert torch.allclose(s.unlabeled_test[0][0], b.unlabeled_test[0][0], atol=1e-6)
    for bad, text in ((tmp_path / "nope", "not a folder"), (tmp_path / "empty", "no image files")):
        (tmp_path / "empty").mkdir(exist_ok=True)
        with pytest.raises(BadInput, match=f"--unlabeled .*{text}"):
            load_data(f"imagefolder:{root}", unlabeled=[bad])
    with pytest.raises(BadInput, match="--unlabeled applies to --data imagefolder:DIR only"):
        load_data("digits", unlabeled=[tmp_path / "pool"])


# ---------------------------------------------------------------- end to end
def test_non_square_imagefolder_through_distill_export_bench_and_report(tmp_path, edgekd_main):
    root = make_imagefolder(tmp_path / "strips", n=10, size=(16, 48))
    pool = make_imagefolder(tmp_path / "pool", n=6, size=(24, 96), seed=7)
    run = tmp_path / "run"
    r = edgekd_main("distill", "--data", f"imagefolder:{root}", "--unlabeled", pool, "--resize", "pad",
                    "--teacher-input-size", "32x96", "--student", "small-cnn-s", "--run", run, *TINY)
    assert r.code == 0, r.err
    assert "teacher sees 32x96 px, the student 16x48 px (pad)" in r.out and "held-out unlabeled images" in r.out
    s = json.loads((run / "distill.json").read_text())
    assert s["data"]["input_shape"] == [3, 16, 48]
    assert s["student"]["view"]["input_size"] == [16, 48] and s["student"]["view"]["resize"] == "pad"
    assert s["teacher"]["view"]["input_size"] == [32, 96] and s["teacher"]["view"]["fill"] == defaults.PAD_FILL
    assert s["agreement"]["n"] == round(defaults.UNLABELED_HOLDOUT * 18)
    assert 0 <= s["agreement"]["student"]["mean"] <= 1
    assert json.loads((run / "config.json").read_text())["input_size"] is None
    assert edgekd_main("export", "--target", "cpu-x86", "--run", run).code == 0
    m = json.loads((run / "cpu-x86" / "manifest.json").read_text())
    assert m["model"]["inputs"][0]["shape"] == ["batch", 3, 16, 48]
    pre = m["model"]["preprocessing"]
    assert (pre["height"], pre["width"], pre["resize"], pre["fill"]) == (16, 48, "pad", defaults.PAD_FILL)
    assert m["parity"]["passed"] and np.load(run / "cpu-x86" / "golden.npz")["inputs"].shape[1:] == (3, 16, 48)
    b = edgekd_main("bench", "--target", "cpu-x86", "--run", run)
    assert b.code == 0, b.err
    bench = json.loads((run / "cpu-x86" / "manifest.json").read_text())["bench"]
    assert bench["latency_ms"]["p50"] > 0
    assert edgekd_main("report", run).code == 0
    html = (run / defaults.REPORT_FILE).read_text()
    assert "student 16×48 (pad, fill 0)" in html and "teacher 32×96" in html


def test_bad_size_resize_and_pool_options_are_exit_2_one_line_and_no_run_folder(tmp_path, edgekd_main):
    root = make_imagefolder(tmp_path / "d", n=5, size=(16, 48))
    run = tmp_path / "run"
    for args, text in ((["--input-size", "16by48"], "--input-size '16by48': expected N or HxW"),
                       (["--teacher-input-size", "0x"], "--teacher-input-size '0x'"),
                       (["--resize", "squash"], "--resize 'squash': valid: stretch, pad, crop"),
                       (["--data", "digits", "--resize", "pad"], "--resize applies to --data imagefolder:DIR only"),
                       (["--unlabeled", tmp_path / "nowhere"], "--unlabeled"),
                       (["--input-size", "2x64"], "4..1024 pixels a side, got 2x64")):
        r = edgekd_main("distill", "--data", f"imagefolder:{root}", *args, "--run", run, *TINY)
        assert r.code == 2 and len(r.err_lines) == 1 and text in r.err, (args, r.err)
        assert not run.exists()


def test_select_student_searches_times_and_saves_a_non_square_pick_that_exports(tmp_path, edgekd_main, monkeypatch):
    """select-student on 48×96 strips (fake timings, as test_select_student's): every candidate gets a
    per-side stem (4×8), the pick is saved as a run, and export/parity/golden take its H×W."""
    from edgekd.search import student as ss
    from edgekd.search import timing

    from helpers.timing import fake_latency

    monkeypatch.setattr(timing, "run_isolated", lambda runner, model, config, target=None: {
        "latency_ms": {"p50": fake_latency(model), "p90": fake_latency(model)}, "peak_rss_mb": 50.0,
        "model_bytes": model.stat().st_size, "provider": "CPUExecutionProvider", "threads": 1})
    root = make_imagefolder(tmp_path / "strips", n=8, size=(48, 96))
    r = ss.select_student(target="cpu-x86", data=f"imagefolder:{root}", input_size=(48, 96), resize="crop",
                          teacher="cnn-small", teacher_epochs=1, epochs=1, trials=3, progress=False, include=(),
                          run=tmp_path / "run")
    names = [c["name"] for c in r["candidates"]]
    assert names and all(n.endswith("-s4x8") for n in names), names
    assert r["recommended"]["net_kwargs"]["stem_stride"] == [4, 8]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["input_size"] == [48, 96] and cfg["resize"] == "crop"
    assert edgekd_main("export", "--target", "cpu-x86", "--run", tmp_path / "run").code == 0
    m = json.loads((tmp_path / "run" / "cpu-x86" / "manifest.json").read_text())
    assert m["model"]["inputs"][0]["shape"] == ["batch", 3, 48, 96] and m["model"]["preprocessing"]["resize"] == "crop"
