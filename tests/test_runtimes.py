"""Runtime environments (`[runtime] package`): the device's own ONNX Runtime build in a venv of its own.

What runs where: validation, the missing/broken lines and `edgekd targets` run everywhere. Setup
from a local wheel cache needs that cache (`~/.cache/edgekd/wheels`, or $EDGEKD_WHEELS): `.ci/run`
downloads it once; no test downloads anything. The OpenVINO and pinned-1.20.1 tests need the
environments `edgekd runner setup intel-openvino` and `edgekd runner setup cpu-x86-ort120` make
(`.ci/run` makes them); elsewhere they skip, saying so.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.run import bench_any
from edgekd.deploy import runtimes
from edgekd.deploy.audit import audit_file, real_partition
from edgekd.deploy.export import provider_parity
from edgekd.deploy.targets import load_target
from edgekd.errors import AuditFailed, BadInput
from edgekd.run.manifest import load_manifest

REPO = Path(__file__).resolve().parent.parent
WHEELS = Path(os.environ.get("EDGEKD_WHEELS") or "~/.cache/edgekd/wheels").expanduser()
FAST = dict(min_seconds=0.02)
OV = "OpenVINOExecutionProvider"
TINY_RUN = dict(epochs=1, teacher_epochs=1, seeds=1, teacher="cnn-small", progress=False)


def profile_text(name: str) -> str:
    return (REPO / "targets" / f"{name}.toml").read_text()


def write_profile(folder: Path, text: str, name: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text.replace(text.split("\n", 1)[0], f'name = "{name}"', 1))
    return path


def needs_runtime(name: str):
    """The shipped profile `name`, its runtime environment ready, or skip saying how to make it."""
    prof = load_target(name)
    st = runtimes.status(prof)
    if not st["ready"]:
        pytest.skip(f"{prof.package} runtime environment not ready ({st.get('reason')}); "
                    f"`.ci/run` runs `edgekd runner setup {name}` before the tests")
    return prof


def small_model(path: Path) -> Path:
    """tests/test_quantize's tiny convnet, written at IR version 8 so that older runtimes read it."""
    import onnx

    from helpers.onnx_models import tiny_convnet

    model = onnx.load(str(tiny_convnet(path)))
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def relu_then(path: Path, node, *, out_type: int | None = None, out_shape=(2, 6), opset: int = 17,
              in_shape=(2, 6), extra_inputs=()) -> Path:
    """x -> Relu -> `node` -> y: a generated model for partition and load tests."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), node], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(in_shape)), *extra_inputs],
        [helper.make_tensor_value_info("y", out_type or TensorProto.FLOAT,
                                       None if out_shape is None else list(out_shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return small_model(tmp_path_factory.mktemp("rt") / "tiny.onnx")


@pytest.fixture
def empty_runtimes(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(runtimes.RUNTIMES_ENV, str(tmp_path / "runtimes"))
    return tmp_path / "runtimes"


# ---------------------------------------------------------------- the profile key
@pytest.mark.parametrize("package, ok", [
    ("onnxruntime-openvino==1.24.1", True), ("onnxruntime==1.20.1", True), ("onnxruntime-gpu", True),
    ("onnxruntime>=1.20", False), ("onnxruntime==", False), ("numpy==2.0.0", False),
    ("onnxruntime==1.20.1; python_version>'3'", False), ("", False),
])
def test_package_is_a_pin_or_a_bare_name_and_errors_name_file_and_key(tmp_path: Path, package: str, ok: bool) -> None:
    text = profile_text("intel-openvino").replace('package = "onnxruntime-openvino==1.24.1"', f'package = "{package}"')
    path = write_profile(tmp_path, text, "custom")
    if ok:
        assert load_target(path).package == package
        assert runtimes.env_dir(package).name == package.replace("==", "-") + ("" if "==" in package else "-latest")
        return
    with pytest.raises(BadInput) as e:
        load_target(path)
    msg = str(e.value)
    assert str(path) in msg and "'runtime.package'" in msg and "NAME==VERSION" in msg and "\n" not in msg


def test_shipped_profiles_name_their_runtime() -> None:
    assert load_target("intel-openvino").package == "onnxruntime-openvino==1.24.1"
    assert load_target("cpu-x86-ort120").package == "onnxruntime==1.20.1"
    assert load_target("nvidia-cuda").package == load_target("nvidia-tensorrt").package == "onnxruntime-gpu"
    plugin = load_target("intel-openvino-plugin")
    assert plugin.package is None and plugin.providers[0].plugin == "onnxruntime-ep-openvino"
    ov = load_target("intel-openvino").providers[0]
    assert (ov.name, ov.plugin, ov.precision) == (OV, None, "fp32")
    assert ov.options == {"device_type": "CPU", "precision": "FP32"}
    assert load_target("cpu-x86").package is None and load_target("cpu-x86").to_dict()["runtime"]["package"] is None


# ---------------------------------------------------------------- host, missing, broken
def test_a_profile_without_package_runs_the_hosts_onnxruntime(tiny: Path) -> None:
    from edgekd.bench.runners import LocalRunner

    prof = load_target("cpu-x86")
    assert runtimes.status(prof)["mechanism"] == "host" and LocalRunner(target=prof).python == sys.executable
    x = bench_any(model=tiny, targets=["cpu-x86"], **FAST)["results"][0]["fp32"]
    import onnxruntime

    assert x["execution"]["runtime"] == {"mechanism": "host", "onnxruntime_version": onnxruntime.__version__,
                                         "python": sys.executable}


def test_missing_environment_is_one_line_with_the_setup_command(empty_runtimes: Path, tiny: Path,
                                                                edgekd_main) -> None:
    with pytest.raises(BadInput) as e:
        bench_any(model=tiny, targets=["intel-openvino"], **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "`edgekd runner setup intel-openvino`" in msg and str(empty_runtimes) in msg
    with pytest.raises(BadInput, match="edgekd runner setup intel-openvino"):
        audit_file(tiny, "intel-openvino")
    r = edgekd_main("bench", str(tiny), "--target", "intel-openvino", "--min-seconds", "0.01")
    assert r.code == 2 and len(r.err_lines) == 1 and "edgekd runner setup intel-openvino" in r.err


def test_broken_environment_is_one_line_naming_it(empty_runtimes: Path, tiny: Path) -> None:
    prof = load_target("intel-openvino")
    env = runtimes.env_dir(prof.package)
    (env / "bin").mkdir(parents=True)
    (env / runtimes.MARKER).write_text("{not json")
    with pytest.raises(BadInput) as e:
        bench_any(model=tiny, targets=["intel-openvino"], **FAST)
    assert "broken" in str(e.value) and str(env) in str(e.value) and "--force" in str(e.value)
    # an interpreter that cannot import onnxruntime: isolated, no site-packages
    (env / runtimes.MARKER).write_text(json.dumps({"onnxruntime_version": "1.24.1", "providers": []}))
    python = env / "bin" / "python"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -I -S \"$@\"\n")
    python.chmod(0o755)
    assert runtimes.status(prof)["state"] == "ready"      # the files are there; the import is what fails
    with pytest.raises(BadInput) as e:
        bench_any(model=tiny, targets=["intel-openvino"], **FAST)
    msg = str(e.value)
    assert "\n" not in msg and "broken" in msg and str(env) in msg and "onnxruntime" in msg
    with pytest.raises(BadInput, match="broken"):
        real_partition(tiny, prof)


def test_targets_shows_each_runtime_and_whether_it_is_ready(empty_runtimes: Path, edgekd_main) -> None:
    r = edgekd_main("targets", "--json")
    assert r.code == 0
    rows = {p["name"]: p["runtime_status"] for p in json.loads(r.out)}
    assert rows["cpu-x86"]["mechanism"] == "host" and rows["cpu-x86"]["ready"] is True
    assert rows["intel-openvino"]["state"] == "missing" and rows["intel-openvino"]["ready"] is False
    assert "edgekd runner setup intel-openvino" in rows["intel-openvino"]["reason"]
    table = edgekd_main("targets").out
    assert "runtime" in table and "not set up" in table


def test_setup_needs_a_package(edgekd_main) -> None:
    r = edgekd_main("runner", "setup", "cpu-x86")
    assert r.code == 2 and "host's onnxruntime" in r.err and len(r.err_lines) == 1
    r = edgekd_main("runner", "setup", "no-such-target")
    assert r.code == 2 and "qemu" in r.err and "intel-openvino" in r.err


def test_runner_setup_qemu_still_works(edgekd_main) -> None:
    from edgekd.bench.qemu import qemu_root, qemu_setup_info

    if qemu_setup_info() is None:
        pytest.skip(f"qemu runner not set up in {qemu_root()} (setting it up downloads; .ci/run does it)")
    r = edgekd_main("runner", "setup", "qemu")
    assert r.code == 0 and "already set up" in r.err and "qemu runner ready" in r.out


# ---------------------------------------------------------------- setup from a wheel cache
def _wheel(prefix: str) -> Path:
    found = sorted(WHEELS.glob(f"{prefix}-*.whl")) if WHEELS.is_dir() else []
    if not found:
        pytest.skip(f"no {prefix} wheel in {WHEELS}; `.ci/run` downloads the wheel cache")
    return found[-1]


def renamed_wheel(src: Path, dest_dir: Path, name: str) -> Path:
    """`src` (PyPI's onnxruntime wheel) as a distribution called `name`: the same onnxruntime module,
    a different package name, as onnxruntime-openvino or onnxruntime-gpu are."""
    dist, version, *tags = src.name[:-len(".whl")].split("-")
    out = dest_dir / f"{name}-{version}-{'-'.join(tags)}.whl"
    old_info, new_info = f"{dist}-{version}.dist-info", f"{name}-{version}.dist-info"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename.startswith(old_info):
                data = data.replace(old_info.encode(), new_info.encode())
                if item.filename.endswith("METADATA"):
                    data = data.replace(f"Name: {dist}\n".encode(), f"Name: {name.replace('_', '-')}\n".encode())
            zout.writestr(item.filename.replace(old_info, new_info), data)
    return out


def test_setup_from_a_local_wheel_cache_and_a_build_without_the_provider_falls_back_visibly(
        tmp_path: Path, empty_runtimes: Path, tiny: Path, edgekd_main) -> None:
    ort_wheel, numpy_wheel = _wheel("onnxruntime-1.20.1"), _wheel("numpy")
    cache = tmp_path / "wheels"
    cache.mkdir()
    (cache / numpy_wheel.name).symlink_to(numpy_wheel)
    renamed_wheel(ort_wheel, cache, "onnxruntime_noov")
    text = profile_text("intel-openvino").replace("onnxruntime-openvino==1.24.1", "onnxruntime-noov==1.20.1")
    path = write_profile(tmp_path, text, "noov")
    r = edgekd_main("runner", "setup", str(path), "--wheels", str(cache))
    assert r.code == 0, r.err
    env = empty_runtimes / "onnxruntime-noov-1.20.1"
    info = json.loads((env / "runtime.json").read_text())
    assert info["onnxruntime_version"] == "1.20.1" and OV not in info["providers"]
    assert info["package"] == "onnxruntime-noov==1.20.1" and info["setup_seconds"] > 0
    # only numpy and that package in the env
    listed = subprocess.run([str(env / "bin" / "python"), "-m", "pip", "list", "--format=json"], capture_output=True,
                            text=True, check=True).stdout
    assert {p["name"].lower() for p in json.loads(listed)} - {"pip", "setuptools"} == {"numpy", "onnxruntime-noov"}
    assert "already set up" in edgekd_main("runner", "setup", str(path), "--wheels", str(cache)).err
    # The profile asks for OpenVINO; this build lacks it: a visible fallback, never a silent CPU run.
    out = bench_any(model=tiny, targets=[path], **FAST)
    x = out["results"][0]["fp32"]
    assert x["provider"] == "CPUExecutionProvider" and x["fallback"] is True and x["onnxruntime_version"] == "1.20.1"
    assert OV in x["warning"] and "not available in this onnxruntime build" in x["warning"]
    assert out["rows"][0]["fallback"] is True and out["notes"] == [x["warning"]]
    assert x["execution"]["runtime"]["package"] == "onnxruntime-noov==1.20.1"
    through = provider_parity(tiny, np.zeros((2, 10), np.float32), np.zeros((2, 1, 8, 8), np.float32),
                              load_target(path))
    assert through["ran"] is False and OV in through["reason"]


# ---------------------------------------------------------------- OpenVINO in its runtime
def _assignment_in_env(prof, model: Path) -> dict:
    """ONNX Runtime's own assignment, asked directly in the env (not through edgekd's agent)."""
    code = ("import json, sys, onnxruntime as o\n"
            "so = o.SessionOptions(); so.add_session_config_entry('session.record_ep_graph_assignment_info', '1')\n"
            "s = o.InferenceSession(sys.argv[1], so, providers=['OpenVINOExecutionProvider', 'CPUExecutionProvider'],"
            " provider_options=[{'device_type': 'CPU', 'precision': 'FP32'}, {}])\n"
            "out = {}\n"
            "for sub in s.get_provider_graph_assignment_info():\n"
            "    out.setdefault(sub.ep_name, []).extend(n.op_type for n in sub.get_nodes())\n"
            "print(json.dumps(out))\n")
    python = runtimes.env_python(runtimes.env_dir(prof.package))
    proc = subprocess.run([str(python), "-c", code, str(model)], capture_output=True, text=True,
                          env=runtimes.clean_env(), check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_real_partition_comes_from_the_runtime_and_matches_ort_on_three_generated_models(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    prof = needs_runtime("intel-openvino")
    models = [small_model(tmp_path / "convnet.onnx"),
              relu_then(tmp_path / "hardmax.onnx", helper.make_node("Hardmax", ["r"], ["y"])),
              relu_then(tmp_path / "isnan.onnx", helper.make_node("IsNaN", ["r"], ["y"]), out_type=TensorProto.BOOL)]
    fell_back = []
    for model in models:
        real = real_partition(model, prof)
        assert real["ran"] and real["built"] and real["provider"] == OV, real
        assert real["runtime"]["package"] == prof.package and real["ep_version"] == "1.24.1"
        direct = _assignment_in_env(prof, model)
        assert real["nodes"] == {ep: len(ops) for ep, ops in direct.items()}, (model.name, real, direct)
        assert {ep: sorted(o for o, k in ops.items() for _ in range(k)) for ep, ops in real["ops"].items()} == \
               {ep: sorted(ops) for ep, ops in direct.items()}
        fell_back.append(sorted(real["fell_back_ops"]))
    assert fell_back == [[], ["Hardmax"], ["IsNaN"]]


def test_a_model_openvino_cannot_build_is_exit_1_naming_openvino_and_its_first_error_line(
        tmp_path: Path, edgekd_main) -> None:
    from onnx import TensorProto, helper

    needs_runtime("intel-openvino")
    shape = helper.make_tensor_value_info("s", TensorProto.INT64, ["n"])   # the output's rank is unknown
    model = relu_then(tmp_path / "dynrank.onnx", helper.make_node("Reshape", ["r", "s"], ["y"]), out_shape=None,
                      extra_inputs=[shape])
    r = edgekd_main("audit", str(model), "--target", "intel-openvino")
    assert r.code == 1, r.err
    assert "OpenVINO" in r.err and "doesn't support Reshape operation with dynamic rank" in r.err
    assert "Exception from src" not in r.err       # OpenVINO's first error line, not its stack of frames


@pytest.fixture(scope="module")
def ov_run(tmp_path_factory):
    """The default run, distilled small, exported for cpu-x86 and intel-openvino with int8."""
    import edgekd

    needs_runtime("intel-openvino")
    root = tmp_path_factory.mktemp("ovrun")
    # The shipped profiles under their own names, int8's top-1 floor lowered: a one-epoch student has
    # near-tied logits, and int8 flips a few of them on either runtime (not what these tests are about);
    # no latency budget, as the machine is shared.
    (root / "profiles").mkdir()
    paths = {t: root / "profiles" / f"{t}.toml" for t in ("cpu-x86", "intel-openvino")}
    for t, path in paths.items():
        text = profile_text(t)
        assert text.count("int8_min_top1_agreement = 0.99") == 1
        text = text.replace("int8_min_top1_agreement = 0.99", "int8_min_top1_agreement = 0.9")
        path.write_text(text.replace("latency_p90_ms = 2.0\n", ""))     # no timing threshold in a test
    old = os.getcwd()
    os.chdir(root)
    try:
        res = edgekd.distill(**TINY_RUN, run=root / "run")
        exports = {t: edgekd.export(target=path, run=res.run, quantize="int8") for t, path in paths.items()}
        yield res.run, exports, paths
    finally:
        os.chdir(old)


def test_export_runs_parity_and_the_partition_through_openvino_in_its_runtime(ov_run) -> None:
    run, exports, _ = ov_run
    m = exports["intel-openvino"].data
    through = m["parity_provider"]
    assert through["ran"] and through["provider"] == OV and through["passed"], through
    assert through["precision"] == "fp32" and through["options"] == {"device_type": "CPU", "precision": "FP32"}
    assert through["runtime"]["package"] == "onnxruntime-openvino==1.24.1" and through["ep_version"] == "1.24.1"
    assert m["runtime"]["mechanism"] == "package" and m["runtime"]["onnxruntime_version"] == "1.24.1"
    part = m["ops"]["partition"]
    assert part["ran"] and part["built"] and part["provider"] == OV and part["runtime"]["package"]
    int8 = m["variants"]["int8"]["parity_provider"]
    assert int8["ran"] and int8["provider"] == OV and int8["passed"], int8
    host = exports["cpu-x86"].data
    assert host["runtime"]["mechanism"] == "host" and host["parity_provider"]["ran"] is False
    from rich.console import Console

    from edgekd.tables import export_table

    console = Console(width=400, record=True)
    console.print(export_table(m))
    text = console.export_text()
    assert "onnxruntime-openvino==1.24.1 (onnxruntime 1.24.1" in text and "parity (OpenVINO, fp32)" in text
    assert "partition" in text and "OpenVINOExecutionProvider" in text


def test_bench_side_by_side_prints_one_table_and_recommends_the_fastest_passing_variant(ov_run, edgekd_main) -> None:
    from edgekd import artifacts

    run, _, paths = ov_run
    r = edgekd_main("bench", "--run", str(run), "--target", str(paths["cpu-x86"]), "--target",
                    str(paths["intel-openvino"]), "--min-seconds", "0.05", "--json")
    assert r.code == 0, r.err
    out = json.loads(r.out)
    rows = {(x["target"], x["variant"]): x for x in out["rows"]}
    assert set(rows) == {(t, v) for t in ("cpu-x86", "intel-openvino") for v in ("fp32", "int8")}
    assert rows[("intel-openvino", "fp32")]["provider"] == OV and not rows[("intel-openvino", "fp32")]["fallback"]
    assert rows[("intel-openvino", "int8")]["provider"] == OV
    assert rows[("intel-openvino", "fp32")]["precision"] == "fp32"
    passing = [x for x in out["rows"] if x["parity_passed"] is not False and not x["fallback"]]
    best = min(passing, key=lambda x: x["latency_ms"]["p50"])
    assert out["recommended"] == {"target": best["target"], "variant": best["variant"]}
    m = load_manifest(artifacts.manifest_path(run, "intel-openvino")).to_json()
    assert m["across_targets"]["recommended"] == out["recommended"]
    ex = m["bench"]["execution"]
    assert ex["provider"] == OV and ex["runtime"]["package"] == "onnxruntime-openvino==1.24.1"
    assert m["bench"]["golden"]["passed"] and m["bench"]["golden"]["precision"] == "fp32"
    host_bench = load_manifest(artifacts.manifest_path(run, "cpu-x86")).bench
    assert host_bench is not None and host_bench.extra["execution"]["runtime"]["mechanism"] == "host"
    table = edgekd_main("bench", "--run", str(run), "--target", str(paths["cpu-x86"]), "--target",
                        str(paths["intel-openvino"]), "--min-seconds", "0.02", "--no-compare").out
    assert "intel-openvino" in table and "cpu-x86" in table


# ---------------------------------------------------------------- a pinned old runtime
def test_a_pinned_old_runtime_refuses_at_export_a_model_it_cannot_load(ov_run, tmp_path: Path) -> None:
    import edgekd

    needs_runtime("cpu-x86-ort120")
    run, _, _ = ov_run
    ok = edgekd.export(target="cpu-x86-ort120", run=run)    # opset 17: 1.20.1 loads it, and checks parity
    through = ok.data["parity_provider"]
    assert through["ran"] and through["passed"] and through["ep_version"] == "1.20.1", through
    text = profile_text("cpu-x86-ort120").replace("opset = 17", "opset = 22")
    path = write_profile(tmp_path, text, "ort120-opset22")
    with pytest.raises(AuditFailed) as e:
        edgekd.export(target=path, run=run)
    msg = str(e.value)
    assert "onnxruntime 1.20.1" in msg and "opset 22" in msg and "up to opset 21" in msg
    from edgekd import artifacts

    m = load_manifest(artifacts.manifest_path(run, "ort120-opset22")).to_json()
    assert m["deployable"] is False and m["ops"]["partition"]["built"] is False


def test_select_students_timing_helper_runs_in_the_targets_runtime(tiny: Path) -> None:
    """select-student times candidates in a helper process; the profile travels with the request,
    so a profile with a [runtime] package is timed in that package's onnxruntime, not the host's."""
    from edgekd.bench.runners import agent_config
    from edgekd.search.timing import run_isolated

    prof = needs_runtime("intel-openvino")
    r = run_isolated("local", tiny, agent_config(prof, min_seconds=0.02, batches=()), target=str(prof.path))
    assert r["execution"]["runtime"]["mechanism"] == "package"
    assert r["execution"]["runtime"]["package"] == prof.package and r["provider"] == OV
    host = run_isolated("local", tiny, agent_config(prof, min_seconds=0.02, batches=()))
    assert host["execution"]["runtime"]["mechanism"] == "host"
