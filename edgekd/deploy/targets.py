"""Target profiles: load, validate and list `targets/*.toml`.

A profile is data. The schema below is the single description of what a
profile may hold; the loader walks it and refuses anything else with a
one-line error naming the file and the key (exit 2).
"""

from __future__ import annotations

import difflib
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from edgekd import defaults
from edgekd.errors import BadInput

# The opset range both torch's exporter and the host's onnxruntime handle. A profile pinned to an
# older onnxruntime ([runtime] package) may hold less: export then says so (edgekd.deploy.runtimes).
OPSET_RANGE = (11, 22)
PRECISIONS = ("fp32", "fp16", "int8")
# The arithmetic a provider computes an fp32 model in. Some do not stay in fp32 unless told
# (OpenVINO's CPU plugin picks bf16 on CPUs with AVX512-BF16/AMX); a profile states it, sets the
# provider's option that enforces it, and gives reduced precisions their own [parity.<p>] tolerances.
COMPUTE_PRECISIONS = ("fp32", "bf16", "fp16")
DEVICE_TYPES = ("CPU", "GPU", "NPU")
PLUGIN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")       # a pip package name
EP_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*ExecutionProvider$")
GRAPH_OPT_LEVELS = ("disable", "basic", "extended", "all")
ARCHES = ("aarch64", "x86_64", "armv7", "riscv64")


@dataclass(frozen=True)
class Provider:
    """One execution provider entry: built into onnxruntime, or a plugin EP shipped by the pip
    package `plugin` and run on its `device` type. `precision` is what it computes in."""

    name: str
    options: dict[str, str] = field(default_factory=dict)
    plugin: str | None = None
    device: str | None = None
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "options": dict(self.options), "precision": self.precision}
        if self.plugin:
            out["plugin"] = self.plugin
        if self.device:
            out["device"] = self.device
        return out


@dataclass(frozen=True)
class Budget:
    """`[budget]`: limits a deployable model must meet (None = no limit); see `edgekd.checks`."""

    latency_p90_ms: float | None = None
    peak_memory_mb: float | None = None
    model_size_mb: float | None = None


@dataclass(frozen=True)
class Tolerance:
    """Tolerances for one compute precision."""

    atol: float
    rtol: float
    min_top1_agreement: float


@dataclass(frozen=True)
class Parity:
    """fp32 tolerances, the int8 top-1 floor, and tolerances per reduced compute precision."""

    atol: float
    rtol: float
    min_top1_agreement: float
    int8_min_top1_agreement: float | None = None
    reduced: dict[str, Tolerance] = field(default_factory=dict)

    def for_precision(self, precision: str) -> Tolerance:
        """The tolerances a provider computing in `precision` is held to."""
        if precision == "fp32":
            return Tolerance(self.atol, self.rtol, self.min_top1_agreement)
        return self.reduced[precision]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"atol": self.atol, "rtol": self.rtol, "min_top1_agreement": self.min_top1_agreement,
                               "int8_min_top1_agreement": self.int8_min_top1_agreement}
        out.update({p: vars(t) for p, t in self.reduced.items()})
        return out


@dataclass(frozen=True)
class TargetProfile:
    """One validated `targets/NAME.toml`: the target's runtime, the ops it runs, precisions,
    budget and parity tolerances. Made only by `load_target`; `to_json()` is `edgekd targets T --json`."""

    name: str
    arch: str
    opset: int
    providers: tuple[Provider, ...]
    intra_op_threads: int
    inter_op_threads: int
    graph_optimization: str
    ops_allow: frozenset[str]
    precisions: tuple[str, ...]
    parity: Parity
    budget: Budget | None = None
    description: str = ""
    ops_caveats: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    package: str | None = None        # the onnxruntime distribution the device runs; None: the host's

    @property
    def runtime(self) -> str:
        """`package`, or "host" (the onnxruntime edgekd itself imports)."""
        return self.package or "host"

    @property
    def ref(self) -> str:
        """How a command names this profile: its name where that finds this file, else its path."""
        found = _profile_files().get(self.name)
        return self.name if self.path is None or (found and found.resolve() == self.path.resolve()) else str(self.path)

    def allows(self, op: str) -> bool:
        return op in self.ops_allow

    def to_json(self) -> dict[str, Any]:
        """`to_dict()` plus this machine's state of the profile's runtime (edgekd.deploy.runtimes.status)."""
        from edgekd.deploy.runtimes import status

        return {**self.to_dict(), "runtime_status": status(self)}

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "description": self.description, "arch": self.arch,
            "opset": self.opset, "path": str(self.path) if self.path else None,
            "runtime": {
                "package": self.package,
                "providers": [p.to_dict() for p in self.providers],
                "intra_op_threads": self.intra_op_threads,
                "inter_op_threads": self.inter_op_threads,
                "graph_optimization": self.graph_optimization,
            },
            "ops": {"allow": sorted(self.ops_allow), "caveats": dict(self.ops_caveats)},
            "precision": {"allowed": list(self.precisions)},
            "budget": None if self.budget is None else vars(self.budget),
            "parity": self.parity.to_dict(),
        }


# ---------------------------------------------------------------- schema
# key -> (type, required). Nested tables are dicts of the same shape.
_NUM = (int, float)
SCHEMA: dict[str, Any] = {
    "name": (str, True),
    "description": (str, False),
    "arch": (str, True),
    "opset": (int, True),
    "runtime": ({
        "package": (str, False),
        "providers": (list, True),
        "intra_op_threads": (int, True),
        "inter_op_threads": (int, True),
        "graph_optimization": (str, True),
    }, True),
    "ops": ({
        "allow": (list, True),
        "caveats": (dict, False),
        "source": (str, False),
    }, True),
    "precision": ({"allowed": (list, True)}, True),
    "budget": ({
        "latency_p90_ms": (_NUM, False),
        "peak_memory_mb": (_NUM, False),
        "model_size_mb": (_NUM, False),
    }, False),
    "parity": ({
        "atol": (_NUM, True),
        "rtol": (_NUM, True),
        "min_top1_agreement": (_NUM, True),
        "int8_min_top1_agreement": (_NUM, False),
        **{p: ({"atol": (_NUM, True), "rtol": (_NUM, True), "min_top1_agreement": (_NUM, True)}, False)
           for p in COMPUTE_PRECISIONS if p != "fp32"},
    }, True),
}
PROVIDER_KEYS = {"name": str, "options": dict, "plugin": str, "device": str, "precision": str}


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # becomes a folder name under the run


def _fail(path: Path, key: str, msg: str) -> BadInput:
    # repr() keeps a key holding quotes or newlines on one line
    return BadInput(f"{path}: key {key!r}: {msg}".replace("\n", "\\n"))


def _type_name(t: Any) -> str:
    if t is _NUM:
        return "number"
    return {str: "string", int: "integer", list: "array", dict: "table"}.get(t, str(t))


def _article(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _check_table(path: Path, data: dict, schema: dict, prefix: str = "") -> None:
    for key in data:
        if key not in schema:
            near = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean '{near[0]}'?)" if near else ""
            raise _fail(path, prefix + key, f"unknown key{hint}; valid keys: {', '.join(schema)}")
    for key, (typ, required) in schema.items():
        full = prefix + key
        if key not in data:
            if required:
                raise _fail(path, full, "missing (required)")
            continue
        value = data[key]
        if isinstance(typ, dict):
            if not isinstance(value, dict):
                raise _fail(path, full, f"must be a table, got {type(value).__name__}")
            _check_table(path, value, typ, full + ".")
        elif isinstance(value, bool) or not isinstance(value, typ):
            raise _fail(path, full, f"must be {_article(_type_name(typ))}, got {value!r}")


def _available_provider_names() -> list[str]:
    import onnxruntime as ort  # lazy: only validating providers needs it

    return list(ort.get_all_providers())


def _check_providers(path: Path, raw: list) -> tuple[Provider, ...]:
    if not raw:
        raise _fail(path, "runtime.providers", "must name at least one execution provider")
    known = _available_provider_names()
    return tuple(_check_provider(path, f"runtime.providers[{i}]", item, known) for i, item in enumerate(raw))


def _check_provider(path: Path, key: str, item: Any, known: list[str]) -> Provider:
    if not isinstance(item, dict):
        raise _fail(path, key, "must be a table like { name = \"CPUExecutionProvider\" }")
    for k, v in item.items():
        if k not in PROVIDER_KEYS:
            raise _fail(path, f"{key}.{k}", f"unknown key; valid keys: {', '.join(PROVIDER_KEYS)}")
        if not isinstance(v, PROVIDER_KEYS[k]):
            raise _fail(path, f"{key}.{k}", f"must be {_article(_type_name(PROVIDER_KEYS[k]))}, got {v!r}")
    name = item.get("name")
    if not isinstance(name, str):
        raise _fail(path, f"{key}.name", "missing or not a string")
    plugin = item.get("plugin")
    if plugin is not None and not PLUGIN_RE.match(plugin):
        raise _fail(path, f"{key}.plugin", f"{plugin!r} is not a pip package name")
    # A plugin EP may carry a name this onnxruntime build has never heard of.
    if name not in known and not (plugin and EP_NAME_RE.match(name)):
        near = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise _fail(path, f"{key}.name", f"unknown execution provider '{name}'{hint}")
    if "device" in item:
        _check_choice(path, f"{key}.device", item["device"], DEVICE_TYPES)
    precision = item.get("precision", "fp32")
    _check_choice(path, f"{key}.precision", precision, COMPUTE_PRECISIONS)
    options = item.get("options", {})
    for ok, ov in options.items():
        if isinstance(ov, bool) or not isinstance(ov, (str, int, float)):
            raise _fail(path, f"{key}.options.{ok}", f"must be a string or number, got {ov!r}")
    return Provider(name=name, options={k: str(v) for k, v in options.items()}, plugin=plugin,
                    device=item.get("device"), precision=precision)


def _check_package(path: Path, package: str | None) -> str | None:
    """`[runtime] package`: NAME==VERSION or a bare NAME (edgekd.deploy.runtimes.PACKAGE_FORMS)."""
    from edgekd.deploy.runtimes import parse_package

    if package is None:
        return None
    try:
        parse_package(package)
    except ValueError as e:
        raise _fail(path, "runtime.package", str(e)) from None
    return package.strip()


def _check_range(path: Path, key: str, value: float, lo: float, hi: float | None) -> None:
    try:
        value = float(value)
    except OverflowError:
        raise _fail(path, key, f"{value} is out of range") from None
    if math.isnan(value) or value < lo or (hi is not None and value > hi) or value == math.inf:
        valid = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise _fail(path, key, f"{value!r} is out of range; valid: {valid}")


def _check_choice(path: Path, key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise _fail(path, key, f"'{value}' is not valid; valid: {', '.join(choices)}")


def _check_str_list(path: Path, key: str, value: list) -> list[str]:
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item:
            raise _fail(path, f"{key}[{i}]", f"must be a non-empty string, got {item!r}")
    return list(value)


def _build(path: Path, data: dict) -> TargetProfile:
    _check_table(path, data, SCHEMA)
    if not NAME_RE.match(data["name"]):
        raise _fail(path, "name", f"{data['name']!r} is not valid; use letters, digits, '.', '_' or '-' "
                                  "(it names the target's folder in a run)")
    _check_choice(path, "arch", data["arch"], ARCHES)
    _check_range(path, "opset", data["opset"], *OPSET_RANGE)
    rt = data["runtime"]
    package = _check_package(path, rt.get("package"))
    providers = _check_providers(path, rt["providers"])
    _check_range(path, "runtime.intra_op_threads", rt["intra_op_threads"], 0, 1024)
    _check_range(path, "runtime.inter_op_threads", rt["inter_op_threads"], 0, 1024)
    _check_choice(path, "runtime.graph_optimization", rt["graph_optimization"], GRAPH_OPT_LEVELS)
    allow = _check_str_list(path, "ops.allow", data["ops"]["allow"])
    if not allow:
        raise _fail(path, "ops.allow", "must list at least one operator")
    caveats = data["ops"].get("caveats", {})
    for op, text in caveats.items():
        if not isinstance(text, str):
            raise _fail(path, f"ops.caveats.{op}", f"must be a string, got {text!r}")
    precisions = _check_str_list(path, "precision.allowed", data["precision"]["allowed"])
    if not precisions:
        raise _fail(path, "precision.allowed", f"must list at least one of {', '.join(PRECISIONS)}")
    for i, p in enumerate(precisions):
        _check_choice(path, f"precision.allowed[{i}]", p, PRECISIONS)
    parity = _check_parity(path, data["parity"], precisions, providers)
    budget = None
    if "budget" in data:
        for key, value in data["budget"].items():
            _check_range(path, f"budget.{key}", value, 0, None)
            if value == 0:
                raise _fail(path, f"budget.{key}", "must be > 0 (omit the key for no budget)")
        budget = Budget(**{k: float(v) for k, v in data["budget"].items()})
    return TargetProfile(
        name=data["name"], description=data.get("description", ""), arch=data["arch"],
        opset=data["opset"], providers=providers,
        intra_op_threads=rt["intra_op_threads"], inter_op_threads=rt["inter_op_threads"],
        graph_optimization=rt["graph_optimization"], ops_allow=frozenset(allow),
        ops_caveats=dict(caveats), precisions=tuple(precisions),
        parity=parity, budget=budget, path=path, package=package,
    )


def _check_parity(path: Path, par: dict, precisions: list[str], providers: tuple[Provider, ...]) -> Parity:
    _check_range(path, "parity.atol", par["atol"], 0, None)
    _check_range(path, "parity.rtol", par["rtol"], 0, None)
    for key in ("min_top1_agreement", "int8_min_top1_agreement"):
        if key in par:
            _check_range(path, f"parity.{key}", par[key], 0, 1)
    if "int8" in precisions and "int8_min_top1_agreement" not in par:
        raise _fail(path, "parity.int8_min_top1_agreement", "missing (required when precision.allowed has int8)")
    reduced = {}
    for p in COMPUTE_PRECISIONS[1:]:
        if p in par:
            t = par[p]
            _check_range(path, f"parity.{p}.atol", t["atol"], 0, None)
            _check_range(path, f"parity.{p}.rtol", t["rtol"], 0, None)
            _check_range(path, f"parity.{p}.min_top1_agreement", t["min_top1_agreement"], 0, 1)
            reduced[p] = Tolerance(float(t["atol"]), float(t["rtol"]), float(t["min_top1_agreement"]))
    for i, prov in enumerate(providers):
        if prov.precision != "fp32" and prov.precision not in reduced:
            raise _fail(path, f"parity.{prov.precision}",
                        f"missing (required: runtime.providers[{i}] computes in {prov.precision}; "
                        "give its atol, rtol, min_top1_agreement)")
    flat = {k: float(v) for k, v in par.items() if k not in COMPUTE_PRECISIONS}
    return Parity(**flat, reduced=reduced)



# ---------------------------------------------------------------- discovery
TARGETS_ENV = "EDGEKD_TARGETS"


def packaged_dir() -> Path:
    """The profiles edgekd ships. In a source checkout that is the repository's top-level
    `targets/` (the project's contract); an installed wheel carries the same files as the
    package `edgekd._profiles` (pyproject maps it onto `targets/`)."""
    checkout = defaults.TARGETS_DIR
    if checkout.is_dir() and (checkout.parent / "pyproject.toml").is_file():
        return checkout
    from importlib.util import find_spec

    # A data-only (namespace) package: its folder is the one search location it has.
    spec = find_spec("edgekd._profiles")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else checkout


def target_dirs() -> list[Path]:
    """Where a profile name is looked up, first match wins: each folder of `EDGEKD_TARGETS`
    (one folder, or several separated by os.pathsep) and then the packaged profiles."""
    user = [Path(p) for p in os.environ.get(TARGETS_ENV, "").split(os.pathsep) if p.strip()]
    for folder in user:
        if not folder.is_dir():
            raise BadInput(f"{TARGETS_ENV}: folder {folder} not found; set it to folders of NAME.toml "
                           f"profiles, separated by '{os.pathsep}'")
    return [*user, packaged_dir()]


def targets_dir() -> Path:
    """The folder that wins for names found in several: the first of `target_dirs()`."""
    return target_dirs()[0]


def _profile_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for folder in target_dirs():
        for path in sorted(folder.glob("*.toml")):
            found.setdefault(path.stem, path)  # an earlier folder overrides a later one
    return found


def list_targets() -> list[str]:
    """Every profile name that `load_target` accepts, user folders and packaged ones together."""
    return sorted(_profile_files())


def resolve_target_path(name_or_path: str | Path) -> Path:
    """A `.toml` path as given, or the file a profile name stands for."""
    s = str(name_or_path)
    if s.endswith(".toml") or os.sep in s:
        path = Path(s)
        if not path.is_file():
            raise BadInput(f"{path}: target profile not found")
        return path
    files = _profile_files()
    if s not in files:
        names = sorted(files)
        near = difflib.get_close_matches(s, names, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise BadInput(f"unknown target '{s}'{hint}; valid: {', '.join(names)} or a path to a .toml file")
    return files[s]


def load_target(name_or_path: str | Path | TargetProfile) -> TargetProfile:
    """Load and validate a profile by name (``targets/NAME.toml``) or by path."""
    if isinstance(name_or_path, TargetProfile):
        return name_or_path
    path = resolve_target_path(name_or_path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{path}: not UTF-8 text; a profile is a TOML file") from None
    except tomllib.TOMLDecodeError as e:
        raise BadInput(f"{path}: malformed TOML: {e}") from None
    return _build(path, data)
