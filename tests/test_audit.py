"""edgekd.deploy.audit: agreement with onnxruntime's own mobile checker, caveat checks, names, coverage, bad files."""

from __future__ import annotations

import dataclasses
import pathlib
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.deploy.audit import NOT_ALLOWED, _node_names, audit_file, audit_model
from edgekd.deploy.targets import load_target
from edgekd.errors import BadInput

OPSET = 17


# ---------------------------------------------------------------- helpers
def _torch_export(model, example, path: pathlib.Path) -> pathlib.Path:
    """torch.onnx.export at opset 17 with the TorchScript exporter where it exists (fast, no onnxscript)."""
    import torch

    torch.set_num_threads(1)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, example, str(path), opset_version=OPSET, dynamo=False,
                              input_names=["input"], output_names=["logits"])
        except TypeError:  # a torch without the dynamo switch: its only exporter
            torch.onnx.export(model, example, str(path), opset_version=OPSET,
                              input_names=["input"], output_names=["logits"])
    return path


def _model(nodes, inputs, outputs, initializers=(), opset=OPSET, extra_opsets=()) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    imports = [helper.make_opsetid("", opset), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    return helper.make_model(graph, opset_imports=imports, ir_version=8)


def _f32(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def _profile(allow, caveats=None, base="cpu-arm"):
    """A copy of a shipped profile with another op list."""
    return dataclasses.replace(load_target(base), ops_allow=frozenset(allow), ops_caveats=dict(caveats or {}))


def _checker_unsupported(model_path: pathlib.Path, provider: str) -> set[str]:
    """Unsupported ops per onnxruntime's usability checker, in edgekd's spelling."""
    from onnxruntime.tools.mobile_helpers import usability_checker as uc
    from onnxruntime.tools.onnx_model_utils import optimize_model

    optimized = model_path.with_suffix(".checker.onnx")
    optimize_model(model_path, optimized)  # ORT basic, as analyze_model does
    model = onnx.load(str(optimized))
    if provider == "NnapiExecutionProvider":
        info = uc.check_nnapi_partitions(model, require_fixed_input_sizes=False)
    else:
        info = uc.check_coreml_partitions(model, False, "coreml_supported_mlprogram_ops.md")
    return {op.split(":", 1)[1] if op.startswith("ai.onnx:") else op for op in info.unsupported_ops}


# ---------------------------------------------------------------- real models
class _Mixed:
    """A small model with ops the torchvision ones lack: Pad, HardSwish, LayerNorm, GELU, Softmax."""

    @staticmethod
    def build():
        import torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.pad = nn.ConstantPad2d(1, 0.5)  # not 0, so ORT cannot fuse it into the Conv
                self.conv = nn.Conv2d(3, 8, 3)
                self.act = nn.Hardswish()
                self.norm = nn.LayerNorm(8)
                self.gelu = nn.GELU()
                self.head = nn.Linear(8, 4)

            def forward(self, x):
                x = self.act(self.conv(self.pad(x)))
                x = x.mean(dim=(2, 3))
                return self.head(self.gelu(self.norm(x))).softmax(-1)

        return Net()


@pytest.fixture(scope="module")
def real_models(tmp_path_factory) -> dict[str, pathlib.Path]:
    import torch
    import torchvision

    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("real")
    x224 = torch.randn(1, 3, 224, 224)
    return {
        "mobilenet_v3_small": _torch_export(torchvision.models.mobilenet_v3_small(weights=None), x224,
                                            d / "mobilenet_v3_small.onnx"),
        "resnet18": _torch_export(torchvision.models.resnet18(weights=None), x224, d / "resnet18.onnx"),
        "mixed": _torch_export(_Mixed.build(), torch.randn(1, 3, 16, 16), d / "mixed.onnx"),
    }


@pytest.mark.parametrize("model_name", ["mobilenet_v3_small", "resnet18", "mixed"])
@pytest.mark.parametrize("target,provider", [("android-nnapi", "NnapiExecutionProvider"),
                                             ("apple-coreml", "CoreMLExecutionProvider")])
def test_unsupported_ops_agree_with_onnxruntime_checker(real_models, model_name, target, provider):
    path = real_models[model_name]
    report = audit_model(path, load_target(target))
    ours = {u.op for u in report.unsupported if u.reason == NOT_ALLOWED}
    assert ours == _checker_unsupported(path, provider)
    # every node is named, so the message can point at it
    assert all(n for u in report.unsupported for n in u.nodes)


def test_real_models_find_what_we_expect(real_models):
    """Guards the agreement test against two empty sets agreeing."""
    nnapi = audit_model(real_models["mobilenet_v3_small"], load_target("android-nnapi"))
    assert "HardSigmoid" in nnapi.unsupported_ops  # HardSwish is inlined to HardSigmoid * x
    coreml = audit_model(real_models["resnet18"], load_target("apple-coreml"))
    assert coreml.unsupported_ops == ["Flatten"]
    assert audit_model(real_models["resnet18"], load_target("android-nnapi")).passed
    mixed = audit_model(real_models["mixed"], load_target("android-nnapi"))
    assert "LayerNormalization" in mixed.unsupported_ops and "Pad" in mixed.used
    assert "Pad" in audit_model(real_models["mixed"], load_target("apple-coreml")).unsupported_ops


def test_optimized_graph_is_audited_not_the_exported_one(real_models):
    # the exporter leaves Identity nodes that ORT's basic optimizations remove
    allow = {"Conv", "Relu", "MaxPool", "Add", "GlobalAveragePool", "Flatten", "Gemm"}
    optimized = audit_model(real_models["resnet18"], _profile(allow))
    raw = audit_model(real_models["resnet18"], _profile(allow), optimized=False)
    assert optimized.passed and optimized.graph == "optimized"
    assert raw.unsupported_ops == ["Identity"] and raw.graph == "as exported"


def test_conv_batchnorm_is_fused_before_the_audit():
    c = 2
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
        [_f32("x", [1, 3, 4, 4])], [_f32("y", None)],
        [_init("w", np.ones((c, 3, 1, 1), np.float32))]
        + [_init(n, np.full(c, k, np.float32)) for n, k in (("s", 1.0), ("b", 0.0), ("m", 0.0), ("v", 1.0))])
    assert audit_model(model, _profile({"Conv"})).passed
    raw = audit_model(model, _profile({"Conv"}), optimized=False)
    assert [(u.op, u.nodes) for u in raw.unsupported] == [("BatchNormalization", ["bn"])]


# ---------------------------------------------------------------- ops and caveats
def _conv_relu_model() -> onnx.ModelProto:
    w = np.zeros((4, 3, 3, 3), np.float32)
    return _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv1"),
         helper.make_node("Relu", ["c"], ["r"], name="relu1"),
         helper.make_node("Relu", ["r"], ["y"], name="relu2")],
        [_f32("x", [1, 3, 8, 8])], [_f32("y", None)], [_init("w", w)])


def test_op_not_in_allow_is_reported_with_node_names():
    report = audit_model(_conv_relu_model(), _profile({"Conv"}))
    assert not report.passed
    assert [u.to_dict() for u in report.unsupported] == [
        {"op": "Relu", "nodes": ["relu1", "relu2"], "reason": NOT_ALLOWED}]
    assert report.used == ["Conv", "Relu"]
    (line,) = report.format_lines()
    assert line.startswith("Relu (2 nodes)") and "relu1, relu2" in line


def test_coverage_counts_nodes():
    report = audit_model(_conv_relu_model(), _profile({"Conv"}))
    assert (report.n_nodes, report.n_supported_nodes) == (3, 1)
    assert report.coverage == pytest.approx(1 / 3)
    d = report.to_dict()
    assert d["coverage"] == pytest.approx(1 / 3, abs=1e-6) and d["passed"] is False
    assert audit_model(_conv_relu_model(), _profile({"Conv", "Relu"})).coverage == 1.0


def test_non_default_domain_ops_are_named_with_their_domain():
    model = _model([helper.make_node("Foo", ["x"], ["y"], name="foo", domain="my.ops")],
                   [_f32("x", [1, 4])], [_f32("y", [1, 4])], extra_opsets=[("my.ops", 1)])
    report = audit_model(model, _profile({"Relu"}))
    # ORT has no kernel for it, so the exported graph is audited and the report says so
    assert report.unsupported_ops == ["my.ops:Foo"]
    assert report.graph == "as exported" and "could not load" in report.notes[0]


def _conv3d_model() -> onnx.ModelProto:
    w = np.zeros((2, 1, 3, 3, 3), np.float32)
    return _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv3d")],
                  [_f32("x", [1, 1, 5, 5, 5])], [_f32("y", None)], [_init("w", w)])


def test_3d_conv_breaks_the_2d_caveat():
    nnapi = audit_model(_conv3d_model(), load_target("android-nnapi"))
    assert [(u.op, u.nodes, u.reason) for u in nnapi.unsupported] == [
        ("Conv", ["conv3d"], "caveat: Only 2D Conv is supported.")]
    coreml = audit_model(_conv3d_model(), load_target("apple-coreml"))
    assert coreml.unsupported[0].reason == "caveat: Only 1D/2D Conv is supported."
    assert audit_model(_conv_relu_model(), load_target("android-nnapi")).passed  # 2-D is fine


@pytest.mark.parametrize("weights_as_graph_input_too", [False, True])
def test_non_constant_weights_break_the_caveat(weights_as_graph_input_too):
    if weights_as_graph_input_too:  # an initializer that is also an input can be overridden: not constant
        model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                       [_f32("x", [1, 3, 8, 8]), _f32("w", [4, 3, 3, 3])], [_f32("y", None)],
                       [_init("w", np.zeros((4, 3, 3, 3), np.float32))])
    else:
        model = _model([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")],
                       [_f32("x", [1, 3, 8, 8]), _f32("w", [4, 3, 3, 3])], [_f32("y", None)])
    report = audit_model(model, load_target("android-nnapi"))
    assert [(u.op, u.nodes, u.reason) for u in report.unsupported] == [
        ("Conv", ["conv"], "caveat: Weights and bias should be constant.")]


def _pad_model(mode: str, pads) -> onnx.ModelProto:
    return _model([helper.make_node("Pad", ["x", "pads"], ["y"], name="pad", mode=mode)],
                  [_f32("x", [1, 1, 4, 4])], [_f32("y", None)],
                  [_init("pads", np.asarray(pads, np.int64))])


def test_pad_mode_and_values_are_checked():
    ok = audit_model(_pad_model("constant", [0, 0, 1, 1, 0, 0, 1, 1]), load_target("android-nnapi"))
    assert ok.passed
    reflect = audit_model(_pad_model("reflect", [0, 0, 1, 1, 0, 0, 1, 1]), load_target("android-nnapi"))
    assert [u.reason for u in reflect.unsupported] == ["caveat: Only constant mode Pad is supported."]
    negative = audit_model(_pad_model("constant", [0, 0, -1, 0, 0, 0, 0, 0]), load_target("android-nnapi"))
    assert [u.reason for u in negative.unsupported] == ["caveat: Input pads values should be non-negative."]


def test_reflection_pad_from_torch_is_caught(tmp_path):
    import torch

    net = torch.nn.Sequential(torch.nn.ReflectionPad2d(1), torch.nn.Conv2d(1, 2, 3))
    path = _torch_export(net, torch.randn(1, 1, 6, 6), tmp_path / "reflect.onnx")
    report = audit_model(path, load_target("android-nnapi"))
    assert [(u.op, u.reason) for u in report.unsupported] == [
        ("Pad", "caveat: Only constant mode Pad is supported.")]


def test_xnnpack_activation_must_follow_a_conv():
    model = _model(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("Relu", ["c"], ["r"], name="fused"),
         helper.make_node("MatMul", ["r2", "b"], ["m"], name="mm"),
         helper.make_node("Reshape", ["r", "shape"], ["r2"], name="flat"),
         helper.make_node("Relu", ["m"], ["y"], name="alone")],
        [_f32("x", [1, 3, 4, 4])], [_f32("y", None)],
        [_init("w", np.zeros((2, 3, 3, 3), np.float32)), _init("b", np.zeros((8, 2), np.float32)),
         _init("shape", np.asarray([1, 8], np.int64))])
    report = audit_model(model, _profile({"Conv", "Relu", "MatMul", "Reshape"},
                                         load_target("cpu-arm-xnnpack").ops_caveats))
    assert [(u.op, u.nodes) for u in report.unsupported] == [("Relu", ["alone"])]


def test_unchecked_caveats_are_listed_in_notes():
    report = audit_model(_model([helper.make_node("Split", ["x"], ["a", "b"], name="split", axis=1,
                                                  num_outputs=2)],
                                [_f32("x", [1, 4])], [_f32("a", None), _f32("b", None)], opset=18),
                         _profile({"Split"},
                                  {"Split": "Only on Tuesdays. Input split should be constant if provided."}))
    assert report.passed
    assert report.notes == ["Split: caveat not checked: Only on Tuesdays."]


# ---------------------------------------------------------------- names
def test_unnamed_optimized_nodes_are_named_after_their_origin():
    # ORT inlines HardSwish (no CPU kernel at opset 14+) into an unnamed HardSigmoid and Mul
    model = _model([helper.make_node("HardSwish", ["x"], ["y"], name="hswish")],
                   [_f32("x", [1, 4])], [_f32("y", [1, 4])])
    report = audit_model(model, _profile({"Relu"}))
    names = {n for u in report.unsupported for n in u.nodes}
    assert names == {"hswish"}


def test_unnamed_nodes_without_named_origin_get_their_position():
    model = _model([helper.make_node("Relu", ["x"], ["h"], name="first"),
                    helper.make_node("HardSwish", ["h"], ["y"])],
                   [_f32("x", [1, 4])], [_f32("y", [1, 4])])
    report = audit_model(model, _profile({"Relu"}))
    # HardSigmoid #1 and Mul #2 where ORT inlines HardSwish; HardSwish #1 where it does not
    expected = [[f"<unnamed {u.op} #{i}>"] for i, u in enumerate(report.unsupported, start=1)]
    assert report.unsupported and [u.nodes for u in report.unsupported] == expected


def test_node_names_prefers_output_then_inputs_then_position():
    N = helper.make_node
    original = [N("Relu", ["x"], ["a"], name="relu"), N("HardSwish", ["a"], ["y"], name="hs")]
    optimized = [N("Relu", ["x"], ["a"], name="relu"),
                 N("HardSigmoid", ["a"], ["tmp"]),       # consumes what 'hs' consumed
                 N("Mul", ["a", "tmp"], ["y"]),         # makes what 'hs' made
                 N("Identity", ["q"], ["z"])]           # no origin
    assert _node_names(optimized, original) == ["relu", "hs", "hs", "<unnamed Identity #3>"]


# ---------------------------------------------------------------- bad input
def test_corrupt_file_is_bad_input_naming_it(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"\x08\x07 this is not a protobuf \xff\xfe")
    with pytest.raises(BadInput, match="broken.onnx"):
        audit_file(bad, "cpu-arm")


def test_text_file_is_bad_input(tmp_path):
    bad = tmp_path / "notes.onnx"
    bad.write_text("hello")
    with pytest.raises(BadInput, match="notes.onnx"):
        audit_file(bad, "cpu-arm")


def test_missing_file_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="nope.onnx"):
        audit_file(tmp_path / "nope.onnx", "cpu-arm")


def test_audit_file_takes_a_target_name(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(_conv_relu_model(), str(path))
    report = audit_file(path, "android-nnapi")
    assert report.passed and report.target == "android-nnapi" and report.used == ["Conv", "Relu"]


# ---------------------------------------------------------------- what ORT's basic level does
def test_basic_optimizations_create_no_contrib_ops(tmp_path):
    """Conv+Relu and x*sigmoid(x) become com.microsoft FusedConv/QuickGelu only at the extended level."""
    import torch

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            x = torch.relu(self.conv(x))
            return x * torch.sigmoid(x)

    path = _torch_export(Net(), torch.randn(1, 3, 6, 6), tmp_path / "fusable.onnx")
    report = audit_model(path, _profile({"Conv", "Relu", "Sigmoid", "Mul"}))
    assert report.passed and report.used == ["Conv", "Mul", "Relu", "Sigmoid"]


def test_dynamic_shapes_are_noted_for_nnapi_only():
    model = _model([helper.make_node("Relu", ["x"], ["y"], name="relu")],
                   [_f32("x", ["batch", 4])], [_f32("y", ["batch", 4])])
    nnapi = audit_model(model, load_target("android-nnapi"))
    assert nnapi.passed and any("fixed shape" in n for n in nnapi.notes)
    assert not any("fixed shape" in n for n in audit_model(model, load_target("apple-coreml")).notes)


def test_dynamo_exporter_same_parity_but_opset_18_and_reducemean(tmp_path) -> None:
    """Why torchscript stays the default exporter: torch.export's graph of the default student
    matches PyTorch as closely, but cannot come down to opset 17 and pools with ReduceMean,
    which the cpu-x86 profile's table does not list."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from edgekd import defaults
    from edgekd.models import create_student, write_onnx

    torch.manual_seed(0)
    model = create_student(defaults.STUDENT, in_channels=1, num_classes=10)
    with pytest.raises(BadInput, match="exporter 'dynamo': torch.export wrote opset 18"):
        write_onnx(model, str(tmp_path / "d17.onnx"), input_shape=(1, 8, 8), opset=17, exporter="dynamo")
    x = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model.eval()(torch.from_numpy(x)).numpy()
    ops = {}
    for exporter in defaults.EXPORTERS:
        path = tmp_path / f"{exporter}.onnx"
        write_onnx(model, str(path), input_shape=(1, 8, 8), opset=18, exporter=exporter)
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        assert sess.get_inputs()[0].shape[0] == "batch"
        assert np.abs(sess.run(None, {"input": x})[0] - ref).max() < 1e-5, exporter
        ops[exporter] = set(audit_model(path, "cpu-x86").unsupported_ops)
    assert ops == {"torchscript": set(), "dynamo": {"ReduceMean"}}


def test_real_partition_reports_a_session_that_fails_to_build(tmp_path) -> None:
    """An op no provider has a kernel for: the static audit lists it, and ONNX Runtime's own
    partition says the session did not build, with its reason; the audit fails on both."""
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["input"], ["logits"], domain="example.custom", name="custom")], "g",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.custom", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(model, str(path))
    report = audit_file(path, "cpu-x86")
    real = report.partition
    assert real["ran"] is True and real["built"] is False and real["passed"] is False
    assert "NoSuchOp" in real["error"] and not report.passed
    assert any(line.startswith("ONNX Runtime's partition: the session did not build") for line in report.format_lines())


def test_real_partition_counts_nodes_per_provider(tmp_path) -> None:
    from edgekd.deploy.audit import real_partition

    graph = helper.make_graph(
        [helper.make_node("Relu", ["input"], ["r"], name="relu"),
         helper.make_node("Sigmoid", ["r"], ["logits"], name="sig")],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "two.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    real = real_partition(path, load_target("cpu-x86"))
    assert real["nodes"] == {"CPUExecutionProvider": 2} and real["share"] == {"CPUExecutionProvider": 1.0}
    assert real["ops"]["CPUExecutionProvider"] == {"Relu": 1, "Sigmoid": 1} and real["fell_back_ops"] == []
    assert real["device"] == "CPU" and real["passed"] is True
