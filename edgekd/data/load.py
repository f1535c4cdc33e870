"""The dataset registry: `load_data(name)` for every name `data_names()` lists, and `to_arrays`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgekd import defaults
from edgekd.data.common import DataBundle
from edgekd.data.folder import load_imagefolder_bundle
from edgekd.data.idx import IDX_DATASETS, IdxDataset, load_idx_bundle
from edgekd.data.memory import load_digits_bundle
from edgekd.data.official import OFFICIAL, OfficialDataset, load_official_bundle
from edgekd.errors import BadInput

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
