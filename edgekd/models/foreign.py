"""Teachers from outside edgekd, and the teacher's own view of the input.

`--teacher` takes, besides a registry name (which edgekd trains) and an edgekd teacher .pt:
- `torchvision:ARCH` with `--teacher-weights FILE`: the standard architecture (standard stem),
  its class count read from the classifier head in FILE;
- `timm:NAME` with `--teacher-weights FILE`, when timm is installed;
- a TorchScript file (`torch.jit.load`);
- an ONNX file, run by onnxruntime on CPU (logits only: no feature taps).

Weight files load with `torch.load(weights_only=True)`: a plain state_dict, or a checkpoint
dict holding one under `state_dict`/`model`/`model_state_dict`; `module.` (DDP) and
`_orig_mod.` (torch.compile) prefixes are removed. Everything is checked by `load_teacher_spec`
before a run folder exists: each problem is one BadInput line.

A `View` is the size and normalisation a model expects. `convert` turns a batch normalised for
one view into the same images for another (undo mean/std, bilinear antialiased resize, new
mean/std), so the teacher sees the very images of the student's batch (augmented or not).

Nothing here imports a stage (train, deploy, bench): bench uses `recorded_teacher` to time a run's teacher,
and the ONNX teacher's session is built by edgekd.runtime.
"""

from __future__ import annotations

import difflib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from edgekd.errors import BadInput

if TYPE_CHECKING:
    import torch
    from torch import nn

PREFIXES = ("module.", "_orig_mod.")            # DDP and torch.compile wrappers
STATE_KEYS = ("state_dict", "model", "model_state_dict")
ARCH_KINDS = ("torchvision", "timm")             # the kinds that need --teacher-weights
KINDS = ("registry", "edgekd", "torchvision", "timm", "torchscript", "onnx")
# Statistics of ImageNet, for teachers trained on it (`--teacher-mean imagenet`).
PRESETS = {"imagenet": {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}}


# ---------------------------------------------------------------- views
@dataclass(frozen=True)
class View:
    """What a model sees: H×W and per-channel mean/std, in units of the data's scaled pixels
    (pixel × scale, so 0..1 for 8-bit images)."""

    size: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"input_size": list(self.size), "mean": list(self.mean), "std": list(self.std)}


def convert(x: "torch.Tensor", src: View, dst: View) -> "torch.Tensor":
    """A batch normalised for `src` → the same images as `dst` expects."""
    import torch
    import torch.nn.functional as F

    if src == dst:
        return x

    def col(v: Sequence[float]) -> torch.Tensor:
        return torch.tensor(v, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)

    px = x * col(src.std) + col(src.mean)
    if tuple(px.shape[-2:]) != tuple(dst.size):
        # antialias: a downscale averages like PIL's resize instead of skipping pixels
        px = F.interpolate(px, size=tuple(dst.size), mode="bilinear", antialias=True, align_corners=False)
    return (px - col(dst.mean)) / col(dst.std)


def _floats(option: str, text: str | Sequence[float], channels: int, preset_key: str) -> tuple[float, ...]:
    if isinstance(text, str):
        if text in PRESETS:
            values = PRESETS[text][preset_key]
        else:
            try:
                values = tuple(float(v) for v in text.split(",") if v.strip())
            except ValueError:
                raise BadInput(f"{option} '{text}': expected comma-separated numbers (e.g. 0.485,0.456,0.406) "
                               f"or one of: {', '.join(PRESETS)}") from None
    else:
        values = tuple(float(v) for v in text)
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise BadInput(f"{option} '{text}': {len(values)} values for {channels} channel(s) of the data; "
                       f"give {channels} (or one for all)")
    return values


def teacher_view(data_view: View, *, input_size: Any = None, mean: str | None = None,
                 std: str | None = None) -> View:
    """The teacher's view: the data's, with any of size (N, HxW or (H, W))/mean/std replaced (CLI
    text or numbers)."""
    from edgekd.data import parse_hw

    c = len(data_view.mean)
    size = parse_hw(input_size, option="--teacher-input-size")
    if size is not None and not all(8 <= v <= 1024 for v in size):
        raise BadInput(f"--teacher-input-size {size[0]}x{size[1]}: each side must be in 8..1024 pixels")
    out = View(size=size or tuple(data_view.size),
               mean=_floats("--teacher-mean", mean, c, "mean") if mean is not None else data_view.mean,
               std=_floats("--teacher-std", std, c, "std") if std is not None else data_view.std)
    if any(s <= 0 for s in out.std):
        raise BadInput(f"--teacher-std {std}: every value must be > 0")
    return out


# ---------------------------------------------------------------- specs
@dataclass(frozen=True)
class TeacherSpec:
    """One --teacher: its kind, the text given, and the weights file paired with it."""

    kind: str
    ref: str
    weights: str | None = None

    @property
    def arch(self) -> str:
        return self.ref.split(":", 1)[1] if self.kind in ARCH_KINDS else self.ref

    @property
    def eager(self) -> bool:
        """An nn.Module whose submodules can be hooked (feature losses need one)."""
        return self.kind in ("registry", "edgekd", "torchvision", "timm")

    def to_dict(self) -> dict[str, Any]:
        """What distill.json records: the files as absolute paths, with their sha256."""
        out: dict[str, Any] = {"kind": self.kind, "source": self.ref}
        for key, f in (("file", None if self.kind in ARCH_KINDS + ("registry",) else self.ref),
                       ("weights", self.weights)):
            if f:
                out[key], out[f"{key}_sha256"] = str(Path(f).resolve()), _sha256(Path(f))
        return out


def _sha256(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def parse_specs(names: Sequence[str], weights: Sequence[str] = ()) -> list[TeacherSpec]:
    """--teacher values (+ --teacher-weights, paired in order with torchvision:/timm: teachers)."""
    from edgekd.models.registry import TEACHERS

    need = [n for n in names if n.split(":", 1)[0] in ARCH_KINDS]
    if len(weights) != len(need):
        raise BadInput(f"--teacher-weights: {len(weights)} file(s) for {len(need)} torchvision:/timm: teacher(s)"
                       f"{' (' + ', '.join(need) + ')' if need else ''}; give one per such teacher, in order")
    files = iter(weights)
    specs = []
    for name in names:
        head, sep, rest = name.partition(":")
        if sep and head in ARCH_KINDS:
            if not rest:
                raise BadInput(f"--teacher {name}: name the architecture, e.g. {head}:resnet18")
            specs.append(TeacherSpec(head, name, next(files)))
        elif name in TEACHERS:
            specs.append(TeacherSpec("registry", name))
        elif Path(name).exists() or name.endswith((".pt", ".pth", ".onnx", ".ts")) or "/" in name:
            specs.append(TeacherSpec(sniff_file(Path(name)), name))
        else:
            near = difflib.get_close_matches(name, list(TEACHERS), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise BadInput(f"unknown teacher '{name}'{hint}; valid: {', '.join(TEACHERS)}, a teacher file "
                           f"(edgekd .pt, TorchScript, .onnx), torchvision:ARCH or timm:NAME with --teacher-weights")
    return specs


NOT_A_TEACHER = "not an edgekd checkpoint, a TorchScript file or an ONNX model"


def sniff_file(path: Path) -> str:
    """'edgekd' | 'torchscript' | 'onnx' by content (not by suffix); anything else is BadInput."""
    if not path.is_file():
        raise BadInput(f"--teacher {path}: file not found")
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return _sniff_torch_save(path)
    if _is_onnx(path):
        return "onnx"
    return _sniff_torch_save(path)


def _is_onnx(path: Path) -> bool:
    import onnx

    try:
        m = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError and others on a non-ONNX file
        return False
    return m.ir_version > 0 and len(m.graph.node) > 0 and len(m.graph.output) > 0


def _sniff_torch_save(path: Path) -> str:
    import torch

    from edgekd.models.checkpoints import load_checkpoint

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"--teacher {path}: {NOT_A_TEACHER} ({_reason(e)})") from None
    if isinstance(obj, dict) and "kind" in obj:
        load_checkpoint(path, kind="teacher")  # names the kind it is instead, or the fields it lacks
        return "edgekd"
    if _state_dict_of(obj) is not None:
        raise BadInput(f"--teacher {path}: not an edgekd checkpoint but a bare state_dict; name its architecture: "
                       f"--teacher torchvision:ARCH --teacher-weights {path} (or timm:NAME)")
    raise BadInput(f"--teacher {path}: {NOT_A_TEACHER}")


def _reason(e: Exception) -> str:
    from edgekd.models.checkpoints import _load_reason

    return _load_reason(e)


# ---------------------------------------------------------------- weights
def _state_dict_of(obj: Any) -> dict[str, Any] | None:
    import torch

    def is_sd(d: Any) -> bool:
        return isinstance(d, dict) and bool(d) and all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                      for k, v in d.items())
    if is_sd(obj):
        return obj
    if isinstance(obj, dict):
        for key in STATE_KEYS:
            if is_sd(obj.get(key)):
                return obj[key]
    return None


def read_state_dict(path: str | Path) -> dict[str, "torch.Tensor"]:
    """The weights in `path` (safe loader), wrapper prefixes removed; BadInput if none."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise BadInput(f"--teacher-weights {path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise BadInput(f"--teacher-weights {path}: not a PyTorch weights file ({_reason(e)})") from None
    sd = _state_dict_of(obj)
    if sd is None:
        keys = ", ".join(map(str, list(obj)[:6])) if isinstance(obj, dict) else type(obj).__name__
        raise BadInput(f"--teacher-weights {path}: no state_dict in it (looked at the top level and "
                       f"{'/'.join(STATE_KEYS)}; found {keys})")
    out = {}
    for k, v in sd.items():
        while k.startswith(PREFIXES):
            k = k[len(next(p for p in PREFIXES if k.startswith(p))):]
        out[k] = v
    return out


def check_fit(model: "nn.Module", sd: dict[str, "torch.Tensor"], *, what: str, path: str) -> None:
    """BadInput naming the first key whose shape differs (both shapes), or that is missing/extra."""
    want = model.state_dict()
    for k, v in want.items():
        if k not in sd:
            if k.endswith("num_batches_tracked"):
                continue  # older checkpoints lack it; the model's zero is right
            raise BadInput(f"--teacher-weights {path}: weights do not fit {what}: no '{k}' {tuple(v.shape)} "
                           f"in the file ({sum(1 for x in want if x not in sd)} missing keys)")
        if tuple(sd[k].shape) != tuple(v.shape):
            raise BadInput(f"--teacher-weights {path}: weights do not fit {what}: '{k}' is "
                           f"{tuple(sd[k].shape)} in the file, {tuple(v.shape)} in the architecture")
    extra = [k for k in sd if k not in want]
    if extra:
        raise BadInput(f"--teacher-weights {path}: weights do not fit {what}: unexpected key '{extra[0]}' "
                       f"({len(extra)} in all)")


def _stem_channels(sd: dict[str, "torch.Tensor"], order: Sequence[str]) -> int | None:
    """Input channels: dim 1 of the first 4-D weight, in the architecture's order."""
    for k in order:
        if k in sd and sd[k].ndim == 4:
            return int(sd[k].shape[1])
    return None


def _head_keys(build) -> list[str]:
    """The classifier head's keys: those whose shape changes with num_classes (built on meta)."""
    import torch

    try:
        with torch.device("meta"):
            a, b = build(1000).state_dict(), build(1001).state_dict()
    except Exception:  # an architecture whose constructor computes on its tensors
        a, b = build(1000).state_dict(), build(1001).state_dict()
    return [k for k in a if tuple(a[k].shape) != tuple(b[k].shape)]


def _arch_builder(spec: TeacherSpec, in_channels: int):
    if spec.kind == "torchvision":
        import torchvision

        valid = torchvision.models.list_models(module=torchvision.models)
        if spec.arch not in valid:
            near = difflib.get_close_matches(spec.arch, valid, n=5, cutoff=0.0)
            raise BadInput(f"--teacher {spec.ref}: not a torchvision classification model; nearest: "
                           f"{', '.join(near)} (all: torchvision.models.list_models())")
        return lambda k: torchvision.models.get_model(spec.arch, weights=None, num_classes=k)
    try:
        import timm
    except ImportError:
        raise BadInput(f"--teacher {spec.ref}: timm is not installed; pip install timm "
                       f"(or pip install 'edgekd[timm]')") from None
    if not timm.is_model(spec.arch):
        near = difflib.get_close_matches(spec.arch, timm.list_models(), n=5, cutoff=0.0)
        raise BadInput(f"--teacher {spec.ref}: not a timm model; nearest: {', '.join(near)}")
    return lambda k: timm.create_model(spec.arch, pretrained=False, num_classes=k, in_chans=in_channels)


def _build_arch(spec: TeacherSpec, *, channels: int, num_classes: int) -> "nn.Module":
    sd = read_state_dict(spec.weights)
    heads = _head_keys(_arch_builder(spec, channels))
    head = next((k for k in heads if k in sd), None)
    if head is None:
        raise BadInput(f"--teacher-weights {spec.weights}: weights do not fit {spec.ref}: no classifier head "
                       f"'{heads[0] if heads else '?'}' in the file")
    k = int(sd[head].shape[0])
    model = _arch_builder(spec, channels)(k)
    c = _stem_channels(sd, list(model.state_dict()))
    _check_io(spec, classes=k, channels=c, data_classes=num_classes, data_channels=channels)
    check_fit(model, sd, what=spec.ref, path=spec.weights)
    model.load_state_dict(sd, strict=False)  # check_fit allowed only absent num_batches_tracked
    return model.eval()


def _check_io(spec: TeacherSpec, *, classes: int | None, channels: int | None, data_classes: int,
              data_channels: int) -> None:
    if classes is not None and classes != data_classes:
        raise BadInput(f"--teacher {spec.ref}: the teacher has {classes} classes, the data has {data_classes}")
    if channels is not None and channels != data_channels:
        raise BadInput(f"--teacher {spec.ref}: the teacher takes {channels} input channels, the data has "
                       f"{data_channels}")


# ---------------------------------------------------------------- TorchScript and ONNX
def _load_torchscript(spec: TeacherSpec, *, channels: int, num_classes: int, view: View) -> "nn.Module":
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch 2.x marks TorchScript deprecated; it still loads
            model = torch.jit.load(spec.ref, map_location="cpu").eval()
    except Exception as e:
        raise BadInput(f"--teacher {spec.ref}: not a readable TorchScript file ({_reason(e)})") from None
    params = dict(model.named_parameters())
    _check_io(spec, classes=None, channels=_stem_channels(params, list(params)), data_classes=num_classes,
              data_channels=channels)
    out = _probe(model, spec, channels, view)
    _check_io(spec, classes=out, channels=None, data_classes=num_classes, data_channels=channels)
    return model


def _probe(model, spec: TeacherSpec, channels: int, view: View) -> int:
    """Class count from one forward pass on a (2, C, H, W) batch of zeros."""
    import torch

    shape = (2, channels, *view.size)
    try:
        with torch.no_grad():
            y = model(torch.zeros(shape))
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[-1][:160]
        raise BadInput(f"--teacher {spec.ref}: fails on a {shape} input: {first}") from None
    if not hasattr(y, "ndim") or y.ndim != 2 or y.shape[0] != 2:
        raise BadInput(f"--teacher {spec.ref}: returns {tuple(getattr(y, 'shape', ()))} for a {shape} input; "
                       f"a classifier returns (batch, classes) logits")
    return int(y.shape[1])


def _onnx_module_base():
    from torch import nn

    class OnnxTeacher(nn.Module):
        """An ONNX classifier run by onnxruntime (CPU) behind an nn.Module's call: logits only.
        The session is edgekd.runtime's (the bench agent's builder), fed in chunks of a fixed batch."""

        def __init__(self, path: str, threads: int):
            super().__init__()
            from edgekd.runtime.session import build_session, fixed_batch

            self.path = path
            self.session, _ = build_session(path, threads=threads)
            inp = self.session.get_inputs()[0]
            self.input_name, self.input_shape = inp.name, list(inp.shape)
            self.fixed_batch = fixed_batch(self.session)

        def forward(self, x):
            import numpy as np
            import torch

            from edgekd.runtime.agent import run_chunked

            a = x.detach().to("cpu", torch.float32).numpy()
            out = run_chunked(np, self.session, self.input_name, a, self.fixed_batch or max(len(a), 1))
            return torch.from_numpy(np.ascontiguousarray(out, dtype=np.float32)).to(x.device)

    return OnnxTeacher


def _load_onnx(spec: TeacherSpec, *, channels: int, num_classes: int, view: View) -> "nn.Module":
    import torch

    from edgekd.runtime.agent import AgentError

    try:
        model = _onnx_module_base()(spec.ref, threads=torch.get_num_threads())
    except AgentError as e:  # "<path>: onnxruntime cannot load the model with <EP>: <ORT's line>"
        raise BadInput(f"--teacher {spec.ref}: onnxruntime cannot load it ({str(e).split(': ', 2)[-1]})") from None
    except Exception as e:
        raise BadInput(f"--teacher {spec.ref}: onnxruntime cannot load it ({_reason(e)})") from None
    inputs = [i for i in model.session.get_inputs()]
    if len(inputs) != 1 or len(model.input_shape) != 4:
        raise BadInput(f"--teacher {spec.ref}: expected one (N, C, H, W) input, found "
                       f"{[(i.name, i.shape) for i in inputs]}")
    c, h, w = model.input_shape[1:]
    _check_io(spec, classes=None, channels=c if isinstance(c, int) else None, data_classes=num_classes,
              data_channels=channels)
    if isinstance(h, int) and isinstance(w, int) and (h, w) != tuple(view.size):
        raise BadInput(f"--teacher {spec.ref}: the model takes {h}x{w} inputs, the teacher's view is "
                       f"{view.size[0]}x{view.size[1]}; pass --teacher-input-size {h}x{w}")
    _check_io(spec, classes=_probe(model, spec, channels, view), channels=None, data_classes=num_classes,
              data_channels=channels)
    return model


def fixed_input_size(spec: TeacherSpec) -> tuple[int, int] | None:
    """(H, W) when the teacher file fixes its spatial input dims (an ONNX graph input N×C×H×W with
    integer H and W), else None: the teacher then takes the view it is given."""
    if spec.kind != "onnx":
        return None
    import onnx

    try:
        g = onnx.load(spec.ref, load_external_data=False).graph
    except Exception:
        return None  # _load_onnx names what is wrong with the file
    inits = {i.name for i in g.initializer}
    inputs = [v for v in g.input if v.name not in inits]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in inputs[0].type.tensor_type.shape.dim] \
        if len(inputs) == 1 else []
    return (dims[2], dims[3]) if len(dims) == 4 and dims[2] and dims[3] else None


def teacher_size(specs: Sequence[TeacherSpec], given: Any) -> tuple[int, int] | None:
    """The teacher's H×W: `given` (--teacher-input-size), else the first teacher's fixed input dims.
    A given size that conflicts with a teacher's fixed dims is BadInput (before any run folder)."""
    from edgekd.data import parse_hw

    size = parse_hw(given, option="--teacher-input-size")
    for spec in specs:
        fixed = fixed_input_size(spec)
        if fixed is None:
            continue
        if size is not None and size != fixed:
            raise BadInput(f"--teacher-input-size {size[0]}x{size[1]}: --teacher {spec.ref} has a fixed "
                           f"{fixed[0]}x{fixed[1]} input; drop the option (the teacher's dims set its view) "
                           f"or give {fixed[0]}x{fixed[1]}")
        size = fixed
    return size


# ---------------------------------------------------------------- entry points
@dataclass
class LoadedTeacher:
    """A teacher read from outside (not trained by this run), checked against the data."""

    spec: TeacherSpec
    model: "nn.Module"
    info: dict[str, Any] = field(default_factory=dict)


def load_teacher_spec(spec: TeacherSpec, *, channels: int, num_classes: int, view: View) -> LoadedTeacher | None:
    """Load and check one teacher; None for a registry name (the run trains it)."""
    from edgekd.models.checkpoints import load_checkpoint
    from edgekd.models.registry import TEACHERS, create_teacher

    if spec.kind == "registry":
        return None
    if spec.kind in ARCH_KINDS:
        model = _build_arch(spec, channels=channels, num_classes=num_classes)
    elif spec.kind == "torchscript":
        model = _load_torchscript(spec, channels=channels, num_classes=num_classes, view=view)
    elif spec.kind == "onnx":
        model = _load_onnx(spec, channels=channels, num_classes=num_classes, view=view)
    else:
        state = load_checkpoint(Path(spec.ref), kind="teacher")
        if state["arch"] not in TEACHERS:
            raise BadInput(f"{spec.ref}: teacher arch '{state['arch']}' is unknown; valid: {', '.join(TEACHERS)}")
        _check_io(spec, classes=state["num_classes"], channels=state["in_channels"], data_classes=num_classes,
                  data_channels=channels)
        model = create_teacher(state["arch"], in_channels=state["in_channels"], num_classes=state["num_classes"])
        model.load_state_dict(state["model"])
        model.eval()
    info = {**spec.to_dict(), "arch": spec.arch if spec.kind != "edgekd" else state["arch"]}
    return LoadedTeacher(spec, model, info)


def recorded_teacher(spec: dict[str, Any], *, channels: int, num_classes: int, view: View) -> "Path | nn.Module":
    """A run's foreign teacher as distill.json records it, for bench to time: the ONNX file itself for
    an ONNX teacher, else the loaded model (bench exports it)."""
    s = TeacherSpec(spec["kind"], spec.get("file", spec["source"]), spec.get("weights"))
    if s.kind == "onnx":
        return Path(s.ref)
    loaded = load_teacher_spec(s, channels=channels, num_classes=num_classes, view=view)
    if loaded is None:
        raise BadInput(f"teacher '{s.ref}' is trained by a run; its teacher.pt is missing")
    return loaded.model


# ---------------------------------------------------------------- what a teacher returns
OUTPUT_KINDS = ("auto", "logits", "probabilities", "log-probabilities")
_PASS_THROUGH = ("Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast")   # ops that keep the values


def graph_output_kind(model: Any) -> str | None:
    """What the model's last op says it returns: 'probabilities' (Softmax), 'log-probabilities'
    (LogSoftmax), or None (no such op found). Read from the ONNX graph, the TorchScript graph,
    or an eager model's last registered module."""
    import torch
    from torch import nn

    if hasattr(model, "session"):  # edgekd's OnnxTeacher
        return _onnx_output_kind(model.path)
    names = {"softmax": "probabilities", "log_softmax": "log-probabilities"}
    if isinstance(model, torch.jit.ScriptModule):
        try:
            graph = model.inlined_graph   # held: its nodes are invalid once the graph is freed
            return names.get(graph.return_node().inputsAt(0).node().kind().split("::")[-1])
        except Exception:  # a graph torch cannot inline: say nothing
            return None
    last = list(model.modules())[-1] if isinstance(model, nn.Module) else None
    return ("probabilities" if isinstance(last, nn.Softmax) else
            "log-probabilities" if isinstance(last, nn.LogSoftmax) else None)


def _onnx_output_kind(path: str | Path) -> str | None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producer.get(node.input[0])
    if node is None:
        return None
    return {"Softmax": "probabilities", "LogSoftmax": "log-probabilities"}.get(node.op_type)


def sample_kind(y: "torch.Tensor", *, tol: float = 1e-3) -> str:
    """What a sample of outputs (batch, classes) looks like: rows ≥ 0 summing to 1 are
    probabilities, rows ≤ 0 whose logsumexp is 0 are log-probabilities, anything else logits."""
    y = y.detach().double()
    if bool((y >= -1e-6).all()) and bool(((y.sum(1) - 1).abs() <= tol).all()):
        return "probabilities"
    if bool((y <= 1e-6).all()) and bool((y.logsumexp(1).abs() <= tol).all()):
        return "log-probabilities"
    return "logits"


def resolve_output_kind(requested: str, declared: str | None, sample: "torch.Tensor", *, ref: str) -> tuple[str, str]:
    """(kind, how it was decided). `auto` takes what a sample of real outputs shows (the graph's
    last op is named beside it); a kind given explicitly must not contradict the sample."""
    if requested not in OUTPUT_KINDS:
        raise BadInput(f"--teacher-outputs {requested}: valid: {', '.join(OUTPUT_KINDS)}")
    seen = sample_kind(sample)
    op = {"probabilities": "Softmax", "log-probabilities": "LogSoftmax"}.get(declared or "")
    evidence = {"probabilities": "rows ≥ 0 summing to 1", "log-probabilities": "rows ≤ 0 with logsumexp 0",
                "logits": "rows that are neither probabilities nor log-probabilities"}[seen]
    how = (f"last op {op}; " if op else "") + f"a sample of {len(sample)} outputs: {evidence}"
    if requested == "auto":
        return seen, f"auto: {how}"
    lo, hi = float(sample.min()), float(sample.max())
    wrong = {"probabilities": lo < -1e-6 or hi > 1 + 1e-6,      # not in [0, 1]: not probabilities
             "log-probabilities": hi > 1e-6,                     # above 0: not a log of a probability
             "logits": seen == "probabilities"}[requested]       # probabilities read as logits: the flat-target bug
    if wrong:
        raise BadInput(f"--teacher-outputs {requested}: --teacher {ref} returns values in [{lo:.3g}, {hi:.3g}] on a "
                       f"sample of {len(sample)} images, {evidence} (looks like {seen}); use --teacher-outputs auto "
                       f"or {seen}")
    return requested, f"given; {how}"


def parse_class_order(text: str | Sequence[int] | None, labels: Sequence[str]) -> list[int] | None:
    """--class-order: the data class of each teacher output, in the teacher's output order, as
    indices (`2,0,1`: output 0 is class 2) or class names; a permutation of the data's classes."""
    if text is None:
        return None
    items = [t.strip() for t in text.split(",")] if isinstance(text, str) else list(text)
    names = [str(x) for x in labels]
    try:
        order = [int(t) for t in items]
    except (TypeError, ValueError):
        order = [names.index(t) if t in names else -1 for t in items]
    if sorted(order) != list(range(len(names))):
        raise BadInput(f"--class-order '{text}': expected a permutation of the {len(names)} classes, as indices "
                       f"0..{len(names) - 1} (e.g. {','.join(map(str, reversed(range(len(names)))))}) or names "
                       f"({','.join(names[:8])}{'…' if len(names) > 8 else ''})")
    return None if order == list(range(len(names))) else order


class OutputAdapter:
    """A forward hook that turns a teacher's outputs into logits in the data's class order:
    probabilities → log(max(p, PROB_FLOOR)); log-probabilities kept (log-softmax of logits z is
    z − logsumexp(z): the same logits up to a per-row constant, which softmax-based losses
    ignore); then the columns reordered so that column c is data class c."""

    def __init__(self, kind: str, order: Sequence[int] | None = None):
        import torch

        self.kind = kind
        self.index = None if order is None else torch.as_tensor(sorted(range(len(order)), key=lambda i: order[i]))

    def __call__(self, module: Any, inputs: Any, out: "torch.Tensor") -> "torch.Tensor":
        import torch

        from edgekd import defaults

        if self.kind == "probabilities":
            out = torch.log(out.float().clamp_min(defaults.PROB_FLOOR))
        if self.index is not None:
            out = out[:, self.index.to(out.device)]
        return out


def adapt_outputs(lt: LoadedTeacher, sample: "torch.Tensor", *, outputs: str = "auto",
                  class_order: Sequence[int] | None = None) -> LoadedTeacher:
    """Decide what `lt` returns (`outputs`, checked on `sample`: images in the teacher's view) and
    hook the model so that everything downstream (losses, the cache, accuracy) reads logits in
    the data's class order. Recorded in `lt.info` (distill.json's teacher.outputs, class_order)."""
    import torch

    with torch.inference_mode():
        y = lt.model.eval()(sample)
    kind, how = resolve_output_kind(outputs, graph_output_kind(lt.model), y, ref=lt.spec.ref)
    if kind != "logits" or class_order is not None:
        if isinstance(lt.model, torch.jit.ScriptModule):   # no hooks on a loaded ScriptModule: wrap it
            lt.model = _adapted_script(lt.model, OutputAdapter(kind, class_order))
        else:   # a hook keeps the module names that feature taps address
            lt.model.register_forward_hook(OutputAdapter(kind, class_order))
    lt.info.update({"outputs": kind, "outputs_how": how, "class_order": list(class_order) if class_order else None})
    return lt


def _adapted_script(script: Any, adapter: OutputAdapter) -> "nn.Module":
    from torch import nn

    class AdaptedScript(nn.Module):
        """A TorchScript teacher whose outputs go through `adapter` (`script`: the file's module)."""

        def __init__(self):
            super().__init__()
            self.script = script

        def forward(self, x):
            return adapter(self, (x,), self.script(x))

    return AdaptedScript().eval()


# ---------------------------------------------------------------- cost of an ONNX teacher
def onnx_cost(path: str | Path, input_shape: Sequence[int]) -> dict[str, Any]:
    """{"params", "mflops"} of an ONNX classifier for one input of `input_shape` (C, H, W): params
    are the initializers' elements; MFLOPs are 2 × the multiply-adds of Conv (output elements ×
    C_in/group × kernel), Gemm and MatMul (output elements × the shared dimension), with the
    shapes from onnx shape inference at batch 1, as `models.layer_macs` counts a PyTorch model."""
    import numpy as np
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    params = int(sum(int(np.prod(t.dims, dtype=np.int64)) for t in model.graph.initializer))
    inp = model.graph.input[0]
    for d, v in zip(inp.type.tensor_type.shape.dim, (1, *input_shape)):
        d.ClearField("dim_param")
        d.dim_value = int(v)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except Exception:  # an op onnx cannot infer: params only
        return {"params": params}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({t.name: list(t.dims) for t in model.graph.initializer})
    macs = sum(_node_macs(n, shapes) for n in inferred.graph.node)
    return {"params": params, "mflops": round(2 * macs / 1e6, 2)}


def _node_macs(node: Any, shapes: dict[str, list[int]]) -> int:
    import numpy as np

    out = shapes.get(node.output[0]) if node.output else None
    if not out or 0 in out or node.op_type not in ("Conv", "Gemm", "MatMul"):
        return 0
    w = shapes.get(node.input[1], [])
    if node.op_type == "Conv" and len(w) >= 3:
        return int(np.prod(out, dtype=np.int64)) * int(np.prod(w[1:], dtype=np.int64))
    a = shapes.get(node.input[0], [])
    if node.op_type == "Gemm" and a:
        trans_a = any(at.name == "transA" and at.i for at in node.attribute)
        return int(np.prod(out, dtype=np.int64)) * a[0 if trans_a else -1]
    return int(np.prod(out, dtype=np.int64)) * a[-1] if a else 0
