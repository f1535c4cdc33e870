"""What every loader shares: the `DataBundle` it returns, the seeded stratified split and its record,
the streaming building blocks (`SplitView`, `ToMode`, `Fit`, the torchvision transform) and pixel statistics
computed on the train split only.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
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
