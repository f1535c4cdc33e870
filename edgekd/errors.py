"""The two ways edgekd refuses: bad input (exit 2) and a failed check (exit 1).

The CLI turns these into one line on stderr and the exit code; nothing else
should call sys.exit.
"""

from __future__ import annotations


class EdgekdError(Exception):
    """Base class; `exit_code` is what the CLI exits with."""

    exit_code = 2


class BadInput(EdgekdError):
    """Usage error, bad profile, missing or corrupt file. One line, exit 2."""

    exit_code = 2


class CheckFailed(EdgekdError):
    """Parity, audit, budget or verify failed. Exit 1; the message lists the numbers."""

    exit_code = 1
