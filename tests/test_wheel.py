"""Install anywhere: build the wheel (offline), install it into a fresh folder, and use it from
another working directory, where the repository's source cannot be seen.

The child interpreter is the venv's python with `-S` (no site: the editable install's .pth
finder never runs) and PYTHONPATH = the install folder + the venv's site-packages (torch,
onnxruntime, ...). Every child asserts which edgekd it imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.integration  # builds and installs a wheel, runs it in child processes
PROFILES = sorted(p.stem for p in (REPO / "targets").glob("*.toml"))
TINY = ["--data", "digits", "--epochs", "1", "--seeds", "1", "--teacher-epochs", "1", "--teacher", "cnn-small",
        "--no-progress"]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory):
    """(install folder, env for the children, a working folder outside the repository)."""
    root = tmp_path_factory.mktemp("wheel")
    src = root / "src"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    src.mkdir()
    for name in ("edgekd", "targets"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", str(root / "dist"),
                    str(src)], check=True, cwd=root, timeout=300)
    wheel = next((root / "dist").glob("edgekd-*.whl"))
    install = root / "site"
    subprocess.run([*pip, "install", "--no-deps", "--no-index", "--target", str(install), str(wheel)],
                   check=True, cwd=root, timeout=300)
    shutil.rmtree(src)  # nothing of the source is left to import by accident
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EDGEKD_TARGETS")}
    env.update(PYTHONPATH=os.pathsep.join([str(install), sysconfig.get_paths()["purelib"]]),
               OMP_NUM_THREADS="1", NO_COLOR="1", TERM="dumb", COLUMNS="200")
    work = root / "work"
    work.mkdir()
    return install, env, work


def py(wheel_env, *args, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    install, base_env, work = wheel_env
    proc = subprocess.run([sys.executable, "-S", *map(str, args)], cwd=work, env=env or base_env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, f"{args} → {proc.returncode}\n{proc.stderr[-3000:]}\n{proc.stdout[-1000:]}"
    return proc


def edgekd(wheel_env, *args, env: dict | None = None) -> subprocess.CompletedProcess:
    return py(wheel_env, "-m", "edgekd", *args, env=env)


def test_imports_edgekd_from_the_install_folder_not_the_repository(wheel_env):
    install = wheel_env[0]
    out = py(wheel_env, "-c", "import edgekd, edgekd.cli; print(edgekd.__file__); print(edgekd.cli.__file__)")
    for line in out.stdout.split():
        assert Path(line).resolve().is_relative_to(install.resolve()), line
    assert (install / "edgekd" / "py.typed").is_file()


def test_installed_wheel_lists_and_shows_every_profile(wheel_env):
    listed = json.loads(edgekd(wheel_env, "targets", "--json").stdout)
    assert sorted(p["name"] for p in listed) == PROFILES
    for p in listed:
        assert Path(p["path"]).resolve().is_relative_to(wheel_env[0].resolve()), p["path"]
    shown = json.loads(edgekd(wheel_env, "targets", "cpu-arm", "--json").stdout)
    assert shown["name"] == "cpu-arm" and "Conv" in shown["ops"]["allow"]


def test_edgekd_targets_adds_user_folders(wheel_env, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    text = (REPO / "targets" / "cpu-x86.toml").read_text()
    (a / "mine.toml").write_text(text.replace('name = "cpu-x86"', 'name = "mine"'))
    (b / "cpu-x86.toml").write_text(text.replace("opset = 17", "opset = 13"))  # overrides the packaged one
    env = {**wheel_env[1], "EDGEKD_TARGETS": os.pathsep.join([str(a), str(b)])}
    listed = {p["name"]: p for p in json.loads(edgekd(wheel_env, "targets", "--json", env=env).stdout)}
    assert sorted(listed) == sorted([*PROFILES, "mine"])
    assert listed["cpu-x86"]["opset"] == 13 and listed["cpu-arm"]["opset"] == 17
    missing = {**wheel_env[1], "EDGEKD_TARGETS": str(tmp_path / "nowhere")}
    bad = py(wheel_env, "-m", "edgekd", "targets", env=missing, check=False)
    assert bad.returncode == 2 and "EDGEKD_TARGETS" in bad.stderr and "Traceback" not in bad.stderr


def test_distill_export_bench_from_the_installed_wheel(wheel_env, tmp_path):
    """The pipeline on a tiny run. Export uses the packaged cpu-arm profile; bench uses a copy whose
    latency budget is 1000 ms given through EDGEKD_TARGETS (no timing thresholds in tests)."""
    work = wheel_env[2]
    user = tmp_path / "profiles"
    user.mkdir()
    text = (REPO / "targets" / "cpu-arm.toml").read_text()
    assert text.count("latency_p90_ms = 5.0") == 1
    (user / "relaxed.toml").write_text(text.replace('name = "cpu-arm"', 'name = "relaxed"')
                                       .replace("latency_p90_ms = 5.0", "latency_p90_ms = 1000.0"))
    env = {**wheel_env[1], "EDGEKD_TARGETS": str(user)}
    edgekd(wheel_env, "distill", *TINY, env=env)
    run = (work / "artifacts" / "latest").resolve()
    assert (run / "distill.json").is_file()
    manifest = json.loads(edgekd(wheel_env, "export", "--target", "cpu-arm", "--json", env=env).stdout)
    assert manifest["target"] == "cpu-arm" and manifest["parity"]["passed"]
    edgekd(wheel_env, "export", "--target", "relaxed", env=env)
    bench = json.loads(edgekd(wheel_env, "bench", "--target", "relaxed", "--min-seconds", "0.05", "--no-compare",
                              "--json", env=env).stdout)
    assert bench["target"] == "relaxed" and bench["fp32"]["latency_ms"]["p50"] > 0
    assert (run / "relaxed" / "bench.json").is_file() and (run / "cpu-arm" / "model.onnx").is_file()
