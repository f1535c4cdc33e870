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

One module per family: `memory` (digits, and the in-memory store the IDX datasets share), `idx`
(mnist, fashion-mnist), `official` (cifar10), `folder` (imagefolder:DIR); `common` holds what they
share and `load` the registry. The names below are the package's public face.
"""

from edgekd.data.common import (  # noqa: F401
    IMAGE_SIZE,
    MAX_IMAGE_SIZE,
    PIXEL_SCALE,
    RESIZE_POLICIES,
    VAL_FRACTION,
    DataBundle,
    Fit,
    SplitView,
    ToMode,
    check_resize,
    parse_hw,
    split_record,
    stratified_split,
)
from edgekd.data.folder import fits_in_memory, load_image_file, load_imagefolder_bundle, native_size  # noqa: F401
from edgekd.data.idx import IDX_DATASETS, IdxDataset, find_idx_files, idx_places, load_idx_bundle, read_idx  # noqa: F401
from edgekd.data.load import AUGMENTABLE, DATASETS, data_names, load_data, to_arrays  # noqa: F401
from edgekd.data.memory import InMemory, load_digits_bundle  # noqa: F401
from edgekd.data.official import OFFICIAL, OfficialDataset, load_official_bundle  # noqa: F401
