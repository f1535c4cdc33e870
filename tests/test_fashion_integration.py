"""Real Fashion-MNIST from Debian's `dataset-fashion-mnist` (Zalando's gzipped IDX files in
/usr/share/datasets/fashion-mnist). Skipped, saying why, where the package is not installed;
.ci/run installs it. The unit tests (tests/test_data.py) use tiny generated IDX files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekd import data, defaults

SYSTEM = defaults.FASHION_MNIST_SYSTEM_DIR
pytestmark = pytest.mark.skipif(
    not (SYSTEM / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real Fashion-MNIST not installed: {SYSTEM} is missing (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="module")
def fashion():
    return data.load_data("fashion-mnist", data_dir=SYSTEM)


def test_the_official_split_from_the_gzipped_files(fashion):
    b = fashion
    assert b.split["sizes"] == {"train": 54_000, "val": 6_000, "test": 10_000}   # 60k official train, 10k test
    assert b.split["files"]["train_images"].endswith("train-images-idx3-ubyte.gz")
    assert (b.num_classes, b.input_shape, b.labels[9]) == (10, (1, 28, 28), "Ankle boot")
    # balanced: 6,000 of each class in the official train split, 1,000 in test; val stratified
    assert np.array_equal(np.bincount(b.test.targets), np.full(10, 1000))
    assert np.array_equal(np.bincount(b.val.targets), np.full(10, 600))
    # the first official test image is an ankle boot (Zalando's t10k-labels starts 9, 2, 1, 1)
    assert b.test.targets[:4].tolist() == [9, 2, 1, 1]
    # train statistics near the published ones (mean 0.286, std 0.353), computed on train only
    assert b.mean[0] == pytest.approx(0.286, abs=0.002) and b.std[0] == pytest.approx(0.353, abs=0.002)
    assert b.train.pixels.dtype == torch.uint8 and tuple(b.train.pixels.shape) == (60_000, 1, 28, 28)
    x, _ = b.train.batch(np.arange(512))
    assert x.shape == (512, 1, 28, 28) and abs(float(x.mean())) < 0.1 and abs(float(x.std()) - 1) < 0.1


def test_no_data_dir_reads_the_system_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)   # no ./data here
    b = data.load_data("fashion-mnist")
    assert b.split["files"]["test_labels"] == str(SYSTEM / "t10k-labels-idx1-ubyte.gz")


def test_default_teacher_and_student_follow_the_data(fashion, edgekd_main):
    r = edgekd_main("teachers", "--data", "fashion-mnist", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    assert out["default"] == "resnet-s" and out["input_shape"] == [1, 28, 28]
    rule = defaults.recipe(n_train=len(fashion.train), input_shape=fashion.input_shape, num_classes=10)
    assert (rule["teacher"], rule["student"], rule["epochs"]) == ("resnet-s", "wide-cnn", 4)


def test_a_student_learns_from_the_real_images(fashion):
    """60 steps of a small student on real images: far above chance (10%) on the
    official test set. Proves the pixels, labels and normalisation line up; not a benchmark."""
    from edgekd.models import create_student

    torch.manual_seed(0)
    model = create_student("small-cnn", in_channels=1, num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    model.train()
    for _ in range(60):
        x, y = fashion.train.batch(rng.integers(0, len(fashion.train), 64))
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        x, y = fashion.test.batch(np.arange(1000))
        acc = float((model(x).argmax(1) == y).float().mean())
    assert acc > 0.5
