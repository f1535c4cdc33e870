"""Per-epoch training metrics, recorded while training runs: `RUN/metrics.jsonl` and, optionally, TensorBoard.

One JSON object per line and epoch (rank 0 only, flushed per line, so a report can read a run
that is still training). The schema, which `edgekd report` reads:

    {"phase": "teacher" | "teacher1" | "alone/seed0" | "kd/seed0" | "kd/seed0/gen1" | "dml/seed0/peer1" | …,
     "stage": "main" | "hint", "epoch": 1, "epochs": 30, "loss": 0.52, "terms": {"soft": 0.3, "ce": 0.22},
     "val_acc": 0.97, "lr": 0.003, "seconds": 1.3, "images_per_s": 4200.0, "time": 1764433000.0}

`terms` are the means of each loss term over the epoch. On --resume a phase restarts after its
checkpoint's epoch, and `forget` first drops that phase's lines for the epochs being redone, so
no epoch appears twice.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd import ranks
from edgekd.errors import BadInput
from edgekd.run import metrics as run_metrics

FILE = "metrics.jsonl"
# the keys of a line, in order: edgekd/run/metrics.py (the run-folder contract) declares them
KEYS = run_metrics.KEYS


_SHARED: dict[tuple[str, str], "MetricsLog"] = {}


def check_tensorboard() -> None:
    """BadInput (one line, how to install) unless torch.utils.tensorboard can be used."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise BadInput("tensorboard needs the tensorboard package: pip install tensorboard "
                       "(or pip install 'edgekd[tensorboard]')", params=["tensorboard"]) from None


class MetricsLog:
    """Where a run's per-epoch metrics go: `path` (JSON lines) and, with `tensorboard`, a SummaryWriter there."""

    def __init__(self, path: Path | None, *, tensorboard: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.tensorboard = Path(tensorboard) if tensorboard is not None else None
        self._writer = None

    @classmethod
    def shared(cls, path: Path, *, tensorboard: Path | None = None) -> "MetricsLog":
        """One log per (path, tensorboard) in this process, so every phase of a run writes through one writer."""
        key = (str(path), str(tensorboard))
        if key not in _SHARED:
            _SHARED[key] = cls(path, tensorboard=tensorboard)
        return _SHARED[key]

    def _tb(self):
        if self.tensorboard is None or not ranks.is_main():
            return None
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.tensorboard))
        return self._writer

    def forget(self, phase: str, stage: str, *, after_epoch: int) -> None:
        """Drop lines of (phase or its peers, stage) with epoch > after_epoch: they are about to be redone."""
        if self.path is None or not ranks.is_main():
            return

        def doomed(row: dict[str, Any]) -> bool:
            same = row.get("phase") == phase or str(row.get("phase", "")).startswith(phase + "/peer")
            return same and row.get("stage") == stage and row.get("epoch", 0) > after_epoch

        run_metrics.drop(self.path, doomed)

    def record(self, row: dict[str, Any]) -> None:
        """Append one epoch's row (keys exactly KEYS) and mirror its scalars to TensorBoard."""
        if not ranks.is_main():
            return
        if self.path is not None:
            row = run_metrics.append(self.path, row).to_json()  # the contract's keys, checked
        else:
            row = run_metrics.line(row, "metrics.jsonl").to_json()
        tb = self._tb()
        if tb is not None:
            tag, step = f"{row['phase']}/{row['stage']}", row["epoch"]
            for key in ("loss", "val_acc", "lr", "images_per_s"):
                if row[key] is not None:
                    tb.add_scalar(f"{tag}/{key}", row[key], step)
            for term, value in row["terms"].items():
                tb.add_scalar(f"{tag}/terms/{term}", value, step)
            tb.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
