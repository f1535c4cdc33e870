"""Distributed distillation on 2 CPU processes (gloo) against 1 process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration  # every test starts torchrun or the edgekd command
TINY = ["--epochs", "4", "--seeds", "1", "--student", "tiny-cnn", "--no-progress", "--json"]


def _edgekd(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def test_first_step_gradients_match_between_1_and_2_processes(tmp_path: Path) -> None:
    """Same global batch and seed: DDP's averaged gradients equal one process's (BatchNorm over the global batch)."""
    probe = ROOT / "tests" / "dist_probe.py"
    one, two = tmp_path / "g1.pt", tmp_path / "g2.pt"
    subprocess.run([sys.executable, str(probe), str(one)], check=True, cwd=tmp_path, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(probe), str(two)], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    g1, g2 = torch.load(one), torch.load(two)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for name in g1:
        assert torch.allclose(g1[name], g2[name], atol=1e-6, rtol=1e-4), (name, (g1[name] - g2[name]).abs().max())
    assert any(g.abs().max() > 1e-4 for g in g1.values())  # a real gradient, not zeros on both sides


@pytest.fixture(scope="module")
def teacher_pt(tiny_run) -> Path:
    """A trained cnn-small teacher: the session's shared tiny run's (read only)."""
    return tiny_run.run / "teacher.pt"


def test_two_processes_reach_the_accuracy_of_one(tmp_path: Path, teacher_pt: Path) -> None:
    r1 = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "one", *TINY)
    r2 = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "two", "--nproc", "2", *TINY)
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    s1 = json.loads((tmp_path / "one" / "distill.json").read_text())
    s2 = json.loads((tmp_path / "two" / "distill.json").read_text())
    a1, a2 = s1["accuracy"]["student"]["mean"], s2["accuracy"]["student"]["mean"]
    assert abs(a1 - a2) <= 0.01, (a1, a2)
    assert s1["accuracy"]["teacher"] == s2["accuracy"]["teacher"]  # the same loaded teacher, reduced over shards
    # only rank 0 wrote: one run folder, one distill.json, one table on stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir() and p.name != "artifacts") == ["one", "two"]
    assert r2.stdout.count('"gap_closed"') == 1


def test_online_dml_on_two_processes_matches_one(tmp_path: Path, teacher_pt: Path) -> None:
    """--online --nproc 2: every peer is DDP-wrapped, so the peers stay in step across ranks and the
    two-process run computes what one process computes (same global batch, global-batch BatchNorm)."""
    args = ["distill", "--teacher", str(teacher_pt), "--online", "--epochs", "3", "--seeds", "1",
            "--student", "tiny-cnn", "--no-progress", "--json"]
    r1 = _edgekd(tmp_path, *args, "--run", "one")
    r2 = _edgekd(tmp_path, *args, "--run", "two", "--nproc", "2")
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    s1 = json.loads((tmp_path / "one" / "distill.json").read_text())
    s2 = json.loads((tmp_path / "two" / "distill.json").read_text())
    p1, p2 = s1["per_seed"][0]["peers"], s2["per_seed"][0]["peers"]
    assert len(p1) == len(p2) == 2
    # 3 epochs of chaotic early training amplify float reduction order; the exact check is the probe test below
    assert max(abs(a - b) for a, b in zip(p1, p2)) <= 0.05, (p1, p2)
    lines = [json.loads(x) for x in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    dml = [(r["phase"], r["epoch"]) for r in lines if r["phase"].startswith("dml/")]
    assert dml == [(f"dml/seed0/peer{k}", e) for e in (1, 2, 3) for k in (1, 2)]  # rank 0 alone wrote, once


def test_dml_peers_stay_identical_across_ranks_and_equal_one_process(tmp_path: Path) -> None:
    probe = ROOT / "tests" / "dml_probe.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(probe), str(tmp_path / "one")], check=True, cwd=tmp_path, env=env,
                   capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(probe), str(tmp_path / "two")], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    one = torch.load(tmp_path / "one.rank0.pt")
    r0, r1 = torch.load(tmp_path / "two.rank0.pt"), torch.load(tmp_path / "two.rank1.pt")
    init = {}
    torch.manual_seed(0)
    from edgekd.models import create_student

    init = create_student("small-cnn", in_channels=1, num_classes=10).state_dict()
    for k in range(2):
        for name, w in one[k].items():
            assert torch.equal(r0[k][name], r1[k][name]), (k, name)  # the ranks hold the very same peer
            assert torch.allclose(w.float(), r0[k][name].float(), atol=1e-5, rtol=1e-4), (k, name)  # one AdamW step
    assert any(not torch.equal(init[n], one[0][n]) for n in init)  # the peers did train


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@pytest.mark.gpu
def test_the_pipeline_trains_on_cuda(tmp_path: Path, teacher_pt: Path) -> None:
    if _cuda_count() < 1:
        pytest.skip("no CUDA device: torch.cuda.is_available() is False on this machine")
    r = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "gpu", "--device", "cuda", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "gpu" / "distill.json").read_text())
    assert s["training"]["device"].startswith("cuda") and s["training"]["precision"] in ("bfloat16", "float16")
    assert s["accuracy"]["student"]["mean"] > 0.5
    e = _edgekd(tmp_path, "export", "--run", "gpu", "--target", "cpu-arm")  # export and parity on CPU
    assert e.returncode == 0, e.stderr[-2000:]


@pytest.mark.gpu
def test_two_ranks_on_two_gpus_with_nccl(tmp_path: Path, teacher_pt: Path) -> None:
    if _cuda_count() < 2:
        pytest.skip(f"needs 2 CUDA devices for NCCL (one per rank); this machine has {_cuda_count()}")
    r = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "nccl", "--device", "cuda",
                "--nproc", "2", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "nccl" / "distill.json").read_text())
    assert s["training"]["world_size"] == 2 and s["training"]["backend"] == "nccl"
