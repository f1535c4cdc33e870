"""Progress for every long step, with one policy.

- On a terminal: a tqdm bar with rate and ETA, redrawn in place (stderr).
- Off a terminal (CI, pipes, log files): no redrawing; `Progress.update(line=True)` prints one
  line per stage or epoch, and a bar over an iterable prints one line when it ends.
- Quiet (`--quiet`, `--no-progress`, `set_quiet(True)` or `EDGEKD_QUIET=1`): nothing at all.
- Under torch.distributed only rank 0 shows anything.

Other modules call `bar(iterable, desc=...)`, `stage(msg)` or `Progress(desc, total=...)`.
Everything goes to stderr, so stdout stays the command's result (tables, JSON).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Any, Iterable, Iterator, TypeVar

from edgekd import ranks

T = TypeVar("T")
_quiet = os.environ.get("EDGEKD_QUIET", "") not in ("", "0")


def set_quiet(quiet: bool) -> None:
    """Silence (or re-enable) every progress bar and stage line of this process."""
    global _quiet
    _quiet = bool(quiet)


def is_quiet() -> bool:
    return _quiet


@contextlib.contextmanager
def quieted(quiet: bool = True) -> Iterator[None]:
    """Quiet for the duration of a call (an API call with progress=False), then as before."""
    global _quiet
    before = _quiet
    _quiet = before or bool(quiet)
    try:
        yield
    finally:
        _quiet = before


def _shown(enabled: bool) -> bool:
    return enabled and not _quiet and ranks.is_main()


def _on_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stderr
        return False


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def _fields(postfix: dict[str, Any]) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in postfix.items())


def stage(msg: str, *, enabled: bool = True) -> None:
    """One line saying what starts now (teacher training, cache building, …); on any stream."""
    if _shown(enabled):
        print(msg, file=sys.stderr, flush=True)


class Progress:
    """Progress over `total` units: a tqdm bar on a terminal, one line per `update(line=True)` off it.

    The ETA off a terminal is the mean time per unit so far × the units left."""

    def __init__(self, desc: str, *, total: int | None, unit: str = "it", initial: int = 0, enabled: bool = True):
        self.desc, self.total, self.unit, self.n = desc, total, unit, initial
        self.start, self.start_n = time.perf_counter(), initial
        self.shown = _shown(enabled)
        self.tqdm = None
        if self.shown and _on_terminal():
            from tqdm.auto import tqdm

            self.tqdm = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)

    def eta(self) -> float | None:
        done = self.n - self.start_n
        if self.total is None or done <= 0:
            return None
        return (time.perf_counter() - self.start) / done * (self.total - self.n)

    def update(self, n: int = 1, *, line: bool = False, **postfix: Any) -> None:
        self.n += n
        if not self.shown:
            return
        if self.tqdm is not None:
            if postfix:
                self.tqdm.set_postfix_str(_fields(postfix), refresh=False)
            self.tqdm.update(n)
            if line:  # a stage/epoch boundary: show it now, whatever tqdm's redraw interval
                self.tqdm.refresh()
        elif line:
            of = f"/{self.total}" if self.total is not None else ""
            eta = self.eta()
            tail = f" | ETA {_clock(eta)}" if eta is not None and self.n < (self.total or 0) else ""
            head = f"{self.desc}: {self.unit} {self.n}{of} {_fields(postfix)}".rstrip()
            print(head + tail, file=sys.stderr, flush=True)

    def close(self, summary: str | None = None) -> None:
        if self.tqdm is not None:
            self.tqdm.close()
            self.tqdm = None
        elif self.shown and summary is not None:
            print(f"{self.desc}: {summary}", file=sys.stderr, flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(iterable: Iterable[T], *, desc: str, total: int | None = None, unit: str = "it",
        enabled: bool = True, lines: bool = False) -> Iterator[T]:
    """Iterate with progress. Off a terminal: one line per item with `lines=True`, else one line at the end."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    p = Progress(desc, total=total, unit=unit, enabled=enabled)
    try:
        for item in iterable:
            yield item
            p.update(1, line=lines)
    finally:
        p.close(None if lines else f"{p.n} {unit} in {time.perf_counter() - p.start:.1f} s")
