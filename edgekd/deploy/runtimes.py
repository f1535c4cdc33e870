"""Runtime environments: the ONNX Runtime build a device ships, in a venv of its own.

A profile's `[runtime] package` names the distribution the device runs
(`onnxruntime-openvino==1.24.1`, `onnxruntime==1.20.1`, `onnxruntime-gpu`). Those
distributions all provide the same `onnxruntime` module, so each gets its own venv:

    ~/.cache/edgekd/runtimes/<name>-<version>/      (<name>-latest for a bare name)
        bin/python ...                               numpy and that package, nothing else
        runtime.json                                 written last: ORT version, providers, setup time

`edgekd runner setup TARGET` builds it (`setup_runtime`); the local runner, export's
parity and the audit's real partition run the bench agent (`edgekd/runtime/agent.py`)
with its interpreter (`run_agent`). A profile without `package` uses the host's
onnxruntime. `$EDGEKD_RUNTIMES` moves the folder (tests point it at a temp dir).

This module lives in deploy (not bench) because export and audit run the agent in the
target's runtime; the agent lives in `edgekd/runtime`, below both deploy and bench, so deploy
imports nothing from bench.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from edgekd.artifacts import replace_dir
from edgekd.errors import BadInput
from edgekd.runtime import AGENT_OPTIONS, AGENT_PATH

if TYPE_CHECKING:
    from edgekd.deploy.targets import TargetProfile

RUNTIMES_ENV = "EDGEKD_RUNTIMES"
RUNTIMES_DEFAULT = Path("~/.cache/edgekd/runtimes")
MARKER = "runtime.json"
# NAME or NAME==VERSION, NAME a distribution that provides the `onnxruntime` module.
PACKAGE_RE = re.compile(r"^(onnxruntime(?:[._-][A-Za-z0-9]+)*)(?:==([0-9][A-Za-z0-9.+!]*))?$")
PACKAGE_FORMS = ("NAME==VERSION (an exact pin, e.g. onnxruntime-openvino==1.24.1) or NAME (the newest at setup, "
                 "e.g. onnxruntime-gpu); NAME is an onnxruntime distribution")
SETUP_TIMEOUT_S = 1800
PROBE_TIMEOUT_S = 300
_PROBE = ("import json, platform, sys, numpy, onnxruntime; print(json.dumps({'onnxruntime_version': "
          "onnxruntime.__version__, 'providers': onnxruntime.get_available_providers(), 'numpy_version': "
          "numpy.__version__, 'python_version': platform.python_version(), 'python': sys.executable}))")


# ---------------------------------------------------------------- names
def parse_package(spec: str) -> tuple[str, str | None]:
    """(name, version or None) of a profile's `package`; ValueError naming the valid forms."""
    m = PACKAGE_RE.fullmatch(spec.strip()) if isinstance(spec, str) else None
    if not m:
        raise ValueError(f"'{spec}' is not valid; valid: {PACKAGE_FORMS}")
    return m.group(1).lower().replace("_", "-").replace(".", "-"), m.group(2)


def runtimes_root() -> Path:
    """$EDGEKD_RUNTIMES, else ~/.cache/edgekd/runtimes."""
    return Path(os.environ.get(RUNTIMES_ENV) or RUNTIMES_DEFAULT).expanduser().resolve()


def env_dir(spec: str) -> Path:
    name, version = parse_package(spec)
    return runtimes_root() / f"{name}-{version or 'latest'}"


def env_python(path: Path) -> Path:
    return path / "bin" / "python"


def clean_env() -> dict[str, str]:
    """The host's environment minus what would leak the host's Python into the runtime's venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return {**env, "PYTHONNOUSERSITE": "1"}


def setup_command(target: "TargetProfile") -> str:
    return f"edgekd runner setup {target.ref}"


# ---------------------------------------------------------------- state
def status(target: "TargetProfile") -> dict[str, Any]:
    """Where the target's onnxruntime comes from and whether it is ready: `state` is host, ready,
    missing or broken (with `reason`)."""
    if not target.package:
        import importlib.metadata as md

        try:
            version = md.version("onnxruntime")
        except md.PackageNotFoundError:
            version = None
        return {"mechanism": "host", "package": None, "state": "host", "ready": version is not None,
                "onnxruntime_version": version, "python": sys.executable}
    path = env_dir(target.package)
    out = {"mechanism": "package", "package": target.package, "path": str(path), "setup": setup_command(target)}
    marker = path / MARKER
    if not marker.exists():
        return {**out, "state": "missing", "ready": False, "reason": f"not set up (run `{out['setup']}`)"}
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
        assert isinstance(info, dict) and info.get("onnxruntime_version")
    except (OSError, ValueError, AssertionError):
        return {**out, "state": "broken", "ready": False, "reason": f"{marker} is unreadable"}
    if not os.access(env_python(path), os.X_OK):
        return {**out, "state": "broken", "ready": False, "reason": f"{env_python(path)} is missing"}
    return {**out, **info, "state": "ready", "ready": True}


def require(target: "TargetProfile") -> dict[str, Any]:
    """The target's ready runtime environment, or BadInput: one line with the setup command
    (missing) or naming the environment (broken)."""
    st = status(target)
    if st["state"] == "missing":
        raise BadInput(f"target {target.name} runs {target.package}, whose runtime environment {st['path']} "
                       f"is not set up; run `{st['setup']}`")
    if st["state"] == "broken":
        raise BadInput(f"the runtime environment {st['path']} ({target.package}) is broken: {st['reason']}; "
                       f"run `{st['setup']} --force`")
    return st


def runtime_record(target: "TargetProfile", st: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a manifest records as `execution.runtime`: the package, its version and env, or the host's."""
    st = st or status(target)
    keys = ("mechanism", "package", "onnxruntime_version", "path") if st["mechanism"] == "package" else \
        ("mechanism", "onnxruntime_version", "python")
    return {k: st.get(k) for k in keys}


# ---------------------------------------------------------------- setup
def setup_runtime(target: "TargetProfile", *, wheels: Path | str | None = None, force: bool = False,
                  progress: Callable[[str], Any] = print) -> dict[str, Any]:
    """Create the target's runtime environment and return its runtime.json.

    `python -m venv`, then pip installs numpy and the package (no dependencies: the agent
    needs neither protobuf nor sympy). `wheels` installs from that folder only (pip
    --no-index --find-links), so tests and CI never download. Built beside its final place
    and renamed into it: an interrupted setup leaves nothing half-made."""
    if not target.package:
        raise BadInput(f"target {target.name} runs the host's onnxruntime ([runtime] has no package); "
                       "nothing to set up")
    dest = env_dir(target.package)
    if not force and status(target)["state"] == "ready":
        progress(f"runtime {target.package} already set up in {dest}")
        return status(target)
    if wheels is not None and not Path(wheels).expanduser().is_dir():
        raise BadInput(f"--wheels {wheels}: folder not found")
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    try:
        progress(f"creating a venv for {target.package} in {dest}")
        _step([sys.executable, "-m", "venv", "--clear", str(work)], "python -m venv")
        progress(f"installing numpy and {target.package}" + (f" from {wheels}" if wheels else ""))
        _step(_pip_install(work, target.package, wheels), f"pip install {target.package}")
        info = {"package": target.package, **probe(work, target.package), "python": str(env_python(dest)),
                "wheels": str(wheels) if wheels else None,
                "setup_seconds": round(time.monotonic() - started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                              time.gmtime())}
        (work / MARKER).write_text(json.dumps(info, indent=2), encoding="utf-8")
        replace_dir(work, dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    progress(f"runtime {target.package} ready in {dest} ({info['setup_seconds']} s): "
             f"onnxruntime {info['onnxruntime_version']}, providers {', '.join(info['providers'])}")
    return status(target)


def _pip_install(work: Path, package: str, wheels: Path | str | None) -> list[str]:
    cmd = [str(env_python(work)), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
           "--no-deps", "--only-binary=:all:"]
    if wheels is not None:
        cmd += ["--no-index", "--find-links", str(Path(wheels).expanduser().resolve())]
    return cmd + ["numpy", package]


def _step(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=SETUP_TIMEOUT_S, env=clean_env(),
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BadInput(f"{what} timed out after {SETUP_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
        err = [ln for ln in lines if ln.startswith("ERROR")]
        raise BadInput(f"{what} failed: {(err or lines or ['(no output)'])[0]}")


def probe(path: Path, package: str | None = None) -> dict[str, Any]:
    """Import onnxruntime and numpy with the env's interpreter: version, providers, python."""
    try:
        proc = subprocess.run([str(env_python(path)), "-c", _PROBE], capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, env=clean_env(), stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BadInput(f"the runtime environment {path} does not start: {e}") from None
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
        raise BadInput(f"the runtime environment {path} cannot import onnxruntime: {err[-1]}")
    info = json.loads(lines[-1])
    name, version = parse_package(package) if package else (None, None)
    if version and info["onnxruntime_version"] != version:
        raise BadInput(f"the runtime environment {path} holds onnxruntime {info['onnxruntime_version']}, "
                       f"not the {version} that {package} pins")
    return info


# ---------------------------------------------------------------- the agent in the env
def run_agent(target: "TargetProfile", *, model: Path, config: dict[str, Any], golden: Path | None = None,
              timeout: float = 600) -> dict[str, Any]:
    """Run the bench agent with the target's runtime and return its JSON object (an agent error
    comes back as {"error": ...} for the caller to judge). BadInput when the env is missing or
    broken, or the agent died without answering."""
    st = require(target)
    with tempfile.TemporaryDirectory(prefix="edgekd-rt-") as tmp:
        cfg = Path(tmp) / AGENT_OPTIONS
        cfg.write_text(json.dumps(config), encoding="utf-8")
        cmd = [str(env_python(Path(st["path"]))), str(AGENT_PATH), "--model", str(model), "--config", str(cfg)]
        cmd += ["--golden", str(golden)] if golden is not None else []
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=clean_env(),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise BadInput(f"bench agent in {st['path']} timed out after {timeout:g} s") from None
        except OSError as e:
            raise BadInput(f"the runtime environment {st['path']} ({target.package}) is broken: {e}; "
                           f"run `{st['setup']} --force`") from None
    lines = proc.stdout.strip().splitlines()
    try:
        obj = json.loads(lines[-1]) if lines else None
    except ValueError:
        obj = None
    if not isinstance(obj, dict):
        err = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()] or ["(no output)"]
        raise BadInput(f"bench agent in the runtime environment {st['path']} exited with code {proc.returncode} "
                       f"without a result: {err[-1]}")
    error = obj.get("error")
    if isinstance(error, dict) and error.get("kind") == "missing_runtime":
        raise BadInput(f"the runtime environment {st['path']} ({target.package}) is broken: {error.get('message')}; "
                       f"run `{st['setup']} --force`")
    obj.setdefault("runtime", runtime_record(target, st))
    return obj


def check_config(target: "TargetProfile", *, int8: bool = False, assignment: bool = False) -> dict[str, Any]:
    """The agent's config for a check (no timing): the target's providers, threads and tolerances."""
    p = target.parity
    atol, rtol = (float("inf"), 0.0) if int8 else (p.atol, p.rtol)
    min_top1 = (0.99 if p.int8_min_top1_agreement is None else p.int8_min_top1_agreement) if int8 \
        else p.min_top1_agreement
    return {"providers": [x.to_dict() for x in target.providers], "intra_op_threads": target.intra_op_threads,
            "inter_op_threads": target.inter_op_threads, "graph_optimization": target.graph_optimization,
            "atol": atol, "rtol": rtol, "min_top1_agreement": min_top1, "check_only": True,
            "assignment": assignment,
            "tolerances": {} if int8 else {k: vars(t) for k, t in p.reduced.items()}}


# ---------------------------------------------------------------- what a failed load means
_OPSET = re.compile(r"Opset (\d+) is under development.*?support for domain (\S+) is till opset (\d+)", re.S)
_NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")
_IR = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")
_NO_SCHEMA = re.compile(r"No Op registered for (\w+) with domain_version of (\d+)")


def load_failure(target: "TargetProfile", error: dict[str, Any]) -> str:
    """One line for an agent error from the target's runtime: the ORT version and the opset or op
    it lacks; for OpenVINO, OpenVINO's own first error line."""
    message = str(error.get("message", ""))
    text = str(error.get("detail") or message)
    st = status(target)
    where = f"onnxruntime {st.get('onnxruntime_version') or '?'} ({target.package or 'host'})"
    m = _OPSET.search(text)
    if m:
        return (f"{where} cannot load the model: opset {m.group(1)} of {m.group(2).rstrip('.')} is beyond it "
                f"(it supports up to opset {m.group(3)})")
    m = _IR.search(text)
    if m:
        return (f"{where} cannot load the model: IR version {m.group(1)} is beyond it "
                f"(it reads up to IR version {m.group(2)})")
    m = _NO_KERNEL.search(text) or _NO_SCHEMA.search(text)
    if m:
        return f"{where} cannot load the model: op {m.group(1)} (opset {m.group(2)}) is beyond it"
    if "OpenVINO" in text:
        return f"OpenVINO in {target.package or 'the host onnxruntime'} cannot build the model: " \
               f"{error.get('first_line') or message}"
    return f"{where}: {message}"


# ---------------------------------------------------------------- export's checks in the env
def parity_in_runtime(model: Path, ref: Any, x: Any, target: "TargetProfile", *, int8: bool = False) -> dict[str, Any]:
    """Export's parity through the target's providers in its runtime environment: the agent's
    golden check of `model` on inputs `x` against PyTorch's outputs `ref` (no timing). The
    shape of `edgekd.deploy.export.provider_parity`'s answer, plus `runtime`."""
    import numpy as np

    from edgekd.deploy.parity import report_of

    first = target.providers[0]
    with tempfile.TemporaryDirectory(prefix="edgekd-parity-") as tmp:
        golden = Path(tmp) / "golden.npz"
        np.savez(golden, inputs=np.asarray(x, np.float32), outputs=np.asarray(ref, np.float32))
        obj = run_agent(target, model=Path(model), config=check_config(target, int8=int8), golden=golden)
    runtime = obj.get("runtime")
    if "error" in obj:
        return {"ran": False, "provider": first.name, "runtime": runtime, "reason": load_failure(target, obj["error"])}
    if obj.get("provider") != first.name:
        return {"ran": False, "provider": first.name, "runtime": runtime,
                "reason": obj.get("warning", f"{first.name} did not run")}
    g = obj["golden"]
    atol = float("inf") if g.get("atol") is None else g["atol"]
    report = report_of(g, atol=atol, rtol=g["rtol"], min_top1_agreement=g["min_top1_agreement"],
                       name=f"{first.name} {'int8 ' if int8 else ''}logits")
    ex = obj.get("execution") or {}
    return {"ran": True, **{k: ex.get(k) for k in ("provider", "device", "vendor", "ep_version", "precision",
                                                    "plugin", "plugin_version")},
            "options": dict(first.options), "runtime": runtime, **report.to_dict()}


def partition_in_runtime(model: Path, target: "TargetProfile") -> dict[str, Any]:
    """ONNX Runtime's node -> provider assignment from the agent in the target's runtime:
    {"assignment", "info", "runtime"} when the target's provider built the session, else the
    `real_partition` answer for a session that did not build or a provider that did not run."""
    wanted = target.providers[0].name
    obj = run_agent(target, model=Path(model), config=check_config(target, assignment=True))
    runtime = obj.get("runtime")
    error = obj.get("error")
    if isinstance(error, dict):
        if error.get("kind") not in ("model", "session"):
            return {"ran": False, "provider": wanted, "runtime": runtime, "reason": error.get("message")}
        line = load_failure(target, error)
        return {"ran": True, "provider": wanted, "built": False, "passed": False, "error": line, "runtime": runtime,
                "summary": f"the session did not build: {line}"}
    if obj.get("provider") != wanted:
        return {"ran": False, "provider": wanted, "runtime": runtime,
                "reason": obj.get("warning", f"{wanted} did not run")}
    if "assignment" not in obj:
        return {"ran": False, "provider": wanted, "runtime": runtime, "loaded": True,
                "reason": f"{target.package} loaded the model but "
                          + obj.get("assignment_unavailable", "reported no assignment").split(" ", 2)[-1]}
    return {"assignment": obj["assignment"], "info": obj.get("execution") or {}, "runtime": runtime}
