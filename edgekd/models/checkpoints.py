"""edgekd's checkpoint format: what `distill` saves and `export`, `bench` and `select-student` load.

Every file loads with `torch.load(weights_only=True)`, so loading never runs pickled code.
Each kind (teacher, student, checkpoint) must hold its fields; anything else is BadInput
naming the file. Deployment code reads models only through here, never through training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

from edgekd import artifacts
from edgekd.errors import BadInput, first_line
from edgekd.models.registry import create_student, create_teacher


def _load_reason(e: Exception) -> str:
    """The informative line of torch.load's error (its weights_only notice is boilerplate)."""
    text = str(e)
    if "WeightsUnpickler error:" in text:
        detail = first_line(text.split("WeightsUnpickler error:", 1)[1])
        return f"refused by the safe loader: {detail}"
    first = first_line(text)
    return f"{type(e).__name__}: {first[:100]}" if first else type(e).__name__


# The fields each kind of edgekd checkpoint must hold.
REQUIRED_FIELDS = {
    "teacher": ("arch", "in_channels", "num_classes", "model"),
    "student": ("arch", "in_channels", "num_classes", "target_ops", "model"),
    "checkpoint": ("epoch", "history", "rng"),
}


def load_checkpoint(path: Path, *, kind: str | None = None) -> dict[str, Any]:
    """Load any edgekd .pt safely (weights_only); anything else is BadInput naming the file.
    With `kind`, the checkpoint must be of that kind and hold its fields."""
    if not path.is_file():
        raise BadInput(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a non-checkpoint file
        raise BadInput(f"{path}: not an edgekd checkpoint ({_load_reason(e)})") from None
    if not isinstance(obj, dict) or "kind" not in obj:
        raise BadInput(f"{path}: not an edgekd checkpoint (no 'kind' field)")
    if kind is not None and obj["kind"] != kind:
        raise BadInput(f"{path}: a {obj['kind']} checkpoint, not a {kind}")
    missing = [f for f in REQUIRED_FIELDS.get(obj["kind"], ()) if f not in obj]
    if missing:
        raise BadInput(f"{path}: {obj['kind']} checkpoint lacks {', '.join(missing)}")
    return obj



def save_student(path: Path, cfg: Any, bundle: Any, model: nn.Module, *, seed: int, ops: list[str],
                 target_ops: Iterable[str], net_kwargs: dict[str, Any] | None = None) -> None:
    """`target_ops` are the ops the target allows (its profile's `ops_allow`: the student is rebuilt for
    them). `net_kwargs` (for architectures outside the registry, e.g. from select-student) are the
    keyword arguments of `student_net`; plain ints, strings and lists so weights_only loads them."""
    state = {"kind": "student", "arch": cfg.student, "in_channels": bundle.input_shape[0],
             "num_classes": bundle.num_classes, "target": cfg.target, "seed": seed, "ops": ops,
             "target_ops": sorted(target_ops),
             "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}}  # export runs on CPU
    if net_kwargs is not None:
        state["net_kwargs"] = {k: list(v) if isinstance(v, tuple) else v for k, v in net_kwargs.items()}
    artifacts.save_torch(path, state)



def load_student(run_dir: Path, name: str = "student.pt") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a saved student from its checkpoint (arch + weights)."""
    state = load_checkpoint(run_dir / name, kind="student")
    common = dict(in_channels=state["in_channels"], num_classes=state["num_classes"],
                  target_ops=frozenset(state["target_ops"]))
    if "net_kwargs" in state:
        from edgekd.models.registry import student_net

        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in state["net_kwargs"].items()}
        model = student_net(**common, **kw)
    else:
        model = create_student(state["arch"], **common)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise BadInput(f"{run_dir / name}: weights do not fit student '{state['arch']}' ({first_line(e)})") from None
    return model.eval(), state


def load_teacher(run_dir: Path) -> tuple[nn.Module, dict[str, Any]]:
    state = load_checkpoint(run_dir / "teacher.pt")
    model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
    model.load_state_dict(state["model"])
    return model.eval(), state
