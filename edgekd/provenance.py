"""Where a result came from: library versions, interpreter, platform, process group and host CPU.

`provenance()` goes into distill.json (so a `--nproc 2` run is recognisable from its files
alone); `host_cpu()` into bench.json (the CPU model and the ISA extensions ONNX Runtime's
kernels dispatch on). Both read only what is already installed or in /proc: no torch
import unless torch is already loaded, no network.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

# /proc/cpuinfo flag → the name we record. AMX is several flags (tile, int8, bf16): any counts.
ISA_FLAGS = {"avx2": ("avx2",), "avx512f": ("avx512f",), "avx512_vnni": ("avx512_vnni", "avx512vnni"),
             "avx512_bf16": ("avx512_bf16",), "amx": ("amx_tile", "amx_int8", "amx_bf16"),
             "neon": ("neon", "asimd")}
PACKAGES = ("torch", "torchvision", "onnxruntime", "onnx", "numpy")


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def provenance(*, device: str = "cpu") -> dict[str, Any]:
    """Versions, interpreter, platform, device and the process group this process belongs to."""
    from edgekd import __version__
    from edgekd.ranks import _dist, world_size

    d = _dist()
    return {"edgekd": __version__, **{p: _version(p) for p in PACKAGES},
            "python": platform.python_version(), "platform": platform.platform(), "device": device,
            "world_size": world_size(), "backend": d.get_backend() if d is not None else None}


def host_cpu(cpuinfo: str | Path = "/proc/cpuinfo") -> dict[str, Any]:
    """The host's CPU model and its ISA extensions relevant to ONNX Runtime, from /proc/cpuinfo
    (x86 `flags`, Arm `Features`); `flags` is None where the file cannot be read."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        text = ""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or fields.get("cpu model") or platform.processor()
    present = set((fields.get("flags") or fields.get("features") or "").split())
    flags = {name: any(f in present for f in aliases) for name, aliases in ISA_FLAGS.items()} if present else None
    return {"model": model or None, "machine": platform.machine(), "flags": flags,
            "logical_cpus": _cpu_count(), "python_bits": 64 if sys.maxsize > 2**32 else 32}


def _cpu_count() -> int | None:
    import os

    return os.cpu_count()
