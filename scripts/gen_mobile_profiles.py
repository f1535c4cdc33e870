#!/usr/bin/env python
"""Generate the mobile target profiles from the operator data onnxruntime ships.

    python scripts/gen_mobile_profiles.py           # (re)write the profiles
    python scripts/gen_mobile_profiles.py --check   # exit 1 if a committed profile differs

Writes targets/android-nnapi.toml (NNAPI table), targets/apple-coreml.toml
(CoreML MLProgram table) and targets/cpu-arm-xnnpack.toml (XNNPACK's kernels,
read from the onnxruntime sources; see edgekd.deploy.ep_support). The op lists and
caveats come from the installed onnxruntime wheel, so upgrading onnxruntime
and rerunning this script is how the profiles follow it; tests/test_ep_support.py
fails when the committed files drift from what this script generates.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgekd.deploy import ep_support  # noqa: E402  (needs the sys.path line above)

TARGETS = REPO / "targets"


@dataclass(frozen=True)
class Spec:
    """Everything about a profile that does not come from the support data."""

    name: str
    description: str
    provider: str                     # execution provider whose ops the profile allows
    support: str                      # ep_support key for its op data
    provider_options: dict[str, str] = field(default_factory=dict)
    precisions: tuple[str, ...] = ("fp32",)
    intra_op_threads: int = 4
    graph_optimization: str = "basic"
    budget: dict[str, float] = field(default_factory=dict)
    parity: dict[str, float] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# NPUs and mobile GPUs compute in fp16 (NNAPI's relaxed mode, CoreML MLProgram on
# the Neural Engine), so their parity tolerances are those of fp16, not fp32.
NPU_PARITY = {"atol": 1e-3, "rtol": 1e-2, "min_top1_agreement": 0.99, "int8_min_top1_agreement": 0.98}
# A mid-range phone: the budget a small classifier should meet on its CPU fallback.
PHONE_BUDGET = {"latency_p90_ms": 15.0, "peak_memory_mb": 256, "model_size_mb": 8}
# Mobile deployments optimize at 'basic': extended/all fusions create com.microsoft
# ops (FusedConv, ...) that NNAPI cannot take; ORT's convert_onnx_models_to_ort
# uses the same level for NNAPI/CoreML models.
MOBILE_OPT = ("ORT's mobile tools optimize NNAPI/CoreML models at 'basic': the extended fusions make "
              "com.microsoft ops the NPU cannot take")

SPECS = (
    Spec(
        name="android-nnapi",
        description="Android phone NPU/GPU/DSP through ONNX Runtime's NNAPI execution provider",
        provider="NnapiExecutionProvider", support="NnapiExecutionProvider",
        precisions=("fp32", "fp16", "int8"),
        budget=PHONE_BUDGET, parity=NPU_PARITY,
        notes=(MOBILE_OPT, "NNAPI takes only nodes whose inputs have fixed shapes: export with a fixed batch "
               "or run python -m onnxruntime.tools.make_dynamic_shape_fixed"),
    ),
    Spec(
        name="apple-coreml",
        description="iPhone/iPad/Mac Neural Engine and GPU through ONNX Runtime's CoreML execution provider "
                    "(MLProgram, iOS 15+/macOS 12+)",
        provider="CoreMLExecutionProvider", support="CoreMLExecutionProvider:MLProgram",
        # MLProgram is not the EP's default (NeuralNetwork, deprecated by Apple); ask for it so the
        # runtime uses the table these ops come from
        provider_options={"ModelFormat": "MLProgram"},
        precisions=("fp32", "fp16"),
        budget=PHONE_BUDGET, parity={k: v for k, v in NPU_PARITY.items() if not k.startswith("int8")},
        notes=(MOBILE_OPT,),
    ),
    Spec(
        name="cpu-arm-xnnpack",
        description="64-bit Arm Cortex-A CPU through ONNX Runtime's XNNPACK execution provider, "
                    "every node in XNNPACK",
        provider="XnnpackExecutionProvider", support="XnnpackExecutionProvider",
        # XNNPACK runs its own thread pool (sized here); ORT's docs advise turning off ORT's
        # intra-op spinning (session.intra_op.allow_spinning = 0) so the two pools do not contend
        provider_options={"intra_op_num_threads": "4"},
        precisions=("fp32", "int8"), graph_optimization="all",
        budget={"latency_p90_ms": 5.0, "peak_memory_mb": 256, "model_size_mb": 2},
        parity={"atol": 1e-4, "rtol": 1e-3, "min_top1_agreement": 1.0, "int8_min_top1_agreement": 0.99},
        notes=("ops.allow lists only what XNNPACK's GetCapability takes; anything else (GlobalAveragePool, "
               "Flatten, Reshape, Add, ...) falls back to the CPU EP and fails this profile's audit. "
               "Use cpu-arm to allow the CPU EP fallback",),
    ),
)


def _q(s: str) -> str:
    """A TOML basic string (JSON's escapes are valid TOML)."""
    return json.dumps(s, ensure_ascii=False)


def _array(items: list[str], indent: str = "  ", width: int = 100) -> str:
    lines, line = [], indent
    for item in items:
        piece = _q(item) + ", "
        if len(line) + len(piece) > width and line.strip():
            lines.append(line.rstrip())
            line = indent
        line += piece
    lines.append(line.rstrip().rstrip(","))
    return "[\n" + "\n".join(lines) + "\n]"


def render(spec: Spec) -> str:
    import onnxruntime

    support = ep_support.load_support(spec.support)
    source = ep_support.table_source(spec.support)
    out = [
        f"# Generated by scripts/gen_mobile_profiles.py from onnxruntime {onnxruntime.__version__}; do not edit.",
        "# Rerun the script after upgrading onnxruntime (tests/test_ep_support.py fails on drift).",
    ]
    out += [line for n in spec.notes for line in textwrap.wrap(n + ".", 98, initial_indent="# ",
                                                                subsequent_indent="# ")]
    out += [f"# Repaired a typo in the shipped table: {r}." for r in ep_support.repairs(spec.support)]
    out += [
        f"name = {_q(spec.name)}",
        f"description = {_q(spec.description)}",
        'arch = "aarch64"',
        "opset = 17",
        "",
        "[runtime]",
        "providers = [",
    ]
    opts = ", ".join(f"{k} = {_q(v)}" for k, v in spec.provider_options.items())
    out.append(f"  {{ name = {_q(spec.provider)}" + (f", options = {{ {opts} }}" if opts else "") + " },")
    out += [
        '  { name = "CPUExecutionProvider" },',
        "]",
        f"intra_op_threads = {spec.intra_op_threads}",
        "inter_op_threads = 1",
        f"graph_optimization = {_q(spec.graph_optimization)}",
        "",
        "[ops]",
        f"source = {_q(source)}",
        f"allow = {_array(sorted(support))}",
        "",
        "[ops.caveats]",
    ]
    out += [f"{_q(op)} = {_q(text)}" for op, text in sorted(support.items()) if text]
    out += ["", "[precision]", f"allowed = [{', '.join(_q(p) for p in spec.precisions)}]", ""]
    if spec.budget:
        out += ["[budget]"] + [f"{k} = {repr(v)}" for k, v in spec.budget.items()] + [""]
    out += ["[parity]"] + [f"{k} = {repr(v)}" for k, v in spec.parity.items()]
    return "\n".join(out) + "\n"


def render_all() -> dict[Path, str]:
    return {TARGETS / f"{spec.name}.toml": render(spec) for spec in SPECS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a committed profile differs")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all().items():
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current == text:
            continue
        if args.check:
            stale.append(path)
        else:
            tmp = path.with_suffix(".toml.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.replace(path)
            print(f"wrote {path.relative_to(REPO)}")
    if stale:
        print("stale (rerun scripts/gen_mobile_profiles.py): " + ", ".join(str(p.relative_to(REPO)) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
