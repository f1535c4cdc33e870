"""ONNX Runtime's mobile format: `model.ort` and `required_operators.config`.

The .ort file is the FlatBuffers model that ONNX Runtime's reduced-size
(minimal) builds load; required_operators.config lists the operators it uses,
which such a build takes as `--include_ops_by_config` so that it ships only
those kernels. Both come from onnxruntime's own converter
(`python -m onnxruntime.tools.convert_onnx_models_to_ort`), run as a subprocess.

The converter writes next to its input (and makes temporary folders there), so
it runs on a copy in a temporary folder inside `out_dir`; the results are then
renamed into place, which is atomic because they are on the same file system.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from edgekd.errors import BadInput

# 'Fixed' bakes every optimization into the .ort file at conversion time; ORT's
# guidance is to use it unless a compiling provider (NNAPI, CoreML) takes part
# of the graph, where 'Runtime' keeps those optimizations to replay at load time.
OPTIMIZATION_STYLE = "Fixed"
OPTIMIZATION_STYLES = ("Fixed", "Runtime")
# Mobile targets are Arm: 'arm' lets the converter keep int8 QDQ activations
# as int8 (session.qdqisint8allowed=1) and leaves out the x86-only NCHWc layout.
TARGET_PLATFORM = "arm"
TARGET_PLATFORMS = ("arm", "amd64")
# Same names as a target profile's graph_optimization; 'layout' is the converter's extra level.
OPTIMIZATION_LEVEL = "all"
OPTIMIZATION_LEVELS = ("disable", "basic", "extended", "layout", "all")
# Off: type reduction shrinks a build further but needs a build made with
# --enable_reduced_operator_type_support; a plain op list works with every reduced build.
TYPE_REDUCTION = False
CONFIG_NAME = "required_operators.config"
# Providers that pick the nodes they run when a session starts. ORT's guidance
# names NNAPI and CoreML; QNN and XNNPACK match the same ONNX/QDQ patterns, so
# CPU-provider fusions baked in at conversion hide nodes from them too.
SUBGRAPH_PROVIDERS = frozenset({
    "NnapiExecutionProvider", "CoreMLExecutionProvider", "QNNExecutionProvider", "XnnpackExecutionProvider",
})


def convert_to_ort(
    *,
    model: Path,
    out_dir: Path,
    optimization_style: str = OPTIMIZATION_STYLE,
    target_platform: str = TARGET_PLATFORM,
    optimization_level: str = OPTIMIZATION_LEVEL,
    enable_type_reduction: bool = TYPE_REDUCTION,
    config_name: str = CONFIG_NAME,
) -> dict:
    """Convert `model` (.onnx) to ORT format in `out_dir`.

    Writes `<model stem>.ort` and `config_name`, and returns
    {"ort": Path, "required_operators": Path, "optimization_style": str,
     "target_platform": str, "optimization_level": str, "type_reduction": bool}.
    """
    model, out_dir = Path(model), Path(out_dir)
    _check_choice("optimization_style", optimization_style, OPTIMIZATION_STYLES)
    _check_choice("target_platform", target_platform, TARGET_PLATFORMS)
    _check_choice("optimization_level", optimization_level, OPTIMIZATION_LEVELS)
    if not model.is_file():
        raise BadInput(f"{model}: no such model file")
    if model.suffix.lower() != ".onnx":
        raise BadInput(f"{model}: not an .onnx file; the converter only reads .onnx models")

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".ort-convert-") as work:
        work = Path(work)
        (work / "in").mkdir()
        source = work / "in" / model.name
        _copy_model(model, source)
        _run_converter(model, source, work / "out", optimization_style, target_platform,
                       optimization_level, enable_type_reduction)
        ort_file = _single(work / "out", "*.ort", model)
        config = _single(work / "out", "*.config", model)
        ort_dest, config_dest = out_dir / f"{model.stem}.ort", out_dir / config_name
        _name_source(config, ort_dest.name)
        os.replace(ort_file, ort_dest)
        os.replace(config, config_dest)
    return {
        "ort": ort_dest,
        "required_operators": config_dest,
        "optimization_style": optimization_style,
        "target_platform": target_platform,
        "optimization_level": optimization_level,
        "type_reduction": enable_type_reduction,
    }


def read_required_ops(config_path: Path) -> dict[str, list[str]]:
    """The operators in a required_operators.config, by domain: {"ai.onnx": ["Conv", ...]}.

    Lines are `domain;opset[,opset];Op1,Op2{type info},...`; ONNX Runtime's own
    parser reads them, so type-reduction info and comments are handled as the
    reduced build handles them. Opsets are merged: the ops are what a build needs.
    """
    from onnxruntime.tools.reduced_build_config_parser import parse_config

    config_path = Path(config_path)
    if not config_path.is_file():
        raise BadInput(f"{config_path}: no such operator config file")
    try:
        by_opset = parse_config(str(config_path))[0] or {}
    except (ValueError, RuntimeError) as exc:
        raise BadInput(f"{config_path}: not a valid operator config ({exc}); "
                       "valid lines: domain;opset;Op1,Op2") from exc
    return {domain: sorted(set().union(*opsets.values())) for domain, opsets in sorted(by_opset.items())}


def optimization_style_for(providers: Iterable[str]) -> str:
    """'Runtime' when one of SUBGRAPH_PROVIDERS comes first in `providers` (a
    target's provider names, in priority order), else 'Fixed'. Fixed bakes in CPU-provider fusions
    (com.microsoft FusedConv, QLinearConv in NHWC) that such a provider would
    not claim; Runtime keeps plain ONNX ops and replays those fusions at load
    time only on what is left to the CPU provider."""
    first = next(iter(providers), "CPUExecutionProvider")
    return "Runtime" if first in SUBGRAPH_PROVIDERS else "Fixed"


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise BadInput(f"{key}: {value!r} is not valid; valid: {', '.join(valid)}")


def _copy_model(model: Path, dest: Path) -> None:
    """Copy the model into the work folder as one self-contained file (external
    data, if any, inlined), checking on the way that it is an ONNX model."""
    import onnx

    try:
        proto = onnx.load(str(model))
    except Exception as exc:  # protobuf's DecodeError and friends: all mean "not an ONNX file"
        raise BadInput(f"{model}: not a readable ONNX model ({type(exc).__name__})") from exc
    onnx.save(proto, str(dest))


def _run_converter(model: Path, source: Path, out: Path, style: str, platform: str, level: str,
                   types: bool) -> None:
    """Run the converter on `source` (the copy of `model`) into `out`; on failure
    raise with the converter's last stderr line, which holds its exception."""
    command = [
        sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort",
        "--optimization_style", style,
        "--target_platform", platform,
        "--output_dir", str(out),
        *(["--enable_type_reduction"] if types else []),
        str(source),
    ]
    # The converter reads its optimization level from this variable only.
    env = {**os.environ, "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL": level}
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=source.parent)
    if done.returncode != 0:
        lines = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
        last = lines[-1].strip() if lines else f"exit status {done.returncode}"
        last = last.replace(str(source), str(model))  # name the user's file, not our copy
        raise BadInput(f"{model}: ONNX Runtime's ORT-format converter failed: {last}")


def _name_source(config: Path, ort_name: str) -> None:
    """The converter's header names the temporary .ort path; name the final file
    instead, so the config does not change with the temporary folder's name."""
    lines = config.read_text().splitlines()
    config.write_text("\n".join(f"# - {ort_name}" if line.startswith("# - ") else line for line in lines) + "\n")


def _single(folder: Path, pattern: str, model: Path) -> Path:
    """The one file the converter wrote that matches `pattern` (its names vary
    with style and level, e.g. model.with_runtime_opt.ort)."""
    found = sorted(folder.glob(pattern))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise RuntimeError(f"{model}: expected one {pattern} from the ORT converter, found {names}")
    return found[0]
