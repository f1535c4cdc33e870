"""edgekd.artifacts: atomic writes, run folders, the `latest` pointer; verify_run (edgekd.run.verify)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgekd import __version__, artifacts
from edgekd.errors import BadInput, CheckFailed
from edgekd.run.manifest import amend, load_manifest
from edgekd.run.verify import verify_run


def leftovers(folder: Path) -> list[str]:
    """Temporary files atomic_path / set_latest would leave behind."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------- atomic writes
def test_atomic_path_writes_and_leaves_no_temp_file(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "model.onnx"  # the parent is created
    with artifacts.atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        assert not dest.exists(), "the final name must not appear before the write is complete"
        tmp.write_bytes(b"new")
    assert dest.read_bytes() == b"new"
    assert leftovers(dest.parent) == []
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644


def test_atomic_path_replaces_an_existing_file(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with artifacts.atomic_path(dest) as tmp:
        tmp.write_bytes(b"new")
        assert dest.read_bytes() == b"old", "readers see the old file until the rename"
    assert dest.read_bytes() == b"new"
    assert leftovers(tmp_path) == []


def test_atomic_path_on_exception_keeps_the_old_file_and_no_temp(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="killed"):
        with artifacts.atomic_path(dest) as tmp:
            tmp.write_bytes(b"half a mod")
            raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_atomic_path_on_exception_creates_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "f.bin"
    with pytest.raises(KeyboardInterrupt):
        with artifacts.atomic_path(dest) as tmp:
            tmp.write_bytes(b"partial")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_and_read_json(tmp_path: Path) -> None:
    path = artifacts.write_json(tmp_path / "m.json", {"a": np.float32(0.5), "b": np.arange(3), "p": Path("x")})
    assert artifacts.read_json(path) == {"a": 0.5, "b": [0, 1, 2], "p": "x"}
    assert leftovers(tmp_path) == []


def test_write_json_with_an_unserialisable_value_keeps_the_old_file(tmp_path: Path) -> None:
    path = artifacts.write_json(tmp_path / "m.json", {"ok": 1})
    with pytest.raises(TypeError):
        artifacts.write_json(path, {"bad": object()})
    assert artifacts.read_json(path) == {"ok": 1}
    assert leftovers(tmp_path) == []


def test_read_json_bad_files(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        artifacts.read_json(tmp_path / "absent.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON") as e:
        artifacts.read_json(bad)
    assert str(bad) in str(e.value)
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(BadInput, match="not valid JSON"):
        artifacts.read_json(binary)


def test_save_npz_round_trips(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    path = artifacts.save_npz(tmp_path / "golden.npz", inputs=x, outputs=x[:, 0, 0, :2])
    with np.load(path) as z:
        np.testing.assert_array_equal(z["inputs"], x)
        assert z["outputs"].shape == (4, 2)
    assert leftovers(tmp_path) == []


def test_sha256_and_file_entry(tmp_path: Path) -> None:
    f = tmp_path / "t" / "model.onnx"
    f.parent.mkdir()
    f.write_bytes(b"abc" * 1000)
    entry = artifacts.file_entry(f, tmp_path / "t")
    assert entry == {"path": "model.onnx", "sha256": hashlib.sha256(b"abc" * 1000).hexdigest(), "bytes": 3000}


# ---------------------------------------------------------------- run folders and `latest`
def test_run_ids_are_unique_and_sort_by_time() -> None:
    ids = [artifacts.new_run_id() for _ in range(50)]
    assert len(set(ids)) == 50
    assert all(i[:15] == ids[0][:15] or i[:15] >= ids[0][:15] for i in ids)


def test_create_run_new_and_explicit(tmp_path: Path) -> None:
    a = artifacts.create_run(root=tmp_path / "artifacts")
    b = artifacts.create_run(root=tmp_path / "artifacts")
    assert a != b and a.is_dir() and b.is_dir() and a.parent == tmp_path / "artifacts"
    explicit = artifacts.create_run(tmp_path / "mine")
    assert explicit == tmp_path / "mine" and explicit.is_dir()
    assert artifacts.create_run(tmp_path / "mine") == explicit  # an explicit folder may be reused


def test_set_latest_is_a_relative_symlink_swapped_atomically(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    a, b = artifacts.create_run(root=root), artifacts.create_run(root=root)
    artifacts.set_latest(a, root=root)
    link = root / "latest"
    assert link.is_symlink() and os.readlink(link) == a.name  # relative: the folder can move
    assert artifacts.resolve_run(None, root=root) == a.resolve()
    artifacts.set_latest(b, root=root)
    assert link.is_symlink() and link.resolve() == b.resolve()
    assert artifacts.resolve_run(None, root=root) == b.resolve()
    assert leftovers(root) == []
    # the folder moved elsewhere still resolves
    moved = tmp_path / "moved"
    root.rename(moved)
    assert artifacts.resolve_run(None, root=moved) == (moved / b.name).resolve()


def test_set_latest_failure_keeps_the_old_pointer(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "artifacts"
    a, b = artifacts.create_run(root=root), artifacts.create_run(root=root)
    artifacts.set_latest(a, root=root)

    def fail(*_a, **_k):
        raise OSError("disk full")

    monkeypatch.setattr(artifacts.os, "replace", fail)
    with pytest.raises(OSError):
        artifacts.set_latest(b, root=root)
    monkeypatch.undo()
    assert (root / "latest").resolve() == a.resolve()


def test_set_latest_failure_leaves_no_temp_link(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "artifacts"
    a, b = artifacts.create_run(root=root), artifacts.create_run(root=root)
    artifacts.set_latest(a, root=root)
    monkeypatch.setattr(artifacts.os, "replace", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError):
        artifacts.set_latest(b, root=root)
    monkeypatch.undo()
    assert leftovers(root) == []


def test_resolve_run_errors(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="run folder not found") as e:
        artifacts.resolve_run(tmp_path / "nope")
    assert "nope" in str(e.value)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BadInput, match="run folder not found"):
        artifacts.resolve_run(tmp_path / "file")
    root = tmp_path / "artifacts"
    root.mkdir()
    with pytest.raises(BadInput, match="no latest run.*edgekd distill"):
        artifacts.resolve_run(None, root=root)
    os.symlink("gone", root / "latest")  # dangling
    with pytest.raises(BadInput, match="does not exist"):
        artifacts.resolve_run(None, root=root)


def test_resolve_run_reads_a_one_line_latest_file(tmp_path: Path) -> None:
    root = tmp_path / "artifacts"
    run = artifacts.create_run(root=root)
    (root / "latest").write_text(run.name + "\n")
    assert artifacts.resolve_run(None, root=root) == run
    assert artifacts.resolve_run(run) == run


def test_resolve_run_defaults_to_artifacts_in_the_working_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = artifacts.create_run(root=Path("artifacts"))
    artifacts.set_latest(run)
    assert artifacts.resolve_run(None).resolve() == run.resolve()


# ---------------------------------------------------------------- manifest and verify
def make_run(tmp_path: Path) -> Path:
    """A run with one target folder whose manifest names two files (nested, as export writes them)."""
    run = tmp_path / "run"
    out = run / "cpu-arm"
    out.mkdir(parents=True)
    (out / "model.onnx").write_bytes(b"onnx bytes")
    (out / "model.int8.onnx").write_bytes(b"int8 bytes")
    parity = {"max_abs_diff": 1e-6, "top1_agreement": 1.0, "passed": True}
    amend(artifacts.manifest_path(run, "cpu-arm"), new=True, edgekd_version=__version__, target="cpu-arm",
          model={**artifacts.file_entry(out / "model.onnx", out), "opset": 17, "params": 10, "inputs": [],
                 "outputs": [], "preprocessing": {}, "labels": []},
          ops={"used": [], "unsupported": []}, parity=parity, recommended="fp32",
          accuracy={"teacher": 0.9, "student_alone": 0.8, "student": 0.85, "student_onnx": 0.85},
          variants={"int8": {**artifacts.file_entry(out / "model.int8.onnx", out), "parity": parity}})
    return run


def test_verify_passes_on_a_good_run(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    result = verify_run(run)
    assert result["passed"] is True
    assert sorted(result["checked"]) == ["cpu-arm/model.int8.onnx", "cpu-arm/model.onnx"]


def test_verify_fails_on_a_changed_file(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "cpu-arm" / "model.int8.onnx").write_bytes(b"int8 bytes, tampered")
    with pytest.raises(CheckFailed) as e:
        verify_run(run)
    msg = str(e.value)
    assert "cpu-arm/model.int8.onnx" in msg and "variants.int8" in msg and "sha256 differs" in msg
    assert "cpu-arm/model.onnx (" not in msg, "only the changed file is reported"


def test_verify_fails_on_a_deleted_file_and_lists_every_failure(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "cpu-arm" / "model.onnx").unlink()
    (run / "cpu-arm" / "model.int8.onnx").write_bytes(b"")
    with pytest.raises(CheckFailed) as e:
        verify_run(run)
    msg = str(e.value)
    assert "cpu-arm/model.onnx (model): missing" in msg
    assert "cpu-arm/model.int8.onnx (variants.int8): sha256 differs" in msg


def test_verify_without_manifest_is_bad_input(tmp_path: Path) -> None:
    (tmp_path / "run" / "cpu-arm").mkdir(parents=True)
    with pytest.raises(BadInput, match="no manifest.json"):
        verify_run(tmp_path / "run")
    with pytest.raises(BadInput, match="run folder not found"):
        verify_run(tmp_path / "absent")


def test_verify_corrupt_manifest_is_bad_input(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    (run / "cpu-arm" / "manifest.json").write_text("{ truncated")
    with pytest.raises(BadInput, match="manifest.json: not valid JSON"):
        verify_run(run)


def test_verify_reads_the_typed_manifest_a_missing_field_is_one_line(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    path = run / "cpu-arm" / "manifest.json"
    m = json.loads(path.read_text())
    del m["model"]["sha256"]
    path.write_text(json.dumps(m))
    with pytest.raises(BadInput, match=r"file .*cpu-arm/manifest.json: field 'model.sha256' missing"):
        verify_run(run)


@pytest.mark.parametrize("named", ["ABSOLUTE", "../../elsewhere.bin"])
def test_verify_refuses_paths_outside_the_run(tmp_path: Path, named: str) -> None:
    run = make_run(tmp_path)
    elsewhere = tmp_path / "elsewhere.bin"
    elsewhere.write_bytes(b"not part of the run")
    m = load_manifest(artifacts.manifest_path(run, "cpu-arm")).to_json()
    m["model"]["path"] = str(elsewhere) if named == "ABSOLUTE" else named
    m["model"]["sha256"] = artifacts.sha256(elsewhere)
    (run / "cpu-arm" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises((CheckFailed, BadInput), match="outside"):
        verify_run(run)
