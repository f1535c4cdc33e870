"""The teacher's own view, realistic ImageFolder sizes (RGB and grayscale), --augment, strided stems."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.data import load_data
from edgekd.errors import BadInput
from edgekd.models import STUDENTS, create_student, forward_macs, stem_stride_for
from edgekd.models.foreign import View, convert, teacher_view
from edgekd.train.config import DistillConfig

from helpers.imagegen import make_imagefolder


# ---------------------------------------------------------------- views
def test_convert_undoes_the_students_normalisation_resizes_and_applies_the_teachers():
    torch.manual_seed(0)
    pixels = torch.rand(4, 3, 16, 16)  # the underlying images, scaled pixels in 0..1
    s = View((16, 16), (0.3, 0.4, 0.5), (0.2, 0.25, 0.3))
    t = View((32, 32), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    col = lambda v: torch.tensor(v).view(1, -1, 1, 1)  # noqa: E731
    student_batch = (pixels - col(s.mean)) / col(s.std)
    want = (F.interpolate(pixels, size=(32, 32), mode="bilinear", antialias=True, align_corners=False)
            - col(t.mean)) / col(t.std)
    assert torch.allclose(convert(student_batch, s, t), want, atol=1e-5)
    assert convert(student_batch, s, s) is student_batch
    # down-scaling averages (antialias), it does not pick every other pixel
    big = View((32, 32), s.mean, s.std)
    checker = ((torch.arange(32)[:, None] + torch.arange(32)[None]) % 2).float().expand(1, 3, 32, 32)
    small = convert((checker - col(s.mean)) / col(s.std), big, s) * col(s.std) + col(s.mean)
    assert torch.allclose(small, torch.full_like(small, 0.5), atol=0.05)


def test_teacher_view_defaults_to_the_datas_and_checks_its_options():
    d = View((16, 16), (0.1,), (0.2,))
    assert teacher_view(d) == d
    v = teacher_view(View((16, 16), (0.1,) * 3, (0.2,) * 3), input_size=64, mean="imagenet", std="0.5")
    assert v.size == (64, 64) and v.mean == (0.485, 0.456, 0.406) and v.std == (0.5, 0.5, 0.5)
    for kw, text in (({"mean": "0.1,0.2"}, "2 values for 1 channel"), ({"std": "0"}, "must be > 0"),
                     ({"input_size": 4}, "8..1024"), ({"mean": "a"}, "comma-separated numbers")):
        with pytest.raises(BadInput, match=text):
            teacher_view(d, **kw)


class Recorder(nn.Module):
    """A teacher that keeps what it was fed."""

    def __init__(self):
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.lin = nn.Linear(1, 3)

    def forward(self, x):
        self.seen.append(x.clone())
        return x.mean(dim=(1, 2, 3))[:, None].repeat(1, 3)


@pytest.fixture(scope="module")
def rgb64(tmp_path_factory):
    return make_imagefolder(tmp_path_factory.mktemp("rgb") / "img", n=8, size=64)


def test_the_teacher_sees_the_students_augmented_batch_in_its_own_view_live(rgb64, tmp_path):
    from edgekd.train.config import load_bundle
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import teacher_source, views

    cfg = DistillConfig(data=f"imagefolder:{rgb64}", input_size=24, augment=True, teacher_input_size=48,
                        teacher_mean="imagenet", teacher_std="imagenet")
    bundle = load_bundle(cfg)
    assert bundle.augmented and bundle.input_shape == (3, 24, 24)
    a, b = bundle.train[0][0], bundle.train[0][0]
    assert not torch.equal(a, b)  # random-resized crop + flip: two reads differ
    rec = Recorder()
    src = teacher_source(cfg, bundle, [rec], build_objective(["soft"]))
    assert src.cache is None  # random inputs: the teacher runs live
    x = torch.stack([bundle.train[i][0] for i in range(4)])
    src.outputs(x, torch.arange(4))
    assert rec.seen[-1].shape == (4, 3, 48, 48)
    assert torch.allclose(rec.seen[-1], convert(x, *views(cfg, bundle)))  # the same images, the teacher's view


def test_deterministic_inputs_are_cached_through_the_view(rgb64):
    from edgekd.train.config import load_bundle
    from edgekd.train.losses import build_objective
    from edgekd.train.teacher import teacher_source

    cfg = DistillConfig(data=f"imagefolder:{rgb64}", input_size=16, teacher_input_size=32)
    bundle = load_bundle(cfg)
    rec = Recorder()
    src = teacher_source(cfg, bundle, [rec], build_objective(["soft"]))
    assert src.cache is not None and src.cache["logits"].shape == (len(bundle.train), 3)
    assert all(x.shape[-1] == 32 for x in rec.seen)
    n = len(rec.seen)
    src.outputs(torch.zeros(2, 3, 16, 16), torch.tensor([0, 1]))
    assert len(rec.seen) == n  # served from the cache
    # cached from the files read at the teacher's own size, not from the student's 16 px tensors upsampled
    from edgekd.train.teacher import data_view, teacher_data, views

    hi = teacher_data(cfg, bundle)
    s_view, t_view = views(cfg, bundle)
    fed = torch.cat(rec.seen)
    own = convert(torch.stack([hi.train[i][0] for i in range(len(hi.train))]), data_view(hi), t_view)
    up = convert(torch.stack([bundle.train[i][0] for i in range(len(bundle.train))]), s_view, t_view)
    assert torch.allclose(fed, own, atol=1e-5)
    assert (fed - up).abs().mean() > 0.05


# ---------------------------------------------------------------- ImageFolder sizes and channels
@pytest.mark.parametrize("size", [32, 96, 224])
@pytest.mark.parametrize("gray", [False, True])
def test_imagefolder_at_realistic_sizes_rgb_and_grayscale(tmp_path, size, gray):
    root = make_imagefolder(tmp_path / "img", n=5, size=48, gray=gray)
    b = load_data(f"imagefolder:{root}", image_size=size)
    c = 1 if gray else 3
    assert b.input_shape == (c, size, size) and len(b.mean) == c
    x, y = b.train[0]
    assert x.shape == (c, size, size) and x.dtype == torch.float32


def test_input_size_is_for_imagefolder_only_and_bounded(tmp_path):
    with pytest.raises(BadInput, match="imagefolder:DIR only"):
        load_data("digits", image_size=64)
    root = make_imagefolder(tmp_path / "img", n=5, size=16)
    with pytest.raises(BadInput, match="4..1024"):
        load_data(f"imagefolder:{root}", image_size=2048)


# ---------------------------------------------------------------- strided stems
STRIDED = [n for n, kw in STUDENTS.items() if kw.get("stem_stride") == "auto"]


def test_stem_stride_brings_any_size_down_to_a_small_map():
    assert [stem_stride_for(s) for s in (None, 8, 16, 32, 64, 96, 224)] == [1, 1, 1, 2, 4, 8, 16]


@pytest.mark.parametrize("name", STRIDED)
def test_strided_students_macs_do_not_grow_with_the_square_of_the_input(name):
    from edgekd.deploy.audit import check_student_ops
    from edgekd.deploy.targets import load_target

    prof = load_target("cpu-arm")
    macs = {}
    for size in (32, 64, 128, 224):
        m = create_student(name, in_channels=3, num_classes=10, target_ops=prof.ops_allow, input_size=size)
        assert check_student_ops(m, input_shape=(3, size, size), target=prof)
        macs[size] = forward_macs(m, (3, size, size))
    plain = create_student(name.removesuffix("-s"), in_channels=3, num_classes=10)
    plain32 = forward_macs(plain, (3, 32, 32))
    grow_plain = forward_macs(plain, (3, 224, 224)) / plain32
    assert grow_plain > 40  # (224/32)^2 = 49 without a strided stem
    # only the stem's first layer sees every pixel: a 7× larger side costs a fraction of 49×,
    # and the strided student at 224 px costs about what the plain one costs at 32 px
    assert macs[224] / macs[32] < grow_plain / 4, macs
    assert macs[224] < 3 * plain32, (macs, plain32)
    assert macs[32] <= macs[64] <= macs[128] <= macs[224]


def test_strided_student_distils_exports_and_reloads(rgb64, tmp_path):
    from edgekd.models.checkpoints import load_student
    from edgekd.train.distill import distill

    s = distill(DistillConfig(data=f"imagefolder:{rgb64}", input_size=64, student="small-cnn-s", teacher="cnn-small",
                              epochs=1, seeds=1, teacher_epochs=1, run=tmp_path / "run", progress=False,
                              augment=True))
    assert s["images_per_s"]["teacher"] == "live" and s["images_per_s"]["student"] > 0
    model, state = load_student(tmp_path / "run")
    assert state["net_kwargs"]["stem_stride"] == 4
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 3)


def test_a_registry_teacher_is_trained_and_scored_in_the_teachers_view(rgb64, tmp_path):
    from edgekd.train.distill import distill
    from edgekd.train.teacher import ViewedData, views

    cfg = DistillConfig(data=f"imagefolder:{rgb64}", input_size=16, teacher="cnn-small", teacher_input_size=32,
                        student="tiny-cnn", epochs=1, seeds=1, teacher_epochs=1, run=tmp_path / "run", progress=False)
    from edgekd.train.config import load_bundle

    bundle = load_bundle(cfg)
    viewed = ViewedData(bundle.train, *views(cfg, bundle))
    assert viewed[0][0].shape == (3, 32, 32) and list(viewed.targets) == list(bundle.train.targets)
    s = distill(cfg)
    assert s["teacher"]["kind"] == "registry" and s["teacher"]["view"]["input_size"] == [32, 32]
    assert (tmp_path / "run" / "teacher.pt").is_file()
