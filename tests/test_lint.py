"""ruff over the whole repository, with pyproject.toml's [tool.ruff] settings (line length 120,
pyflakes, import order, pycodestyle errors and warnings): no violation.

The repository is clean (issue 19), so this test fails on any new violation;
`ruff check --statistics .` counts them per rule, `ruff check --fix .` fixes imports.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def ruff() -> list[str] | None:
    """The ruff command: the `ruff` package's binary in this interpreter's environment, else one on PATH."""
    try:
        from ruff.__main__ import find_ruff_bin

        return [str(find_ruff_bin())]
    except (ImportError, FileNotFoundError):
        found = shutil.which("ruff") or shutil.which("ruff", path=str(Path(sys.executable).parent))
        return [found] if found else None


def test_ruff_finds_nothing():
    cmd = ruff()
    if cmd is None:
        pytest.skip("ruff not installed (pip install ruff; it is in the `test` extra)")
    proc = subprocess.run([*cmd, "check", "--no-cache", "--output-format", "concise", str(REPO)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-2000:]


def test_ruff_config_is_the_projects():
    import tomllib

    conf = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["ruff"]
    assert conf["line-length"] == 120
    assert {"F", "I", "E"} <= set(conf["lint"]["select"])
