"""edgekd.data: the splits, the normalisation, and every loader on tiny real-format files.

No test touches the network: MNIST and Fashion-MNIST (IDX, gzipped or not) and CIFAR-10 are
written here in their exact on-disk formats, a few dozen images each. The real Fashion-MNIST
files are read in tests/test_fashion_integration.py.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd import data
from edgekd.data import load as data_load
from edgekd.errors import BadInput

from helpers.data import write_idx, write_mnist

torch.set_num_threads(1)


# --------------------------------------------------------------------------- helpers

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, per_batch: int = 20, n_test: int = 20) -> Path:
    """cifar-10-batches-py as torchvision reads it: pickled dicts with N×3072 uint8 'data'."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": per_batch for i in range(1, 6)} | {"test_batch": n_test}
    for name, n in batches.items():
        entry = {"batch_label": name, "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 "labels": [int(v) for v in np.arange(n) % 10], "filenames": [f"{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_NAMES, "num_vis": 3072}))
    return folder


@pytest.fixture
def cifar_md5s_of(monkeypatch):
    """Point torchvision's CIFAR10 md5 table at our tiny files.

    torchvision checks every CIFAR file against the md5 of the official release,
    which no tiny file can match. Swapping the expected md5s (class attributes,
    test-only) keeps the real integrity check running: a changed file still fails.
    """
    from torchvision.datasets import CIFAR10

    def apply(folder: Path) -> None:
        md5 = {f: hashlib.md5((folder / f).read_bytes()).hexdigest() for f in CIFAR_FILES}
        monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
        monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
        monkeypatch.setattr(CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": md5["batches.meta"]})
    return apply


def write_png(path: Path, color, size=(16, 16), mode="RGB") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def write_image_folder(root: Path, per_class: int = 5) -> Path:
    """Two classes; images of different sizes and one grayscale, all to become 3×32×32."""
    for k in range(per_class):
        write_png(root / "cat" / f"{k}.png", (200, 20 * k, 10), size=(16 + k, 12))
        write_png(root / "dog" / f"{k}.png", (10, 30, 40 * k))
    write_png(root / "dog" / "gray.png", 128, mode="L")
    return root


def assert_tensors(bundle: data.DataBundle) -> None:
    """Every split yields float32 C×H×W tensors of the declared shape, through a DataLoader too."""
    for split in (bundle.train, bundle.val, bundle.test):
        assert len(split) > 0
        x, y = split[0]
        assert isinstance(x, torch.Tensor) and x.dtype == torch.float32
        assert tuple(x.shape) == bundle.input_shape
        assert 0 <= int(y) < bundle.num_classes
        xb, yb = next(iter(torch.utils.data.DataLoader(split, batch_size=4)))
        assert xb.dtype == torch.float32 and tuple(xb.shape[1:]) == bundle.input_shape
        assert yb.dtype == torch.int64


# --------------------------------------------------------------------------- digits and the split

def test_digits_split_is_stratified_deterministic_disjoint_60_20_20():
    from sklearn.datasets import load_digits

    y = load_digits().target
    train, val, test = data.stratified_split(y, seed=0)
    assert set(train).isdisjoint(val) and set(train).isdisjoint(test) and set(val).isdisjoint(test)
    assert len(train) + len(val) + len(test) == len(y)
    assert abs(len(train) / len(y) - 0.6) < 0.01 and abs(len(test) / len(y) - 0.2) < 0.01
    # every class keeps its share in each split (stratified): counts within one sample of exact
    for part in (train, val, test):
        assert np.abs(np.bincount(y[part], minlength=10) - np.bincount(y) * len(part) / len(y)).max() <= 1
    again = data.stratified_split(y, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    other = data.stratified_split(y, seed=1)
    assert not np.array_equal(test, other[2])


def test_digits_normalisation_uses_train_only():
    from sklearn.datasets import load_digits

    b = data.load_data("digits")
    raw = load_digits().images.astype(np.float32)[:, None] / 16.0
    train, val, test = data.stratified_split(load_digits().target, seed=0)
    assert b.split["sizes"] == {"train": len(train), "val": len(val), "test": len(test)}
    assert b.mean[0] == pytest.approx(raw[train].mean(), rel=1e-5)
    assert b.std[0] == pytest.approx(raw[train].std(), rel=1e-5)
    assert b.mean[0] != pytest.approx(raw.mean(), rel=1e-6)
    x, _ = data.to_arrays(b.test, limit=3)
    assert np.allclose(x * b.std[0] + b.mean[0], raw[test[:3]], atol=1e-5)
    assert_tensors(b)


# --------------------------------------------------------------------------- registry

def test_registry_lists_every_dataset_and_rejects_unknown_names(tmp_path):
    assert data.data_names() == ["digits", "mnist", "fashion-mnist", "cifar10", "imagefolder:DIR"]
    with pytest.raises(BadInput, match="valid: digits, mnist, fashion-mnist, cifar10, imagefolder:DIR"):
        data.load_data("mnsit", data_dir=tmp_path)
    with pytest.raises(BadInput, match="unknown"):
        data.load_data("imagefolder", data_dir=tmp_path)
    with pytest.raises(BadInput, match="needs a folder"):
        data.load_data("imagefolder:")
    with pytest.raises(BadInput, match="available for: cifar10"):
        data.load_data("digits", augment=True)


# --------------------------------------------------------------------------- mnist / fashion-mnist (IDX)

@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")])
def test_mnist_family_from_idx_files(tmp_path, name, folder, layout, gz):
    pixels = write_mnist(tmp_path, folder, flat=layout == "flat", gz=gz)
    b = data.load_data(name, data_dir=tmp_path)
    assert (b.num_classes, b.input_shape, b.scale) == (10, (1, 28, 28), 1 / 255)
    assert b.split["sizes"] == {"train": 90, "val": 10, "test": 20}
    where = tmp_path if layout == "flat" else tmp_path / folder / "raw"
    assert b.split["files"]["train_images"] == str(where / ("train-images-idx3-ubyte" + (".gz" if gz else "")))
    train, val = b.train.indices, b.val.indices
    assert set(train).isdisjoint(val) and len(set(train) | set(val)) == 100
    assert np.array_equal(np.bincount(b.val.targets), np.ones(10))   # stratified: one of each
    # mean/std from the train split only (each image is one constant, so the splits differ)
    expected = pixels[train].astype(np.float64) / 255
    assert b.mean[0] == pytest.approx(expected.mean()) and b.std[0] == pytest.approx(expected.std())
    assert b.mean[0] != pytest.approx(pixels.astype(np.float64).mean() / 255)
    # (raw × scale − mean) / std, item by item, from the official test files
    x, y = b.test[3]
    assert torch.allclose(x, torch.full((1, 28, 28), ((7 + 6) / 255 - b.mean[0]) / b.std[0]), atol=1e-5)
    assert y == 3
    # held in memory as uint8; batch() is the same as item by item
    assert b.train.pixels.dtype == torch.uint8
    xb, yb = b.train.batch([4, 0, 17])
    assert torch.allclose(xb, torch.stack([b.train[i][0] for i in (4, 0, 17)]), atol=1e-6)
    assert yb.tolist() == [b.train[i][1] for i in (4, 0, 17)] and yb.dtype == torch.int64
    assert_tensors(b)
    if name == "mnist":
        assert b.labels == [str(i) for i in range(10)]
    else:
        assert b.labels[0] == "T-shirt/top"


def test_mnist_split_is_deterministic_and_picklable_for_workers(tmp_path):
    write_mnist(tmp_path)
    a, b = data.load_data("mnist", data_dir=tmp_path), data.load_data("mnist", data_dir=tmp_path)
    assert np.array_equal(a.val.indices, b.val.indices) and a.split == b.split
    assert a.describe()["split"]["val_indices_sha256"] == b.describe()["split"]["val_indices_sha256"]
    c = data.load_data("mnist", data_dir=tmp_path, seed=1)
    assert not np.array_equal(a.val.indices, c.val.indices)
    clone = pickle.loads(pickle.dumps(a.train))   # spawn-started DataLoader workers pickle the dataset
    assert torch.equal(clone[5][0], a.train[5][0])


def test_read_idx_parses_header_dims_and_dtype(tmp_path):
    arr = np.arange(2 * 3 * 5, dtype=np.uint8).reshape(2, 3, 5)
    write_idx(tmp_path / "a", arr)
    out = data.read_idx(tmp_path / "a")
    assert out.shape == (2, 3, 5) and out.dtype == np.uint8 and np.array_equal(out, arr)
    # big-endian int32 (type 0x0C) as the format allows
    (tmp_path / "b").write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 3) + np.array([1, -2, 70000], ">i4").tobytes())
    assert data.read_idx(tmp_path / "b").tolist() == [1, -2, 70000]
    # gzip is recognised by its magic bytes, whatever the file is called
    (tmp_path / "c").write_bytes(gzip.compress((tmp_path / "a").read_bytes()))
    assert np.array_equal(data.read_idx(tmp_path / "c"), arr)


@pytest.mark.parametrize("content,message", [
    (b"", "not an IDX file"),
    (b"\x89PNG\r\n\x1a\n", "not an IDX file"),
    (struct.pack(">I", 0x0803) + struct.pack(">I", 2), "truncated IDX header"),
    (struct.pack(">IIII", 0x0803, 2, 28, 28) + bytes(1000), "truncated: dims 2x28x28 need 1568 bytes"),
    (struct.pack(">II", 0x0801, 2) + bytes(3), "longer than its header says"),
    (gzip.compress(struct.pack(">II", 0x0801, 2) + bytes(2))[:-12], "corrupt or truncated gzip"),
])
def test_corrupt_idx_is_one_line_bad_input_naming_the_file(tmp_path, content, message):
    f = tmp_path / "train-labels-idx1-ubyte"
    f.write_bytes(content)
    with pytest.raises(BadInput, match=message) as e:
        data.read_idx(f)
    assert str(e.value).startswith(str(f)) and "\n" not in str(e.value)


def test_missing_files_name_every_place_and_the_package(tmp_path):
    with pytest.raises(BadInput) as e:
        data.load_data("fashion-mnist", data_dir=tmp_path / "nothing")
    msg = str(e.value)
    for place in (tmp_path / "nothing", tmp_path / "nothing" / "FashionMNIST" / "raw",
                  "/usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist", "--download"):
        assert str(place) in msg
    assert "\n" not in msg


def test_without_data_dir_the_system_folder_is_read(tmp_path, monkeypatch):
    """No --data-dir: ./data first, then Debian's folder (here a stand-in with gzipped files)."""
    system = tmp_path / "usr-share"
    write_mnist(system, flat=True, gz=True)
    spec = dataclasses.replace(data.IDX_DATASETS["fashion-mnist"], system_dir=system)
    monkeypatch.setitem(data.IDX_DATASETS, "fashion-mnist", spec)
    monkeypatch.setitem(data.DATASETS, "fashion-mnist", data_load._idx_loader(spec))
    monkeypatch.chdir(tmp_path)            # ./data does not exist here
    b = data.load_data("fashion-mnist")
    assert b.split["files"]["test_labels"] == str(system / "t10k-labels-idx1-ubyte.gz")
    # with an explicit --data-dir the system folder is not a fallback
    with pytest.raises(BadInput, match="read when no --data-dir is given"):
        data.load_data("fashion-mnist", data_dir=tmp_path / "elsewhere")
    # ./data wins over the system folder
    write_mnist(tmp_path / "data", flat=True, n_train=200)
    assert data.load_data("fashion-mnist").split["sizes"]["train"] == 180


def test_a_folder_with_some_files_says_which_are_missing(tmp_path):
    write_mnist(tmp_path, flat=True)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(BadInput, match=f"{tmp_path} lacks t10k-labels-idx1-ubyte"):
        data.load_data("mnist", data_dir=tmp_path)


def test_download_failure_is_one_line_bad_input(tmp_path, monkeypatch):
    from torchvision.datasets import MNIST

    def offline(self):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried https://..., got:\nURLError")

    monkeypatch.setattr(MNIST, "download", offline)
    with pytest.raises(BadInput, match="download into .* failed: Error downloading") as e:
        data.load_data("mnist", data_dir=tmp_path, download=True)
    assert "\n" not in str(e.value)


def test_download_true_with_files_present_reads_them(tmp_path, monkeypatch):
    write_mnist(tmp_path)
    import urllib.request

    def no_network(*a, **k):
        raise AssertionError("network used")
    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert len(data.load_data("mnist", data_dir=tmp_path, download=True).test) == 20


def test_truncated_mnist_file_is_bad_input_naming_it(tmp_path):
    write_mnist(tmp_path)
    f = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(BadInput, match=f"{f}: truncated"):
        data.load_data("mnist", data_dir=tmp_path)


def test_mismatched_images_and_labels_are_bad_input(tmp_path):
    write_mnist(tmp_path, flat=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(99) % 10)
    with pytest.raises(BadInput, match="holds .99,. labels for the 100 images"):
        data.load_data("mnist", data_dir=tmp_path)
    write_mnist(tmp_path / "b", flat=True)
    write_idx(tmp_path / "b" / "train-images-idx3-ubyte", np.zeros((100, 28), np.uint8))
    with pytest.raises(BadInput, match="expected uint8 images N×H×W"):
        data.load_data("mnist", data_dir=tmp_path / "b")


def test_mnist_with_labels_out_of_range_is_bad_input(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.full(100, 12))
    with pytest.raises(BadInput, match="labels must be 0..9"):
        data.load_data("mnist", data_dir=tmp_path)


# --------------------------------------------------------------------------- cifar10

def test_cifar10_from_pickled_batches(tmp_path, cifar_md5s_of):
    cifar_md5s_of(write_cifar(tmp_path))
    b = data.load_data("cifar10", data_dir=tmp_path)
    assert (b.num_classes, b.input_shape, b.labels) == (10, (3, 32, 32), CIFAR_NAMES)
    assert b.split["sizes"] == {"train": 90, "val": 10, "test": 20} and not b.augmented
    pixels = b.train.base.data                       # N×32×32×3 uint8, as torchvision keeps it
    assert pixels.dtype == np.uint8 and pixels.shape == (100, 32, 32, 3)
    expected = pixels[b.train.indices].reshape(-1, 3).astype(np.float64) / 255
    assert np.allclose(b.mean, expected.mean(axis=0)) and np.allclose(b.std, expected.std(axis=0))
    x, _ = b.val[0]
    raw = torch.from_numpy(pixels[b.val.indices[0]]).permute(2, 0, 1).double() / 255
    assert torch.allclose(x.double(), (raw - torch.tensor(b.mean)[:, None, None]) / torch.tensor(b.std)[:, None, None],
                          atol=1e-5)
    assert_tensors(b)


def test_cifar10_augmentation_only_on_train(tmp_path, cifar_md5s_of):
    cifar_md5s_of(write_cifar(tmp_path))
    b = data.load_data("cifar10", data_dir=tmp_path, augment=True)
    assert b.augmented and b.describe()["augmented"]
    torch.manual_seed(0)
    draws = [b.train[0][0] for _ in range(8)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])   # random crops/flips
    assert torch.equal(b.val[0][0], b.val[0][0])                  # val and test stay fixed
    assert_tensors(b)
    with pytest.raises(BadInput, match="available for: cifar10"):
        data.load_data("mnist", data_dir=tmp_path, augment=True)


def test_cifar10_changed_file_fails_the_md5_check(tmp_path, cifar_md5s_of):
    folder = write_cifar(tmp_path)
    cifar_md5s_of(folder)
    with open(folder / "data_batch_3", "ab") as f:
        f.write(b"x")
    with pytest.raises(BadInput, match="data_batch_3 does not match the official md5"):
        data.load_data("cifar10", data_dir=tmp_path)


# --------------------------------------------------------------------------- imagefolder

def test_imagefolder_split_from_one_folder(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    b = data.load_data(f"imagefolder:{root}", image_size=32, in_memory=False)
    assert b.labels == ["cat", "dog"] and b.num_classes == 2 and b.input_shape == (3, 32, 32)
    sizes = b.split["sizes"]
    assert sum(sizes.values()) == 11 and sizes["test"] >= 2 and sizes["val"] >= 2
    parts = [set(b.train.indices), set(b.val.indices), set(b.test.indices)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    for part in (b.train, b.val, b.test):
        assert set(part.targets) == {0, 1}                            # stratified
    # mean/std from the train images only (each image is one colour, so resizing keeps it)
    from PIL import Image
    colours = np.array([Image.open(b.train.base.samples[i][0]).convert("RGB").getpixel((0, 0))
                        for i in b.train.indices]) / 255
    assert np.allclose(b.mean, colours.mean(axis=0)) and np.allclose(b.std, colours.std(axis=0))
    assert b.scale == 1 / 255
    assert_tensors(b)
    # streamed from disk: the dataset holds paths, not pixels
    assert all(isinstance(p, str) for p, _ in b.train.base.samples)


def test_imagefolder_uses_train_val_test_subfolders(tmp_path):
    root = tmp_path / "split"
    write_image_folder(root / "train", per_class=6)
    write_image_folder(root / "test", per_class=2)
    b = data.load_data(f"imagefolder:{root}", image_size=24, in_memory=False)
    assert b.input_shape == (3, 24, 24)
    assert b.split["sizes"]["test"] == 5 and b.split["sizes"]["train"] + b.split["sizes"]["val"] == 13
    assert b.test.base is not b.train.base and b.val.base is b.train.base
    assert_tensors(b)

    write_image_folder(root / "val", per_class=1)
    b = data.load_data(f"imagefolder:{root}")
    assert b.split["sizes"] == {"train": 13, "val": 3, "test": 5}


def test_imagefolder_fits_in_memory_decoded_once_with_the_same_pixels(tmp_path):
    root = tmp_path / "split"
    write_image_folder(root / "train", per_class=6)
    write_image_folder(root / "test", per_class=2)
    mem = data.load_data(f"imagefolder:{root}", image_size=24)
    disk = data.load_data(f"imagefolder:{root}", image_size=24, in_memory=False)
    assert isinstance(mem.train, data.InMemory) and isinstance(disk.train, data.SplitView)
    assert mem.split == disk.split and (mem.mean, mem.std) == (disk.mean, disk.std)
    for a, b in ((mem.train, disk.train), (mem.val, disk.val), (mem.test, disk.test)):
        xa, ya = data.to_arrays(a)
        xb, yb = data.to_arrays(b)
        assert (ya == yb).all() and np.abs(xa - xb).max() < 1e-5   # same uint8 pixels, normalised the same
    ptr = {k: getattr(mem, k).pixels.data_ptr() for k in ("train", "val", "test")}
    assert ptr["train"] == ptr["val"] != ptr["test"]   # one decode per folder, shared by its splits
    assert_tensors(mem)
    # augmentation is per sample: it streams; so does data over the memory budget
    assert isinstance(data.load_data(f"imagefolder:{root}", augment=True).train, data.SplitView)


def test_imagefolder_fits_in_memory_follows_the_budget(monkeypatch):
    from edgekd import defaults
    monkeypatch.setattr(defaults, "IN_MEMORY_BYTES", 3 * 32 * 32 * 10)
    assert data.fits_in_memory(10, (3, 32, 32)) and not data.fits_in_memory(11, (3, 32, 32))


def test_imagefolder_default_size_is_the_images_own_never_upsampled(tmp_path):
    for size, expected in ((16, 16), (28, 28), (64, data.IMAGE_SIZE)):
        root = tmp_path / f"s{size}"
        for cls in ("a", "b"):
            for k in range(5):
                write_png(root / cls / f"{k}.png", (10 * k, 20, 30), size=(size, size))
        assert data.load_data(f"imagefolder:{root}").input_shape == (3, expected, expected), size


def test_imagefolder_classes_must_match_across_subfolders(tmp_path):
    write_image_folder(tmp_path / "train")
    write_png(tmp_path / "test" / "cat" / "a.png", (1, 2, 3))
    write_png(tmp_path / "test" / "cow" / "a.png", (1, 2, 3))
    with pytest.raises(BadInput, match="must match"):
        data.load_data(f"imagefolder:{tmp_path}")


def test_imagefolder_bad_folders_are_bad_input(tmp_path):
    cases = {}
    cases["missing"] = tmp_path / "missing"
    cases["empty"] = tmp_path / "empty"
    cases["empty"].mkdir()
    cases["one class"] = tmp_path / "one"
    for k in range(3):
        write_png(cases["one class"] / "cat" / f"{k}.png", (1, 2, 3))
    cases["no images"] = tmp_path / "text"
    for cls in ("a", "b"):
        (cases["no images"] / cls).mkdir(parents=True)
        (cases["no images"] / cls / "notes.txt").write_text("not an image")
    cases["too few"] = tmp_path / "few"
    for cls in ("a", "b"):
        write_png(cases["too few"] / cls / "0.png", (1, 2, 3))
    expected = {"missing": "is not a folder", "empty": "found none", "one class": "found only 'cat'",
                "no images": "Found no valid file", "too few": "too few samples"}
    for case, folder in cases.items():
        with pytest.raises(BadInput, match=expected[case]) as e:
            data.load_data(f"imagefolder:{folder}")
        assert str(folder) in str(e.value) and "\n" not in str(e.value), case


def test_imagefolder_corrupt_image_is_bad_input_naming_the_file(tmp_path):
    root = write_image_folder(tmp_path / "pets")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    with pytest.raises(BadInput, match=r"cannot read image '.*broken\.png'"):
        b = data.load_data(f"imagefolder:{root}")   # mean/std reads train images
        for split in (b.train, b.val, b.test):
            data.to_arrays(split)
    with pytest.raises(BadInput, match=r"broken\.png"):
        data.load_image_file(str(root / "cat" / "broken.png"))


def test_export_reloads_an_imagefolder_at_the_size_the_run_trained_at(tmp_path):
    """A run that left --input-size unset trained at the default of its day; export reads the size
    from the run's recorded input shape, not from today's default."""

    from edgekd.deploy.export import _test_arrays

    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        for k in range(5):
            write_png(root / cls / f"{k}.png", (10 * k, 20, 30), size=(16, 16))
    run = tmp_path / "run"
    run.mkdir()
    for recorded in (32, 16):
        from dataclasses import asdict

        from edgekd.run.config import write_config
        from edgekd.train.config import DistillConfig

        write_config(run / "config.json", asdict(DistillConfig(data=f"imagefolder:{root}", input_size=None)),
                     {"input_shape": [3, recorded, recorded]})
        bundle, x, _ = _test_arrays(run)
        assert bundle.input_shape == (3, recorded, recorded) and x.shape[1:] == (3, recorded, recorded)
