"""Feature taps: forward hooks by module name, default tap points, and shape checks.

A loss that compares the insides of two networks names a *role* (see `ROLES`);
`default_taps(model)` maps each role to one module of that model, and
`FeatureTap` collects those modules' outputs during a forward pass, keyed by
role, ready to go into `KDBatch.student_feats` / `KDBatch.teacher_feats`:

    s_taps = default_taps(student, roles=objective.taps)
    t_taps = default_taps(teacher, roles=objective.taps)
    with FeatureTap(student, s_taps) as st, FeatureTap(teacher, t_taps) as tt:
        with torch.no_grad():
            t_logits = teacher(x)
        s_logits = student(x)
        batch = KDBatch(s_logits, y, t_logits, student_feats=st.outputs, teacher_feats=tt.outputs)

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from edgekd.errors import BadInput

if TYPE_CHECKING:
    import torch
    from torch import nn

# role -> what it is. Every loss's `taps` uses these names.
ROLES: dict[str, str] = {
    "hidden": "the representation the classifier reads, flattened to (N, D)",
    "feature_map": "the deepest convolutional feature map, (N, C, H, W)",
}

NEAREST_NAMES = 5  # how many module names a bad tap name suggests


# ---------------------------------------------------------------- hooks
def _nearest_modules(name: str, names: Iterable[str]) -> list[str]:
    # cutoff 0: always suggest something, even for a name far from every module
    return difflib.get_close_matches(name, [n for n in names if n], n=NEAREST_NAMES, cutoff=0.0)


def find_module(model: "nn.Module", name: str, *, tap: str | None = None) -> "nn.Module":
    """The submodule `name` (dotted, as in `model.named_modules()`); BadInput with the nearest names."""
    modules = dict(model.named_modules())
    if name in modules:
        return modules[name]
    label = f" for tap '{tap}'" if tap and tap != name else ""
    near = ", ".join(_nearest_modules(name, modules)) or "(the model has no submodules)"
    raise BadInput(f"{type(model).__name__} has no module '{name}'{label}; nearest module names: {near}")


class FeatureTap:
    """Forward hooks that keep the outputs of named modules while the context is open.

    `taps` is either {key: module_name} (the key is usually a role such as "hidden")
    or a list of module names (then each name is its own key). After a forward pass
    `tap.outputs[key]` is that module's output of the latest call; a module called
    twice in one forward keeps its last output. Unknown names fail at construction,
    before any hook is installed. With `detach=True` the outputs are detached
    (for a teacher whose graph is not needed). Hooks are removed on exit.
    """

    def __init__(self, model: "nn.Module", taps: Mapping[str, str] | Sequence[str], *, detach: bool = False):
        self.model = model
        self.names: dict[str, str] = dict(taps) if isinstance(taps, Mapping) else {n: n for n in taps}
        self.modules = {key: find_module(model, name, tap=key) for key, name in self.names.items()}
        self.detach = detach
        self.outputs: dict[str, Any] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> "FeatureTap":
        for key, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._keep(key)))
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def clear(self) -> None:
        self.outputs.clear()

    def _keep(self, key: str):
        def hook(module: "nn.Module", inputs: Any, output: Any) -> None:
            self.outputs[key] = output.detach() if self.detach else output
        return hook


def forward_with_taps(model: "nn.Module", x: "torch.Tensor", taps: Mapping[str, str], *,
                      grad: bool = False) -> tuple["torch.Tensor", dict[str, "torch.Tensor"]]:
    """One forward pass returning (logits, {key: tapped output}); no graph unless `grad`.

    Uses `torch.no_grad`, not `inference_mode`: inference tensors could not be saved
    for the student's backward pass, so they would need a clone.
    """
    import torch

    with FeatureTap(model, taps, detach=not grad) as tap, torch.set_grad_enabled(grad):
        logits = model(x)
    return (logits if grad else logits.detach()), dict(tap.outputs)


def params_feeding(model: "nn.Module", module_name: str, *, example_input: "torch.Tensor") -> list["nn.Parameter"]:
    """The parameters that the output of `module_name` depends on, in `model.parameters()` order.

    Found by autograd on one example forward (in eval mode, so BatchNorm running
    statistics are not touched): exactly "the network up to the tap", whatever the
    model's structure. Used by the FitNets hint stage.
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    model.eval()
    try:
        with FeatureTap(model, {module_name: module_name}) as tap, torch.enable_grad():
            model(example_input)
        out = tap.outputs[module_name]
        grads = torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    finally:
        model.train(was_training)
    return [p for p, g in zip(params, grads) if g is not None]


# ---------------------------------------------------------------- default tap points
def _known_models() -> list[tuple[type, dict[str, str]]]:
    from edgekd.models import Classifier

    known: list[tuple[type, dict[str, str]]] = [(Classifier, {"hidden": "pool", "feature_map": "features"})]
    try:
        from torchvision.models import MobileNetV3, ResNet
    except ImportError:  # torchvision is optional for students-only work
        return known
    known += [(ResNet, {"hidden": "avgpool", "feature_map": "layer4"}),
              (MobileNetV3, {"hidden": "avgpool", "feature_map": "features"})]
    return known


def default_taps(model: "nn.Module", *, roles: Sequence[str] | None = None) -> dict[str, str]:
    """{role: module name} for edgekd's `Classifier` and torchvision's ResNet / MobileNetV3.

    `roles` (e.g. `objective.taps`) restricts the result to those roles.
    """
    for cls, taps in _known_models():
        if isinstance(model, cls):
            break
    else:
        known = ", ".join(cls.__name__ for cls, _ in _known_models())
        raise BadInput(f"no default feature taps for a {type(model).__name__}; known: {known} "
                       f"(name the modules to tap explicitly)")
    if roles is None:
        return dict(taps)
    unknown = [r for r in roles if r not in taps]
    if unknown:
        raise BadInput(f"unknown tap role(s) {', '.join(unknown)}; valid: {', '.join(taps)}")
    return {r: taps[r] for r in roles}


# ---------------------------------------------------------------- checks
def check_compatible(teacher_logits_shape: Sequence[int], student_logits_shape: Sequence[int]) -> None:
    """Teacher and student must predict the same classes: (N, C) logits with equal C."""
    t, s = tuple(teacher_logits_shape), tuple(student_logits_shape)
    if len(t) != 2 or len(s) != 2:
        raise BadInput(f"logits must be (batch, classes); the teacher gives {t}, the student {s}")
    if t[1] != s[1]:
        raise BadInput(f"the teacher predicts {t[1]} classes and the student {s[1]}; "
                       f"distillation needs the same classes in the same order")


def check_feature_map(shape: Sequence[int], *, loss: str, side: str, tap: str) -> None:
    """A feature-map loss needs an (N, C, H, W) output from its tap."""
    if len(shape) != 4:
        raise BadInput(f"{loss}: {side} tap '{tap}' gives shape {tuple(shape)}, not a (N, C, H, W) feature map; "
                       f"tap a convolutional module")


def check_feature_shapes(*, loss: str, student_shape: Sequence[int], teacher_shape: Sequence[int],
                         student_tap: str, teacher_tap: str, compare: str = "flat") -> None:
    """For a loss with no projection: the student's and teacher's features must agree.

    `compare` is "flat" (sizes per sample, as a vector loss sees them) or
    "channels" (dimension 1 of a feature map).
    """
    if compare not in ("flat", "channels"):
        raise ValueError(f"compare must be 'flat' or 'channels', not {compare!r}")
    s, t = tuple(student_shape), tuple(teacher_shape)
    what = "flattened sizes" if compare == "flat" else "channel counts"
    size = (lambda sh: _prod(sh[1:])) if compare == "flat" else (lambda sh: sh[1])
    if size(s) != size(t):
        raise BadInput(f"{loss}: student tap '{student_tap}' gives {s} and teacher tap '{teacher_tap}' gives {t}; "
                       f"their {what} differ ({size(s)} vs {size(t)}) and project=False; "
                       f"use project=True or taps of equal size")


def _prod(xs: Sequence[int]) -> int:
    n = 1
    for x in xs:
        n *= int(x)
    return n
