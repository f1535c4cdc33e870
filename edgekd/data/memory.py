"""In memory: `digits`, and the uint8 pixel store (`InMemory`) that the IDX datasets share, normalised per batch
(`split.batch(indices)` is the training loop's fast path; `split[i]` yields the same sample).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgekd import defaults
from edgekd.data.common import DataBundle, split_record, stratified_split

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
