#!/usr/bin/env python3
"""edgekd bench agent: time one ONNX model on this machine and print one JSON object.

    python agent.py --model M.onnx --config CFG.json [--golden G.npz] [--inputs X.npz]

This file is copied as-is to devices (over ssh, or into a qemu root), so it
imports only the standard library, numpy and onnxruntime (and, when a profile
names one, an execution-provider plugin package), never edgekd or torch, and
it runs on Python 3.8+. It runs in its own process so that `peak_rss_mb` is
the runtime's own peak memory, not that of a PyTorch host.

stdout carries exactly one JSON object. On any failure that object is
{"error": {"kind": KIND, "message": "<one line>"}} and the exit code is 2;
there is never a traceback. Callers branch on `kind` (see ERROR_KINDS), never
on the message. Native libraries that write to stdout are redirected to
stderr (see _claim_stdout).

Any ONNX model runs, as with onnxruntime_perf_test: every graph input is fed,
float32/float16/float64/int8..int64/uint8/bool, from --inputs X.npz (arrays
keyed by input name) or random data of the input's type. A symbolic leading
dimension is the batch axis (1 for latency); any other symbolic dimension
needs `shapes` in the config (the CLI's --shape NAME=1x3x48x192).

Execution providers come from the config in priority order. An entry with
`plugin` names the Python package that ships a plugin EP library (ONNX
Runtime >= 1.23): the agent registers its library
(register_execution_provider_library), picks the EP's devices of the entry's
`device` type (get_ep_devices) and builds the session with
add_provider_for_devices. What ran (EP, device, vendor, EP version,
precision) is reported, and `fallback` with its reason when it was not the
first provider asked for.

CFG.json keys (all optional except `providers`):
  providers           [{"name", "options", "plugin", "device", "precision"}], in priority order
  intra_op_threads    0 = ONNX Runtime's default; capped at os.cpu_count()
  inter_op_threads    0 = ONNX Runtime's default
  graph_optimization  disable | basic | extended | all
  min_runs, min_seconds, warmup    batch-1 timing: at least min_runs runs AND min_seconds
  batches             batch sizes for `throughput` (samples per second)
  atol, rtol, min_top1_agreement   golden check (fp32)
  tolerances          {"bf16"|"fp16": {atol, rtol, min_top1_agreement}}: for a provider computing in that
  shapes              {input name: [dims]} for symbolic dimensions
  profile             true: a separate profiled pass; top operators by total time per provider
  assignment          true: ONNX Runtime's node -> provider assignment of the session
  check_only          true: build the session and run only the golden check and `assignment`; no timing
  emulated            echoed back (true under qemu)
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import sys
import tempfile
import time
import zlib

SCHEMA_VERSION = 2
DEFAULTS = {
    "providers": [{"name": "CPUExecutionProvider", "options": {}}],
    "intra_op_threads": 0,
    "inter_op_threads": 0,
    "graph_optimization": "all",
    "min_runs": 200,
    "min_seconds": 1.0,
    "warmup": 20,
    "batches": [1, 8, 32],
    "atol": 1e-4,
    "rtol": 1e-3,
    "min_top1_agreement": 1.0,
    "shapes": {},
    "tolerances": {},
    "profile": False,
    "assignment": False,
    "check_only": False,
    "emulated": False,
}
PROVIDER_KEYS = ("name", "options", "plugin", "device", "precision")
DEVICE_TYPES = ("CPU", "GPU", "NPU")
GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int64)": "int64", "tensor(int32)": "int32", "tensor(int16)": "int16",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(bool)": "bool"}
THROUGHPUT_REPEATS = 5
GOLDEN_CHUNK = 64          # golden inputs run in chunks of this many samples
PROFILE_RUNS = 50          # runs of the separate profiled pass
PROFILE_TOP = 15           # operators listed per provider
# The parity convention, shared with edgekd.deploy.parity (which imports compare_outputs):
# max_rel_diff divides by max(|expected|, REL_DIFF_FLOOR), so exact zeros do not divide by
# zero, and an infinite atol means "top-1 only" (int8 variants).
REL_DIFF_FLOOR = 1e-6
RAW_ENCODING = "float32-zlib-base64"
# The error kinds callers may branch on.
ERROR_KINDS = ("usage", "config", "missing_runtime", "missing_plugin", "model", "session", "symbolic_dim",
               "inputs", "golden", "run", "out_of_memory", "internal")


class AgentError(Exception):
    """A one-line error the agent reports as {"error": {"kind", "message"}}, exit 2."""

    def __init__(self, message: str, kind: str = "internal", first_line: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.first_line = first_line   # the runtime's own first error line, where it wrote several


# ---------------------------------------------------------------- output
_OUT_FD = 1


def _claim_stdout() -> None:
    """Keep fd 1 for our JSON; point everything else that writes to fd 1 at stderr."""
    global _OUT_FD
    try:
        sys.stdout.flush()
        _OUT_FD = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    except OSError:
        _OUT_FD = 1


def _emit(obj: dict) -> None:
    data = (json.dumps(obj, sort_keys=True, allow_nan=True) + "\n").encode("utf-8")
    while data:
        data = data[os.write(_OUT_FD, data):]


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


# ---------------------------------------------------------------- imports
def _import_runtime():
    """numpy and onnxruntime, or an error that names the missing module."""
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError as e:
        name = getattr(e, "name", None) or "onnxruntime"
        raise AgentError(f"ModuleNotFoundError: {name} is not installed for {sys.executable} "
                         f"(pip install onnxruntime numpy)", "missing_runtime") from None
    return np, ort


# ---------------------------------------------------------------- config
def _load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise AgentError(f"{path}: config not found", "config") from None
    except (OSError, ValueError) as e:
        raise AgentError(f"{path}: not a JSON config: {_one_line(e)}", "config") from None
    if not isinstance(raw, dict):
        raise AgentError(f"{path}: config must be a JSON object", "config")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise AgentError(f"{path}: unknown config key '{unknown[0]}'; valid keys: {', '.join(DEFAULTS)}", "config")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    _check_config(path, cfg)
    return cfg


def _check_providers(path: str, providers: object) -> None:
    if not isinstance(providers, list) or not providers:
        raise AgentError(f"{path}: key 'providers' must be a non-empty list of {{name, options}}", "config")
    for i, p in enumerate(providers):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise AgentError(f"{path}: key 'providers[{i}]' must be an object with a string 'name'", "config")
        unknown = sorted(set(p) - set(PROVIDER_KEYS))
        if unknown:
            raise AgentError(f"{path}: key 'providers[{i}].{unknown[0]}' is unknown; valid: "
                             f"{', '.join(PROVIDER_KEYS)}", "config")
        if not isinstance(p.get("options", {}), dict):
            raise AgentError(f"{path}: key 'providers[{i}].options' must be an object", "config")
        if p.get("device") is not None and p["device"] not in DEVICE_TYPES:
            raise AgentError(f"{path}: key 'providers[{i}].device' is {p['device']!r}; valid: "
                             f"{', '.join(DEVICE_TYPES)}", "config")


def _check_config(path: str, cfg: dict) -> None:
    _check_providers(path, cfg["providers"])
    if cfg["graph_optimization"] not in GRAPH_OPT:
        raise AgentError(f"{path}: key 'graph_optimization' is {cfg['graph_optimization']!r}; "
                         f"valid: {', '.join(GRAPH_OPT)}", "config")
    for key in ("intra_op_threads", "inter_op_threads", "min_runs", "warmup"):
        if not _is_int(cfg[key]) or cfg[key] < 0:
            raise AgentError(f"{path}: key '{key}' must be an integer >= 0, got {cfg[key]!r}", "config")
    for key in ("min_seconds", "atol", "rtol", "min_top1_agreement"):
        if not _is_num(cfg[key]) or cfg[key] < 0:
            raise AgentError(f"{path}: key '{key}' must be a number >= 0, got {cfg[key]!r}", "config")
    batches = cfg["batches"]
    if not isinstance(batches, list) or not all(_is_int(b) and b >= 1 for b in batches):
        raise AgentError(f"{path}: key 'batches' must be a list of integers >= 1, got {batches!r}", "config")
    shapes = cfg["shapes"]
    if not isinstance(shapes, dict) or not all(
            isinstance(v, list) and v and all(_is_int(d) and d >= 1 for d in v) for v in shapes.values()):
        raise AgentError(f"{path}: key 'shapes' must map input names to lists of integers >= 1, "
                         f"got {shapes!r}", "config")
    tol = cfg["tolerances"]
    if not isinstance(tol, dict) or not all(
            isinstance(t, dict) and set(t) <= {"atol", "rtol", "min_top1_agreement"} and all(map(_is_num, t.values()))
            for t in tol.values()):
        raise AgentError(f"{path}: key 'tolerances' must map precisions to {{atol, rtol, min_top1_agreement}}, "
                         f"got {tol!r}", "config")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- providers
_REGISTERED: dict = {}     # EP name -> plugin library path, once per process


def plugin_module(package: str) -> str:
    """The import name of a plugin's pip package (onnxruntime-ep-openvino -> onnxruntime_ep_openvino)."""
    return package.replace("-", "_").replace(".", "_")


def _register_plugin(ort, entry: dict) -> str:
    """Register the entry's plugin library with onnxruntime; return the plugin's version."""
    import importlib

    package = entry["plugin"]
    try:
        module = importlib.import_module(plugin_module(package))
    except ImportError:
        raise AgentError(f"{entry['name']} needs the plugin package {package}, which is not installed for "
                         f"{sys.executable} (pip install {package})", "missing_plugin") from None
    version = _dist_version(package)
    if entry["name"] in _REGISTERED:
        return version
    if not hasattr(ort, "register_execution_provider_library"):
        raise AgentError(f"{entry['name']}: onnxruntime {ort.__version__} cannot load plugin EPs "
                         "(needs >= 1.23)", "missing_plugin")
    try:
        path = module.get_library_path()
        ort.register_execution_provider_library(entry["name"], path)
    except Exception as e:  # a broken package or a library built for another onnxruntime
        raise AgentError(f"{entry['name']}: registering the library of {package} failed: {_one_line(e)}",
                         "missing_plugin") from None
    _REGISTERED[entry["name"]] = path
    return version


def _dist_version(package: str) -> str:
    try:
        from importlib.metadata import version
        return version(package)
    except Exception:  # Python 3.7 or an unusual install: the version is informative only
        return "unknown"


def _ep_devices(ort, name: str, device: object) -> list:
    if not hasattr(ort, "get_ep_devices"):
        return []
    return [d for d in ort.get_ep_devices()
            if d.ep_name == name and (device is None or d.device.type.name == device)]


def _device_info(ort, dev, entry: dict) -> dict:
    meta = dict(getattr(dev, "ep_metadata", {}) or {}) if dev is not None else {}
    return {"provider": entry["name"],
            "device": dev.device.type.name if dev is not None else entry.get("device") or "CPU",
            "vendor": (dev.device.vendor or dev.ep_vendor) if dev is not None else None,
            "ep_vendor": dev.ep_vendor if dev is not None else None,
            "ep_version": meta.get("version") or (ort.__version__ if dev is None else None),
            "precision": entry.get("precision") or "fp32"}


def _cap_threads(options: dict, cpus: int) -> dict:
    # An EP's own thread option (XNNPACK's intra_op_num_threads) is capped like the session's.
    value = options.get("intra_op_num_threads")
    if value is not None and value.isdigit() and int(value) > cpus:
        options["intra_op_num_threads"] = str(cpus)
    return options


def choose_provider(ort, wanted: list, cpus: int) -> dict:
    """The first of the profile's providers that can run here, and why any before it could not.

    Returns {"entry", "devices" (plugin EP devices, else None), "info", "skipped": [reasons]}.
    A plugin whose package is missing is an error (the profile asked for it by name); a
    provider with no device or not in this build is skipped, visibly."""
    available = set(ort.get_available_providers())
    skipped = []
    for entry in wanted:
        entry = {**entry, "options": _cap_threads({str(k): str(v) for k, v in entry.get("options", {}).items()},
                                                  cpus)}
        if entry.get("plugin"):
            plugin_version = _register_plugin(ort, entry)
            devices = _ep_devices(ort, entry["name"], entry.get("device"))
            if devices:
                info = _device_info(ort, devices[0], entry)
                info.update(plugin=entry["plugin"], plugin_version=plugin_version)
                return {"entry": entry, "devices": devices[:1], "info": info, "skipped": skipped}
            here = sorted({f"{d.ep_name}/{d.device.type.name}/{d.device.vendor}" for d in ort.get_ep_devices()})
            skipped.append(f"{entry['name']} (plugin {entry['plugin']} {plugin_version}) offers no "
                           f"{entry.get('device') or 'device'} on this machine (EP devices here: {', '.join(here)})")
        elif entry["name"] in available:
            devices = _ep_devices(ort, entry["name"], None)
            info = _device_info(ort, devices[0] if devices else None, entry)
            return {"entry": entry, "devices": None, "info": info, "skipped": skipped}
        else:
            skipped.append(f"{entry['name']} is not available in this onnxruntime build "
                           f"(available: {', '.join(sorted(available))})")
    entry = {"name": "CPUExecutionProvider", "options": {}}  # always built in
    devices = _ep_devices(ort, entry["name"], None)
    return {"entry": entry, "devices": None, "info": _device_info(ort, devices[0] if devices else None, entry),
            "skipped": skipped}


# ---------------------------------------------------------------- session
def _session_options(ort, cfg: dict, cpus: int):
    so = ort.SessionOptions()
    requested = cfg["intra_op_threads"]
    so.intra_op_num_threads = min(requested, cpus) if requested > 0 else 0
    so.inter_op_num_threads = cfg["inter_op_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT[cfg["graph_optimization"]])
    so.log_severity_level = 3  # errors only: warnings would clutter stderr on every run
    return so


def open_session(ort, model: str, cfg: dict, *, cpus: int | None = None, assignment: bool = False,
                 profile_prefix: str | None = None) -> tuple:
    """(session, provider report) through the first usable provider of cfg["providers"].

    Shared with edgekd's parity and audit, so that a model is checked through the
    same provider, device and options that bench times."""
    cpus = cpus or os.cpu_count() or 1
    if not os.path.isfile(model):
        raise AgentError(f"{model}: model not found", "model")
    choice = choose_provider(ort, cfg["providers"], cpus)
    entry = choice["entry"]
    so = _session_options(ort, cfg, cpus)
    if entry["name"] == "XnnpackExecutionProvider":
        # ONNX Runtime's XNNPACK docs: XNNPACK has its own thread pool; ORT's spinning threads
        # would compete with it for the same cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if assignment:
        so.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    try:
        if choice["devices"]:
            so.add_provider_for_devices(choice["devices"], entry["options"])
            sess = ort.InferenceSession(model, sess_options=so)
        else:
            names = [entry["name"]] + (["CPUExecutionProvider"] if entry["name"] != "CPUExecutionProvider" else [])
            opts = [entry["options"]] + ([{}] if len(names) > 1 else [])
            sess = ort.InferenceSession(model, sess_options=so, providers=names, provider_options=opts)
    except Exception as e:  # onnxruntime raises its own types for corrupt or unsupported models
        kind = "model" if _looks_unreadable(e) else "session"
        raise AgentError(f"{model}: onnxruntime cannot load the model with {entry['name']}: {_one_line(e)}",
                         kind, first_error_line(e) if "\n" in str(e).strip() else None) from None
    report = dict(choice["info"])
    report.update(requested=cfg["providers"][0]["name"], active=list(sess.get_providers()),
                  fallback=bool(choice["skipped"]), skipped=choice["skipped"])
    if choice["skipped"]:
        report["warning"] = "; ".join(choice["skipped"]) + f"; fell back to {entry['name']}"
    return sess, report


def first_error_line(e: Exception) -> str:
    """The first line of a runtime's error that says what went wrong, not where: OpenVINO's
    exceptions stack 'Exception from src/...' and 'Check ... failed at' frames above it."""
    frames = ("Exception from ", "Check '", "[ONNXRuntimeError]")
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    told = [ln for ln in lines[1:] if not ln.startswith(frames)]
    line = told[0] if told else (lines[0] if lines else "unknown error")
    return _one_line(line[len("Unexpected: "):] if line.startswith("Unexpected: ") else line)


def _looks_unreadable(e: Exception) -> bool:
    text = str(e)
    return any(s in text for s in ("INVALID_PROTOBUF", "Protobuf parsing failed", "No such file", "Load model"))


def assignment_of(sess) -> dict:
    """ONNX Runtime's own node -> provider assignment: nodes and op counts per provider."""
    out: dict = {}
    for sub in sess.get_provider_graph_assignment_info():
        slot = out.setdefault(sub.ep_name, {"nodes": 0, "ops": {}, "subgraphs": 0})
        slot["subgraphs"] += 1
        for node in sub.get_nodes():
            op = f"{node.domain}:{node.op_type}" if node.domain not in ("", "ai.onnx") else node.op_type
            slot["nodes"] += 1
            slot["ops"][op] = slot["ops"].get(op, 0) + 1
    return out


def _add_assignment(ort, sess, result: dict) -> None:
    if hasattr(sess, "get_provider_graph_assignment_info"):
        result["assignment"] = assignment_of(sess)
    else:
        result["assignment_unavailable"] = (f"onnxruntime {ort.__version__} cannot report its node assignment "
                                            "(get_provider_graph_assignment_info needs >= 1.23)")


# ---------------------------------------------------------------- inputs
def describe_inputs(np, sess, shapes: dict, *, concrete: bool = True) -> list:
    """Every graph input with its dtype and a concrete shape: --shape values for symbolic
    dimensions, else 1 for a symbolic leading (batch) dimension. Without `concrete` (the
    user's --inputs give the shapes) symbolic dimensions stay as declared."""
    specs = []
    names = [i.name for i in sess.get_inputs()]
    unknown = sorted(set(shapes) - set(names))
    if unknown:
        raise AgentError(f"--shape {unknown[0]}: the model has no such input; inputs: {', '.join(names)}", "inputs")
    for inp in sess.get_inputs():
        if inp.type not in ORT_DTYPES:
            raise AgentError(f"input '{inp.name}' has type {inp.type}; valid: {', '.join(ORT_DTYPES)}", "inputs")
        declared = [d if isinstance(d, int) and d > 0 else (str(d) if d is not None else "?") for d in inp.shape]
        specs.append({"name": inp.name, "dtype": np.dtype(ORT_DTYPES[inp.type]), "declared": declared,
                      "shape": _concrete_shape(inp.name, declared, shapes.get(inp.name)) if concrete else declared,
                      "batch_dynamic": bool(declared) and not isinstance(declared[0], int)
                      and inp.name not in shapes})
    return specs


def _concrete_shape(name: str, declared: list, given) -> list:
    if given is not None:
        ok = len(given) == len(declared) and all(not isinstance(d, int) or d == g for d, g in zip(declared, given))
        if not ok:
            raise AgentError(f"--shape {name}={'x'.join(map(str, given))} does not fit the input's shape "
                             f"{declared}", "inputs")
        return list(given)
    symbolic = [i for i, d in enumerate(declared) if not isinstance(d, int)]
    inner = [declared[i] for i in symbolic if i > 0]
    if inner:
        example = "x".join(str(d) if isinstance(d, int) else "N" for d in declared)
        raise AgentError(f"input '{name}' has symbolic dimension(s) {', '.join(map(str, inner))} in {declared}; "
                         f"pass --shape {name}={example}", "symbolic_dim")
    return [1 if not isinstance(d, int) else d for d in declared]


def random_feed(np, specs: list, batch: int | None = None, seed: int = 0) -> dict:
    """Random data of each input's type; `batch` replaces the dynamic leading dimension."""
    rng = np.random.default_rng(seed)
    feed = {}
    for s in specs:
        shape = list(s["shape"])
        if batch is not None and s["batch_dynamic"]:
            shape[0] = batch
        dt = s["dtype"]
        if dt.kind == "f":
            data = rng.standard_normal(shape)
        elif dt.kind == "b":
            data = rng.random(shape) < 0.5
        else:  # small non-negative integers: valid as indices, lengths and token ids alike
            data = rng.integers(0, 10, size=shape)
        feed[s["name"]] = np.ascontiguousarray(data, dtype=dt)
    return feed


def load_inputs(np, path: str, specs: list) -> dict:
    """The user's --inputs FILE.npz: one array per graph input, checked against the graph."""
    if not os.path.isfile(path):
        raise AgentError(f"{path}: inputs file not found", "inputs")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zipfile, pickle and format errors all mean "not an inputs .npz"
        raise AgentError(f"{path}: not a readable .npz: {_one_line(e)}", "inputs") from None
    feed = {}
    for s in specs:
        if s["name"] not in arrays:
            raise AgentError(f"{path}: no array named '{s['name']}'; the model's inputs: "
                             f"{', '.join(x['name'] for x in specs)}", "inputs")
        a = arrays[s["name"]]
        fits = a.ndim == len(s["declared"]) and all(
            not isinstance(d, int) or d == n for d, n in zip(s["declared"], a.shape))
        if not fits:
            raise AgentError(f"{path}: '{s['name']}' has shape {list(a.shape)}; the input is {s['declared']}", "inputs")
        feed[s["name"]] = np.ascontiguousarray(a, dtype=s["dtype"])
    return feed


# ---------------------------------------------------------------- golden
def _load_golden(np, path: str) -> tuple:
    if not os.path.isfile(path):
        raise AgentError(f"{path}: golden file not found", "golden")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("inputs", "outputs") if k not in z.files]
            if missing:
                raise AgentError(f"{path}: golden file lacks array '{missing[0]}'; it needs 'inputs' and 'outputs'",
                                 "golden")
            inputs, outputs = z["inputs"], z["outputs"]
    except AgentError:
        raise
    except Exception as e:  # zipfile, pickle and format errors all mean "not a golden .npz"
        raise AgentError(f"{path}: not a readable .npz golden file: {_one_line(e)}", "golden") from None
    if inputs.ndim < 1 or outputs.ndim < 1 or len(inputs) == 0:
        raise AgentError(f"{path}: golden 'inputs' must hold at least one sample, batch first", "golden")
    if len(inputs) != len(outputs):
        raise AgentError(f"{path}: golden has {len(inputs)} inputs but {len(outputs)} outputs", "golden")
    return inputs, outputs


def _golden_spec(specs: list, golden_inputs) -> dict:
    """The single input golden vectors feed, its sample shape checked against the graph."""
    if len(specs) != 1:
        raise AgentError(f"golden vectors feed one input; the model has {len(specs)}", "golden")
    s = specs[0]
    expected, sample_shape = s["declared"][1:], tuple(golden_inputs.shape[1:])
    ok = len(sample_shape) == len(expected) and all(
        not isinstance(e, int) or e == n for e, n in zip(expected, sample_shape))
    if not ok:
        raise AgentError(f"golden inputs have sample shape {list(sample_shape)} but model input "
                         f"'{s['name']}' expects {s['declared']} (batch first)", "golden")
    batch = s["shape"][0] if isinstance(s["shape"][0], int) else 1
    return {**s, "shape": [batch] + list(sample_shape)}


def _golden_feed(np, spec: dict, golden_inputs, batch: int) -> dict:
    reps = -(-batch // len(golden_inputs))
    data = np.concatenate([golden_inputs] * reps)[:batch]
    return {spec["name"]: np.ascontiguousarray(data, dtype=spec["dtype"])}


def run_chunked(np, sess, name: str, inputs, chunk: int, dtype: str = "float32"):
    """The session's first output over `inputs`, fed `chunk` samples at a time and concatenated.

    The one fixed-batch chunking: the golden check here, edgekd's parity (`edgekd.runtime.session.ort_run`)
    and the foreign ONNX teacher all run through it; a model with a fixed batch axis is fed chunks of
    exactly that batch (callers check that the sample count is a multiple of it)."""
    outs = [sess.run(None, {name: np.ascontiguousarray(inputs[i:i + chunk], dtype=dtype)})[0]
            for i in range(0, len(inputs), chunk)]
    return np.concatenate(outs) if outs else np.zeros((0,), dtype="float32")


def _run_golden(np, sess, spec: dict, inputs, outputs, cfg: dict) -> dict:
    fixed_batch = None if spec["batch_dynamic"] else spec["shape"][0]
    if fixed_batch and len(inputs) % fixed_batch:
        raise AgentError(f"the model's batch axis is fixed at {fixed_batch} but golden has "
                         f"{len(inputs)} samples, not a multiple of it", "golden")
    actual = run_chunked(np, sess, spec["name"], inputs, fixed_batch or GOLDEN_CHUNK, spec["dtype"])
    if actual.shape != outputs.shape:
        raise AgentError(f"golden 'outputs' have shape {list(outputs.shape)} but the model "
                         f"returns {list(actual.shape)}", "golden")
    tol = {**{k: cfg[k] for k in ("atol", "rtol", "min_top1_agreement")},
           **cfg["tolerances"].get(spec.get("precision", "fp32"), {})}
    report = compare_outputs(np, actual, outputs, **tol)
    report["precision"] = spec.get("precision", "fp32")
    return report


def compare_outputs(np, actual, expected, *, atol: float, rtol: float, min_top1_agreement: float) -> dict:
    """The one parity convention (edgekd.deploy.parity uses this function too, through edgekd.runtime).

    Element-wise |a - e| <= atol + rtol*|e| (numpy.allclose) unless atol is infinite
    ("top-1 only": then only non-finite outputs fail it), and top-1 agreement over the
    last axis at least min_top1_agreement. max_rel_diff divides by max(|e|, REL_DIFF_FLOOR)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    n = expected.shape[0] if expected.ndim else 1
    diff = np.abs(actual - expected)
    rel = diff / np.maximum(np.abs(expected), REL_DIFF_FLOOR)
    if n and expected.ndim:
        top1 = float(np.mean(actual.reshape(n, -1).argmax(1) == expected.reshape(n, -1).argmax(1)))
    else:
        top1 = 1.0
    finite = bool(np.isfinite(actual).all())
    if np.isfinite(atol):
        outside = int((~(diff <= atol + rtol * np.abs(expected))).sum())
    else:
        outside = int((~np.isfinite(actual)).sum())
    close = finite and outside == 0
    return {
        "n": int(n), "max_abs_diff": float(diff.max(initial=0.0)), "max_rel_diff": float(rel.max(initial=0.0)),
        "top1_agreement": top1, "allclose": close, "outside": outside, "size": int(diff.size),
        "atol": atol if np.isfinite(atol) else None, "rtol": rtol, "min_top1_agreement": min_top1_agreement,
        "passed": close and top1 >= min_top1_agreement,
    }


# ---------------------------------------------------------------- timing
def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _raw(np, t) -> dict:
    """Every per-run latency, float32, zlib-compressed, base64 (for the HTML report)."""
    data = base64.b64encode(zlib.compress(np.asarray(t, dtype="<f4").tobytes(), 9)).decode("ascii")
    return {"encoding": RAW_ENCODING, "unit": "ms", "n": int(len(t)), "data": data}


def decode_raw(np, raw: dict):
    """The inverse of _raw: the float32 latencies in ms."""
    if raw.get("encoding") != RAW_ENCODING:
        raise ValueError(f"latency_raw encoding {raw.get('encoding')!r}; valid: {RAW_ENCODING}")
    return np.frombuffer(zlib.decompress(base64.b64decode(raw["data"])), dtype="<f4")


def _latency(np, run, cfg: dict) -> tuple:
    """Batch-1 latency over at least min_runs runs AND min_seconds (as TFLite's benchmark_model)."""
    for _ in range(cfg["warmup"]):
        run()
    times = []
    clock = time.perf_counter
    start = clock()
    while len(times) < max(cfg["min_runs"], 1) or clock() - start < cfg["min_seconds"]:
        t0 = clock()
        run()
        times.append(clock() - t0)
    wall = clock() - start
    t = np.array(times) * 1000.0
    return ({"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
             "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "std": float(t.std()),
             "min": float(t.min()), "max": float(t.max()), "n": int(t.size), "wall_s": wall}, _raw(np, t))


def _throughput(np, sess, feeds: dict, cfg: dict) -> dict:
    """Samples per second at each batch size: the median of a few repeats."""
    out = {}
    budget = max(cfg["min_seconds"], 0.05) / THROUGHPUT_REPEATS  # seconds per repeat
    for b, feed in feeds.items():
        t0 = time.perf_counter()
        sess.run(None, feed)  # warm-up, and a first estimate of the cost of one run
        one = max(time.perf_counter() - t0, 1e-6)
        iters = max(1, int(budget / one))
        rates = []
        for _ in range(THROUGHPUT_REPEATS):
            t0 = time.perf_counter()
            for _ in range(iters):
                sess.run(None, feed)
            rates.append(b * iters / max(time.perf_counter() - t0, 1e-9))
        out[str(b)] = float(np.median(rates))
    return out


def _peak_rss_mb() -> float:
    # Linux: VmHWM is this process's own peak. ru_maxrss can carry over the peak of the
    # process that forked us (a torch host would report its own memory as ours).
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource  # POSIX only; imported here so that a failure names this field

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# ---------------------------------------------------------------- profile
def profile_ops(ort, np, model: str, cfg: dict, feed: dict, cpus: int) -> dict:
    """A separate profiled pass (profiling slows every run, so the timed session has none):
    ONNX Runtime's per-node kernel times summed per provider and operator."""
    with tempfile.TemporaryDirectory(prefix="edgekd-prof-") as tmp:
        sess, _ = open_session(ort, model, cfg, cpus=cpus, profile_prefix=os.path.join(tmp, "ort"))
        for _ in range(PROFILE_RUNS):
            sess.run(None, feed)
        with open(sess.end_profiling(), encoding="utf-8") as f:
            events = json.load(f)
    return summarize_profile(events, runs=PROFILE_RUNS)


def summarize_profile(events: list, *, runs: int, top: int = PROFILE_TOP) -> dict:
    """{provider: {"total_ms", "ops": [{op, total_ms, share, calls, mean_us}] top first}}."""
    per: dict = {}
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time") or "op_name" not in args:
            continue
        slot = per.setdefault(args.get("provider", "?"), {})
        op = slot.setdefault(args["op_name"], [0.0, 0])
        op[0] += float(e.get("dur", 0)) / 1000.0
        op[1] += 1
    out = {}
    for provider, ops in per.items():
        total = sum(v[0] for v in ops.values()) or 1e-12
        rows = sorted(ops.items(), key=lambda kv: -kv[1][0])
        out[provider] = {"total_ms": total, "runs": runs, "ops": [
            {"op": op, "total_ms": ms, "share": ms / total, "calls": calls, "mean_us": 1000.0 * ms / calls}
            for op, (ms, calls) in rows[:top]]}
    return out


# ---------------------------------------------------------------- main flow
def _feeds(np, specs: list, cfg: dict, golden_inputs, user_inputs: str | None) -> tuple:
    """(batch-1 feed, {batch: feed} for throughput, source, golden spec or None)."""
    gspec = _golden_spec(specs, golden_inputs) if golden_inputs is not None else None
    dynamic = all(s["batch_dynamic"] for s in specs) and bool(specs)
    if user_inputs:
        feed = load_inputs(np, user_inputs, specs)
        first = next(iter(feed.values()))
        return feed, {int(first.shape[0]) if first.ndim else 1: feed}, "npz", gspec
    if gspec is not None:
        one = _golden_feed(np, gspec, golden_inputs, gspec["shape"][0])
        batches = list(cfg["batches"]) if dynamic else [gspec["shape"][0]]
        return one, {b: _golden_feed(np, gspec, golden_inputs, b) for b in batches}, "golden", gspec
    one = random_feed(np, specs)
    batches = list(cfg["batches"]) if dynamic else [specs[0]["shape"][0] if specs and specs[0]["shape"] else 1]
    return one, {b: random_feed(np, specs, batch=b) for b in batches}, "random", None


def bench(model: str, cfg: dict, golden: str | None, inputs: str | None = None) -> dict:
    np, ort = _import_runtime()
    cpus = os.cpu_count() or 1
    golden_inputs = golden_outputs = None
    if golden:
        golden_inputs, golden_outputs = _load_golden(np, golden)
    t0 = time.perf_counter()
    sess, prov = open_session(ort, model, cfg, cpus=cpus, assignment=bool(cfg["assignment"]))
    init_ms = _ms(time.perf_counter() - t0)
    if cfg["check_only"]:
        return _check_only(np, ort, model, cfg, cpus, sess, prov, golden_inputs, golden_outputs)
    # The user's --inputs or the golden vectors give the shapes; only random data needs --shape.
    specs = describe_inputs(np, sess, cfg["shapes"], concrete=not inputs and golden_inputs is None)
    x1, batch_feeds, source, gspec = _feeds(np, specs, cfg, golden_inputs, inputs)
    if inputs:
        for s in specs:
            s["shape"] = list(x1[s["name"]].shape)

    def run():
        sess.run(None, x1)

    t0 = time.perf_counter()
    try:
        run()
    except Exception as e:  # a kernel that rejects these inputs: one line, the run's own words
        raise AgentError(f"{model}: the first run failed: {_one_line(e)}", "run") from None
    first_run_ms = _ms(time.perf_counter() - t0)
    latency, raw = _latency(np, run, cfg)
    result = _result(np, ort, model, cfg, cpus, prov, specs, source)
    result.update(init_ms=init_ms, first_run_ms=first_run_ms, latency_ms=latency, latency_raw=raw,
                  throughput=_throughput(np, sess, batch_feeds, cfg))
    if len(batch_feeds) == 1 and cfg["batches"] != list(batch_feeds):
        result["throughput_note"] = (f"the model's batch axis is fixed at {next(iter(batch_feeds))}; "
                                     "other batch sizes skipped")
    if cfg["assignment"]:
        _add_assignment(ort, sess, result)
    if gspec is not None:
        gspec["precision"] = prov["precision"]
        result["golden"] = _run_golden(np, sess, gspec, golden_inputs, golden_outputs, cfg)
    if cfg["profile"]:
        result["profile"] = profile_ops(ort, np, model, cfg, x1, cpus)
    # Last, so that it covers every run above.
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _check_only(np, ort, model: str, cfg: dict, cpus: int, sess, prov: dict, golden_inputs, golden_outputs) -> dict:
    """The session's provider report, its assignment and the golden check: no timing."""
    specs = describe_inputs(np, sess, cfg["shapes"], concrete=False)
    result = _result(np, ort, model, cfg, cpus, prov, specs, "golden" if golden_inputs is not None else "none")
    if cfg["assignment"]:
        _add_assignment(ort, sess, result)
    if golden_inputs is not None:
        gspec = _golden_spec(specs, golden_inputs)
        gspec["precision"] = prov["precision"]
        result["golden"] = _run_golden(np, sess, gspec, golden_inputs, golden_outputs, cfg)
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _result(np, ort, model: str, cfg: dict, cpus: int, prov: dict, specs: list, source: str) -> dict:
    first = specs[0] if specs else {"name": "", "declared": [], "dtype": np.dtype("float32"),
                                    "shape": [], "batch_dynamic": False}
    result = {
        "schema": SCHEMA_VERSION,
        "model": model, "model_bytes": os.path.getsize(model),
        "input": {"name": first["name"], "shape": first["declared"], "dtype": str(first["dtype"]),
                  "sample_shape": list(first["shape"][1:]), "batch_dynamic": first["batch_dynamic"]},
        "inputs": [{"name": s["name"], "shape": s["declared"], "dtype": str(s["dtype"]), "fed": list(s["shape"])}
                   for s in specs],
        "input_source": source,
        "provider_requested": prov["requested"], "provider": prov["provider"],
        "providers_active": prov["active"], "fallback": prov["fallback"],
        "execution": {k: prov.get(k) for k in ("provider", "device", "vendor", "ep_vendor", "ep_version",
                                                "precision", "plugin", "plugin_version") if k in prov},
        "precision": prov["precision"],
        "threads_requested": cfg["intra_op_threads"],
        "threads": min(cfg["intra_op_threads"], cpus) if cfg["intra_op_threads"] > 0 else cpus,
        "inter_op_threads": cfg["inter_op_threads"],
        "graph_optimization": cfg["graph_optimization"],
        "cpu_count": cpus,
        "onnxruntime_version": ort.__version__, "numpy_version": np.__version__,
        "machine": platform.machine(), "python": platform.python_version(),
        "emulated": bool(cfg["emulated"]),
    }
    if prov.get("warning"):
        result["warning"] = prov["warning"]
        result["fallback_reasons"] = prov["skipped"]
    return result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we answer in JSON
        raise AgentError("usage: agent.py --model M.onnx --config CFG.json [--golden G.npz] [--inputs X.npz]: "
                         f"{message}", "usage")


def main(argv: list | None = None) -> int:
    _claim_stdout()
    parser = _Parser(prog="agent.py", add_help=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--golden")
    parser.add_argument("--inputs")
    try:
        args = parser.parse_args(argv)
        cfg = _load_config(args.config)
        result = bench(args.model, cfg, args.golden, args.inputs)
    except AgentError as e:
        error = {"kind": e.kind, "message": _one_line(e)}
        if e.first_line:
            error["first_line"] = e.first_line
        _emit({"error": error})
        return 2
    except MemoryError:
        _emit({"error": {"kind": "out_of_memory", "message": "out of memory while benchmarking"}})
        return 2
    except Exception as e:  # anything else is still one line of JSON, never a traceback
        _emit({"error": {"kind": "internal", "message": f"{type(e).__name__}: {_one_line(e)}"}})
        return 2
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
