"""Dataset plumbing for training: labeled masks, the per-epoch batches (same order on resume and across
ranks; tensor indexing for in-memory data, a DataLoader for streamed data) and accuracy."""

from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

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
    """Keep labels for a stratified `fraction` of the train set (at least one per class). Samples
    whose label is -1 (an --unlabeled pool) have none to keep."""
    mask = np.zeros(len(labels), dtype=bool)
    if fraction >= 1:
        return np.asarray(labels) >= 0
    rng = np.random.default_rng(seed)
    for c in np.unique(labels[labels >= 0]):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        mask[rng.choice(idx, size=k, replace=False)] = True
    return mask


def take(ds: Dataset, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The samples `idx` (a CPU LongTensor) of an in-memory dataset as one (x, y) batch, by
    indexing tensors; None when `ds` has no such fast path (then the DataLoader reads items).

    Understood: a dataset with `batch(indices) -> (x float32 normalised, y int64)` (edgekd.data
    holds small datasets as uint8 and normalises per batch), one with `.tensors` (TensorDataset),
    and the wrappers edgekd puts around them (Indexed, Repeated, torch's Subset)."""
    if isinstance(ds, Indexed):
        got = take(ds.base, idx)
        if got is None or ds.labeled is None:
            return got
        hidden = torch.from_numpy(~np.asarray(ds.labeled, dtype=bool)[idx.numpy()])
        return got[0], torch.where(hidden, torch.full_like(got[1], -1), got[1])
    if isinstance(ds, Repeated):
        return take(ds.base, idx % len(ds.base))
    if isinstance(ds, Subset):
        if getattr(ds, "_edgekd_index", None) is None:  # converted once, not per batch
            ds._edgekd_index = torch.as_tensor(ds.indices, dtype=torch.long)
        return take(ds.dataset, ds._edgekd_index[idx])
    if callable(getattr(ds, "batch", None)):
        x, y = ds.batch(idx)
        return torch.as_tensor(x), torch.as_tensor(y, dtype=torch.long)
    tensors = getattr(ds, "tensors", None)
    if isinstance(tensors, (tuple, list)) and len(tensors) >= 2 and tensors[0].dtype.is_floating_point:
        return tensors[0][idx], tensors[1][idx].long()
    return None


def in_memory(ds: Dataset) -> bool:
    """True when `take` can batch `ds` by indexing tensors."""
    return len(ds) > 0 and take(ds, torch.zeros(1, dtype=torch.long)) is not None


def _workers(ds: Dataset) -> int:
    """DataLoader workers for a streamed dataset: defaults.NUM_WORKERS, or with -1 one per core
    this process may use beyond the one training (0 on a 1-2 core share: a worker would only
    steal the trainer's core), capped at 4."""
    if defaults.NUM_WORKERS >= 0:
        return defaults.NUM_WORKERS
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(4, cores // max(1, dist.world_size()) - 2))


def batches(ds: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
            device: torch.device | str = "cpu") -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(x, y, idx) batches of one epoch on `device`: in-memory datasets by indexing tensors, streamed
    ones through `loader` (workers, pinned memory on CUDA). Both give the same batches in the same order."""
    device = torch.device(device)
    if not in_memory(ds):
        for x, y, idx in loader(ds, batch_size=batch_size, shuffle=shuffle, seed=seed, epoch=epoch,
                                pin_memory=device.type == "cuda"):
            yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), idx
        return
    w = dist.world_size()
    if batch_size % w:
        raise BadInput(f"batch_size {batch_size}: must be divisible by the number of processes ({w})")
    order = torch.as_tensor(dist.shard(len(ds), seed=seed, epoch=epoch, shuffle=shuffle), dtype=torch.long)
    for chunk in order.split(batch_size // w):
        x, y = take(ds, chunk)
        yield x.to(device, non_blocking=True), y.to(device, non_blocking=True), chunk


def loader(ds: Dataset, *, batch_size: int, shuffle: bool, seed: int = 0, epoch: int = 0,
           pin_memory: bool = False) -> DataLoader:
    """The batches of one epoch. The order depends only on (seed, epoch), so a resumed run sees
    the same batches; under torch.distributed each rank takes its share of that order with
    batch_size / world_size, so the global batch is the same as in one process."""
    w = dist.world_size()
    if batch_size % w:
        raise BadInput(f"--batch-size {batch_size}: must be divisible by the number of processes ({w})")
    order = dist.shard(len(ds), seed=seed, epoch=epoch, shuffle=shuffle)
    workers = _workers(ds)
    return DataLoader(ds, batch_size=batch_size // w, sampler=order, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False, prefetch_factor=4 if workers else None)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@torch.no_grad()
def predict(model: nn.Module, ds: Dataset, *, batch_size: int = 256) -> torch.Tensor:
    model.eval()
    device = model_device(model)
    outs = [model(x.to(device)).float().cpu() for x, _ in _indexed_batches(ds, list(range(len(ds))), batch_size)]
    return torch.cat(outs) if outs else torch.zeros(0)


@torch.no_grad()
def accuracy(model: nn.Module, ds: Dataset) -> float:
    """Test/val accuracy on the model's device; under torch.distributed each rank scores a shard and
    the counts are summed."""
    model.eval()
    device = model_device(model)
    idx = dist.shard(len(ds), seed=0, epoch=0, shuffle=False, pad=False)  # disjoint shards: each sample once
    labels = torch.as_tensor(dataset_labels(ds))
    correct = 0
    for x, i in _indexed_batches(ds, idx):
        correct += int((model(x.to(device, non_blocking=True)).argmax(1).cpu() == labels[i]).sum())
    correct, total = dist.sum_across(correct, len(idx))
    return correct / total if total else float("nan")


def _indexed_batches(ds: Dataset, idx: list[int], batch_size: int = 256):
    """(x, idx) batches of the samples `idx` in order: tensor indexing when in memory, items otherwise."""
    fast = in_memory(ds)
    for k in range(0, len(idx), batch_size):
        chunk = torch.as_tensor(idx[k:k + batch_size], dtype=torch.long)
        if fast:
            yield take(ds, chunk)[0], chunk
        else:
            yield torch.stack([torch.as_tensor(ds[int(i)][0]) for i in chunk]), chunk
