"""edgekd.deploy.parity: compare (tolerances, top-1, every failure with its numbers), and edgekd.runtime.session's
ort_run/ort_session on tiny ONNX graphs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from edgekd.deploy.parity import compare
from edgekd.errors import BadInput
from edgekd.runtime.session import ort_run, ort_session


def logits(n: int = 20, k: int = 5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


# ---------------------------------------------------------------- compare
def test_identical_outputs_pass() -> None:
    ref = logits()
    r = compare(ref, ref.copy(), atol=1e-4, rtol=1e-3, min_top1_agreement=1.0)
    assert r.passed and r.failures == []
    assert r.n == 20 and r.max_abs_diff == 0.0 and r.max_rel_diff == 0.0 and r.top1_agreement == 1.0


def test_within_tolerance_passes() -> None:
    ref = logits()
    actual = ref + np.float32(5e-5)  # < atol
    r = compare(ref, actual, atol=1e-4, rtol=0.0, min_top1_agreement=1.0)
    assert r.passed
    assert r.max_abs_diff == pytest.approx(5e-5, rel=1e-2)


def test_rtol_scales_with_the_reference() -> None:
    ref = np.array([[100.0, 1.0]], dtype=np.float32)
    # 0.05 off on 100 is inside rtol=1e-3·100 = 0.1; 0.05 off on 1.0 is outside 1e-3·1 + 0
    assert compare(ref, ref + [[0.05, 0.0]], atol=0.0, rtol=1e-3, min_top1_agreement=1.0).passed
    r = compare(ref, ref + [[0.0, 0.05]], atol=0.0, rtol=1e-3, min_top1_agreement=1.0)
    assert not r.passed
    assert r.max_rel_diff == pytest.approx(0.05, rel=1e-4)


def test_outside_tolerance_fails_with_the_numbers() -> None:
    ref = logits()
    actual = ref.copy()
    actual[3, 1] += 0.25
    r = compare(ref, actual, atol=1e-4, rtol=1e-3, min_top1_agreement=0.0, name="logits")
    assert not r.passed and len(r.failures) == 1
    msg = str(r.failures[0])  # a Failure whose text is the line the CLI shows
    assert (r.failures[0].kind, r.failures[0].value) == ("parity", 1)
    assert msg.startswith("logits:")
    assert "1 of 100 values" in msg
    assert "atol=0.0001" in msg and "rtol=0.001" in msg
    assert "max abs diff 0.25" in msg
    assert r.max_abs_diff == pytest.approx(0.25, rel=1e-5)


def test_top1_threshold() -> None:
    ref = np.eye(4, dtype=np.float32)          # argmax 0, 1, 2, 3
    actual = ref.copy()
    actual[0] = [0, 2, 0, 0]                    # one of four disagrees: agreement 0.75
    r = compare(ref, actual, atol=np.inf, rtol=0.0, min_top1_agreement=0.8)
    assert r.top1_agreement == 0.75
    assert [str(f) for f in r.failures if "top-1" in str(f)] == ["logits: top-1 agreement 0.7500 < 0.8 over 4 samples"]
    assert (r.failures[0].name, r.failures[0].value, r.failures[0].limit) == ("logits top1_agreement", 0.75, 0.8)
    # the threshold is inclusive: exactly 0.75 passes
    assert compare(ref, actual, atol=np.inf, rtol=0.0, min_top1_agreement=0.75).passed


def test_every_failure_is_collected() -> None:
    ref = np.eye(4, dtype=np.float32)
    actual = ref[::-1].copy()
    r = compare(ref, actual, atol=1e-4, rtol=1e-3, min_top1_agreement=1.0)
    assert len(r.failures) == 2
    assert "values outside" in str(r.failures[0]) and "top-1 agreement 0.0000 < 1" in str(r.failures[1])


def test_infinite_atol_checks_only_top1_and_finiteness() -> None:
    ref = logits()
    far = ref * 3 + 10                         # same argmax, far in value
    assert compare(ref, far, atol=np.inf, rtol=0.0, min_top1_agreement=1.0).passed
    bad = far.copy()
    bad[0, 0] = np.nan
    r = compare(ref, bad, atol=np.inf, rtol=0.0, min_top1_agreement=0.0)
    assert not r.passed
    assert r.to_dict()["atol"] is None          # inf is not JSON


def test_nan_in_the_output_fails() -> None:
    ref = logits()
    actual = ref.copy()
    actual[2, 2] = np.nan
    r = compare(ref, actual, atol=1e-4, rtol=1e-3, min_top1_agreement=0.0)
    assert not r.passed


def test_shape_mismatch_is_bad_input_naming_both_shapes() -> None:
    with pytest.raises(BadInput) as e:
        compare(logits(20, 5), logits(20, 4), atol=1e-4, rtol=1e-3, min_top1_agreement=1.0, name="int8 logits")
    msg = str(e.value)
    assert "int8 logits" in msg and "(20, 4)" in msg and "(20, 5)" in msg


def test_report_dict_has_the_manifest_fields() -> None:
    d = compare(logits(), logits(), atol=1e-4, rtol=1e-3, min_top1_agreement=1.0).to_dict()
    assert {"n", "max_abs_diff", "max_rel_diff", "top1_agreement", "passed"} <= set(d)
    assert d["n"] == 20 and isinstance(d["passed"], bool)


# ---------------------------------------------------------------- ort_run / ort_session
def tiny_onnx(path: Path, shape: list, *, op: str = "Relu") -> Path:
    """input → op → logits, with `shape` for both (ints fixed, strings symbolic)."""
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node(op, ["input"], ["logits"], name="act")], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def relu_session(tmp_path_factory):
    return ort_session(tiny_onnx(tmp_path_factory.mktemp("m") / "relu.onnx", ["batch", 3, 4]))


def test_ort_run_batches_and_concatenates(relu_session) -> None:
    x = np.random.default_rng(1).standard_normal((600, 3, 4))       # float64 in: cast to float32
    out = ort_run(relu_session, x, batch_size=256)                   # 256 + 256 + 88
    assert out.shape == (600, 3, 4) and out.dtype == np.float32
    np.testing.assert_allclose(out, np.maximum(x, 0).astype(np.float32))


def test_ort_run_wrong_shape_names_both_shapes(relu_session) -> None:
    with pytest.raises(BadInput) as e:
        ort_run(relu_session, np.zeros((2, 3, 5), np.float32))
    msg = str(e.value)
    assert "[2, 3, 5]" in msg and "'input'" in msg and "['batch', 3, 4]" in msg


def test_ort_run_wrong_rank_names_both_shapes(relu_session) -> None:
    with pytest.raises(BadInput) as e:
        ort_run(relu_session, np.zeros((2, 12), np.float32))
    assert "[2, 12]" in str(e.value) and "['batch', 3, 4]" in str(e.value)


def test_ort_run_wrong_rank_with_symbolic_inner_dims(tmp_path: Path) -> None:
    sess = ort_session(tiny_onnx(tmp_path / "m.onnx", ["batch", 3, "h", "w"]))
    with pytest.raises(BadInput, match=r"\[2, 3\]"):
        ort_run(sess, np.zeros((2, 3), np.float32))


def test_ort_run_fixed_batch_runs_in_chunks_of_that_batch(tmp_path: Path) -> None:
    sess = ort_session(tiny_onnx(tmp_path / "m.onnx", [1, 3, 4]))
    x = np.random.default_rng(0).normal(size=(5, 3, 4)).astype(np.float32)
    assert np.allclose(ort_run(sess, x), ort_run(ort_session(tiny_onnx(tmp_path / "d.onnx", ["batch", 3, 4])), x))


def test_ort_run_fixed_batch_that_does_not_divide_is_bad_input(tmp_path: Path) -> None:
    sess = ort_session(tiny_onnx(tmp_path / "m.onnx", [2, 3, 4]))
    with pytest.raises(BadInput, match=r"\[5, 3, 4\]"):
        ort_run(sess, np.zeros((5, 3, 4), np.float32))


def test_ort_session_on_a_corrupt_file_is_bad_input(tmp_path: Path) -> None:
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not protobuf")
    with pytest.raises(BadInput, match="ONNX Runtime cannot load it") as e:
        ort_session(bad)
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(BadInput):
        ort_session(tmp_path / "absent.onnx")


def test_session_report_lives_exactly_as_long_as_its_session(tmp_path: Path) -> None:
    """The report is tied to the session object, not to its id(): it is there while the session lives,
    gone once it is collected, and never handed to another object (a reused id used to get a stale one)."""
    import gc

    from edgekd.runtime import session as parity

    sess = ort_session(tiny_onnx(tmp_path / "m.onnx", ["batch", 3, 4]))
    report = parity.session_report(sess)
    assert report.get("provider") == "CPUExecutionProvider", report
    assert parity.session_report(object()) == {} and parity.session_report(None) == {}
    before = len(parity._REPORTS)
    del sess
    gc.collect()
    assert len(parity._REPORTS) == before - 1


@pytest.mark.parametrize("atol", [1e-4, float("inf")])
def test_export_parity_and_the_agent_golden_check_follow_one_convention(atol: float) -> None:
    """parity.compare (export) and the agent's compare_outputs (golden on a device) give the same
    numbers and verdict, exact zeros in the reference and the top-1-only rule included."""
    from edgekd.runtime.agent import REL_DIFF_FLOOR, compare_outputs

    rng = np.random.default_rng(3)
    ref = rng.standard_normal((40, 10))
    ref[:, 0] = 0.0                                  # exact zeros: the relative floor decides max_rel_diff
    got = ref + rng.standard_normal(ref.shape) * 1e-3
    got[5] = -got[5]                                 # one sample's top-1 flips
    ours = compare(ref, got, atol=atol, rtol=1e-3, min_top1_agreement=0.99)
    agent = compare_outputs(np, got, ref, atol=atol, rtol=1e-3, min_top1_agreement=0.99)
    assert ours.max_abs_diff == agent["max_abs_diff"] and ours.top1_agreement == agent["top1_agreement"]
    assert ours.max_rel_diff == agent["max_rel_diff"]
    assert ours.max_rel_diff == pytest.approx(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), REL_DIFF_FLOOR)))
    assert ours.passed == agent["passed"] is False
    assert (len(ours.failures) == 2) == np.isfinite(atol)    # top-1 only: no element-wise failure
