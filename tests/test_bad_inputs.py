"""A corpus of bad inputs, one table: each case is the command, the exit code design.md
promises (2 for bad input, 1 for a failed check) and a fragment of the one line it prints.

Every case runs against the session's shared tiny run (conftest.py's `tiny_run`: distill, export
--target cpu-arm --quantize int8, bench, in a working folder of its own). The CLI runs
in-process (`edgekd_main` from conftest.py) with that folder as cwd, so a case that wrote
anything there (a new run, a moved `latest`, a changed file) shows up in the folder's
snapshot. For every case: the exit code, exactly one line on stderr holding the fragment,
no traceback, no change to the fixture run's folder, and no change to the case's own
inputs (cases that must corrupt something corrupt a copy of the run).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers.fs import snapshot
from helpers.tiny_run import PROFILE, REPO, TARGETS_ENV, TinyRun, edit

# Tiny training settings; the teacher is given separately because --teacher is repeatable.
TINY = ["--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--student", "tiny-cnn", "--no-progress"]
TEACHER = ["--teacher", "cnn-small"]


# ---------------------------------------------------------------- helpers
def child_env() -> dict[str, str]:
    env = dict(os.environ)  # EDGEKD_TARGETS as found: the shipped profiles unless the caller set one
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
    return env


def cli(cwd: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *map(str, args)], cwd=cwd, env=child_env(),
                          capture_output=True, text=True, timeout=600)


@dataclass
class Fixture:
    work: Path     # cwd of every command; holds artifacts/<run> and artifacts/latest
    run: Path

    @property
    def out(self) -> Path:
        return self.run / "cpu-arm"

    def copy_run(self, dest: Path) -> Path:
        shutil.copytree(self.run, dest, symlinks=True)
        return dest


@pytest.fixture
def fx(tiny_run: TinyRun, monkeypatch) -> Fixture:
    """The shared run, with the shipped profiles (EDGEKD_TARGETS unset) as a user has them."""
    monkeypatch.delenv(TARGETS_ENV, raising=False)
    assert (tiny_run.run / "student.pt").is_file() and (tiny_run.out / "manifest.json").is_file()
    return Fixture(work=tiny_run.work, run=tiny_run.run)


# ---------------------------------------------------------------- builders of inputs
def write(path: Path, data: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        path.write_bytes(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def folder(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def png(path: Path, *, seed: int, size: int = 8) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def image_folder(root: Path, classes: dict[str, int]) -> Path:
    for c, n in classes.items():
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            png(root / c / f"{i}.png", seed=hash((c, i)) % 1000)
    return root


def profile(tmp: Path, old: str, new: str, name: str = "board.toml") -> Path:
    return write(tmp / name, edit(PROFILE, old, new))


def corrupt_student(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    (run / "student.pt").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    return ["export", "--run", run, "--target", "cpu-arm"]


def truncated_student(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    data = (run / "student.pt").read_bytes()
    (run / "student.pt").write_bytes(data[: len(data) // 2])  # a write cut short
    return ["export", "--run", run, "--target", "cpu-arm"]


def teacher_checkpoint(tmp: Path, kind: str) -> Path:
    """A file given as --teacher X.pt that is not a teacher checkpoint."""
    import torch

    path = tmp / f"{kind}.pt"
    if kind == "random-bytes":
        write(path, np.random.default_rng(0).bytes(4096))
    elif kind == "text":
        write(path, "this is a text file, not a checkpoint\n")
    elif kind == "empty":
        write(path, b"")
    elif kind == "pickle-object":
        # A plain pickle of an arbitrary object: the safe loader must refuse it, never run it.
        write(path, pickle.dumps(Path("/etc/passwd")))
    elif kind == "torch-object":
        torch.save({"kind": "teacher", "model": Path("/x")}, path)  # torch's format, a forbidden class inside
    elif kind == "no-kind":
        torch.save({"model": {"w": torch.zeros(2)}}, path)          # loads, but not an edgekd checkpoint
    return path


def edited_checkpoint(src: Path, dest: Path, **changes) -> Path:
    """A copy of an edgekd checkpoint with some fields changed (value None: the field removed)."""
    import torch

    state = torch.load(src, map_location="cpu", weights_only=True)
    for k, v in changes.items():
        if v is None:
            state.pop(k, None)
        else:
            state[k] = v
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, dest)
    return dest


def student_edited(**changes) -> Callable[[Fixture, Path], list]:
    def build(fx: Fixture, tmp: Path) -> list:
        run = fx.copy_run(tmp / "run")
        edited_checkpoint(run / "student.pt", run / "student.pt", **changes)
        return ["export", "--run", run, "--target", "cpu-arm"]
    return build


def teacher_edited(**changes) -> Callable[[Fixture, Path], list]:
    def build(fx: Fixture, tmp: Path) -> list:
        return ["distill", *TINY, "--teacher", edited_checkpoint(fx.run / "teacher.pt", tmp / "edited.pt", **changes)]
    return build


def run_file_edited(name: str, text: str | None, *cmd) -> Callable[[Fixture, Path], list]:
    """A copy of the run with one file replaced by `text` (None: removed), then `cmd --run COPY`."""
    def build(fx: Fixture, tmp: Path) -> list:
        run = fx.copy_run(tmp / "run")
        if text is None:
            (run / name).unlink()
        else:
            write(run / name, text)
        return ["verify", run] if cmd[0] == "verify" else [cmd[0], "--run", run, *cmd[1:]]
    return build


def export_without_distill_json(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    shutil.rmtree(run / "cpu-arm")
    (run / "distill.json").unlink()
    return ["export", "--run", run, "--target", "cpu-arm"]


def student_is_teacher(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    shutil.copyfile(run / "teacher.pt", run / "student.pt")
    return ["export", "--run", run, "--target", "cpu-arm"]


def teacher_for_other_classes(fx: Fixture, tmp: Path) -> list:
    folder = image_folder(tmp / "photos", {"cat": 5, "dog": 5})
    return ["distill", *TINY, "--teacher", fx.run / "teacher.pt", "--data", f"imagefolder:{folder}"]


def teacher_is_student(fx: Fixture, tmp: Path) -> list:
    return ["distill", *TINY, "--teacher", fx.run / "student.pt"]


def onnx_truncated(fx: Fixture, tmp: Path) -> list:
    path = write(tmp / "model.onnx", (fx.out / "model.onnx").read_bytes()[:200])
    return ["audit", path, "--target", "cpu-arm"]


def golden_wrong_shape(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    np.savez(run / "cpu-arm" / "golden.npz", inputs=np.zeros((64, 1, 4, 4), np.float32),
             outputs=np.zeros((64, 10), np.float32))
    return ["bench", "--run", run, "--min-seconds", "0.05", "--no-compare"]


def golden_not_npz(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    write(run / "cpu-arm" / "golden.npz", "not an npz archive\n")
    return ["bench", "--run", run, "--min-seconds", "0.05", "--no-compare"]


def tampered_model(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    model = run / "cpu-arm" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    return ["verify", run]


def deleted_golden(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    (run / "cpu-arm" / "golden.npz").unlink()
    return ["verify", run]


def manifest_escapes_run(fx: Fixture, tmp: Path) -> list:
    run = fx.copy_run(tmp / "run")
    outside = write(tmp / "outside.bin", b"x")
    m = json.loads((run / "cpu-arm" / "manifest.json").read_text())
    m["model"]["path"] = "../../outside.bin"
    m["model"]["sha256"] = hashlib.sha256(outside.read_bytes()).hexdigest()
    write(run / "cpu-arm" / "manifest.json", json.dumps(m))
    return ["verify", run]


def no_conv_profile(fx: Fixture, tmp: Path) -> list:
    path = write(tmp / "no-conv.toml", edit(PROFILE, '"Conv", ', ""))
    return ["audit", fx.out / "model.onnx", "--target", path]


# ---------------------------------------------------------------- the corpus
@dataclass
class Case:
    id: str
    build: Callable[[Fixture, Path], list]   # (fixture, a fresh tmp folder) -> CLI args
    code: int                                # 2 bad input, 1 failed check
    fragment: str                            # in the one stderr line; {tmp} and {run} are filled in
    xfail: str | None = None                 # "BUG: ..." for a case that shows a known bug


def distill(*extra) -> Callable[[Fixture, Path], list]:
    return lambda fx, tmp: ["distill", *TINY, *TEACHER, *[str(e).format(tmp=tmp) for e in extra]]


def run_cmd(cmd: str, *extra) -> Callable[[Fixture, Path], list]:
    return lambda fx, tmp: [cmd, "--run", fx.run, *extra]


CASES = [
    # ---- CLI options
    Case("data-unknown", distill("--data", "nosuch"), 2, "unknown --data 'nosuch'"),
    Case("data-imagefolder-no-dir", distill("--data", "imagefolder:"), 2, "imagefolder:DIR needs a folder"),
    Case("labeled-fraction-0", distill("--labeled-fraction", "0"), 2, "--labeled-fraction 0"),
    Case("labeled-fraction-1.5", distill("--labeled-fraction", "1.5"), 2, "--labeled-fraction 1.5"),
    Case("seeds-0", distill("--seeds", "0"), 2, "--seeds 0"),
    Case("epochs-negative", distill("--epochs", "-1"), 2, "--epochs -1"),
    Case("epochs-not-a-number", distill("--epochs", "two"), 2, "Invalid value for '--epochs'"),
    Case("lr-0", distill("--lr", "0"), 2, "--lr 0"),
    Case("temperature-negative", distill("--temperature", "-1"), 2, "--temperature -1"),
    Case("method-unknown", distill("--method", "bogus"), 2, "unknown --method 'bogus'"),
    Case("method-weight-not-a-number", distill("--method", "soft:abc"), 2, "weight 'abc' is not a number"),
    Case("method-weight-negative", distill("--method", "soft:-1"), 2, "'soft:-1'"),
    Case("student-unknown", distill("--student", "nosuch"), 2, "unknown student 'nosuch'"),
    Case("teacher-unknown", lambda fx, tmp: ["distill", *TINY, "--teacher", "nosuch"], 2, "unknown teacher 'nosuch'"),
    Case("resume-without-run", distill("--resume"), 2, "--resume needs --run"),
    Case("teacher-mode-bogus", distill("--teacher-mode", "bogus"), 2, "--teacher-mode 'bogus'"),
    Case("unknown-option", distill("--frobnicate"), 2, "--frobnicate"),
    Case("unknown-command", lambda fx, tmp: ["frobnicate"], 2, "frobnicate"),
    Case("export-without-target", run_cmd("export"), 2, "--target"),
    Case("quantize-int4", run_cmd("export", "--target", "cpu-arm", "--quantize", "int4"), 2, "--quantize 'int4'"),
    Case("batch-size-0", distill("--batch-size", "0"), 2, "--batch-size 0"),
    Case("teacher-weight-count", distill("--teacher-weight", "0.5", "--teacher-weight", "0.5"), 2,
         "2 weights for 1 teachers"),
    Case("online-one-peer", distill("--online", "--peers", "1"), 2, "--peers 1"),
    Case("hint-epochs-without-fitnet", distill("--hint-epochs", "1"), 2, "fitnet"),
    Case("run-is-a-file", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--run", write(tmp / "afile", "x")], 2, "afile"),
    Case("run-under-a-file", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--run", write(tmp / "afile", "x") / "sub"],
         2, "afile"),
    Case("export-batch-negative", run_cmd("export", "--target", "cpu-arm", "--batch", "-3"), 2, "--batch -3"),
    Case("quantize-not-allowed-by-target", run_cmd("export", "--target", "apple-coreml", "--quantize", "int8"), 2,
         "allows only fp32, fp16"),
    Case("bench-target-not-exported", run_cmd("bench", "--target", "cpu-x86"), 2, "cpu-x86/manifest.json"),
    Case("bench-min-seconds-negative", run_cmd("bench", "--min-seconds", "-5", "--no-compare"), 2, "min_seconds"),
    Case("runner-ftp", run_cmd("bench", "--runner", "ftp://x"), 2, "unknown runner 'ftp://x'"),
    Case("runner-ssh-bad-user", run_cmd("bench", "--runner", "ssh://bad user@host"), 2, "bad user 'bad user'"),
    Case("runner-ssh-bad-port", run_cmd("bench", "--runner", "ssh://u@h:99999"), 2, "bad port '99999'"),
    Case("runner-ssh-no-user", run_cmd("bench", "--runner", "ssh://host"), 2, "missing USER@"),
    Case("runner-setup-unknown", lambda fx, tmp: ["runner", "setup", "docker"], 2, "'docker'"),
    # ---- target profiles
    Case("target-unknown", run_cmd("export", "--target", "no-such-board"), 2, "unknown target 'no-such-board'"),
    Case("target-misspelt", lambda fx, tmp: ["targets", "cpu-amr"], 2, "did you mean 'cpu-arm'"),
    Case("target-file-missing", lambda fx, tmp: ["targets", tmp / "missing.toml"], 2,
         "missing.toml: target profile not found"),
    Case("target-malformed-toml", lambda fx, tmp: ["targets", write(tmp / "b.toml", PROFILE + "\n[[[ oops\n")], 2,
         "malformed TOML"),
    Case("target-not-utf8", lambda fx, tmp: ["targets", write(tmp / "b.toml", b"name = \"\xff\xfe\"\n")], 2,
         "not UTF-8"),
    Case("target-unknown-key",
         lambda fx, tmp: ["targets", profile(tmp, 'arch = "aarch64"', 'arch = "aarch64"\nfrobs = 1')],
         2, "key 'frobs': unknown key"),
    Case("target-misspelt-key", lambda fx, tmp: ["targets", profile(tmp, "opset = 17", "opsett = 17")],
         2, "did you mean 'opset'"),
    Case("target-wrong-type", lambda fx, tmp: ["targets", profile(tmp, "opset = 17", 'opset = "17"')],
         2, "key 'opset': must be an integer"),
    Case("target-opset-out-of-range", lambda fx, tmp: ["targets", profile(tmp, "opset = 17", "opset = 99")],
         2, "key 'opset': 99"),
    Case("target-unknown-provider", lambda fx, tmp: ["targets", profile(tmp, '{ name = "CPUExecutionProvider" }',
                                                                        '{ name = "FooExecutionProvider" }')],
         2, "unknown execution provider 'FooExecutionProvider'"),
    Case("target-missing-key", lambda fx, tmp: ["targets", profile(tmp, "atol = 1e-4\n", "")], 2,
         "key 'parity.atol': missing"),
    Case("target-bad-precision", lambda fx, tmp: ["targets", profile(tmp, 'allowed = ["fp32", "int8"]',
                                                                     'allowed = ["fp32", "int4"]')],
         2, "'int4' is not valid"),
    Case("target-bad-profile-to-export", lambda fx, tmp: ["export", "--run", fx.run, "--target",
                                                          profile(tmp, "opset = 17", "opset = 5")], 2,
         "board.toml: key 'opset'"),
    # ---- data folders
    Case("imagefolder-missing", distill("--data", "imagefolder:{tmp}/nope"), 2, "is not a folder"),
    Case("imagefolder-empty", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data",
                                               f"imagefolder:{folder(tmp / 'empty')}"],
         2, "found none"),
    Case("imagefolder-one-class", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data",
                                                   f"imagefolder:{image_folder(tmp / 'one', {'cat': 5})}"],
         2, "found only 'cat'"),
    Case("imagefolder-class-without-images",
         lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data",
                          f"imagefolder:{image_folder(tmp / 'f', {'cat': 5, 'dog': 0})}"], 2, "dog"),
    Case("imagefolder-too-few-images",
         lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data",
                          f"imagefolder:{image_folder(tmp / 'f', {'cat': 1, 'dog': 1})}"], 2, "too few samples"),
    Case("imagefolder-corrupt-image", lambda fx, tmp: [
        "distill", *TINY, *TEACHER, "--data", f"imagefolder:{corrupt_folder(tmp / 'f')}"], 2, "cannot read image"),
    Case("mnist-files-missing", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data", "mnist",
                                                 "--data-dir", tmp / "nodata"], 2, "pass --download"),
    Case("cifar10-files-missing", lambda fx, tmp: ["distill", *TINY, *TEACHER, "--data", "cifar10",
                                                   "--data-dir", tmp / "nodata"], 2, "lacks data_batch_1"),
    # ---- checkpoints
    Case("student-pt-corrupt", corrupt_student, 2, "student.pt: not an edgekd checkpoint"),
    Case("student-pt-truncated", truncated_student, 2, "student.pt: not an edgekd checkpoint"),
    Case("student-pt-is-a-teacher", student_is_teacher, 2, "a teacher checkpoint, not a student"),
    Case("student-pt-other-arch", student_edited(arch="tiny-cnn"), 2,  # the shared run's student is small-cnn
         "weights do not fit student 'tiny-cnn'"),
    Case("student-pt-unknown-arch", student_edited(arch="nosuch"), 2, "unknown student 'nosuch'"),
    Case("student-pt-missing-fields", student_edited(in_channels=None, num_classes=None), 2, "student.pt"),
    Case("teacher-pt-missing-fields", teacher_edited(num_classes=None), 2, "edited.pt"),
    Case("teacher-pt-unknown-arch", teacher_edited(arch="nosuch"), 2, "edited.pt"),
    Case("teacher-pt-other-classes", teacher_for_other_classes, 2, "has 10 classes"),
    Case("teacher-pt-is-a-student", teacher_is_student, 2, "a student checkpoint, not a teacher"),
    Case("teacher-pt-missing", lambda fx, tmp: ["distill", *TINY, "--teacher", tmp / "missing.pt"], 2,
         "missing.pt: file not found"),
    Case("teacher-pt-random-bytes",
         lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "random-bytes")], 2,
         "random-bytes.pt: not an edgekd checkpoint"),
    Case("teacher-pt-pickle-object",
         lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "pickle-object")], 2,
         "pickle-object.pt: not an edgekd checkpoint"),
    Case("teacher-pt-text", lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "text")], 2,
         "text.pt: not an edgekd checkpoint"),
    Case("teacher-pt-empty", lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "empty")], 2,
         "empty.pt: not an edgekd checkpoint"),
    Case("teacher-pt-forbidden-class",
         lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "torch-object")], 2,
         "torch-object.pt: not an edgekd checkpoint"),
    Case("teacher-pt-no-kind", lambda fx, tmp: ["distill", *TINY, "--teacher", teacher_checkpoint(tmp, "no-kind")],
         2, "no-kind.pt: not an edgekd checkpoint"),
    # ---- ONNX files
    Case("onnx-truncated-to-audit", onnx_truncated, 2, "model.onnx: not a readable ONNX model"),
    Case("onnx-text-file-to-audit",
         lambda fx, tmp: ["audit", write(tmp / "notes.onnx", "hello\n"), "--target", "cpu-arm"],
         2, "notes.onnx"),
    Case("onnx-missing-to-audit", lambda fx, tmp: ["audit", tmp / "gone.onnx", "--target", "cpu-arm"], 2,
         "gone.onnx: ONNX model not found"),
    # ---- golden files
    Case("golden-wrong-input-shape", golden_wrong_shape, 2, "golden inputs have sample shape [1, 4, 4]"),
    Case("golden-not-an-npz", golden_not_npz, 2, "not a readable .npz golden file"),
    # ---- run folders
    Case("export-missing-run", lambda fx, tmp: ["export", "--run", tmp / "nope", "--target", "cpu-arm"], 2,
         "nope: run folder not found"),
    Case("bench-missing-run", lambda fx, tmp: ["bench", "--run", tmp / "nope"], 2, "nope: run folder not found"),
    Case("bench-nothing-exported", lambda fx, tmp: ["bench", "--run", folder(tmp / "r")], 2,
         "nothing exported yet"),
    Case("verify-missing-run", lambda fx, tmp: ["verify", tmp / "nope"], 2, "nope: run folder not found"),
    Case("verify-no-manifest", lambda fx, tmp: ["verify", folder(tmp / "r")], 2, "no manifest.json"),
    Case("verify-manifest-not-json",
         lambda fx, tmp: ["verify", write(tmp / "r" / "cpu-arm" / "manifest.json", "{").parent.parent],
         2, "manifest.json: not valid JSON"),
    Case("config-json-corrupt", run_file_edited("config.json", "{", "export", "--target", "cpu-arm"), 2,
         "config.json: not valid JSON"),
    Case("config-json-missing", run_file_edited("config.json", None, "export", "--target", "cpu-arm"), 2,
         "config.json: file not found"),
    Case("config-json-without-data", run_file_edited("config.json", "{}", "export", "--target", "cpu-arm"), 2,
         "config.json"),
    Case("distill-json-missing", export_without_distill_json, 2, "distill.json: file not found"),
    Case("verify-manifest-names-nothing", run_file_edited("cpu-arm/manifest.json", "{}", "verify"), 2, "manifest"),
    Case("bench-manifest-not-an-object", run_file_edited("cpu-arm/manifest.json", "[]", "bench"), 2, "manifest.json"),
    # ---- failed checks: exit 1
    Case("verify-tampered-model", tampered_model, 1, "cpu-arm/model.onnx (model): sha256 differs"),
    Case("verify-deleted-golden", deleted_golden, 1, "cpu-arm/golden.npz (golden): missing"),
    Case("verify-path-outside-run", manifest_escapes_run, 1, "outside the run folder"),
    Case("audit-target-without-conv", no_conv_profile, 1, "Conv"),
]


def corrupt_folder(root: Path) -> Path:
    """Two classes of five; every 'dog' file is not an image, so the train split holds one
    and the loader meets it while computing the train statistics, before any run folder exists."""
    image_folder(root, {"cat": 5})
    for i in range(5):
        write(root / "dog" / f"{i}.png", b"\x89PNG\r\n\x1a\n this is not a png")
    return root


def test_corpus_is_big_enough() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    assert {1, 2} == {c.code for c in CASES}


@pytest.mark.parametrize(
    "case", [pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else [])
             for c in CASES])
def test_bad_input(case: Case, fx: Fixture, tmp_path: Path, edgekd_main, monkeypatch) -> None:
    import torch

    torch.set_num_threads(1)
    args = case.build(fx, tmp_path)
    monkeypatch.chdir(fx.work)
    before, inputs_before = snapshot(fx.work), snapshot(tmp_path)
    r = edgekd_main(*args)
    shown = f"edgekd {' '.join(map(str, args))} -> {r.code}\n--- stderr\n{r.err[-3000:]}\n--- stdout\n{r.out[-1000:]}"
    assert r.code == case.code, shown
    assert "Traceback" not in r.err, shown
    assert len(r.err_lines) == 1, shown
    assert case.fragment.format(tmp=tmp_path, run=fx.run) in r.err_lines[0], shown
    assert r.err_lines[0].startswith("edgekd: error:" if case.code == 2 else "edgekd: check failed:"), shown
    assert snapshot(fx.work) == before, "a failed command changed the earlier run (or wrote beside it)"
    assert snapshot(tmp_path) == inputs_before, "a failed command changed its own inputs"


@pytest.mark.integration
def test_a_subprocess_gives_the_same_answer_as_in_process(fx: Fixture, tmp_path: Path) -> None:
    """The in-process runner stands for the real command: spot-check one case of each exit code."""
    for args, code, fragment in ((["distill", *TINY, *TEACHER, "--seeds", "0"], 2, "--seeds 0"),
                                 (tampered_model(fx, tmp_path), 1, "sha256 differs")):
        before = snapshot(fx.work)
        proc = cli(fx.work, *args)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert proc.returncode == code and len(lines) == 1 and fragment in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr
        assert snapshot(fx.work) == before
