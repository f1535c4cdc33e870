"""The two ways edgekd refuses: bad input (exit 2) and a failed check (exit 1).

Library messages name *parameters* (``epochs``); `edgekd.cli` turns them into flags
(``--epochs``) in one place. Nothing but the CLI calls sys.exit.

A failed check carries its numbers as data: ``CheckFailed.failures`` is a list of
`edgekd.checks.Failure(kind, name, value, limit)`, one per number that failed, and the
subclass says which stage failed (parity, audit, budget, golden, verify).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable

if TYPE_CHECKING:
    from edgekd.checks import Failure


class EdgekdError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 2


class BadInput(EdgekdError):
    """Usage error, bad profile, missing or corrupt file. One line, exit 2.

    `params` names the API parameters the message is about (first word(s) of it, e.g.
    ``"epochs 0: must be >= 1"``); the CLI shows them as flags (``--epochs 0: ...``).
    """

    exit_code = 2

    def __init__(self, message: str, *, params: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.params = tuple(params)


class CheckFailed(EdgekdError):
    """A check failed (exit 1). `failures` holds each failing number; the message lists them."""

    exit_code = 1
    kind = "check"

    def __init__(self, message: str, *, failures: Iterable["Failure"] = ()) -> None:
        super().__init__(message)
        self.failures: list[Failure] = list(failures)
        self.result: Any = None  # the API's partial result, where the stage wrote one before failing
        self.result_error: str | None = None  # why `result` is None where that file could not be read


class ParityFailed(CheckFailed):
    """ONNX Runtime's outputs differ from PyTorch's beyond the profile's tolerances."""

    kind = "parity"


class AuditFailed(CheckFailed):
    """The model uses operators the target does not run."""

    kind = "audit"


class BudgetFailed(CheckFailed):
    """Latency, memory or size over the target's budget."""

    kind = "budget"


class GoldenFailed(CheckFailed):
    """The device's outputs on the golden inputs differ from the recorded ones."""

    kind = "golden"


class VerifyFailed(CheckFailed):
    """A file a manifest names is missing or differs from its hash."""

    kind = "verify"


def first_line(e: BaseException | str, *, limit: int | None = None) -> str:
    """The first non-empty line of an error (or text), cut to `limit` characters; the type
    name when there is no text. The one helper for turning a foreign exception into the
    one-line detail of a BadInput."""
    text = str(e).strip()
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        return type(e).__name__ if isinstance(e, BaseException) else ""
    return line if limit is None else line[:limit]
