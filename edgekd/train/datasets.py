"""Dataset plumbing for training: labeled masks, the per-epoch loader (same order on resume and across ranks) and accuracy."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from edgekd import defaults
from edgekd.errors import BadInput
from edgekd.train import distributed as dist


class Indexed(Dataset):
    """Wraps a dataset to yield (x, label or -1, index): -1 hides the label of unlabeled samples."""

    def __init__(self, base: Dataset, labeled: np.ndarray | None = None):
        self.base = base
        self.labeled = labeled  # boolean mask over indices; None = all labeled

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int):
        x, y = self.base[i]
        if self.labeled is not None and not self.labeled[i]:
            y = -1
        return x, int(y), i


class Repeated(Dataset):
    """`base` cycled to `length` items, so the control sees as many steps per epoch as the
    distilled student does on the full train set (same budget, not just same epochs)."""

    def __init__(self, base: Dataset, length: int):
        self.base, self.length = base, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int):
        return self.base[i % len(self.base)]


def dataset_labels(ds: Dataset) -> np.ndarray:
    if hasattr(ds, "tensors"):
        return ds.tensors[1].numpy()
    if hasattr(ds, "targets"):
        return np.asarray(ds.targets)
    return np.asarray([int(ds[i][1]) for i in range(len(ds))])


def labeled_mask(labels: np.ndarray, fraction: float, *, seed: int = defaults.SPLIT_SEED) -> np.ndarray:
    """Keep labels for a stratified `fraction` of the train set (at least one per class)."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction >= 1:
        mask[:] = True
        return mask
    rng = np.random.default_rng(seed)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def loader(ds: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0) -> DataLoader:
    """The batches of one epoch. The order depends only on (seed, epoch), so a resumed run sees
    the same batches; under torch.distributed each rank takes its share of that order with
    batch_size / world_size, so the global batch is the same as in one process."""
    w = dist.world_size()
    if batch_size % w:
        raise BadInput(f"--batch-size {batch_size}: must be divisible by the number of processes ({w})")
    order = dist.shard(len(ds), seed=seed, epoch=epoch, shuffle=shuffle)
    return DataLoader(ds, batch_size=batch_size // w, sampler=order, num_workers=defaults.NUM_WORKERS)


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    outs = [model(x) for x, *_ in DataLoader(ds, batch_size=batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


@torch.no_grad()
def accuracy(model: nn.Module, ds: Dataset) -> float:
    """Test/val accuracy; under torch.distributed each rank scores a shard and the counts are summed."""
    model.eval()
    idx = dist.shard(len(ds), seed=0, epoch=0, shuffle=False)[: len(ds)]
    idx = sorted(set(idx))  # padding repeats indices; count each sample once
    labels = torch.as_tensor(dataset_labels(ds))
    correct = 0
    for x, *_rest, i in _indexed_batches(ds, idx):
        correct += int((model(x).argmax(1) == labels[i]).sum())
    correct, total = dist.sum_across(correct, len(idx))
    return correct / total if total else float("nan")


def _indexed_batches(ds: Dataset, idx: list[int], batch_size: int = 256):
    for k in range(0, len(idx), batch_size):
        chunk = idx[k:k + batch_size]
        xs = torch.stack([torch.as_tensor(ds[i][0]) for i in chunk])
        yield xs, torch.as_tensor(chunk)
