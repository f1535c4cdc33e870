"""Multi-process distillation on PyTorch's own engine (torch.distributed + DDP).

`edgekd distill --nproc N` re-launches itself through `torch.distributed.run`
(torchrun); each rank then calls `init_from_env`. gloo on CPU, NCCL on GPU
(each rank on GPU LOCAL_RANK, SyncBatchNorm).
Everything here is a no-op in a single process, so the training loop has one
code path:
- `shard`: the rank's share of an epoch's permutation. The permutation depends
  only on (seed, epoch), so N ranks with batch B/N see exactly the samples one
  process sees with batch B.
- `sum_across`: metrics reduced over ranks.
- `fill_rows`: each rank computes rows of a table (the teacher cache) on its
  static, disjoint shard (`shard(pad=False)`); a sum-reduce assembles the whole table on every rank.
- `wrap` / `average_grads`: DDP for the stages whose loss reaches every parameter; the
  gradients that exist, averaged by hand, for the stages that train part of the model.
- `launch`: torchrun for `--nproc`; each rank's stderr kept in RUN/logs/, and a failed rank
  raised as one line naming it (`RankFailed`).
Only rank 0 writes artifacts (edgekd.artifacts checks `is_main`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from edgekd.errors import BadInput, EdgekdError
from edgekd.ranks import _dist, broadcast, is_main, rank, world_size  # noqa: F401  (re-exported)


def init_from_env(device: str = "auto") -> bool:
    """Join the process group torchrun describes in the environment; False when not launched by it.

    NCCL when the ranks train on CUDA (each rank on GPU LOCAL_RANK), gloo otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or _dist() is not None:
        return False
    capture_worker_output()
    import torch
    import torch.distributed as dist

    on_cuda = resolve_device(device).startswith("cuda")
    if on_cuda:
        torch.cuda.set_device(local_rank())
    dist.init_process_group(backend="nccl" if on_cuda else "gloo")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
    return True


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def resolve_device(spec: str = "auto") -> str:
    """`auto` → CUDA when available, else CPU; `cuda` → this rank's GPU (LOCAL_RANK under torchrun);
    `cuda:N` → GPU N. A device this machine lacks is BadInput naming what it has."""
    spec = (spec or "auto").strip().lower()
    if spec == "cpu":
        return "cpu"
    if spec != "auto" and not (spec == "cuda" or spec.startswith("cuda:")):
        raise BadInput(f"device '{spec}': valid: auto, cpu, cuda, cuda:N")
    if spec.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # DDP would get device_ids=[N] on every rank while init_from_env set LOCAL_RANK's GPU.
        raise BadInput(f"device '{spec}': with several processes each rank uses GPU LOCAL_RANK; use cuda or auto "
                       f"(choose the GPUs with CUDA_VISIBLE_DEVICES)")
    import torch

    # CUDA_VISIBLE_DEVICES='' hides every GPU, even from a process whose torch already counted them.
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES") == ""
    n = 0 if hidden or not torch.cuda.is_available() else torch.cuda.device_count()
    if spec == "auto":
        if n == 0:
            return "cpu"
        spec = "cuda"
    if n == 0:
        raise BadInput(f"device '{spec}': no CUDA device here (torch {torch.__version__}, "
                       f"cuda {torch.version.cuda}); use auto or cpu")
    if spec == "cuda":
        index = local_rank() if int(os.environ.get("WORLD_SIZE", "1")) > 1 else torch.cuda.current_device()
    else:
        tail = spec.split(":", 1)[1]
        if not tail.isdigit():
            raise BadInput(f"device '{spec}': expected cuda:N with N in 0..{n - 1}")
        index = int(tail)
    if index >= n:
        raise BadInput(f"device '{spec}': this machine has {n} CUDA device(s), 0..{n - 1}")
    return f"cuda:{index}"


def make_deterministic() -> None:
    """Deterministic kernels (PyTorch's reproducibility notes): torch.use_deterministic_algorithms,
    CUBLAS_WORKSPACE_CONFIG=:4096:8 (before cuBLAS starts) and no cuDNN autotuning, so a resumed
    CUDA run repeats an uninterrupted one. warn_only: an op with no deterministic CUDA kernel
    (AdaptiveAvgPool2d's backward is one) warns naming itself rather than stopping the run."""
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False


def backend() -> str | None:
    d = _dist()
    return d.get_backend() if d is not None else None


def _comm_device():
    """Where collective tensors must live: the rank's GPU under NCCL, the CPU under gloo."""
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if backend() == "nccl" else torch.device("cpu")


def shutdown(*, wait: bool = True) -> None:
    """Leave the process group. `wait=False` on an error path, where peers may never arrive."""
    d = _dist()
    if d is not None and wait:
        # Every rank reaches this point before any tears down: with gloo, a rank that destroys the group
        # while a peer still holds its connection makes that peer abort (SIGABRT), seen on a clean CI run.
        d.barrier()
    if d is not None:
        d.destroy_process_group()


def shard(n: int, *, seed: int, epoch: int, shuffle: bool, pad: bool = True) -> list[int]:
    """This rank's indices for one epoch: a (seed, epoch) permutation taken every world_size-th
    from this rank.

    `pad=True` (training): padded to a multiple of the world size, as DistributedSampler pads,
    so every rank takes the same number of steps. `pad=False` (the teacher cache, accuracy):
    disjoint shards that cover each index exactly once, so nothing summed over ranks counts a
    sample twice; ranks may then hold one index more than others."""
    import torch

    if shuffle:
        g = torch.Generator().manual_seed(seed * 100_003 + epoch)
        order = torch.randperm(n, generator=g).tolist()
    else:
        order = list(range(n))
    w = world_size()
    if pad and w > 1 and n % w:
        order += (order * w)[: w - n % w]  # (order * w): a split smaller than the world size still pads
    return order[rank()::w]


def sum_across(*values: float) -> list[float]:
    """Sum floats over ranks (identity in one process)."""
    d = _dist()
    if d is None:
        return list(values)
    import torch

    t = torch.tensor(values, dtype=torch.float64, device=_comm_device())
    d.all_reduce(t, op=d.ReduceOp.SUM)
    return t.cpu().tolist()


def average_grads(params: list) -> None:
    """Average over ranks the gradients that exist (a parameter no loss reached has none, on every
    rank alike): parameters DDP does not own (a FitNets regressor), or a whole model in a stage
    that trains only part of it. One all-reduce per dtype and device, not one per tensor."""
    d = _dist()
    if d is None:
        return
    import torch

    groups: dict[tuple, list] = {}
    for p in {id(p): p for p in params}.values():
        if p.grad is not None:
            groups.setdefault((p.grad.dtype, p.grad.device), []).append(p.grad)
    for grads in groups.values():
        flat = torch.cat([g.reshape(-1) for g in grads])
        d.all_reduce(flat, op=d.ReduceOp.SUM)
        flat /= d.get_world_size()
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()


def fill_rows(local: Any, indices: list[int], n: int) -> Any:
    """A (n, ...) tensor whose rows `indices` are `local` on this rank; summed over ranks so every
    rank holds the full table. `indices` must be this rank's part of disjoint shards
    (`shard(..., pad=False)`): a row two ranks both filled would be summed twice."""
    import torch

    d = _dist()
    device = _comm_device() if d is not None else local.device
    full = torch.zeros((n, *local.shape[1:]), dtype=local.dtype, device=device)
    full[torch.as_tensor(indices, dtype=torch.long, device=device)] = local.to(device)
    if d is not None:
        d.all_reduce(full, op=d.ReduceOp.SUM)
    return full.to(local.device)




def _global_batchnorm_class():
    import warnings

    import torch
    from torch import nn

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecated in favour of a private module; still the public autograd op
        from torch.distributed.nn.functional import all_reduce as _all_reduce

    def all_reduce(t: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return _all_reduce(t)

    class GlobalBatchNorm2d(nn.BatchNorm2d):
        """BatchNorm over the global batch on CPU ranks (torch's SyncBatchNorm is GPU-only).

        Training statistics are Σx, Σx² and the count, summed across ranks with the
        differentiable all_reduce, so forward and backward equal one process's BatchNorm
        over the whole batch. Same parameters and buffers as nn.BatchNorm2d."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return super().forward(x)
            dims = (0, 2, 3)
            count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype)
            stats = all_reduce(torch.cat([x.sum(dims), (x * x).sum(dims), count]))
            c = x.shape[1]
            n = stats[-1]
            mean, var = stats[:c] / n, stats[c:2 * c] / n - (stats[:c] / n) ** 2
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 0.1
                self.running_mean.mul_(1 - m).add_(m * mean)
                self.running_var.mul_(1 - m).add_(m * var * n / max(float(n) - 1, 1.0))
                self.num_batches_tracked += 1
            y = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
            return y * self.weight[None, :, None, None] + self.bias[None, :, None, None] if self.affine else y

    return GlobalBatchNorm2d


def sync_batchnorm(model):
    """Every BatchNorm2d computes global-batch statistics: torch's SyncBatchNorm on GPU, ours on CPU."""
    from torch import nn

    if any(p.is_cuda for p in model.parameters()):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _global_batchnorm(model, _global_batchnorm_class())


def _global_batchnorm(model, cls):
    from torch import nn

    for name, child in list(model.named_children()):
        if type(child) is nn.BatchNorm2d:
            new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
            new.load_state_dict(child.state_dict())
            setattr(model, name, new)
        else:
            _global_batchnorm(child, cls)
    return model


def wrap(model):
    """DDP with global-batch BatchNorm, so N ranks compute what one process computes (the model
    must already be on its device: SyncBatchNorm on CUDA, GlobalBatchNorm2d on CPU).

    DDP needs every parameter to get a gradient from each step's loss through the forward's
    output. A stage whose loss reads only a tapped activation (the FitNets hint stage, feature
    losses alone) breaks that: even with `find_unused_parameters=True` the next step fails, DDP still
    waiting for the classifier, which the output reaches and the loss does not. Such a stage trains the plain
    module (`_run_stage(partial=True)` in the loop) and `average_grads` averages exactly the gradients
    that exist."""
    if _dist() is None:
        return model
    from torch.nn.parallel import DistributedDataParallel

    if getattr(model, "_edgekd_ddp", None) is None:  # one wrapper per model, even across stages
        p = next(model.parameters())
        ids = [p.device.index] if p.is_cuda else None  # NCCL: this rank's own GPU
        object.__setattr__(model, "_edgekd_ddp", DistributedDataParallel(sync_batchnorm(model), device_ids=ids))
    return model._edgekd_ddp


LOG_ENV = "EDGEKD_LOG_DIR"   # set by `launch`: where each worker writes rank{RANK}.log


class RankFailed(EdgekdError):
    """A rank of a `--nproc`/`--nnodes` launch failed (exit 1): the message names the rank and its first error line."""

    exit_code = 1
    head = "failed"


class _Tee:
    """A text stream writing to a log file and (rank 0 only) the console it replaces."""

    def __init__(self, console, log) -> None:
        self.console, self.log = console, log

    def write(self, s: str) -> int:
        if self.console is not None:
            self.console.write(s)
        self.log.write(s)
        self.log.flush()
        return len(s)

    def flush(self) -> None:
        if self.console is not None:
            self.console.flush()
        self.log.flush()

    def isatty(self) -> bool:
        return self.console is not None and self.console.isatty()

    def __getattr__(self, name: str):
        return getattr(self.console if self.console is not None else self.log, name)


def capture_worker_output() -> None:
    """Under `launch`: this rank's stderr goes to LOG_DIR/rank{RANK}.log (fatal signals' stacks too);
    rank 0 also keeps its console, the other ranks write only to their log. A traceback goes to
    the log alone: the launcher prints one line for it."""
    import faulthandler
    import sys
    import traceback

    folder = os.environ.get(LOG_ENV)
    if not folder or isinstance(sys.stderr, _Tee):
        return
    log = open(Path(folder) / f"rank{os.environ.get('RANK', '0')}.log", "a", encoding="utf-8", buffering=1)
    sys.stderr = _Tee(sys.stderr if os.environ.get("RANK", "0") == "0" else None, log)
    faulthandler.enable(file=log)
    sys.excepthook = lambda kind, value, tb: traceback.print_exception(kind, value, tb, file=log)


def note_run(run_dir: Path) -> None:
    """Tell the launcher (if any) which run folder this rank writes, so it keeps the logs there."""
    folder = os.environ.get(LOG_ENV)
    if folder:
        tmp = Path(folder) / f".run.{os.getpid()}"
        tmp.write_text(str(Path(run_dir).resolve()), encoding="utf-8")
        os.replace(tmp, Path(folder) / "run")


_PEER_LOSS = re.compile(r"Connection (closed|reset) by peer|Broken pipe|NCCL communicator was aborted|"
                        r"Socket Timeout|timed out|ProcessGroup.*(aborted|shut ?down)", re.IGNORECASE)
_ERROR_LINE = re.compile(r"^(edgekd: .*|[A-Za-z_][\w.]*(Error|Exception|Interrupt|Failed|Exit)\b(:.*)?)$")


def first_error_line(text: str) -> str | None:
    """The first line of a worker log that reports an error: edgekd's own one-line report
    (`edgekd: error: ...`), else the first exception line of a traceback (`RuntimeError: ...`)."""
    for raw in text.splitlines():
        line = re.sub(r"^\[rank\d+\]:\s?", "", raw).strip()
        if _ERROR_LINE.match(line):
            return line
    return None


def _signal_name(code: int) -> str:
    import signal

    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"


def _culprit(failures: dict[int, Any], log_dir: Path) -> tuple[int, int, str]:
    """(rank, exit code, one line) of the failure that caused the others: a rank that failed on
    its own comes before one that lost its peer or was stopped by the launcher (SIGTERM)."""
    import signal

    rows = []
    for rank_, f in failures.items():
        log = log_dir / f"rank{rank_}.log"
        line = first_error_line(log.read_text(encoding="utf-8", errors="replace")) if log.is_file() else None
        if line is None:
            line = (f"killed by {_signal_name(f.exitcode)}" if f.exitcode < 0 else f"exit {f.exitcode}") + \
                "; no error line in its log"
        consequence = f.exitcode == -signal.SIGTERM or bool(_PEER_LOSS.search(line))
        rows.append((consequence, f.timestamp, rank_, f.exitcode, line))
    _, _, rank_, code, line = min(rows)
    return rank_, code, line if len(line) <= 240 else line[:239] + "…"


def _keep_logs(log_dir: Path) -> Path | None:
    """Append the workers' logs to RUN/logs/ (the run folder the ranks noted); None when no rank got that far."""
    note = log_dir / "run"
    if not note.is_file():
        return None
    dest = Path(note.read_text(encoding="utf-8")) / "logs"
    dest.mkdir(parents=True, exist_ok=True)
    for log in sorted(log_dir.glob("rank*.log")):
        with open(dest / log.name, "a", encoding="utf-8") as out:
            out.write(log.read_text(encoding="utf-8", errors="replace"))
    return dest


def check_launch(nproc: int, device: str = "auto") -> None:
    """Refuse, before any process starts, `nproc` ranks that cannot each have a GPU of their own
    (rank R trains on cuda:R) and `cuda:N` for several ranks."""
    spec = (device or "auto").strip().lower()
    if nproc < 1:
        raise BadInput(f"--nproc {nproc}: must be >= 1")
    if spec.startswith("cuda:") and nproc > 1:
        raise BadInput(f"--device {spec}: with --nproc {nproc} each rank uses GPU LOCAL_RANK; use --device cuda "
                       f"(choose the GPUs with CUDA_VISIBLE_DEVICES)")
    if spec not in ("auto", "cuda") or nproc == 1:
        return
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n and nproc > n:
        raise BadInput(f"--nproc {nproc}: this machine has {n} CUDA device(s) and each rank needs its own; "
                       f"use --nproc {n}, or --device cpu for {nproc} CPU processes")


def launch(argv: list[str], *, nproc: int, nnodes: str = "1", rdzv_endpoint: str | None = None,
           node_rank: int | None = None) -> int:
    """Run `edgekd <argv>` under torchrun with `nproc` processes per node; 0 when every rank succeeded.

    Each rank's stderr is kept in RUN/logs/rank{R}.log (rank 0's is also shown). When a rank
    fails, the others are stopped and this raises one line naming the rank that failed first
    and its first error line (RankFailed, exit 1; BadInput, exit 2, when that rank's error was
    bad input); the run folder keeps its checkpoints, so `--resume` continues it.

    torchrun's own parser would take our `--run` for an abbreviation of its `--run-path`,
    so the launcher options are parsed alone and our arguments are attached afterwards."""
    import logging
    import shutil
    import tempfile

    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    opts = [f"--nproc-per-node={nproc}", f"--nnodes={nnodes}"]
    if rdzv_endpoint:
        opts += ["--rdzv-backend=c10d", f"--rdzv-endpoint={rdzv_endpoint}"]
        if node_rank is not None:
            opts += [f"--node-rank={node_rank}"]
    else:
        opts += ["--standalone"]
    args = parse_args([*opts, "-m", "edgekd.cli"])
    args.training_script_args = list(argv)
    log_dir = Path(tempfile.mkdtemp(prefix="edgekd-ranks-"))
    os.environ[LOG_ENV] = str(log_dir)
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # the one line below says it
    failure = None
    try:
        run(args)
    except ChildFailedError as e:
        failure = _culprit(e.failures, log_dir)
    finally:
        os.environ.pop(LOG_ENV, None)
        kept = _keep_logs(log_dir)
        shutil.rmtree(log_dir, ignore_errors=True)
    if failure is None:
        return 0
    raise _failure_error(*failure, kept=kept)


def _failure_error(rank_: int, code: int, line: str, *, kept: Path | None) -> EdgekdError:
    where = f"; full logs in {kept}/" if kept is not None else ""
    if code == 2 and line.startswith("edgekd: error: "):
        return BadInput(f"rank {rank_}: {line[len('edgekd: error: '):]}{where}")
    how = f"exit {code}" if code >= 0 else _signal_name(code)
    return RankFailed(f"rank {rank_} ({how}): {line}{where}")
