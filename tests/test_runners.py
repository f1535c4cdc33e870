"""Runners: local, qemu (emulated aarch64) and ssh (against a throwaway local sshd)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgekd.bench import runners
from edgekd.bench.runners import (
    LocalRunner,
    QemuRunner,
    SshRunner,
    get_runner,
    parse_ssh_url,
)
from edgekd.errors import BadInput

ROOT = Path(__file__).resolve().parent.parent
SSHD_SCRIPT = ROOT / "scripts" / "start_test_sshd.sh"
CONFIG = {"providers": [{"name": "CPUExecutionProvider"}], "min_runs": 5, "min_seconds": 0.01,
          "warmup": 1, "batches": [1, 4], "intra_op_threads": 1, "inter_op_threads": 1,
          "atol": 1e-4, "rtol": 1e-3, "min_top1_agreement": 1.0}
SYSTEM_PYTHON = "/usr/bin/python3"


# ---------------------------------------------------------------- fixtures
def _tiny_model(path: Path) -> Path:
    """Conv(1→4, 3x3) → Relu → Flatten → Gemm(256→10): 'input' [batch,1,8,8] → 'logits' [batch,10]."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in [
        ("w", rng.standard_normal((4, 1, 3, 3))), ("b", rng.standard_normal(4)),
        ("fw", rng.standard_normal((10, 256)) * 0.1), ("fb", rng.standard_normal(10))]]
    nodes = [helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("Flatten", ["r"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["logits"], transB=1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def _golden(path: Path, model: Path, *, n: int = 32, perturb: float = 0.0, shape=(1, 8, 8)) -> Path:
    """Golden vectors from this host's onnxruntime (PyTorch's outputs in a real run)."""
    x = np.random.default_rng(1).standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    inputs = x if shape == (1, 8, 8) else np.zeros((n, *shape), np.float32)
    np.savez(path, inputs=inputs, outputs=y + np.float32(perturb))
    return path


@pytest.fixture
def model(tmp_path: Path) -> Path:
    return _tiny_model(tmp_path / "model.onnx")


@pytest.fixture
def golden(tmp_path: Path, model: Path) -> Path:
    return _golden(tmp_path / "golden.npz", model)


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"no process may start for a bad runner spec: {args}")


# ---------------------------------------------------------------- specs
@pytest.mark.parametrize("spec", ["", "lokal", "ssh", "qemu-arm", "http://pi@host"])
def test_unknown_runner_lists_the_valid_forms(spec: str) -> None:
    with pytest.raises(BadInput, match=r"valid: local, qemu, ssh://USER@HOST\[:PORT\]") as e:
        get_runner(spec)
    assert e.value.exit_code == 2


@pytest.mark.parametrize("spec, part", [
    ("ssh://pi@host:0", "bad port '0'"),
    ("ssh://pi@host:65536", "bad port '65536'"),
    ("ssh://pi@host:22x", "bad port '22x'"),
    ("ssh://pi@host:", "bad port ''"),
    ("ssh://p i@host", "bad user 'p i'"),
    ("ssh://-oProxyCommand=id@host", "bad user '-oProxyCommand=id'"),
    ("ssh://pi@-oProxyCommand=id", "bad host '-oProxyCommand=id'"),
    ("ssh://pi@host;id", "bad host 'host;id'"),
    ("ssh://pi@$(id)", "bad host '$(id)'"),
    ("ssh://host", "missing USER@"),
    ("ssh://@host", "missing USER@"),
])
def test_bad_ssh_urls_are_refused_before_any_connection(spec: str, part: str, monkeypatch) -> None:
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", _no_subprocess)
    with pytest.raises(BadInput) as e:
        get_runner(spec)
    assert part in str(e.value) and e.value.exit_code == 2
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("spec, parsed", [
    ("ssh://pi@raspberrypi.local", ("pi", "raspberrypi.local", None)),
    ("ssh://root@10.0.0.7:2222", ("root", "10.0.0.7", 2222)),
    ("ssh://a.b-c_d@h:65535", ("a.b-c_d", "h", 65535)),
    ("ssh://pi@[fe80::1]:22", ("pi", "[fe80::1]", 22)),
])
def test_good_ssh_urls_parse(spec: str, parsed: tuple) -> None:
    assert parse_ssh_url(spec) == parsed
    assert get_runner(spec).spec == spec


# ---------------------------------------------------------------- local
def test_local_runner_returns_agent_json_and_parity(model: Path, golden: Path) -> None:
    out = get_runner("local").run(model=model, config=CONFIG, golden=golden)
    assert out["runner"] == "local" and out["emulated"] is False
    assert out["provider"] == "CPUExecutionProvider" and out["threads"] == 1
    assert out["latency_ms"]["n"] >= 5 and set(out["throughput"]) == {"1", "4"}
    assert out["golden"]["passed"] is True and out["golden"]["n"] == 32
    assert out["golden"]["max_abs_diff"] == 0.0  # same build, same kernels


def test_local_runner_reports_perturbed_golden_as_failed(tmp_path: Path, model: Path) -> None:
    bad = _golden(tmp_path / "bad.npz", model, perturb=0.05)
    out = LocalRunner().run(model=model, config=CONFIG, golden=bad)
    assert out["golden"]["passed"] is False
    assert out["golden"]["max_abs_diff"] == pytest.approx(0.05, rel=1e-3)


def test_local_runner_turns_agent_errors_into_bad_input(tmp_path: Path, model: Path) -> None:
    wrong = _golden(tmp_path / "wrong.npz", model, shape=(3, 8, 8))
    with pytest.raises(BadInput, match=r"bench agent on local: golden inputs have sample shape \[3, 8, 8\]"):
        LocalRunner().run(model=model, config=CONFIG, golden=wrong)
    with pytest.raises(BadInput, match="unknown config key 'bogus'"):
        LocalRunner().run(model=model, config={**CONFIG, "bogus": 1})


def test_local_runner_checks_files_first(tmp_path: Path, model: Path, monkeypatch) -> None:
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    with pytest.raises(BadInput, match="nope.onnx: model file not found"):
        LocalRunner().run(model=tmp_path / "nope.onnx", config=CONFIG)
    with pytest.raises(BadInput, match="nope.npz: golden file not found"):
        LocalRunner().run(model=model, config=CONFIG, golden=tmp_path / "nope.npz")


def _python_without_onnxruntime() -> str:
    if not Path(SYSTEM_PYTHON).exists():
        pytest.skip(f"no {SYSTEM_PYTHON} to stand in for a device without onnxruntime")
    if subprocess.run([SYSTEM_PYTHON, "-c", "import onnxruntime"], capture_output=True).returncode == 0:
        pytest.skip(f"{SYSTEM_PYTHON} has onnxruntime; cannot test its absence")
    return SYSTEM_PYTHON


def test_local_runner_names_missing_onnxruntime(model: Path) -> None:
    python = _python_without_onnxruntime()
    with pytest.raises(BadInput, match="onnxruntime is not installed"):
        LocalRunner(python=python).run(model=model, config=CONFIG)


# ---------------------------------------------------------------- qemu
def test_qemu_runner_before_setup_says_how_to_set_up(tmp_path: Path, model: Path, monkeypatch) -> None:
    monkeypatch.setenv(runners.QEMU_ROOT_ENV, str(tmp_path / "no-root"))
    runner = get_runner("qemu")
    assert isinstance(runner, QemuRunner) and runner.root == tmp_path / "no-root"
    with pytest.raises(BadInput, match=r"qemu runner not set up; run `edgekd runner setup qemu`"):
        runner.run(model=model, config=CONFIG)


def test_qemu_half_made_root_counts_as_not_set_up(tmp_path: Path, model: Path) -> None:
    (tmp_path / "root" / "sysroot").mkdir(parents=True)  # no setup.json: an interrupted setup
    with pytest.raises(BadInput, match="not set up"):
        QemuRunner(cache_dir=tmp_path / "root").run(model=model, config=CONFIG)


def test_fake_cpuinfo_is_arm_format_with_one_entry_per_host_cpu(tmp_path: Path) -> None:
    runners._write_cpuinfo(tmp_path)
    text = (tmp_path / "proc" / "cpuinfo").read_text()
    assert text.count("processor\t:") == (os.cpu_count() or 1)
    assert "CPU implementer\t: 0x41" in text and "Features\t: fp asimd" in text


def qemu_ready_root() -> Path:
    """The set-up qemu root. Setup downloads (Debian's arm64 packages, PyPI's aarch64 wheels),
    so no test runs it: `.ci/run` runs `edgekd runner setup qemu` before pytest; elsewhere
    the test skips and says so."""
    if runners.qemu_setup_info() is None:
        pytest.skip(f"qemu runner not set up in {runners.qemu_root()}: run `edgekd runner setup qemu` first "
                    "(.ci/run does)")
    return runners.qemu_root()


@pytest.mark.integration
def test_qemu_runner_checks_golden_on_the_arm_build(model: Path, golden: Path, capsys) -> None:
    """Runs parity on PyPI's aarch64 onnxruntime under qemu-user."""
    root = qemu_ready_root()
    out = QemuRunner(cache_dir=root).run(model=model, config=CONFIG, golden=golden)
    assert out["runner"] == "qemu" and out["emulated"] is True and "not target figures" in out["note"]
    assert out["machine"] == "aarch64"
    assert out["golden"]["passed"] is True, out["golden"]
    with capsys.disabled():
        print(f"\nqemu aarch64 onnxruntime {out['onnxruntime_version']}: max_abs_diff vs golden "
              f"{out['golden']['max_abs_diff']:.3g}, top1 {out['golden']['top1_agreement']}")


# ---------------------------------------------------------------- ssh
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    """A throwaway sshd on 127.0.0.1; yields (url, dir). Skips only when sshd cannot be had."""
    if not shutil.which("ssh") or not shutil.which("scp"):
        pytest.skip("no ssh/scp client on PATH (apt-get install openssh-client)")
    d = tmp_path_factory.mktemp("sshd")
    port = _free_port()
    proc = subprocess.run(["bash", str(SSHD_SCRIPT), str(d), str(port)], capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 3:
        pytest.skip(f"sshd is not installed and cannot be installed here: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stderr
    pid = int(proc.stdout.strip().splitlines()[-1])
    user = subprocess.run(["id", "-un"], capture_output=True, text=True).stdout.strip()
    try:
        yield f"ssh://{user}@127.0.0.1:{port}", d
    finally:
        os.kill(pid, signal.SIGTERM)


@pytest.fixture
def device_tmp(tmp_path: Path) -> Path:
    """Where the 'device' makes its temp folders, so a test can see they are gone."""
    d = tmp_path / "device-tmp"
    d.mkdir()
    return d


def _ssh_runner(sshd, device_tmp: Path, **kwargs) -> SshRunner:
    url, d = sshd
    opts = {"known_hosts": d / "known_hosts", "identity": d / "id_ed25519", "python": sys.executable,
            "remote_tmpdir": str(device_tmp), **kwargs}
    return SshRunner(url, **opts)


@pytest.mark.integration
def test_ssh_runner_runs_the_agent_on_the_device(sshd, tmp_path: Path, model: Path, golden: Path,
                                                 monkeypatch) -> None:
    url, d = sshd
    # The environment variables are the documented way to configure get_runner("ssh://...").
    monkeypatch.setenv(runners.SSH_KNOWN_HOSTS_ENV, str(d / "known_hosts"))
    monkeypatch.setenv(runners.SSH_IDENTITY_ENV, str(d / "id_ed25519"))
    monkeypatch.setenv(runners.SSH_PYTHON_ENV, sys.executable)
    runner = get_runner(url)
    out = runner.run(model=model, config=CONFIG, golden=golden)
    assert out["runner"] == url
    assert out["golden"]["passed"] is True and out["latency_ms"]["n"] >= 5
    assert out["model"] == "model.onnx"  # the device's copy, under a fixed name
    assert runner.last_device_dir and not Path(runner.last_device_dir).exists()


@pytest.mark.integration
def test_ssh_runner_removes_the_device_dir(sshd, device_tmp: Path, model: Path, golden: Path) -> None:
    runner = _ssh_runner(sshd, device_tmp)
    runner.run(model=model, config=CONFIG, golden=golden)
    assert runner.last_device_dir.startswith(str(device_tmp))
    assert list(device_tmp.iterdir()) == []


@pytest.mark.integration
def test_ssh_runner_removes_the_device_dir_after_an_agent_error(sshd, tmp_path: Path, device_tmp: Path,
                                                                 model: Path) -> None:
    wrong = _golden(tmp_path / "wrong.npz", model, shape=(3, 8, 8))
    runner = _ssh_runner(sshd, device_tmp)
    with pytest.raises(BadInput, match=r"bench agent on .*@127\.0\.0\.1: golden inputs have sample shape"):
        runner.run(model=model, config=CONFIG, golden=wrong)
    assert runner.last_device_dir is not None
    assert list(device_tmp.iterdir()) == []


@pytest.mark.integration
def test_ssh_runner_names_missing_onnxruntime(sshd, device_tmp: Path, model: Path) -> None:
    python = _python_without_onnxruntime()
    runner = _ssh_runner(sshd, device_tmp, python=python)
    with pytest.raises(BadInput) as e:
        runner.run(model=model, config=CONFIG)
    assert str(e.value) == f"onnxruntime is not installed on {runner.where} (pip install onnxruntime numpy there)"
    assert list(device_tmp.iterdir()) == []


@pytest.mark.integration
def test_ssh_runner_refuses_an_unknown_host_key(sshd, tmp_path: Path, device_tmp: Path, model: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(BadInput, match="Host key verification failed") as e:
        _ssh_runner(sshd, device_tmp, known_hosts=empty).run(model=model, config=CONFIG)
    assert "\n" not in str(e.value)
    assert not (tmp_path / "empty_known_hosts").read_text()  # BatchMode + strict: nothing was added


@pytest.mark.integration
def test_ssh_runner_reports_auth_failure(sshd, tmp_path: Path, device_tmp: Path, model: Path) -> None:
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(BadInput, match="key authentication .* failed"):
        _ssh_runner(sshd, device_tmp, identity=stranger).run(model=model, config=CONFIG)


@pytest.mark.integration
def test_ssh_runner_reports_an_unreachable_port(sshd, device_tmp: Path, model: Path) -> None:
    url, d = sshd
    closed = _free_port()
    runner = SshRunner(url.rsplit(":", 1)[0] + f":{closed}", known_hosts=d / "known_hosts",
                       identity=d / "id_ed25519")
    with pytest.raises(BadInput, match=f"cannot reach .*:{closed}: .*Connection refused"):
        runner.run(model=model, config=CONFIG)


@pytest.mark.integration
def test_ssh_runner_never_passes_local_names_to_the_remote_shell(sshd, tmp_path: Path, device_tmp: Path,
                                                                  model: Path) -> None:
    hostile = tmp_path / "m; touch PWNED; $(touch PWNED2) 'x.onnx"
    shutil.copy(model, hostile)
    runner = _ssh_runner(sshd, device_tmp, python=f"{sys.executable} -B")  # a multi-word command is fine
    out = runner.run(model=hostile, config=CONFIG)
    assert out["model"] == "model.onnx"
    home = Path(os.path.expanduser("~"))
    for where in (tmp_path, home, device_tmp):
        assert not (where / "PWNED").exists() and not (where / "PWNED2").exists()


# ---------------------------------------------------------------- one helper, errors as data
def test_run_json_reads_the_last_json_line_and_names_what_failed(tmp_path: Path) -> None:
    from edgekd.bench.proc import run_json

    script = "import sys,json; print('noise'); print(json.dumps({'a': sys.stdin.read()}))"
    reply = run_json([sys.executable, "-c", script], timeout=30, what="probe", input="hi")
    assert reply.rc == 0 and reply.obj == {"a": "hi"}
    assert run_json([sys.executable, "-c", "print('not json')"], timeout=30, what="probe").obj is None
    with pytest.raises(BadInput, match="probe: program 'no-such-program-x' not found"):
        run_json(["no-such-program-x"], timeout=30, what="probe")


def test_agent_error_kind_reaches_the_caller_as_data(tmp_path: Path) -> None:
    """A symbolic non-batch dimension: the runner raises AgentFailed with kind 'symbolic_dim'."""
    from edgekd.bench.runners import AgentFailed

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "width"])
    m = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y]),
                          opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(m, str(tmp_path / "sym.onnx"))
    with pytest.raises(AgentFailed) as e:
        LocalRunner().run(model=tmp_path / "sym.onnx", config=CONFIG)
    assert e.value.kind == "symbolic_dim" and "--shape x=" in str(e.value)
    ok = LocalRunner().run(model=tmp_path / "sym.onnx", config={**CONFIG, "shapes": {"x": [1, 7]}})
    assert ok["inputs"][0]["fed"] == [1, 7]
