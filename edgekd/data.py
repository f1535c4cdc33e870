"""Datasets, the fixed train/val/test split, and the samples other stages need.

Every loader returns a `DataBundle`: three torch Datasets yielding
`(float32 tensor C×H×W, already normalised; int label)` plus the metadata that
the manifest records (shape, labels, mean/std, how the split was made).

Datasets:
- `digits`: scikit-learn's bundled 8×8 digits, held in memory (it is tiny).
- `mnist`, `fashion-mnist`, `cifar10`: torchvision's classes reading `--data-dir`
  (downloading only with `--download`). The official test split is the test
  set; a stratified `VAL_FRACTION` of the official train split is the val set.
- `imagefolder:DIR`: one subfolder per class, or `train/`, `test/` (and
  optionally `val/`) each holding one subfolder per class.

Everything but digits streams: the datasets keep raw uint8 pixels (or file
paths) and run the transform per item, so DataLoader workers can be used.

Preprocessing is always `(pixels * scale - mean) / std` per channel, with
`scale = 1/255` for images (1/16 for digits) and mean/std computed on the
*train split only* (never the published values), so val and test stay unseen.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd import defaults
from edgekd.errors import BadInput


@dataclass
class DataBundle:
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

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name, "num_classes": self.num_classes,
            "input_shape": list(self.input_shape), "labels": self.labels,
            "preprocessing": {"scale": self.scale, "mean": self.mean, "std": self.std},
            "split": self.split, "augmented": self.augmented,
        }


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


def _tensor_dataset(x: np.ndarray, y: np.ndarray):
    import torch

    return torch.utils.data.TensorDataset(torch.from_numpy(x), torch.from_numpy(y.astype(np.int64)))


def load_digits_bundle(*, seed: int = defaults.SPLIT_SEED, **_: Any) -> DataBundle:
    """scikit-learn's bundled 8×8 digits (1,797 real samples, pixel values 0..16)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = d.target.astype(np.int64)
    train, val, test = stratified_split(y, seed=seed)
    # Normalise with statistics of the training split only, so test data stays unseen.
    mean, std = float(x[train].mean()), float(x[train].std())
    x = (x - mean) / std
    return DataBundle(
        name="digits", train=_tensor_dataset(x[train], y[train]),
        val=_tensor_dataset(x[val], y[val]), test=_tensor_dataset(x[test], y[test]),
        num_classes=10, input_shape=(1, 8, 8), labels=[str(i) for i in range(10)],
        mean=[mean], std=[std], scale=1.0 / 16.0, split=split_record(train, val, test, seed=seed),
    )


# ---------------------------------------------------------------------------
# Streaming building blocks shared by the torchvision and image-folder loaders

VAL_FRACTION = 0.1          # of an official train split, held out (stratified) for validation
IMAGE_SIZE = 32             # imagefolder: every image is resized to IMAGE_SIZE × IMAGE_SIZE (--input-size)
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


def _to_tensor_transform(mean: list[float], std: list[float], *, augment: bool = False,
                         size: int | None = None, mode: str | None = None, crop: bool = False) -> Callable:
    """PIL image -> normalised float32 C×H×W tensor (ToTensor scales by 1/255). `crop`: with
    `augment`, a random-resized crop + flip (ImageFolder) instead of the 4-pixel shifts."""
    from torchvision import transforms as T

    steps: list[Any] = [ToMode(mode)] if mode else []
    if augment and crop:
        steps += [T.RandomResizedCrop((size, size), scale=(0.35, 1.0), antialias=True), T.RandomHorizontalFlip()]
    elif size is not None:
        steps.append(T.Resize((size, size)))
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _too_few(labels: np.ndarray, what: str, e: ValueError) -> BadInput:
    """sklearn's 'too few samples to stratify' ValueError, as one line of BadInput."""
    counts = np.bincount(labels)
    return BadInput(f"{what}: too few samples for a stratified split ({len(labels)} in all, "
                    f"smallest class has {counts[counts > 0].min()}): {_first_line(e)}")


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
# mnist, fashion-mnist, cifar10 through torchvision

@dataclass(frozen=True)
class OfficialDataset:
    name: str
    torchvision_class: str
    folder: str                   # where torchvision reads the files, under --data-dir
    files: tuple[str, ...]
    input_shape: tuple[int, int, int]
    labels: tuple[str, ...] | None = None   # None: the dataset's own class names
    can_augment: bool = False


_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
OFFICIAL = {
    "mnist": OfficialDataset("mnist", "MNIST", "MNIST/raw", _MNIST_FILES, (1, 28, 28),
                             labels=tuple(str(i) for i in range(10))),
    "fashion-mnist": OfficialDataset("fashion-mnist", "FashionMNIST", "FashionMNIST/raw", _MNIST_FILES, (1, 28, 28)),
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
            raise BadInput(f"{spec.name}: download into {data_dir} failed: {_first_line(e)}") from None
        if spec.torchvision_class == "CIFAR10" and (bad := _corrupt_cifar_file(cls, folder)):
            raise BadInput(f"{spec.name}: {folder / bad} does not match the official md5; "
                           f"delete it and pass --download") from None
        raise BadInput(f"{spec.name}: cannot read {folder}: {_first_line(e)}") from None


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
        with open(path, "rb") as f, warnings.catch_warnings(), _quiet_stderr(str(path).lower().endswith((".tif", ".tiff"))):
            warnings.simplefilter("ignore")  # Pillow warns on some corrupt files before raising
            image = Image.open(f)
            # Single-band images stay grayscale (the bundle decides the channels); the rest become RGB.
            return image.convert("L") if len(image.getbands()) == 1 else image.convert("RGB")
    except Image.UnidentifiedImageError:
        raise BadInput(f"imagefolder: cannot read image {str(path)!r}: not an image format PIL knows") from None
    except Exception as e:  # Pillow's decoders raise many types on corrupt files
        raise BadInput(f"imagefolder: cannot read image {str(path)!r}: {_first_line(e)}") from None


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
        raise BadInput(f"imagefolder: {str(folder)!r}: {_first_line(e)}") from None


def _image_stats(base: Any, indices: np.ndarray, size: int) -> tuple[list[float], list[float], str]:
    """Per-channel mean/std over up to IMAGEFOLDER_STATS_SAMPLES train images spread evenly, and the
    mode: "L" (1 channel) when every one of them is grayscale, else "RGB"."""
    from torchvision import transforms as T

    picks = np.unique(indices[np.linspace(0, len(indices) - 1, min(IMAGEFOLDER_STATS_SAMPLES, len(indices))).astype(int)])
    images = [base[int(i)][0] for i in picks]
    mode = "L" if all(im.mode == "L" for im in images) else "RGB"
    c = 1 if mode == "L" else 3
    to_tensor = T.Compose([ToMode(mode), T.Resize((size, size)), T.ToTensor()])
    total, squares, count = np.zeros(c), np.zeros(c), 0
    for image in images:
        x = to_tensor(image).numpy().reshape(c, -1).astype(np.float64)
        total += x.sum(axis=1)
        squares += np.square(x).sum(axis=1)
        count += x.shape[1]
    return (*_finish_stats(total, squares, count), mode)


def load_imagefolder_bundle(*, root: str | Path, seed: int = defaults.SPLIT_SEED,
                            image_size: int = IMAGE_SIZE, augment: bool = False, **_: Any) -> DataBundle:
    """Images under `root`, one subfolder per class, resized to image_size², grayscale when
    every sampled train image is, else RGB. `augment`: random-resized crop + flip on train.

    With `root/train/` and `root/test/` (and optionally `root/val/`), those are the
    splits (val, if absent, is a stratified VAL_FRACTION of train); otherwise all
    files are split stratified by SPLIT_FRACTIONS.
    """
    root = Path(root)
    if not 4 <= image_size <= MAX_IMAGE_SIZE:
        raise BadInput(f"imagefolder: image size must be 4..{MAX_IMAGE_SIZE} pixels, got {image_size}")
    if not root.is_dir():
        raise BadInput(f"imagefolder: {str(root)!r} is not a folder; expected one subfolder of images per class")

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
        y = {"train": np.asarray(base.targets, dtype=np.int64)}
        y["test"] = y["train"]
        train, val, test = _split_or_bad_input(y["train"], what=f"imagefolder {str(root)!r}", seed=seed)
        split = split_record(train, val, test, seed=seed)

    mean, std, mode = _image_stats(bases["train"], train, image_size)
    transform = _to_tensor_transform(mean, std, size=image_size, mode=mode)
    train_tf = _to_tensor_transform(mean, std, size=image_size, mode=mode, augment=True, crop=True) \
        if augment else transform
    split["root"] = str(root)
    return DataBundle(
        name=f"imagefolder:{root}", augmented=augment,
        train=SplitView(bases["train"], train, train_tf, y["train"]),
        val=SplitView(bases[val_base], val, transform, y[val_base]),
        test=SplitView(bases["test"], test, transform, y["test"]),
        num_classes=len(bases["train"].classes), input_shape=(len(mean), image_size, image_size),
        labels=list(bases["train"].classes), mean=mean, std=std, scale=PIXEL_SCALE, split=split,
    )


# ---------------------------------------------------------------------------
# Registry

def _official_loader(spec: OfficialDataset) -> Callable[..., DataBundle]:
    def load(*, data_dir: str | Path = defaults.DATA_DIR, download: bool = False,
             seed: int = defaults.SPLIT_SEED, augment: bool = False, **_: Any) -> DataBundle:
        return load_official_bundle(spec, data_dir=data_dir, download=download, seed=seed, augment=augment)
    load.__doc__ = f"{spec.name} through torchvision.datasets.{spec.torchvision_class}."
    return load


# name -> loader(data_dir=..., download=..., seed=..., augment=...); "imagefolder" takes root=...
DATASETS: dict[str, Callable[..., DataBundle]] = {
    "digits": load_digits_bundle,
    **{name: _official_loader(spec) for name, spec in OFFICIAL.items()},
    "imagefolder": load_imagefolder_bundle,
}
AUGMENTABLE = tuple(n for n, s in OFFICIAL.items() if s.can_augment)


def data_names() -> list[str]:
    return [*(n for n in DATASETS if n != "imagefolder"), "imagefolder:DIR"]


def load_data(name: str = defaults.DATA, *, data_dir: str | Path = defaults.DATA_DIR,
              download: bool = False, seed: int = defaults.SPLIT_SEED,
              augment: bool = False, image_size: int | None = None) -> DataBundle:
    """Load a dataset by name: one of `data_names()`.

    `augment` (random train transform) is for AUGMENTABLE datasets and imagefolder:DIR;
    `image_size` (None = IMAGE_SIZE) applies to imagefolder:DIR only.
    """
    if augment and name not in AUGMENTABLE and not name.startswith("imagefolder:"):
        raise BadInput(f"augmentation is not available for --data '{name}'; available for: {', '.join(AUGMENTABLE)}, imagefolder:DIR")
    if name.startswith("imagefolder:"):
        folder = name.split(":", 1)[1]
        if not folder:
            raise BadInput("--data imagefolder:DIR needs a folder, e.g. imagefolder:photos/")
        return load_imagefolder_bundle(root=Path(folder), seed=seed, image_size=image_size or IMAGE_SIZE,
                                       augment=augment)
    if image_size is not None:
        raise BadInput(f"an image size applies to --data imagefolder:DIR only, not '{name}'")
    if name not in DATASETS or name == "imagefolder":
        raise BadInput(f"unknown --data '{name}'; valid: {', '.join(data_names())}")
    return DATASETS[name](data_dir=Path(data_dir), download=download, seed=seed, augment=augment)


def to_arrays(dataset, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The first `limit` samples of a dataset as (float32 inputs, int64 labels)."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    xs, ys = [], []
    for i in range(n):
        x, y = dataset[i]
        xs.append(np.asarray(x, dtype=np.float32))
        ys.append(int(y))
    if not xs:
        return np.zeros((0,), np.float32), np.zeros((0,), np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)
