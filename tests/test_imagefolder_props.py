"""Property tests for the `imagefolder:DIR` loader (issue 5): odd folders made by hypothesis.

Whatever the folder holds (no classes, one class, empty classes, corrupt or truncated
images, files that are not images, nested junk, odd file names, tiny and very wide
images, grayscale / RGBA / palette / 16-bit / CMYK images, a header claiming a giant
image, broken symlinks), `edgekd.data.load_data` either returns a DataBundle whose items
are float32 tensors of the declared shape, or raises BadInput with one line. An item
may raise BadInput too (images are decoded when read), but nothing else, ever.
"""

from __future__ import annotations

import io
import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edgekd import defaults
from edgekd.data import load_data
from edgekd.errors import BadInput

SETTINGS = settings(max_examples=30, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TINY = ["--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--teacher", "cnn-small",
        "--student", "tiny-cnn", "--no-progress"]


# ---------------------------------------------------------------- files
def _image_bytes(mode: str, size: tuple[int, int], fmt: str, seed: int) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (h, w), dtype=np.uint16))
    elif mode == "P":
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert("P")
    else:
        im = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).convert(mode)
    buf = io.BytesIO()
    im.save(buf, fmt)
    return buf.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height but holds one row: a decompression bomb's header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 9))
            + chunk(b"IEND", b""))


# kind -> (extension, whether it is a readable image)
GOOD = {
    "rgb-png": ".png", "gray-png": ".png", "rgba-png": ".png", "palette-png": ".png", "16bit-png": ".png",
    "bilevel-png": ".png", "jpeg": ".jpg", "cmyk-jpeg": ".jpeg", "gif": ".gif", "bmp": ".bmp",
    "rgba-webp": ".webp", "tiny-1x1": ".png", "wide-1x700": ".png", "tall-700x1": ".png", "big-300x200": ".jpg",
}
BAD = {
    "not-an-image": ".png", "empty": ".jpg", "truncated-png": ".png", "truncated-jpeg": ".jpg",
    "flipped-bytes": ".png", "giant-header": ".png", "text-as-jpeg": ".jpeg", "broken-symlink": ".png",
}
IGNORED = {"readme": ".txt", "no-extension": "", "json": ".json"}  # not image extensions: ImageFolder skips them


def make_file(path: Path, kind: str, seed: int) -> None:
    spec = {
        "rgb-png": ("RGB", (8, 8), "PNG"), "gray-png": ("L", (9, 7), "PNG"), "rgba-png": ("RGBA", (6, 6), "PNG"),
        "palette-png": ("P", (8, 5), "PNG"), "16bit-png": ("I;16", (5, 5), "PNG"), "bilevel-png": ("1", (8, 8), "PNG"),
        "jpeg": ("RGB", (10, 10), "JPEG"), "cmyk-jpeg": ("CMYK", (8, 8), "JPEG"), "gif": ("P", (7, 7), "GIF"),
        "bmp": ("L", (4, 4), "BMP"), "rgba-webp": ("RGBA", (8, 8), "WEBP"), "tiny-1x1": ("RGB", (1, 1), "PNG"),
        "wide-1x700": ("L", (700, 1), "PNG"), "tall-700x1": ("RGB", (1, 700), "PNG"),
        "big-300x200": ("RGB", (300, 200), "JPEG"),
    }
    if kind in spec:
        path.write_bytes(_image_bytes(*spec[kind], seed=seed))
    elif kind == "not-an-image":
        path.write_bytes(np.random.default_rng(seed).bytes(64))
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated-png":
        data = _image_bytes("RGB", (16, 16), "PNG", seed)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "truncated-jpeg":
        data = _image_bytes("RGB", (16, 16), "JPEG", seed)
        path.write_bytes(data[: len(data) // 2])
    elif kind == "flipped-bytes":
        data = bytearray(_image_bytes("RGB", (8, 8), "PNG", seed))
        for i in np.random.default_rng(seed).integers(8, len(data), 6):
            data[i] ^= 0xFF
        path.write_bytes(bytes(data))
    elif kind == "giant-header":
        path.write_bytes(_png_claiming(100_000, 100_000))  # refused before any pixel is allocated
    elif kind == "text-as-jpeg":
        path.write_text("not really a photo\n")
    elif kind == "broken-symlink":
        os.symlink(path.parent / "does-not-exist.png", path)
    elif kind in IGNORED:
        path.write_text("{}\n")
    else:
        raise AssertionError(kind)


# ---------------------------------------------------------------- folders
# Odd names: spaces, unicode, dots, dashes; never '/', NUL or a newline (see the newline test below).
NAME = st.text(alphabet=st.sampled_from(list("abcXYZ019 _-.") + ["é", "ß", "猫", "🙂", "Ω", "\u00a0"]),
               min_size=1, max_size=10).filter(lambda s: s not in (".", ".."))
ANY_KIND = st.sampled_from(sorted(GOOD) * 3 + sorted(BAD) + sorted(IGNORED))
CLEAN_KIND = st.sampled_from(sorted(GOOD) * 3 + sorted(IGNORED))


def classes(*, clean: bool) -> st.SearchStrategy:
    """A list of (class name, files, files in a nested folder). Clean folders (enough readable
    images in 2 or 3 classes) mostly load; messy ones mix in every odd case."""
    kind = CLEAN_KIND if clean else ANY_KIND
    sizes = [5, 6, 8] if clean else [0, 1, 3, 5, 6, 8]
    files = st.sampled_from(sizes).flatmap(lambda n: st.lists(st.tuples(NAME, kind), min_size=n, max_size=n))
    one = st.tuples(NAME, files, st.lists(st.tuples(NAME, kind), max_size=2))
    counts = [2, 3] if clean else [0, 1, 2, 2, 3]
    return st.sampled_from(counts).flatmap(
        lambda n: st.lists(one, min_size=n, max_size=n, unique_by=lambda c: c[0].lower()))


FILE = st.tuples(NAME, ANY_KIND)
CLASSES = st.booleans().flatmap(lambda clean: classes(clean=clean))


@dataclass
class Made:
    root: Path
    bad_files: int   # image-extension files that cannot be read


def build(root: Path, classes: list, junk: list, seed: int) -> Made:
    root.mkdir(parents=True, exist_ok=True)
    bad = 0
    used: set[str] = set()
    for cname, files, nested in classes:
        if cname.lower() in used:  # two classes may not share a folder
            continue
        used.add(cname.lower())
        folder = root / cname
        folder.mkdir()
        for where, items in ((folder, files), (folder / "nested junk", nested)):
            names: set[str] = set()
            for i, (fname, kind) in enumerate(items):
                ext = {**GOOD, **BAD, **IGNORED}[kind]
                name = f"{fname}{i}{ext}"
                if name.lower() in names:
                    continue
                names.add(name.lower())
                where.mkdir(exist_ok=True)
                make_file(where / name, kind, seed + i)
                bad += kind in BAD
    for i, (fname, kind) in enumerate(junk):  # loose files in the root are not classes
        path = root / f"{fname}{i}{({**GOOD, **BAD, **IGNORED})[kind]}"
        if not path.exists():  # a loose file named like a class folder ("0" + "0" beside class "00")
            make_file(path, kind, seed + 100 + i)
    return Made(root, bad)


def check_one_line(e: BadInput) -> None:
    msg = str(e)
    assert msg.strip(), "BadInput with an empty message"
    assert "\n" not in msg.strip(), f"BadInput message is not one line: {msg!r}"


def _kind_of(msg: str) -> str:
    for words in ("at least 2 class", "Found no valid file", "too few samples", "cannot read image",
                  "must match", "is not a folder"):
        if words in msg:
            return words
    return "other"


def check_loader(made: Made, record: Callable[[str], object] = lambda _: None) -> None:
    """The property: a valid bundle whose items are right, or one line of BadInput.
    `record` (hypothesis' `event` inside a property) counts the outcomes for --hypothesis-show-statistics."""
    import torch

    try:
        bundle = load_data(f"imagefolder:{made.root}")
    except BadInput as e:
        check_one_line(e)
        record(f"BadInput: {_kind_of(str(e))}")
        return
    record("bundle")
    c, h, w = bundle.input_shape
    # grayscale when every sampled train image is single-band (16-bit PNGs are), RGB otherwise
    # the images' own H×W (median of each side), never upsampled beyond 4 px a side, scaled down keeping
    # the aspect ratio to at most defaults.INPUT_PIXELS pixels (issue 20: 1×700 strips are not squashed square)
    assert c in (1, 3) and 4 <= h and 4 <= w and h * w <= defaults.INPUT_PIXELS
    assert bundle.num_classes >= 2 and len(bundle.labels) == bundle.num_classes
    assert all(np.isfinite(bundle.mean)) and all(s > 0 and np.isfinite(s) for s in bundle.std)
    assert len(bundle.train) > 0 and len(bundle.test) > 0
    failed = 0
    for ds in (bundle.train, bundle.val, bundle.test):
        for i in range(len(ds)):
            try:
                x, y = ds[i]
            except BadInput as e:
                check_one_line(e)
                failed += 1
                continue
            assert isinstance(x, torch.Tensor) and x.dtype == torch.float32 and tuple(x.shape) == (c, h, w)
            assert torch.isfinite(x).all()
            assert 0 <= int(y) < bundle.num_classes
    if made.bad_files == 0:
        assert failed == 0, "a folder of readable images gave an item that does not load"


# ---------------------------------------------------------------- properties
@SETTINGS
@given(classes=CLASSES, junk=st.lists(FILE, max_size=2), seed=st.integers(0, 2**16))
def test_odd_flat_folders_give_a_bundle_or_one_line_of_bad_input(classes, junk, seed) -> None:
    with tempfile.TemporaryDirectory(prefix="edgekd-imagefolder-") as tmp:
        check_loader(build(Path(tmp) / "data", classes, junk, seed), event)


def renamed(split: list | None, like: list) -> list | None:
    """`split`'s files (cycled) under the class names of `like`; an empty or absent split as it is."""
    if not split:
        return split
    return [(name, *split[i % len(split)][1:]) for i, (name, *_) in enumerate(like)]


@SETTINGS
@given(clean=st.sampled_from([True, True, False]), with_val=st.booleans(),
       same_classes=st.sampled_from([True, True, False]), seed=st.integers(0, 2**16), data=st.data())
def test_odd_split_folders_give_a_bundle_or_one_line_of_bad_input(clean, with_val, same_classes, seed, data) -> None:
    """The train/ test/ [val/] layout, with the same class names in each split or not."""
    train, test = data.draw(classes(clean=clean), "train"), data.draw(classes(clean=clean), "test")
    val = data.draw(classes(clean=clean), "val") if with_val else None
    if same_classes and train:  # every split gets train's class names, each with files drawn for that split
        test, val = renamed(test, train), renamed(val, train)
    with tempfile.TemporaryDirectory(prefix="edgekd-imagefolder-") as tmp:
        root = Path(tmp) / "data"
        bad = sum(build(root / split, spec, [], seed).bad_files
                  for split, spec in (("train", train), ("test", test), ("val", val)) if spec is not None)
        check_loader(Made(root, bad), event)


def good_folder(root: Path, classes: dict[str, list[str]]) -> Path:
    for c, kinds in classes.items():
        (root / c).mkdir(parents=True)
        for i, kind in enumerate(kinds):
            make_file(root / c / f"{i}{({**GOOD, **BAD})[kind]}", kind, i)
    return root


def test_a_folder_of_every_good_image_kind_loads(tmp_path: Path) -> None:
    """The property's other branch really happens: every readable kind gives a bundle."""
    kinds = sorted(GOOD)
    made = Made(good_folder(tmp_path / "data", {"a": kinds, "b": kinds[::-1]}), 0)
    bundle = load_data(f"imagefolder:{made.root}")
    assert bundle.labels == ["a", "b"]
    check_loader(made)


@pytest.mark.parametrize("kind", sorted(BAD))
def test_each_unreadable_kind_is_one_line_of_bad_input_naming_the_file(tmp_path: Path, kind: str) -> None:
    from edgekd.data import load_image_file

    path = tmp_path / f"photo{BAD[kind]}"
    make_file(path, kind, 0)
    with pytest.raises(BadInput) as e:
        load_image_file(str(path))
    check_one_line(e.value)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("where", ["class-name", "file-name"])
def test_a_name_with_a_newline_still_gives_one_line(tmp_path: Path, where: str) -> None:
    root = tmp_path / "data"
    if where == "class-name":
        (root / "cats\nand dogs").mkdir(parents=True)  # the only class: 'found only ...'
    else:
        good_folder(root, {"a": ["rgb-png"] * 5, "b": ["rgb-png"] * 5})
        for i in range(5):  # every 'b' image unreadable, so the train statistics meet one
            (root / "b" / f"{i}.png").unlink()
            make_file(root / "b" / f"bad\nname{i}.png", "not-an-image", i)
    with pytest.raises(BadInput) as e:
        load_data(f"imagefolder:{root}")
    check_one_line(e.value)


# Corrupt files on which Pillow raises neither OSError, ValueError nor SyntaxError. Found by
# fuzzing load_image_file with mutated images (ImageFolder picks files by extension, Pillow
# reads them by content, so a broken .png may hold anything).
def _im_with_a_float_size() -> bytes:
    return _image_bytes("RGB", (10, 12), "IM", 0).replace(b"10*12", b"10*.2")   # TypeError


def _dds_with_unknown_flags() -> bytes:
    data = bytearray(_image_bytes("RGBA", (10, 12), "DDS", 0))
    struct.pack_into("<I", data, 80, 25)                                        # NotImplementedError
    return bytes(data)


def _tiff_with_too_many_samples() -> bytes:
    """SamplesPerPixel with 87 entries: Pillow warns (Python warning) and libtiff prints to fd 2."""
    data = bytearray(_image_bytes("RGB", (10, 12), "TIFF", 0))
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        if struct.unpack_from("<H", data, entry)[0] == 277:
            struct.pack_into("<I", data, entry + 4, 87)
    return bytes(data)


@pytest.mark.parametrize("make", [_im_with_a_float_size, _dds_with_unknown_flags], ids=["im-float-size", "dds-flags"])
def test_every_corrupt_file_is_bad_input(tmp_path: Path, make) -> None:
    from edgekd.data import load_image_file

    path = tmp_path / "photo.png"
    path.write_bytes(make())
    with pytest.raises(BadInput) as e:
        load_image_file(str(path))
    check_one_line(e.value)


@pytest.mark.integration
def test_a_corrupt_tiff_through_the_cli_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    root = good_folder(tmp_path / "photos", {"a": ["rgb-png"] * 5})
    (root / "b").mkdir()
    for i in range(5):  # all of class b, so the train statistics meet one before any run exists
        (root / "b" / f"{i}.tif").write_bytes(_tiff_with_too_many_samples())
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", "distill", "--data", f"imagefolder:{root}", *TINY],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "cannot read image" in lines[0] and "b/0.tif" in lines[0]


# ---------------------------------------------------------------- through the CLI
def _empty(root: Path) -> Path:
    root.mkdir()
    return root


def _one_class(root: Path) -> Path:
    return good_folder(root, {"only": ["rgb-png"] * 6})


def _unreadable_in_train(root: Path) -> Path:
    """Every 'b' file unreadable: the train split holds some, met while computing its statistics."""
    return good_folder(root, {"a": ["rgb-png"] * 5, "b": ["not-an-image"] * 5})


def _one_unreadable_image(root: Path) -> Path:
    """One unreadable image among good ones: it may sit in any split, so it may be met only in training."""
    return good_folder(root, {"a": ["rgb-png"] * 6, "b": ["rgb-png"] * 5 + ["truncated-png"]})


def _unreadable_in_test_split(root: Path) -> Path:
    """train/ and test/ folders, the unreadable image in test/: nothing reads it before training starts."""
    good_folder(root / "train", {"a": ["rgb-png"] * 6, "b": ["gray-png"] * 6})
    good_folder(root / "val", {"a": ["rgb-png"] * 2, "b": ["gray-png"] * 2})
    return good_folder(root / "test", {"a": ["rgb-png"] * 2, "b": ["gray-png", "not-an-image"]}).parent


@pytest.mark.parametrize("make,fragment", [
    (_empty, "found none"), (_one_class, "found only 'only'"),
    (_unreadable_in_train, "cannot read image"), (_one_unreadable_image, "cannot read image"),
    (_unreadable_in_test_split, "cannot read image"),
], ids=["empty", "one-class", "unreadable-in-train", "one-unreadable-anywhere", "unreadable-in-test-split"])
def test_odd_folders_through_the_cli_exit_2_with_one_line(tmp_path: Path, edgekd_main, monkeypatch, make,
                                                          fragment) -> None:
    import torch

    torch.set_num_threads(1)
    root = make(tmp_path / "photos")
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--data", f"imagefolder:{root}", *TINY)
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and "Traceback" not in r.err, r.err
    assert fragment in r.err_lines[0] and str(root) in r.err_lines[0], r.err
    latest = tmp_path / "artifacts" / "latest"
    assert not latest.exists(), "latest points at a run that failed on bad data"
