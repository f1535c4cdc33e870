"""Run folders, atomic writes, manifest paths and `verify`.

Every file goes to a temporary name in its final folder, is fsynced, then
renamed over the target, so a killed command never leaves half a file.
`artifacts/latest` is a symlink swapped the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from edgekd import defaults
from edgekd.errors import BadInput

MANIFEST = "manifest.json"


# ---------------------------------------------------------------- atomic writes
@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success fsync it and rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o644)  # mkstemp makes 0600; artifacts are meant to be shared
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def is_writer() -> bool:
    """Under torch.distributed only rank 0 writes artifacts."""
    from edgekd.ranks import is_main

    return is_main()


def write_bytes(path: str | Path, data: bytes) -> Path:
    if not is_writer():
        return Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def replace_dir(new: Path, dest: Path) -> None:
    """Put the finished folder `new` in place of `dest` (renames only; the old one is removed after),
    so a reader never sees half a folder: what setups of a runtime or the qemu root build aside."""
    import shutil

    old = dest.parent / f".{dest.name}.old-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(new, dest)
    shutil.rmtree(old, ignore_errors=True)


def write_json(path: str | Path, obj: Any) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n").encode())


def _jsonable(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"not JSON-serialisable: {type(o).__name__}")


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    try:
        obj = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise BadInput(f"{path}: expected a JSON object, got {type(obj).__name__}")
    return obj


def save_npz(path: str | Path, **arrays: Any) -> Path:
    import numpy as np

    if not is_writer():
        return Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return Path(path)


def save_torch(path: str | Path, obj: Any) -> Path:
    import torch

    if not is_writer():
        return Path(path)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_entry(path: Path, base: Path) -> dict[str, Any]:
    return {"path": str(path.relative_to(base)), "sha256": sha256(path), "bytes": path.stat().st_size}


# ---------------------------------------------------------------- run folders
def new_run_id() -> str:
    # Time first so runs sort; random suffix so two runs started in the same second differ.
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def _existing_run_problem(path: Path) -> str | None:
    if not path.exists():
        return None
    if not path.is_dir():
        return f"--run {path}: exists and is not a folder"
    if any(path.iterdir()):
        return f"--run {path}: already holds a run; continue it with --resume or pick a new folder"
    return None


def create_run(run: str | Path | None = None, *, root: Path = defaults.ARTIFACTS, resume: bool = False) -> Path:
    """Make a fresh run folder, or take an explicit `run` path: a new or empty one, or with
    `resume` the folder of an interrupted run (whose stale temporary files are removed)."""
    from edgekd.ranks import broadcast

    path = broadcast(root / new_run_id()) if run is None else Path(run)  # random name: rank 0's
    # Rank 0 judges the folder before anyone writes and tells the others, so a rank that looks
    # after rank 0 has written config.json does not mistake this run for an earlier one.
    problem = broadcast(_existing_run_problem(path) if run is not None and not resume and is_writer() else None)
    if problem:
        raise BadInput(problem)
    if not is_writer():
        return path
    try:
        path.mkdir(parents=True, exist_ok=run is not None)
    except OSError as e:
        raise BadInput(f"--run {path}: cannot create the folder ({e.strerror})") from None
    if resume:
        for stale in path.rglob(".*.tmp"):  # left by a write that was killed mid-way
            stale.unlink(missing_ok=True)
    return path


def set_latest(run_dir: Path, *, root: Path = defaults.ARTIFACTS) -> None:
    """Point `<root>/latest` at `run_dir`, atomically (symlink swapped by rename)."""
    if not is_writer():
        return
    link = root / "latest"
    tmp = root / f".latest.{secrets.token_hex(4)}"
    root.mkdir(parents=True, exist_ok=True)
    target = os.path.relpath(run_dir.resolve(), root.resolve())
    try:
        os.symlink(target, tmp)
        os.replace(tmp, link)
    finally:
        if tmp.is_symlink():
            tmp.unlink()


def resolve_run(run: str | Path | None, *, root: Path = defaults.ARTIFACTS) -> Path:
    """The run folder named by `--run`, or the one `artifacts/latest` points at."""
    if run is not None:
        path = Path(run)
        if not path.is_dir():
            raise BadInput(f"{path}: run folder not found")
        return path
    link = root / "latest"
    if link.is_symlink() or link.is_dir():
        path = link.resolve()
    elif link.is_file():
        path = root / link.read_text().strip()
    else:
        raise BadInput(f"{link}: no latest run; run `edgekd distill` first or pass --run DIR")
    if not path.is_dir():
        raise BadInput(f"{link}: points at {path}, which does not exist; pass --run DIR")
    return path


# ---------------------------------------------------------------- manifest
def manifest_path(run_dir: Path, target: str) -> Path:
    return run_dir / target / MANIFEST
