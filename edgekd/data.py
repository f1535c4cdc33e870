"""Datasets, the fixed train/val/test split, and the samples other stages need.

Every loader returns a `DataBundle`: three torch Datasets yielding
`(float32 tensor C×H×W, already normalised; int label)` plus the metadata that
the manifest records (shape, labels, mean/std, how the split was made).

Datasets:
- `digits`: scikit-learn's bundled 8×8 digits (pixel values 0..16).
- `mnist`, `fashion-mnist`: the original IDX files, gzipped or not, parsed here with
  numpy, from --data-dir, from torchvision's MNIST/raw (FashionMNIST/raw) layout under it,
  or, with no --data-dir, ./data and then Debian's /usr/share/datasets/fashion-mnist.
  The official test split is the test set; a stratified, seeded VAL_FRACTION of the
  official train split is the val set.
- `cifar10`: torchvision's class reading --data-dir (downloading only with --download).
- `imagefolder:DIR`: one subfolder per class, or `train/`, `test/` (and
  optionally `val/`) each holding one subfolder per class.

Digits, MNIST and Fashion-MNIST are held in memory as one uint8 tensor (`InMemory`) and
normalised per batch: `split.batch(indices)` is the training loop's fast path, and
`split[i]` yields the same sample. cifar10 and imagefolder stream: they keep raw
pixels (or file paths) and run the transform per item, so DataLoader workers can be used.

Preprocessing is always `(pixels * scale - mean) / std` per channel, with
`scale = 1/255` for images (1/16 for digits) and mean/std computed on the
*train split only* (never the published values), so val and test stay unseen.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd import defaults
from edgekd.errors import BadInput, first_line


@dataclass
class DataBundle:
    """One dataset ready for training: train/val/test splits (normalised tensors), class names,
    input shape and the preprocessing that export records in the manifest. From `load_data`."""

    name: str
    train: Any   # torch.utils.data.Dataset
    val: Any
    test: Any
    num_classes: int
    input_shape: tuple[int, int, int]  # C, H, W
    labels: list[str]
    mean: list[float]
    std: list[float]
    # raw pixel values are multiplied by `scale` before (x - mean) / std
    scale: float = 1.0
    split: dict[str, Any] = field(default_factory=dict)
    # True when the train transform is random: the teacher's outputs cannot be cached then.
    augmented: bool = False
    # How each image became H×W: RESIZE_POLICIES name, pad fill (raw pixel value); "none" = used as stored.
    resize: str = "none"
    fill: int = defaults.PAD_FILL
    # --unlabeled pools: their held-out share (label -1), scored by agreement with the teacher; None = no pool.
    unlabeled_test: Any = None

    def preprocessing(self) -> dict[str, Any]:
        """Everything a device-side preprocessor needs: H, W, the resize policy (and pad fill),
        then `(pixel * scale - mean) / std` per channel."""
        c, h, w = self.input_shape
        return {"height": h, "width": w, "channels": c, "resize": self.resize,
                "fill": self.fill if self.resize == "pad" else None, "scale": self.scale,
                "mean": self.mean, "std": self.std}

    def describe(self) -> dict[str, Any]:
        """What config.json and the manifest record: shape, labels, preprocessing, the split."""
        return {
            "name": self.name, "num_classes": self.num_classes,
            "input_shape": list(self.input_shape), "labels": self.labels,
            "preprocessing": self.preprocessing(),
            "split": self.split, "augmented": self.augmented,
        }


RESIZE_POLICIES = ("stretch", "pad", "crop")


def parse_hw(value: Any, *, option: str = "--input-size") -> tuple[int, int] | None:
    """`N`, `HxW` (or `H×W`), an int or an (H, W) pair → (H, W); None stays None. The one parser
    of input sizes: every option and keyword that takes a size goes through it."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = [p.strip() for p in re.split(r"[x×X]", value.strip())]
        if len(parts) not in (1, 2) or not all(p.isdigit() for p in parts):
            raise BadInput(f"{option} '{value}': expected N or HxW in pixels, e.g. 32 or 48x192")
        nums = [int(p) for p in parts]
    elif isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        nums = [int(value)]
    elif isinstance(value, (tuple, list)) and len(value) in (1, 2):
        nums = [int(v) for v in value]
    else:
        raise BadInput(f"{option} {value!r}: expected N or HxW in pixels, e.g. 32 or 48x192")
    h, w = nums if len(nums) == 2 else nums * 2
    return h, w


def check_resize(policy: str) -> str:
    if policy not in RESIZE_POLICIES:
        raise BadInput(f"--resize '{policy}': valid: {', '.join(RESIZE_POLICIES)}")
    return policy


def stratified_split(labels: np.ndarray, *, fractions=defaults.SPLIT_FRACTIONS,
                     seed: int = defaults.SPLIT_SEED) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/val/test indices (sorted)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    f_train, f_val, f_test = fractions
    rest, test = train_test_split(idx, test_size=f_test, stratify=labels, random_state=seed)
    val_share = f_val / (f_train + f_val)
    train, val = train_test_split(rest, test_size=val_share, stratify=labels[rest], random_state=seed)
    return np.sort(train), np.sort(val), np.sort(test)


def split_record(train, val, test, *, seed: int, fractions=defaults.SPLIT_FRACTIONS) -> dict[str, Any]:
    """What the run records about its split: sizes, seed and a hash of the test indices."""
    digest = hashlib.sha256(np.asarray(test, dtype=np.int64).tobytes()).hexdigest()[:16]
    return {"method": "stratified", "seed": seed, "fractions": list(fractions),
            "sizes": {"train": len(train), "val": len(val), "test": len(test)},
            "test_indices_sha256": digest}


def load_digits_bundle(*, seed: int = defaults.SPLIT_SEED, **_: Any) -> DataBundle:
    """scikit-learn's bundled 8×8 digits (1,797 real samples, pixel values 0..16), in memory."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = d.images.astype(np.uint8)[:, None, :, :]   # integers 0..16: exact as uint8
    y = d.target.astype(np.int64)
    train, val, test = stratified_split(y, seed=seed)
    # Normalise with statistics of the training split only, so test data stays unseen.
    scaled = x[train].astype(np.float64) / 16.0
    mean, std = float(scaled.mean()), float(scaled.std())
    return _in_memory_bundle(
        "digits", {"train": (x, y, train), "val": (x, y, val), "test": (x, y, test)},
        scale=1.0 / 16.0, mean=[mean], std=[std], num_classes=10, labels=[str(i) for i in range(10)],
        split=split_record(train, val, test, seed=seed))


# ---------------------------------------------------------------------------
# Streaming building blocks shared by the torchvision and image-folder loaders

VAL_FRACTION = 0.1          # of an official train split, held out (stratified) for validation
IMAGE_SIZE = 32             # imagefolder: the default side of square images (defaults.INPUT_PIXELS = its square)
MAX_IMAGE_SIZE = 1024
IMAGEFOLDER_STATS_SAMPLES = 512   # imagefolder: train images read to estimate mean/std
PIXEL_SCALE = 1.0 / 255.0


class SplitView:
    """The items `indices` of a base dataset, each passed through `transform` when read.

    The base yields (PIL image, int label); nothing is decoded or converted up
    front, so a view costs one index array. `targets` holds the view's labels.
    """

    def __init__(self, base: Any, indices: np.ndarray, transform: Callable, targets: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.transform = transform
        self.targets = np.asarray(targets, dtype=np.int64)[self.indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[int(self.indices[i])]
        return self.transform(image), int(label)


class ToMode:
    """PIL image -> the given mode ("L" grayscale or "RGB"), so every image has the data's channels."""

    def __init__(self, mode: str):
        self.mode = mode

    def __call__(self, image: Any) -> Any:
        return image if image.mode == self.mode else image.convert(self.mode)


class Fit:
    """PIL image -> exactly H×W by a resize policy, with PIL's bilinear filter (antialiased):
    - `stretch`: resize to H×W, whatever the aspect ratio;
    - `pad`: keep the aspect ratio, scale to fit inside H×W, pad right and bottom with `fill`
      (a raw pixel value, e.g. 0 black or 255 white), as OCR and document pipelines do;
    - `crop`: scale the short side to fit (keeping the aspect), then crop the centre H×W."""

    def __init__(self, size: tuple[int, int], policy: str = "stretch", fill: int = defaults.PAD_FILL):
        self.size, self.policy, self.fill = (int(size[0]), int(size[1])), check_resize(policy), int(fill)

    def scaled_size(self, width: int, height: int) -> tuple[int, int]:
        """(w, h) the image is resized to before padding or cropping."""
        h, w = self.size
        if self.policy == "stretch":
            return w, h
        pick = min if self.policy == "pad" else max
        s = pick(h / height, w / width)
        sw, sh = max(1, round(width * s)), max(1, round(height * s))
        return (min(sw, w), min(sh, h)) if self.policy == "pad" else (max(sw, w), max(sh, h))

    def __call__(self, image: Any) -> Any:
        from PIL import Image

        h, w = self.size
        sw, sh = self.scaled_size(*image.size)
        out = image if image.size == (sw, sh) else image.resize((sw, sh), Image.BILINEAR)
        if self.policy == "pad" and (sw, sh) != (w, h):
            canvas = Image.new(out.mode, (w, h), self.fill if len(out.getbands()) == 1 else (self.fill,) * 3)
            canvas.paste(out, (0, 0))
            return canvas
        if self.policy == "crop" and (sw, sh) != (w, h):
            left, top = (sw - w) // 2, (sh - h) // 2
            return out.crop((left, top, left + w, top + h))
        return out


def _to_tensor_transform(mean: list[float], std: list[float], *, augment: bool = False,
                         size: tuple[int, int] | None = None, mode: str | None = None, crop: bool = False,
                         resize: str = "stretch", fill: int = defaults.PAD_FILL) -> Callable:
    """PIL image -> normalised float32 C×H×W tensor (ToTensor scales by 1/255). `crop`: with
    `augment`, a random-resized crop + flip (ImageFolder) instead of the 4-pixel shifts."""
    from torchvision import transforms as T

    steps: list[Any] = [ToMode(mode)] if mode else []
    if augment and crop:
        steps += [T.RandomResizedCrop(tuple(size), scale=(0.35, 1.0), antialias=True), T.RandomHorizontalFlip()]
    elif size is not None:
        steps.append(Fit(size, resize, fill))
    if augment and not crop:
        # The usual light CIFAR augmentation: random 4-pixel shifts and mirror images.
        steps += [T.RandomCrop(size or 32, padding=4), T.RandomHorizontalFlip()]
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    return T.Compose(steps)


def _finish_stats(total: np.ndarray, squares: np.ndarray, count: int) -> tuple[list[float], list[float]]:
    mean = total / count
    var = np.maximum(squares / count - mean**2, 0.0)
    # A constant channel would divide by zero; leave it unscaled instead.
    std = [float(math.sqrt(v)) if v > 1e-12 else 1.0 for v in var]
    return [float(m) for m in mean], std


def _pixel_stats(images: np.ndarray, indices: np.ndarray) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of `images[indices]` (uint8 N×H×W×C) after × 1/255, in chunks."""
    channels = images.shape[-1]
    total, squares, count = np.zeros(channels), np.zeros(channels), 0
    for start in range(0, len(indices), 4096):
        chunk = images[indices[start:start + 4096]].reshape(-1, channels).astype(np.float64) * PIXEL_SCALE
        total += chunk.sum(axis=0)
        squares += np.square(chunk).sum(axis=0)
        count += chunk.shape[0]
    return _finish_stats(total, squares, count)




def _too_few(labels: np.ndarray, what: str, e: ValueError) -> BadInput:
    """sklearn's 'too few samples to stratify' ValueError, as one line of BadInput."""
    counts = np.bincount(labels)
    return BadInput(f"{what}: too few samples for a stratified split ({len(labels)} in all, "
                    f"smallest class has {counts[counts > 0].min()}): {first_line(e)}")


def _split_or_bad_input(labels: np.ndarray, *, what: str, seed: int):
    """stratified_split into train/val/test by SPLIT_FRACTIONS, or BadInput when too small."""
    try:
        return stratified_split(labels, seed=seed)
    except ValueError as e:
        raise _too_few(labels, what, e) from None


def _val_split(labels: np.ndarray, *, seed: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, val) indices of an official train split; val is VAL_FRACTION of it."""
    from sklearn.model_selection import train_test_split

    try:
        train, val = train_test_split(np.arange(len(labels)), test_size=VAL_FRACTION,
                                      stratify=labels, random_state=seed)
    except ValueError as e:
        raise _too_few(labels, what, e) from None
    return np.sort(train), np.sort(val)


def _official_split_record(train, val, n_test: int, *, seed: int) -> dict[str, Any]:
    digest = hashlib.sha256(np.asarray(val, dtype=np.int64).tobytes()).hexdigest()[:16]
    return {"method": "official test split; stratified val from the official train split",
            "seed": seed, "val_fraction": VAL_FRACTION,
            "sizes": {"train": len(train), "val": len(val), "test": n_test},
            "val_indices_sha256": digest}


# ---------------------------------------------------------------------------
# In memory: uint8 pixels, normalised per batch

class InMemory:
    """Items `indices` of raw pixels held as one uint8 N×C×H×W tensor, normalised when read.

    Small datasets (IDX files, digits) live here: 60,000 Fashion-MNIST images are 47 MB as
    uint8 and four times that as float32, and decoding sample by sample through PIL costs more
    than a small student's step. `batch(indices)` is the training loop's fast path: one gather
    and one fused multiply-add for the whole batch. `__getitem__` yields the same single
    sample, float32 C×H×W, for everything else (DataLoader, parity, golden files).
    """

    def __init__(self, pixels: Any, labels: np.ndarray, indices: np.ndarray, *,
                 scale: float, mean: list[float], std: list[float]):
        import torch

        self.pixels = torch.as_tensor(pixels)            # shared by the views of one split
        self.all_labels = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        self.indices = np.asarray(indices, dtype=np.int64)
        self._index = torch.from_numpy(self.indices)
        self.targets = np.asarray(labels, dtype=np.int64)[self.indices]
        c = self.pixels.shape[1]
        # (p·scale − mean) / std  ==  p·a + b: one multiply-add per pixel
        self._a = torch.tensor([scale / s for s in std], dtype=torch.float32).view(1, c, 1, 1)
        self._b = torch.tensor([-m / s for m, s in zip(mean, std)], dtype=torch.float32).view(1, c, 1, 1)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        x, y = self.batch([i])
        return x[0], int(y[0])

    def batch(self, indices: Any):
        """(normalised float32 B×C×H×W, int64 labels) of the view's items `indices`."""
        import torch

        rows = self._index[torch.as_tensor(indices, dtype=torch.int64)]
        x = self.pixels.index_select(0, rows).to(torch.float32)
        return x.mul_(self._a).add_(self._b), self.all_labels.index_select(0, rows)


def _in_memory_bundle(name: str, parts: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], *, scale: float,
                      mean: list[float], std: list[float], **info: Any) -> DataBundle:
    """A DataBundle of InMemory views; `parts[split] = (pixels N×C×H×W, labels, indices)`."""
    views = {s: InMemory(p, y, i, scale=scale, mean=mean, std=std) for s, (p, y, i) in parts.items()}
    return DataBundle(name=name, train=views["train"], val=views["val"], test=views["test"],
                      input_shape=tuple(parts["train"][0].shape[1:]), mean=mean, std=std, scale=scale, **info)


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


# ---------------------------------------------------------------------------
# cifar10 through torchvision

@dataclass(frozen=True)
class OfficialDataset:
    """A torchvision dataset `--data` can name: its class, the files it needs under `data_dir`."""

    name: str
    torchvision_class: str
    folder: str                   # where torchvision reads the files, under --data-dir
    files: tuple[str, ...]
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...] | None = None   # None: the dataset's own class names
    can_augment: bool = False


OFFICIAL = {
    "cifar10": OfficialDataset("cifar10", "CIFAR10", "cifar-10-batches-py",
                               tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch", "batches.meta"),
                               (3, 32, 32), can_augment=True),
}


def _corrupt_cifar_file(cls: Any, folder: Path) -> str | None:
    """The first CIFAR file whose md5 differs from torchvision's list, if any."""
    from torchvision.datasets.utils import check_integrity

    for filename, md5 in [*cls.train_list, *cls.test_list, (cls.meta["filename"], cls.meta["md5"])]:
        if not check_integrity(str(folder / filename), md5):
            return filename
    return None


def _open_official(spec: OfficialDataset, *, data_dir: Path, train: bool, download: bool) -> Any:
    """torchvision's dataset (raw uint8 pixels, no transform); every failure is one-line BadInput."""
    from torchvision import datasets

    folder = data_dir / spec.folder
    missing = [f for f in spec.files if not (folder / f).is_file()]
    if missing and not download:
        gz = " (found .gz files: gunzip them there)" if any(folder.glob("*.gz")) else ""
        raise BadInput(f"{spec.name}: {folder} lacks {', '.join(missing)}{gz}; pass --download to fetch it, "
                       f"or put the official uncompressed files there")
    cls = getattr(datasets, spec.torchvision_class)
    try:
        return cls(str(data_dir), train=train, download=download)
    except Exception as e:  # torchvision raises RuntimeError, URLError, AssertionError, pickle errors...
        if download and any(not (folder / f).is_file() for f in spec.files):
            raise BadInput(f"{spec.name}: download into {data_dir} failed: {first_line(e)}") from None
        if spec.torchvision_class == "CIFAR10" and (bad := _corrupt_cifar_file(cls, folder)):
            raise BadInput(f"{spec.name}: {folder / bad} does not match the official md5; "
                           f"delete it and pass --download") from None
        raise BadInput(f"{spec.name}: cannot read {folder}: {first_line(e)}") from None


def _raw_arrays(spec: OfficialDataset, base: Any, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 N×H×W×C pixels, int64 labels) as torchvision holds them, without copying pixels."""
    pixels = base.data.numpy() if hasattr(base.data, "numpy") else np.asarray(base.data)
    if pixels.ndim == 3:   # MNIST-style N×H×W
        pixels = pixels[..., None]
    labels = np.asarray(base.targets, dtype=np.int64)
    c, h, w = spec.input_shape
    if pixels.shape[1:] != (h, w, c) or len(pixels) != len(labels) or len(pixels) == 0:
        raise BadInput(f"{spec.name}: files in {folder} hold {len(pixels)} images of shape "
                       f"{tuple(pixels.shape[1:])} and {len(labels)} labels; expected equal counts of {(h, w, c)}")
    n_classes = len(spec.labels or base.classes)
    if labels.min() < 0 or labels.max() >= n_classes:
        raise BadInput(f"{spec.name}: labels in {folder} must be 0..{n_classes - 1}, "
                       f"found {labels.min()}..{labels.max()}")
    return pixels, labels


def load_official_bundle(spec: OfficialDataset, *, data_dir: str | Path = defaults.DATA_DIR,
                         download: bool = False, seed: int = defaults.SPLIT_SEED,
                         augment: bool = False) -> DataBundle:
    """mnist / fashion-mnist / cifar10: official test split as test, stratified val from train."""
    if augment and not spec.can_augment:
        raise BadInput(f"{spec.name}: augmentation is not available; datasets with augmentation: "
                       f"{', '.join(n for n, s in OFFICIAL.items() if s.can_augment)}")
    data_dir = Path(data_dir)
    folder = data_dir / spec.folder
    base_train = _open_official(spec, data_dir=data_dir, train=True, download=download)
    base_test = _open_official(spec, data_dir=data_dir, train=False, download=False)
    pixels, y = _raw_arrays(spec, base_train, folder)
    _, y_test = _raw_arrays(spec, base_test, folder)

    train, val = _val_split(y, seed=seed, what=f"{spec.name} ({folder})")
    mean, std = _pixel_stats(pixels, train)
    plain = _to_tensor_transform(mean, std)
    return DataBundle(
        name=spec.name,
        train=SplitView(base_train, train, _to_tensor_transform(mean, std, augment=augment), y),
        val=SplitView(base_train, val, plain, y),
        test=SplitView(base_test, np.arange(len(y_test)), plain, y_test),
        num_classes=len(spec.labels or base_train.classes), input_shape=spec.input_shape,
        labels=list(spec.labels or base_train.classes), mean=mean, std=std, scale=PIXEL_SCALE,
        split=_official_split_record(train, val, len(y_test), seed=seed), augmented=augment,
    )


# ---------------------------------------------------------------------------
# imagefolder:DIR

@contextlib.contextmanager
def _quiet_stderr(active: bool):
    """libtiff reports a corrupt file by writing to fd 2 itself; keep that off the user's
    one-line error (the failure still raises, and is reported once)."""
    if not active:
        yield
        return
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def load_image_file(path: str):
    """ImageFolder's loader: the image as RGB; an unreadable file is BadInput naming it."""
    import warnings

    from PIL import Image

    try:
        tiff = str(path).lower().endswith((".tif", ".tiff"))
        with open(path, "rb") as f, warnings.catch_warnings(), _quiet_stderr(tiff):
            warnings.simplefilter("ignore")  # Pillow warns on some corrupt files before raising
            image = Image.open(f)
            # Single-band images stay grayscale (the bundle decides the channels); the rest become RGB.
            return image.convert("L") if len(image.getbands()) == 1 else image.convert("RGB")
    except Image.UnidentifiedImageError:
        raise BadInput(f"imagefolder: cannot read image {str(path)!r}: not an image format PIL knows") from None
    except Exception as e:  # Pillow's decoders raise many types on corrupt files
        raise BadInput(f"imagefolder: cannot read image {str(path)!r}: {first_line(e)}") from None


def _open_image_folder(folder: Path) -> Any:
    """torchvision's ImageFolder over `folder`, after checking it holds ≥ 2 classes of images."""
    from torchvision import datasets

    if not folder.is_dir():
        raise BadInput(f"imagefolder: {str(folder)!r} is not a folder; expected one subfolder of images per class")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if len(classes) < 2:
        found = f"found only {classes[0]!r}" if classes else "found none"
        raise BadInput(f"imagefolder: {str(folder)!r} needs at least 2 class subfolders of images, {found}")
    try:
        return datasets.ImageFolder(str(folder), loader=load_image_file)
    except (FileNotFoundError, ValueError) as e:  # "Found no valid file for the classes ..."
        raise BadInput(f"imagefolder: {str(folder)!r}: {first_line(e)}") from None


def _sample_images(base: Any, indices: np.ndarray) -> list[Any]:
    """Up to IMAGEFOLDER_STATS_SAMPLES train images, spread evenly: the data's size, mode and statistics."""
    spread = np.linspace(0, len(indices) - 1, min(IMAGEFOLDER_STATS_SAMPLES, len(indices))).astype(int)
    picks = np.unique(indices[spread])
    return [base[int(i)][0] for i in picks]


def native_size(images: list[Any], *, pixels: int = defaults.INPUT_PIXELS) -> tuple[int, int]:
    """The default input H×W: the images' own (median height and width), never upsampled, and
    scaled down keeping the aspect ratio when larger than `pixels` (32×32 = 1,024 by default):
    48×192 text lines become 16×64, not a squashed 32×32. Upsampling 16×16 images to 32×32
    costs a student 4× the compute for no information."""
    h = float(np.median([im.size[1] for im in images]))
    w = float(np.median([im.size[0] for im in images]))
    s = min(1.0, math.sqrt(pixels / (h * w)))
    hs, ws = max(4, round(h * s)), max(4, round(w * s))
    hs = min(hs, max(4, pixels // ws))   # rounding (or a side raised to 4 px) never exceeds the pixel cap
    ws = min(ws, max(4, pixels // hs))
    return int(hs), int(ws)


def _image_stats(images: list[Any], fit: Fit) -> tuple[list[float], list[float], str]:
    """Per-channel mean/std of `images` as the model sees them (after `fit`), and the mode:
    "L" (1 channel) when every one of them is grayscale, else "RGB"."""
    from torchvision import transforms as T

    mode = "L" if all(im.mode == "L" for im in images) else "RGB"
    c = 1 if mode == "L" else 3
    to_tensor = T.Compose([ToMode(mode), fit, T.ToTensor()])
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for image in images:
        x = to_tensor(image).numpy().reshape(c, -1).astype(np.float64)
        total += x.sum(axis=1)
        squares += np.square(x).sum(axis=1)
        count += x.shape[1]
    return (*_finish_stats(total, squares, count), mode)


def _decode_all(base: Any, *, fit: Fit, mode: str, desc: str) -> np.ndarray:
    """Every image of `base` decoded once, as the streamed path would (mode, then `fit`), into
    one uint8 N×C×H×W array: training then cuts batches from it instead of decoding each sample
    through PIL every epoch."""
    from torchvision import transforms as T

    from edgekd.progress import bar

    prep = T.Compose([ToMode(mode), fit])
    out = np.empty((len(base), 1 if mode == "L" else 3, *fit.size), np.uint8)
    for i in bar(range(len(base)), desc=desc, unit="img"):
        a = np.asarray(prep(base[i][0]), dtype=np.uint8)
        out[i] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    return out


class ImageFiles:
    """Every image file under some folders (any tree, no class structure), as (PIL image, -1):
    an `--unlabeled` pool. The label -1 marks samples only the teacher labels."""

    def __init__(self, roots: list[Path]):
        from torchvision.datasets.folder import IMG_EXTENSIONS

        self.root = str(roots[0])
        files: list[str] = []
        for r in roots:
            if not r.is_dir():
                raise BadInput(f"--unlabeled {str(r)!r}: not a folder; give a folder of images (any tree)")
            found = sorted(str(f) for f in r.rglob("*") if f.suffix.lower() in IMG_EXTENSIONS and f.is_file())
            if not found:
                raise BadInput(f"--unlabeled {str(r)!r}: no image files in it ({', '.join(IMG_EXTENSIONS[:4])}, ...)")
            files += found
        self.files = files
        self.targets = [-1] * len(files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        return load_image_file(self.files[i]), -1


class Joined:
    """An ImageFolder base followed by an unlabeled pool: the indices of `a` are unchanged."""

    def __init__(self, a: Any, b: ImageFiles):
        self.a, self.b, self.root = a, b, a.root
        self.classes = a.classes
        self.targets = [*a.targets, *b.targets]

    def __len__(self) -> int:
        return len(self.a) + len(self.b)

    def __getitem__(self, i: int):
        return self.a[i] if i < len(self.a) else self.b[i - len(self.a)]


def _add_pool(bases: dict[str, Any], unlabeled: list[Path], *, seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Join the pool after the train base (wherever that base is used): (train indices of the
    pool, held-out indices of the pool, the record). UNLABELED_HOLDOUT of the pool (seeded) is kept
    out of training, to score the student by its agreement with the teacher."""
    pool = ImageFiles(unlabeled)
    old = bases["train"]
    joined = Joined(old, pool)
    for k, b in bases.items():
        if b is old:
            bases[k] = joined
    order = np.random.default_rng(seed).permutation(len(pool))
    k = int(round(defaults.UNLABELED_HOLDOUT * len(pool)))
    held, used = np.sort(order[:k]) + len(old), np.sort(order[k:]) + len(old)
    return used, held, {"folders": [str(u) for u in unlabeled], "images": len(pool), "train": len(used),
                        "held_out": len(held)}


def fits_in_memory(n_images: int, shape: tuple[int, int, int]) -> bool:
    """Whether n images of C×H×W uint8 fit defaults.IN_MEMORY_BYTES."""
    return n_images * int(np.prod(shape)) <= defaults.IN_MEMORY_BYTES


def _folder_splits(root: Path, *, seed: int) -> tuple[dict[str, Any], dict[str, tuple[str, np.ndarray]], dict]:
    """The ImageFolder bases under `root` and where each split's items are: {split: (base key, indices)}."""
    if (root / "train").is_dir() and (root / "test").is_dir():
        bases = {s: _open_image_folder(root / s) for s in ("train", "val", "test") if (root / s).is_dir()}
        for s, b in bases.items():
            if b.classes != bases["train"].classes:
                raise BadInput(f"imagefolder: {str(root / s)!r} has classes {b.classes} but "
                               f"{str(root / 'train')!r} has {bases['train'].classes}; they must match")
        y = {s: np.asarray(b.targets, dtype=np.int64) for s, b in bases.items()}
        if "val" in bases:
            train, val, val_base = np.arange(len(y["train"])), np.arange(len(y["val"])), "val"
        else:
            train, val = _val_split(y["train"], seed=seed, what=f"imagefolder {str(root / 'train')!r}")
            val_base = "train"
        test = np.arange(len(y["test"]))
        split = _official_split_record(train, val, len(test), seed=seed)
        split["method"] = "folders train/ test/" + (" val/" if "val" in bases else "; stratified val from train/")
    else:
        base = _open_image_folder(root)
        bases, val_base = {"train": base, "test": base}, "train"
        train, val, test = _split_or_bad_input(np.asarray(base.targets, dtype=np.int64),
                                               what=f"imagefolder {str(root)!r}", seed=seed)
        split = split_record(train, val, test, seed=seed)
    split["root"] = str(root)
    return bases, {"train": ("train", train), "val": (val_base, val), "test": ("test", test)}, split


def load_imagefolder_bundle(*, root: str | Path, seed: int = defaults.SPLIT_SEED,
                            image_size: int | tuple[int, int] | None = None, augment: bool = False,
                            in_memory: bool | None = None, resize: str = defaults.RESIZE, fill: int = defaults.PAD_FILL,
                            unlabeled: Any = (), **_: Any) -> DataBundle:
    """Images under `root`, one subfolder per class, made H×W by `resize` (`Fit`; size None:
    `native_size`, which keeps the images' aspect ratio), grayscale when every sampled train image
    is, else RGB. `augment`: random-resized crop + flip on train. `in_memory` (None: when the
    decoded images fit defaults.IN_MEMORY_BYTES and there is no augmentation): decode every image
    once into uint8 `InMemory` views; else stream them. `unlabeled`: folders of images (any tree)
    added to the train split with label -1, a held-out share of them as `unlabeled_test`.

    With `root/train/` and `root/test/` (and optionally `root/val/`), those are the
    splits (val, if absent, is a stratified VAL_FRACTION of train); otherwise all
    files are split stratified by SPLIT_FRACTIONS. Size and statistics come from the labeled
    train images only, so export reloads the same preprocessing without the pool.
    """
    root, size = Path(root), parse_hw(image_size)
    if size is not None and not all(4 <= v <= MAX_IMAGE_SIZE for v in size):
        raise BadInput(f"imagefolder: image size must be 4..{MAX_IMAGE_SIZE} pixels a side, got {size[0]}x{size[1]}")
    check_resize(resize)
    if not root.is_dir():
        raise BadInput(f"imagefolder: {str(root)!r} is not a folder; expected one subfolder of images per class")
    bases, where, split = _folder_splits(root, seed=seed)
    images = _sample_images(bases["train"], where["train"][1])
    fit = Fit(size or native_size(images), resize, fill)
    mean, std, mode = _image_stats(images, fit)
    held = None
    if unlabeled:
        used, held, split["unlabeled"] = _add_pool(bases, [Path(u) for u in unlabeled], seed=seed)
        where["train"] = ("train", np.concatenate([where["train"][1], used]))
        where["unlabeled_test"] = ("train", held)
    y = {k: np.asarray(b.targets, dtype=np.int64) for k, b in bases.items()}
    info = dict(augmented=augment, num_classes=len(bases["train"].classes), labels=list(bases["train"].classes),
                split=split, resize=resize, fill=fit.fill)
    shape = (len(mean), *fit.size)
    distinct = {id(b): b for b in bases.values()}  # a single folder is one base for every split
    if in_memory is None:
        in_memory = not augment and fits_in_memory(sum(len(b) for b in distinct.values()), shape)
    if in_memory:  # each folder decoded once, its splits views of the same pixels
        pixels = {k: _decode_all(b, fit=fit, mode=mode, desc=f"decoding {Path(b.root).relative_to(root.parent)}")
                  for k, b in distinct.items()}
        parts = {s: (pixels[id(bases[b])], y[b], idx) for s, (b, idx) in where.items()}
        pool = parts.pop("unlabeled_test", None)
        out = _in_memory_bundle(f"imagefolder:{root}", parts, scale=PIXEL_SCALE, mean=mean, std=std, **info)
        out.unlabeled_test = None if pool is None else InMemory(*pool, scale=PIXEL_SCALE, mean=mean, std=std)
        return out
    transform = _to_tensor_transform(mean, std, size=fit.size, mode=mode, resize=resize, fill=fit.fill)
    train_tf = _to_tensor_transform(mean, std, size=fit.size, mode=mode, augment=True, crop=True) \
        if augment else transform
    views = {s: SplitView(bases[b], idx, train_tf if s == "train" else transform, y[b])
             for s, (b, idx) in where.items()}
    pool = views.pop("unlabeled_test", None)
    return DataBundle(name=f"imagefolder:{root}", **views, input_shape=shape, mean=mean, std=std, scale=PIXEL_SCALE,
                      unlabeled_test=pool, **info)


# ---------------------------------------------------------------------------
# Registry

def _official_loader(spec: OfficialDataset) -> Callable[..., DataBundle]:
    def load(*, data_dir: str | Path | None = None, download: bool = False,
             seed: int = defaults.SPLIT_SEED, augment: bool = False, **_: Any) -> DataBundle:
        return load_official_bundle(spec, data_dir=defaults.DATA_DIR if data_dir is None else data_dir,
                                    download=download, seed=seed, augment=augment)
    load.__doc__ = f"{spec.name} through torchvision.datasets.{spec.torchvision_class}."
    return load


def _idx_loader(spec: IdxDataset) -> Callable[..., DataBundle]:
    def load(*, data_dir: str | Path | None = None, download: bool = False,
             seed: int = defaults.SPLIT_SEED, **_: Any) -> DataBundle:
        return load_idx_bundle(spec, data_dir=data_dir, download=download, seed=seed)
    load.__doc__ = f"{spec.name} from its IDX files (gzipped or not), held in memory."
    return load


# name -> loader(data_dir=..., download=..., seed=..., augment=...); "imagefolder" takes root=...
DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits_bundle,
    **{name: _idx_loader(spec) for name, spec in IDX_DATASETS.items()},
    **{name: _official_loader(spec) for name, spec in OFFICIAL.items()},
    "imagefolder": load_imagefolder_bundle,
}
AUGMENTABLE = tuple(n for n, s in OFFICIAL.items() if s.can_augment)


def data_names() -> list[str]:
    return [*(n for n in DATASETS if n != "imagefolder"), "imagefolder:DIR"]


def load_data(name: str = defaults.DATA, *, data_dir: str | Path | None = None,
              download: bool = False, seed: int = defaults.SPLIT_SEED,
              augment: bool = False, image_size: int | tuple[int, int] | str | None = None,
              in_memory: bool | None = None, resize: str | None = None, fill: int = defaults.PAD_FILL,
              unlabeled: Any = ()) -> DataBundle:
    """Load a dataset by name: one of `data_names()`.

    `data_dir` None means the default: `defaults.DATA_DIR`, and for fashion-mnist also
    Debian's system folder. `augment` (random train transform) is for AUGMENTABLE datasets
    and imagefolder:DIR; `image_size` (N, HxW or (H, W); None = the images' own, keeping their
    aspect, at most defaults.INPUT_PIXELS), `resize` (stretch | pad | crop, with `fill` for pad),
    `unlabeled` (folders of unlabeled images) and `in_memory` (None = when it fits
    defaults.IN_MEMORY_BYTES) apply to imagefolder:DIR only.
    """
    if augment and name not in AUGMENTABLE and not name.startswith("imagefolder:"):
        raise BadInput(f"augmentation is not available for --data '{name}'; "
                       f"available for: {', '.join(AUGMENTABLE)}, imagefolder:DIR")
    if name.startswith("imagefolder:"):
        folder = name.split(":", 1)[1]
        if not folder:
            raise BadInput("--data imagefolder:DIR needs a folder, e.g. imagefolder:photos/")
        return load_imagefolder_bundle(root=Path(folder), seed=seed, image_size=image_size, augment=augment,
                                       in_memory=in_memory, resize=resize or defaults.RESIZE, fill=fill,
                                       unlabeled=unlabeled)
    for what, value in (("an image size (--input-size)", image_size), ("--resize", resize),
                        ("--unlabeled", tuple(unlabeled or ()))):
        if value:
            raise BadInput(f"{what} applies to --data imagefolder:DIR only, not '{name}'")
    if name not in DATASETS or name == "imagefolder":
        raise BadInput(f"unknown --data '{name}'; valid: {', '.join(data_names())}")
    return DATASETS[name](data_dir=None if data_dir is None else Path(data_dir), download=download, seed=seed,
                          augment=augment)


def to_arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` samples of a dataset as (float32 inputs, int64 labels)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if hasattr(dataset, "batch") and n:  # in memory: one gather instead of n items
        x, y = dataset.batch(np.arange(n))
        return x.numpy(), y.numpy().astype(np.int64)
    xs, ys = [], []
    for i in range(n):
        x, y = dataset[i]
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(int(y))
    if not xs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
