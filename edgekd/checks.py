"""What a failed check carries, and the one budget check that `bench` and `select-student` share.

Every check (audit, parity, golden, budget, verify) reports each failing number as a
`Failure(kind, name, value, limit)`; the stage raises the matching `CheckFailed`
subclass with the list, so a caller reads the numbers as data instead of parsing text.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable

KINDS = ("audit", "parity", "golden", "budget", "verify")


@dataclass(frozen=True)
class Failure:
    """One failing number: `kind` of check, `name` of what was measured, its `value` and the
    `limit` it broke (None where there is no number, e.g. a missing file), and free `detail`."""

    kind: str
    name: str
    value: Any
    limit: Any = None
    detail: str = ""

    def __str__(self) -> str:
        if self.detail:  # the stage's own wording
            return self.detail
        return f"{self.kind} {self.name}: {_num(self.value)} vs limit {_num(self.limit)}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def describe(failures: Iterable[Failure]) -> str:
    """The failures as one line, for a CheckFailed's message."""
    return "; ".join(map(str, failures))


# ---------------------------------------------------------------- budget
# key → (what, unit): the words select-student prints for a miss.
BUDGET_KEYS = {"latency_p90_ms": ("latency p90", "ms"), "peak_memory_mb": ("peak RSS", "MB"),
               "model_size_mb": ("model size", "MB")}
EMULATED_KEYS = ("latency_p90_ms", "peak_memory_mb")  # not the target's under emulation


@dataclass(frozen=True)
class BudgetLimits:
    """The limits one model is held to: a profile's [budget], possibly with the latency limit
    given by the caller (select-student's `budget_ms`). Under emulation the profile's time and
    memory limits are not the target's: they are recorded as skipped, never passed or failed."""

    latency_p90_ms: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None
    latency_source: str = "profile"     # profile | budget_ms | none
    emulated: bool = False

    def applies(self, key: str) -> bool:
        limit = getattr(self, key)
        if limit is None:
            return False
        return not (self.emulated and key in EMULATED_KEYS and not (
            key == "latency_p90_ms" and self.latency_source == "budget_ms"))

    def effective(self, key: str) -> float | None:
        return getattr(self, key) if self.applies(key) else None

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": self.effective("latency_p90_ms"), "memory_mb": self.effective("peak_memory_mb"),
                "size_mb": self.effective("model_size_mb"), "latency_source": self.latency_source,
                "emulated": self.emulated}


def budget_limits(budget: Any, *, latency_ms: float | None = None, emulated: bool = False) -> BudgetLimits:
    """Limits from a profile's `Budget` (or None), with `latency_ms` overriding its latency."""
    get = (lambda k: getattr(budget, k, None)) if budget is not None else (lambda k: None)
    lat = latency_ms if latency_ms is not None else get("latency_p90_ms")
    source = "budget_ms" if latency_ms is not None else ("profile" if lat is not None else "none")
    return BudgetLimits(latency_p90_ms=lat, peak_memory_mb=get("peak_memory_mb"), model_size_mb=get("model_size_mb"),
                        latency_source=source, emulated=emulated)


def check_budget(limits: BudgetLimits, *, latency_p90_ms: float, peak_memory_mb: float,
                 model_size_mb: float) -> list[dict[str, Any]]:
    """One row per limit: {name, value, limit, passed} (+ `skipped: "emulated"`)."""
    values = {"latency_p90_ms": latency_p90_ms, "peak_memory_mb": peak_memory_mb, "model_size_mb": model_size_mb}
    rows = []
    for key, value in values.items():
        limit = getattr(limits, key)
        if limit is None:
            continue
        if not limits.applies(key):
            rows.append({"name": key, "value": value, "limit": limit, "passed": True, "skipped": "emulated"})
        else:
            ok = bool(value <= limit) and not math.isnan(value)
            rows.append({"name": key, "value": value, "limit": limit, "passed": ok})
    return rows


def budget_failures(rows: Iterable[dict[str, Any]]) -> list[Failure]:
    """The failed rows of `check_budget` as Failures (the detail in select-student's words)."""
    out = []
    for r in rows:
        if not r["passed"]:
            what, unit = BUDGET_KEYS[r["name"]]
            out.append(Failure("budget", r["name"], r["value"], r["limit"],
                               detail=f"{what} {r['value']:.4g} {unit} > {r['limit']:g} {unit}"))
    return out
