"""End to end through the `edgekd` command: the shared tiny run (distill → export int8 → bench →
verify, conftest.py's `tiny_run`), then every bad input (exit 2, one line, nothing changed) and
every failed check (exit 1, the numbers) against it, and the commands as a user runs them.

Commands against the shared run run in-process through `edgekd.cli.main` (the console-script
entry, so the exit-code mapping is the real one) with the run's working folder as cwd and its
profiles as EDGEKD_TARGETS (helpers/tiny_run.py: cpu-arm relaxed in two numbers, so that the
outcome does not depend on luck). A few tests start the real command as a subprocess (marked
`integration`): --help, the console script, distill, and export → bench on a copy of the run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest

from helpers.fs import snapshot
from helpers.tiny_run import FLAGS as TINY
from helpers.tiny_run import PROFILE, REPO, TARGETS_ENV, TinyRun, edit, relaxed_profile

TEST_PROFILE = relaxed_profile()


# ---------------------------------------------------------------- helpers
def child_env(targets: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGEKD_TARGETS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")  # shared machine; plain output
    if targets is not None:
        env["EDGEKD_TARGETS"] = str(targets)
    return env


@dataclass
class Result:
    args: list[str]
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]

    def __str__(self) -> str:  # what an assert shows
        return (f"edgekd {' '.join(self.args)} → {self.code}\n--- stderr\n{self.err[-3000:]}"
                f"\n--- stdout\n{self.out[-2000:]}")


def edgekd(cwd: Path, env: dict, *args) -> Result:
    args = [str(a) for a in args]
    proc = subprocess.run([sys.executable, "-m", "edgekd.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    return Result(args, proc.returncode, proc.stdout, proc.stderr)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Pipeline(TinyRun):
    """The shared run (its `out`, `manifest`, `copy`), plus how the tests run commands against it."""

    env: dict                 # the environment of a child process
    cli: Callable[..., Any]   # edgekd ARGS... in-process, in `work`, with `targets`


@pytest.fixture
def ok(tiny_run: TinyRun, edgekd_main, monkeypatch) -> Pipeline:
    """The shared run, and the command run in-process against it."""
    def cli(*args):
        monkeypatch.chdir(tiny_run.work)
        monkeypatch.setenv(TARGETS_ENV, str(tiny_run.targets))
        return edgekd_main(*args)

    return Pipeline(**{f.name: getattr(tiny_run, f.name) for f in fields(tiny_run)},
                    env=child_env(tiny_run.targets), cli=cli)


# ---------------------------------------------------------------- the happy path
@pytest.mark.integration
def test_help_lists_the_commands(tmp_path: Path) -> None:
    r = edgekd(tmp_path, child_env(None), "--help")
    assert r.code == 0, str(r)
    for cmd in ("distill", "export", "bench", "audit", "targets", "verify"):
        assert cmd in r.out
    assert list(tmp_path.iterdir()) == []


@pytest.mark.integration
def test_console_script_is_the_same_entry_point(tmp_path: Path) -> None:
    script = Path(sys.executable).parent / "edgekd"
    if not script.exists():
        pytest.skip(f"no console script at {script} (package not installed into this interpreter's env)")
    proc = subprocess.run([str(script), "targets", "--json"], cwd=tmp_path, env=child_env(None),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    from edgekd.deploy.targets import list_targets
    assert [p["name"] for p in json.loads(proc.stdout)] == list_targets()


def test_run_folder_layout(ok: Pipeline) -> None:
    latest = ok.work / "artifacts" / "latest"
    assert latest.is_symlink() or latest.is_file()
    for name in ("teacher.pt", "student.pt", "distill.json", "config.json"):
        assert (ok.run / name).is_file(), name
    for name in ("model.onnx", "model.int8.onnx", "golden.npz", "manifest.json", "bench.json"):
        assert (ok.out / name).is_file(), name


def test_nothing_is_written_outside_the_run(ok: Pipeline) -> None:
    assert sorted(p.name for p in ok.work.iterdir()) == ["artifacts"]
    assert sorted(p.name for p in (ok.work / "artifacts").iterdir()) == sorted([ok.run.name, "latest"])
    temp = [str(p) for p in ok.run.rglob(".*")]
    assert temp == [], f"temporary files left behind: {temp}"


def test_golden_vectors(ok: Pipeline) -> None:
    with np.load(ok.out / "golden.npz") as z:
        x, y = z["inputs"], z["outputs"]
    assert x.dtype == np.float32 and y.dtype == np.float32
    assert len(x) >= 64 and len(x) == len(y)
    assert x.shape[1:] == (1, 8, 8) and y.shape[1:] == (10,)
    assert len(np.unique(x.reshape(len(x), -1), axis=0)) == len(x), "golden inputs must be distinct real samples"


def test_golden_outputs_are_what_the_model_computes(ok: Pipeline) -> None:
    import onnxruntime as ort

    with np.load(ok.out / "golden.npz") as z:
        x, y = z["inputs"], z["outputs"]
    sess = ort.InferenceSession(str(ok.out / "model.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"input": x})[0]
    np.testing.assert_allclose(got, y, atol=1e-4, rtol=1e-3)  # the profile's parity tolerances


def test_manifest_has_the_design_fields(ok: Pipeline) -> None:
    m = ok.manifest()
    assert m["edgekd_version"] and m["target"] == "cpu-arm"

    model = m["model"]
    assert model["path"] == "model.onnx"
    assert model["sha256"] == sha256(ok.out / "model.onnx")
    assert model["bytes"] == (ok.out / "model.onnx").stat().st_size
    assert model["opset"] == 17
    assert model["opset"] == {o.domain: o.version for o in onnx.load(str(ok.out / "model.onnx")).opset_import}[""]
    assert isinstance(model["params"], int) and model["params"] > 0
    assert model["inputs"] == [{"name": "input", "shape": ["batch", 1, 8, 8], "dtype": "float32"}]
    assert model["outputs"] == [{"name": "logits", "shape": ["batch", 10], "dtype": "float32"}]
    pre = model["preprocessing"]
    assert len(pre["mean"]) == 1 and len(pre["std"]) == 1 and pre["std"][0] > 0
    assert model["labels"] == [str(i) for i in range(10)]

    ops = m["ops"]
    allow = set(re.findall(r'"([A-Za-z:.]+)"', PROFILE.split("allow = [", 1)[1].split("]", 1)[0]))
    assert ops["used"] and set(ops["used"]) <= allow and "Conv" in ops["used"]
    assert ops["unsupported"] == []

    par = m["parity"]
    assert par["n"] >= 256 and par["passed"] is True
    assert 0 <= par["max_abs_diff"] <= 1e-4 and par["max_rel_diff"] >= 0
    assert par["top1_agreement"] == 1.0

    acc = m["accuracy"]
    for key in ("teacher", "student_alone", "student", "student_onnx"):
        assert 0.0 <= acc[key] <= 1.0, key
    assert acc["teacher"] > 0.5, "a 2-epoch cnn-small on digits is far above chance (0.1)"

    b = m["bench"]
    assert b["runner"] == "local"
    import onnxruntime as ort
    assert b["provider"] in ort.get_available_providers()
    assert isinstance(b["threads"], int) and b["threads"] >= 1
    lat = b["latency_ms"]
    assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] and lat["mean"] > 0
    assert b["init_ms"] > 0 and b["first_run_ms"] > 0 and b["peak_rss_mb"] > 0

    v = m["variants"]["int8"]
    assert v["path"] == "model.int8.onnx" and v["sha256"] == sha256(ok.out / "model.int8.onnx")
    assert v["bytes"] == (ok.out / "model.int8.onnx").stat().st_size
    assert v["parity"]["passed"] is True and 0.5 <= v["parity"]["top1_agreement"] <= 1
    assert 0 <= v["accuracy"] <= 1 and v["latency_ms"]["p50"] > 0

    assert m["recommended"] in ("fp32", "int8")
    budget = m["budget"]
    assert budget["passed"] is True
    assert {c["name"] for c in budget["checks"]} == {"latency_p90_ms", "peak_memory_mb", "model_size_mb"}
    for c in budget["checks"]:
        assert c["passed"] is True and c["value"] <= c["limit"]
    assert {c["name"]: c["limit"] for c in budget["checks"]} == {
        "latency_p90_ms": 1000.0, "peak_memory_mb": 256.0, "model_size_mb": 2.0}
    assert m["deployable"] is True


def test_manifest_agrees_with_distill(ok: Pipeline) -> None:
    m = ok.manifest()
    d = json.loads((ok.run / "distill.json").read_text())
    assert m["model"]["params"] == d["student"]["params"]
    assert m["accuracy"]["teacher"] == pytest.approx(d["accuracy"]["teacher"])
    # the student's ONNX accuracy is its PyTorch accuracy: fp32 parity had top-1 agreement 1.0
    assert m["accuracy"]["student_onnx"] == pytest.approx(m["accuracy"]["student"], abs=1e-6)


def test_verify_reports_the_files(ok: Pipeline) -> None:
    r = ok.cli("verify")  # artifacts/latest in the working folder
    assert r.code == 0 and re.search(r"verified \d+ files", r.out), str(r)
    r = ok.cli("verify", ok.run, "--json")
    assert r.code == 0, str(r)
    checked = set(json.loads(r.out)["checked"])
    assert {"cpu-arm/model.onnx", "cpu-arm/model.int8.onnx", "cpu-arm/golden.npz"} <= checked


# ---------------------------------------------------------------- bad input: exit 2, one line, nothing changed
def _corrupt_student(pipe: Pipeline, tmp: Path) -> list:
    run = pipe.copy(tmp / "run")
    (run / "student.pt").write_bytes(b"\x00garbage, not a checkpoint" * 10)
    return ["export", "--run", run, "--target", "cpu-arm"]


def _malformed_target(pipe: Pipeline, tmp: Path) -> list:
    path = tmp / "board.toml"
    path.write_text(PROFILE + "\n[[[ oops\n")
    return ["export", "--target", path]


def _corrupt_onnx(pipe: Pipeline, tmp: Path) -> list:
    path = tmp / "model.onnx"
    path.write_bytes((pipe.out / "model.onnx").read_bytes()[:200])  # truncated
    return ["audit", path, "--target", "cpu-arm"]


def _golden_wrong_shape(pipe: Pipeline, tmp: Path) -> list:
    run = pipe.copy(tmp / "run")
    np.savez(run / "cpu-arm" / "golden.npz", inputs=np.zeros((64, 1, 4, 4), np.float32),
             outputs=np.zeros((64, 10), np.float32))
    return ["bench", "--run", run, "--min-seconds", "0.05"]


USAGE_BUG = ()  # fixed: usage errors are exit 2 without a traceback

BAD_INPUT = [
    pytest.param(lambda p, t: ["export", "--target", "no-such-board"], "no-such-board", id="unknown-target"),
    pytest.param(_malformed_target, "malformed TOML", id="malformed-target-file"),
    pytest.param(lambda p, t: ["export", "--run", "nope", "--target", "cpu-arm"], "nope", id="missing-run"),
    pytest.param(_corrupt_student, "student.pt", id="corrupt-student-pt"),
    pytest.param(_corrupt_onnx, "model.onnx", id="corrupt-onnx-audit"),
    pytest.param(_golden_wrong_shape, "golden", id="golden-wrong-shape-bench"),
    pytest.param(lambda p, t: ["export", "--target", "cpu-arm", "--quantize", "int4"], "int4", id="bad-quantize"),
    pytest.param(lambda p, t: ["bench", "--runner", "ftp://x"], "ftp://x", id="bad-runner"),
    pytest.param(lambda p, t: ["verify", "nope"], "nope", id="verify-missing-run"),
    pytest.param(lambda p, t: ["export"], "--target", id="missing-option", marks=USAGE_BUG),
    pytest.param(lambda p, t: ["frobnicate"], "frobnicate", id="unknown-command", marks=USAGE_BUG),
    pytest.param(lambda p, t: ["distill", "--epochs", "two"], "--epochs", id="option-wrong-type", marks=USAGE_BUG),
]


@pytest.mark.parametrize("make_args,names", BAD_INPUT)
def test_bad_input_exits_2_with_one_line_and_changes_nothing(ok: Pipeline, tmp_path: Path, make_args, names) -> None:
    args = make_args(ok, tmp_path)
    before, copy_before = snapshot(ok.work), snapshot(tmp_path)
    r = ok.cli(*args)
    assert r.code == 2, str(r)
    assert "Traceback" not in r.err, str(r)
    assert len(r.err_lines) == 1, str(r)
    assert names in r.err_lines[0], str(r)
    assert snapshot(ok.work) == before, "a failed command changed the earlier run"
    assert snapshot(tmp_path) == copy_before, "a failed command changed its input"


def test_distill_bad_teacher_path_creates_no_run(tmp_path: Path, edgekd_main, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TARGETS_ENV, raising=False)
    r = edgekd_main("distill", *TINY[:-3], "--teacher", "missing.pt", "--no-progress")
    assert r.code == 2 and len(r.err_lines) == 1 and "missing.pt" in r.err, str(r)
    assert not (tmp_path / "artifacts").exists() or not any((tmp_path / "artifacts").iterdir())


def test_distill_for_a_target_without_the_student_ops_is_bad_input(tmp_path: Path, edgekd_main, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(TARGETS_ENV, raising=False)
    r = edgekd_main("distill", *TINY, "--target", "cpu-arm-xnnpack")
    assert r.code == 2, str(r)
    assert len(r.err_lines) == 1 and "GlobalAveragePool" in r.err
    assert not (tmp_path / "artifacts").exists(), \
        "nothing may be trained or written for a student the target cannot run"


# ---------------------------------------------------------------- failed checks: exit 1 with the numbers
def test_audit_against_a_profile_without_relu_fails(ok: Pipeline, tmp_path: Path) -> None:
    prof = tmp_path / "no-relu.toml"
    prof.write_text(edit(TEST_PROFILE, '"Relu", ', ""))
    before = snapshot(ok.work)
    r = ok.cli("audit", ok.out / "model.onnx", "--target", prof)
    assert r.code == 1, str(r)
    assert "Traceback" not in r.err
    assert "Relu" in r.err and "not in ops.allow" in r.err
    assert re.search(r"/features/\S+/Relu", r.err), "the audit names the nodes"
    assert snapshot(ok.work) == before


def test_audit_passes_against_the_profile_it_was_built_for(ok: Pipeline) -> None:
    r = ok.cli("audit", ok.out / "model.onnx", "--target", "cpu-arm", "--json")
    assert r.code == 0, str(r)
    assert json.loads(r.out)["unsupported"] == []


def test_budget_miss_exits_1_and_is_not_deployable(ok: Pipeline, tmp_path: Path) -> None:
    run = ok.copy(tmp_path / "run")
    prof = tmp_path / "cpu-arm.toml"  # same name, so it reads the copy's cpu-arm/ folder
    prof.write_text(edit(TEST_PROFILE, "latency_p90_ms = 1000.0", "latency_p90_ms = 0.000001"))
    before = snapshot(ok.work)
    r = ok.cli("bench", "--run", run, "--target", prof, "--min-seconds", "0.05", "--no-compare")
    assert r.code == 1, str(r)
    assert "Traceback" not in r.err
    line = next(line for line in r.err_lines if "check failed" in line)
    assert "latency_p90_ms" in line and "1e-06" in line
    m = ok.manifest(run)
    assert m["budget"]["passed"] is False and m["deployable"] is False
    miss = [c for c in m["budget"]["checks"] if not c["passed"]]
    assert [c["name"] for c in miss] == ["latency_p90_ms"] and miss[0]["limit"] == pytest.approx(1e-6)
    assert snapshot(ok.work) == before


def test_verify_finds_a_changed_and_a_missing_file(ok: Pipeline, tmp_path: Path) -> None:
    run = ok.copy(tmp_path / "run")
    model = run / "cpu-arm" / "model.onnx"
    model.write_bytes(model.read_bytes() + b"\x00")
    (run / "cpu-arm" / "golden.npz").unlink()
    r = ok.cli("verify", run)
    assert r.code == 1, str(r)
    assert "Traceback" not in r.err and len(r.err_lines) == 1
    assert "cpu-arm/model.onnx (model): sha256 differs" in r.err
    assert "cpu-arm/golden.npz (golden): missing" in r.err


# ---------------------------------------------------------------- contract bugs found end to end
@pytest.mark.integration
def test_export_int8_then_bench_with_a_profile_path(ok: Pipeline, tmp_path: Path) -> None:
    """The real commands, as child processes: export --quantize int8 for a profile given as a path, then bench."""
    run = ok.copy(tmp_path / "run")
    prof = tmp_path / "my-board.toml"
    prof.write_text(edit(TEST_PROFILE, 'name = "cpu-arm"', 'name = "my-board"'))
    r = edgekd(ok.work, ok.env, "export", "--run", run, "--target", prof, "--quantize", "int8")
    assert r.code == 0, str(r)
    assert (run / "my-board" / "model.int8.onnx").is_file()
    shutil.rmtree(run / "cpu-arm")  # so my-board is the run's only exported target
    r = edgekd(ok.work, ok.env, "bench", "--run", run, "--min-seconds", "0.05", "--no-compare")
    assert r.code == 0, str(r)
    assert json.loads((run / "my-board" / "manifest.json").read_text())["deployable"] is True


def test_a_wrong_int8_variant_fails_golden_and_leaves_fp32_deployable(ok: Pipeline, tmp_path: Path) -> None:
    """A copy of the run whose int8 model negates the logits: its golden top-1 agreement is 0."""
    run = ok.copy(tmp_path / "run")
    m = onnx.load(str(run / "cpu-arm" / "model.onnx"))
    last = m.graph.node[-1]
    last.output[0] = "pre_neg"
    m.graph.node.append(onnx.helper.make_node("Neg", ["pre_neg"], ["logits"], name="negate"))
    onnx.save(m, str(run / "cpu-arm" / "model.int8.onnx"))
    r = ok.cli("bench", "--run", run, "--min-seconds", "0.05", "--no-compare")
    assert r.code == 1, str(r)
    assert "golden (int8)" in r.err and "'top1_agreement': 0.0" in r.err
    m = ok.manifest(run)
    assert m["recommended"] == "fp32"
    assert m["variants"]["int8"]["golden"]["passed"] is False
    assert m["budget"]["passed"] is True and m["deployable"] is True


@pytest.mark.integration
def test_distill_with_run_updates_artifacts_latest(tmp_path: Path) -> None:
    env = child_env(None)
    r = edgekd(tmp_path, env, "distill", "--epochs", "1", "--teacher-epochs", "1", "--seeds", "1",
               "--teacher", "cnn-small", "--no-progress", "--run", "elsewhere/r1")
    assert r.code == 0, str(r)
    assert not (tmp_path / "elsewhere" / "latest").exists(), "a pointer was written outside the run folder"
    assert (tmp_path / "artifacts" / "latest").resolve() == (tmp_path / "elsewhere" / "r1").resolve()
