"""`edgekd verify RUN`: hash every file the run's manifests name (read through the contract) against the
manifest, as a device-side loader would before trusting a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgekd.artifacts import MANIFEST, resolve_run, sha256
from edgekd.checks import Failure
from edgekd.errors import BadInput, VerifyFailed
from edgekd.run.manifest import load_manifest


def _named_files(manifest: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every {path, sha256} entry a manifest names, with where it sits."""
    found = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if "path" in node and "sha256" in node:
                found.append((where, node))
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else k)
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(manifest, "")
    return found


def verify_run(run: str | Path | None = None) -> dict[str, Any]:
    """Hash every file each manifest of the run names; VerifyFailed lists every mismatch."""
    run_dir = resolve_run(run)
    manifests = sorted(run_dir.glob(f"*/{MANIFEST}"))
    if not manifests:
        raise BadInput(f"{run_dir}: no manifest.json in any target folder; run `edgekd export` first")
    checked, failures = [], []
    for m in manifests:
        manifest = load_manifest(m).to_json()  # BadInput names the file and a missing or mistyped field
        for where, entry in _named_files(manifest):
            f = (m.parent / str(entry["path"])).resolve()
            if not f.is_relative_to(run_dir.resolve()):
                failures.append(Failure("verify", str(entry["path"]), "outside", "run folder",
                                        detail=f"{entry['path']} ({where}): outside the run folder"))
                continue
            rel = str(f.relative_to(run_dir.resolve()))
            if not f.is_file():
                failures.append(Failure("verify", rel, None, entry["sha256"], detail=f"{rel} ({where}): missing"))
            elif sha256(f) != entry["sha256"]:
                failures.append(Failure("verify", rel, sha256(f), entry["sha256"],
                                        detail=f"{rel} ({where}): sha256 differs from the manifest"))
            else:
                checked.append(rel)
    if failures:
        raise VerifyFailed(f"verify {run_dir}: " + "; ".join(map(str, failures)), failures=failures)
    return {"run": str(run_dir), "checked": checked, "passed": True}
