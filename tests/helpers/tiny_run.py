"""The one tiny run that the tests which only read a run share (conftest.py's session fixture `tiny_run`).

distill (2 epochs, 2 seeds, cnn-small teacher, the default student) → export --target cpu-arm
--quantize int8 → bench → verify, through the Python API in this process, in a working folder of
its own: `work/artifacts/<id>` and `work/artifacts/latest`, nothing else. It costs one tiny
distill instead of one per test module (test_cli, test_bad_inputs, test_api and test_report each
made their own).

The profiles come from a copy of targets/ (`targets`, for EDGEKD_TARGETS) where cpu-arm differs
from the shipped one in two numbers only, so that the outcome does not depend on luck:
- int8_min_top1_agreement 0.5: a 2-epoch student has near-tied logits, so int8 rounding
  flips a few argmaxes; at 0.99 the int8 check fails on some seeds and machines.
- latency_p90_ms 1000: no timing thresholds in tests (a loaded machine must not fail it).

The run is shared: a test that writes into it (a bench, an export, a report, a corrupted file)
must work on `copy(dest)`. tests/test_layout.py cannot see a stray write, but test_cli and
test_bad_inputs snapshot the working folder around every command they run against it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent
PROFILE = (REPO / "targets" / "cpu-arm.toml").read_text(encoding="utf-8")
TARGETS_ENV = "EDGEKD_TARGETS"
# The shared run's settings, as API keywords (test_api) and as CLI flags (tests that repeat it).
SETTINGS: dict[str, Any] = dict(epochs=2, teacher_epochs=2, seeds=2, teacher="cnn-small", progress=False)
FLAGS = ["--epochs", "2", "--teacher-epochs", "2", "--seeds", "2", "--teacher", "cnn-small", "--no-progress"]


def edit(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur exactly once) replaced by `new`."""
    assert text.count(old) == 1, f"cpu-arm.toml no longer holds {old!r} exactly once"
    return text.replace(old, new)


def relaxed_profile() -> str:
    """cpu-arm.toml with the two numbers above changed (a function, so that an edited profile fails
    the tests that use it, not the import of conftest.py)."""
    return edit(edit(PROFILE, "int8_min_top1_agreement = 0.99", "int8_min_top1_agreement = 0.5"),
                "latency_p90_ms = 5.0", "latency_p90_ms = 1000.0")


@dataclass(frozen=True)
class TinyRun:
    work: Path                      # cwd of every step; holds artifacts/<id> and artifacts/latest
    targets: Path                   # the profiles the steps saw (EDGEKD_TARGETS)
    run: Path                       # work/artifacts/<id>, absolute (distill.run is relative to work)
    distill: Any                    # edgekd.api.DistillResult
    export: Any                     # edgekd.api.ExportResult
    export_manifest: dict           # manifest.json as export wrote it (bench then merged its numbers in)
    bench: Any                      # edgekd.api.BenchResult
    verify: Any                     # edgekd.api.VerifyResult

    @property
    def out(self) -> Path:
        return self.run / "cpu-arm"

    def manifest(self, run: Path | None = None) -> dict:
        return json.loads(((run or self.run) / "cpu-arm" / "manifest.json").read_text())

    def copy(self, dest: Path) -> Path:
        """A copy of the run at `dest`, for a test that writes into it."""
        shutil.copytree(self.run, dest, symlinks=True)
        return dest


def make_tiny_run(root: Path) -> TinyRun:
    """Make the run under `root` (root/work, root/targets); restores the cwd and EDGEKD_TARGETS."""
    import edgekd

    work, targets = root / "work", root / "targets"
    work.mkdir(parents=True)
    shutil.copytree(REPO / "targets", targets)
    (targets / "cpu-arm.toml").write_text(relaxed_profile(), encoding="utf-8")
    cwd, env = Path.cwd(), os.environ.get(TARGETS_ENV)
    os.chdir(work)
    os.environ[TARGETS_ENV] = str(targets)
    try:
        res = edgekd.distill(**SETTINGS)
        run = (work / res.run).resolve()
        exp = edgekd.export(target="cpu-arm", run=run, quantize="int8")
        exported = json.loads((run / "cpu-arm" / "manifest.json").read_text())
        ben = edgekd.bench(run=run, min_seconds=0.05)
        ver = edgekd.verify(run=run)
    finally:
        os.chdir(cwd)
        if env is None:
            os.environ.pop(TARGETS_ENV, None)
        else:
            os.environ[TARGETS_ENV] = env
    return TinyRun(work=work, targets=targets, run=run, distill=res, export=exp, export_manifest=exported,
                   bench=ben, verify=ver)
