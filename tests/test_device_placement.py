"""Device placement checked without a GPU: every op must find its tensors on one device.

`OneDevice` is a TorchDispatchMode that refuses any op whose tensors sit on different devices.
The `meta` device stands in for a GPU: the phase's models, teachers and batches go there, while
the data, labels and anything loaded from a file start on the CPU, as on a CUDA machine. So a
tensor the code forgets to move is an error here, as it would be on CUDA, where it is a crash.
To let whole phases run on data-less meta tensors, the mode also answers a host read of a meta
tensor (`bool`, `float`, `.item()`) with 0 / True and a copy to the CPU with zeros: the numbers
are meaningless, only the placement is tested.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.data import TensorDataset

from edgekd.train.datasets import Indexed
from edgekd.train.loop import Phase, TrainOptions, fit
from edgekd.train.losses import build_objective
from edgekd.train.source import TeacherSource

aten = torch.ops.aten
GPU = "meta"  # the stand-in for cuda:0


class OneDevice(TorchDispatchMode):
    """Refuse ops mixing devices (a 0-dim CPU tensor may join any device, as torch allows for CUDA)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops_on_gpu = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        first = tensors[0] if tensors else None
        if func is aten._local_scalar_dense.default and first.device.type == GPU:
            return True if first.dtype == torch.bool else 0
        to = kwargs.get("device") or next((a for a in args[1:] if isinstance(a, torch.device)), None)
        if func.overloadpacket in (aten._to_copy, aten.to) and first.device.type == GPU and to is not None \
                and torch.device(to).type != GPU:  # the copy back to the host: zeros of the right shape
            dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), first.dtype)
            return torch.zeros(first.shape, dtype=dtype, device=to)
        if func is not aten.copy_.default:  # copy_ moves between devices by definition
            devices = {str(t.device) for t in tensors if not (t.device.type == "cpu" and t.dim() == 0)}
            if len(devices) > 1:
                raise AssertionError(f"{func} mixes devices {sorted(devices)}")
        self.ops_on_gpu += any(t.device.type == GPU for t in tensors)
        return func(*args, **kwargs)


@pytest.fixture(autouse=True)
def _meta_masks():
    """Boolean-mask indexing (the CE over labeled samples) on meta: torch then assumes every element is set."""
    import torch.fx.experimental._config as fx_config

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):
        yield


def _data(n: int = 24, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    return TensorDataset(torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g))


def _student() -> nn.Module:
    from edgekd.models import create_student

    torch.manual_seed(0)
    return create_student("small-cnn", in_channels=1, num_classes=10)


def _teacher() -> nn.Module:
    from edgekd.models import create_teacher

    torch.manual_seed(1)
    return create_teacher("cnn-small", in_channels=1, num_classes=10)


class NoWeights(nn.Module):
    """Like an ONNX teacher: no tensors of its own, answers on the input's device."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10] * 2.0


def test_the_guard_refuses_mixed_devices() -> None:
    with OneDevice(), pytest.raises(AssertionError, match="mixes devices"):
        nn.Linear(4, 2).to(GPU)(torch.zeros(1, 4))


def test_the_cost_counter_runs_on_the_models_device() -> None:
    from edgekd.models import model_cost

    expected = model_cost(_teacher(), (1, 8, 8))
    with OneDevice() as mode:
        got = model_cost(_teacher().to(GPU), (1, 8, 8))
    assert got == expected and mode.ops_on_gpu > 0


@pytest.mark.parametrize("order", ["gpu-first", "no-weights-first", "cpu-teacher-second"])
def test_ensemble_accuracy_gives_each_teacher_its_own_device_and_moves_the_labels(order: str) -> None:
    from edgekd.train.config import DistillConfig
    from edgekd.train.teacher import ensemble_accuracy

    teachers = {"gpu-first": [_teacher().to(GPU), _teacher().to(GPU)],
                "no-weights-first": [NoWeights(), _teacher().to(GPU)],
                "cpu-teacher-second": [_teacher().to(GPU), _teacher()]}[order]  # the 2nd loaded from a file
    with OneDevice() as mode:
        acc = ensemble_accuracy(DistillConfig(), teachers, _data())
    assert 0.0 <= acc <= 1.0 and mode.ops_on_gpu > 0


def test_the_teacher_cache_is_built_and_read_on_the_gpu() -> None:
    ds = Indexed(_data())
    with OneDevice():
        src = TeacherSource([_teacher()]).to(GPU).build_cache(ds.base, batch_size=8)
        logits, _ = src.outputs(torch.zeros(4, 1, 8, 8, device=GPU), torch.arange(4))
    assert src.cache["logits"].device.type == GPU and logits.device.type == GPU


def _phases() -> dict[str, Phase]:
    opts = lambda: TrainOptions(device=GPU, base_batch=None)  # noqa: E731
    train, val = Indexed(_data()), _data(12, seed=1)
    def kd(name: str, methods=("soft:0.7", "ce:0.3"), **kw) -> Phase:
        return Phase(name, _student(), build_objective(list(methods)), train, val, epochs=1, seed=0, batch_size=8,
                     options=opts(), **kw)

    return {
        "teacher": Phase("teacher", _teacher(), build_objective(["ce"]), train, val, 1, 0, batch_size=8,
                         options=opts()),
        "alone": kd("alone", methods=["ce"]),
        "kd-live": kd("kd", teacher=_teacher()),
        "kd-cached": kd("kd", source=TeacherSource([_teacher()]).build_cache(train.base)),
        "multi-teacher": kd("kd", source=TeacherSource([_teacher(), NoWeights()])),
        "hint-stage": kd("fitnet", methods=["fitnet:0.5", "ce:0.5"], teacher=_teacher(), hint_epochs=1),
        "feature-only": kd("at", methods=["at"], teacher=_teacher()),
        "born-again": kd("gen1", teacher=_student()),
        "dml-peers": kd("dml", methods=["ce"], peers=[_student()]),
        "select-teacher-warm-up": Phase("warm-up", _teacher(), build_objective(["ce"]), train, None, 1, 0,
                                        batch_size=8, max_steps=2, options=opts()),
    }


@pytest.mark.parametrize("name", list(_phases()))
def test_one_step_of_every_phase_keeps_to_one_device(name: str) -> None:
    ph = _phases()[name]
    if ph.objective.taps:  # feature losses: the models' default taps, as distill resolves them
        from edgekd.train.teacher import resolve_taps

        ph.student_taps = resolve_taps(ph.model, ph.objective)
        ph.source.taps = resolve_taps(ph.source.teachers[0], ph.objective)
    if name != "select-teacher-warm-up":
        ph.max_steps = 1
    with OneDevice() as mode:
        fit(ph, progress=False)
    assert all(p.device.type == GPU for m in ph.members for p in m.parameters())
    assert len(ph.history) >= 1 and mode.ops_on_gpu > 0


# ---------------------------------------------------------------- the rest of the GPU path, read on the CPU
def test_precision_auto_counts_only_native_bf16(monkeypatch) -> None:
    """A T4 (sm75) has bf16 only emulated, which torch counts by default: auto must pick fp16 there."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert TrainOptions(device="cuda:0").autocast_dtype() == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert TrainOptions(device="cuda:0").autocast_dtype() == torch.bfloat16
    assert TrainOptions(device="cpu").autocast_dtype() is None


def test_cuda_n_under_several_ranks_is_refused_in_one_line(monkeypatch) -> None:
    from edgekd.errors import BadInput
    from edgekd.train.distributed import check_launch, resolve_device

    with pytest.raises(BadInput, match=r"^--device cuda:1: with --nproc 2 each rank uses GPU LOCAL_RANK") as e:
        check_launch(2, "cuda:1")
    assert "\n" not in str(e.value)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(BadInput, match=r"^device 'cuda:0': with several processes each rank uses GPU LOCAL_RANK"):
        resolve_device("cuda:0")


@pytest.mark.parametrize("device", ["auto", "cuda"])
def test_more_ranks_than_gpus_is_refused_before_launch(monkeypatch, device: str) -> None:
    from edgekd.errors import BadInput
    from edgekd.train.distributed import check_launch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BadInput, match=r"^--nproc 2: this machine has 1 CUDA device\(s\) and each rank needs its own"):
        check_launch(2, device)
    check_launch(1, device)
    check_launch(2, "cpu")  # CPU ranks need no GPU


def test_the_grad_scaler_state_goes_into_the_checkpoint_and_comes_back(tmp_path) -> None:
    """fp16's loss scale and growth tracker survive a resume (torch's GradScaler also runs on the CPU)."""
    from edgekd import artifacts
    from edgekd.train import loop

    ph = Phase("kd", _student(), build_objective(["ce"]), Indexed(_data()), None, epochs=1, seed=0, batch_size=8)
    opt = torch.optim.AdamW(ph.model.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=3)
    for _ in range(2):  # two fp16-style steps: the growth tracker counts them
        scaler.scale(ph.model(_data(4).tensors[0]).square().mean()).backward()
        scaler.step(opt)
        scaler.update()
    saved = scaler.state_dict()
    assert saved["_growth_tracker"] == 2 and saved["scale"] == 2.0 ** 10
    artifacts.save_torch(tmp_path / "c.pt", loop._checkpoint_state(ph, opt, sched, scaler, 1, "main"))
    fresh = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
    assert loop._restore(ph, opt, sched, fresh, tmp_path / "c.pt", True, "main") == 1
    assert fresh.state_dict() == saved
    off = torch.amp.GradScaler("cpu", enabled=False)  # fp32/bf16: nothing saved
    assert "scaler" not in loop._checkpoint_state(ph, opt, sched, off, 1, "main")


@pytest.mark.parametrize("name", ["hint-stage", "feature-only", "kd-live"])
def test_the_partial_stage_check_keeps_to_one_device(monkeypatch, name: str) -> None:
    """As rank 0 of 2 (no process group: the collectives are identities), so the loop runs its
    check of which parameters the loss reaches (`_leaves_params_unused`), on the GPU."""
    from edgekd.train import distributed as dist
    from edgekd.train import loop

    monkeypatch.setattr(dist, "world_size", lambda: 2)
    seen = []
    real = loop._leaves_params_unused
    monkeypatch.setattr(loop, "_leaves_params_unused", lambda *a: seen.append(real(*a)) or seen[-1])
    test_one_step_of_every_phase_keeps_to_one_device(name)
    assert seen == {"hint-stage": [True, False], "feature-only": [True], "kd-live": [False]}[name]
