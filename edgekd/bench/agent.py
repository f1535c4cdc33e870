#!/usr/bin/env python3
"""edgekd bench agent: time one ONNX model on this machine and print one JSON object.

    python agent.py --model M.onnx --config CFG.json [--golden G.npz]

This file is copied as-is to devices (over ssh, or into a qemu root), so it
imports only the standard library, numpy and onnxruntime, never edgekd or
torch, and it runs on Python 3.8+. It runs in its own process so that
`peak_rss_mb` is the runtime's own peak memory, not that of a PyTorch host.

stdout carries exactly one JSON object. On any failure that object is
{"error": "<one line>"} and the exit code is 2; there is never a traceback.
Native libraries that write to stdout are redirected to stderr (see
_claim_stdout).

CFG.json keys (all optional except `providers`):
  providers           [{"name": ..., "options": {...}}], in priority order
  intra_op_threads    0 = ONNX Runtime's default; capped at os.cpu_count()
  inter_op_threads    0 = ONNX Runtime's default
  graph_optimization  disable | basic | extended | all
  min_runs, min_seconds, warmup    batch-1 timing: at least min_runs runs AND min_seconds
  batches             batch sizes for `throughput` (samples per second)
  atol, rtol, min_top1_agreement   golden check
  emulated            echoed back (true under qemu)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

SCHEMA_VERSION = 1
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
    "emulated": False,
}
GRAPH_OPT = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
             "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64"}
THROUGHPUT_REPEATS = 5
GOLDEN_CHUNK = 64          # golden inputs run in chunks of this many samples
REL_DIFF_FLOOR = 1e-6      # |expected| floor for max_rel_diff, so exact zeros do not divide by zero


class AgentError(Exception):
    """A one-line error the agent reports as {"error": ...}, exit 2."""


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
                         f"(pip install onnxruntime numpy)") from None
    return np, ort


# ---------------------------------------------------------------- config
def _load_config(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise AgentError(f"{path}: config not found") from None
    except (OSError, ValueError) as e:
        raise AgentError(f"{path}: not a JSON config: {_one_line(e)}") from None
    if not isinstance(raw, dict):
        raise AgentError(f"{path}: config must be a JSON object")
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise AgentError(f"{path}: unknown config key '{unknown[0]}'; valid keys: {', '.join(DEFAULTS)}")
    cfg = dict(DEFAULTS)
    cfg.update(raw)
    _check_config(path, cfg)
    return cfg


def _check_config(path: str, cfg: dict) -> None:
    providers = cfg["providers"]
    if not isinstance(providers, list) or not providers:
        raise AgentError(f"{path}: key 'providers' must be a non-empty list of {{name, options}}")
    for i, p in enumerate(providers):
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise AgentError(f"{path}: key 'providers[{i}]' must be an object with a string 'name'")
        if not isinstance(p.get("options", {}), dict):
            raise AgentError(f"{path}: key 'providers[{i}].options' must be an object")
    if cfg["graph_optimization"] not in GRAPH_OPT:
        raise AgentError(f"{path}: key 'graph_optimization' is {cfg['graph_optimization']!r}; "
                         f"valid: {', '.join(GRAPH_OPT)}")
    for key in ("intra_op_threads", "inter_op_threads", "min_runs", "warmup"):
        if not _is_int(cfg[key]) or cfg[key] < 0:
            raise AgentError(f"{path}: key '{key}' must be an integer >= 0, got {cfg[key]!r}")
    for key in ("min_seconds", "atol", "rtol", "min_top1_agreement"):
        if not _is_num(cfg[key]) or cfg[key] < 0:
            raise AgentError(f"{path}: key '{key}' must be a number >= 0, got {cfg[key]!r}")
    batches = cfg["batches"]
    if not isinstance(batches, list) or not all(_is_int(b) and b >= 1 for b in batches):
        raise AgentError(f"{path}: key 'batches' must be a list of integers >= 1, got {batches!r}")


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ---------------------------------------------------------------- session
def _choose_providers(ort, wanted: list, cpus: int) -> tuple:
    """The profile's providers that this onnxruntime build has, in the profile's order."""
    available = set(ort.get_available_providers())
    chosen, options = [], []
    for p in wanted:
        if p["name"] in available:
            chosen.append(p["name"])
            options.append(_cap_threads({str(k): str(v) for k, v in p.get("options", {}).items()}, cpus))
    requested = wanted[0]["name"]
    warning = None
    if requested not in available:
        warning = (f"{requested} is not available in this onnxruntime build "
                   f"(available: {', '.join(sorted(available))}); fell back to "
                   f"{chosen[0] if chosen else 'CPUExecutionProvider'}")
    if not chosen:  # nothing in the profile is here; CPU is always built in
        chosen, options = ["CPUExecutionProvider"], [{}]
    return requested, chosen, options, warning


def _cap_threads(options: dict, cpus: int) -> dict:
    # An EP's own thread option (XNNPACK's intra_op_num_threads) is capped like the session's.
    value = options.get("intra_op_num_threads")
    if value is not None and value.isdigit() and int(value) > cpus:
        options["intra_op_num_threads"] = str(cpus)
    return options


def _session_options(ort, cfg: dict, cpus: int):
    so = ort.SessionOptions()
    requested = cfg["intra_op_threads"]
    so.intra_op_num_threads = min(requested, cpus) if requested > 0 else 0
    so.inter_op_num_threads = cfg["inter_op_threads"]
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel, GRAPH_OPT[cfg["graph_optimization"]])
    so.log_severity_level = 3  # errors only: warnings would clutter stderr on every run
    return so


def _create_session(ort, model: str, so, providers: list, options: list):
    if not os.path.isfile(model):
        raise AgentError(f"{model}: model not found")
    try:
        return ort.InferenceSession(model, sess_options=so, providers=providers, provider_options=options)
    except Exception as e:  # onnxruntime raises its own types for corrupt or unsupported models
        raise AgentError(f"{model}: onnxruntime cannot load the model: {_one_line(e)}") from None


# ---------------------------------------------------------------- inputs
def _model_input(np, sess) -> dict:
    inputs = sess.get_inputs()
    if len(inputs) != 1:
        raise AgentError(f"the model has {len(inputs)} inputs; the agent handles single-input models")
    inp = inputs[0]
    if inp.type not in ORT_DTYPES:
        raise AgentError(f"input '{inp.name}' has type {inp.type}; valid: {', '.join(ORT_DTYPES)}")
    shape = [d if isinstance(d, int) and d > 0 else None for d in inp.shape]
    if not shape:
        raise AgentError(f"input '{inp.name}' is a scalar; the agent needs a batch axis")
    return {"name": inp.name, "shape": shape, "declared": [d if isinstance(d, int) else str(d) for d in inp.shape],
            "dtype": np.dtype(ORT_DTYPES[inp.type])}


def _check_golden_shape(inp: dict, sample_shape: tuple) -> None:
    expected = inp["shape"][1:]
    ok = len(sample_shape) == len(expected) and all(e is None or e == s for e, s in zip(expected, sample_shape))
    if not ok:
        raise AgentError(f"golden inputs have sample shape {list(sample_shape)} but model input "
                         f"'{inp['name']}' expects {inp['declared']} (batch first)")


def _sample_shape(inp: dict, golden_inputs) -> tuple:
    if golden_inputs is not None:
        return tuple(golden_inputs.shape[1:])
    rest = inp["shape"][1:]
    if any(d is None for d in rest):
        raise AgentError(f"input '{inp['name']}' has dynamic non-batch axes {inp['declared']}; "
                         "pass --golden so the agent knows the sample shape")
    return tuple(rest)


def _make_batch(np, inp: dict, sample_shape: tuple, batch: int, golden_inputs):
    if golden_inputs is not None and len(golden_inputs):
        reps = -(-batch // len(golden_inputs))
        data = np.concatenate([golden_inputs] * reps)[:batch]
    else:
        data = np.random.default_rng(0).standard_normal((batch,) + sample_shape)
    return np.ascontiguousarray(data, dtype=inp["dtype"])


# ---------------------------------------------------------------- golden
def _load_golden(np, path: str) -> tuple:
    if not os.path.isfile(path):
        raise AgentError(f"{path}: golden file not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("inputs", "outputs") if k not in z.files]
            if missing:
                raise AgentError(f"{path}: golden file lacks array '{missing[0]}'; it needs 'inputs' and 'outputs'")
            inputs, outputs = z["inputs"], z["outputs"]
    except AgentError:
        raise
    except Exception as e:  # zipfile, pickle and format errors all mean "not a golden .npz"
        raise AgentError(f"{path}: not a readable .npz golden file: {_one_line(e)}") from None
    if inputs.ndim < 1 or outputs.ndim < 1 or len(inputs) == 0:
        raise AgentError(f"{path}: golden 'inputs' must hold at least one sample, batch first")
    if len(inputs) != len(outputs):
        raise AgentError(f"{path}: golden has {len(inputs)} inputs but {len(outputs)} outputs")
    return inputs, outputs


def _run_golden(np, sess, inp: dict, inputs, outputs, cfg: dict, fixed_batch) -> dict:
    chunk = fixed_batch or GOLDEN_CHUNK
    got = []
    for start in range(0, len(inputs), chunk):
        x = np.ascontiguousarray(inputs[start:start + chunk], dtype=inp["dtype"])
        if fixed_batch and len(x) != fixed_batch:
            raise AgentError(f"the model's batch axis is fixed at {fixed_batch} but golden has "
                             f"{len(inputs)} samples, not a multiple of it")
        got.append(sess.run(None, {inp["name"]: x})[0])
    actual = np.concatenate(got).astype(np.float64)
    expected = outputs.astype(np.float64)
    if actual.shape != expected.shape:
        raise AgentError(f"golden 'outputs' have shape {list(expected.shape)} but the model "
                         f"returns {list(actual.shape)}")
    return _compare(np, actual, expected, cfg)


def _compare(np, actual, expected, cfg: dict) -> dict:
    diff = np.abs(actual - expected)
    rel = diff / np.maximum(np.abs(expected), REL_DIFF_FLOOR)
    n = len(expected)
    top1 = float(np.mean(actual.reshape(n, -1).argmax(1) == expected.reshape(n, -1).argmax(1)))
    close = bool(np.allclose(actual, expected, atol=cfg["atol"], rtol=cfg["rtol"]))
    return {
        "n": n, "max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max()),
        "top1_agreement": top1, "allclose": close,
        "atol": cfg["atol"], "rtol": cfg["rtol"], "min_top1_agreement": cfg["min_top1_agreement"],
        "passed": close and top1 >= cfg["min_top1_agreement"],
    }


# ---------------------------------------------------------------- timing
def _ms(seconds: float) -> float:
    return seconds * 1000.0


def _latency(np, run, cfg: dict) -> dict:
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
    t = np.array(times) * 1000.0
    return {"p50": float(np.percentile(t, 50)), "p90": float(np.percentile(t, 90)),
            "p99": float(np.percentile(t, 99)), "mean": float(t.mean()), "std": float(t.std()),
            "min": float(t.min()), "max": float(t.max()), "n": int(t.size)}


def _throughput(np, sess, inp: dict, sample_shape: tuple, batches: list, cfg: dict, golden_inputs) -> dict:
    """Samples per second at each batch size: the median of a few repeats."""
    out = {}
    budget = max(cfg["min_seconds"], 0.05) / THROUGHPUT_REPEATS  # seconds per repeat
    for b in batches:
        feed = {inp["name"]: _make_batch(np, inp, sample_shape, b, golden_inputs)}
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


# ---------------------------------------------------------------- main flow
def bench(model: str, cfg: dict, golden: str | None) -> dict:
    np, ort = _import_runtime()
    cpus = os.cpu_count() or 1
    golden_inputs = golden_outputs = None
    if golden:
        golden_inputs, golden_outputs = _load_golden(np, golden)

    requested, providers, options, warning = _choose_providers(ort, cfg["providers"], cpus)
    so = _session_options(ort, cfg, cpus)
    if "XnnpackExecutionProvider" in providers:
        # ONNX Runtime's XNNPACK docs: XNNPACK has its own thread pool; ORT's spinning threads
        # would compete with it for the same cores.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    t0 = time.perf_counter()
    sess = _create_session(ort, model, so, providers, options)
    init_ms = _ms(time.perf_counter() - t0)

    inp = _model_input(np, sess)
    if golden_inputs is not None:
        _check_golden_shape(inp, tuple(golden_inputs.shape[1:]))
    sample_shape = _sample_shape(inp, golden_inputs)
    fixed_batch = inp["shape"][0]  # None when the batch axis is dynamic
    x1 = {inp["name"]: _make_batch(np, inp, sample_shape, fixed_batch or 1, golden_inputs)}

    def run():
        sess.run(None, x1)

    t0 = time.perf_counter()
    run()
    first_run_ms = _ms(time.perf_counter() - t0)
    latency = _latency(np, run, cfg)

    batches = [fixed_batch] if fixed_batch else list(cfg["batches"])
    result = {
        "schema": SCHEMA_VERSION,
        "model": model, "model_bytes": os.path.getsize(model),
        "input": {"name": inp["name"], "shape": inp["declared"], "dtype": str(inp["dtype"]),
                  "sample_shape": list(sample_shape), "batch_dynamic": fixed_batch is None},
        "provider_requested": requested,
        "provider": sess.get_providers()[0],
        "providers_active": list(sess.get_providers()),
        "fallback": warning is not None,
        "threads_requested": cfg["intra_op_threads"],
        "threads": min(cfg["intra_op_threads"], cpus) if cfg["intra_op_threads"] > 0 else cpus,
        "inter_op_threads": cfg["inter_op_threads"],
        "graph_optimization": cfg["graph_optimization"],
        "cpu_count": cpus,
        "init_ms": init_ms, "first_run_ms": first_run_ms,
        "latency_ms": latency,
        "throughput": _throughput(np, sess, inp, sample_shape, batches, cfg, golden_inputs),
        "onnxruntime_version": ort.__version__, "numpy_version": np.__version__,
        "machine": platform.machine(), "python": platform.python_version(),
        "emulated": bool(cfg["emulated"]),
    }
    if warning:
        result["warning"] = warning
    if fixed_batch and cfg["batches"] != [fixed_batch]:
        result["throughput_note"] = f"the model's batch axis is fixed at {fixed_batch}; other batch sizes skipped"
    if golden_inputs is not None:
        result["golden"] = _run_golden(np, sess, inp, golden_inputs, golden_outputs, cfg, fixed_batch)
    # Last, so that it covers every run above.
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse would print usage and exit; we answer in JSON
        raise AgentError(f"usage: agent.py --model M.onnx --config CFG.json [--golden G.npz]: {message}")


def main(argv: list | None = None) -> int:
    _claim_stdout()
    parser = _Parser(prog="agent.py", add_help=False)
    parser.add_argument("--model", required=True)
    parser.add_argument("--config", required=True)
    parser.add_argument("--golden")
    try:
        args = parser.parse_args(argv)
        cfg = _load_config(args.config)
        result = bench(args.model, cfg, args.golden)
    except AgentError as e:
        _emit({"error": _one_line(e)})
        return 2
    except MemoryError:
        _emit({"error": "out of memory while benchmarking"})
        return 2
    except Exception as e:  # anything else is still one line of JSON, never a traceback
        _emit({"error": f"{type(e).__name__}: {_one_line(e)}"})
        return 2
    _emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
