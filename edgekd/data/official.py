"""`cifar10` through torchvision's class reading --data-dir (downloading only with --download); it streams raw
pixels and runs the transform per item, so DataLoader workers can be used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import defaults
from edgekd.data.common import (
    PIXEL_SCALE,
    DataBundle,
    SplitView,
    _official_split_record,
    _pixel_stats,
    _to_tensor_transform,
    _val_split,
)
from edgekd.errors import BadInput, first_line

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
