"""`mnist`, `fashion-mnist`: the original IDX files, gzipped or not, parsed with numpy, from --data-dir, from
torchvision's MNIST/raw (FashionMNIST/raw) layout under it, or, with no --data-dir, ./data and then Debian's
/usr/share/datasets/fashion-mnist. The official test split is the test set; a stratified, seeded
VAL_FRACTION of the official train split is the val set.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd import defaults
from edgekd.data.common import PIXEL_SCALE, DataBundle, _official_split_record, _pixel_stats, _val_split
from edgekd.data.memory import _in_memory_bundle
from edgekd.errors import BadInput, first_line

# ---------------------------------------------------------------------------
# mnist, fashion-mnist: the original IDX files, read with numpy

IDX_DTYPES = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def _idx_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with gzip's magic (whatever its name)."""
    import gzip
    import zlib

    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise BadInput(f"{path}: corrupt or truncated gzip data ({first_line(e)}); "
                       f"replace it with the original file") from None


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped or not: magic 00 00 TYPE NDIM, NDIM big-endian
    uint32 dims, then the data. Anything else (bad magic, truncated, extra bytes) is BadInput
    naming the file."""
    path = Path(path)
    raw = _idx_bytes(path)
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES or raw[3] == 0:
        raise BadInput(f"{path}: not an IDX file (starts {raw[:4].hex() or 'empty'}; expected 0000 08 then "
                       f"the number of dimensions, e.g. 00000803 for images, 00000801 for labels)")
    ndim, header = raw[3], 4 + 4 * raw[3]
    if len(raw) < header:
        raise BadInput(f"{path}: truncated IDX header ({len(raw)} bytes; {ndim} dimensions need {header})")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    need = math.prod(dims) * dtype.itemsize
    if len(raw) - header != need:
        what = "truncated" if len(raw) - header < need else "longer than its header says"
        raise BadInput(f"{path}: {what}: dims {'x'.join(map(str, dims))} need {need} bytes of data, "
                       f"found {len(raw) - header}")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).copy()  # writable, owns its memory


@dataclass(frozen=True)
class IdxDataset:
    """An IDX dataset: where its files may be and what they hold."""

    name: str
    folder: str                          # torchvision's layout under --data-dir
    torchvision_class: str               # only for --download
    labels: tuple[str, ...]
    system_dir: Path | None = None       # a distribution's package, read when no --data-dir is given
    package: str | None = None


IDX_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
             "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}
FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")
IDX_DATASETS = {
    "mnist": IdxDataset("mnist", "MNIST/raw", "MNIST", tuple(str(i) for i in range(10))),
    "fashion-mnist": IdxDataset("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", FASHION_LABELS,
                                system_dir=defaults.FASHION_MNIST_SYSTEM_DIR, package="dataset-fashion-mnist"),
}


def _idx_file(folder: Path, stem: str) -> Path | None:
    """`stem`, `stem.gz`, or the common 'train-images.idx3-ubyte' spelling, in `folder`."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, f"{stem}.gz", dotted, f"{dotted}.gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def idx_places(spec: IdxDataset, data_dir: str | Path | None) -> list[Path]:
    """Where the files are looked for, in order: the folder, torchvision's layout under it, and
    (only when no --data-dir is given) the distribution's system folder."""
    base = Path(data_dir) if data_dir is not None else defaults.DATA_DIR
    places = [base, base / spec.folder]
    if data_dir is None and spec.system_dir is not None:
        places.append(spec.system_dir)
    return places


def find_idx_files(spec: IdxDataset, data_dir: str | Path | None) -> dict[str, Path]:
    """The four files from the first place holding all of them, or BadInput naming every place."""
    partial = []
    for folder in idx_places(spec, data_dir):
        found = {k: _idx_file(folder, stem) for k, stem in IDX_FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
        if any(found.values()):
            partial.append(f"{folder} lacks {', '.join(IDX_FILES[k] for k, f in found.items() if f is None)}")
    base = Path(data_dir) if data_dir is not None else defaults.DATA_DIR
    where = f"{base}, {base / spec.folder} (torchvision's layout)"
    if spec.system_dir is not None:
        used = "" if data_dir is None else " (read when no --data-dir is given)"
        where += f" or {spec.system_dir}{used}; `apt-get install {spec.package}` puts them there"
    seen = f" ({'; '.join(partial)})" if partial else ""
    raise BadInput(f"{spec.name}: no IDX files {IDX_FILES['train_images']}[.gz] etc. in {where}{seen}; "
                   f"put them in one of these, or pass --download")


def _download_idx(spec: IdxDataset, data_dir: str | Path | None) -> None:
    """torchvision's downloader, which writes the IDX files under DIR/<Class>/raw."""
    from torchvision import datasets

    base = Path(data_dir) if data_dir is not None else defaults.DATA_DIR
    try:
        getattr(datasets, spec.torchvision_class)(str(base), train=True, download=True)
    except Exception as e:  # URLError, RuntimeError, ...
        raise BadInput(f"{spec.name}: download into {base} failed: {first_line(e)}") from None


def _idx_pair(spec: IdxDataset, images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×1×H×W, int64 labels) from one images/labels pair, checked against each other."""
    x, y = read_idx(images), read_idx(labels)
    if x.dtype != np.uint8 or x.ndim != 3 or len(x) == 0:
        raise BadInput(f"{images}: expected uint8 images N×H×W, found {x.dtype} of shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise BadInput(f"{labels}: holds {y.shape} labels for the {len(x)} images in {images.name}")
    y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= len(spec.labels):
        raise BadInput(f"{labels}: labels must be 0..{len(spec.labels) - 1}, found {y.min()}..{y.max()}")
    return x[:, None], y


def load_idx_bundle(spec: IdxDataset, *, data_dir: str | Path | None = None, download: bool = False,
                    seed: int = defaults.SPLIT_SEED) -> DataBundle:
    """mnist / fashion-mnist from the IDX files: the official 60k/10k split, with a stratified
    VAL_FRACTION of the official train split held out (seeded) as validation."""
    try:
        files = find_idx_files(spec, data_dir)
    except BadInput:
        if not download:
            raise
        _download_idx(spec, data_dir)
        files = find_idx_files(spec, data_dir)
    x, y = _idx_pair(spec, files["train_images"], files["train_labels"])
    x_test, y_test = _idx_pair(spec, files["test_images"], files["test_labels"])
    if x_test.shape[1:] != x.shape[1:]:
        raise BadInput(f"{files['test_images']}: images are {x_test.shape[2:]}, the train images {x.shape[2:]}")
    train, val = _val_split(y, seed=seed, what=f"{spec.name} ({files['train_labels']})")
    mean, std = _pixel_stats(x[:, 0, :, :, None], train)
    split = _official_split_record(train, val, len(y_test), seed=seed)
    split["files"] = {k: str(p) for k, p in files.items()}
    return _in_memory_bundle(
        spec.name, {"train": (x, y, train), "val": (x, y, val), "test": (x_test, y_test, np.arange(len(y_test)))},
        scale=PIXEL_SCALE, mean=mean, std=std, num_classes=len(spec.labels), labels=list(spec.labels), split=split)
