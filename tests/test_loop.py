"""The one training loop: fast in-memory batches, DML and the warm-up through `fit`, the LR rule and
schedule, metrics.jsonl (schema, resume without duplicates), devices and TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Dataset, Subset, TensorDataset

from edgekd import defaults
from edgekd.errors import BadInput
from edgekd.models import create_student
from edgekd.train.datasets import Indexed, Repeated, batches, in_memory, loader
from edgekd.train.loop import Phase, TrainOptions, _lr_factor, fit
from edgekd.train.losses import build_objective
from edgekd.train.metrics import KEYS, MetricsLog


def _data(n: int = 96, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


class ItemsOnly(Dataset):
    """The same samples, readable only item by item (a streamed dataset)."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        return self.base[i]


class Uint8WithBatch(Dataset):
    """uint8 pixels normalised per batch through `batch(indices)`, as edgekd.data holds small datasets."""

    def __init__(self, n: int = 50):
        g = torch.Generator().manual_seed(1)
        self.pixels = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
        self.labels = torch.randint(0, 10, (n,), generator=g)
        self.items_read = 0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        self.items_read += 1
        return (self.pixels[i].float() / 255 - 0.5) / 0.25, int(self.labels[i])

    def batch(self, idx):
        return (self.pixels[idx].float() / 255 - 0.5) / 0.25, self.labels[idx]


# ---------------------------------------------------------------- batches
@pytest.mark.parametrize("wrap", ["indexed", "masked", "repeated-subset"])
def test_tensor_batches_equal_the_dataloader_batches(wrap: str) -> None:
    base = _data(70)
    mask = np.arange(70) % 3 == 0
    ds = {"indexed": Indexed(base), "masked": Indexed(base, mask),
          "repeated-subset": Indexed(Repeated(Subset(base, list(range(5, 40))), 70))}[wrap]
    slow = {"indexed": Indexed(ItemsOnly(base)), "masked": Indexed(ItemsOnly(base), mask),
            "repeated-subset": Indexed(Repeated(Subset(ItemsOnly(base), list(range(5, 40))), 70))}[wrap]
    assert in_memory(ds) and not in_memory(slow)
    for epoch in (0, 3):
        fast = list(batches(ds, batch_size=16, shuffle=True, seed=2, epoch=epoch))
        ref = list(loader(slow, batch_size=16, shuffle=True, seed=2, epoch=epoch))
        assert len(fast) == len(ref) == math.ceil(70 / 16)
        for (x, y, i), (rx, ry, ri) in zip(fast, ref):
            assert torch.equal(i, ri) and torch.equal(y, ry) and torch.equal(x, rx)
    if wrap == "masked":
        assert any((b[1] == -1).any() for b in fast)  # hidden labels come through as -1


def test_a_dataset_with_batch_is_never_read_item_by_item() -> None:
    ds = Uint8WithBatch()
    got = list(batches(Indexed(ds), batch_size=8, shuffle=True, seed=0, epoch=0))
    assert ds.items_read == 0
    assert sum(len(b[0]) for b in got) == len(ds) and got[0][0].dtype == torch.float32
    i = int(got[0][2][0])
    assert torch.allclose(got[0][0][0], ds[i][0])


# ---------------------------------------------------------------- schedule and LR rule
def test_cosine_matches_torch_cosine_annealing_stepped_per_epoch() -> None:
    f = _lr_factor("cosine", epochs=5, steps_per_epoch=3, warmup_epochs=1)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    ref = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    for epoch in range(5):
        for s in range(3):
            assert f(epoch * 3 + s) == pytest.approx(opt.param_groups[0]["lr"], abs=1e-12)
        opt.step()
        ref.step()


def test_warmup_cosine_ramps_then_decays_to_zero() -> None:
    f = _lr_factor("warmup-cosine", epochs=4, steps_per_epoch=10, warmup_epochs=1)
    ramp = [f(s) for s in range(10)]
    assert ramp == sorted(ramp) and ramp[0] == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    tail = [f(s) for s in range(10, 40)]
    assert tail == sorted(tail, reverse=True) and tail[-1] < 0.01


def test_linear_lr_rule_and_auto_warmup_show_in_the_recorded_lr(tmp_path: Path) -> None:
    rows = {}
    for batch in (16, 32):
        log = MetricsLog(tmp_path / f"m{batch}.jsonl")
        ph = Phase(f"b{batch}", create_student("tiny-cnn", in_channels=1, num_classes=10), build_objective(["ce"]),
                   Indexed(_data()), _data(32, 1), epochs=defaults.SHORT_RUN_EPOCHS, seed=0, lr=1e-3, batch_size=batch,
                   options=TrainOptions(base_batch=16, metrics=log))
        fit(ph, progress=False)
        rows[batch] = [json.loads(line) for line in log.path.read_text().splitlines()]
    # base batch: cosine per epoch, epoch 1 at the full rate; twice the batch: 2× the rate after a 1-epoch warm-up
    n = defaults.SHORT_RUN_EPOCHS
    assert rows[16][0]["lr"] == pytest.approx(1e-3)
    assert rows[16][1]["lr"] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi / n)))
    assert rows[32][0]["lr"] == pytest.approx(2e-3)  # last warm-up step reaches the scaled rate
    assert rows[32][1]["lr"] < 2e-3


def test_auto_schedule_short_runs_decay_per_step_with_a_short_warmup() -> None:
    from edgekd.train.loop import auto_schedule
    short = defaults.SHORT_RUN_EPOCHS - 1
    assert auto_schedule(epochs=30, batch_size=64, base_batch=64, warmup_epochs=1.0) == ("cosine", 1.0)
    assert auto_schedule(epochs=30, batch_size=128, base_batch=64, warmup_epochs=1.0) == ("warmup-cosine", 1.0)
    kind, warm = auto_schedule(epochs=short, batch_size=64, base_batch=64, warmup_epochs=1.0)
    assert kind == "warmup-cosine" and warm == pytest.approx(defaults.SHORT_RUN_WARMUP * short) and warm < 1.0
    # per step: a 4-epoch run has 4·steps distinct rates, not 4
    f = _lr_factor(kind, epochs=4, steps_per_epoch=10, warmup_epochs=0.3)
    assert len({round(f(s), 9) for s in range(40)}) > 30


# ---------------------------------------------------------------- one loop for every phase
def test_warm_up_is_max_steps_of_the_loop_and_equals_a_plain_loop() -> None:
    import torch.nn.functional as F

    from edgekd.data import load_data
    from edgekd.search.teacher import warm_up
    from edgekd.train.datasets import dataset_labels, labeled_mask

    bundle = load_data("digits")
    torch.manual_seed(5)
    model = create_student("tiny-cnn", in_channels=1, num_classes=10)
    ref = create_student("tiny-cnn", in_channels=1, num_classes=10)
    ref.load_state_dict(model.state_dict())
    warm_up(model, bundle, steps=7, labeled_fraction=0.5, lr=1e-2, batch_size=16, seed=3)
    # the same 7 steps written out by hand
    mask = labeled_mask(dataset_labels(bundle.train), 0.5)
    labeled = Subset(bundle.train, np.flatnonzero(mask).tolist())
    torch.manual_seed(3)
    opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=1e-4)
    ref.train()
    for step, (x, y) in enumerate(loader(labeled, batch_size=16, shuffle=True, seed=3, epoch=0)):
        if step == 7:
            break
        opt.zero_grad()
        F.cross_entropy(ref(x), y).backward()
        opt.step()
    for (name, a), b in zip(model.state_dict().items(), ref.state_dict().values()):
        assert torch.allclose(a, b, atol=1e-6), name
    assert not model.training


class StopAfter(MetricsLog):
    """A metrics log whose process 'dies' right after recording epoch `at` (before its checkpoint)."""

    def __init__(self, path, at):
        super().__init__(path)
        self.at = at

    def record(self, row):
        super().record(row)
        if row["epoch"] == self.at and row["phase"].endswith("peer2"):
            raise KeyboardInterrupt


def _dml_phase(options: TrainOptions) -> Phase:
    torch.manual_seed(0)
    peers = [create_student("tiny-cnn", in_channels=1, num_classes=10) for _ in range(2)]
    mask = np.arange(96) % 2 == 0
    return Phase("dml/seed0", peers[0], build_objective(["ce"]), Indexed(_data(), mask), _data(32, 1), epochs=3,
                 seed=0, batch_size=16, peers=peers[1:], options=options)


def test_dml_runs_through_fit_and_a_killed_run_resumes_to_the_same_weights_and_lines(tmp_path: Path) -> None:
    ref = _dml_phase(TrainOptions(metrics=MetricsLog(tmp_path / "ref.jsonl")))
    before = [p.clone() for p in ref.peers[0].parameters()]
    fit(ref, ckpt=tmp_path / "ref.pt", progress=False)
    assert any(not torch.equal(a, b) for a, b in zip(before, ref.peers[0].parameters()))  # the peer trained too
    assert len(ref.history) == 3 and len(ref.history[-1]["peers_val_acc"]) == 2

    ckpt, path = tmp_path / "run.pt", tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        fit(_dml_phase(TrainOptions(metrics=StopAfter(path, at=2))), ckpt=ckpt, progress=False)
    resumed = _dml_phase(TrainOptions(metrics=MetricsLog(path)))
    fit(resumed, ckpt=ckpt, resume=True, progress=False)
    for a, b in zip([*ref.model.parameters(), *ref.peers[0].parameters()],
                    [*resumed.model.parameters(), *resumed.peers[0].parameters()]):
        assert torch.equal(a, b)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    ref_rows = [json.loads(line) for line in (tmp_path / "ref.jsonl").read_text().splitlines()]
    assert [(r["phase"], r["epoch"]) for r in rows] == [(r["phase"], r["epoch"]) for r in ref_rows] == [
        (f"dml/seed0/peer{k}", e) for e in (1, 2, 3) for k in (1, 2)]
    assert [r["loss"] for r in rows] == pytest.approx([r["loss"] for r in ref_rows])


def test_metrics_lines_have_exactly_the_schema_per_stage_and_term(tmp_path: Path) -> None:
    from edgekd.train.source import TeacherSource

    teacher = create_student("small-cnn", in_channels=1, num_classes=10).eval()
    student = create_student("small-cnn", in_channels=1, num_classes=10)
    obj = build_objective(["soft:0.7", "ce:0.3", "fitnet:1"], temperature=4.0)
    from edgekd.train.teacher import resolve_taps

    log = MetricsLog(tmp_path / "metrics.jsonl")
    ph = Phase("kd/seed0", student, obj, Indexed(_data()), _data(32, 1), epochs=2, seed=0, batch_size=32,
               source=TeacherSource([teacher], taps=resolve_taps(teacher, obj)),
               student_taps=resolve_taps(student, obj), hint_epochs=1, options=TrainOptions(metrics=log))
    fit(ph, progress=False)
    rows = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [(r["stage"], r["epoch"], r["epochs"]) for r in rows] == [("hint", 1, 1), ("main", 1, 2), ("main", 2, 2)]
    for r in rows:
        assert tuple(r) == KEYS and r["phase"] == "kd/seed0"
        assert 0 <= r["val_acc"] <= 1 and r["seconds"] > 0 and r["images_per_s"] > 0 and r["lr"] > 0
        assert r["loss"] == pytest.approx(sum(r["terms"].values()))
    assert set(rows[1]["terms"]) == {"soft", "ce", "fitnet"} and set(rows[0]["terms"]) == {"fitnet"}


def test_checkpoints_and_saved_weights_are_cpu_tensors(tmp_path: Path) -> None:
    from edgekd.train.loop import _cpu

    state = _cpu({"a": torch.zeros(2), "b": [torch.ones(1)], "c": 3})
    assert state["a"].device.type == "cpu" and state["b"][0].device.type == "cpu" and state["c"] == 3


# ---------------------------------------------------------------- devices
def test_device_resolution_without_cuda(monkeypatch) -> None:
    from edgekd.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    for bad, says in (("cuda", "no CUDA device"), ("cuda:1", "no CUDA device"), ("tpu", "valid: auto, cpu")):
        with pytest.raises(BadInput, match=says):
            resolve_device(bad)


def test_device_resolution_with_cuda(monkeypatch) -> None:
    from edgekd.train.distributed import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == "cpu"  # CUDA_VISIBLE_DEVICES='' (conftest, for tests not marked gpu) hides them
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("auto") == "cuda:1"  # each rank on its own GPU
    with pytest.raises(BadInput, match="each rank uses GPU LOCAL_RANK"):  # issue 18: cuda:N put every rank on N
        resolve_device("cuda:0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(BadInput, match="2 CUDA device"):
        resolve_device("cuda:2")


def test_precision_auto_is_fp32_on_cpu() -> None:
    assert TrainOptions(device="cpu").autocast_dtype() is None
    assert TrainOptions(device="cpu", precision="bf16").autocast_dtype() == torch.bfloat16


@pytest.mark.gpu
def test_fit_on_cuda_keeps_everything_on_the_gpu_and_saves_cpu_weights(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device: torch.cuda.is_available() is False on this machine")
    from edgekd.models.checkpoints import load_checkpoint

    ph = _dml_phase(TrainOptions(device="cuda:0", channels_last=True))
    fit(ph, ckpt=tmp_path / "c.pt", progress=False)
    assert next(ph.model.parameters()).is_cuda
    state = load_checkpoint(tmp_path / "c.pt")
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert ph.history[-1]["val_acc"] > 0


# ---------------------------------------------------------------- CLI: bad input and TensorBoard
@pytest.mark.parametrize("args, says", [
    (["--device", "cuda:7"], "device 'cuda:7'"),
    (["--lr-schedule", "linear"], "--lr-schedule 'linear': valid: auto, cosine, warmup-cosine, constant"),
    (["--precision", "int4"], "--precision 'int4': valid: auto, fp32, bf16, fp16"),
    (["--compile"], "--compile: refused"),
])
def test_bad_training_options_are_one_line_before_any_folder(args, says, tmp_path: Path, edgekd_main,
                                                              monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", tmp_path / "run", "--epochs", "1", "--no-progress", *args)
    assert r.code == 2 and len(r.err_lines) == 1 and says in r.err_lines[0], r.err
    assert not (tmp_path / "run").exists() and not (tmp_path / "artifacts").exists()


def test_tensorboard_missing_says_how_to_install(tmp_path: Path, edgekd_main, monkeypatch) -> None:
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *a, **k):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError("No module named 'tensorboard'")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    monkeypatch.chdir(tmp_path)
    r = edgekd_main("distill", "--run", tmp_path / "run", "--tensorboard", tmp_path / "tb", "--no-progress")
    assert r.code == 2 and len(r.err_lines) == 1, r.err
    assert "pip install tensorboard" in r.err_lines[0] and "edgekd[tensorboard]" in r.err_lines[0]
    assert not (tmp_path / "run").exists() and not (tmp_path / "tb").exists()


def test_tensorboard_gets_the_same_scalars_as_metrics_jsonl(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="tensorboard not installed (optional extra edgekd[tensorboard])")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = MetricsLog(tmp_path / "metrics.jsonl", tensorboard=tmp_path / "tb")
    ph = Phase("alone/seed0", create_student("tiny-cnn", in_channels=1, num_classes=10), build_objective(["ce"]),
               Indexed(_data()), _data(32, 1), epochs=2, seed=0, batch_size=32, options=TrainOptions(metrics=log))
    fit(ph, progress=False)
    log.close()
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    rows = [json.loads(line) for line in log.path.read_text().splitlines()]
    val = [e.value for e in acc.Scalars("alone/seed0/main/val_acc")]
    assert val == pytest.approx([r["val_acc"] for r in rows])
    assert [e.step for e in acc.Scalars("alone/seed0/main/terms/ce")] == [1, 2]


class StopAtMain(MetricsLog):
    """Dies right after recording the first main-stage epoch (the checkpoint still holds the hint stage)."""

    def record(self, row):
        super().record(row)
        if row["stage"] == "main":
            raise KeyboardInterrupt


def _hint_phase(metrics: MetricsLog) -> Phase:
    from edgekd.train.source import TeacherSource
    from edgekd.train.teacher import resolve_taps

    torch.manual_seed(1)
    teacher = create_student("small-cnn", in_channels=1, num_classes=10).eval()
    student = create_student("small-cnn", in_channels=1, num_classes=10)
    obj = build_objective(["soft:0.7", "ce:0.3", "fitnet:1"], temperature=4.0)
    return Phase("kd/seed0", student, obj, Indexed(_data()), _data(32, 1), epochs=2, seed=0, batch_size=32,
                 source=TeacherSource([teacher], taps=resolve_taps(teacher, obj)),
                 student_taps=resolve_taps(student, obj), hint_epochs=1, options=TrainOptions(metrics=metrics))


def test_a_kill_after_the_hint_stage_resumes_the_main_stage_not_skips_it(tmp_path: Path) -> None:
    ref = _hint_phase(MetricsLog(None))
    fit(ref, ckpt=tmp_path / "ref.pt", progress=False)
    ckpt, path = tmp_path / "run.pt", tmp_path / "run.jsonl"
    with pytest.raises(KeyboardInterrupt):
        fit(_hint_phase(StopAtMain(path)), ckpt=ckpt, progress=False)
    resumed = _hint_phase(MetricsLog(path))
    fit(resumed, ckpt=ckpt, resume=True, progress=False)
    for a, b in zip(ref.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["stage"], r["epoch"]) for r in rows] == [("hint", 1), ("main", 1), ("main", 2)]


def test_teacher_source_in_channels_last_gives_the_same_outputs_and_caches_in_the_run_format(tmp_path: Path) -> None:
    """The teacher cache runs where and as the run trains (NHWC on CPU by default): same logits and
    features as NCHW, the teacher's weights really converted, and NCHW kept when the run asks for it."""
    from edgekd.train.config import DistillConfig
    from edgekd.train.source import TeacherSource
    from edgekd.train.teacher import resolve_taps, teacher_source

    torch.manual_seed(0)
    obj = build_objective(["soft:1", "fitnet:1"], temperature=4.0)
    x = _data(32).tensors[0]
    ref_teacher = create_student("small-cnn", in_channels=1, num_classes=10).eval()
    ref = TeacherSource([ref_teacher], taps=resolve_taps(ref_teacher, obj)).live(x)
    nhwc_teacher = create_student("small-cnn", in_channels=1, num_classes=10).eval()
    nhwc_teacher.load_state_dict(ref_teacher.state_dict())
    src = TeacherSource([nhwc_teacher], taps=resolve_taps(nhwc_teacher, obj)).to("cpu", channels_last=True)
    # the last conv: with one input channel (the first) NCHW and NHWC are the same layout
    conv = [m for m in nhwc_teacher.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) and not conv.weight.is_contiguous()
    out = src.live(x)
    assert torch.allclose(out[0], ref[0], atol=1e-5)
    assert set(out[1]) == set(ref[1]) and all(torch.allclose(out[1][k], ref[1][k], atol=1e-5) for k in ref[1])

    from edgekd.data import load_data

    bundle = load_data("digits")
    for cl in (True, False):
        t = create_student("small-cnn", in_channels=1, num_classes=10).eval()
        cfg = DistillConfig(channels_last=cl, device="cpu")
        s = teacher_source(cfg, bundle, [t], obj, cache_dir=tmp_path / str(cl))
        w = [m for m in t.modules() if isinstance(m, torch.nn.Conv2d)][-1].weight
        assert w.is_contiguous(memory_format=torch.channels_last) is cl
        assert s.cache["logits"].shape == (len(bundle.train), 10)
