"""What a model costs: parameters and multiply-adds counted on a real forward pass (`forward_macs`), and the
registry teachers' costs at a dataset's input size (`edgekd teachers`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgekd import defaults
from edgekd.models.registry import TEACHERS, create_teacher


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def layer_macs(mod: nn.Module, out: torch.Tensor) -> int:
    """Multiply-adds of one module's forward, from its output: Conv2d output elements ×
    (in_channels / groups) × kh × kw, Linear output elements × in_features, 0 for anything else
    (BN, activations and pools are < 5% of a CNN's work)."""
    if isinstance(mod, nn.Conv2d):
        return out.numel() * mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
    if isinstance(mod, nn.Linear):
        return out.numel() * mod.in_features
    return 0


def forward_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-adds of one forward pass of one input of `input_shape` (C, H, W), counted on a
    real pass (`layer_macs` of every Conv2d and Linear)."""
    macs = 0

    def count(mod: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        nonlocal macs
        macs += layer_macs(mod, out)

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    # The input on the model's own device (a teacher already on CUDA, a model on `meta`), CPU when it has no tensors.
    where = next(iter([*model.parameters(), *model.buffers()]), None)
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape, device=where.device if where is not None else "cpu"))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return macs


def model_mflops(model: nn.Module, input_shape: tuple[int, ...]) -> float:
    """Forward MFLOPs for one input: 2 × `forward_macs`. Training costs about 3× this per image."""
    return 2 * forward_macs(model, input_shape) / 1e6


def model_cost(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """{"params", "mflops"} of a model at one input size: what the teacher listing shows."""
    return {"params": count_params(model), "mflops": round(model_mflops(model, input_shape), 2)}


def teacher_costs(input_shape: tuple[int, ...], num_classes: int = 10) -> list[dict[str, Any]]:
    """Every registry teacher's cost at `input_shape`: name, params, forward MFLOPs."""
    out = []
    for name in TEACHERS:
        torch.manual_seed(0)
        model = create_teacher(name, in_channels=input_shape[0], num_classes=num_classes)
        out.append({"teacher": name, **model_cost(model, input_shape)})
    return out


def teachers_for_data(data: str = defaults.DATA, *, data_dir: Any = None) -> dict[str, Any]:
    """`edgekd teachers`: every registry teacher's cost at the data's input size, and which
    one distill picks by default for it (`defaults.recipe`)."""
    from edgekd.data import load_data

    bundle = load_data(data, data_dir=data_dir)
    rule = defaults.recipe(n_train=len(bundle.train), input_shape=bundle.input_shape, num_classes=bundle.num_classes)
    return {"data": bundle.name, "input_shape": list(bundle.input_shape), "default": rule["teacher"],
            "teachers": teacher_costs(bundle.input_shape, bundle.num_classes)}
