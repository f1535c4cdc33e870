"""Distributed distillation on 2 CPU processes (gloo) against 1 process."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--epochs", "4", "--seeds", "1", "--student", "tiny-cnn", "--no-progress", "--json", "--device", "cpu"]


def _edgekd(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "edgekd.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.mark.integration
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


@pytest.mark.integration
def test_two_processes_reach_the_accuracy_of_one(tmp_path: Path, teacher_pt: Path) -> None:
    # Hinton's KD: a per-sample loss, so 2 ranks optimise what 1 process does. The default (DIST) is not:
    # its intra-class term correlates over the batch, and under DDP each rank sees only its B/N rows.
    hinton = ["--method", "soft:0.7", "--method", "ce:0.3"]
    r1 = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "one", *TINY, *hinton)
    r2 = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "two", "--nproc", "2", *TINY, *hinton)
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


@pytest.mark.integration
def test_online_dml_on_two_processes_matches_one(tmp_path: Path, teacher_pt: Path) -> None:
    """--online --nproc 2: every peer is DDP-wrapped, so the peers stay in step across ranks and the
    two-process run computes what one process computes (same global batch, global-batch BatchNorm)."""
    args = ["distill", "--teacher", str(teacher_pt), "--online", "--epochs", "3", "--seeds", "1",
            "--student", "tiny-cnn", "--no-progress", "--json", "--device", "cpu"]
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


@pytest.mark.integration
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


# ---------------------------------------------------------------- every sample counted once
def _simulated_ranks(monkeypatch, w: int):
    """Yield r = 0..w-1 with edgekd.train.distributed answering as rank r of w (no process group)."""
    from edgekd.train import distributed as dist

    monkeypatch.setattr(dist, "world_size", lambda: w)
    for r in range(w):
        monkeypatch.setattr(dist, "rank", lambda r=r: r)
        yield r


@pytest.mark.parametrize("w", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 2, 3, 7, 13, 1077])
def test_shards_cover_every_index(monkeypatch, n: int, w: int) -> None:
    from edgekd.train import distributed as dist

    plain = [dist.shard(n, seed=0, epoch=0, shuffle=True, pad=False) for _ in _simulated_ranks(monkeypatch, w)]
    assert sorted(i for s in plain for i in s) == list(range(n))  # disjoint, each index exactly once
    padded = [dist.shard(n, seed=0, epoch=0, shuffle=True) for _ in _simulated_ranks(monkeypatch, w)]
    assert len({len(s) for s in padded}) == 1 and set(i for s in padded for i in s) == set(range(n))  # same steps


@pytest.mark.parametrize("n", [1, 3, 7, 13, 1077])
def test_cache_and_accuracy_over_simulated_ranks_equal_one_rank_exactly(monkeypatch, n: int) -> None:
    """Each simulated rank fills its rows and counts its samples; their sum (what the all-reduce
    computes) equals one rank's table and counts exactly: no row summed twice, no sample counted twice."""
    from torch import nn
    from torch.utils.data import TensorDataset

    from edgekd.train import datasets
    from edgekd.train import distributed as dist
    from edgekd.train.source import TeacherSource

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    g = torch.Generator().manual_seed(n)
    ds = TensorDataset(torch.randn(n, 3, 2, 2, generator=g), torch.randint(0, 5, (n,), generator=g))

    def run() -> tuple[torch.Tensor, list[float]]:
        counted: list[list[float]] = []
        monkeypatch.setattr(dist, "sum_across", lambda *v: counted.append(list(v)) or list(v))
        cache = TeacherSource([teacher]).build_cache(ds, batch_size=1).cache["logits"]
        datasets.accuracy(teacher, ds)
        return cache, counted[0]

    one_cache, one_counts = run()
    assert one_counts[1] == n
    for w in (2, 3):
        parts = [run() for _ in _simulated_ranks(monkeypatch, w)]
        assert torch.equal(sum(c for c, _ in parts), one_cache)
        assert [sum(c[k] for _, c in parts) for k in (0, 1)] == one_counts


@pytest.mark.integration
def test_cache_and_accuracy_on_two_gloo_ranks_equal_one_process_exactly(tmp_path: Path) -> None:
    probe = ROOT / "tests" / "dist_probe.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, str(probe), str(tmp_path / "one.pt"), "shards"], check=True, cwd=tmp_path,
                   env=env, capture_output=True)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        str(probe), str(tmp_path / "two.pt"), "shards"], cwd=tmp_path, env=env, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    assert sorted(one) == [1, 2, 3, 7, 13, 257]
    for n in one:
        assert torch.equal(one[n]["cache"], two[n]["cache"]), n
        assert list(one[n]["correct_total"]) == list(two[n]["correct_total"]) and one[n]["correct_total"][1] == n


# ---------------------------------------------------------------- a failed rank fails the command
def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = [int(k) for k in (task / "children").read_text().split()]
        except OSError:
            continue
        for k in kids:
            out += [k, *_children(k)]
    return out


def _rank_of(pid: int) -> int | None:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    got = [e[5:] for e in env if e.startswith(b"RANK=")]
    return int(got[0]) if got else None


@pytest.mark.integration
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker processes through /proc (Linux)")
def test_a_rank_killed_mid_epoch_fails_the_command_and_the_run_resumes(tmp_path: Path, teacher_pt: Path) -> None:
    run = tmp_path / "killed"
    args = ["distill", "--teacher", str(teacher_pt), "--run", str(run), "--epochs", "3", "--seeds", "1",
            "--student", "tiny-cnn", "--no-progress", "--device", "cpu"]
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    proc = subprocess.Popen([sys.executable, "-m", "edgekd.cli", *args, "--nproc", "2"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not (run / "checkpoints" / "alone-seed0.pt").exists():  # epoch 1 of the control is done
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
            time.sleep(0.05)
        rank1 = [p for p in _children(proc.pid) if _rank_of(p) == 1]
        assert len(rank1) == 1
        os.kill(rank1[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, err[-2000:]
    lines = [ln for ln in err.splitlines() if ln.startswith("edgekd:")]
    assert lines == [f"edgekd: failed: rank 1 (SIGKILL): killed by SIGKILL; no error line in its log; "
                     f"full logs in {run.resolve()}/logs/"], err[-2000:]
    assert (run / "logs" / "rank0.log").is_file() and (run / "logs" / "rank1.log").is_file()
    assert not (run / "distill.json").exists()
    r = _edgekd(tmp_path, *args, "--resume", "--nproc", "2")  # the partial run continues, as after Ctrl-C
    assert r.returncode == 0, r.stderr[-2000:]
    assert (run / "distill.json").is_file()


@pytest.mark.integration
def test_bad_input_in_the_ranks_is_exit_2_naming_the_rank(tmp_path: Path) -> None:
    r = _edgekd(tmp_path, "distill", "--nproc", "2", "--epochs", "0", "--run", "bad", "--device", "cpu",
                "--no-progress")
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.splitlines()[-1] == "edgekd: error: rank 0: --epochs 0: must be >= 1"
    assert not (tmp_path / "bad").exists()


def test_first_error_line_reads_edgekd_lines_and_tracebacks() -> None:
    from edgekd.train.distributed import first_error_line

    tb = "[rank1]: Traceback (most recent call last):\n[rank1]:   File \"x.py\", line 1\n" \
         "[rank1]: RuntimeError: boom\n[rank1]: more"
    assert first_error_line(tb) == "RuntimeError: boom"
    assert first_error_line("epoch 1\nedgekd: check failed: kd: loss term 'soft' is nan\n") == \
        "edgekd: check failed: kd: loss term 'soft' is nan"
    assert first_error_line("all fine\n") is None


# ---------------------------------------------------------------- every method family on 2 gloo ranks
@pytest.fixture(scope="module")
def teacher_onnx(teacher_pt: Path, tmp_path_factory) -> Path:
    from edgekd.models import create_teacher, write_onnx
    from edgekd.models.checkpoints import load_checkpoint

    state = load_checkpoint(teacher_pt, kind="teacher")
    model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
    model.load_state_dict(state["model"])
    out = tmp_path_factory.mktemp("onnx-teacher") / "teacher.onnx"  # never inside the shared run
    write_onnx(model, str(out), input_shape=(1, 8, 8), opset=17)
    return out


FAMILIES = {
    "logit": ["--method", "soft:0.7", "--method", "ce:0.3"],
    "feature-only": ["--method", "at"],
    "fitnet-hint": ["--method", "fitnet:0.5", "--method", "ce:0.5", "--hint-epochs", "1"],
    "multi-teacher": ["--teacher", "{pt}"],   # the same teacher twice: the mixture path
    "born-again": ["--generations", "1"],
    "dml": ["--online"],
    "onnx-teacher": [],                       # --teacher {onnx} instead of {pt}
}


@pytest.mark.integration
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_method_family_on_two_gloo_ranks_matches_one_process(tmp_path: Path, teacher_pt: Path,
                                                                   teacher_onnx: Path, family: str) -> None:
    """distill --nproc 2 (gloo) against one process, 1 epoch: the same teacher accuracy, and the
    students within what BatchNorm over the global batch and float reduction order allow."""
    teacher = str(teacher_onnx if family == "onnx-teacher" else teacher_pt)
    extra = [a.format(pt=teacher_pt) for a in FAMILIES[family]]
    args = ["distill", "--teacher", teacher, *extra, "--epochs", "1", "--seeds", "1", "--student", "tiny-cnn",
            "--no-progress", "--json", "--device", "cpu"]
    r1 = _edgekd(tmp_path, *args, "--run", "one")
    r2 = _edgekd(tmp_path, *args, "--run", "two", "--nproc", "2")
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    s1, s2 = (json.loads((tmp_path / run / "distill.json").read_text()) for run in ("one", "two"))
    assert s2["training"]["world_size"] == 2 and s2["training"]["backend"] == "gloo"
    assert s1["accuracy"]["teacher"] == s2["accuracy"]["teacher"]  # counted once per sample on 2 ranks
    for key in ("student_alone", "student"):
        a1, a2 = s1["accuracy"][key]["mean"], s2["accuracy"][key]["mean"]
        assert abs(a1 - a2) <= 0.02, (key, a1, a2)
    assert (tmp_path / "two" / "logs" / "rank1.log").is_file()


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpus(n: int, *, exactly: bool = False):
    """Skip (before any fixture is built) unless this machine has n CUDA devices (exactly n with `exactly`)."""
    have = _cuda_count()
    return pytest.mark.skipif(have != n if exactly else have < n,
                              reason=f"needs {'exactly ' if exactly else ''}{n} CUDA device(s); this machine has "
                                     f"{have} (torch {torch.__version__}, cuda {torch.version.cuda})")


@pytest.mark.gpu
@_gpus(1)
def test_a_phase_on_cuda_trains_there_under_autocast_with_the_cache_on_the_gpu(tmp_path: Path) -> None:
    """What ran, not what was asked: the weights' device after training, the dtype the student's
    convolutions computed in (autocast), the cache's device, and the fp16 scaler state in the checkpoint."""
    from edgekd.data import load_data
    from edgekd.models import create_student, create_teacher
    from edgekd.models.checkpoints import load_checkpoint
    from edgekd.train.datasets import Indexed
    from edgekd.train.loop import Phase, TrainOptions, fit
    from edgekd.train.losses import build_objective
    from edgekd.train.source import TeacherSource

    bundle = load_data("digits")
    torch.manual_seed(0)
    student = create_student("small-cnn", in_channels=1, num_classes=10)
    src = TeacherSource([create_teacher("cnn-small", in_channels=1, num_classes=10)]).to("cuda:0")
    src.build_cache(bundle.train)
    assert src.cache["logits"].device == torch.device("cuda:0")
    seen: set = set()
    convs = [m for m in student.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks = [m.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype)) for m in convs]
    opts = TrainOptions(device="cuda:0")
    ph = Phase("kd", student, build_objective(["soft:0.7", "ce:0.3"]), Indexed(bundle.train), bundle.val, epochs=1,
               seed=0, source=src, options=opts)
    fit(ph, ckpt=tmp_path / "kd.pt", progress=False)
    for h in hooks:
        h.remove()
    expected = opts.autocast_dtype()
    assert expected in (torch.bfloat16, torch.float16)
    assert expected in seen  # the training forwards ran in autocast (validation runs in fp32: also seen)
    assert all(p.device == torch.device("cuda:0") for p in student.parameters())
    assert math.isfinite(ph.history[-1]["loss"])
    state = load_checkpoint(tmp_path / "kd.pt")
    assert ("scaler" in state) == (expected == torch.float16)


@pytest.mark.gpu
@_gpus(1)
def test_the_pipeline_trains_on_cuda(tmp_path: Path, teacher_pt: Path) -> None:
    r = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "gpu", "--device", "cuda",
                "--deterministic", *[a for a in TINY if a not in ("--device", "cpu")])
    assert r.returncode == 0, r.stderr[-2000:]  # the summary's MAC counter once crashed here (CPU zeros)
    s = json.loads((tmp_path / "gpu" / "distill.json").read_text())
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert s["training"]["device"] == "cuda:0" and s["training"]["precision"] == ("bfloat16" if native else "float16")
    assert s["teacher"]["mflops"] > 0 and s["accuracy"]["student"]["mean"] > 0.5
    e = _edgekd(tmp_path, "export", "--run", "gpu", "--target", "cpu-arm")  # export and parity on CPU
    assert e.returncode == 0, e.stderr[-2000:]


@pytest.mark.gpu
@_gpus(1, exactly=True)
def test_two_ranks_on_one_gpu_are_refused_in_one_line(tmp_path: Path) -> None:
    r = _edgekd(tmp_path, "distill", "--nproc", "2", "--device", "cuda", "--run", "x", *TINY[:-2])
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "edgekd: error: --nproc 2: this machine has 1 CUDA device(s) and each rank needs its own; "
        "use --nproc 1, or --device cpu for 2 CPU processes"], r.stderr[-2000:]


@pytest.mark.gpu
@_gpus(2)
def test_two_ranks_on_two_gpus_with_nccl(tmp_path: Path, teacher_pt: Path) -> None:
    args = [a for a in TINY if a not in ("--device", "cpu")]
    r = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "nccl", "--device", "cuda",
                "--nproc", "2", *args)
    assert r.returncode == 0, r.stderr[-2000:]
    s = json.loads((tmp_path / "nccl" / "distill.json").read_text())
    assert s["training"]["world_size"] == 2 and s["training"]["backend"] == "nccl"
    assert s["training"]["device"] == "cuda:0"  # rank 0's GPU; rank 1 trained on cuda:1 (LOCAL_RANK)
    one = _edgekd(tmp_path, "distill", "--teacher", str(teacher_pt), "--run", "one", "--device", "cuda", *args)
    assert one.returncode == 0, one.stderr[-2000:]
    s1 = json.loads((tmp_path / "one" / "distill.json").read_text())
    assert s1["accuracy"]["teacher"] == s["accuracy"]["teacher"]
    assert abs(s1["accuracy"]["student"]["mean"] - s["accuracy"]["student"]["mean"]) <= 0.02
