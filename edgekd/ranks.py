"""Which process am I? Rank helpers that need no torch import and no training code.

Artifacts, export and bench ask `is_main()` so only rank 0 writes; under a single
process every helper is a no-op. `edgekd.train.distributed` builds on these.
"""

from __future__ import annotations

import sys
from typing import Any


def _dist():
    mod = sys.modules.get("torch.distributed")
    return mod if mod is not None and mod.is_available() and mod.is_initialized() else None


def rank() -> int:
    d = _dist()
    return d.get_rank() if d else 0


def world_size() -> int:
    d = _dist()
    return d.get_world_size() if d else 1


def is_main() -> bool:
    return rank() == 0


def broadcast(obj: Any) -> Any:
    """Rank 0's value of `obj` on every rank (e.g. the run folder, whose name is random)."""
    d = _dist()
    if d is None:
        return obj
    box = [obj]
    d.broadcast_object_list(box, src=0)
    return box[0]
