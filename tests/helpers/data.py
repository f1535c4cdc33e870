"""Data files in their exact on-disk formats (MNIST's IDX), a few dozen images each, for the loader tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx-ubyte file (the MNIST format): magic 0x0000 08 nd, big-endian dims, uint8 data."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = struct.pack(">I", 0x0800 + array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    path.write_bytes(header + array.tobytes())


def mnist_images(n: int, offset: int) -> np.ndarray:
    """Image i is the constant (offset + 2·i) mod 256, so per-split means differ visibly."""
    values = (offset + 2 * np.arange(n)) % 256
    return np.broadcast_to(values[:, None, None], (n, 28, 28)).astype(np.uint8)


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 100, n_test: int = 20, *,
                flat: bool = False, gz: bool = False) -> np.ndarray:
    """The four IDX files in torchvision's ROOT/FOLDER/raw/ layout, or directly in ROOT (flat),
    gzipped (as Debian and Zalando ship them) or not."""
    raw = root if flat else root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    train = mnist_images(n_train, 0)
    for name, array in (("train-images-idx3-ubyte", train), ("train-labels-idx1-ubyte", np.arange(n_train) % 10),
                        ("t10k-images-idx3-ubyte", mnist_images(n_test, 7)),
                        ("t10k-labels-idx1-ubyte", np.arange(n_test) % 10)):
        write_idx(raw / name, array)
        if gz:
            (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes()))
            (raw / name).unlink()
    return train
