"""edgekd.deploy.ep_support and the generated mobile profiles."""

from __future__ import annotations

import importlib.util
import pathlib
import sys

import pytest

from edgekd.deploy import ep_support
from edgekd.deploy.audit import RULES, unchecked_caveats
from edgekd.deploy.targets import load_target
from edgekd.errors import BadInput

REPO = pathlib.Path(__file__).resolve().parent.parent
GENERATED = ("android-nnapi", "apple-coreml", "cpu-arm-xnnpack")


def _gen_script():
    spec = importlib.util.spec_from_file_location("gen_mobile_profiles", REPO / "scripts" / "gen_mobile_profiles.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def _upstream_ops(provider: str) -> dict[str, str]:
    """The table as onnxruntime's own checker reads it, in edgekd's op spelling."""
    from onnxruntime.tools.mobile_helpers.usability_checker import _SupportedOpsChecker

    ops = _SupportedOpsChecker(str(ep_support.table_path(provider)))._ops
    return {op_name.split(":", 1)[1] if op_name.startswith("ai.onnx:") else op_name: caveat
            for op_name, caveat in ops.items()}


@pytest.mark.parametrize("provider", ["NnapiExecutionProvider", "CoreMLExecutionProvider",
                                      "CoreMLExecutionProvider:NeuralNetwork"])
def test_tables_parse_like_onnxruntime_checker(provider):
    ours = ep_support.load_support(provider)
    upstream = _upstream_ops(provider)
    repaired = {"Argmax": "ArgMax"}  # the only rename the shipped tables need today
    renamed = {repaired.get(op, op): caveat for op, caveat in upstream.items()}
    # everything upstream reads, we read with the same caveat; extra rows come only from repairs
    assert {op: ours[op] for op in renamed} == renamed
    extra = set(ours) - set(renamed)
    assert len(extra) == sum("read as 'ai.onnx:" in r for r in ep_support.repairs(provider))


def test_nnapi_caveats_are_verbatim():
    nnapi = ep_support.load_support("NnapiExecutionProvider")
    assert nnapi["Conv"] == "Only 2D Conv is supported. Weights and bias should be constant."
    assert nnapi["Relu"] == ""
    assert "com.microsoft:QLinearAdd" in nnapi
    assert not any(op.startswith("ai.onnx") for op in nnapi)


def test_typos_in_shipped_tables_are_repaired():
    coreml = ep_support.load_support("CoreMLExecutionProvider")
    assert "ArgMax" in coreml and "Argmax" not in coreml
    nn = ep_support.load_support("CoreMLExecutionProvider:NeuralNetwork")
    assert "ReduceSum" in nn  # written 'ai.onnx.ReduceSum' upstream


def test_coreml_means_mlprogram():
    assert ep_support.load_support("CoreMLExecutionProvider") == ep_support.load_support(
        "CoreMLExecutionProvider:MLProgram")
    assert "LayerNormalization" in ep_support.load_support("CoreMLExecutionProvider")


def test_unknown_provider_is_bad_input():
    with pytest.raises(BadInput, match="valid: .*NnapiExecutionProvider"):
        ep_support.load_support("NpuExecutionProvider")


def test_op_id():
    assert ep_support.op_id("", "Conv") == "Conv"
    assert ep_support.op_id("ai.onnx", "Conv") == "Conv"
    assert ep_support.op_id("com.microsoft", "FusedConv") == "com.microsoft:FusedConv"


def test_every_xnnpack_caveat_is_checked():
    for op, caveat in ep_support.load_support("XnnpackExecutionProvider").items():
        assert unchecked_caveats(caveat) == [], op


def test_every_rule_matches_some_caveat():
    """A rule whose wording no table uses would never run."""
    texts = [c for p in ep_support.PROVIDERS for c in ep_support.load_support(p).values()]
    unused = [r.pattern.pattern for r in RULES if not any(r.pattern.search(t) for t in texts)]
    assert unused == []


# ---------------------------------------------------------------- generated profiles
def test_committed_profiles_match_the_generator():
    """Drift: rerun scripts/gen_mobile_profiles.py after upgrading onnxruntime."""
    for path, text in _gen_script().render_all().items():
        assert path.read_text(encoding="utf-8") == text, f"{path.name} is stale"


def test_generator_check_mode_passes(capsys):
    assert _gen_script().main(["--check"]) == 0


@pytest.mark.parametrize("name", GENERATED)
def test_generated_profiles_validate(name):
    profile = load_target(name)
    assert profile.arch == "aarch64"
    assert profile.providers[-1].name == "CPUExecutionProvider"
    assert profile.ops_allow and set(profile.ops_caveats) <= profile.ops_allow


def test_profiles_hold_their_tables():
    nnapi = load_target("android-nnapi")
    assert nnapi.providers[0].name == "NnapiExecutionProvider"
    assert nnapi.ops_allow == frozenset(ep_support.load_support("NnapiExecutionProvider"))
    assert nnapi.ops_caveats["Conv"] == "Only 2D Conv is supported. Weights and bias should be constant."
    assert nnapi.precisions == ("fp32", "fp16", "int8")
    coreml = load_target("apple-coreml")
    assert coreml.providers[0].name == "CoreMLExecutionProvider"
    assert coreml.providers[0].options == {"ModelFormat": "MLProgram"}
    assert coreml.precisions == ("fp32", "fp16")
    xnn = load_target("cpu-arm-xnnpack")
    assert xnn.providers[0].name == "XnnpackExecutionProvider" and "intra_op_num_threads" in xnn.providers[0].options
    assert "GlobalAveragePool" not in xnn.ops_allow and "Conv" in xnn.ops_allow
