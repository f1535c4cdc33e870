"""Plugin execution providers (ONNX Runtime >= 1.23) in profiles, parity and the audit through
the provider that really runs, and the GPU profiles.

What runs where: the schema, the missing-plugin line and the CPU provider's real partition run
everywhere. OpenVINO itself runs through `intel-openvino`, PyPI's onnxruntime-openvino in its
runtime environment (`edgekd runner setup intel-openvino`, which `.ci/run` does), on any x86-64
CPU. The plugin path (`intel-openvino-plugin`): with onnxruntime-ep-openvino installed (pip install
'edgekd[openvino]') the plugin is registered for real, but it offers devices on Intel CPUs only
(vendor 0x8086), so on other hosts those tests check the visible fallback and skip, saying why.
GPU tests are marked `gpu` and skip without a CUDA provider.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from edgekd.bench.run import bench_any
from edgekd.deploy.audit import audit_model, real_partition
from edgekd.deploy.export import provider_parity
from edgekd.deploy.targets import load_target
from edgekd.errors import BadInput

from helpers.onnx_models import tiny_convnet

REPO = Path(__file__).resolve().parent.parent
OPENVINO = "onnxruntime-ep-openvino"
FAST = dict(min_seconds=0.02)


def openvino_installed() -> bool:
    return importlib.util.find_spec("onnxruntime_ep_openvino") is not None


def openvino_devices() -> list:
    """OpenVINO's EP devices here (registering the plugin once), [] without them."""
    if not openvino_installed():
        return []
    from edgekd.runtime import agent

    agent._register_plugin(ort, {"name": "OpenVINOExecutionProvider", "plugin": OPENVINO})
    return [d for d in ort.get_ep_devices() if d.ep_name == "OpenVINOExecutionProvider"]


def needs_openvino_device():
    if not openvino_installed():
        pytest.skip(f"{OPENVINO} is not installed (pip install 'edgekd[openvino]')")
    if not openvino_devices():
        vendors = sorted({d.device.vendor for d in ort.get_ep_devices()})
        pytest.skip(f"OpenVINO's plugin offers no device here (it takes Intel devices only; this host: {vendors})")


def profile_text(name: str) -> str:
    return (REPO / "targets" / f"{name}.toml").read_text()


def write_profile(tmp_path: Path, text: str, name: str = "custom") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return tiny_convnet(tmp_path_factory.mktemp("tiny") / "m.onnx")


# ---------------------------------------------------------------- schema
def test_openvino_profile_names_plugin_device_and_explicit_precision() -> None:
    prof = load_target("intel-openvino-plugin")
    ov = prof.providers[0]
    assert (ov.name, ov.plugin, ov.device, ov.precision) == ("OpenVINOExecutionProvider", OPENVINO, "CPU", "fp32")
    assert ov.options["precision"] == "FP32"        # the EP's switch for INFERENCE_PRECISION_HINT=f32
    assert prof.arch == "x86_64" and prof.providers[-1].name == "CPUExecutionProvider"
    assert prof.parity.for_precision("bf16").atol > prof.parity.for_precision("fp32").atol


@pytest.mark.parametrize("edit, key", [
    (('device = "CPU"', 'device = "TPU"'), "runtime.providers[0].device"),
    (('precision = "fp32"', 'precision = "fp8"'), "runtime.providers[0].precision"),
    (('plugin = "onnxruntime-ep-openvino"', 'plugin = "bad name!"'), "runtime.providers[0].plugin"),
    (('device = "CPU"', 'devices = "CPU"'), "runtime.providers[0].devices"),
    (('precision = "fp32"', 'precision = "bf16"'), None),   # allowed: [parity.bf16] is there
])
def test_provider_entry_is_validated_naming_the_key(tmp_path: Path, edit, key) -> None:
    path = write_profile(tmp_path, profile_text("intel-openvino-plugin").replace(*edit, 1))
    if key is None:
        assert load_target(path).providers[0].precision == "bf16"
        return
    with pytest.raises(BadInput) as e:
        load_target(path)
    assert repr(key) in str(e.value) and "\n" not in str(e.value)


def test_reduced_precision_needs_its_own_tolerances(tmp_path: Path) -> None:
    text = profile_text("intel-openvino-plugin").replace('precision = "fp32"', 'precision = "bf16"', 1)
    text = text[:text.index("[parity.bf16]")]
    with pytest.raises(BadInput, match=r"'parity.bf16': missing .*computes in bf16"):
        load_target(write_profile(tmp_path, text))


def test_a_plugin_ep_may_have_a_name_this_build_does_not_know(tmp_path: Path) -> None:
    text = profile_text("intel-openvino-plugin").replace('name = "OpenVINOExecutionProvider"',
                                                  'name = "NvTensorRTRTXExecutionProvider"', 1)
    assert load_target(write_profile(tmp_path, text)).providers[0].name == "NvTensorRTRTXExecutionProvider"
    with pytest.raises(BadInput, match="unknown execution provider"):
        load_target(write_profile(tmp_path, text.replace(f'plugin = "{OPENVINO}", ', ""), "noplugin"))


# ---------------------------------------------------------------- missing plugin
def test_missing_plugin_package_is_one_line_with_the_pip_install(tmp_path: Path, tiny: Path) -> None:
    text = profile_text("intel-openvino-plugin").replace(OPENVINO, "edgekd-no-such-ep-plugin")
    path = write_profile(tmp_path, text)
    with pytest.raises(BadInput) as e:
        bench_any(model=tiny, targets=[path], **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "edgekd-no-such-ep-plugin" in msg and "pip install edgekd-no-such-ep-plugin" in msg
    # export and audit do not fail on it: they say the real partition and parity did not run, and why
    part = real_partition(tiny, load_target(path))
    assert part["ran"] is False and "pip install edgekd-no-such-ep-plugin" in part["reason"]
    ref = np.zeros((4, 10), np.float32)
    through = provider_parity(tiny, ref, np.zeros((4, 1, 8, 8), np.float32), load_target(path))
    assert through["ran"] is False and "pip install" in through["reason"]


# ---------------------------------------------------------------- the real plugin
def test_openvino_plugin_registers_and_bench_says_what_ran(tiny: Path) -> None:
    if not openvino_installed():
        pytest.skip(f"{OPENVINO} is not installed (pip install 'edgekd[openvino]')")
    out = bench_any(model=tiny, targets=["intel-openvino-plugin"], **FAST)
    x = out["results"][0]["fp32"]
    if openvino_devices():
        assert x["provider"] == "OpenVINOExecutionProvider" and x["fallback"] is False
        ex = x["execution"]
        assert ex["device"] == "CPU" and ex["plugin"] == OPENVINO and ex["ep_version"] and ex["vendor"]
        assert ex["precision"] == "fp32"
    else:
        # The plugin loaded but offers no device: bench falls back, visibly, and says why.
        assert x["provider"] == "CPUExecutionProvider" and x["fallback"] is True
        assert "OpenVINOExecutionProvider" in x["warning"] and OPENVINO in x["warning"]
        assert "fell back to CPUExecutionProvider" in x["warning"] and out["notes"] == [x["warning"]]
        assert out["rows"][0]["fallback"] is True


def _default_student_onnx(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The default student (small-cnn) on digits-shaped inputs, its ONNX file, inputs and outputs."""
    import torch

    from edgekd import defaults
    from edgekd.models import create_student, write_onnx

    torch.manual_seed(0)
    model = create_student(defaults.STUDENT, in_channels=1, num_classes=10).eval()
    path = tmp_path / "student.onnx"
    write_onnx(model, str(path), input_shape=(1, 8, 8), opset=17)
    x = np.random.default_rng(0).standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    return path, x, ref


def needs_openvino_runtime():
    """intel-openvino: onnxruntime-openvino in its runtime environment (any x86-64 CPU), or skip saying how."""
    from edgekd.deploy.runtimes import status

    prof = load_target("intel-openvino")
    st = status(prof)
    if not st["ready"]:
        pytest.skip(f"{prof.package} runtime environment not ready ({st.get('reason')}); "
                    "`.ci/run` runs `edgekd runner setup intel-openvino` before the tests")
    return prof


def test_default_precision_mismatch_is_caught_and_the_explicit_setting_fixes_it(tmp_path: Path) -> None:
    """Through onnxruntime-openvino in its runtime environment. Only a CPU with bf16 arithmetic
    shows the mismatch: elsewhere OpenVINO's CPU plugin computes fp32 even when left to itself."""
    prof = needs_openvino_runtime()
    flags = Path("/proc/cpuinfo").read_text().split() if Path("/proc/cpuinfo").exists() else []
    if not any(f in flags for f in ("avx512_bf16", "amx_bf16")):
        pytest.skip("this CPU has neither AVX512-BF16 nor AMX (see /proc/cpuinfo), so OpenVINO's default "
                    "precision is fp32 here: there is no bf16 mismatch to reproduce")
    path, x, ref = _default_student_onnx(tmp_path)
    text = profile_text("intel-openvino")
    assert text.count(', precision = "FP32" }') == 1
    default = write_profile(tmp_path, text.replace(', precision = "FP32" }', " }"))
    loose = provider_parity(path, ref, x, load_target(default))
    assert loose["ran"] and not loose["passed"] and loose["max_abs_diff"] > 1e-3
    assert any("outside atol" in f for f in loose["failures"])               # the numbers are shown
    fixed = provider_parity(path, ref, x, prof)
    assert fixed["ran"] and fixed["passed"] and fixed["precision"] == "fp32", fixed["failures"]


def test_static_openvino_audit_agrees_with_the_real_assignment_for_every_student(tmp_path: Path) -> None:
    """The real assignment from the agent in onnxruntime-openvino's runtime environment."""
    _students_agree(tmp_path, needs_openvino_runtime())


def test_static_openvino_audit_agrees_with_the_plugins_assignment_for_every_student(tmp_path: Path) -> None:
    needs_openvino_device()
    _students_agree(tmp_path, load_target("intel-openvino-plugin"))


def test_static_cpu_audit_agrees_with_the_real_assignment_for_every_student(tmp_path: Path) -> None:
    _students_agree(tmp_path, load_target("cpu-x86"))


def _students_agree(tmp_path: Path, target) -> None:
    import torch

    from edgekd.models import STUDENTS, create_student, write_onnx

    for name in STUDENTS:
        torch.manual_seed(0)
        path = tmp_path / f"{name}.onnx"
        write_onnx(create_student(name, in_channels=1, num_classes=10), str(path), input_shape=(1, 8, 8),
                   opset=target.opset)
        static, real = audit_model(path, target), real_partition(path, target)
        assert real["ran"] and real["built"], (name, real)
        wanted = target.providers[0].name
        # Every op the static table accepts, the provider took (unless ORT's optimizer fused it away
        # before partitioning: onnxruntime-openvino turns HardSigmoid·Mul into HardSwish); every op it
        # refused fell back; and every op the provider took is one the profile lists.
        taken = set(real["ops"].get(wanted, {}))
        in_session = {op for ops in real["ops"].values() for op in ops}
        assert set(static.unsupported_ops) == set(real["fell_back_ops"]), (name, static.unsupported_ops, real)
        assert (set(static.used) - set(static.unsupported_ops)) & in_session <= taken, (name, static.used, taken)
        assert taken <= target.ops_allow, (name, taken - target.ops_allow)


# ---------------------------------------------------------------- GPU
@pytest.mark.gpu
@pytest.mark.parametrize("target", ["nvidia-cuda", "nvidia-tensorrt"])
def test_gpu_profiles_run_on_the_gpu_provider(target: str, tiny: Path, tmp_path: Path) -> None:
    """Through onnxruntime-gpu in the profile's runtime environment (`edgekd runner setup nvidia-cuda`)."""
    import onnx

    from edgekd.deploy.runtimes import status

    prof = load_target(target)
    wanted = prof.providers[0].name
    st = status(prof)
    if not st["ready"]:
        pytest.skip(f"{prof.package} runtime environment not ready ({st.get('reason')}); on a machine with an "
                    f"NVIDIA GPU run `edgekd runner setup {target}`")
    if wanted not in st["providers"]:
        pytest.skip(f"{wanted} is not in the onnxruntime build of {st['path']}; available: {st['providers']}")
    model = onnx.load(str(tiny))
    model.ir_version = 8          # what any onnxruntime-gpu release reads
    onnx.save(model, str(tmp_path / "tiny8.onnx"))
    tiny = tmp_path / "tiny8.onnx"
    out = bench_any(model=tiny, targets=[target], **FAST)
    x = out["results"][0]["fp32"]
    assert x["provider"] == wanted and x["fallback"] is False, x.get("warning")
    assert x["execution"]["runtime"]["package"] == prof.package
    inputs = np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32)
    sess = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": inputs})[0]
    through = provider_parity(tiny, ref, inputs, prof)
    assert through["ran"] and through["passed"], through


def test_golden_check_uses_the_tolerances_of_the_precision_that_ran(tmp_path: Path, tiny: Path) -> None:
    """A provider declared bf16 is held to [parity.bf16]; the same outputs fail fp32's tolerances."""
    from edgekd.bench.runners import LocalRunner, agent_config

    x = np.random.default_rng(0).standard_normal((16, 1, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.savez(tmp_path / "golden.npz", inputs=x, outputs=y + 0.01)          # a bf16-sized error
    text = profile_text("cpu-x86")
    fp32 = load_target(write_profile(tmp_path, text, "fp32"))
    bf16_text = text.replace('{ name = "CPUExecutionProvider" }',
                             '{ name = "CPUExecutionProvider", precision = "bf16" }')
    bf16 = load_target(write_profile(tmp_path, bf16_text + "\n[parity.bf16]\natol = 0.05\nrtol = 0.01\n"
                                                            "min_top1_agreement = 0.9\n", "bf16"))
    fast = dict(min_runs=5, min_seconds=0.01, warmup=1, batches=(1,))
    strict = LocalRunner().run(model=tiny, config=agent_config(fp32, **fast), golden=tmp_path / "golden.npz")
    loose = LocalRunner().run(model=tiny, config=agent_config(bf16, **fast), golden=tmp_path / "golden.npz")
    assert strict["golden"]["precision"] == "fp32" and strict["golden"]["passed"] is False
    assert loose["golden"]["precision"] == "bf16" and loose["golden"]["passed"] is True
    assert loose["golden"]["atol"] == 0.05 and loose["precision"] == "bf16"
