"""Shared fixtures: one torch thread, EDGEKD_TARGETS left as found, the CLI run in-process, and
the one tiny run shared by the tests that only read a run (`tiny_run`, made at most once a session).

Kept small on purpose: every test file in tests/ sees this, so nothing here may
import torch eagerly or change the environment for longer than one test. Helpers that test
files import live in tests/helpers/, never in a test file or here.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers.fs import snapshot  # older test files import it from here
from helpers.tiny_run import TinyRun, make_tiny_run

REPO = Path(__file__).resolve().parent.parent
TARGETS_ENV = "EDGEKD_TARGETS"


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The machine is shared: a test that uses torch gets one intra-op thread.

    torch is not imported here (files that never use it stay fast); once any
    test module has imported it, every test runs with one thread.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request, monkeypatch):
    """A test not marked `gpu` means the CPU: on a GPU host the processes it starts see no GPU
    (CUDA_VISIBLE_DEVICES=''), so their `--device auto` resolves to the CPU as it does here; in this process
    `edgekd.train.distributed.resolve_device` reads the same variable, even after torch counted the GPUs."""
    if request.node.get_closest_marker("gpu") is None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    yield


@pytest.fixture(autouse=True)
def _own_working_folder(tmp_path_factory, monkeypatch):
    """Every test runs in an empty folder of its own: the relative defaults (`artifacts/`, `data/`)
    land there, never in the checkout (a test once pointed the checkout's artifacts/latest at
    /tmp). Tests find repository files through REPO, not the working folder."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    yield


@pytest.fixture(autouse=True)
def _edgekd_targets_untouched():
    """Whatever a test does to EDGEKD_TARGETS, the next test sees the value the session started with."""
    before = os.environ.get(TARGETS_ENV)
    yield
    if before is None:
        os.environ.pop(TARGETS_ENV, None)
    else:
        os.environ[TARGETS_ENV] = before


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def edgekd_main(capsys, monkeypatch):
    """Run `edgekd ARGS...` in this process through `edgekd.cli.main` (the console-script entry),
    so exit-code mapping is tested without paying for a subprocess per case."""
    from edgekd import cli

    def run(*args: str) -> CliResult:
        capsys.readouterr()  # drop anything printed before
        monkeypatch.setattr(sys, "argv", ["edgekd", *map(str, args)])
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code=code, out=captured.out, err=captured.err)

    return run


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Iterator[TinyRun]:
    """distill → export int8 → bench → verify on tiny settings, once a session (helpers/tiny_run.py).
    Read-only: a test that writes into a run works on `tiny_run.copy(tmp_path / "run")`. At the end
    of the session the working folder must be as it was made: any change is an error naming the files."""
    import torch

    torch.set_num_threads(1)
    run = make_tiny_run(tmp_path_factory.mktemp("tiny-run"))
    before = snapshot(run.work)
    yield run
    after = snapshot(run.work)
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    assert changed == [], f"a test changed the shared tiny run (copy it first): {changed}"
