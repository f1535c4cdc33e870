"""Check a teacher before anything is trained on it: what it takes and returns, its cost, its
accuracy on labeled images in the stated view, its host latency, and the two mistakes that make a
good teacher look bad: a preprocessing mismatch (accuracy near chance) and a different class order.

`edgekd check-teacher` prints this; `edgekd distill` runs the same check before training and
records it in distill.json (`teacher_check`, and `warnings` for what it flags).

The class order is found as an assignment over the confusion matrix (Hungarian method,
`scipy.optimize.linear_sum_assignment`, maximising the agreement with the labels): when the teacher
agrees with the labels far better (defaults.CLASS_ORDER_GAIN) under another order of its outputs,
the warning names that order as a `--class-order` value.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from edgekd import defaults
from edgekd.data import DataBundle
from edgekd.errors import BadInput
from edgekd.models.foreign import LoadedTeacher
from edgekd.train.config import DistillConfig


def _scored_set(cfg: DistillConfig, bundle: DataBundle) -> tuple[str, Dataset, Any]:
    """(split name, labeled images, view function): validation (test where there is none), at most
    defaults.CHECK_MAX_IMAGES, in the teacher's view (read at its own size where the data allows)."""
    from functools import partial

    from edgekd.models.foreign import convert
    from edgekd.train.teacher import data_view, teacher_data, views

    split = "val" if bundle.val is not None and len(bundle.val) else "test"
    hi = teacher_data(cfg, bundle)
    base = getattr(hi or bundle, split)
    src = data_view(hi) if hi is not None else views(cfg, bundle)[0]
    n = min(len(base), defaults.CHECK_MAX_IMAGES)
    ds = base if n == len(base) else Subset(base, np.linspace(0, len(base) - 1, n).astype(int).tolist())
    return split, ds, partial(convert, src=src, dst=views(cfg, bundle)[1])


@torch.no_grad()
def _predictions(model: torch.nn.Module, ds: Dataset, view) -> np.ndarray:
    from edgekd.train.datasets import _indexed_batches

    model.eval()
    return np.concatenate([model(view(x)).argmax(1).cpu().numpy()
                           for x, _ in _indexed_batches(ds, list(range(len(ds))))])


def class_order_check(pred: np.ndarray, labels: np.ndarray, k: int, order: list[int] | None) -> dict[str, Any]:
    """Accuracy as the outputs are read now, and the best agreement under any reordering of them
    (an assignment over the confusion matrix). `order`: the --class-order in force (None: as is);
    `best_order` is in the same terms (data class of each teacher output)."""
    from scipy.optimize import linear_sum_assignment

    conf = np.zeros((k, k), dtype=np.int64)   # rows: the teacher's (reordered) prediction; columns: the label
    np.add.at(conf, (pred, labels), 1)
    rows, cols = linear_sum_assignment(conf, maximize=True)
    sigma = dict(zip(rows.tolist(), cols.tolist()))
    current = list(order) if order is not None else list(range(k))
    n = max(1, len(labels))
    return {"accuracy": float(np.trace(conf) / n), "best_accuracy": float(conf[rows, cols].sum() / n),
            "best_order": [sigma[c] for c in current]}


def host_p50_ms(model: torch.nn.Module, x1: torch.Tensor) -> float:
    """Median batch-1 forward time on this host, over at least defaults.CHECK_TIMING_RUNS runs and
    defaults.CHECK_TIMING_SECONDS (after two warm-up runs)."""
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2):
            model(x1)
        start = time.perf_counter()
        while len(times) < defaults.CHECK_TIMING_RUNS or time.perf_counter() - start < defaults.CHECK_TIMING_SECONDS:
            t0 = time.perf_counter()
            model(x1)
            times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _io(lt: LoadedTeacher, c: int, size: tuple[int, int], k: int) -> dict[str, Any]:
    session = getattr(lt.model, "session", None)
    if session is not None:
        i, o = session.get_inputs()[0], session.get_outputs()[0]
        takes = {"name": i.name, "shape": list(i.shape), "dtype": i.type}
        returns = {"name": o.name, "shape": list(o.shape), "dtype": o.type}
    else:
        takes = {"shape": ["batch", c, *size], "dtype": "float32"}
        returns = {"shape": ["batch", k], "dtype": "float32"}
    return {"takes": takes, "returns": {**returns, "kind": lt.info.get("outputs", "logits"),
                                        "how": lt.info.get("outputs_how", "")}}


def cost(lt_model: torch.nn.Module, input_shape: tuple[int, ...]) -> dict[str, Any]:
    """Params and forward MFLOPs at the teacher's input size: from the graph for an ONNX teacher,
    counted on a forward pass for a PyTorch one, params only for TorchScript."""
    from edgekd.models import count_params, model_cost
    from edgekd.models.foreign import onnx_cost

    if hasattr(lt_model, "session"):
        return onnx_cost(lt_model.path, input_shape)
    if isinstance(getattr(lt_model, "script", lt_model), torch.jit.ScriptModule):
        return {"params": count_params(lt_model)}
    return model_cost(lt_model, input_shape)


def check_one(cfg: DistillConfig, bundle: DataBundle, lt: LoadedTeacher, *, timing: bool = True) -> dict[str, Any]:
    """The facts about one loaded teacher and what they flag (`warnings`)."""
    from edgekd.train.datasets import dataset_labels
    from edgekd.train.teacher import views

    tview = views(cfg, bundle)[1]
    c, k = bundle.input_shape[0], bundle.num_classes
    split, ds, view = _scored_set(cfg, bundle)
    order = lt.info.get("class_order")
    orders = class_order_check(_predictions(lt.model, ds, view), np.asarray(dataset_labels(ds)), k, order)
    out: dict[str, Any] = {
        "teacher": lt.spec.ref, "kind": lt.spec.kind, **_io(lt, c, tuple(tview.size), k),
        **cost(lt.model, (c, *tview.size)), "view": tview.to_dict(),
        "accuracy": orders["accuracy"], "scored_on": {"split": split, "n": len(ds)}, "chance": 1.0 / k,
        "class_order": order, "best_class_order": orders["best_order"], "best_order_accuracy": orders["best_accuracy"]}
    if timing:
        x1 = next(iter(_sample_batch(ds, view)))
        out["host_p50_ms"] = host_p50_ms(lt.model, x1)
    out["warnings"] = warnings_for(out, bundle.labels)
    return out


def _sample_batch(ds: Dataset, view):
    from edgekd.train.datasets import _indexed_batches

    x, _ = next(_indexed_batches(ds, [0]))
    yield view(x)


def warnings_for(check: dict[str, Any], labels: list[str]) -> list[str]:
    """What a check flags: a teacher within CHANCE_FACTOR of chance, and a far better class order."""
    out = []
    acc, chance, ref = check["accuracy"], check["chance"], check["teacher"]
    if check["best_order_accuracy"] - acc >= defaults.CLASS_ORDER_GAIN:
        best = check["best_class_order"]
        out.append(f"teacher {ref}: {100 * acc:.1f}% on {check['scored_on']['split']} as its outputs are read, "
                   f"{100 * check['best_order_accuracy']:.1f}% under another class order: its outputs look like "
                   f"classes {','.join(labels[i] for i in best)}; " + (
                       "leave --class-order out (the data's own order)" if best == sorted(best)
                       else f"pass --class-order {','.join(map(str, best))}"))
    elif acc <= defaults.CHANCE_FACTOR * chance:
        v = check["view"]
        out.append(f"teacher {ref}: {100 * acc:.1f}% on {check['scored_on']['split']} "
                   f"({check['scored_on']['n']} images), within {defaults.CHANCE_FACTOR:g}x of chance "
                   f"({100 * chance:.1f}%): nearly always a preprocessing mismatch; it sees "
                   f"{'x'.join(map(str, v['input_size']))} px, mean {_fmt(v['mean'])}, std {_fmt(v['std'])} "
                   f"(--teacher-input-size, --teacher-mean, --teacher-std)")
    return out


def _fmt(values: list[float]) -> str:
    return ",".join(f"{v:.3g}" for v in values)


def check_teachers(cfg: DistillConfig, bundle: DataBundle, loaded: list[LoadedTeacher | None], *,
                   timing: bool = True) -> list[dict[str, Any]]:
    """`check_one` for every teacher from outside (a registry teacher is trained by the run)."""
    return [check_one(cfg, bundle, lt, timing=timing) for lt in loaded if lt is not None]


def below_control(teacher_acc: float, alone_mean: float | None, ref: str) -> list[str]:
    """The warning distill adds after training when the teacher scored below the student alone."""
    if alone_mean is None or teacher_acc >= alone_mean:
        return []
    return [f"teacher {ref}: {100 * teacher_acc:.1f}% on test, below the student trained alone "
            f"({100 * alone_mean:.1f}%): nearly always a preprocessing mismatch (view, mean/std or class order); "
            f"run edgekd check-teacher"]


def check_teacher(cfg: DistillConfig) -> dict[str, Any]:
    """`edgekd check-teacher`: load the data and the teacher(s) as distill would, and check each."""
    from edgekd.train.config import load_bundle
    from edgekd.train.teacher import check_teacher_paths

    cfg.validate()
    bundle = load_bundle(cfg)
    cfg = cfg.for_data(bundle)   # an ONNX teacher's fixed input dims set its view, as in distill
    loaded = check_teacher_paths(cfg, bundle)
    if not any(lt is not None for lt in loaded):
        raise BadInput(f"teacher {cfg.teacher_list[0]}: a registry teacher is trained by distill; check-teacher "
                       f"checks a teacher from outside (a file, or torchvision:/timm: with --teacher-weights)",
                       params=["teacher"])
    checks = check_teachers(cfg, bundle, loaded)
    return {"data": bundle.describe(), "teachers": checks, "warnings": [w for c in checks for w in c["warnings"]]}
