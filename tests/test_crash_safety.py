"""Crash-safe runs (issue 5): kill and resume, atomic writes, verify, concurrent runs,
NaN losses and files that are not checkpoints.

The kill test kills a real `edgekd distill` subprocess with SIGKILL while a student phase
is mid-way, resumes it with --resume, and compares the result with an uninterrupted run
of the same command (made once per module). Training is tiny (digits, tiny-cnn, a
cnn-small teacher), so one phase takes a couple of seconds: long enough to kill in.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 20  # student epochs: about 0.1 s each here, so a phase leaves a window of ~2 s to kill in
ARGS = ["--epochs", str(EPOCHS), "--teacher-epochs", "2", "--seeds", "1", "--teacher", "cnn-small",
        "--student", "tiny-cnn", "--no-progress", "--device", "cpu", "--deterministic"]
TINY = ["--epochs", "1", "--teacher-epochs", "1", "--seeds", "1", "--teacher", "cnn-small",
        "--student", "tiny-cnn", "--no-progress", "--device", "cpu"]
KILL_ATTEMPTS = 3


# ---------------------------------------------------------------- helpers
def child_env() -> dict[str, str]:
    env = dict(os.environ)  # EDGEKD_TARGETS unchanged
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.update(OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
    return env


def cmd(*args) -> list[str]:
    return [sys.executable, "-m", "edgekd.cli", *map(str, args)]


def edgekd(cwd: Path, *args, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(*args), cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=timeout)


def show(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stderr\n{proc.stderr[-3000:]}\n--- stdout\n{proc.stdout[-1500:]}"


def err_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def load_pt(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def temp_files(folder: Path) -> list[str]:
    """Temporaries of atomic_path (.NAME.*.tmp) and set_latest (.latest.*) under `folder`."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*"))


def assert_same_weights(a: Path, b: Path) -> None:
    import torch

    sa, sb = load_pt(a)["model"], load_pt(b)["model"]
    assert sa.keys() == sb.keys(), f"{a.name}: different parameter names"
    for k in sa:
        assert torch.allclose(sa[k].float(), sb[k].float(), atol=1e-6, rtol=0), \
            f"{a.name}: '{k}' differs between the resumed and the uninterrupted run " \
            f"(max |diff| {float((sa[k].float() - sb[k].float()).abs().max()):.3g})"


def accuracies(run: Path) -> list[float]:
    """Every accuracy distill.json reports: teacher, control and student, overall and per seed."""
    d = json.loads((run / "distill.json").read_text())
    acc = d["accuracy"]
    per_seed = [r[k] for r in d["per_seed"] for k in ("student_alone", "student_alone_val", "student", "student_val")]
    return [acc["teacher"], acc["student_alone"]["mean"], acc["student"]["mean"], *per_seed]


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ref(tmp_path_factory) -> Path:
    """The uninterrupted run the resumed ones are compared with."""
    work = tmp_path_factory.mktemp("reference")
    proc = edgekd(work, "distill", "--run", work / "run", *ARGS)
    if proc.returncode != 0:
        pytest.fail(f"the uninterrupted reference run failed:\n{show(proc)}")
    return work / "run"


# ---------------------------------------------------------------- kill and resume
def _checkpoint_epoch(path: Path) -> int | None:
    try:
        return int(load_pt(path)["epoch"])
    except FileNotFoundError:
        return None


def _kill_mid_phase(work: Path, run: Path, phase_ckpt: str) -> int:
    """Start distill, SIGKILL it once `phase_ckpt` holds an epoch in [1, EPOCHS); the epoch
    the checkpoint held at the kill, or 0 when the run got past the phase first."""
    proc = subprocess.Popen(cmd("distill", "--run", run, *ARGS), cwd=work, env=child_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ckpt = run / "checkpoints" / phase_ckpt
    deadline = time.monotonic() + 300
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            epoch = _checkpoint_epoch(ckpt)
            if epoch is not None and 1 <= epoch < EPOCHS:
                break
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)  # mid-phase, or on a timeout or an error here: never leave it running
        _, err = proc.communicate(timeout=60)
    if proc.returncode != -signal.SIGKILL:
        assert proc.returncode == 0, f"distill failed before it could be killed ({proc.returncode}):\n{err[-3000:]}"
        return 0
    epoch = _checkpoint_epoch(ckpt)  # what survived the kill (the child may have written once more)
    return epoch if epoch is not None and 1 <= epoch < EPOCHS and not (run / "student.pt").exists() else 0


@pytest.mark.integration
@pytest.mark.parametrize("phase_ckpt", ["alone-seed0.pt", "kd-seed0.pt"], ids=["kill-in-control", "kill-in-kd"])
def test_sigkill_mid_phase_then_resume_matches_an_uninterrupted_run(ref: Path, tmp_path: Path, phase_ckpt: str) -> None:
    for attempt in range(KILL_ATTEMPTS):
        work = tmp_path / f"attempt{attempt}"
        work.mkdir()
        run = work / "run"
        killed_at = _kill_mid_phase(work, run, phase_ckpt)
        if killed_at:
            break
    else:
        pytest.fail(f"in {KILL_ATTEMPTS} attempts the run finished its {phase_ckpt} phase before it could be "
                    f"killed; raise EPOCHS so a phase lasts longer")

    # Atomic writes: whatever the kill interrupted, every .pt under the run is whole.
    pts = sorted(run.rglob("*.pt"))
    assert pts, "nothing was written before the kill"
    for p in pts:
        state = load_pt(p)
        assert isinstance(state, dict) and "kind" in state, p
    for j in run.rglob("*.json"):
        json.loads(j.read_text())  # whole JSON too
    assert not (run / "student.pt").exists() and not (run / "distill.json").exists()
    left_by_kill = set(temp_files(run))  # a kill that lands inside a write may leave its temporary

    proc = edgekd(work, "distill", "--run", run, *ARGS, "--resume")
    assert proc.returncode == 0, show(proc)

    for name in ("student.pt", "student_alone.pt", "teacher.pt"):
        assert_same_weights(run / name, ref / name)
    assert accuracies(run) == pytest.approx(accuracies(ref), abs=1e-6)
    history = load_pt(run / "checkpoints" / phase_ckpt)["history"]
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1)), "the resumed phase lost or repeated epochs"
    new = set(temp_files(run)) - left_by_kill
    assert not new, f"the resumed run left temporary files: {sorted(new)}"
    assert (work / "artifacts" / "latest").resolve() == run.resolve()


def test_resume_removes_temporaries_a_kill_left_behind(ref: Path, tmp_path: Path, edgekd_main, monkeypatch) -> None:
    run = shutil.copytree(ref, tmp_path / "run")
    half = (ref / "checkpoints" / "kd-seed0.pt").read_bytes()
    # What a kill inside artifacts.save_torch / write_json leaves: a half-written temporary.
    (run / "checkpoints" / ".kd-seed0.pt.k1ll3d.tmp").write_bytes(half[: len(half) // 2])
    (run / ".distill.json.k1ll3d.tmp").write_text('{"half":')
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, *ARGS, "--resume")
    assert r.code == 0, r.err
    assert temp_files(run) == []


def test_resume_of_a_finished_run_changes_no_weights(ref: Path, tmp_path: Path, edgekd_main, monkeypatch) -> None:
    run = shutil.copytree(ref, tmp_path / "run")
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, *ARGS, "--resume")
    assert r.code == 0, r.err
    for name in ("student.pt", "student_alone.pt", "teacher.pt"):
        assert_same_weights(run / name, ref / name)
    assert accuracies(run) == pytest.approx(accuracies(ref), abs=1e-6)


def test_resume_with_another_student_is_bad_input(ref: Path, tmp_path: Path, edgekd_main, monkeypatch) -> None:
    run = shutil.copytree(ref, tmp_path / "run")
    args = [a if a != "tiny-cnn" else "small-cnn" for a in ARGS]
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, *args, "--resume")  # today: RuntimeError out of main()
    assert r.code == 2, r.err
    assert "Traceback" not in r.err and len(r.err_lines) == 1, r.err
    assert "student" in r.err


def test_resume_with_fewer_epochs_than_the_checkpoints_is_refused(ref: Path, tmp_path: Path, edgekd_main,
                                                                   monkeypatch) -> None:
    run = shutil.copytree(ref, tmp_path / "run")
    args = [a if a != str(EPOCHS) else "5" for a in ARGS]
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, *args, "--resume")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and "--epochs" in r.err, r.err
    assert json.loads((run / "distill.json").read_text())["epochs"] == EPOCHS


# ---------------------------------------------------------------- checkpoints
def test_every_checkpoint_of_a_run_loads_with_weights_only(ref: Path) -> None:
    pts = sorted(ref.rglob("*.pt"))
    names = {str(p.relative_to(ref)) for p in pts}
    assert {"teacher.pt", "student.pt", "student_alone.pt", "checkpoints/teacher.pt",
            "checkpoints/alone-seed0.pt", "checkpoints/kd-seed0.pt"} <= names
    for p in pts:
        state = load_pt(p)
        assert state["kind"] in ("teacher", "student", "checkpoint"), p
        if state["kind"] == "checkpoint":
            assert state["epoch"] == (2 if p.name == "teacher.pt" else EPOCHS)


def _not_a_checkpoint(path: Path, kind: str) -> Path:
    import pickle

    import numpy as np
    import torch

    if kind == "random-bytes":
        path.write_bytes(np.random.default_rng(1).bytes(2048))
    elif kind == "pickle-object":
        # Unpickling this would create the marker file: the safe loader must refuse it, never run it.
        path.write_bytes(pickle.dumps(_Touch(path.with_suffix(".pwned"))))
    elif kind == "torch-object":
        torch.save({"kind": "teacher", "payload": _Touch(path.with_suffix(".pwned"))}, path)
    elif kind == "text":
        path.write_text("teacher weights: see the wiki\n")
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind == "state-dict":
        torch.save({"w": torch.zeros(3)}, path)  # a real torch file, but not an edgekd checkpoint
    return path


class _Touch:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["random-bytes", "pickle-object", "torch-object", "text", "empty", "state-dict"])
def test_a_teacher_that_is_not_a_checkpoint_is_refused_before_any_run_exists(
        kind: str, tmp_path: Path, edgekd_main, monkeypatch) -> None:
    bad = _not_a_checkpoint(tmp_path / f"{kind}.pt", kind)
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", *[a for a in TINY if a not in ("--teacher", "cnn-small")],
                    "--teacher", bad, "--run", tmp_path / "newrun")
    assert r.code == 2, r.err
    assert len(r.err_lines) == 1 and "Traceback" not in r.err, r.err
    assert f"{bad}: not an edgekd checkpoint" in r.err_lines[0]
    assert not (tmp_path / "newrun").exists() and not (tmp_path / "artifacts").exists(), "a run folder was made"
    assert not bad.with_suffix(".pwned").exists(), "the loader executed a pickle"


# ---------------------------------------------------------------- manifest and verify
@pytest.fixture(scope="module")
def exported(ref: Path, tmp_path_factory) -> Path:
    """A copy of the reference run exported with an int8 variant (a profile that does not
    fail int8 on a near-tied student), so the manifest names every kind of file."""
    work = tmp_path_factory.mktemp("exported")
    run = shutil.copytree(ref, work / "run")
    text = (REPO / "targets" / "cpu-arm.toml").read_text()
    assert "int8_min_top1_agreement = 0.99" in text
    (work / "cpu-arm.toml").write_text(text.replace("int8_min_top1_agreement = 0.99", "int8_min_top1_agreement = 0.0"))
    import edgekd  # in-process (a child process would add only its start-up): export writes nothing outside `run`

    edgekd.export(target=work / "cpu-arm.toml", run=run, quantize="int8")
    return run


def _named(node, found: list) -> list:
    if isinstance(node, dict):
        if "path" in node and "sha256" in node:
            found.append(node)
        for v in node.values():
            _named(v, found)
    elif isinstance(node, list):
        for v in node:
            _named(v, found)
    return found


def test_the_manifest_names_only_whole_existing_files_and_verify_checks_each(exported: Path, tmp_path: Path,
                                                                            edgekd_main) -> None:
    out = exported / "cpu-arm"
    named = _named(json.loads((out / "manifest.json").read_text()), [])
    paths = sorted(e["path"] for e in named)
    assert {"model.onnx", "golden.npz", "model.int8.onnx"} <= set(paths)
    for e in named:
        f = out / e["path"]
        assert f.is_file(), f"the manifest names a missing file: {e['path']}"
        assert sha(f) == e["sha256"] and f.stat().st_size == e["bytes"], e["path"]
    assert temp_files(exported) == []

    r = edgekd_main("verify", exported, "--json")
    assert r.code == 0, r.err
    assert sorted(json.loads(r.out)["checked"]) == sorted(f"cpu-arm/{p}" for p in paths)


def test_distill_over_an_exported_run_leaves_no_stale_export(exported: Path, tmp_path: Path, edgekd_main,
                                                             monkeypatch) -> None:
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgekd.models.checkpoints import load_student

    run = shutil.copytree(exported, tmp_path / "run")
    before = {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()}
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, "--epochs", "2", *ARGS[2:])
    if r.code == 2:  # refusing to overwrite an existing run is one good answer
        after = {str(p.relative_to(run)): sha(p) for p in run.rglob("*") if p.is_file()}
        assert len(r.err_lines) == 1 and after == before
        return
    assert r.code == 0, r.err
    if not (run / "cpu-arm" / "manifest.json").exists():
        return  # the stale export was removed: the other good answer
    # Otherwise the export left in the run must still be the export of the run's student.
    with np.load(run / "cpu-arm" / "golden.npz") as z:
        x = z["inputs"]
    onnx_out = ort.InferenceSession(str(run / "cpu-arm" / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    with torch.no_grad():
        torch_out = load_student(run)[0](torch.from_numpy(x)).numpy()
    assert np.allclose(onnx_out, torch_out, atol=1e-4), "cpu-arm/model.onnx is not the run's student.pt"


@pytest.mark.parametrize("damage", ["tamper", "delete"])
def test_verify_fails_on_every_named_file(exported: Path, tmp_path: Path, damage: str, edgekd_main) -> None:
    named = sorted(e["path"] for e in _named(json.loads((exported / "cpu-arm" / "manifest.json").read_text()), []))
    for i, name in enumerate(named):
        run = shutil.copytree(exported, tmp_path / f"run{i}")
        f = run / "cpu-arm" / name
        if damage == "tamper":
            data = bytearray(f.read_bytes())
            data[len(data) // 2] ^= 0xFF
            f.write_bytes(bytes(data))
        else:
            f.unlink()
        r = edgekd_main("verify", run)
        assert r.code == 1, f"{damage} {name}: {r}"
        assert len(r.err_lines) == 1 and "Traceback" not in r.err, r
        assert f"cpu-arm/{name}" in r.err and ("sha256 differs" if damage == "tamper" else "missing") in r.err


# ---------------------------------------------------------------- concurrency
@pytest.mark.integration
def test_two_runs_started_at_once_do_not_clobber_each_other(tmp_path: Path) -> None:
    base = ["--epochs", "1", "--teacher-epochs", "1", "--teacher", "cnn-small", "--student", "tiny-cnn",
            "--no-progress"]
    procs = {seeds: subprocess.Popen(cmd("distill", *base, "--seeds", seeds, "--json"), cwd=tmp_path, env=child_env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seeds in ("1", "2")}
    # While they run, `latest` is absent or names a finished run: never dangling, never half a file.
    latest = tmp_path / "artifacts" / "latest"
    seen = set()
    while any(p.poll() is None for p in procs.values()):
        if latest.is_symlink() or latest.exists():
            assert latest.is_symlink() and (latest / "distill.json").is_file(), "latest is not a finished run"
            seen.add(latest.resolve())
        time.sleep(0.01)
    done = {seeds: p.communicate(timeout=600) + (p.returncode,) for seeds, p in procs.items()}
    for seeds, (out, err, rc) in done.items():
        assert rc == 0, f"--seeds {seeds}: exit {rc}\n{err[-3000:]}"

    runs = {seeds: Path(json.loads(out)["run"]) for seeds, (out, _, _) in done.items()}
    assert runs["1"] != runs["2"], "both runs wrote into the same folder"
    folders = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert folders == sorted([runs["1"].name, runs["2"].name, "latest"])
    for seeds, run in runs.items():
        run = tmp_path / run if not run.is_absolute() else run
        summary = json.loads((run / "distill.json").read_text())
        config = json.loads((run / "config.json").read_text())
        assert summary["seeds"] == config["seeds"] == int(seeds), f"{run.name} holds the other run's config"
        assert len(summary["per_seed"]) == int(seeds)
        for p in run.rglob("*.pt"):
            assert "kind" in load_pt(p), p
        assert temp_files(run) == []
    assert latest.is_symlink(), "artifacts/latest must be a symlink (swapped by rename)"
    both = {(tmp_path / r).resolve() for r in runs.values()}
    assert latest.resolve() in both and seen <= both
    assert (latest / "distill.json").is_file()
    assert temp_files(tmp_path / "artifacts") == []


def _swap_latest(root: str, runs: list[str], n: int, seed: int) -> None:
    import random

    from edgekd import artifacts

    rng = random.Random(seed)
    for _ in range(n):
        artifacts.set_latest(Path(rng.choice(runs)), root=Path(root))


def _read_latest(root: str, stop, result) -> None:
    from edgekd import artifacts

    reads, errors = 0, []
    while not stop.is_set() or reads < 50:
        try:
            run = artifacts.resolve_run(None, root=Path(root))
            if not (run / "distill.json").is_file():
                errors.append(f"incomplete run folder {run}")
        except Exception as e:  # anything at all is a failure of the atomic swap
            errors.append(f"{type(e).__name__}: {e}")
        reads += 1
    result.put((reads, errors[:5], len(errors)))


def test_set_latest_swaps_are_atomic_under_concurrent_readers(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    runs = []
    for i in range(3):
        run = root / f"run{i}"
        run.mkdir(parents=True)
        (run / "distill.json").write_text("{}")
        runs.append(str(run))
    from edgekd import artifacts

    artifacts.set_latest(Path(runs[0]), root=root)
    ctx = multiprocessing.get_context("spawn")  # no state shared with pytest's process
    stop, result = ctx.Event(), ctx.Queue()
    reader = ctx.Process(target=_read_latest, args=(str(root), stop, result))
    reader.start()
    writers = [ctx.Process(target=_swap_latest, args=(str(root), runs, 50, seed)) for seed in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
        assert w.exitcode == 0, "a set_latest writer failed"
    stop.set()
    reads, errors, n_errors = result.get(timeout=120)
    reader.join(timeout=30)
    assert n_errors == 0, f"{n_errors} of {reads} reads failed, e.g. {errors}"
    assert (root / "latest").is_symlink() and str((root / "latest").resolve()) in runs
    assert sorted(p.name for p in root.iterdir()) == ["latest", "run0", "run1", "run2"], "temporary links left"


# ---------------------------------------------------------------- NaN
def test_a_nan_loss_stops_with_exit_1_naming_epoch_step_and_term(tmp_path: Path, edgekd_main, monkeypatch) -> None:
    # T = 1e30: the soft term is KL(...) * T², and T² overflows float32 to inf.
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", run, "--epochs", "3", *TINY[2:], "--temperature", "1e30",
                    "--method", "soft:0.7", "--method", "ce:0.3")
    assert r.code == 1, r.err
    lines = r.err_lines
    assert len(lines) == 1 and "Traceback" not in r.err, r.err
    line = lines[0]
    assert "loss term 'soft'" in line and "epoch 1" in line and "step " in line, line
    assert "nan" in line.lower() or "inf" in line.lower(), line
    # The control finished before the distilled phase failed: its checkpoint is whole.
    alone = load_pt(run / "checkpoints" / "alone-seed0.pt")
    assert alone["kind"] == "checkpoint" and alone["epoch"] == 3
    assert load_pt(run / "checkpoints" / "teacher.pt")["epoch"] == 1
    assert not (run / "student.pt").exists(), "a student from a diverged run was saved"
    assert not (tmp_path / "artifacts" / "latest").exists(), "latest moved to a failed run"
    assert temp_files(run) == []


def test_a_nan_at_epoch_2_keeps_the_epoch_1_checkpoint(tmp_path: Path) -> None:
    import torch

    from edgekd.errors import CheckFailed
    from edgekd.models import create_student
    from edgekd.models.checkpoints import load_checkpoint
    from edgekd.train.datasets import Indexed
    from edgekd.train.loop import Phase, fit
    from edgekd.train.losses import Objective, build_objective

    torch.set_num_threads(1)
    steps_per_epoch = 4
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16 * steps_per_epoch, 1, 8, 8, generator=g)
    y = torch.randint(0, 10, (16 * steps_per_epoch,), generator=g)
    ds = torch.utils.data.TensorDataset(x, y)

    class NanAt(Objective):
        """Cross-entropy whose term 'ce' turns NaN at training call `at` (call 0 is fit's dry batch)."""

        def __init__(self, at: int):
            super().__init__(list(zip(base.names, base.weights, base.losses)))
            self.calls, self.at = 0, at

        def terms(self, b):
            out = super().terms(b)
            self.calls += 1
            if self.calls - 1 == self.at:
                out["ce"] = out["ce"] * float("nan")
            return out

    base = build_objective(["ce"])
    model = create_student("tiny-cnn", in_channels=1, num_classes=10)
    ckpt = tmp_path / "ckpt.pt"
    # Epoch 2, step 3: dry batch + 4 steps of epoch 1 + 2 good steps of epoch 2, then NaN.
    ph = Phase("nan", model, NanAt(at=steps_per_epoch + 3), Indexed(ds), ds, epochs=3, seed=0, batch_size=16)
    with pytest.raises(CheckFailed) as e:
        fit(ph, ckpt=ckpt, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "'ce'" in msg and "epoch 2" in msg and "step 3" in msg, msg

    state = load_checkpoint(ckpt)
    assert load_pt(ckpt)["epoch"] == state["epoch"] == 1
    assert [h["epoch"] for h in state["history"]] == [1]
    fresh = create_student("tiny-cnn", in_channels=1, num_classes=10)
    fresh.load_state_dict(state["model"])
    assert all(torch.isfinite(p).all() for p in fresh.state_dict().values())
    assert temp_files(tmp_path) == []

    # And the run continues from it once the loss is sane again.
    ph2 = Phase("nan", create_student("tiny-cnn", in_channels=1, num_classes=10), NanAt(at=-1), Indexed(ds), ds,
                epochs=3, seed=0, batch_size=16)
    fit(ph2, ckpt=ckpt, resume=True, progress=False)
    assert [h["epoch"] for h in load_pt(ckpt)["history"]] == [1, 2, 3]
