"""What the student learns from: live teachers, or their outputs cached once (in memory or memory-mapped)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from edgekd import defaults
from edgekd.train import distributed as dist
from edgekd.train.datasets import _indexed_batches


@dataclass
class TeacherSource:
    """The teacher side of a phase: one or more live teachers, or their cached outputs.

    Several teachers are mixed by `combine_teachers` into one set of logits; feature
    losses read the first teacher's taps. When the inputs are deterministic the outputs
    are computed once (`build_cache`), so a distillation epoch costs about what a
    student-alone epoch costs.
    """

    teachers: list[nn.Module]
    taps: dict[str, str] = field(default_factory=dict)   # role -> module name in teachers[0]
    mode: str = "mean"
    weights: list[float] | None = None
    temperature: float = defaults.TEMPERATURE
    cache: dict[str, Any] | None = None
    # The teacher's own view of the student's batch (resize/renormalise; edgekd.models.foreign.convert); None = same.
    view: Callable[[torch.Tensor], torch.Tensor] | None = None
    channels_last: bool = False   # set by `to`: the teachers' weights are NHWC, so their inputs are too
    device: torch.device | None = None   # set by `to`: where the cache is built and kept (the student's device)

    def live(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        from edgekd.train.features import FeatureTap
        from edgekd.train.losses import combine_teachers

        # inference_mode: no autograd bookkeeping at all; clone so the student's graph may keep them.
        # Each teacher gets x on its own device (an ONNX teacher, with no tensors, takes it where it is);
        # what comes back is on x's device, where the caller (the student, a CPU label tensor) is.
        home = x.device
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), FeatureTap(self.teachers[0], self.taps, detach=True) as tap:
            x = self.view(x) if self.view is not None else x
            logits = [t.eval()(_on_device_of(t, x)).to(home) for t in self.teachers]
            feats = {k: v.to(home) for k, v in tap.outputs.items()}
        out = logits[0] if len(logits) == 1 else combine_teachers(
            logits, mode=self.mode, weights=self.weights, temperature=self.temperature)
        return out.clone(), {k: v.clone() for k, v in feats.items()}

    def to(self, device: torch.device | str, *, channels_last: bool = False) -> "TeacherSource":
        """Teachers and cached outputs on `device` (the student's), so a step moves nothing; NHWC
        teachers with `channels_last` (resnet-s inference 1.6x faster on 2 CPU cores; the teacher
        cache of Fashion-MNIST's 54k train images went from 55 s to 41 s)."""
        fmt = torch.channels_last if channels_last else torch.preserve_format
        for t in self.teachers:
            t.to(device=device, memory_format=fmt)
        self.channels_last, self.device = channels_last, torch.device(device)
        if self.cache is not None:
            self.cache = {"logits": self.cache["logits"].to(device),
                          "feats": {k: v.to(device) for k, v in self.cache["feats"].items()}}
        return self

    def outputs(self, x: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if self.cache is None:
            return self.live(x)
        idx = idx.to(self.cache["logits"].device)
        return self.cache["logits"][idx], {k: v[idx] for k, v in self.cache["feats"].items()}

    def build_cache(self, ds: Dataset, *, batch_size: int = 256, cache_dir: Path | None = None) -> "TeacherSource":
        """Run the teacher(s) once over `ds`; features too, unless they are too big.

        With `cache_dir` (one process) the outputs go straight into memory-mapped .npy files
        there, so a large dataset's cache lives on disk, not in RAM. Under torch.distributed
        each rank runs its own shard and the shards are assembled in memory."""
        if cache_dir is not None and dist.world_size() == 1:
            return self._build_mmap(ds, batch_size, cache_dir)
        idx = dist.shard(len(ds), seed=0, epoch=0, shuffle=False, pad=False)  # disjoint: each row once
        from edgekd.progress import bar

        # A rank with no rows (a split smaller than the world) still runs one sample: the all-reduce
        # below needs every rank to know the outputs' shapes.
        run = idx or [0]
        logits, feats = [], {}
        for x, _ in bar(_indexed_batches(ds, run, batch_size), desc="teacher cache", total=-(-len(run) // batch_size),
                        unit="batch"):
            lo, fe = self.live(x if self.device is None else x.to(self.device))  # the cache lives where it is read
            logits.append(lo)
            for k, v in fe.items():
                feats.setdefault(k, []).append(v)
        n = len(ds)
        # Decided from the row size and n alone, so every rank decides alike (a rank that kept the
        # teacher live while the others all-reduce would hang them).
        if sum(v[0][0].numel() * 4 for v in feats.values()) * n > CACHE_FEATURE_BYTES:
            return self  # feature maps of a big dataset would not fit: keep the teacher live instead
        rows = len(idx)
        self.cache = {"logits": dist.fill_rows(torch.cat(logits)[:rows], idx, n),
                      "feats": {k: dist.fill_rows(torch.cat(v)[:rows], idx, n) for k, v in feats.items()}}
        return self

    def _build_mmap(self, ds: Dataset, batch_size: int, cache_dir: Path) -> "TeacherSource":
        cache_dir.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.memmap] = {}
        start = 0
        from edgekd.progress import bar

        n_batches = -(-len(ds) // batch_size)
        for x, _ in bar(_indexed_batches(ds, list(range(len(ds))), batch_size), desc="teacher cache",
                        total=n_batches, unit="batch"):
            lo, fe = self.live(x)
            for key, value in {"logits": lo, **{f"feat.{k}": v for k, v in fe.items()}}.items():
                if key not in arrays:
                    if key != "logits" and value[0].numel() * 4 * len(ds) > CACHE_FEATURE_BYTES:
                        return self  # feature maps this big: keep the teacher live
                    arrays[key] = np.lib.format.open_memmap(cache_dir / f"teacher.{key}.npy", mode="w+",
                                                            dtype=np.float32, shape=(len(ds), *value.shape[1:]))
                arrays[key][start:start + len(x)] = value.float().cpu().numpy()
            start += len(x)
        for a in arrays.values():
            a.flush()
        t = {k: torch.from_numpy(v) for k, v in arrays.items()}
        self.cache = {"logits": t["logits"], "feats": {k[5:]: v for k, v in t.items() if k.startswith("feat.")}}
        return self


CACHE_FEATURE_BYTES = 1 << 30


def _on_device_of(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """`x` on the device of `model`'s weights; unchanged for a model without tensors (an ONNX teacher)."""
    p = next(iter([*model.parameters(), *model.buffers()]), None)
    return x if p is None else x.to(p.device, non_blocking=True)
