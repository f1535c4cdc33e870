"""`imagefolder:DIR`: one subfolder per class, or `train/`, `test/` (and optionally `val/`) each holding one
subfolder per class, plus folders of unlabeled images (`--unlabeled`); images are fitted to one size
(`Fit`: stretch, pad or crop) and held in memory when they fit, else streamed from their files.
"""

from __future__ import annotations

import contextlib
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from edgekd import defaults
from edgekd.data.common import (
    IMAGEFOLDER_STATS_SAMPLES,
    MAX_IMAGE_SIZE,
    PIXEL_SCALE,
    DataBundle,
    Fit,
    SplitView,
    ToMode,
    _finish_stats,
    _official_split_record,
    _split_or_bad_input,
    _to_tensor_transform,
    _val_split,
    check_resize,
    parse_hw,
    split_record,
)
from edgekd.data.memory import InMemory, _in_memory_bundle
from edgekd.errors import BadInput, first_line

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
